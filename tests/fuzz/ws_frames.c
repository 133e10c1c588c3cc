/* ws_frames.c - fuzzes the WebSocket frame reader of gateway/ws.c (with
 * wslay under it): frame headers and lengths, masking, fragmentation,
 * control frames between fragments, close frames and their codes, the UTF-8
 * check of text messages, and the limits on what incomplete messages cost
 * (max_message, max_incomplete_bytes).
 *
 * The input is what a browser sends after a valid handshake.  It goes to
 * two connections through the engine's kept input (conn.h): the first gets
 * it in one read, the second in reads of 1 to 16 bytes (sizes taken from
 * the input), while the first still holds what it kept, so the limit on all
 * connections together is reached too.  Then each is answered by a worker,
 * closed by the server and freed.  Checked: what workers get (conn.h), that
 * what was written is whole, valid server frames, and that once both are
 * freed no incomplete message is still counted. */
#include "../../gateway/ws.c"

#include "conn.h"

#define MAX_MESSAGE 1024
static const gw_ws_config cfg = {
    .ws_path = "/ws",
    .jwt_secret = "fuzz-secret",
    .allowed_origins = "",
    .max_header_size = 2048,
    .max_message = MAX_MESSAGE,
    .max_incomplete_bytes = 1500,
};

static const char handshake[] =
    "GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const pg_protocol *p = gw_ws_protocol(&cfg);
    static pg_conn a, b;
    fuzz_conn_open(&a, p, MAX_MESSAGE);
    fuzz_conn_open(&b, p, MAX_MESSAGE);
    fuzz_conn_read(&a, handshake, sizeof(handshake) - 1);
    fuzz_conn_read(&b, handshake, sizeof(handshake) - 1);
    if (a.closing || b.closing)
        abort();                   /* the handshake is valid */

    fuzz_conn_read(&a, (const char *)data, size);
    for (size_t pos = 0; pos < size;) {
        size_t n = 1 + data[pos] % 16;
        if (n > size - pos)
            n = size - pos;
        fuzz_conn_read(&b, (const char *)data + pos, n);
        pos += n;
    }
    fuzz_conn_finish(&a);
    fuzz_conn_finish(&b);
    if (gw_ws_incomplete_bytes() != 0)
        abort();
    return 0;
}
