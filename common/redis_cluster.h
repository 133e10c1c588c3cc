/* redis_cluster.h - stream shards and Redis Cluster, with no I/O: the
 * setting stream as a set of streams, the checksums that place a key
 * (CRC16 for a cluster's key slot, CRC-32 for a producer's shard), and the
 * answer to CLUSTER SLOTS.  pushgate-consumer (asynchronous links) and
 * pushgate-ctl (blocking) both use it, so they read the same things the
 * same way.
 *
 * The setting stream is one name ("pushgate:worksheets"), a comma list of
 * names, or names with one brace range each ("pushgate:worksheets:{0..7}"
 * is pushgate:worksheets:{0} ... pushgate:worksheets:{7}): the braces stay,
 * so each shard is a Redis Cluster hash tag and lives on one slot.
 *
 * CLUSTER SLOTS comes from the network and is untrusted: a reply of the
 * wrong shape, a slot out of range or an address that is not one is refused
 * with a reason fit for a log line, never taken for something it is not. */
#ifndef PG_REDIS_CLUSTER_H
#define PG_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "redis_sentinel.h"

struct redisReply;

#define PG_CLUSTER_SLOTS 16384
#define PG_STREAMS_MAX 1024         /* streams in one set */
#define PG_STREAM_NAME_MAX 200      /* bytes of one stream name */
#define PG_CLUSTER_NODES_MAX 16     /* redis_cluster_nodes: seeds */

typedef struct {
    char **names;
    size_t n;
} pg_stream_set;

/* The setting stream into out (names copied; pg_stream_set_free).  0 with
 * out->n >= 1, or -1 with the reason in err ("stream: ...") and out empty.
 * Refused: an empty text or item, blanks or control characters inside a
 * name, a range that is not {a..b} with a <= b (decimal, no leading
 * zeros), two ranges in one item, a name longer than PG_STREAM_NAME_MAX,
 * a name given twice, more than PG_STREAMS_MAX streams. */
int pg_stream_set_parse(const char *text, pg_stream_set *out, char *err, size_t errlen);
void pg_stream_set_free(pg_stream_set *s);
/* The index of name in s, or -1. */
int pg_stream_set_find(const pg_stream_set *s, const char *name, size_t len);

/* CRC16/XMODEM (poly 0x1021, init 0): Redis Cluster's key checksum. */
uint16_t pg_cluster_crc16(const void *data, size_t len);
/* The key slot of key (0..16383), its hash tag's when it has one: the
 * text between the first '{' and the first '}' after it, when not empty. */
int pg_cluster_key_slot(const char *key, size_t len);

/* CRC-32 as zlib's crc32() and PHP's crc32() compute it (IEEE 802.3,
 * reflected, init and final xor 0xffffffff). */
uint32_t pg_crc32(const void *data, size_t len);
/* The shard of a work order for uuid among n streams: crc32(uuid) mod n. */
size_t pg_stream_shard(const char *uuid, size_t len, size_t n);

/* The setting redis_cluster_nodes ("host:port,..."): the number of seeds
 * (0: none, no cluster), or -1 with the reason in err. */
int pg_cluster_nodes_parse(const char *text, pg_redis_addr *out, size_t max, char *err,
                           size_t errlen);

typedef struct {
    int start, end;                 /* slots, inclusive */
    pg_redis_addr primary;
} pg_cluster_range;

typedef struct {
    pg_cluster_range *ranges;       /* as the server listed them */
    size_t n;
} pg_cluster_map;

/* The answer to CLUSTER SLOTS, asked of asked (a primary's empty host
 * means asked's).  0 with the map in out (pg_cluster_map_free), or -1 with
 * why and out empty.  A map that leaves slots uncovered is taken: a key
 * of such a slot has no owner (pg_cluster_map_owner NULL). */
int pg_cluster_slots_parse(const struct redisReply *reply, const pg_redis_addr *asked,
                           pg_cluster_map *out, char *why, size_t len);
void pg_cluster_map_free(pg_cluster_map *m);
/* The primary serving slot, or NULL. */
const pg_redis_addr *pg_cluster_map_owner(const pg_cluster_map *m, int slot);

/* A reply error that says the key lives elsewhere: "MOVED ..." or "ASK ...". */
int pg_cluster_is_redirect(const char *error, size_t len);

#endif
