/* token.c - browser identity: HS256 JSON Web Tokens with libjwt 1.10 (see token.h).
 *
 * libjwt's jwt_decode checks the signature with the algorithm the token's own
 * header names, so after it we insist on HS256: a token signed with the
 * secret under HS384/HS512, or an unsigned "alg":"none" one, is refused.  The
 * claims (exp, nbf, sub, admin) are checked here; libjwt 1.10 does not look
 * at them. */
#include "token.h"

#include <jansson.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#define PG_TOKEN_MAX 4096

int pg_token_uuid_ok(const char *uuid, size_t len)
{
    if (len == 0 || len > PG_UUID_MAX)
        return 0;
    for (size_t n = 0; n < len; n++) {
        char ch = uuid[n];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '.' || ch == ':' || ch == '@' || ch == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

static int auth_sub_ok(const char *sub)
{
    return pg_token_uuid_ok(sub, strnlen(sub, PG_UUID_MAX + 1));
}

/* Three base64url parts separated by dots; *signed_ is 0 when the third is empty. */
static int auth_shape_ok(const char *t, size_t len, int *signed_)
{
    size_t part = 0, part_len = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = t[i];
        if (ch == '.') {
            if (part_len == 0 || ++part > 2)
                return 0;
            part_len = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || ch == '-' || ch == '_') {
            part_len++;
        } else if (ch != '=') {      /* tolerate padding some encoders add */
            return 0;
        }
    }
    *signed_ = part_len > 0;
    return part == 2;
}

/* pg_token_verify; admin (NULL: not asked) gets whether "admin" is true. */
static int verify(const char *token, size_t token_len, const char *secret, time_t now,
                  char uuid[PG_UUID_MAX + 1], int *admin, const char **why)
{
    const char *unused;
    if (!why)
        why = &unused;
    if (uuid)
        uuid[0] = '\0';
    if (!secret || !*secret) {
        /* libjwt verifies nothing without a key: never accept then. */
        *why = "no secret configured";
        return -1;
    }
    if (!token || token_len == 0) {
        *why = "no token";
        return -1;
    }
    if (token_len > PG_TOKEN_MAX) {
        *why = "token too long";
        return -1;
    }
    int signed_ = 0;
    if (!auth_shape_ok(token, token_len, &signed_)) {
        *why = "malformed";
        return -1;
    }
    if (!signed_) {
        *why = "unsigned token";
        return -1;
    }
    char copy[PG_TOKEN_MAX + 1];   /* libjwt wants a NUL-terminated string */
    memcpy(copy, token, token_len);
    copy[token_len] = '\0';

    jwt_t *jwt = NULL;
    size_t secret_len = strlen(secret);
    if (secret_len > 0x7fffffff || jwt_decode(&jwt, copy, (const unsigned char *)secret,
                                              (int)secret_len) != 0 || !jwt) {
        jwt_free(jwt);
        *why = "bad signature or encoding";
        return -1;
    }
    /* The claims, with strict types: libjwt 1.10's jwt_get_grant_int reads
     * a string "exp" as 0 without saying so. */
    int rc = -1;
    char *text = NULL;
    json_t *claims = NULL, *exp, *nbf, *sub;
    const char *s;
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        *why = "algorithm not HS256";
        goto out;
    }
    text = jwt_get_grants_json(jwt, NULL);
    claims = text ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_object(claims)) {
        *why = "malformed";
        goto out;
    }
    exp = json_object_get(claims, "exp");
    if (!json_is_integer(exp)) {
        *why = "no exp";
        goto out;
    }
    if (json_integer_value(exp) <= (json_int_t)now) {
        *why = "expired";
        goto out;
    }
    nbf = json_object_get(claims, "nbf");
    if (nbf && (!json_is_integer(nbf) || json_integer_value(nbf) > (json_int_t)now)) {
        *why = "not yet valid";
        goto out;
    }
    sub = json_object_get(claims, "sub");
    s = json_is_string(sub) ? json_string_value(sub) : NULL;
    if (!s || !*s) {
        *why = "no sub";
        goto out;
    }
    /* json_string_length: a sub with an embedded NUL is not a uuid */
    if (strlen(s) != json_string_length(sub) || !auth_sub_ok(s)) {
        *why = "bad sub";
        goto out;
    }
    if (uuid)
        memcpy(uuid, s, strlen(s) + 1);
    if (admin)
        *admin = json_is_true(json_object_get(claims, "admin"));
    *why = "ok";
    rc = 0;
out:
    json_decref(claims);
    free(text);
    jwt_free(jwt);
    return rc;
}

int pg_token_verify(const char *token, size_t token_len, const char *secret, time_t now,
                    char uuid[PG_UUID_MAX + 1], const char **why)
{
    return verify(token, token_len, secret, now, uuid, NULL, why);
}

int pg_token_verify_admin(const char *token, size_t token_len, const char *secret, time_t now,
                          char name[PG_UUID_MAX + 1], const char **why)
{
    int admin = 0;
    if (verify(token, token_len, secret, now, name, &admin, why) < 0)
        return -1;
    if (admin)
        return 0;
    if (why)
        *why = "not an operator's token (no \"admin\": true)";
    return 1;
}

static char *mint(const char *uuid, const char *secret, time_t exp, int admin)
{
    if (!uuid || !auth_sub_ok(uuid) || !secret || !*secret || strlen(secret) > 0x7fffffff)
        return NULL;
    jwt_t *jwt = NULL;
    char *out = NULL;
    if (jwt_new(&jwt) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0 &&
        jwt_add_grant(jwt, "sub", uuid) == 0 && jwt_add_grant_int(jwt, "exp", (long)exp) == 0 &&
        (!admin || jwt_add_grant_bool(jwt, "admin", 1) == 0))
        out = jwt_encode_str(jwt);
    jwt_free(jwt);
    return out;
}

char *pg_token_mint(const char *uuid, const char *secret, time_t exp)
{
    return mint(uuid, secret, exp, 0);
}

char *pg_token_mint_admin(const char *name, const char *secret, time_t exp)
{
    return mint(name, secret, exp, 1);
}
