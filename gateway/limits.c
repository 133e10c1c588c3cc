/* limits.c - how fast one browser may make the node work.
 *
 * Every signed-in tab could otherwise make the node, MySQL and another
 * agent's inbox do unbounded work: a flood of frames, of chat messages, or
 * of tabs.  Each connection has two token buckets, kept by its home worker
 * (session.c): one for what it sends (ACKs of messages it was really sent
 * are free, they are the work the node asked for), one for its chat
 * messages.  A bucket is pure arithmetic on a clock the caller gives, so it
 * is unit tested without a server. */
#include "gateway.h"

int gw_bucket_take(gw_bucket *b, double per_second, double burst, int64_t now_ms)
{
    if (per_second <= 0)
        return 1;   /* no limit */
    if (b->at_ms == 0 || now_ms < b->at_ms) {
        b->tokens = burst;   /* a new bucket, or a clock that went back: full */
    } else {
        b->tokens += (double)(now_ms - b->at_ms) * per_second / 1000.0;
        if (b->tokens > burst)
            b->tokens = burst;
    }
    b->at_ms = now_ms;
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}
