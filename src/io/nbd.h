/* qimg - internal to the nbd backend (src/io/nbd.c, nbd-name.c) and its
 * unit test: NBD names as qemu reads them. */
#ifndef QIMG_IO_NBD_H
#define QIMG_IO_NBD_H

#include "internal.h"

/* qemu's default NBD port. */
#define QIMG_NBD_DEFAULT_PORT "10809"
/* Longest export name or meta context the protocol carries. */
#define QIMG_NBD_MAX_STRING 4096

/* Turn an NBD name given as a string into the options qemu makes of it:
 *   nbd://HOST[:PORT][/EXPORT], nbd+tcp://... -> server.type=inet, host, port
 *   nbd+unix:///EXPORT?socket=PATH          -> server.type=unix, path
 *   nbd:HOST:PORT[:exportname=X], nbd:unix:PATH[:exportname=X] (legacy)
 *   nbds://, nbds+tcp://, nbds+unix:// (qimg: TLS required; the query may
 *   name tls-creds=ID)                       -> also x-tls=on
 * and "export" when the name has one.  Errors are qemu's ("No valid URL
 * specified", "error parsing address '...'"). */
int qimg_nbd_parse_name(const char *name, qimg_opts **opts);

/* The server address and export an option tree gives (after the name was
 * parsed, or from json:/--image-opts keys: server.*, or the legacy host,
 * port and path keys), checked as qemu checks them; marks them used. */
enum qimg_nbd_transport { QIMG_NBD_INET, QIMG_NBD_UNIX, QIMG_NBD_VSOCK, QIMG_NBD_FD };
struct qimg_nbd_addr {
    enum qimg_nbd_transport transport;
    char *host, *port;      /* inet (vsock: port) */
    char *path;             /* unix */
    char *cid;              /* vsock: as given, parsed when connecting */
    char *fd_str;           /* fd: a descriptor number, parsed when connecting */
    char *export;           /* NULL: none given (the default export "") */
};
int qimg_nbd_addr_from_opts(qimg_opts *opts, struct qimg_nbd_addr *addr);
void qimg_nbd_addr_free(struct qimg_nbd_addr *addr);

/* The name qemu shows for such a node ("nbd://h:p/e", "nbd+unix:///e?socket=p"),
 * with tls: "nbds..." (malloc'ed). */
char *qimg_nbd_addr_name(const struct qimg_nbd_addr *addr, bool tls);

#endif
