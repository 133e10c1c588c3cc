/* db_health.c - MySQL's reachability and its log lines (see db_health.h). */
#include "db_health.h"

#include "log.h"
#include "timer.h"

#include <stdio.h>

void pg_db_health_ok(pg_db_health *h)
{
    if (!h->down)
        return;
    pg_notice("MySQL is back after %.1f s; %lu call(s) failed meanwhile",
              (double)(pg_now_ms() - h->down_since_ms) / 1000.0, h->total);
    *h = (pg_db_health){0};
}

/* Once a report interval: how many calls failed since the last line. */
static void report_outage(pg_db_health *h, uint64_t now)
{
    if (now - h->reported_ms < PG_DB_HEALTH_REPORT_MS)
        return;
    pg_warn("MySQL still down after %.0f s: %lu call(s) failed in the last %.0f s; last: %s",
            (double)(now - h->down_since_ms) / 1000.0, h->failures,
            (double)(now - h->reported_ms) / 1000.0, h->last_error);
    h->reported_ms = now;
    h->failures = 0;
}

int pg_db_health_failed(pg_db_health *h, const pg_db *db, const char *err)
{
    const char *why = db ? pg_db_error(db) : err ? err : "no connection";
    if (db && !pg_db_unreachable(db)) {
        pg_error("MySQL: %s", why);
        return 0;
    }
    uint64_t now = pg_now_ms();
    snprintf(h->last_error, sizeof(h->last_error), "%s", why);
    h->failures++;
    h->total++;
    if (!h->down) {
        pg_error("MySQL is down: %s; what needs it waits and is retried", why);
        h->down = 1;
        h->down_since_ms = h->reported_ms = now;
        h->failures = 0;
    } else {
        report_outage(h, now);
    }
    return 1;
}
