/* hist.c - log-linear latency histogram (see hist.h). */
#include "hist.h"

#include <math.h>
#include <string.h>

void pb_hist_init(pb_hist *h)
{
    memset(h, 0, sizeof(*h));
}

unsigned pb_hist_bucket(uint64_t us)
{
    const uint64_t top = (uint64_t)1 << (PB_HIST_EXP_MAX + 1);
    if (us < 2 * PB_HIST_SUB)
        return (unsigned)us;
    if (us >= top)
        us = top - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(us);               /* >= SUB_BITS + 1 */
    unsigned sub = (unsigned)(us >> (e - PB_HIST_SUB_BITS)) - PB_HIST_SUB;   /* 0..SUB-1 */
    return 2 * PB_HIST_SUB + (e - PB_HIST_SUB_BITS - 1) * PB_HIST_SUB + sub;
}

uint64_t pb_hist_bucket_high(unsigned bucket)
{
    if (bucket < 2 * PB_HIST_SUB)
        return bucket;
    unsigned k = bucket - 2 * PB_HIST_SUB;
    unsigned e = k / PB_HIST_SUB + PB_HIST_SUB_BITS + 1;
    uint64_t width = (uint64_t)1 << (e - PB_HIST_SUB_BITS);
    uint64_t low = (uint64_t)(PB_HIST_SUB + k % PB_HIST_SUB) * width;
    return low + width - 1;
}

void pb_hist_add(pb_hist *h, uint64_t us)
{
    h->buckets[pb_hist_bucket(us)]++;
    if (h->count == 0 || us < h->min)
        h->min = us;
    if (us > h->max)
        h->max = us;
    h->count++;
    h->sum += us;
}

void pb_hist_merge(pb_hist *dst, const pb_hist *src)
{
    if (src->count == 0)
        return;
    for (unsigned i = 0; i < PB_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    if (dst->count == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->sum += src->sum;
}

uint64_t pb_hist_percentile(const pb_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < PB_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = pb_hist_bucket_high(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

double pb_hist_mean(const pb_hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}
