/* json_out.h - JSON text written member by member into an evbuffer.
 *
 * The frames sent for every push (a gateway's /chat/push-local to the
 * proxy, the proxy's to the node) are written this way: the values go
 * through jansson's encoder, but no object is built around them (a hash
 * table and a copy of each key per frame cost more than the routing).
 *
 *   pg_json_put(out, token, "{\"chat_token\":");
 *   pg_json_put_str(out, uuid, ",\"uuid\":");
 *   pg_json_put(out, NULL, ",\"req_id\":%llu}", id); */
#ifndef PG_JSON_OUT_H
#define PG_JSON_OUT_H

#include <jansson.h>

struct evbuffer;

/* Appends format's text, then v's JSON text when v is not NULL.  0 or -1. */
int pg_json_put(struct evbuffer *out, json_t *v, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends format's text, then s as a JSON string (s: UTF-8; NULL: null).
 * 0 or -1. */
int pg_json_put_str(struct evbuffer *out, const char *s, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* s[0..n) is printable ASCII with nothing to escape: its JSON string is
 * the bytes between quotes. */
int pg_json_plain(const char *s, size_t n);

/* Appends a 4-byte big-endian length and then all of body (drained), or
 * nothing at all: 0 or -1 (body may then hold the length too: drain it
 * before it is used again). */
int pg_json_frame(struct evbuffer *out, struct evbuffer *body);

#endif
