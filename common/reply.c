/* reply.c - see reply.h. */
#include "reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

/* Appends v's JSON text at text + *at; the room was measured for it. */
static void append_value(char *text, size_t *at, size_t size, json_t *v)
{
    *at += json_dumpb(v, text + *at, size - *at, DUMP_FLAGS);
}

char *pg_reply_json(int code, const char *msg, json_t *msg_id, json_t *req_id, const char *tail,
                    size_t *len)
{
    json_t *msg_text = json_string(msg);
    if (!msg_text)   /* not UTF-8 (say, a parser's message about bad input) */
        msg_text = json_string(code ? "error" : "ok");
    json_t *id = msg_id ? msg_id : json_null();
    size_t size = 64 + json_dumpb(msg_text, NULL, 0, DUMP_FLAGS) + json_dumpb(id, NULL, 0, DUMP_FLAGS) +
                  (req_id ? json_dumpb(req_id, NULL, 0, DUMP_FLAGS) : 0) + strlen(tail);
    char *text = malloc(size);
    if (text) {
        size_t at = (size_t)snprintf(text, size, "{\"code\":%d,\"msg\":", code);
        append_value(text, &at, size, msg_text);
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
