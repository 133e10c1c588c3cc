/* test_token.c - unit tests for common/token.c: HS256 JWTs with libjwt.
 *
 * Tokens that the gateway must refuse (alg "none", HS512, bad claims) are
 * built by hand here: base64url header and payload, HMAC with OpenSSL.
 */
#include "token.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SECRET "unit-test-secret"
#define NOW ((time_t)1700000000)

/* ---- building tokens by hand ---- */

static void b64url(const unsigned char *in, size_t len, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++) {
        if (*p == '+')
            *p = '-';
        else if (*p == '/')
            *p = '_';
    }
}

/* header.payload.signature; md NULL: empty signature (alg none). */
static char *make_token(const char *header, const char *payload, const char *secret,
                        const EVP_MD *md)
{
    char *t = malloc(8192);
    assert_non_null(t);
    b64url((const unsigned char *)header, strlen(header), t);
    strcat(t, ".");
    b64url((const unsigned char *)payload, strlen(payload), t + strlen(t));
    size_t signed_len = strlen(t);
    strcat(t, ".");
    if (md) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        assert_non_null(HMAC(md, secret, (int)strlen(secret), (const unsigned char *)t, signed_len,
                             mac, &mac_len));
        b64url(mac, mac_len, t + strlen(t));
    }
    return t;
}

static char *hs256(const char *payload)
{
    return make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SECRET, EVP_sha256());
}

static int verify(const char *token, char *uuid, const char **why)
{
    return pg_token_verify(token, strlen(token), SECRET, NOW, uuid, why);
}

/* ---- tests ---- */

static void test_mint_then_verify(void **state)
{
    (void)state;
    char *t = pg_token_mint("agent-42", SECRET, NOW + 60);
    assert_non_null(t);
    char uuid[PG_UUID_MAX + 1] = "junk";
    const char *why = NULL;
    assert_int_equal(verify(t, uuid, &why), 0);
    assert_string_equal(uuid, "agent-42");
    /* why may be NULL */
    assert_int_equal(pg_token_verify(t, strlen(t), SECRET, NOW, uuid, NULL), 0);
    free(t);
}

static void test_hand_made_hs256_accepted(void **state)
{
    (void)state;
    char *t = hs256("{\"sub\":\"a.b_c:d@e-f\",\"exp\":1700000100,\"iat\":1699990000}");
    char uuid[PG_UUID_MAX + 1];
    const char *why;
    assert_int_equal(verify(t, uuid, &why), 0);
    assert_string_equal(uuid, "a.b_c:d@e-f");
    free(t);
}

static void test_expired(void **state)
{
    (void)state;
    char uuid[PG_UUID_MAX + 1];
    const char *why;
    char *t = pg_token_mint("agent", SECRET, NOW - 1);
    assert_int_equal(verify(t, uuid, &why), -1);
    assert_string_equal(why, "expired");
    assert_string_equal(uuid, "");
    free(t);
    t = pg_token_mint("agent", SECRET, NOW);    /* exp == now: expired */
    assert_int_equal(verify(t, uuid, &why), -1);
    assert_string_equal(why, "expired");
    free(t);
}

static void test_forged_signature(void **state)
{
    (void)state;
    char uuid[PG_UUID_MAX + 1];
    const char *why;
    char *t = pg_token_mint("agent", "another-secret", NOW + 60);
    assert_int_equal(verify(t, uuid, &why), -1);
    assert_string_equal(why, "bad signature or encoding");
    free(t);
    /* a valid token with its payload swapped for another uuid */
    t = pg_token_mint("agent", SECRET, NOW + 60);
    char *other = pg_token_mint("admin", SECRET, NOW + 60);
    char *dot1 = strchr(t, '.'), *dot2 = strrchr(t, '.');
    char *odot1 = strchr(other, '.'), *odot2 = strrchr(other, '.');
    char forged[1024];
    snprintf(forged, sizeof(forged), "%.*s%.*s%s", (int)(dot1 - t), t, (int)(odot2 - odot1),
             odot1, dot2);
    assert_int_equal(verify(forged, uuid, &why), -1);
    free(t);
    free(other);
}

static void test_alg_none_rejected(void **state)
{
    (void)state;
    char uuid[PG_UUID_MAX + 1];
    const char *why;
    const char *payload = "{\"sub\":\"agent\",\"exp\":1700000100}";
    char *t = make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, SECRET, NULL);
    assert_int_equal(verify(t, uuid, &why), -1);
    free(t);
    /* "none" with a signature appended anyway */
    t = make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, SECRET, EVP_sha256());
    assert_int_equal(verify(t, uuid, &why), -1);
    free(t);
    /* HS256 header but no signature */
    t = make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SECRET, NULL);
    assert_int_equal(verify(t, uuid, &why), -1);
    assert_string_equal(why, "unsigned token");
    free(t);
}

static void test_other_hmac_algs_rejected(void **state)
{
    (void)state;
    char uuid[PG_UUID_MAX + 1];
    const char *why;
    const char *payload = "{\"sub\":\"agent\",\"exp\":1700000100}";
    /* correctly signed with the secret, but not HS256 */
    char *t = make_token("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", payload, SECRET, EVP_sha512());
    assert_int_equal(verify(t, uuid, &why), -1);
    assert_string_equal(why, "algorithm not HS256");
    free(t);
    t = make_token("{\"alg\":\"HS384\",\"typ\":\"JWT\"}", payload, SECRET, EVP_sha384());
    assert_int_equal(verify(t, uuid, &why), -1);
    assert_string_equal(why, "algorithm not HS256");
    free(t);
    /* RS256 header with an HMAC signature (algorithm confusion) */
    t = make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload, SECRET, EVP_sha256());
    assert_int_equal(verify(t, uuid, &why), -1);
    free(t);
}

static void test_bad_claims(void **state)
{
    (void)state;
    static const struct {
        const char *payload;
        const char *why;
    } cases[] = {
        {"{\"sub\":\"agent\"}", "no exp"},
        {"{\"sub\":\"agent\",\"exp\":\"1700000100\"}", "no exp"},
        {"{\"sub\":\"agent\",\"exp\":1700000100.5}", "no exp"},
        {"{\"exp\":1700000100}", "no sub"},
        {"{\"sub\":\"\",\"exp\":1700000100}", "no sub"},
        {"{\"sub\":42,\"exp\":1700000100}", "no sub"},
        {"{\"sub\":\"a b\",\"exp\":1700000100}", "bad sub"},
        {"{\"sub\":\"a/b\",\"exp\":1700000100}", "bad sub"},
        {"{\"sub\":\"\\u00e9\",\"exp\":1700000100}", "bad sub"},
        {"{\"sub\":\"a\\nb\",\"exp\":1700000100}", "bad sub"},
        {"{\"sub\":\"agent\",\"exp\":1700000100,\"nbf\":1700000050}", "not yet valid"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = hs256(cases[i].payload);
        char uuid[PG_UUID_MAX + 1];
        const char *why = NULL;
        int rc = verify(t, uuid, &why);
        free(t);
        if (rc != -1 || strcmp(why, cases[i].why) != 0)
            fail_msg("%s: got %s, want %s", cases[i].payload, why ? why : "ok", cases[i].why);
    }
    /* nbf in the past is fine */
    char *t = hs256("{\"sub\":\"agent\",\"exp\":1700000100,\"nbf\":1699999000}");
    char uuid[PG_UUID_MAX + 1];
    assert_int_equal(verify(t, uuid, NULL), 0);
    free(t);
}

static void test_sub_length(void **state)
{
    (void)state;
    char sub[PG_UUID_MAX + 2];
    memset(sub, 'u', PG_UUID_MAX);
    sub[PG_UUID_MAX] = '\0';
    char *t = pg_token_mint(sub, SECRET, NOW + 60);
    assert_non_null(t);
    char uuid[PG_UUID_MAX + 1];
    assert_int_equal(verify(t, uuid, NULL), 0);
    assert_string_equal(uuid, sub);
    free(t);
    /* one longer: mint refuses, a hand-made token is refused */
    sub[PG_UUID_MAX] = 'u';
    sub[PG_UUID_MAX + 1] = '\0';
    assert_null(pg_token_mint(sub, SECRET, NOW + 60));
    char payload[256];
    snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":1700000100}", sub);
    t = hs256(payload);
    const char *why;
    assert_int_equal(verify(t, uuid, &why), -1);
    assert_string_equal(why, "bad sub");
    free(t);
}

static void test_garbage(void **state)
{
    (void)state;
    char uuid[PG_UUID_MAX + 1];
    const char *why;
    static const char *const junk[] = {
        "", "x", "not-a-token", "a.b", "a.b.c.d", "..", "a..c", ".b.c",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",  /* shape ok, bad signature */
        "e30.e30.e30",                                /* {} {} */
        "!!!.???.***", "abc.def.gh i",
    };
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        if (pg_token_verify(junk[i], strlen(junk[i]), SECRET, NOW, uuid, &why) != -1)
            fail_msg("accepted %s", junk[i]);
    /* NULs inside the given length */
    char *t = pg_token_mint("agent", SECRET, NOW + 60);
    size_t len = strlen(t);
    char *with_nul = malloc(len + 2);
    memcpy(with_nul, t, len);
    with_nul[len] = '\0';
    with_nul[len + 1] = 'x';
    assert_int_equal(pg_token_verify(with_nul, len + 2, SECRET, NOW, uuid, &why), -1);
    /* only the given length counts: a valid prefix of a longer buffer */
    memcpy(with_nul, t, len);
    with_nul[len] = 'Z';
    assert_int_equal(pg_token_verify(with_nul, len, SECRET, NOW, uuid, &why), 0);
    free(with_nul);
    free(t);
    assert_int_equal(pg_token_verify(NULL, 0, SECRET, NOW, uuid, &why), -1);
}

static void test_too_long(void **state)
{
    (void)state;
    char uuid[PG_UUID_MAX + 1];
    const char *why;
    /* a correctly signed token just over 4096 bytes (a big extra claim) */
    char payload[4200];
    int n = snprintf(payload, sizeof(payload), "{\"sub\":\"agent\",\"exp\":1700000100,\"pad\":\"");
    memset(payload + n, 'p', 3100);
    strcpy(payload + n + 3100, "\"}");
    char *t = hs256(payload);
    assert_true(strlen(t) > 4096);
    assert_int_equal(verify(t, uuid, &why), -1);
    assert_string_equal(why, "token too long");
    free(t);
    /* and one just under is fine */
    payload[n + 2900] = '\0';
    strcat(payload, "\"}");
    t = hs256(payload);
    assert_true(strlen(t) <= 4096);
    assert_int_equal(verify(t, uuid, &why), 0);
    free(t);
}

static void test_secret_required(void **state)
{
    (void)state;
    char uuid[PG_UUID_MAX + 1];
    const char *why;
    char *t = pg_token_mint("agent", SECRET, NOW + 60);
    assert_int_equal(pg_token_verify(t, strlen(t), "", NOW, uuid, &why), -1);
    assert_string_equal(why, "no secret configured");
    assert_int_equal(pg_token_verify(t, strlen(t), NULL, NOW, uuid, &why), -1);
    free(t);
    assert_null(pg_token_mint("agent", "", NOW + 60));
    assert_null(pg_token_mint("agent", NULL, NOW + 60));
    assert_null(pg_token_mint("", SECRET, NOW + 60));
    assert_null(pg_token_mint("bad uuid", SECRET, NOW + 60));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mint_then_verify),
        cmocka_unit_test(test_hand_made_hs256_accepted),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_forged_signature),
        cmocka_unit_test(test_alg_none_rejected),
        cmocka_unit_test(test_other_hmac_algs_rejected),
        cmocka_unit_test(test_bad_claims),
        cmocka_unit_test(test_sub_length),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_secret_required),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
