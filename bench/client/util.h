/* util.h - what every part of pushgate-bench needs: clocks, a fast
 * pseudo-random generator, checked number parsing and error messages.
 *
 * Two clocks: CLOCK_MONOTONIC (system-wide, so stamps taken in different
 * processes of one run compare) for durations, CLOCK_REALTIME for the send
 * stamps carried inside work orders. */
#ifndef PB_UTIL_H
#define PB_UTIL_H

#include <stdint.h>
#include <time.h>

#define PB_NAME "pushgate-bench"

/* Exit codes of every mode. */
enum { PB_OK = 0, PB_INCOMPLETE = 1, PB_USAGE = 2 };

uint64_t pb_mono_us(void);
uint64_t pb_wall_us(void);
/* A span of us, for ppoll(2) and nanosleep(2). */
struct timespec pb_timespec_us(uint64_t us);
/* Sleeps until pb_mono_us() reaches when (not at all if it has). */
void pb_sleep_until_us(uint64_t when);

/* splitmix64: *state advances; good enough for masks, keys and targets. */
uint64_t pb_rand(uint64_t *state);
/* A seed from the clock and the pid, for a process that wants its own. */
uint64_t pb_rand_seed(void);

/* "pushgate-bench: <message>\n" on stderr. */
void pb_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Whole number in [min, max]; -1 (message printed, naming opt) otherwise. */
int pb_parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Real number in [min, max]; -1 (message printed) otherwise. */
int pb_parse_double(const char *opt, const char *s, double min, double max, double *out);

/* Whether s uses only the characters the gateway allows in a uuid
 * ([A-Za-z0-9_.:@-]): user prefixes are checked with it. */
int pb_uuid_chars_ok(const char *s);

#endif
