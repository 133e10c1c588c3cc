/* prom.h - Prometheus text exposition (format 0.0.4) and cheap histograms.
 *
 * A histogram is a fixed array of atomic counters, one per bucket (not
 * cumulative: one relaxed add per observation) and a sum in microseconds
 * (the count is the buckets' total); it may live in shared memory, so every
 * process of a daemon adds to it and any one reports it.  The writers cumulate the buckets when
 * the text is made. */
#ifndef PG_PROM_H
#define PG_PROM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* Upper bounds in seconds of the buckets (+Inf is implicit): 0.5 ms to 10 s,
 * which covers a push in a few hundred microseconds as well as a browser
 * that takes seconds to ACK. */
#define PG_PROM_BUCKETS 15
extern const double pg_prom_bounds[PG_PROM_BUCKETS];

typedef struct {
    _Atomic uint64_t bucket[PG_PROM_BUCKETS + 1];   /* the last one: +Inf */
    _Atomic uint64_t sum_us;
} pg_prom_hist;

/* A monotonic clock in microseconds, the same in every process of a host. */
uint64_t pg_prom_now_us(void);
void pg_prom_observe_us(pg_prom_hist *h, uint64_t us);
/* Observes now - since_us; since_us 0 (unknown) or in the future: nothing. */
void pg_prom_observe_since(pg_prom_hist *h, uint64_t since_us);

/* # HELP and # TYPE lines of a metric family. */
void pg_prom_head(struct evbuffer *out, const char *name, const char *type, const char *help);
/* One sample; labels: "" or 'a="x",b="y"' (values escaped by the caller,
 * see pg_prom_label_value). */
void pg_prom_sample(struct evbuffer *out, const char *name, const char *labels, uint64_t value);
/* A family with one unlabelled sample. */
void pg_prom_counter(struct evbuffer *out, const char *name, const char *help, uint64_t value);
void pg_prom_gauge(struct evbuffer *out, const char *name, const char *help, int64_t value);
/* A whole histogram family: head, _bucket lines (cumulative), _sum, _count. */
void pg_prom_histogram(struct evbuffer *out, const char *name, const char *help,
                       const pg_prom_hist *h);
/* An info-style gauge: name{label="value"} 1, or only the head while
 * value is NULL or "" (not known yet).  value is escaped here. */
void pg_prom_info(struct evbuffer *out, const char *name, const char *help, const char *label,
                  const char *value);
/* Copies s into out (len bytes with the NUL) escaped for a label value. */
void pg_prom_label_value(char *out, size_t len, const char *s);

#endif
