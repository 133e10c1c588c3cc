/* reply.c - the JSON the gateway writes: browser events, the seed's error
 * object, and the error codes' texts. */
#include "gateway.h"

#include <stdlib.h>

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
