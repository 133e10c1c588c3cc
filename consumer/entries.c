/* entries.c - the entries held in memory, by key.
 *
 * A gateway's reply names its entry by msg_id (its key), and XAUTOCLAIM
 * may hand back an entry that is already held, so entries are found by key
 * in a chained hash table.  The key is the stream entry id plus its
 * shard's tag ("1700000000000-0@3"): two shards make the same ids when
 * entries reach them in the same millisecond.  The table never grows: entries held never exceed
 * max_in_flight, and the table has at least twice as many buckets. */
#include "consumer.h"

#include <stdlib.h>
#include <string.h>

static cs_entry **buckets;
static size_t nbuckets;     /* a power of two */
static size_t held;

int cs_entries_init(size_t max_entries)
{
    nbuckets = 64;
    while (nbuckets < 2 * max_entries)
        nbuckets *= 2;
    buckets = calloc(nbuckets, sizeof(*buckets));
    return buckets ? 0 : -1;
}

/* FNV-1a */
static size_t bucket_of(const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return (size_t)h & (nbuckets - 1);
}

cs_entry *cs_entry_find_key(const char *key)
{
    if (!buckets)
        return NULL;
    for (cs_entry *e = buckets[bucket_of(key)]; e; e = e->hnext)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/* id plus s's tag into key (CS_ID_MAX bytes); -1 when it does not fit. */
static int make_key(const cs_shard *s, const char *id, char *key)
{
    int n = snprintf(key, CS_ID_MAX, "%s%s", id, s->tag);
    return n < 0 || n >= CS_ID_MAX ? -1 : 0;
}

cs_entry *cs_entry_find(const cs_shard *s, const char *id)
{
    char key[CS_ID_MAX];
    return make_key(s, id, key) == 0 ? cs_entry_find_key(key) : NULL;
}

cs_entry *cs_entry_new(cs_shard *s, const char *id)
{
    char key[CS_ID_MAX];
    if (!buckets || strlen(id) >= CS_ID_MAX || make_key(s, id, key) < 0 ||
        cs_entry_find_key(key))
        return NULL;
    cs_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    strcpy(e->id, id);
    strcpy(e->key, key);
    e->shard = s;
    e->state = CS_E_COUNTING;
    size_t b = bucket_of(key);
    e->hnext = buckets[b];
    buckets[b] = e;
    held++;
    return e;
}

static void entry_free(cs_entry *e)
{
    free(e->msg);
    free(e->fields);
    free(e->body);
    free(e->reason);
    free(e);
}

static void unlink_entry(cs_entry *e)
{
    cs_entry **p = &buckets[bucket_of(e->key)];
    while (*p && *p != e)
        p = &(*p)->hnext;
    if (*p)
        *p = e->hnext;
    held--;
}

void cs_entry_release(cs_entry *e)
{
    cs_list_remove(e);
    cs_flow_forget(e);
    unlink_entry(e);
    entry_free(e);
    cs_stream_room();
    cs_check_finished();
}

size_t cs_entries_held(void)
{
    return held;
}

void cs_entries_foreach(void (*fn)(cs_entry *e, void *arg), void *arg)
{
    for (size_t b = 0; buckets && b < nbuckets; b++)
        for (cs_entry *e = buckets[b]; e; e = e->hnext)
            fn(e, arg);
}

void cs_entries_done(void)
{
    for (size_t b = 0; buckets && b < nbuckets; b++) {
        cs_entry *e = buckets[b];
        while (e) {
            cs_entry *next = e->hnext;
            cs_list_remove(e);
            cs_flow_forget(e);
            entry_free(e);
            e = next;
        }
    }
    free(buckets);
    buckets = NULL;
    held = 0;
}

size_t cs_room(void)
{
    size_t max = (size_t)cs.cfg.max_in_flight;
    size_t used = held + cs.reserved;
    return used >= max ? 0 : max - used;
}
