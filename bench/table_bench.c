/* table_bench.c - get+set throughput of the shared-memory table.
 *
 * usage: table_bench [capacity [keys [ops [max_seconds]]]]
 *   defaults: 1000000 1000000 5000000 10
 *
 * Makes a table (INT, FLOAT, 32-byte STRING columns) of the given capacity,
 * pre-fills `keys` keys, then times a loop of alternating set/get on random
 * existing keys: `ops` operations (each get and each set counts as one), or
 * fewer if max_seconds runs out.  Then the same with 4 forked processes, each
 * doing `ops` operations at the same time; their counts are summed and divided
 * by the wall time from the common start to the last one's end.
 *
 * Key strings are formatted before the timing starts, and each one is
 * prefetched a few operations before it is used (a server's key is in cache,
 * it has just parsed it); the table's memory is not prefetched.
 *
 * Output, one line per run:
 *   table: N ops in S s = X ops/s [1 process, capacity C, K keys]
 *   table: N ops in S s = X ops/s [4 processes, capacity C, K keys]
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "shm_table.h"

#define KEY_STRIDE 24
#define NPROC 4
#define AHEAD 16

static int col_i, col_f, col_s;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n) without a division. */
static inline uint32_t pick(uint64_t *s, uint32_t n)
{
    return (uint32_t)(((xorshift(s) >> 32) * (uint64_t)n) >> 32);
}

struct result {
    uint64_t ops;
    uint64_t failures;
};

/* The timed loop. */
static struct result run(pg_table *t, const char *keys, uint32_t nkeys, uint64_t ops,
                         double max_seconds, uint64_t seed)
{
    size_t rs = pg_table_row_size(t);
    char *row = calloc(1, rs), *out = calloc(1, rs);
    if (row == NULL || out == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    pg_table_row_set_float(t, row, col_f, 1.5);
    pg_table_row_set_string(t, row, col_s, "0123456789abcdef0123456789abcdef", 32);
    struct result r = {0, 0};
    double deadline = now() + max_seconds;
    uint64_t s = seed | 1;
    /* Keys are picked AHEAD operations in advance and prefetched, so the key
     * string is in cache when used (as a key a server just parsed would be);
     * the table's own memory is not touched in advance. */
    const char *ring[AHEAD];
    unsigned ri = 0;
    for (unsigned q = 0; q < AHEAD; q++) {
        ring[q] = keys + (size_t)pick(&s, nkeys) * KEY_STRIDE;
        __builtin_prefetch(ring[q]);
    }
    uint64_t i = 0;
    while (i < ops) {
        uint64_t chunk = ops - i < 65536 ? ops - i : 65536;
        for (uint64_t k = 0; k < chunk; k += 2) {
            const char *kset = ring[ri % AHEAD];
            ring[ri % AHEAD] = keys + (size_t)pick(&s, nkeys) * KEY_STRIDE;
            __builtin_prefetch(ring[ri++ % AHEAD]);
            const char *kget = ring[ri % AHEAD];
            ring[ri % AHEAD] = keys + (size_t)pick(&s, nkeys) * KEY_STRIDE;
            __builtin_prefetch(ring[ri++ % AHEAD]);
            pg_table_row_set_int(t, row, col_i, (int64_t)(i + k));
            r.failures += pg_table_set(t, kset, row) != 0;
            r.failures += pg_table_get(t, kget, out) != 0;
        }
        i += chunk + (chunk & 1);
        if (now() > deadline)
            break;
    }
    r.ops = i;
    free(row);
    free(out);
    return r;
}

static void report(uint64_t ops, double secs, int nproc, uint32_t cap, uint32_t nkeys)
{
    printf("table: %llu ops in %.3f s = %.0f ops/s [%d process%s, capacity %u, %u keys]\n",
           (unsigned long long)ops, secs, (double)ops / secs, nproc, nproc == 1 ? "" : "es",
           cap, nkeys);
    fflush(stdout);
}

struct shared {
    _Atomic int ready;
    _Atomic int go;
    struct result res[NPROC];
};

int main(int argc, char **argv)
{
    uint32_t capacity = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1000000;
    uint32_t nkeys = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : capacity;
    uint64_t ops = argc > 3 ? strtoull(argv[3], NULL, 10) : 5000000;
    double max_seconds = argc > 4 ? strtod(argv[4], NULL) : 10.0;
    if (capacity == 0 || nkeys == 0 || nkeys > capacity || ops == 0 || max_seconds <= 0) {
        fprintf(stderr, "usage: %s [capacity [keys<=capacity [ops [max_seconds]]]]\n", argv[0]);
        return 2;
    }

    pg_table *t = pg_table_new(capacity);
    if (t == NULL)
        return 1;
    col_i = pg_table_column(t, "hits", PG_TABLE_INT, 0);
    col_f = pg_table_column(t, "score", PG_TABLE_FLOAT, 0);
    col_s = pg_table_column(t, "uuid", PG_TABLE_STRING, 32);
    if (col_i < 0 || col_f < 0 || col_s < 0 || pg_table_create(t) != 0) {
        fprintf(stderr, "table create failed\n");
        return 1;
    }

    /* Keys are formatted once, outside the timed loops. */
    char *keys = malloc((size_t)nkeys * KEY_STRIDE);
    char *row = calloc(1, pg_table_row_size(t));
    if (keys == NULL || row == NULL)
        return 1;
    for (uint32_t i = 0; i < nkeys; i++)
        snprintf(keys + (size_t)i * KEY_STRIDE, KEY_STRIDE, "session:%010u", i);
    double t0 = now();
    for (uint32_t i = 0; i < nkeys; i++) {
        pg_table_row_set_int(t, row, col_i, i);
        if (pg_table_set(t, keys + (size_t)i * KEY_STRIDE, row) != 0) {
            fprintf(stderr, "pre-fill failed at %u\n", i);
            return 1;
        }
    }
    fprintf(stderr, "pre-filled %u keys in %.3f s\n", nkeys, now() - t0);

    /* One process. */
    t0 = now();
    struct result r = run(t, keys, nkeys, ops, max_seconds, 0x9E3779B97F4A7C15ULL);
    double secs = now() - t0;
    if (r.failures) {
        fprintf(stderr, "%llu failed operations\n", (unsigned long long)r.failures);
        return 1;
    }
    report(r.ops, secs, 1, capacity, nkeys);

    /* NPROC processes at once. */
    struct shared *sh = pg_shm_alloc(sizeof *sh);
    if (sh == NULL)
        return 1;
    pid_t pids[NPROC];
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        if (pids[p] < 0) {
            perror("fork");
            return 1;
        }
        if (pids[p] == 0) {
            atomic_fetch_add(&sh->ready, 1);
            while (!atomic_load(&sh->go))
                sched_yield();
            sh->res[p] = run(t, keys, nkeys, ops, max_seconds, 0x1234567ULL * (uint64_t)(p + 2));
            _exit(0);
        }
    }
    while (atomic_load(&sh->ready) < NPROC)
        sched_yield();
    t0 = now();
    atomic_store(&sh->go, 1);
    int bad = 0;
    for (int p = 0; p < NPROC; p++) {
        int st;
        if (waitpid(pids[p], &st, 0) != pids[p] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad = 1;
    }
    secs = now() - t0;
    uint64_t total = 0, failures = 0;
    for (int p = 0; p < NPROC; p++) {
        total += sh->res[p].ops;
        failures += sh->res[p].failures;
    }
    if (bad || failures) {
        fprintf(stderr, "a child failed (%llu failed operations)\n", (unsigned long long)failures);
        return 1;
    }
    report(total, secs, NPROC, capacity, nkeys);

    pg_shm_free(sh, sizeof *sh);
    free(row);
    free(keys);
    pg_table_destroy(t);
    return 0;
}
