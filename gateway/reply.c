/* reply.c - the JSON the gateway writes: browser events and the seed's
 * error object (the codes and their texts: common/codes.h). */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {"code":10101,"msg":"event is null","data":[]} */
char *gw_error_json(int code, const char *msg)
{
    json_t *o = json_pack("{s:i,s:s,s:[]}", "code", code, "msg", msg ? msg : pg_code_text(code),
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

/* {"event":"WorksheetMsg","response":BODY,"id":ID}, written member by
 * member: one per target of every work order, and a jansson object for it
 * cost more than the order's routing. */
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
