/* net.c - loopback URLs, the open-file limit, bound client sockets (see net.h). */
#include "net.h"

#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static int url_host(const char *host, struct in_addr *out)
{
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, out) != 1)
        return -1;
    return (ntohl(out->s_addr) >> 24) == 127 ? 0 : -1;
}

int pb_url_parse(const char *text, const char *def_scheme, const char *def_path, pb_url *u)
{
    memset(u, 0, sizeof(*u));
    const char *rest = strstr(text, "://");
    size_t slen = rest ? (size_t)(rest - text) : strlen(def_scheme);
    if (slen >= sizeof(u->scheme)) {
        pb_err("%s: unknown scheme", text);
        return -1;
    }
    memcpy(u->scheme, rest ? text : def_scheme, slen);
    rest = rest ? rest + 3 : text;
    const char *slash = strchr(rest, '/');
    size_t hplen = slash ? (size_t)(slash - rest) : strlen(rest);
    snprintf(u->path, sizeof(u->path), "%s", slash ? slash : def_path);
    if (hplen == 0 || hplen >= sizeof(u->hostport) || (slash && strlen(slash) >= sizeof(u->path))) {
        pb_err("%s: expected %s://HOST:PORT%s", text, u->scheme, def_path);
        return -1;
    }
    memcpy(u->hostport, rest, hplen);
    char *colon = strrchr(u->hostport, ':');
    uint64_t port = 0;
    if (!colon || (size_t)(colon - u->hostport) >= sizeof(u->host) ||
        pb_parse_u64("port", colon + 1, 1, 65535, &port) < 0) {
        pb_err("%s: expected HOST:PORT", text);
        return -1;
    }
    memcpy(u->host, u->hostport, (size_t)(colon - u->hostport));
    u->addr.sin_family = AF_INET;
    u->addr.sin_port = htons((uint16_t)port);
    if (url_host(u->host, &u->addr.sin_addr) < 0) {
        pb_err("%s: only loopback addresses (127.x.y.z, localhost) are allowed", text);
        return -1;
    }
    return 0;
}

long pb_net_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : (long)rl.rlim_cur;
}

void pb_net_src(int k, struct sockaddr_in *out)
{
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(2 + k));
}

int pb_net_socket(const struct sockaddr_in *src)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (src && (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
                bind(fd, (const struct sockaddr *)src, sizeof(*src)) < 0)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
