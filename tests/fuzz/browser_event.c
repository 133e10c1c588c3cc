/* browser_event.c - fuzzes the decoding of what browsers send on the
 * WebSocket (gateway/browser.c): CONNECT, ACK, HEART_BEAT, NEW_MSG and
 * anything else, through browser_decode, the pure part of on_text (the
 * acting needs a running server: sessions, tokens, routing).
 *
 * Checked: every input gets a kind; only a JSON object gets past
 * EVENT_BAD_JSON; a field is set only for its own event; a chat recipient
 * is a uuid a token could name, and a chat text a JSON string. */
#include "../../gateway/browser.c"

#include <stdint.h>

gw_context gw;                     /* gateway/main.c's; nothing here reads it */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet++)
        pg_log_set_level(PG_LOG_ERROR);
    browser_event ev;
    browser_decode((const char *)data, size, &ev);
    if ((ev.kind == EVENT_BAD_JSON) != !json_is_object(ev.msg))
        abort();
    if ((ev.token && ev.kind != EVENT_CONNECT) || (ev.ack_id && ev.kind != EVENT_ACK) ||
        ((ev.to || ev.text) && ev.kind != EVENT_NEW_MSG))
        abort();
    if (ev.to && !pg_token_uuid_ok(ev.to, strlen(ev.to)))
        abort();
    if (ev.text && !json_is_string(ev.text))
        abort();
    json_decref(ev.msg);
    return 0;
}
