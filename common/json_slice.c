/* json_slice.c - where a member's value lies in the text of a JSON object:
 * see json_slice.h.  A scan over valid JSON: strings are skipped escape by
 * escape, objects and arrays by depth, and numbers and literals up to the
 * next delimiter. */
#include "json_slice.h"

#include <string.h>

typedef struct {
    const char *p, *end;
} scan;

static void skip_space(scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* At a '"': past the closing quote; *escaped: the string held an escape. */
static int skip_string(scan *s, int *escaped)
{
    *escaped = 0;
    for (s->p++; s->p < s->end; s->p++) {
        if (*s->p == '\\') {
            *escaped = 1;
            if (++s->p == s->end)
                return -1;
        } else if (*s->p == '"') {
            s->p++;
            return 0;
        }
    }
    return -1;
}

static int skip_value(scan *s)
{
    int depth = 0, escaped;
    while (s->p < s->end) {
        char ch = *s->p;
        if (ch == '"') {
            if (skip_string(s, &escaped) < 0)
                return -1;
        } else if (ch == '{' || ch == '[') {
            depth++;
            s->p++;
        } else if (ch == '}' || ch == ']' || ch == ',') {
            if (depth == 0)
                return 0;          /* the delimiter after a scalar */
            if (ch != ',')
                depth--;
            s->p++;
        } else {
            s->p++;
        }
        if (depth == 0 && (ch == '"' || ch == '}' || ch == ']'))
            return 0;              /* a string, object or array is complete */
    }
    return depth == 0 ? 0 : -1;
}

/* Past the trailing whitespace of a scalar's span (skip_value stops at its
 * delimiter, which may follow spaces). */
static size_t trimmed(const char *start, const char *stop)
{
    while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t' || stop[-1] == '\n' ||
                            stop[-1] == '\r'))
        stop--;
    return (size_t)(stop - start);
}

int pg_json_elements_begin(pg_json_elements *it, const char *text, size_t len)
{
    scan s = {text, text + len};
    skip_space(&s);
    if (s.p == s.end || *s.p != '[')
        return PG_SLICE_UNKNOWN;
    *it = (pg_json_elements){s.p + 1, s.end};
    return 0;
}

int pg_json_elements_next(pg_json_elements *it, const char **value, size_t *value_len)
{
    scan s = {it->p, it->end};
    skip_space(&s);
    if (s.p < s.end && *s.p == ']')
        return PG_SLICE_ABSENT;
    const char *start = s.p;
    if (s.p == s.end || skip_value(&s) < 0 || s.p == start)
        return PG_SLICE_UNKNOWN;
    *value = start;
    *value_len = trimmed(start, s.p);
    skip_space(&s);
    if (s.p < s.end && *s.p == ',')
        s.p++;
    it->p = s.p;
    return PG_SLICE_FOUND;
}

int pg_json_member_slice(const char *text, size_t len, const char *key, const char **value,
                         size_t *value_len)
{
    scan s = {text, text + len};
    size_t key_len = strlen(key);
    int found = PG_SLICE_ABSENT, escaped;
    skip_space(&s);
    if (s.p == s.end || *s.p != '{')
        return PG_SLICE_UNKNOWN;
    s.p++;
    for (;;) {
        skip_space(&s);
        if (s.p == s.end || *s.p != '"')
            return s.p < s.end && *s.p == '}' ? found : PG_SLICE_UNKNOWN;
        const char *name = s.p + 1;
        if (skip_string(&s, &escaped) < 0 || escaped)
            return PG_SLICE_UNKNOWN;
        int match = (size_t)(s.p - 1 - name) == key_len && memcmp(name, key, key_len) == 0;
        skip_space(&s);
        if (s.p == s.end || *s.p != ':')
            return PG_SLICE_UNKNOWN;
        s.p++;
        skip_space(&s);
        const char *start = s.p;
        if (skip_value(&s) < 0)
            return PG_SLICE_UNKNOWN;
        if (match) {               /* the last one wins, as in jansson's tree */
            *value = start;
            *value_len = trimmed(start, s.p);
            found = PG_SLICE_FOUND;
        }
        skip_space(&s);
        if (s.p < s.end && *s.p == ',')
            s.p++;
    }
}
