/* reply.c - see reply.h.
 *
 * Most strings in a reply need no escaping: every code's text and the
 * usual msg_id.  Those are copied between quotes as they are; anything else
 * (a quote, a backslash, a control or non-ASCII byte, a value that is not
 * a string) is printed by jansson. */
#include "reply.h"

#include "json_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

static int plain_string(json_t *v)
{
    return json_is_string(v) && pg_json_plain(json_string_value(v), json_string_length(v));
}

/* The room v's JSON text takes. */
static size_t value_size(json_t *v)
{
    return plain_string(v) ? json_string_length(v) + 2 : json_dumpb(v, NULL, 0, DUMP_FLAGS);
}

static void append_plain(char *text, size_t *at, const char *s, size_t n)
{
    text[(*at)++] = '"';
    memcpy(text + *at, s, n);
    *at += n;
    text[(*at)++] = '"';
}

/* Appends v's JSON text at text + *at; the room was measured for it. */
static void append_value(char *text, size_t *at, size_t size, json_t *v)
{
    if (plain_string(v))
        append_plain(text, at, json_string_value(v), json_string_length(v));
    else
        *at += json_dumpb(v, text + *at, size - *at, DUMP_FLAGS);
}

char *pg_reply_json(int code, const char *msg, json_t *msg_id, json_t *req_id, const char *tail,
                    size_t *len)
{
    size_t msg_len = strlen(msg);
    json_t *msg_text = NULL;   /* msg to escape */
    if (!pg_json_plain(msg, msg_len)) {
        msg_text = json_string(msg);
        if (!msg_text)   /* not UTF-8 (say, a parser's message about bad input) */
            msg_text = json_string(code ? "error" : "ok");
        if (!msg_text)
            return NULL;
    }
    json_t *id = msg_id ? msg_id : json_null();
    size_t size = 64 + (msg_text ? value_size(msg_text) : msg_len + 2) + value_size(id) +
                  (req_id ? value_size(req_id) : 0) + strlen(tail);
    char *text = malloc(size);
    if (text) {
        size_t at = (size_t)snprintf(text, size, "{\"code\":%d,\"msg\":", code);
        if (msg_text)
            append_value(text, &at, size, msg_text);
        else
            append_plain(text, &at, msg, msg_len);
        at += (size_t)snprintf(text + at, size - at, ",\"msg_id\":");
        append_value(text, &at, size, id);
        if (req_id) {
            at += (size_t)snprintf(text + at, size - at, ",\"req_id\":");
            append_value(text, &at, size, req_id);
        }
        at += (size_t)snprintf(text + at, size - at, "%s}", tail);
        *len = at;
    }
    json_decref(msg_text);
    return text;
}
