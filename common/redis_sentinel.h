/* redis_sentinel.h - what a Redis Sentinel client reads and checks, with no
 * I/O: the setting redis_sentinels, the sentinels' answers and the ROLE of
 * a server.  redis_link.c (the daemons' asynchronous links) and
 * pushgate-ctl (blocking) both use it, so they read the same things the same
 * way.
 *
 * Everything that comes from the network here is untrusted: a reply of the
 * wrong shape, a host that is not a host name or address, a port out of
 * range or a message with too many words is refused with a reason fit for a
 * log line (control characters replaced, cut to a reasonable length), never
 * taken for something it is not. */
#ifndef PG_REDIS_SENTINEL_H
#define PG_REDIS_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>

struct redisReply;

#define PG_REDIS_HOST_MAX 256       /* a host name or address, with its NUL */
#define PG_REDIS_ADDR_MAX 270       /* "[host]:port" with its NUL */
#define PG_REDIS_SENTINELS_MAX 16
#define PG_REDIS_NAME_MAX 129       /* redis_master_name, with its NUL */
#define PG_REDIS_SWITCH_CHANNEL "+switch-master"

typedef struct {
    char host[PG_REDIS_HOST_MAX];
    int port;
} pg_redis_addr;

/* "host:port,host:port,..." (IPv6 as "[addr]:port"; spaces around items
 * allowed) into out (room for max).  The number of addresses (0 for an
 * empty or blank text), or -1 with the reason in err. */
int pg_redis_addrs_parse(const char *text, pg_redis_addr *out, size_t max, char *err,
                         size_t errlen);

/* The settings redis_sentinels and redis_master_name together: 0, or -1 with
 * the reason in err ("redis_sentinels: ...").  The name is checked only when
 * sentinels are set: 1 to 128 printable characters, no space (Sentinel's
 * messages are words separated by spaces). */
int pg_redis_sentinel_settings_check(const char *sentinels, const char *master_name, char *err,
                                     size_t errlen);

/* "host:port", or "[host]:port" for an IPv6 address. */
void pg_redis_addr_format(const pg_redis_addr *a, char *out, size_t len);
bool pg_redis_addr_equal(const pg_redis_addr *a, const pg_redis_addr *b);
/* A host name or an address as Sentinel and Cluster name them: letters,
 * digits and . - _ (names, IPv4), : and % (IPv6, with a zone), n bytes,
 * shorter than PG_REDIS_HOST_MAX. */
bool pg_redis_host_ok(const char *s, size_t n);

/* The answer to SENTINEL get-master-addr-by-name: 0 with the primary's
 * address in out, or -1 with why (the sentinel does not know the name,
 * refused the command, or answered something malformed). */
int pg_redis_master_reply(const struct redisReply *reply, pg_redis_addr *out, char *why,
                          size_t len);

/* The answer to ROLE: true when its first element is "master"; else false
 * with why ("its role is slave", a refusal, or a malformed answer). */
bool pg_redis_role_is_primary(const struct redisReply *reply, char *why, size_t len);

/* One message of Sentinel's +switch-master channel, "<name> <old-ip>
 * <old-port> <new-ip> <new-port>": 1 when it is about master name (the new
 * primary in out), 0 when about another master, -1 when malformed. */
int pg_redis_switch_parse(const char *text, size_t textlen, const char *name,
                          pg_redis_addr *out);

/* text (len bytes, may hold anything) for a log line: at most outlen - 1
 * bytes, control and non-ASCII bytes as '?', "..." when cut. */
void pg_redis_printable(const char *text, size_t len, char *out, size_t outlen);

#endif
