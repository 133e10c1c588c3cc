/* daemon_status.c - a daemon's row in daemon_status: see daemon_status.h. */
#include "daemon_status.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pg_status_write(pg_db *db, const char *daemon_id, const char *role, const char *json)
{
    size_t len = strlen(json);
    if (len > PG_STATUS_MAX || strlen(daemon_id) > PG_STATUS_ID_MAX) {
        pg_warn("status report of %s not written: %zu bytes", daemon_id, len);
        return -1;
    }
    pg_db_value row[] = {PG_DB_STR_VALUE(daemon_id), PG_DB_STR_VALUE(role), PG_DB_STR_VALUE(json)};
    return pg_db_exec(db, "REPLACE INTO daemon_status (daemon_id, role, status, updated_at) "
                          "VALUES (?,?,?,CURRENT_TIMESTAMP(3))", row, 3, NULL, NULL);
}

int pg_status_write_json(pg_db *db, const char *daemon_id, const char *role, const json_t *status)
{
    char *text = json_dumps(status, JSON_COMPACT);
    if (!text) {
        pg_error("status report of %s not written: out of memory", daemon_id);
        return -1;
    }
    int rc = pg_status_write(db, daemon_id, role, text);
    free(text);
    return rc;
}

int pg_status_remove(pg_db *db, const char *daemon_id)
{
    pg_db_value id = PG_DB_STR_VALUE(daemon_id);
    return pg_db_exec(db, "DELETE FROM daemon_status WHERE daemon_id = ?", &id, 1, NULL, NULL);
}

static int in(unsigned char c, unsigned char lo, unsigned char hi)
{
    return c >= lo && c <= hi;
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0: the rules of
 * RFC 3629, which jansson checks too (no overlong forms, no surrogates,
 * nothing past U+10FFFF). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (in(c, 0xC2, 0xDF))
        return in(s[1], 0x80, 0xBF) ? 2 : 0;
    if (in(c, 0xE0, 0xEF)) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return in(s[1], lo, hi) && in(s[2], 0x80, 0xBF) ? 3 : 0;
    }
    if (in(c, 0xF0, 0xF4)) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return in(s[1], lo, hi) && in(s[2], 0x80, 0xBF) && in(s[3], 0x80, 0xBF) ? 4 : 0;
    }
    return 0;
}

size_t pg_status_utf8(char *dst, size_t size, const char *src)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t at = 0;
    while (*s) {
        size_t n = utf8_len(s);   /* stops at the NUL: it is no continuation byte */
        if (at + (n ? n : 1) >= size)
            break;
        if (n)
            memcpy(dst + at, s, n);
        else
            dst[at] = '?';
        at += n ? n : 1;
        s += n ? n : 1;
    }
    dst[at] = '\0';
    return at;
}

json_t *pg_status_string(const char *s)
{
    json_t *v = json_string(s);
    if (v)
        return v;
    size_t size = strlen(s) + 1;
    char *copy = malloc(size);
    if (copy) {
        pg_status_utf8(copy, size, s);
        v = json_string(copy);
    }
    free(copy);
    return v;
}

void pg_status_id(char *id, size_t size, const char *role, const char *name)
{
    char raw[PG_STATUS_ID_MAX + 8];
    snprintf(raw, sizeof(raw), "%s %s", role, name);
    pg_status_utf8(id, size < PG_STATUS_ID_MAX + 1 ? size : PG_STATUS_ID_MAX + 1, raw);
}
