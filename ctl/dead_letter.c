/* dead_letter.c - reading one entry of the consumer's dead-letter stream.
 *
 * Whatever comes from Redis is untrusted: anyone who can write to the stream
 * can put anything there, so every field is checked for presence, type and
 * form before dead.c shows or replays it, and text is made safe for a
 * terminal (no escape sequences) or for JSON (valid UTF-8).  A dead letter
 * that fails a check is not guessed at: it is reported and left alone.
 * Pure functions over a parsed reply, so they are unit tested
 * (tests/unit/test_dead_letter.c). */
#include "ctl.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EXCERPT_ID_MAX 48   /* of an unusable id, in a problem text */

/* A number of 1 to 20 digits within 64 bits; its end in *end. */
static bool number_valid(const char *s, size_t len, size_t *end)
{
    size_t i = 0;
    uint64_t v = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        unsigned d = (unsigned)(s[i] - '0');
        if (i == 20 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        i++;
    }
    *end = i;
    return i > 0;
}

bool ctl_stream_id_valid(const char *s, size_t len)
{
    size_t a, b;
    if (!s || !number_valid(s, len, &a) || a >= len || s[a] != '-')
        return false;
    return number_valid(s + a + 1, len - a - 1, &b) && a + 1 + b == len;
}

bool ctl_msg_id_valid(const char *s, size_t len)
{
    const char *at = s ? memchr(s, '@', len) : NULL;
    if (!at)
        return ctl_stream_id_valid(s, len);
    size_t a = (size_t)(at - s), t = len - a - 1, end;
    return ctl_stream_id_valid(s, a) && t >= 1 && t <= 4 && number_valid(at + 1, t, &end) &&
           end == t;
}

unsigned long long ctl_stream_id_ms(const char *id)
{
    return strtoull(id, NULL, 10);
}

/* The bytes of a string reply. */
static ctl_bytes bytes_of(const redisReply *r)
{
    return (ctl_bytes){r->str, r->len};
}

static bool is(const redisReply *k, const char *name)
{
    return k->len == strlen(name) && memcmp(k->str, name, k->len) == 0;
}

/* The field each name is kept in, or NULL for fields nobody reads. */
static ctl_bytes *slot_of(ctl_dead_letter *d, const redisReply *k)
{
    static const struct {
        const char *name;
        size_t offset;
    } known[] = {
        {"msg", offsetof(ctl_dead_letter, msg)},
        {"reason", offsetof(ctl_dead_letter, reason)},
        {"source_id", offsetof(ctl_dead_letter, source_id)},
        {"source_stream", offsetof(ctl_dead_letter, source_stream)},
        {"deliveries", offsetof(ctl_dead_letter, deliveries)},
        {"fields", offsetof(ctl_dead_letter, fields)},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (is(k, known[i].name))
            return (ctl_bytes *)((char *)d + known[i].offset);
    return NULL;
}

/* Takes the field list; the first of duplicate names counts, as in the
 * consumer.  false with d->problem set. */
static bool take_fields(ctl_dead_letter *d, const redisReply *fields)
{
    if (fields->type != REDIS_REPLY_ARRAY || fields->elements % 2) {
        snprintf(d->problem, sizeof(d->problem), "its fields are not a list of pairs");
        return false;
    }
    for (size_t i = 0; i < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type != REDIS_REPLY_STRING) {
            snprintf(d->problem, sizeof(d->problem), "a field name is not a string");
            return false;
        }
        ctl_bytes *slot = slot_of(d, k);
        if (!slot || slot->p)
            continue;
        if (v->type != REDIS_REPLY_STRING) {
            snprintf(d->problem, sizeof(d->problem), "field %s is not a string", k->str);
            return false;
        }
        *slot = bytes_of(v);
    }
    return true;
}

/* The original entry's other fields: a JSON object, whose msg_id (a replayed
 * entry's id before it) is the original id. */
static bool take_original_id(ctl_dead_letter *d)
{
    const char *id = d->source_id.p;
    size_t len = d->source_id.len;
    json_t *o = NULL;
    if (d->fields.p) {
        o = json_loadb(d->fields.p, d->fields.len, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            snprintf(d->problem, sizeof(d->problem), "field fields is not a JSON object");
            return false;
        }
        json_t *msg_id = json_object_get(o, "msg_id");
        if (msg_id) {
            id = json_string_value(msg_id);
            len = json_string_length(msg_id);
            if (!ctl_msg_id_valid(id, len)) {
                json_decref(o);
                snprintf(d->problem, sizeof(d->problem),
                         "fields.msg_id is not a stream entry id");
                return false;
            }
        }
    }
    d->id_from_fields = id != d->source_id.p;
    memcpy(d->original_id, id, len);
    d->original_id[len] = '\0';
    json_decref(o);
    return true;
}

static bool all_digits(ctl_bytes b)
{
    if (b.len == 0 || b.len > 18)
        return false;
    for (size_t i = 0; i < b.len; i++)
        if (b.p[i] < '0' || b.p[i] > '9')
            return false;
    return true;
}

/* The checks of a dead letter whose fields were taken. */
static void check(ctl_dead_letter *d)
{
    static const char *const required[] = {"msg", "reason", "source_id", "source_stream",
                                           "deliveries"};
    const ctl_bytes *have[] = {&d->msg, &d->reason, &d->source_id, &d->source_stream,
                               &d->deliveries};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!have[i]->p) {
            snprintf(d->problem, sizeof(d->problem), "no %s field", required[i]);
            return;
        }
    }
    if (!ctl_stream_id_valid(d->source_id.p, d->source_id.len))
        snprintf(d->problem, sizeof(d->problem), "source_id is not a stream entry id");
    else if (d->source_stream.len == 0 || memchr(d->source_stream.p, '\0', d->source_stream.len))
        snprintf(d->problem, sizeof(d->problem), "source_stream is not a stream name");
    else if (!all_digits(d->deliveries))
        snprintf(d->problem, sizeof(d->problem), "deliveries is not a number");
    else
        take_original_id(d);
}

int ctl_dead_letter_parse(const redisReply *item, ctl_dead_letter *d)
{
    memset(d, 0, sizeof(*d));
    if (!item || item->type != REDIS_REPLY_ARRAY || item->elements != 2 ||
        item->element[0]->type != REDIS_REPLY_STRING) {
        snprintf(d->problem, sizeof(d->problem), "an entry of an unexpected shape");
        return -1;
    }
    const redisReply *id = item->element[0];
    if (!ctl_stream_id_valid(id->str, id->len)) {
        char *shown = ctl_excerpt(bytes_of(id), EXCERPT_ID_MAX);
        snprintf(d->problem, sizeof(d->problem), "an entry whose id '%s' is not a stream id",
                 shown ? shown : "?");
        free(shown);
        return -1;
    }
    memcpy(d->id, id->str, id->len + 1);
    if (item->element[1]->type == REDIS_REPLY_NIL)
        snprintf(d->problem, sizeof(d->problem), "it has no fields (deleted?)");
    else if (take_fields(d, item->element[1]))
        check(d);
    return 0;
}

const char *ctl_dead_letter_unreplayable(const ctl_dead_letter *d, const char *stream, char *buf,
                                         size_t buflen)
{
    if (d->problem[0])
        return d->problem;
    if (d->msg.len == 0)
        return "the original entry had no msg field: there is nothing to replay";
    json_t *o = json_loadb(d->msg.p, d->msg.len, 0, NULL);
    bool object = json_is_object(o);
    json_decref(o);
    if (!object)
        return "msg is not a JSON object: the consumer would refuse it again";
    if (d->source_stream.len != strlen(stream) ||
        memcmp(d->source_stream.p, stream, d->source_stream.len) != 0) {
        char *from = ctl_excerpt(d->source_stream, 80);
        snprintf(buf, buflen, "it came from stream '%s', not '%s' (--set stream=... to replay it "
                 "there)", from ? from : "?", stream);
        free(from);
        return buf;
    }
    return NULL;
}

/* Whether the n digits at t.p + at stand alone in the text: no digit
 * right before or after. */
static bool whole_number_at(ctl_bytes t, size_t at, size_t n)
{
    bool before = at > 0 && t.p[at - 1] >= '0' && t.p[at - 1] <= '9';
    bool after = at + n < t.len && t.p[at + n] >= '0' && t.p[at + n] <= '9';
    return !before && !after;
}

bool ctl_reason_matches(ctl_bytes reason, const char *filter)
{
    size_t n = strlen(filter);
    if (!reason.p || n == 0 || n > reason.len)
        return n == 0;
    bool number = strspn(filter, "0123456789") == n;
    for (size_t at = 0; at + n <= reason.len; at++) {
        if (number ? memcmp(reason.p + at, filter, n) == 0 && whole_number_at(reason, at, n)
                   : strncasecmp(reason.p + at, filter, n) == 0)
            return true;
    }
    return false;
}

/* Length of the UTF-8 sequence at s (at most len bytes), 0 when it is not
 * one (bad lead byte, missing or bad continuation, overlong, surrogate, or
 * above U+10FFFF); *cp gets the code point. */
static size_t utf8_char(const unsigned char *s, size_t len, uint32_t *cp)
{
    size_t n;
    uint32_t c, min;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    } else if ((s[0] & 0xE0) == 0xC0) {
        n = 2, c = s[0] & 0x1F, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        n = 3, c = s[0] & 0x0F, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        n = 4, c = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return n;
}

char *ctl_excerpt(ctl_bytes text, size_t max)
{
    size_t cap = (max < text.len ? max : text.len) * 4 + 4;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    const unsigned char *s = (const unsigned char *)text.p;
    size_t at = 0, chars = 0, i = 0;
    while (i < text.len && chars < max) {
        uint32_t cp;
        size_t n = utf8_char(s + i, text.len - i, &cp);
        if (n == 0) {
            out[at++] = '?';
            i++;
        } else if (cp == '\n' || cp == '\r' || cp == '\t') {
            out[at++] = ' ';
            i++;
        } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) {
            out[at++] = '?';
            i += n;
        } else {
            memcpy(out + at, s + i, n);
            at += n;
            i += n;
        }
        chars++;
    }
    if (i < text.len) {
        /* the last kept character gives way to the mark */
        while (at > 0 && ((unsigned char)out[at - 1] & 0xC0) == 0x80)
            at--;
        if (at > 0)
            at--;
        memcpy(out + at, "...", 3);
        at += 3;
    }
    out[at] = '\0';
    return out;
}

char *ctl_dead_letter_excerpt(const ctl_dead_letter *d, size_t max)
{
    if (d->msg.len == 0) {
        char *fields = ctl_excerpt(d->fields, max);
        char *out = fields ? malloc(strlen(fields) + 16) : NULL;
        if (out)
            sprintf(out, "(no msg) %s", fields);
        free(fields);
        return out;
    }
    json_t *msg = json_loadb(d->msg.p, d->msg.len, 0, NULL);
    char *data = json_dumps(json_object_get(msg, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(msg);
    char *out = data ? ctl_excerpt((ctl_bytes){data, strlen(data)}, max)
                     : ctl_excerpt(d->msg, max);
    free(data);
    return out;
}

json_t *ctl_json_text(ctl_bytes text)
{
    if (!text.p)
        return json_string("");
    char *clean = malloc(text.len * 3 + 1);
    if (!clean)
        return NULL;
    const unsigned char *s = (const unsigned char *)text.p;
    size_t at = 0;
    for (size_t i = 0; i < text.len;) {
        uint32_t cp;
        size_t n = utf8_char(s + i, text.len - i, &cp);
        if (n == 0) {
            memcpy(clean + at, "\xEF\xBF\xBD", 3);  /* U+FFFD */
            at += 3;
            i++;
        } else {
            memcpy(clean + at, s + i, n);
            at += n;
            i += n;
        }
    }
    json_t *j = json_stringn(clean, at);
    free(clean);
    return j;
}
