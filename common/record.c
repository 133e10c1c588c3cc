/* record.c - fixed-layout records (record.h). */
#include "record.h"

#include <stdlib.h>
#include <string.h>

static void put(pg_rec_writer *w, const void *bytes, size_t n)
{
    if (w->failed)
        return;
    if (w->cap - w->len < n) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap - w->len < n)
            cap *= 2;
        char *data = realloc(w->data, cap);
        if (!data) {
            w->failed = 1;
            return;
        }
        w->data = data;
        w->cap = cap;
    }
    memcpy(w->data + w->len, bytes, n);
    w->len += n;
}

void pg_rec_put_u8(pg_rec_writer *w, uint8_t v)
{
    put(w, &v, sizeof(v));
}

void pg_rec_put_u32(pg_rec_writer *w, uint32_t v)
{
    put(w, &v, sizeof(v));
}

void pg_rec_put_u64(pg_rec_writer *w, uint64_t v)
{
    put(w, &v, sizeof(v));
}

void pg_rec_put_i64(pg_rec_writer *w, int64_t v)
{
    put(w, &v, sizeof(v));
}

void pg_rec_put_strn(pg_rec_writer *w, const char *s, size_t len)
{
    if (!s || len >= PG_REC_NULL) {
        w->failed |= s != NULL;   /* too long to say: not silently NULL */
        pg_rec_put_u32(w, PG_REC_NULL);
        return;
    }
    pg_rec_put_u32(w, (uint32_t)len);
    put(w, s, len);
    put(w, "", 1);
}

void pg_rec_put_str(pg_rec_writer *w, const char *s)
{
    pg_rec_put_strn(w, s, s ? strlen(s) : 0);
}

void pg_rec_put_part(pg_rec_writer *w, const pg_rec_writer *part)
{
    if (part->failed)
        w->failed = 1;
    else if (part->len)
        put(w, part->data, part->len);
}

size_t pg_rec_put_count(pg_rec_writer *w)
{
    size_t at = w->len;
    pg_rec_put_u32(w, 0);
    return at;
}

void pg_rec_count_one(pg_rec_writer *w, size_t at)
{
    uint32_t n;
    if (w->failed || at + sizeof(n) > w->len)
        return;
    memcpy(&n, w->data + at, sizeof(n));
    n++;
    memcpy(w->data + at, &n, sizeof(n));
}

int pg_rec_written(const pg_rec_writer *w)
{
    return w->failed ? -1 : 0;
}

void pg_rec_writer_free(pg_rec_writer *w)
{
    free(w->data);
    *w = (pg_rec_writer){0};
}

pg_rec_reader pg_rec_reader_of(const char *data, size_t len)
{
    return (pg_rec_reader){.at = data, .left = data ? len : 0};
}

/* The next n bytes, or NULL (and the record bad) when fewer are left. */
static const char *take(pg_rec_reader *r, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = 1;
        return NULL;
    }
    const char *at = r->at;
    r->at += n;
    r->left -= n;
    return at;
}

/* The next n bytes into out, or zeros (and the record bad). */
static void read_into(pg_rec_reader *r, void *out, size_t n)
{
    const char *at = take(r, n);
    if (at)
        memcpy(out, at, n);
    else
        memset(out, 0, n);
}

uint8_t pg_rec_u8(pg_rec_reader *r)
{
    uint8_t v;
    read_into(r, &v, sizeof(v));
    return v;
}

uint32_t pg_rec_u32(pg_rec_reader *r)
{
    uint32_t v;
    read_into(r, &v, sizeof(v));
    return v;
}

uint64_t pg_rec_u64(pg_rec_reader *r)
{
    uint64_t v;
    read_into(r, &v, sizeof(v));
    return v;
}

int64_t pg_rec_i64(pg_rec_reader *r)
{
    int64_t v;
    read_into(r, &v, sizeof(v));
    return v;
}

const char *pg_rec_str(pg_rec_reader *r, size_t *len)
{
    uint32_t n = pg_rec_u32(r);
    if (len)
        *len = 0;
    if (r->bad || n == PG_REC_NULL)
        return NULL;
    const char *s = take(r, (size_t)n + 1);
    if (s && s[n] != '\0') {
        r->bad = 1;
        return NULL;
    }
    if (s && len)
        *len = n;
    return s;
}

uint32_t pg_rec_count(pg_rec_reader *r, size_t min_bytes)
{
    uint32_t n = pg_rec_u32(r);
    if (r->bad || (min_bytes && n > r->left / min_bytes)) {
        r->bad = 1;
        return 0;
    }
    return n;
}

int pg_rec_read_ok(const pg_rec_reader *r)
{
    return !r->bad;
}

int pg_rec_read_whole(const pg_rec_reader *r)
{
    return !r->bad && r->left == 0;
}
