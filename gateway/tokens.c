/* tokens.c - a short memory of chat_token verdicts (apps.enabled).
 *
 * Task workers look tokens up in MySQL; workers learn the verdicts from the
 * task results.  Both keep them for TOKEN_CACHE_SECONDS, so a push relayed by
 * the proxy, or a work order, needs no query (and on a worker, no task) for a
 * token seen a moment ago.  A handful of apps means a list is enough; it is
 * dropped whole when it grows, so random tokens from a misbehaving client
 * cannot grow memory. */
#include "gateway.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_CACHE_SECONDS 10
#define TOKEN_CACHE_MAX 256

typedef struct token_entry {
    char *token;
    int valid;
    time_t until;
    struct token_entry *next;
} token_entry;

static token_entry *tokens;
static size_t ntokens;

int gw_token_cached(const char *token)
{
    time_t now = time(NULL);
    for (token_entry *e = tokens; e; e = e->next)
        if (e->until > now && strcmp(e->token, token) == 0)
            return e->valid;
    return -1;
}

void gw_token_remember(const char *token, int valid)
{
    if (ntokens >= TOKEN_CACHE_MAX)
        gw_token_forget_all();
    token_entry *e = calloc(1, sizeof(*e));
    if (!e || !(e->token = strdup(token))) {
        free(e);
        return;
    }
    e->valid = valid;
    e->until = time(NULL) + TOKEN_CACHE_SECONDS;
    e->next = tokens;
    tokens = e;
    ntokens++;
}

void gw_token_forget_all(void)
{
    while (tokens) {
        token_entry *next = tokens->next;
        free(tokens->token);
        free(tokens);
        tokens = next;
    }
    ntokens = 0;
}
