/* redis_cluster.c - stream sets, key slots, shard checksums and CLUSTER
 * SLOTS (see redis_cluster.h).  Pure functions over strings and hiredis
 * reply trees, so the unit tests and a fuzz target can feed them anything.
 * The checksums are the bitwise forms of the table algorithms of the Redis
 * Cluster specification (CRC16/XMODEM) and of zlib (CRC-32): a key is a
 * few dozen bytes, so a table buys nothing. */
#include "redis_cluster.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NUMBER_DIGITS_MAX 9
#define SETTING_PREFIX "redis_sentinels: "  /* what pg_redis_addrs_parse says */

/* ---- checksums ---- */

uint16_t pg_cluster_crc16(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

int pg_cluster_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1)
            return pg_cluster_crc16(open + 1, (size_t)(close - open - 1)) & (PG_CLUSTER_SLOTS - 1);
    }
    return pg_cluster_crc16(key, len) & (PG_CLUSTER_SLOTS - 1);
}

uint32_t pg_crc32(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = crc & 1 ? (crc >> 1) ^ 0xedb88320u : crc >> 1;
    }
    return crc ^ 0xffffffffu;
}

size_t pg_stream_shard(const char *uuid, size_t len, size_t n)
{
    return n ? pg_crc32(uuid, len) % n : 0;
}

/* ---- the setting stream ---- */

void pg_stream_set_free(pg_stream_set *s)
{
    for (size_t i = 0; s && s->names && i < s->n; i++)
        free(s->names[i]);
    if (s) {
        free(s->names);
        s->names = NULL;
        s->n = 0;
    }
}

int pg_stream_set_find(const pg_stream_set *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->names[i]) == len && memcmp(s->names[i], name, len) == 0)
            return (int)i;
    return -1;
}

/* A decimal number without leading zeros, of at most NUMBER_DIGITS_MAX digits. */
static bool number_parse(const char *s, size_t n, long *out)
{
    if (n == 0 || n > NUMBER_DIGITS_MAX || (n > 1 && s[0] == '0'))
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static int add_name(pg_stream_set *s, const char *name, size_t len, char *err, size_t errlen)
{
    if (len > PG_STREAM_NAME_MAX) {
        snprintf(err, errlen, "stream: a name is longer than %d bytes", PG_STREAM_NAME_MAX);
        return -1;
    }
    if (s->n == PG_STREAMS_MAX) {
        snprintf(err, errlen, "stream: more than %d streams", PG_STREAMS_MAX);
        return -1;
    }
    if (pg_stream_set_find(s, name, len) >= 0) {
        char shown[80];
        pg_redis_printable(name, len, shown, sizeof(shown));
        snprintf(err, errlen, "stream: %s is given twice", shown);
        return -1;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        snprintf(err, errlen, "stream: out of memory");
        return -1;
    }
    memcpy(copy, name, len);
    copy[len] = '\0';
    s->names[s->n++] = copy;
    return 0;
}

/* The range {a..b} at open (an item's first "{" followed by digits and ".."):
 * 0 with a and b, or -1 with err. */
static int range_parse(const char *open, size_t avail, size_t *rlen, long *a, long *b,
                       char *err, size_t errlen)
{
    const char *close = memchr(open, '}', avail);
    const char *dots = close ? memchr(open, '.', (size_t)(close - open)) : NULL;
    if (!close || !dots || dots + 1 >= close || dots[1] != '.' ||
        !number_parse(open + 1, (size_t)(dots - open - 1), a) ||
        !number_parse(dots + 2, (size_t)(close - dots - 2), b) || *a > *b) {
        snprintf(err, errlen, "stream: a range is written {a..b}, with whole numbers a <= b "
                 "(no leading zeros)");
        return -1;
    }
    if (*b - *a >= PG_STREAMS_MAX) {
        snprintf(err, errlen, "stream: more than %d streams", PG_STREAMS_MAX);
        return -1;
    }
    *rlen = (size_t)(close - open) + 1;
    return 0;
}

/* One item, trimmed: a name, or a name with one range. */
static int add_item(pg_stream_set *s, const char *p, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f) {
            snprintf(err, errlen, "stream: blanks or control characters inside a name");
            return -1;
        }
    const char *dots = NULL;
    for (size_t i = 0; i + 1 < n && !dots; i++)
        if (p[i] == '.' && p[i + 1] == '.')
            dots = p + i;
    if (!dots)
        return add_name(s, p, n, err, errlen);
    const char *open = NULL;
    for (const char *q = dots; q > p && !open; q--)
        if (q[-1] == '{')
            open = q - 1;
    size_t rlen;
    long a, b;
    if (!open || range_parse(open, n - (size_t)(open - p), &rlen, &a, &b, err, errlen) < 0) {
        if (!open)
            snprintf(err, errlen, "stream: '..' outside a range {a..b}");
        return -1;
    }
    const char *tail = open + rlen;
    size_t head = (size_t)(open - p), tlen = n - head - rlen;
    for (size_t i = 0; i + 1 < tlen; i++)
        if (tail[i] == '.' && tail[i + 1] == '.') {
            snprintf(err, errlen, "stream: one range per name");
            return -1;
        }
    char name[PG_STREAM_NAME_MAX + 32];
    for (long k = a; k <= b; k++) {
        int m = snprintf(name, sizeof(name), "%.*s{%ld}%.*s", (int)head, p, k, (int)tlen, tail);
        if (m < 0 || (size_t)m >= sizeof(name)) {
            snprintf(err, errlen, "stream: a name is longer than %d bytes", PG_STREAM_NAME_MAX);
            return -1;
        }
        if (add_name(s, name, (size_t)m, err, errlen) < 0)
            return -1;
    }
    return 0;
}

int pg_stream_set_parse(const char *text, pg_stream_set *out, char *err, size_t errlen)
{
    *out = (pg_stream_set){0};
    const char *p = text ? text : "";
    out->names = calloc(PG_STREAMS_MAX, sizeof(char *));
    if (!out->names) {
        snprintf(err, errlen, "stream: out of memory");
        return -1;
    }
    for (;;) {
        const char *end = p + strcspn(p, ",");
        const char *b = p, *e = end;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (b == e) {
            snprintf(err, errlen, "stream: empty, or an empty item (two commas, or one at an end)");
            pg_stream_set_free(out);
            return -1;
        }
        if (add_item(out, b, (size_t)(e - b), err, errlen) < 0) {
            pg_stream_set_free(out);
            return -1;
        }
        if (!*end)
            return 0;
        p = end + 1;
    }
}

/* ---- redis_cluster_nodes ---- */

int pg_cluster_nodes_parse(const char *text, pg_redis_addr *out, size_t max, char *err,
                           size_t errlen)
{
    char why[256];
    int n = pg_redis_addrs_parse(text, out, max, why, sizeof(why));
    if (n >= 0)
        return n;
    const char *reason = why;
    if (strncmp(reason, SETTING_PREFIX, strlen(SETTING_PREFIX)) == 0)
        reason += strlen(SETTING_PREFIX);
    if (strstr(reason, "more than"))
        snprintf(err, errlen, "redis_cluster_nodes: more than %zu nodes", max);
    else
        snprintf(err, errlen, "redis_cluster_nodes: %s", reason);
    return -1;
}

/* ---- CLUSTER SLOTS ---- */

static bool slot_of(const redisReply *r, int *slot)
{
    if (!r || r->type != REDIS_REPLY_INTEGER || r->integer < 0 ||
        r->integer >= PG_CLUSTER_SLOTS)
        return false;
    *slot = (int)r->integer;
    return true;
}

/* [host, port, id, ...] of a range's primary into a. */
static bool node_of(const redisReply *r, const pg_redis_addr *asked, pg_redis_addr *a)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 || !r->element[0] ||
        !r->element[1] || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_INTEGER || r->element[1]->integer < 1 ||
        r->element[1]->integer > 65535)
        return false;
    const redisReply *h = r->element[0];
    if (h->len == 0 && asked) {
        snprintf(a->host, sizeof(a->host), "%s", asked->host);
    } else if (pg_redis_host_ok(h->str, h->len)) {
        memcpy(a->host, h->str, h->len);
        a->host[h->len] = '\0';
    } else {
        return false;
    }
    a->port = (int)r->element[1]->integer;
    return true;
}

int pg_cluster_slots_parse(const redisReply *reply, const pg_redis_addr *asked,
                           pg_cluster_map *out, char *why, size_t len)
{
    *out = (pg_cluster_map){0};
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        if (reply && reply->type == REDIS_REPLY_ERROR && reply->str) {
            char text[80];
            pg_redis_printable(reply->str, reply->len, text, sizeof(text));
            snprintf(why, len, "CLUSTER SLOTS refused: %s", text);
        } else {
            snprintf(why, len, "malformed answer to CLUSTER SLOTS (not an array)");
        }
        return -1;
    }
    if (reply->elements == 0 || reply->elements > PG_CLUSTER_SLOTS) {
        snprintf(why, len, "CLUSTER SLOTS: %zu ranges (the cluster has no slots assigned?)",
                 reply->elements);
        return -1;
    }
    out->ranges = calloc(reply->elements, sizeof(*out->ranges));
    if (!out->ranges) {
        snprintf(why, len, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        pg_cluster_range *rg = &out->ranges[i];
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            !slot_of(e->element[0], &rg->start) || !slot_of(e->element[1], &rg->end) ||
            rg->start > rg->end || !node_of(e->element[2], asked, &rg->primary)) {
            snprintf(why, len, "malformed answer to CLUSTER SLOTS (range %zu)", i);
            pg_cluster_map_free(out);
            return -1;
        }
    }
    out->n = reply->elements;
    return 0;
}

void pg_cluster_map_free(pg_cluster_map *m)
{
    if (!m)
        return;
    free(m->ranges);
    m->ranges = NULL;
    m->n = 0;
}

const pg_redis_addr *pg_cluster_map_owner(const pg_cluster_map *m, int slot)
{
    for (size_t i = 0; m && i < m->n; i++)
        if (slot >= m->ranges[i].start && slot <= m->ranges[i].end)
            return &m->ranges[i].primary;
    return NULL;
}

int pg_cluster_is_redirect(const char *error, size_t len)
{
    return (len >= 6 && memcmp(error, "MOVED ", 6) == 0) ||
           (len >= 4 && memcmp(error, "ASK ", 4) == 0);
}
