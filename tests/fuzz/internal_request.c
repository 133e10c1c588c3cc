/* internal_request.c - fuzzes the decoding of requests on the gateway's
 * internal port (gateway/internal.c): /worksheet/send-message from the
 * consumer and /chat/push-local from the proxy, JSON of any shape (wrong
 * types, huge arrays, deep nesting), through internal_check, the checks
 * gw_internal_request makes before it acts (the acting needs a running
 * server: routing, task workers, sessions).  Accepted work orders are also
 * built into the events browsers would get (gw_worksheet_json).
 *
 * Checked: a refused request has an error code and text (and text that is
 * not JSON at most a msg_id found in its bytes); an accepted
 * send-message is an order of 1 to 1000 items, each with the entry's uuid
 * (1 to 63 bytes), an id and a payload that is a JSON object with that id and, as
 * its response, the entry's data (copied from the request's bytes); an
 * accepted push-local has the fields push_local reads.  The reactor
 * thread's unparsed look for a request's uuid (peek_string) is fed the same
 * bytes. */
#include "../../gateway/internal.c"

#include <stdint.h>

gw_context gw;                     /* gateway/main.c's; nothing here reads it */

/* The reactor thread's look for a request's target (peek_string): within
 * the window and the output, no quote, backslash or control character, and
 * the bytes it returns are in the input. */
static void peek_checked(const uint8_t *data, size_t size)
{
    char out[PG_UUID_MAX + 1];
    int n = peek_string((const char *)data, size, "uuid", out, sizeof(out));
    if (n < -1 || n >= (int)sizeof(out) || (n >= 0 && (size_t)n != strlen(out)))
        abort();
    for (int i = 0; i < n; i++)
        if (out[i] == '"' || out[i] == '\\' || (unsigned char)out[i] < 0x20)
            abort();
    if (n > 0 && !memmem(data, size < PEEK_BYTES ? size : PEEK_BYTES, out, (size_t)n))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet++)
        pg_log_set_level(PG_LOG_ERROR);
    internal_req r;
    internal_check((const char *)data, size, &r);
    if (r.kind == INTERNAL_REFUSED) {
        if (r.order || r.code == PG_OK || (r.code != PG_ERR_UNKNOWN_URL && !r.problem))
            abort();
        const char *named = json_string_value(json_object_get(r.req, "msg_id"));
        if (r.code == PG_ERR_BAD_JSON && r.req &&
            (json_object_size(r.req) != 1 || !named || !*named ||
             !memmem(data, size, named, strlen(named))))
            abort();   /* text that is not JSON: at most the msg_id written last */
    } else if (r.kind == INTERNAL_SEND_MESSAGE) {
        size_t n = r.order->n;
        if (n < 1 || n > MAX_TARGETS || !r.order->chat_token ||
            strcmp(r.order->chat_token, json_string_value(json_object_get(r.req, "chat_token"))))
            abort();
        for (size_t i = 0; i < n; i++) {
            const gw_item *item = &r.order->items[i];
            if (!*item->uuid || strlen(item->uuid) > PG_UUID_MAX || !*item->id || !item->payload ||
                item->early_n)
                abort();
            json_t *event = json_loads(item->payload, 0, NULL);
            json_t *entry = json_array_get(json_object_get(r.req, "data"), i);
            const char *event_id = json_string_value(json_object_get(event, "id"));
            if (!event_id || strcmp(item->id, event_id) ||
                strcmp(item->uuid, json_string_value(json_object_get(entry, "uuid"))) ||
                !json_equal(json_object_get(event, "response"), json_object_get(entry, "data")))
                abort();
            json_decref(event);
        }
        gw_order_free(r.order);
    } else if (r.kind == INTERNAL_PUSH_LOCAL) {
        if (!json_string_value(json_object_get(r.req, "chat_token")) || !push_id(r.req))
            abort();
    } else {
        abort();
    }
    json_decref(r.req);
    peek_checked(data, size);
    return 0;
}
