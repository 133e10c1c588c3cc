/* daemon_status.h - a daemon's row in daemon_status (sql/004_daemon_status.sql).
 *
 * Every daemon publishes what it knows about itself as one JSON object, so
 * that the cluster console can show the whole cluster from one query.  The
 * row is replaced, never appended to: its size stays what one report is. */
#ifndef PG_DAEMON_STATUS_H
#define PG_DAEMON_STATUS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

#define PG_STATUS_ID_MAX 160            /* daemon_status.daemon_id */
#define PG_STATUS_MAX (1 << 20)         /* a report over this is not written */
#define PG_STATUS_EVERY_MS 2000         /* each daemon replaces its row this often */

/* Replaces the row of daemon_id (role: "gateway", "proxy" or "consumer")
 * with json; 0 or -1 (pg_db_error(db) says why; an oversized report is
 * logged and refused). */
int pg_status_write(pg_db *db, const char *daemon_id, const char *role, const char *json);
/* The same with status as compact JSON text (status is not taken). */
int pg_status_write_json(pg_db *db, const char *daemon_id, const char *role, const json_t *status);
/* Deletes the row of daemon_id, at a clean stop. */
int pg_status_remove(pg_db *db, const char *daemon_id);

/* "role name" into id (size > PG_STATUS_ID_MAX): cut to PG_STATUS_ID_MAX
 * bytes, valid UTF-8 (see pg_status_utf8). */
void pg_status_id(char *id, size_t size, const char *role, const char *name);
/* Copies src into dst (size > 0) as valid UTF-8, which jansson and the
 * column's utf8mb4 take: a byte that starts no valid sequence becomes '?',
 * and a cut falls between characters.  Returns the length copied. */
size_t pg_status_utf8(char *dst, size_t size, const char *src);
/* A JSON string of s, its bytes that are not UTF-8 as '?' (for names from
 * settings and texts from the wire); NULL only when out of memory. */
json_t *pg_status_string(const char *s);

#endif
