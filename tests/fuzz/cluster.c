/* cluster.c - fuzzes what common/redis_cluster.c reads: the bytes go
 * through hiredis's reader, as the consumer's links and pushgate-ctl feed
 * it, and every reply it builds is read as an answer to CLUSTER SLOTS; the
 * bytes are also read, up to the first NUL, as the settings stream and
 * redis_cluster_nodes, and as a key for its slot.  A map taken must hold
 * usable ranges and addresses, a set taken usable names; whatever is
 * refused must come with a printable reason for the log. */
#include "redis_cluster.h"

#include "redis_reader.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_map(const redisReply *r)
{
    pg_redis_addr asked = {"127.0.0.1", 7000};
    pg_cluster_map m;
    char why[256] = "";
    if (pg_cluster_slots_parse(r, &asked, &m, why, sizeof(why)) < 0) {
        fuzz_check_reason(why);
        return;
    }
    for (size_t i = 0; i < m.n; i++) {
        const pg_cluster_range *g = &m.ranges[i];
        if (g->start < 0 || g->end >= PG_CLUSTER_SLOTS || g->start > g->end)
            abort();
        fuzz_check_addr(&g->primary);
        if (!pg_cluster_map_owner(&m, g->start))
            abort();
    }
    pg_cluster_map_free(&m);
}

static void check_texts(const uint8_t *data, size_t size)
{
    int slot = pg_cluster_key_slot((const char *)data, size);
    if (slot < 0 || slot >= PG_CLUSTER_SLOTS)
        abort();
    char *text = malloc(size + 1);
    if (!text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    pg_stream_set s;
    char err[256] = "";
    if (pg_stream_set_parse(text, &s, err, sizeof(err)) < 0) {
        fuzz_check_reason(err);
    } else {
        if (s.n == 0 || s.n > PG_STREAMS_MAX)
            abort();
        for (size_t i = 0; i < s.n; i++) {
            size_t n = strlen(s.names[i]);
            if (n == 0 || n > PG_STREAM_NAME_MAX || pg_stream_set_find(&s, s.names[i], n) != (int)i)
                abort();
        }
        pg_stream_set_free(&s);
    }
    pg_redis_addr addrs[PG_CLUSTER_NODES_MAX];
    err[0] = '\0';
    int n = pg_cluster_nodes_parse(text, addrs, PG_CLUSTER_NODES_MAX, err, sizeof(err));
    if (n < 0)
        fuzz_check_reason(err);
    for (int i = 0; i < n; i++)
        fuzz_check_addr(&addrs[i]);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_each_reply(data, size, check_map);
    check_texts(data, size);
    return 0;
}
