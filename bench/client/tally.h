/* tally.h - what one process of `pushgate-bench connect` counted: its
 * clients' connects and closes, every WorksheetMsg (end-to-end latency from
 * the send stamp in the body, sequence numbers in a bitmap).  A child packs
 * its tally into one blob for the parent, which unpacks and merges them.
 *
 * Time stamps are CLOCK_MONOTONIC microseconds (system-wide), 0 for never. */
#ifndef PB_TALLY_H
#define PB_TALLY_H

#include "hist.h"
#include "seqmap.h"
#include "wsclient.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define PB_CLOSE_CODES 5000         /* close codes 0..4999 counted apart; others in 0 */

typedef struct {
    uint64_t procs;                 /* tallies merged into this one */
    uint64_t clients;
    uint64_t ever_registered;       /* clients that got ONLINE at least once */
    uint64_t open_at_end;           /* registered when the run ended */
    uint64_t connect_errors;        /* attempts that never got ONLINE */
    uint64_t errors_by_kind[PB_WS_ERR_KINDS];
    uint64_t closed_early;          /* upgraded, then closed before ONLINE */
    uint64_t received;              /* WorksheetMsg events */
    uint64_t acks;
    uint64_t not_bench;             /* WorksheetMsg without a usable seq and ts */
    uint64_t other_events;          /* HEART_BEAT replies and other known events */
    uint64_t bad_messages;          /* malformed JSON, error objects, binary frames */
    uint64_t protocol_errors;       /* connections the server broke the protocol on */
    uint64_t server_closes;         /* registered connections the server closed */
    uint64_t reconnects;            /* attempts made after a close or a failure */
    uint64_t close_codes[PB_CLOSE_CODES];
    uint64_t t_start, t_all_registered;      /* first attempt; all clients registered */
    uint64_t t_first_delivery, t_last_delivery;
    uint64_t t_first_close, t_all_back;      /* first server close; all registered again */
    uint64_t all_back_ok;           /* every process with closes got all back */
    pb_hist latency;
    pb_seq seqs;
} pb_tally;

int pb_tally_init(pb_tally *t, uint64_t expect);
void pb_tally_free(pb_tally *t);
/* One WorksheetMsg's response object, arrived at now (monotonic): its
 * latency in microseconds, or -1 when it does not count (a duplicate, a
 * stray, no usable seq and ts). */
int64_t pb_tally_worksheet(pb_tally *t, json_t *response, uint64_t now);
void pb_tally_close_code(pb_tally *t, int code);
/* dst (initialised, maybe empty) takes src in. 0 or -1 (out of memory). */
int pb_tally_merge(pb_tally *dst, const pb_tally *src);
/* A malloc'd blob of t for the pipe; NULL when out of memory. */
char *pb_tally_pack(const pb_tally *t, size_t *len);
/* t from a blob; -1 when it is not one. */
int pb_tally_unpack(const char *blob, size_t len, pb_tally *t);

#endif
