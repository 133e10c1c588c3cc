/* token.c - pushgate-ctl token: a browser token for an agent (or, with
 * --admin, an operator's token for the figures and the cluster console), signed with
 * the gateway's jwt_secret by the code the gateway checks tokens with
 * (common/token.c), so the demo and the tests log in exactly as a business
 * system's tokens would. */
#include "ctl.h"

#include "token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TTL_DEFAULT 86400
#define TTL_MAX (10LL * 365 * 86400)
#define SECRET_MIN 16   /* what the gateway requires */

int ctl_cmd_token(const ctl_args *a)
{
    long long ttl = TTL_DEFAULT;
    if (ctl_arg_number(a, "ttl", 1, TTL_MAX, &ttl) < 0)
        return CTL_USAGE;
    const char *uuid = a->pos[0];
    if (!*ctl_cfg.jwt_secret) {
        ctl_err("token: jwt_secret is not set (-c FILE, PUSHGATE_JWT_SECRET or --set "
                "jwt_secret=...)");
        return CTL_FAIL;
    }
    if (strlen(ctl_cfg.jwt_secret) < SECRET_MIN)
        ctl_err("warning: jwt_secret is shorter than %d characters: gateways refuse to start "
                "with it", SECRET_MIN);
    time_t exp = time(NULL) + (time_t)ttl;
    char *token = ctl_arg(a, "admin") ? pg_token_mint_admin(uuid, ctl_cfg.jwt_secret, exp)
                                      : pg_token_mint(uuid, ctl_cfg.jwt_secret, exp);
    if (!token) {
        ctl_err("token: '%s' is not a valid uuid (1 to %d characters of A-Z a-z 0-9 _ . : @ -)",
                uuid, PG_UUID_MAX);
        return CTL_USAGE;
    }
    printf("%s\n", token);
    free(token);
    return CTL_OK;
}
