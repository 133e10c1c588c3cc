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

/* {"event":"WorksheetMsg","response":BODY,"id":ID}, written piece by
 * piece: one per target of every work order, and a jansson object for it
 * cost more than the order's routing. */
char *gw_worksheet_json(const char *body, size_t body_len, const char *id, size_t *len)
{
    static const char head[] = "{\"event\":\"WorksheetMsg\",\"response\":", mid[] = ",\"id\":";
    json_t *id_text = json_string(id);
    size_t id_len = id_text ? json_dumpb(id_text, NULL, 0, JSON_ENCODE_ANY) : 0;
    size_t size = sizeof(head) - 1 + body_len + sizeof(mid) - 1 + id_len + 2;
    char *text = id_text ? malloc(size) : NULL;
    if (text) {
        char *p = text;
        memcpy(p, head, sizeof(head) - 1);
        memcpy(p += sizeof(head) - 1, body, body_len);
        memcpy(p += body_len, mid, sizeof(mid) - 1);
        p += sizeof(mid) - 1;
        p += json_dumpb(id_text, p, id_len, JSON_ENCODE_ANY);
        *p++ = '}';
        *p = '\0';
        *len = (size_t)(p - text);
    }
    json_decref(id_text);
    return text;
}
