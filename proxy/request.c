/* request.c - what gateways send to the proxy, and the replies it writes.
 *
 * Every request frame gets exactly one reply frame on the same connection,
 * carrying the request's msg_id and req_id, so the gateway can match it
 * (it may have many pushes in flight).  A malformed request is answered
 * with an error and the connection goes on; only a frame over
 * package_max_length closes it (the engine does that). */
#include "proxy.h"

#include "log.h"
#include "reply.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* extra (members for a reply, e.g. /stats) goes in as the tail of the
 * frame: its text without the braces. */
void px_answer(pg_session_id session, int code, const char *msg, json_t *msg_id, json_t *req_id,
               json_t *extra)
{
    char *members = extra ? json_dumps(extra, JSON_COMPACT) : NULL;
    size_t n = members ? strlen(members) : 0;
    if (n >= 2 && members[0] == '{') {
        members[0] = ',';            /* {"a":1} -> ,"a":1 */
        members[n - 1] = '\0';
        if (n == 2)
            members[0] = '\0';       /* {} */
    }
    /* errors without extra members get the seed's error shape */
    const char *tail = members ? members : code != PG_OK ? ",\"data\":[]" : "";
    size_t len;
    char *text = pg_reply_json(code, msg ? msg : pg_code_text(code), msg_id, req_id, tail, &len);
    if (!text || pg_server_send(px.server, session, text, len) < 0)
        pg_debug("reply to session %llx dropped", (unsigned long long)session);
    free(text);
    free(members);
}

static void refuse(pg_session_id session, int code, const char *why, json_t *req)
{
    PX_COUNT(bad_requests);
    pg_info("request refused: %s", why);
    px_answer(session, code, why, json_object_get(req, "msg_id"), json_object_get(req, "req_id"),
              NULL);
}

/* proxy_info {"ip","port"}: 0 with the target, or -1. The port may also be a
 * numeric string (the seed's PHP gateways wrote it so). */
static int target_of(json_t *req, const char **ip, int *port)
{
    json_t *info = json_object_get(req, "proxy_info");
    json_t *p = json_object_get(info, "port");
    *ip = json_string_value(json_object_get(info, "ip"));
    long long n = -1;
    if (json_is_integer(p)) {
        n = json_integer_value(p);
    } else if (json_is_string(p)) {
        char *end;
        n = strtoll(json_string_value(p), &end, 10);
        if (*end || end == json_string_value(p))
            n = -1;
    }
    *port = (int)n;
    return *ip && **ip && strlen(*ip) < 64 && n > 0 && n <= 65535 ? 0 : -1;
}

static int nonempty_string(json_t *req, const char *key)
{
    const char *s = json_string_value(json_object_get(req, key));
    return s && *s;
}

/* The request's own text, checked above, goes on as it came: only the
 * proxy's req_id is added at its end (a JSON object's last member of a
 * name wins), so remote_data, the browser's event, is neither parsed again
 * by the proxy's writer nor printed again. */
static void push_local(pg_session_id session, json_t *req, const char *text, size_t len)
{
    const char *ip;
    int port;
    if (target_of(req, &ip, &port) < 0) {
        refuse(session, PG_ERR_BAD_REQUEST, "proxy_info with an ip and a port is required", req);
        return;
    }
    if (!nonempty_string(req, "chat_token") || !nonempty_string(req, "client_id") ||
        !nonempty_string(req, "uuid") || !json_is_object(json_object_get(req, "remote_data"))) {
        refuse(session, PG_ERR_BAD_REQUEST,
               "chat_token, client_id, uuid and remote_data (an object) are required", req);
        return;
    }
    json_t *msg_id = json_object_get(req, "msg_id");
    json_t *req_id = json_object_get(req, "req_id");
    static struct evbuffer *body;   /* scratch: its text moves to the target's output */
    if (!body && !(body = evbuffer_new())) {
        px_answer(session, PG_ERR_INTERNAL, NULL, msg_id, req_id, NULL);
        return;
    }
    evbuffer_drain(body, evbuffer_get_length(body));
    while (len > 0 && text[len - 1] != '}')   /* trailing white space */
        len--;
    if (len < 2 || evbuffer_add(body, text, len - 1) < 0) {
        px_answer(session, PG_ERR_INTERNAL, NULL, msg_id, req_id, NULL);
        return;
    }
    PX_COUNT(requests);
    px_forward(ip, port, body, session, req_id, msg_id);
}

static void stats(pg_session_id session, json_t *req)
{
    json_t *extra = json_pack("{s:o,s:o,s:o,s:i}", "stats", px_stats_json(), "nodes",
                              px_nodes_json(), "targets", px_targets_json(), "worker",
                              pg_server_worker_id(px.server));
    px_answer(session, PG_OK, NULL, json_object_get(req, "msg_id"), json_object_get(req, "req_id"),
              extra);
    json_decref(extra);
}

void px_request(pg_session_id session, const char *data, size_t len)
{
    json_error_t err;
    json_t *req = json_loadb(data, len, 0, &err);
    const char *url = json_string_value(json_object_get(req, "url"));
    if (!json_is_object(req)) {
        char why[200];
        snprintf(why, sizeof(why), "not a JSON object: %s", req ? "another JSON value" : err.text);
        refuse(session, PG_ERR_BAD_JSON, why, NULL);
    } else if (!url) {
        refuse(session, PG_ERR_BAD_REQUEST, "url is missing", req);
    } else if (strcmp(url, "/chat/push-local") == 0) {
        push_local(session, req, data, len);
    } else if (strcmp(url, "/stats") == 0) {
        stats(session, req);
    } else {
        refuse(session, PG_ERR_UNKNOWN_URL, "unknown url", req);
    }
    json_decref(req);
}
