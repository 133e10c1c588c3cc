/* log.c - leveled logging for every pushgate process (see log.h).
 *
 * Design notes
 *  - A line is formatted completely in a buffer on the caller's stack and
 *    handed to the kernel with one write(2).  Log files are opened with
 *    O_APPEND, so lines written by different threads and processes sharing
 *    the descriptor never interleave and never overwrite each other.
 *  - No locks: the level and the descriptor are atomics, the role is
 *    thread-local.  pg_log_reopen() swaps the file behind the descriptor with
 *    dup3(), so a thread writing at that moment writes either to the old or
 *    to the new file, never to a closed descriptor.
 *  - Messages may carry untrusted network data: control characters are
 *    written as escapes ("\n", "\r", "\t", "\xHH") so one call always yields
 *    exactly one line.  Very long messages are cut with a "..." marker.
 *  - errno is preserved, so `pg_error("x: %s", strerror(errno))` followed by
 *    more errno checks behaves as expected.
 *  - pg_log_limited() keeps its state in the caller's pg_ratelog, so each
 *    repeating line is limited on its own and no lock is needed (a
 *    pg_ratelog belongs to one thread).
 *
 * pg_log_open(), pg_log_reopen() and pg_log_close() are meant to be called by
 * one thread (start-up, SIGHUP/SIGUSR1 handling in the event loop, shutdown);
 * pg_log_close() must not race with other threads still logging. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define PG_LOG_MSG_MAX   8192   /* longest message kept (before escaping) */
#define PG_LOG_LINE_MAX  (PG_LOG_MSG_MAX + 256)
#define PG_LOG_ROLE_MAX  48

static atomic_int g_level = PG_LOG_INFO;
static atomic_int g_fd = STDERR_FILENO;
static char g_path[PATH_MAX];       /* "" while logging to stderr */

static _Thread_local char t_role[PG_LOG_ROLE_MAX] = "main";

static const char *const level_names[] = {
    [PG_LOG_DEBUG] = "DEBUG",
    [PG_LOG_INFO] = "INFO",
    [PG_LOG_NOTICE] = "NOTICE",
    [PG_LOG_WARN] = "WARN",
    [PG_LOG_ERROR] = "ERROR",
};

static int open_log_file(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

int pg_log_open(const char *path)
{
    if (path == NULL || path[0] == '\0') {
        pg_log_close();
        return 0;
    }
    size_t len = strlen(path);
    if (len >= sizeof(g_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open_log_file(path);
    if (fd < 0)
        return -1;
    int cur = atomic_load(&g_fd);
    if (cur != STDERR_FILENO) {
        /* Keep the descriptor number stable: point it at the new file. */
        if (dup3(fd, cur, O_CLOEXEC) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        close(fd);
    } else {
        atomic_store(&g_fd, fd);
    }
    memcpy(g_path, path, len + 1);
    return 0;
}

int pg_log_reopen(void)
{
    int cur = atomic_load(&g_fd);
    if (cur == STDERR_FILENO || g_path[0] == '\0')
        return 0;
    int fd = open_log_file(g_path);
    if (fd < 0)
        return -1;
    if (fd != cur) {
        if (dup3(fd, cur, O_CLOEXEC) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        close(fd);
    }
    return 0;
}

void pg_log_close(void)
{
    int old = atomic_exchange(&g_fd, STDERR_FILENO);
    if (old != STDERR_FILENO)
        close(old);
    g_path[0] = '\0';
}

void pg_log_set_level(pg_log_level level)
{
    if ((int)level < PG_LOG_DEBUG)
        level = PG_LOG_DEBUG;
    if ((int)level > PG_LOG_ERROR)
        level = PG_LOG_ERROR;
    atomic_store(&g_level, (int)level);
}

pg_log_level pg_log_get_level(void)
{
    return (pg_log_level)atomic_load(&g_level);
}

int pg_log_level_parse(const char *name, pg_log_level *out)
{
    static const struct { const char *name; pg_log_level level; } map[] = {
        { "debug", PG_LOG_DEBUG },   { "info", PG_LOG_INFO },
        { "notice", PG_LOG_NOTICE }, { "warn", PG_LOG_WARN },
        { "warning", PG_LOG_WARN },  { "error", PG_LOG_ERROR },
    };
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcasecmp(name, map[i].name) == 0) {
            if (out)
                *out = map[i].level;
            return 0;
        }
    }
    return -1;
}

const char *pg_log_level_name(pg_log_level level)
{
    if ((int)level < PG_LOG_DEBUG || (int)level > PG_LOG_ERROR)
        return "?";
    return level_names[level];
}

void pg_log_set_role(const char *role)
{
    if (role == NULL)
        role = "";
    size_t n = strnlen(role, sizeof(t_role) - 1);
    memcpy(t_role, role, n);
    t_role[n] = '\0';
}

const char *pg_log_get_role(void)
{
    return t_role;
}

/* Appends src (len bytes) to out[*pos..cap), escaping control characters.
 * Returns 0 if everything fit, -1 if it had to stop early. */
static int append_escaped(char *out, size_t cap, size_t *pos, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t p = *pos;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        char esc[4];
        size_t n;
        if (c == '\n') {
            esc[0] = '\\'; esc[1] = 'n'; n = 2;
        } else if (c == '\r') {
            esc[0] = '\\'; esc[1] = 'r'; n = 2;
        } else if (c == '\t') {
            esc[0] = '\\'; esc[1] = 't'; n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\'; esc[1] = 'x'; esc[2] = hex[c >> 4]; esc[3] = hex[c & 15]; n = 4;
        } else {
            esc[0] = (char)c; n = 1;
        }
        if (p + n > cap) {
            *pos = p;
            return -1;
        }
        memcpy(out + p, esc, n);
        p += n;
    }
    *pos = p;
    return 0;
}

static void write_all(int fd, const char *buf, size_t len)
{
    /* One write(2) for the whole line; loop only on EINTR or the (rare, not
     * for regular files) short write so nothing is silently dropped. */
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

void pg_logv(pg_log_level level, const char *fmt, va_list ap)
{
    if ((int)level < atomic_load_explicit(&g_level, memory_order_relaxed))
        return;
    int saved_errno = errno;

    char msg[PG_LOG_MSG_MAX];
    int mlen = vsnprintf(msg, sizeof(msg), fmt ? fmt : "(null)", ap);
    int truncated = 0;
    if (mlen < 0) {
        mlen = snprintf(msg, sizeof(msg), "(bad log format)");
    } else if ((size_t)mlen >= sizeof(msg)) {
        mlen = (int)sizeof(msg) - 1;
        truncated = 1;
    }

    char line[PG_LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    int hlen = snprintf(line, sizeof(line),
                        "%04d-%02d-%02d %02d:%02d:%02d.%03ld [%s] %s (pid %ld): ",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                        tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                        pg_log_level_name(level), t_role, (long)getpid());
    if (hlen < 0)
        hlen = 0;
    size_t pos = (size_t)hlen;
    /* Room for "...\n" is always kept at the end. */
    const size_t cap = sizeof(line) - 4;
    if (pos > cap)
        pos = cap;
    if (append_escaped(line, cap, &pos, msg, (size_t)mlen) < 0)
        truncated = 1;
    if (truncated) {
        memcpy(line + pos, "...", 3);
        pos += 3;
    }
    line[pos++] = '\n';

    write_all(atomic_load_explicit(&g_fd, memory_order_relaxed), line, pos);
    errno = saved_errno;
}

void pg_log(pg_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pg_logv(level, fmt, ap);
    va_end(ap);
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void pg_log_limited(pg_ratelog *r, pg_log_level level, const char *fmt, ...)
{
    uint64_t now = monotonic_ms();
    if (r->last_ms && now - r->last_ms < PG_RATELOG_MS) {
        r->suppressed++;
        return;
    }
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (r->suppressed)
        pg_log(level, "%s (%u more like this in the last %u s)", text, r->suppressed,
               PG_RATELOG_MS / 1000);
    else
        pg_log(level, "%s", text);
    r->last_ms = now ? now : 1;
    r->suppressed = 0;
}
