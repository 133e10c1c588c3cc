/* reply.h - the reply frame every internal request gets (DESIGN.md, message
 * format 6): {"code":0|error,"msg":"...","msg_id":...[,"req_id":...]...}.
 *
 * Gateways and the proxy answer every push and every work order with one,
 * so it is written member by member rather than built as a jansson object
 * (a hash table and a copy of each key, which cost more than the routing
 * of the request it answers). */
#ifndef PG_REPLY_H
#define PG_REPLY_H

#include <jansson.h>
#include <stddef.h>

/* msg_id NULL = null, req_id NULL = left out (the proxy matches replies by
 * it); tail: more members, each after a comma ("" for none).  Returns the
 * text (free it) and its length in *len, or NULL when out of memory. */
char *pg_reply_json(int code, const char *msg, json_t *msg_id, json_t *req_id, const char *tail,
                    size_t *len);

#endif
