/* jwt.c - fuzzes JWT checking: pg_token_verify (common/token.c, libjwt and
 * jansson underneath), the function that decides who a browser is, from
 * ?token= in the upgrade URL and from CONNECT's client_token.
 *
 * The input is the token text.  It is checked with the gateway's secret at
 * a fixed time, then checks that must hold whatever the input:
 *   - an accepted token names a uuid a token may name (pg_token_uuid_ok);
 *   - it is refused under another secret and under an empty one (so no
 *     "alg":"none", no algorithm confusion, no unsigned token gets in);
 *   - it is refused once it has expired (exp is required). */
#include "token.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SECRET "fuzz-secret"
#define NOW ((time_t)1700000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *token = (const char *)data;
    char uuid[PG_UUID_MAX + 1];
    const char *why = NULL;
    int rc = pg_token_verify(token, size, SECRET, NOW, uuid, &why);
    if (!why)
        abort();                       /* every outcome has a reason */
    if (rc != 0) {
        if (rc != -1 || uuid[0])
            abort();                   /* refused: no uuid */
        return 0;
    }
    if (!pg_token_uuid_ok(uuid, strlen(uuid)))
        abort();
    char other[PG_UUID_MAX + 1];
    if (pg_token_verify(token, size, "another-secret", NOW, other, NULL) == 0)
        abort();
    if (pg_token_verify(token, size, "", NOW, other, NULL) == 0)
        abort();
    /* 2^62 s: past any exp a token can carry and still be valid */
    if (pg_token_verify(token, size, SECRET, (time_t)1 << 62, other, NULL) == 0)
        abort();
    return 0;
}
