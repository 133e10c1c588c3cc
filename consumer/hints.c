/* hints.c - which gateway an order goes to first: the one its uuid's browser
 * registered on last.
 *
 * An order sent to the node that holds its browser is pushed there.  One
 * sent to another node is routed there, then forwarded through the proxy to
 * the node that holds the browser: three more processes on its path and a
 * second gateway's work.  Gateways announce each registration on the route
 * feed with their node id (common/route_note.h); the consumer listens on a
 * link of its own and keeps, by the hash of the uuid, the node heard last.
 *
 * A hint is a preference, never the route: the gateway an order reaches
 * routes it in full (its own browsers, and the others' through the proxy),
 * so a wrong or stale hint costs the hop it was to save, never an order.
 * That is why the table may be lossy: route_hints slots in sets of WAYS,
 * a set chosen by the hash; a new uuid takes an empty slot of its set, or
 * the one named longest ago.  (Direct-mapped, 10,000 uuids in 65,536 slots
 * lost one hint in fourteen to a collision.)  A note without a node (the
 * uuid's last browser on a node left) clears its uuid's slot, and so the
 * uuid's orders go round robin until a browser of it registers again.  A
 * (re)subscription clears every slot, as notes may have been missed, and so
 * does a gateway heard of when NODES_MAX are known already (nodes come and
 * go over a long life).  An order of several uuids follows the first. */
#include "consumer.h"

#include "redis_cluster.h"
#include "route_note.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODES_MAX 256           /* distinct gateways a hint can name */
#define WAYS 4                  /* the slots a uuid may take: its set's */

typedef struct {
    uint64_t key;               /* hash of the uuid; 0: empty */
    uint32_t node;              /* index in nodes, plus 1 */
    uint32_t named;             /* the note count when it was last named */
} hint_slot;

typedef struct {
    char ip[64];
    int port;
} hint_node;

static hint_slot *slots;
static size_t nsets;
static uint32_t notes;          /* notes taken: the age of a slot */
static hint_node nodes[NODES_MAX];
static size_t nnodes;
static pg_redis *feed;
static bool listening;
static pg_ratelog full_log;

static void forget_all(void)
{
    memset(slots, 0, nsets * WAYS * sizeof(*slots));
    nnodes = 0;
}

/* The index (plus 1) of node_id "ip:port" among the nodes heard of, added
 * when new (forgetting every hint when the list is full); 0 when it is not
 * an address. */
static uint32_t node_index(const char *node_id)
{
    const char *colon = strrchr(node_id, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    size_t ip_len = colon ? (size_t)(colon - node_id) : 0;
    if (!colon || ip_len == 0 || ip_len >= sizeof(nodes[0].ip) || *end || port < 1 ||
        port > 65535)
        return 0;
    for (size_t i = 0; i < nnodes; i++)
        if (nodes[i].port == port && strncmp(nodes[i].ip, node_id, ip_len) == 0 &&
            nodes[i].ip[ip_len] == '\0')
            return (uint32_t)i + 1;
    if (nnodes == NODES_MAX) {
        pg_log_limited(&full_log, PG_LOG_NOTICE, "route hints: more than %d gateways heard of; "
                       "every hint forgotten", NODES_MAX);
        forget_all();
    }
    memcpy(nodes[nnodes].ip, node_id, ip_len);
    nodes[nnodes].ip[ip_len] = '\0';
    nodes[nnodes].port = (int)port;
    return (uint32_t)++nnodes;
}

/* The WAYS slots a uuid with hash key may take. */
static hint_slot *set_of(uint64_t key)
{
    return &slots[(key % nsets) * WAYS];
}

/* The slot of the uuid with hash key, or NULL. */
static hint_slot *find_slot(uint64_t key)
{
    hint_slot *set = set_of(key);
    for (int i = 0; i < WAYS; i++)
        if (set[i].key == key)
            return &set[i];
    return NULL;
}

/* A slot for a new uuid: an empty one of its set, or the one named longest ago. */
static hint_slot *free_slot(uint64_t key)
{
    hint_slot *set = set_of(key), *oldest = &set[0];
    for (int i = 0; i < WAYS; i++) {
        if (set[i].key == 0)
            return &set[i];
        if ((int32_t)(set[i].named - oldest->named) < 0)
            oldest = &set[i];
    }
    return oldest;
}

static void take_note(const pg_route_note *note)
{
    uint64_t key = pg_route_uuid_hash(note->uuid, strlen(note->uuid));
    uint32_t node = *note->node_id ? node_index(note->node_id) : 0;
    hint_slot *s = find_slot(key);
    if (node == 0) {
        if (s)
            s->key = 0;
        return;
    }
    if (!s)
        s = free_slot(key);
    *s = (hint_slot){.key = key, .node = node, .named = ++notes};
    cs.stats.hint_notes++;
}

static void on_feed(struct redisReply *reply, void *priv)
{
    (void)priv;
    if (!reply) {
        listening = false;
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(reply->element[0]->str, "subscribe") == 0) {
        forget_all();
        listening = true;
        pg_info("route hints: listening on %s", PG_ROUTE_CHANNEL);
        return;
    }
    pg_route_note note;
    const redisReply *text = reply->element[2];
    if (strcmp(reply->element[0]->str, "message") == 0 && text->type == REDIS_REPLY_STRING &&
        pg_route_note_parse(text->str, text->len, &note) == 0 && note.kind == 'u')
        take_note(&note);
}

static void link_up(pg_redis *r, void *arg)
{
    (void)arg;
    if (pg_redis_subscribe(r, PG_ROUTE_CHANNEL, on_feed, NULL) < 0)
        pg_warn("route hints: cannot subscribe to %s; orders go round robin", PG_ROUTE_CHANNEL);
}

/* Pub/sub reaches every node of a cluster, so its first seed will do.  A
 * drop reaches on_feed (NULL), which stops the hints. */
static int open_link(void)
{
    cs_link_events ev = {link_up, NULL, NULL, NULL};
    pg_redis_addr seeds[PG_CLUSTER_NODES_MAX];
    char err[256];
    bool cluster = *cs.cfg.redis_cluster_nodes;
    if (cluster && pg_cluster_nodes_parse(cs.cfg.redis_cluster_nodes, seeds, PG_CLUSTER_NODES_MAX,
                                          err, sizeof(err)) <= 0)
        return -1;
    feed = cs_redis_link("route hints", cluster ? &seeds[0] : NULL, &ev);
    return feed ? 0 : -1;
}

int cs_hints_start(void)
{
    nsets = ((size_t)cs.cfg.route_hints + WAYS - 1) / WAYS;
    if (nsets == 0)
        return 0;
    slots = calloc(nsets * WAYS, sizeof(*slots));
    return slots ? open_link() : -1;
}

void cs_hints_stop(void)
{
    pg_redis_free(feed);
    feed = NULL;
    listening = false;
    free(slots);
    slots = NULL;
    nsets = 0;
}

bool cs_hints_listening(void)
{
    return listening;
}

int cs_hints_find(uint64_t key, const char **ip, int *port)
{
    if (!listening || key == 0)
        return -1;
    const hint_slot *s = find_slot(key);
    if (!s)
        return -1;
    *ip = nodes[s->node - 1].ip;
    *port = nodes[s->node - 1].port;
    return 0;
}
