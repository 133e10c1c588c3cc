/* log.h - leveled logging for every pushgate process.
 *
 * Each line carries a timestamp, the level, the role of the process or thread
 * that wrote it ("master", "reactor 1", "worker 0", "task 2", ...) and its pid,
 * so the lines of a multi-process node can be told apart in one file.  A line is
 * written with a single write(2) on an O_APPEND descriptor, so lines from
 * different processes and threads never interleave. */
#ifndef PG_LOG_H
#define PG_LOG_H

#include <stdarg.h>
#include <stdint.h>

typedef enum {
    PG_LOG_DEBUG = 0,
    PG_LOG_INFO,
    PG_LOG_NOTICE,
    PG_LOG_WARN,
    PG_LOG_ERROR,
} pg_log_level;

/* Send log lines to path (appending), or to stderr when path is NULL or "".
 * Returns 0, or -1 with errno set when the file cannot be opened. */
int pg_log_open(const char *path);
/* Re-open the same file (after logrotate, or after daemonize); no-op on stderr. */
int pg_log_reopen(void);
void pg_log_close(void);

void pg_log_set_level(pg_log_level level);
pg_log_level pg_log_get_level(void);
/* "debug", "info", "notice", "warn"/"warning", "error" -> level. 0 ok, -1 unknown. */
int pg_log_level_parse(const char *name, pg_log_level *out);
const char *pg_log_level_name(pg_log_level level);

/* Role of the calling thread (copied; thread-local, inherited across fork). */
void pg_log_set_role(const char *role);
const char *pg_log_get_role(void);

void pg_log(pg_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pg_logv(pg_log_level level, const char *fmt, va_list ap);

/* A line that may repeat for as long as something stays broken (a server
 * down): written at most once per PG_RATELOG_MS, with the number of lines
 * held back in between.  Zero it to start afresh (the thing works again). */
#define PG_RATELOG_MS 10000
typedef struct {
    uint64_t last_ms;       /* monotonic clock; 0: nothing written yet */
    unsigned suppressed;
} pg_ratelog;

void pg_log_limited(pg_ratelog *r, pg_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define pg_debug(...)  pg_log(PG_LOG_DEBUG, __VA_ARGS__)
#define pg_info(...)   pg_log(PG_LOG_INFO, __VA_ARGS__)
#define pg_notice(...) pg_log(PG_LOG_NOTICE, __VA_ARGS__)
#define pg_warn(...)   pg_log(PG_LOG_WARN, __VA_ARGS__)
#define pg_error(...)  pg_log(PG_LOG_ERROR, __VA_ARGS__)

#endif
