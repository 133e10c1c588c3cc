/* db_hosts.c - the mysql_hosts list, parsed strictly (see db_hosts.h). */
#include "db_hosts.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PORT_DIGITS_MAX 5

static int fail(char *err, size_t errlen, int no, const char *entry, size_t len, const char *fmt,
                ...) __attribute__((format(printf, 6, 7)));

/* Writes "mysql_hosts entry NO \"ENTRY\": WHY" into err; returns -1. */
static int fail(char *err, size_t errlen, int no, const char *entry, size_t len, const char *fmt,
                ...)
{
    if (!err || errlen == 0)
        return -1;
    int n = snprintf(err, errlen, "mysql_hosts entry %d \"%.*s\": ", no, (int)(len > 80 ? 80 : len),
                     entry);
    if (n < 0 || (size_t)n >= errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A port: 1 to 5 digits, 1-65535, nothing else.  The port or -1. */
static int parse_port(const char *s, size_t len)
{
    if (len == 0 || len > PORT_DIGITS_MAX)
        return -1;
    int port = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port >= 1 && port <= 65535 ? port : -1;
}

/* A host name or IPv4 address: letters, digits, '.', '-' and '_'. */
static int name_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-' && s[i] != '_')
            return 0;
    return len > 0;
}

/* An IPv6 address as written between brackets: hex digits, ':' and '.'
 * (an embedded IPv4), with at least one ':'. */
static int v6_ok(const char *s, size_t len)
{
    int colons = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ':')
            colons++;
        else if (!isxdigit((unsigned char)s[i]) && s[i] != '.')
            return 0;
    }
    return colons > 0;
}

/* Splits one trimmed entry into name and port; no is its place (from 1). */
static int parse_entry(const char *e, size_t len, int no, pg_db_host *h, char *err, size_t errlen)
{
    const char *name = e, *colon;
    size_t nlen;
    int v6 = len > 0 && e[0] == '[';
    if (v6) {
        const char *close = memchr(e, ']', len);
        if (!close || close + 1 >= e + len || close[1] != ':')
            return fail(err, errlen, no, e, len, "an IPv6 address is written [addr]:port");
        name = e + 1;
        nlen = (size_t)(close - name);
        colon = close + 1;
        if (!v6_ok(name, nlen))
            return fail(err, errlen, no, e, len, "not an IPv6 address between the brackets");
    } else {
        colon = memchr(e, ':', len);
        if (!colon)
            return fail(err, errlen, no, e, len, "no port: write host:port");
        nlen = (size_t)(colon - e);
        if (memchr(colon + 1, ':', len - nlen - 1))
            return fail(err, errlen, no, e, len, "an IPv6 address is written [addr]:port");
        if (!name_ok(name, nlen))
            return fail(err, errlen, no, e, len, "not a host name or address");
    }
    if (nlen > PG_DB_HOST_NAME_MAX)
        return fail(err, errlen, no, e, len, "host longer than %d characters", PG_DB_HOST_NAME_MAX);
    int port = parse_port(colon + 1, (size_t)(e + len - colon - 1));
    if (port < 0)
        return fail(err, errlen, no, e, len, "the port must be a number from 1 to 65535");
    memcpy(h->name, name, nlen);
    h->name[nlen] = '\0';
    h->port = port;
    snprintf(h->text, sizeof(h->text), v6 ? "[%s]:%d" : "%s:%d", h->name, port);
    return 0;
}

/* No entry may name the same server as one before it. */
static int check_repeats(const pg_db_host_list *l, int no, const char *e, size_t len, char *err,
                         size_t errlen)
{
    const pg_db_host *h = &l->v[l->n];
    for (int i = 0; i < l->n; i++)
        if (l->v[i].port == h->port && strcmp(l->v[i].name, h->name) == 0)
            return fail(err, errlen, no, e, len, "the same as entry %d", i + 1);
    return 0;
}

static int blank(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return *s == '\0';
}

int pg_db_hosts_parse(const char *text, pg_db_host_list *out, char *err, size_t errlen)
{
    out->n = 0;
    if (!text || blank(text))
        return 0;
    const char *p = text;
    for (int no = 1;; no++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0)
            return fail(err, errlen, no, p, 0, "empty (a comma too many?)");
        if (out->n == PG_DB_HOSTS_MAX)
            return fail(err, errlen, no, p, len, "more than %d hosts", PG_DB_HOSTS_MAX);
        if (parse_entry(p, len, no, &out->v[out->n], err, errlen) < 0 ||
            check_repeats(out, no, p, len, err, errlen) < 0)
            return -1;
        out->n++;
        if (!end)
            return 0;
        p = end + 1;
    }
}

int pg_db_hosts_from(const char *hosts, const char *host, int port, const char *socket,
                     pg_db_host_list *out, char *err, size_t errlen)
{
    if (pg_db_hosts_parse(hosts, out, err, errlen) < 0)
        return -1;
    int sock = socket && *socket;
    if (out->n > 0 && sock) {
        if (err && errlen)
            snprintf(err, errlen, "mysql_socket and mysql_hosts cannot both be set");
        return -1;
    }
    if (out->n > 0)
        return 0;
    pg_db_host *h = &out->v[0];
    const char *name = sock ? "" : host && *host ? host : "127.0.0.1";
    if (strlen(name) > PG_DB_HOST_NAME_MAX || (sock && strlen(socket) >= sizeof(h->text))) {
        if (err && errlen)
            snprintf(err, errlen, "%s is too long", sock ? "mysql_socket" : "mysql_host");
        return -1;
    }
    snprintf(h->name, sizeof(h->name), "%s", name);
    h->port = sock ? 0 : port;
    if (sock)
        snprintf(h->text, sizeof(h->text), "%s", socket);
    else
        snprintf(h->text, sizeof(h->text), strchr(name, ':') ? "[%s]:%d" : "%s:%d", name, port);
    out->n = 1;
    return 0;
}

void pg_db_hosts_describe(const pg_db_host_list *list, char *out, size_t len)
{
    size_t at = 0;
    if (len == 0)
        return;
    out[0] = '\0';
    for (int i = 0; i < list->n && at < len; i++) {
        int n = snprintf(out + at, len - at, "%s%s", i ? ", " : "", list->v[i].text);
        if (n < 0)
            return;
        at += (size_t)n;
    }
}
