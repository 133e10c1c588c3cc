/* http_upgrade.c - fuzzes the HTTP side of gateway/ws.c around
 * http-parser: the request line and headers, the checks of the upgrade
 * (Connection, Upgrade, Sec-WebSocket-Version and -Key, Origin against
 * allowed_origins), ?token= (percent-decoding, then the real JWT check),
 * the header size limit, request bodies, and the frames a client sends
 * right behind its handshake.
 *
 * The input is what a client sends on a new connection.  It goes to one
 * connection in one read and to another in reads whose sizes come from the
 * input (the engine's kept input, conn.h), then each is answered by a
 * worker, closed and freed.  Checked: every connection's output starts with
 * one HTTP response, after a 101 only whole server frames follow, and what
 * workers get is what ws.h promises (an 'O' carries a valid uuid). */
#include "../../gateway/ws.c"

#include "conn.h"

#define MAX_MESSAGE 1024
static const gw_ws_config cfg = {
    .ws_path = "/ws",
    .jwt_secret = "fuzz-secret",
    .allowed_origins = "https://app.example, http://localhost:8080",
    .max_header_size = 2048,
    .max_message = MAX_MESSAGE,
    .max_incomplete_bytes = 0,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const pg_protocol *p = gw_ws_protocol(&cfg);
    static pg_conn a, b;
    fuzz_conn_open(&a, p, MAX_MESSAGE);
    fuzz_conn_read(&a, (const char *)data, size);
    fuzz_conn_finish(&a);

    fuzz_conn_open(&b, p, MAX_MESSAGE);
    for (size_t pos = 0, i = 0; pos < size; i++) {
        size_t n = 1 + data[(i * 7) % size] % 64;
        if (n > size - pos)
            n = size - pos;
        fuzz_conn_read(&b, (const char *)data + pos, n);
        pos += n;
    }
    fuzz_conn_finish(&b);
    return 0;
}
