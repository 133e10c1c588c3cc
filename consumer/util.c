/* util.c - small helpers the consumer's modules share: a monotonic clock,
 * intrusive lists of entries (an entry is in at most one list, so moving it
 * never allocates), a retry timer armed at most once (a command Redis
 * refuses is tried again after a pause, never in a tight loop), and the
 * Redis links made from the settings in one place, so the reader and the
 * control link always find the same server. */
#include "consumer.h"

#include "log.h"
#include "timer.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t cs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void cs_list_push(cs_list *l, cs_entry *e)
{
    cs_list_remove(e);
    e->list = l;
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
    l->n++;
}

void cs_list_remove(cs_entry *e)
{
    cs_list *l = e->list;
    if (!l)
        return;
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    l->n--;
    e->list = NULL;
    e->prev = e->next = NULL;
}

cs_entry *cs_list_pop(cs_list *l)
{
    cs_entry *e = l->head;
    if (e)
        cs_list_remove(e);
    return e;
}

void cs_retry_later(int64_t *timer, void (*fn)(int64_t timer_id, void *arg))
{
    if (*timer > 0)
        return;
    *timer = pg_timer_after(CS_RETRY_MS, fn, NULL);
    if (*timer < 0)
        *timer = 0;
}

void cs_timer_clear(int64_t *timer)
{
    if (*timer > 0)
        pg_timer_clear(*timer);
    *timer = 0;
}

pg_redis *cs_redis_link(const char *role, const pg_redis_addr *at, const cs_link_events *ev)
{
    pg_redis_config rc = {
        .host = at ? at->host : cs.cfg.redis_host,
        .port = at ? at->port : (int)cs.cfg.redis_port,
        .sentinels = at ? NULL : cs.cfg.redis_sentinels,
        .master_name = cs.cfg.redis_master_name,
        .role = role,
        .base = cs.base,
        .on_up = ev->on_up,
        .on_down = ev->on_down,
        .on_redirect = ev->on_redirect,
        .arg = ev->arg,
    };
    return pg_redis_new(&rc);
}

void cs_redis_where(char *out, size_t len)
{
    if (*cs.cfg.redis_cluster_nodes)
        snprintf(out, len, "the cluster of %s", cs.cfg.redis_cluster_nodes);
    else if (*cs.cfg.redis_sentinels)
        snprintf(out, len, "the primary of %s (sentinels %s)", cs.cfg.redis_master_name,
                 cs.cfg.redis_sentinels);
    else
        snprintf(out, len, "%s:%lld", cs.cfg.redis_host, cs.cfg.redis_port);
}

const redisReply *cs_reply_field(const redisReply *map, const char *name)
{
    for (size_t k = 0; map && map->type == REDIS_REPLY_ARRAY && k + 1 < map->elements; k += 2) {
        const redisReply *key = map->element[k];
        if (key->type == REDIS_REPLY_STRING && strcmp(key->str, name) == 0)
            return map->element[k + 1];
    }
    return NULL;
}
