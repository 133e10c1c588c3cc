/* codes.c - the reply codes' texts and what they mean for a retry (codes.h). */
#include "codes.h"

const char *pg_code_text(int code)
{
    switch (code) {
    case PG_OK: return "ok";
    case PG_ERR_EVENT_NULL: return "event is null";
    case PG_ERR_BAD_JSON: return "message is not a JSON object";
    case PG_ERR_NOT_AUTHENTICATED: return "not authenticated";
    case PG_ERR_BAD_REQUEST: return "bad request";
    case PG_ERR_TOO_MANY: return "too many messages: slow down";
    case PG_ERR_TOO_LARGE: return "message too large";
    case PG_ERR_BAD_TOKEN: return "invalid chat_token";
    case PG_ERR_UNKNOWN_URL: return "unknown url";
    case PG_ERR_GONE: return "gone";
    case PG_ERR_UNREACHABLE: return "unreachable";
    case PG_ERR_BUSY: return "busy";
    case PG_ERR_INBOX_FULL: return "the recipient's stored messages are at their limit";
    case PG_ERR_RATE_LIMITED: return "over this app's rate: retry later";
    case PG_ERR_UNAVAILABLE: return "MySQL is unavailable: retry later";
    default: return "internal error";
    }
}

int pg_code_final(int code)
{
    return code == PG_ERR_BAD_JSON || code == PG_ERR_BAD_REQUEST || code == PG_ERR_BAD_TOKEN ||
           code == PG_ERR_UNKNOWN_URL || code == PG_ERR_INBOX_FULL;
}

int pg_code_wait(int code)
{
    return code == PG_ERR_UNAVAILABLE || code == PG_ERR_BUSY || code == PG_ERR_RATE_LIMITED;
}
