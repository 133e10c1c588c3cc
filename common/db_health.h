/* db_health.h - whether MySQL can be reached, as one process sees it, and
 * the log lines that say so.
 *
 * While the server is down every call fails, hundreds a second on a busy
 * node.  Logging each would bury everything else, so an outage is logged
 * once when it begins, as a count every PG_DB_HEALTH_REPORT_MS while it
 * lasts, and once when the server is back.  Errors of a statement on a
 * server that answers (a deadlock, a bad value) are not outages: they are
 * logged each time, as before. */
#ifndef PG_DB_HEALTH_H
#define PG_DB_HEALTH_H

#include <stdint.h>

#include "db.h"

#define PG_DB_HEALTH_REPORT_MS 10000

typedef struct {
    int down;
    uint64_t down_since_ms, reported_ms;
    unsigned long failures;        /* since the last report */
    unsigned long total;           /* since the outage began */
    char last_error[200];
} pg_db_health;

/* A call on db worked. */
void pg_db_health_ok(pg_db_health *h);
/* A call failed: db's last error says how (db NULL: no connection could be
 * made; err then says why).  Returns 1 when it is an outage. */
int pg_db_health_failed(pg_db_health *h, const pg_db *db, const char *err);

#endif
