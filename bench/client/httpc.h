/* httpc.h - pipelined HTTP/1.1 POSTs over a few keep-alive connections,
 * for `publish --nchan-url` (the peer system of bench/peer.py takes its
 * messages by HTTP POST where pushgate takes an XADD).
 *
 * Requests are dealt round robin over the connections and only queued;
 * pb_httpc_wait writes them back to back (pipelining) and reads the
 * responses with http-parser until every request queued so far has its
 * answer or a deadline passes, as publish.c does with hiredis's appended
 * XADDs.  Blocking, with ppoll(2) over the connections.  A connection the
 * server drops (or ends with "Connection: close") is opened again for the
 * next requests; the requests it left unanswered count as errors, never
 * sent twice. */
#ifndef PB_HTTPC_H
#define PB_HTTPC_H

#include "net.h"

#include <stddef.h>
#include <stdint.h>

#define PB_HTTPC_CONNS_MAX 64

typedef struct {
    uint64_t ok;                /* 2xx responses */
    uint64_t accepted;          /* of which 202 (nchan: no subscriber on that channel) */
    uint64_t errors;            /* other statuses, and requests a dropped connection lost */
    uint64_t reconnects;        /* connections opened again after a close */
    int first_status;           /* the first status that was not 2xx (0: none; -1: dropped) */
} pb_httpc_stats;

typedef struct pb_httpc pb_httpc;

/* conns connections to u (loopback, checked by pb_url_parse), each opened
 * within timeout_ms.  NULL with a message printed. */
pb_httpc *pb_httpc_new(const pb_url *u, int conns, unsigned timeout_ms);
/* Queues POST path with body (Content-Type type) on the next connection.
 * 0, or -1 (out of memory, or the connection could not be opened again). */
int pb_httpc_post(pb_httpc *h, const char *path, const char *type, const char *body, size_t len);
/* Sends what is queued and reads until every request has its response, or
 * until deadline (CLOCK_MONOTONIC us).  0 when all are answered, 1 when
 * the deadline passed first (what is still unanswered stays in flight; a
 * deadline already passed only writes), -1 when ppoll failed. */
int pb_httpc_wait(pb_httpc *h, uint64_t deadline);
const pb_httpc_stats *pb_httpc_stats_of(const pb_httpc *h);
void pb_httpc_free(pb_httpc *h);

#endif
