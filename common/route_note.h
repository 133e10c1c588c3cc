/* route_note.h - the notes of the route feed: what gateways and the consumer
 * hear on one Redis pub/sub channel as browsers come and go.
 *
 *   "u <uuid>"            the uuid's online_clients rows changed (one left)
 *   "u <uuid> <node_id>"  the same, and it has a browser on node_id now
 *   "h <node_id>"         a gateway's heartbeat: the feed works
 *
 * A node_id is the gateway's "ip:internal_port", as in gateway_nodes.
 * Gateways drop their cached route of an announced uuid (gateway/
 * route_feed.c); the consumer keeps the node as a hint of where to send the
 * uuid's next order (consumer/hints.c).  A note is untrusted input: parsing
 * checks every part's length and characters. */
#ifndef PG_ROUTE_NOTE_H
#define PG_ROUTE_NOTE_H

#include <stddef.h>
#include <stdint.h>

#include "token.h"

#define PG_ROUTE_CHANNEL "pushgate:routes"
#define PG_NODE_ID_MAX 79                   /* "ip:port", IPv6 included */
#define PG_ROUTE_NOTE_MAX (2 + PG_UUID_MAX + 1 + PG_NODE_ID_MAX + 1)

typedef struct {
    char kind;                              /* 'u' or 'h' */
    char uuid[PG_UUID_MAX + 1];             /* 'u': the uuid */
    char node_id[PG_NODE_ID_MAX + 1];       /* "" when the note names none */
} pg_route_note;

/* Parses one note of len bytes into *note.  0, or -1 when it is not one of
 * the forms above (an unknown kind included). */
int pg_route_note_parse(const char *text, size_t len, pg_route_note *note);

/* "u <uuid>", or with node_id (NULL: none) "u <uuid> <node_id>", into out
 * (PG_ROUTE_NOTE_MAX bytes).  Its length, or -1 when a part is too long or
 * empty. */
int pg_route_note_format(char *out, const char *uuid, const char *node_id);

/* The hash both sides key a uuid by (never 0). */
uint64_t pg_route_uuid_hash(const char *uuid, size_t len);

#endif
