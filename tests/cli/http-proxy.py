#!/usr/bin/python3
"""A small forward proxy for tests/cli/t-http.sh, asking for Basic
credentials as an authenticating proxy does.

  GET/HEAD http://127.0.0.1:PORT/PATH   forwarded to that origin; the
                                        request's headers (Range among them)
                                        and the answer's pass through
  CONNECT 127.0.0.1:PORT                a tunnel (https through the proxy)

Every request must carry "Proxy-Authorization: Basic base64(USER:PASSWORD)";
otherwise the answer is 407 with "Proxy-Authenticate: Basic realm=...".
Only origins on 127.0.0.1 are reached (403 otherwise).

Usage: http-proxy.py PORTFILE LOG USER PASSWORD
Listens on a free port of 127.0.0.1 and writes it to PORTFILE when ready.
Each request is logged to LOG as "METHOD TARGET RANGE AUTH", AUTH being
"ok", "none" or "bad".
"""
import base64
import http.client
import http.server
import os
import select
import socket
import sys
import threading
import urllib.parse

PORTFILE, LOG, USER, PASSWORD = sys.argv[1:5]
WANTED = "Basic " + base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-authenticate",
              "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
log_lock = threading.Lock()


def log(*words):
    with log_lock, open(LOG, "a") as f:
        f.write(" ".join(words) + "\n")


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, fmt, *args):
        pass

    def authorized(self):
        """True when the credentials are right; answers 407 otherwise."""
        got = self.headers.get("Proxy-Authorization")
        how = "none" if got is None else ("ok" if got == WANTED else "bad")
        log(self.command, self.path, self.headers.get("Range", "-"), how)
        if how == "ok":
            return True
        body = b"proxy authentication required\n"
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="qimg test proxy"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return False

    def refuse(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def forward(self):
        if not self.authorized():
            return
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or url.hostname != "127.0.0.1":
            return self.refuse(403)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        origin = http.client.HTTPConnection("127.0.0.1", url.port or 80, timeout=30)
        try:
            path = url.path + ("?" + url.query if url.query else "")
            origin.request(self.command, path or "/", headers=headers)
            answer = origin.getresponse()
            body = answer.read()
        except OSError:
            return self.refuse(502)
        finally:
            origin.close()
        self.send_response(answer.status, answer.reason)
        for k, v in answer.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", answer.getheader("Content-Length", "0"))
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = forward
    do_HEAD = forward

    def do_CONNECT(self):
        if not self.authorized():
            return
        host, _, port = self.path.rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            return self.refuse(403)
        try:
            origin = socket.create_connection((host, int(port)), timeout=30)
        except OSError:
            return self.refuse(502)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.relay(self.connection, origin)
        origin.close()
        self.close_connection = True

    @staticmethod
    def relay(a, b):
        """Bytes both ways until one side closes."""
        peer = {a: b, b: a}
        while True:
            ready, _, _ = select.select([a, b], [], [], 60)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                peer[s].sendall(data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
server.daemon_threads = True
with open(PORTFILE + ".tmp", "w") as f:
    f.write("%d\n" % server.server_address[1])
os.rename(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
