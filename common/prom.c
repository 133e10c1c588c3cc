/* prom.c - Prometheus text exposition and histograms (prom.h). */
#include "prom.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <stddef.h>
#include <time.h>

const double pg_prom_bounds[PG_PROM_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                0.025,  0.05,  0.1,    0.25,  0.5,
                                                1,      2.5,   5,      10,    30};

uint64_t pg_prom_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A linear scan of 15 doubles costs less than the atomic add after it. */
void pg_prom_observe_us(pg_prom_hist *h, uint64_t us)
{
    double s = (double)us / 1e6;
    int i = 0;
    while (i < PG_PROM_BUCKETS && s > pg_prom_bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void pg_prom_observe_since(pg_prom_hist *h, uint64_t since_us)
{
    uint64_t now = pg_prom_now_us();
    if (since_us && since_us <= now)
        pg_prom_observe_us(h, now - since_us);
}

void pg_prom_head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void pg_prom_sample(struct evbuffer *out, const char *name, const char *labels, uint64_t value)
{
    if (labels && *labels)
        evbuffer_add_printf(out, "%s{%s} %" PRIu64 "\n", name, labels, value);
    else
        evbuffer_add_printf(out, "%s %" PRIu64 "\n", name, value);
}

void pg_prom_counter(struct evbuffer *out, const char *name, const char *help, uint64_t value)
{
    pg_prom_head(out, name, "counter", help);
    pg_prom_sample(out, name, NULL, value);
}

void pg_prom_gauge(struct evbuffer *out, const char *name, const char *help, int64_t value)
{
    pg_prom_head(out, name, "gauge", help);
    evbuffer_add_printf(out, "%s %" PRId64 "\n", name, value);
}

/* The buckets are read one by one while others add: _count is the sum of
 * what was read, so the family is consistent in itself (+Inf == _count). */
void pg_prom_histogram(struct evbuffer *out, const char *name, const char *help,
                       const pg_prom_hist *h)
{
    pg_prom_head(out, name, "histogram", help);
    uint64_t total = 0;
    for (int i = 0; i <= PG_PROM_BUCKETS; i++) {
        total += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < PG_PROM_BUCKETS)
            evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, pg_prom_bounds[i],
                                total);
        else
            evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, total);
    }
    uint64_t sum = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    evbuffer_add_printf(out, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, (double)sum / 1e6, name,
                        total);
}

void pg_prom_label_value(char *out, size_t len, const char *s)
{
    size_t n = 0;
    for (; s && *s && n + 3 < len; s++) {
        if (*s == '\\' || *s == '"')
            out[n++] = '\\';
        if (*s == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *s;
        }
    }
    if (len)
        out[n < len ? n : len - 1] = '\0';
}

void pg_prom_info(struct evbuffer *out, const char *name, const char *help, const char *label,
                  const char *value)
{
    pg_prom_head(out, name, "gauge", help);
    if (!value || !*value)
        return;
    char escaped[512];
    pg_prom_label_value(escaped, sizeof(escaped), value);
    evbuffer_add_printf(out, "%s{%s=\"%s\"} 1\n", name, label, escaped);
}
