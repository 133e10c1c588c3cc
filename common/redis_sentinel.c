/* redis_sentinel.c - reading the setting redis_sentinels, Sentinel's answers
 * and ROLE (see redis_sentinel.h).  Pure functions over strings and hiredis
 * reply trees, so the unit tests and a fuzz target can feed them anything. */
#include "redis_sentinel.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#define WHY_TEXT_MAX 80     /* of a server's text quoted in a reason */

void pg_redis_printable(const char *text, size_t len, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    size_t room = outlen - 1, n = 0;
    bool cut = len > room;
    size_t keep = cut ? (room >= 3 ? room - 3 : 0) : len;
    for (; n < keep; n++) {
        unsigned char c = (unsigned char)text[n];
        out[n] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    for (; cut && n < room; n++)
        out[n] = '.';
    out[n] = '\0';
}

bool pg_redis_host_ok(const char *s, size_t n)
{
    if (n == 0 || n >= PG_REDIS_HOST_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && !memchr(".-_:%", c, 5))   /* not strchr: it finds a NUL */
            return false;
    }
    return true;
}

/* 1 to 5 digits, 1..65535. */
static bool port_parse(const char *s, size_t n, int *port)
{
    if (n == 0 || n > 5)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    *port = (int)v;
    return true;
}

static void set_addr(pg_redis_addr *a, const char *host, size_t hostlen, int port)
{
    memcpy(a->host, host, hostlen);
    a->host[hostlen] = '\0';
    a->port = port;
}

/* One item of the setting, "host:port" or "[v6]:port", trimmed already. */
static int parse_item(const char *s, size_t n, pg_redis_addr *out, char *err, size_t errlen)
{
    char shown[WHY_TEXT_MAX];
    pg_redis_printable(s, n, shown, sizeof(shown));
    const char *colon = NULL;
    for (size_t i = n; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (!colon) {
        snprintf(err, errlen, "redis_sentinels: '%s' is not host:port", shown);
        return -1;
    }
    const char *host = s;
    size_t hostlen = (size_t)(colon - s);
    bool bracketed = hostlen >= 2 && host[0] == '[' && host[hostlen - 1] == ']';
    if (bracketed) {
        host++;
        hostlen -= 2;
    }
    if (!pg_redis_host_ok(host, hostlen) || (!bracketed && memchr(host, ':', hostlen)) ||
        (bracketed && !memchr(host, ':', hostlen))) {
        snprintf(err, errlen, "redis_sentinels: '%s': not a host name or address (IPv6 as "
                 "[addr]:port)", shown);
        return -1;
    }
    int port;
    if (!port_parse(colon + 1, n - hostlen - (bracketed ? 2 : 0) - 1, &port)) {
        snprintf(err, errlen, "redis_sentinels: '%s': the port must be a number in 1..65535",
                 shown);
        return -1;
    }
    set_addr(out, host, hostlen, port);
    return 0;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

int pg_redis_addrs_parse(const char *text, pg_redis_addr *out, size_t max, char *err,
                         size_t errlen)
{
    const char *p = text ? text : "";
    while (blank(*p))
        p++;
    if (!*p)
        return 0;
    size_t n = 0;
    for (;;) {
        const char *end = p + strcspn(p, ",");
        const char *b = p, *e = end;
        while (b < e && blank(*b))
            b++;
        while (e > b && blank(e[-1]))
            e--;
        if (b == e) {
            snprintf(err, errlen, "redis_sentinels: an empty item (two commas, or one at an end)");
            return -1;
        }
        if (n == max) {
            snprintf(err, errlen, "redis_sentinels: more than %zu sentinels", max);
            return -1;
        }
        if (parse_item(b, (size_t)(e - b), &out[n], err, errlen) < 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (pg_redis_addr_equal(&out[i], &out[n])) {
                char a[PG_REDIS_ADDR_MAX];
                pg_redis_addr_format(&out[n], a, sizeof(a));
                snprintf(err, errlen, "redis_sentinels: %s is listed twice", a);
                return -1;
            }
        n++;
        if (!*end)
            return (int)n;
        p = end + 1;
    }
}

int pg_redis_sentinel_settings_check(const char *sentinels, const char *master_name, char *err,
                                     size_t errlen)
{
    pg_redis_addr addrs[PG_REDIS_SENTINELS_MAX];
    int n = pg_redis_addrs_parse(sentinels, addrs, PG_REDIS_SENTINELS_MAX, err, errlen);
    if (n <= 0)
        return n;
    size_t len = master_name ? strlen(master_name) : 0;
    if (len == 0 || len >= PG_REDIS_NAME_MAX) {
        snprintf(err, errlen, "redis_master_name: 1 to %d characters with redis_sentinels",
                 PG_REDIS_NAME_MAX - 1);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)master_name[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(err, errlen, "redis_master_name: printable characters only, no space");
            return -1;
        }
    }
    return 0;
}

void pg_redis_addr_format(const pg_redis_addr *a, char *out, size_t len)
{
    bool v6 = strchr(a->host, ':') != NULL;
    snprintf(out, len, v6 ? "[%s]:%d" : "%s:%d", a->host, a->port);
}

bool pg_redis_addr_equal(const pg_redis_addr *a, const pg_redis_addr *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* A reply's kind and text for a reason: "an error: ...", "an integer", ... */
static void describe(const redisReply *r, const char *what, char *why, size_t len)
{
    char text[WHY_TEXT_MAX] = "";
    if (r->type == REDIS_REPLY_ERROR && r->str) {
        pg_redis_printable(r->str, r->len, text, sizeof(text));
        snprintf(why, len, "%s refused: %s", what, text);
        return;
    }
    static const char *const kinds[] = {
        [REDIS_REPLY_STRING] = "a string", [REDIS_REPLY_ARRAY] = "an array",
        [REDIS_REPLY_INTEGER] = "an integer", [REDIS_REPLY_NIL] = "nil",
        [REDIS_REPLY_STATUS] = "a status", [REDIS_REPLY_ERROR] = "an error"};
    const char *kind = r->type >= 0 && (size_t)r->type < sizeof(kinds) / sizeof(kinds[0]) &&
                       kinds[r->type] ? kinds[r->type] : "an unknown type";
    snprintf(why, len, "malformed answer to %s (%s)", what, kind);
}

static bool is_string(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING && r->str;
}

int pg_redis_master_reply(const redisReply *reply, pg_redis_addr *out, char *why, size_t len)
{
    static const char what[] = "SENTINEL get-master-addr-by-name";
    if (!reply) {
        snprintf(why, len, "no answer to %s", what);
        return -1;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        snprintf(why, len, "the sentinel does not monitor that master name");
        return -1;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        !is_string(reply->element[0]) || !is_string(reply->element[1])) {
        if (reply->type == REDIS_REPLY_ARRAY)
            snprintf(why, len, "malformed answer to %s (not [host, port])", what);
        else
            describe(reply, what, why, len);
        return -1;
    }
    const redisReply *h = reply->element[0], *p = reply->element[1];
    int port;
    if (!pg_redis_host_ok(h->str, h->len) || !port_parse(p->str, p->len, &port)) {
        char hs[WHY_TEXT_MAX], ps[16];
        pg_redis_printable(h->str, h->len, hs, sizeof(hs));
        pg_redis_printable(p->str, p->len, ps, sizeof(ps));
        snprintf(why, len, "malformed answer to %s (host '%s', port '%s')", what, hs, ps);
        return -1;
    }
    set_addr(out, h->str, h->len, port);
    return 0;
}

bool pg_redis_role_is_primary(const redisReply *reply, char *why, size_t len)
{
    if (!reply) {
        snprintf(why, len, "no answer to ROLE");
        return false;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        !is_string(reply->element[0])) {
        describe(reply, "ROLE", why, len);
        return false;
    }
    const redisReply *role = reply->element[0];
    if (role->len == 6 && memcmp(role->str, "master", 6) == 0)
        return true;
    char text[WHY_TEXT_MAX];
    pg_redis_printable(role->str, role->len, text, sizeof(text));
    snprintf(why, len, "its role is %s, not master", text);
    return false;
}

int pg_redis_switch_parse(const char *text, size_t textlen, const char *name, pg_redis_addr *out)
{
    const char *word[5];
    size_t wlen[5], n = 0, i = 0;
    while (i < textlen) {
        size_t start = i;
        while (i < textlen && text[i] != ' ')
            i++;
        if (i == start || n == 5)
            return -1;      /* two spaces, a leading one, or a sixth word */
        word[n] = text + start;
        wlen[n++] = i - start;
        if (i < textlen && ++i == textlen)
            return -1;      /* a trailing space */
    }
    int oldport, newport;
    if (n != 5 || !pg_redis_host_ok(word[1], wlen[1]) || !port_parse(word[2], wlen[2], &oldport) ||
        !pg_redis_host_ok(word[3], wlen[3]) || !port_parse(word[4], wlen[4], &newport))
        return -1;
    if (strlen(name) != wlen[0] || memcmp(word[0], name, wlen[0]) != 0)
        return 0;
    set_addr(out, word[3], wlen[3], newport);
    return 1;
}
