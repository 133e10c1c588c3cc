/* reply.c - the JSON the gateway writes: browser events, the seed's error
 * object, and the error codes' texts. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *gw_error_text(int code)
{
    switch (code) {
    case GW_OK: return "ok";
    case GW_ERR_EVENT_NULL: return "event is null";
    case GW_ERR_BAD_JSON: return "message is not a JSON object";
    case GW_ERR_NOT_AUTHENTICATED: return "not authenticated";
    case GW_ERR_BAD_REQUEST: return "bad request";
    case GW_ERR_BAD_TOKEN: return "invalid chat_token";
    case GW_ERR_UNKNOWN_URL: return "unknown url";
    case GW_ERR_GONE: return "gone";
    case GW_ERR_UNREACHABLE: return "unreachable";
    case GW_ERR_BUSY: return "busy";
    default: return "internal error";
    }
}

/* {"code":10101,"msg":"event is null","data":[]} */
char *gw_error_json(int code, const char *msg)
{
    json_t *o = json_pack("{s:i,s:s,s:[]}", "code", code, "msg", msg ? msg : gw_error_text(code),
                          "data");
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* {"event":EVENT,"data":DATA} */
char *gw_event_json(const char *event, json_t *data)
{
    json_t *o = json_pack("{s:s,s:o}", "event", event, "data", data ? data : json_object());
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* Appends v's JSON text at text + *at (size: the room there was measured for). */
static void append_value(char *text, size_t *at, size_t size, json_t *v)
{
    *at += json_dumpb(v, text + *at, size - *at, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Written member by member instead of through a jansson object: every
 * internal request gets a reply, and the object (a hash table, a copy of
 * each key) cost more than the request's own routing. */
char *gw_internal_reply_json(int code, const char *msg, json_t *msg_id, json_t *req_id,
                             const char *tail, size_t *len)
{
    json_t *msg_text = json_string(msg ? msg : gw_error_text(code));
    if (!msg_text)   /* not UTF-8 (a parser's message about bad input) */
        msg_text = json_string(gw_error_text(code));
    json_t *id = msg_id ? msg_id : json_null();
    size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t size = 64 + json_dumpb(msg_text, NULL, 0, flags) + json_dumpb(id, NULL, 0, flags) +
                  (req_id ? json_dumpb(req_id, NULL, 0, flags) : 0) + strlen(tail);
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

/* {"event":"WorksheetMsg","response":BODY,"id":ID}, member by member as
 * above: one per target of every work order. */
char *gw_worksheet_json(json_t *body, const char *id)
{
    json_t *id_text = json_string(id);
    size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t size = 64 + json_dumpb(body, NULL, 0, flags) + json_dumpb(id_text, NULL, 0, flags);
    char *text = id_text ? malloc(size) : NULL;
    if (text) {
        size_t at = (size_t)snprintf(text, size, "{\"event\":\"WorksheetMsg\",\"response\":");
        append_value(text, &at, size, body);
        at += (size_t)snprintf(text + at, size - at, ",\"id\":");
        append_value(text, &at, size, id_text);
        snprintf(text + at, size - at, "}");
    }
    json_decref(id_text);
    return text;
}
