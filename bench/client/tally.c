/* tally.c - counting, merging and shipping a connect run's figures (see tally.h). */
#include "tally.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

int pb_tally_init(pb_tally *t, uint64_t expect)
{
    memset(t, 0, sizeof(*t));
    pb_hist_init(&t->latency);
    return pb_seq_init(&t->seqs, expect);
}

void pb_tally_free(pb_tally *t)
{
    pb_seq_free(&t->seqs);
}

int64_t pb_tally_worksheet(pb_tally *t, json_t *response, uint64_t now)
{
    json_t *seq = json_object_get(response, "seq"), *ts = json_object_get(response, "ts");
    t->received++;
    if (!json_is_integer(seq) || !json_is_integer(ts) || json_integer_value(seq) < 0 ||
        json_integer_value(ts) <= 0) {
        t->not_bench++;
        return -1;
    }
    if (pb_seq_mark(&t->seqs, (uint64_t)json_integer_value(seq)) != 1)
        return -1;  /* duplicates and strays do not count for latency or rate */
    uint64_t sent = (uint64_t)json_integer_value(ts), wall = pb_wall_us();
    uint64_t latency = wall > sent ? wall - sent : 0;
    pb_hist_add(&t->latency, latency);
    if (!t->t_first_delivery)
        t->t_first_delivery = now;
    t->t_last_delivery = now;
    return (int64_t)latency;
}

void pb_tally_close_code(pb_tally *t, int code)
{
    t->close_codes[code >= 0 && code < PB_CLOSE_CODES ? code : 0]++;
}

static uint64_t min_set(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

static uint64_t max_of(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* "All" stamps: known only when every part has one. */
static uint64_t all_of(const pb_tally *dst, uint64_t a, uint64_t b)
{
    if (dst->procs == 0)
        return b;
    return a && b ? max_of(a, b) : 0;
}

static void merge_counts(pb_tally *dst, const pb_tally *src)
{
    dst->clients += src->clients;
    dst->ever_registered += src->ever_registered;
    dst->open_at_end += src->open_at_end;
    dst->connect_errors += src->connect_errors;
    for (int i = 0; i < PB_WS_ERR_KINDS; i++)
        dst->errors_by_kind[i] += src->errors_by_kind[i];
    dst->closed_early += src->closed_early;
    dst->received += src->received;
    dst->acks += src->acks;
    dst->not_bench += src->not_bench;
    dst->other_events += src->other_events;
    dst->bad_messages += src->bad_messages;
    dst->protocol_errors += src->protocol_errors;
    dst->server_closes += src->server_closes;
    dst->reconnects += src->reconnects;
    for (int i = 0; i < PB_CLOSE_CODES; i++)
        dst->close_codes[i] += src->close_codes[i];
}

int pb_tally_merge(pb_tally *dst, const pb_tally *src)
{
    merge_counts(dst, src);
    dst->t_start = min_set(dst->t_start, src->t_start);
    dst->t_all_registered = all_of(dst, dst->t_all_registered, src->t_all_registered);
    dst->t_first_delivery = min_set(dst->t_first_delivery, src->t_first_delivery);
    dst->t_last_delivery = max_of(dst->t_last_delivery, src->t_last_delivery);
    dst->t_first_close = min_set(dst->t_first_close, src->t_first_close);
    dst->t_all_back = max_of(dst->t_all_back, src->t_all_back);
    dst->all_back_ok = dst->procs == 0 ? src->all_back_ok : dst->all_back_ok && src->all_back_ok;
    dst->procs += src->procs;
    pb_hist_merge(&dst->latency, &src->latency);
    return pb_seq_merge(&dst->seqs, &src->seqs);
}

char *pb_tally_pack(const pb_tally *t, size_t *len)
{
    size_t bits = pb_seq_bytes(&t->seqs);
    char *blob = malloc(sizeof(*t) + bits);
    if (!blob)
        return NULL;
    pb_tally copy = *t;
    copy.seqs.bits = NULL;
    memcpy(blob, &copy, sizeof(copy));
    memcpy(blob + sizeof(copy), t->seqs.bits, bits);
    *len = sizeof(*t) + bits;
    return blob;
}

int pb_tally_unpack(const char *blob, size_t len, pb_tally *t)
{
    if (len < sizeof(*t))
        return -1;
    memcpy(t, blob, sizeof(*t));
    size_t bits = pb_seq_bytes(&t->seqs);
    t->seqs.bits = NULL;
    if (t->seqs.nbits > PB_SEQ_LIMIT || len != sizeof(*t) + bits ||
        !(t->seqs.bits = malloc(bits ? bits : 1))) {
        t->seqs.nbits = 0;
        return -1;
    }
    memcpy(t->seqs.bits, blob + sizeof(*t), bits);
    return 0;
}
