/* net.h - addresses and sockets: URL parsing (loopback only: this tool
 * loads local test stacks, never someone else's host), the open-file limit,
 * and client sockets bound to a chosen loopback source address so that more
 * than one address's worth of ephemeral ports can reach one server port. */
#ifndef PB_NET_H
#define PB_NET_H

#include <netinet/in.h>

#define PB_SRC_ADDRS_MAX 250        /* 127.0.0.2 .. 127.0.0.251 */
/* What one source address is given at most by default: the kernel's search
 * for a free ephemeral port (__inet_hash_connect) slows down as one
 * address fills its port range, so spreading thin keeps connect() cheap. */
#define PB_CONNS_PER_SRC 2000

typedef struct {
    char scheme[8];                 /* "ws", "tcp" */
    char host[64];                  /* as written */
    char hostport[80];              /* for the Host header */
    char path[256];                 /* "/ws" (ws: path and any query) */
    struct sockaddr_in addr;
} pb_url;

/* ws://HOST:PORT/PATH, tcp://HOST:PORT or HOST:PORT (scheme def_scheme);
 * HOST is a 127.x.y.z address or localhost.  -1 with a message otherwise. */
int pb_url_parse(const char *text, const char *def_scheme, const char *def_path, pb_url *u);

/* Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now. */
long pb_net_raise_nofile(void);

/* Source address k (0-based): 127.0.0.(2 + k). */
void pb_net_src(int k, struct sockaddr_in *out);

/* A non-blocking TCP socket with TCP_NODELAY, bound to src's address when src
 * is given (port chosen at connect time: IP_BIND_ADDRESS_NO_PORT).  -1 with
 * errno set. */
int pb_net_socket(const struct sockaddr_in *src);

#endif
