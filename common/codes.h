/* codes.h - the reply codes every pushgate daemon speaks.
 *
 * The gateway's and the proxy's reply frames, the error objects browsers
 * get, and what the consumer decides on a reply all use this one table (the
 * README lists it), so that no daemon includes another daemon's headers.
 * The numbers are the seed system's where it had them. */
#ifndef PG_CODES_H
#define PG_CODES_H

enum {
    PG_OK = 0,
    PG_ERR_EVENT_NULL = 10101,     /* browser message without a known event */
    PG_ERR_BAD_JSON = 10102,       /* not a JSON object */
    PG_ERR_NOT_AUTHENTICATED = 10103,
    PG_ERR_BAD_REQUEST = 10104,    /* a field missing or of the wrong type */
    PG_ERR_TOO_MANY = 10105,       /* a browser over its message or chat rate */
    PG_ERR_TOO_LARGE = 10106,      /* a chat message over chat_max_bytes */
    PG_ERR_BAD_TOKEN = 10201,      /* chat_token unknown or disabled */
    PG_ERR_UNKNOWN_URL = 10202,
    PG_ERR_GONE = 10203,           /* push-local: the session is closed or not that uuid's */
    PG_ERR_UNREACHABLE = 10204,    /* the proxy or target node did not answer */
    PG_ERR_BUSY = 10205,           /* a queue on the way is full: retry later */
    PG_ERR_INBOX_FULL = 10206,     /* a recipient has max_offline_per_uuid stored messages */
    PG_ERR_RATE_LIMITED = 10207,   /* an app over app_rate on this node: retry later */
    PG_ERR_INTERNAL = 10500,       /* MySQL failed: retry */
    PG_ERR_UNAVAILABLE = 10503,    /* MySQL cannot be reached: retry later, the request is not at fault */
};

/* A short text for a reply's "msg" when there is nothing more precise. */
const char *pg_code_text(int code);
/* 1 when retrying the same request cannot help (it is malformed or refused). */
int pg_code_final(int code);
/* 1 when the receiver could not try at all (no fault of the request): a
 * retry later is not a new attempt. */
int pg_code_wait(int code);

#endif
