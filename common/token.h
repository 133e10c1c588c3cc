/* token.h - browser identity: HS256 JSON Web Tokens (libjwt).
 *
 * A token's sub is the agent's uuid and exp its expiry; an operator's token
 * has "admin": true besides, and its sub names the operator.  Only HS256 is
 * accepted (no "none", no algorithm confusion), with the secret from the
 * configuration.  The gateway checks tokens; pushgate-ctl and
 * pushgate-bench mint them with the same code. */
#ifndef PG_TOKEN_H
#define PG_TOKEN_H

#include <stddef.h>
#include <time.h>

#define PG_UUID_MAX 63

/* 0 when token is valid at time now: uuid gets sub (1..PG_UUID_MAX bytes of
 * [A-Za-z0-9_.:@-]).  -1 otherwise, with *why a short reason ("bad signature",
 * "expired", "no sub", "malformed", ...). */
int pg_token_verify(const char *token, size_t token_len, const char *secret, time_t now,
                    char uuid[PG_UUID_MAX + 1], const char **why);

/* An operator's token: valid as for pg_token_verify, and its claims hold
 * "admin": true.  0: it is (name gets its sub); 1: a valid token without
 * the claim; -1: not valid.  *why says which. */
int pg_token_verify_admin(const char *token, size_t token_len, const char *secret, time_t now,
                          char name[PG_UUID_MAX + 1], const char **why);

/* 1 when uuid[0..len) is one a token's sub may name. */
int pg_token_uuid_ok(const char *uuid, size_t len);

/* A token for uuid valid until exp (malloc'd), or NULL. For tests and tools. */
char *pg_token_mint(const char *uuid, const char *secret, time_t exp);
/* The same with "admin": true: an operator's (the cluster console, /stats). */
char *pg_token_mint_admin(const char *name, const char *secret, time_t exp);

#endif
