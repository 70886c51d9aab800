#!/usr/bin/python3
"""A small HTTP(S) server for tests/cli/t-http.sh: serves the files of one
directory with HTTP/1.1 keep-alive and byte ranges, and misbehaves on
purpose under some path prefixes:

  /ok/NAME          Range support (Accept-Ranges: bytes, 206 answers)
  /norange/NAME     no Accept-Ranges header; a GET ignores Range (200)
  /nolength/NAME    HEAD answers without Content-Length (chunked)
  /liar/NAME        HEAD says Accept-Ranges: bytes, a GET ignores Range (200)
  /stall/NAME       a GET sends half its body, then waits forever
  /stallonce/NAME   the first GET of each range stalls, its retry does not
  /close/NAME       a GET sends half its body, then closes the connection
  /closeonce/NAME   the first GET of each range is cut, its retry is not
  /stalllate/NAME, /closelate/NAME, /stalloncelate/NAME, /closeoncelate/NAME
                    the same for ranges from 1 MiB on only (opening works)
  /auth/NAME        Basic authentication: user "qimg", password "s3cret"
  /cookie/NAME      needs the cookie "session=abc; theme=dark"
  /redirect/NAME    302 to /ok/NAME
  /loop/NAME        302 to itself, forever
  /bad206/NAME      206 answers from offset 0 whatever the range asked
  /long206/NAME     206 answers with more bytes than asked for

Usage: http-server.py DIR PORTFILE [CERT KEY]
Listens on 127.0.0.1, free ports: one HTTP port, and one HTTPS port when a
certificate is given; writes "HTTP_PORT [HTTPS_PORT]" to PORTFILE when
ready.  Every GET is logged to DIR/../http-requests.log ("PATH RANGE").
"""
import base64
import http.server
import os
import re
import ssl
import sys
import threading
import time

ROOT = sys.argv[1]
LOG = os.path.join(os.path.dirname(os.path.abspath(ROOT)), "http-requests.log")
seen = set()
seen_lock = threading.Lock()
log_lock = threading.Lock()


def first_time(key):
    with seen_lock:
        if key in seen:
            return False
        seen.add(key)
        return True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, fmt, *args):
        pass

    def split_path(self):
        m = re.match(r"^/([a-z0-9]+)/([^/?]+)$", self.path)
        if not m:
            return None, None
        return m.group(1), os.path.join(ROOT, m.group(2))

    def plain(self, code, text, extra=()):
        body = text.encode()
        self.send_response(code)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def allowed(self, mode):
        if mode == "auth":
            want = "Basic " + base64.b64encode(b"qimg:s3cret").decode()
            if self.headers.get("Authorization") != want:
                self.plain(401, "who are you\n", [("WWW-Authenticate", 'Basic realm="qimg"')])
                return False
        if mode == "cookie":
            if self.headers.get("Cookie") != "session=abc; theme=dark":
                self.plain(403, "no cookie\n")
                return False
        return True

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        self.answer(head=False)

    def answer(self, head):
        mode, path = self.split_path()
        if mode is None or not os.path.isfile(path):
            self.plain(404, "not found\n")
            return
        if not self.allowed(mode):
            return
        if mode == "loop":
            self.plain(302, "again\n", [("Location", self.path)])
            return
        if mode == "redirect":
            self.plain(302, "moved\n", [("Location", "/ok/" + os.path.basename(path))])
            return
        size = os.path.getsize(path)
        rng = self.headers.get("Range")
        if not head:
            with log_lock, open(LOG, "a") as f:
                f.write("%s %s\n" % (self.path, rng))
        if head:
            self.send_response(200)
            if mode != "norange":
                self.send_header("Accept-Ranges", "bytes")
            if mode == "nolength":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                return
            self.send_header("Content-Length", str(size))
            self.end_headers()
            return
        start, end = 0, size - 1
        partial = False
        m = re.match(r"^bytes=(\d+)-(\d*)$", rng or "")
        if m and mode not in ("norange", "liar"):
            start = int(m.group(1))
            if m.group(2):
                end = min(int(m.group(2)), size - 1)
            partial = True
            if start >= size:
                self.plain(416, "bad range\n", [("Content-Range", "bytes */%d" % size)])
                return
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        if mode == "bad206" and start > 0:
            with open(path, "rb") as f:
                data = f.read(end - start + 1)
            start, end = 0, len(data) - 1
        if mode == "long206":
            data += b"X" * 1000
        self.send_response(206 if partial else 200)
        if partial:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        key = (self.path, rng)
        how = mode
        if how.endswith("late"):
            how = how[:-4] if start >= 1 << 20 else "ok"
        misbehave = how in ("stall", "close") or \
            (how in ("stallonce", "closeonce") and first_time(key))
        if misbehave:
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            if how.startswith("stall"):
                time.sleep(3600)
            self.close_connection = True
            return
        self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def main():
    http_srv = Server(("127.0.0.1", 0), Handler)
    ports = [str(http_srv.server_address[1])]
    servers = [http_srv]
    if len(sys.argv) > 4:
        https_srv = Server(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        https_srv.socket = ctx.wrap_socket(https_srv.socket, server_side=True)
        ports.append(str(https_srv.server_address[1]))
        servers.append(https_srv)
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(" ".join(ports) + "\n")
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    servers[0].serve_forever()


main()
