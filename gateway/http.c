/* http.c - plain HTTP requests, on the public port and the admin listener.
 *
 * ws.c parses the request and hands a worker "METHOD TARGET", and the
 * Authorization header's value after a newline when there was one (ws.h).
 * What is served:
 *   /healthz          to anyone: the node answers
 *   /stats, /metrics, /admin/cluster
 *                     the node's and the cluster's figures: to operators
 *                     (admin.c) on the public port, to anyone on the admin
 *                     listener, which binds loopback unless told otherwise
 *   anything else     a file of static_dir (the agent and cluster consoles:
 *                     pages without data, so public)
 * Only GET and HEAD; every response closes its connection. */
#include "gateway.h"

#include <event2/buffer.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATIC_FILE_MAX (4 * 1024 * 1024)
#define TARGET_MAX 255

/* Set while answering a HEAD request: headers only. */
static int answering_head;

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

static void reply_with(pg_session_id session, int status, const char *extra_headers,
                       const char *type, const char *body, size_t len, int head)
{
    char header[384];
    int n = snprintf(header, sizeof(header),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                     status, status_text(status), type, len, extra_headers);
    char *msg = malloc((size_t)n + len);
    if (!msg)
        return;
    memcpy(msg, header, (size_t)n);
    if (head)
        len = 0;
    memcpy(msg + n, body, len);
    pg_server_send(gw.server, session, msg, (size_t)n + len);
    free(msg);
}

void gw_http_reply(pg_session_id session, int status, const char *type, const char *body,
                   size_t len)
{
    reply_with(session, status, "", type, body, len, answering_head);
}

void gw_http_reply_later(pg_session_id session, int head, int status, const char *type,
                         const char *body, size_t len)
{
    reply_with(session, status, "", type, body, len, head);
}

static void reply_text(pg_session_id session, int status, const char *text)
{
    gw_http_reply(session, status, "text/plain", text, strlen(text));
}

static void serve_stats(pg_session_id session)
{
    json_t *o = gw_status_stats();
    char *body = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    if (body)
        gw_http_reply(session, 200, "application/json", body, strlen(body));
    else
        reply_text(session, 500, "out of memory\n");
    free(body);
}

/* The text is metrics.c's; this is only its HTTP answer. */
static void serve_metrics(pg_session_id session)
{
    struct evbuffer *out = evbuffer_new();
    if (!out) {
        reply_text(session, 500, "out of memory\n");
        return;
    }
    gw_metrics_text(out);
    size_t n = evbuffer_get_length(out);
    const char *body = (const char *)evbuffer_pullup(out, -1);
    gw_http_reply(session, 200, "text/plain; version=0.0.4; charset=utf-8", body ? body : "",
                  body ? n : 0);
    evbuffer_free(out);
}

static const char *content_type(const char *path)
{
    static const char *types[][2] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"}, {".json", "application/json"},
        {".svg", "image/svg+xml"}, {".png", "image/png"}, {".ico", "image/x-icon"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i][0]) == 0)
            return types[i][1];
    return "application/octet-stream";
}

static void serve_file(pg_session_id session, const char *path)
{
    if (!gw.cfg.static_dir || !*gw.cfg.static_dir || path[0] != '/' || strstr(path, "..") ||
        strlen(path) > 200) {
        reply_text(session, 404, "not found\n");
        return;
    }
    char full[512];
    snprintf(full, sizeof(full), "%s%s", gw.cfg.static_dir, strcmp(path, "/") ? path : "/index.html");
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    char *body = NULL;
    if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size <= STATIC_FILE_MAX &&
        (body = malloc((size_t)sb.st_size + 1)) &&
        read(fd, body, (size_t)sb.st_size) == sb.st_size)
        gw_http_reply(session, 200, content_type(full), body, (size_t)sb.st_size);
    else
        reply_text(session, 404, "not found\n");
    free(body);
    if (fd >= 0)
        close(fd);
}

static int is_operator_path(const char *target)
{
    return strcmp(target, "/stats") == 0 || strcmp(target, "/metrics") == 0 ||
           strcmp(target, "/admin/cluster") == 0;
}

/* An operator path on the public port without an operator's token. */
static void refuse(pg_session_id session, int verdict)
{
    static const char no_token[] = "an operator token is needed: Authorization: Bearer "
                                   "<admin_secret or a JWT with \"admin\": true>\n";
    static const char not_admin[] = "this token is not an operator's (no \"admin\": true)\n";
    if (verdict == GW_ADMIN_NOT_ADMIN)
        reply_with(session, 403, "", "text/plain", not_admin, sizeof(not_admin) - 1,
                   answering_head);
    else
        reply_with(session, 401, "WWW-Authenticate: Bearer realm=\"pushgate\"\r\n", "text/plain",
                   no_token, sizeof(no_token) - 1, answering_head);
}

static void serve(pg_session_id session, const char *target, int trusted,
                  const char *authorization, size_t auth_len)
{
    int verdict = GW_ADMIN_OK;
    if (is_operator_path(target) && !trusted)
        verdict = gw_admin_authorize(authorization, auth_len);
    if (strcmp(target, "/healthz") == 0)
        gw_http_reply(session, 200, "application/json", "{\"status\":\"ok\"}", 15);
    else if (verdict != GW_ADMIN_OK)
        refuse(session, verdict);
    else if (strcmp(target, "/stats") == 0)
        serve_stats(session);
    else if (strcmp(target, "/metrics") == 0)
        serve_metrics(session);
    else if (strcmp(target, "/admin/cluster") == 0)
        gw_admin_cluster(session, answering_head);
    else
        serve_file(session, target);
}

void gw_http_request(pg_session_id session, const char *data, size_t len, int trusted)
{
    const char *nl = memchr(data, '\n', len);
    size_t line_len = nl ? (size_t)(nl - data) : len;
    const char *authorization = nl ? nl + 1 : NULL;
    size_t auth_len = nl ? len - line_len - 1 : 0;
    char line[TARGET_MAX + 32], method[16], target[TARGET_MAX + 1];
    if (line_len >= sizeof(line)) {
        reply_text(session, 400, "bad request: target too long\n");
        return;
    }
    memcpy(line, data, line_len);
    line[line_len] = '\0';
    if (sscanf(line, "%15s %255s", method, target) != 2) {
        reply_text(session, 400, "bad request\n");
        return;
    }
    char *query = strchr(target, '?');
    if (query)
        *query = '\0';
    answering_head = strcmp(method, "HEAD") == 0;
    if (strcmp(method, "GET") != 0 && !answering_head)
        reply_text(session, 405, "GET only\n");
    else
        serve(session, target, trusted, authorization, auth_len);
    answering_head = 0;
}
