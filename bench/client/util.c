/* util.c - clocks, random numbers, number parsing, errors (see util.h). */
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t pb_mono_us(void)
{
    return clock_us(CLOCK_MONOTONIC);
}

uint64_t pb_wall_us(void)
{
    return clock_us(CLOCK_REALTIME);
}

struct timespec pb_timespec_us(uint64_t us)
{
    return (struct timespec){(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
}

void pb_sleep_until_us(uint64_t when)
{
    uint64_t now = pb_mono_us();
    if (when <= now)
        return;
    struct timespec ts = pb_timespec_us(when - now);
    nanosleep(&ts, NULL);
}

uint64_t pb_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t pb_rand_seed(void)
{
    uint64_t s = pb_wall_us() ^ ((uint64_t)getpid() << 32);
    return pb_rand(&s);
}

void pb_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PB_NAME ": ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int pb_parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = s && *s != '-' ? strtoull(s, &end, 10) : 0;
    if (!s || *s == '-' || errno || end == s || *end || v < min || v > max) {
        pb_err("%s: expected a whole number in [%llu, %llu], got '%s'", opt,
               (unsigned long long)min, (unsigned long long)max, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int pb_parse_double(const char *opt, const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : NAN;
    if (!s || errno || end == s || *end || !isfinite(v) || v < min || v > max) {
        pb_err("%s: expected a number in [%g, %g], got '%s'", opt, min, max, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int pb_uuid_chars_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("_.:@-", *s)))
            return 0;
    return 1;
}
