/* fleet.h - one process's share of `pushgate-bench connect`: clients
 * [lo, hi) of the run, each an authenticated WebSocket that answers pings,
 * sends HEART_BEAT, ACKs every WorksheetMsg and counts it into a tally.
 * With nchan set (the peer system of bench/peer.py) a client is instead a
 * plain nchan WebSocket subscriber: no token, its channel <url path><uuid>,
 * registered at the 101, each text frame the published data object itself,
 * nothing sent back.
 *
 * Progress goes to the parent a few times a second (and at once when every
 * client has settled); at SIGTERM or SIGINT the fleet closes its sockets
 * and sends its tally, then the process exits. */
#ifndef PB_FLEET_H
#define PB_FLEET_H

#include "net.h"

#include <stdint.h>

#define PB_URLS_MAX 16

enum { PB_MSG_PROGRESS = 1, PB_MSG_TALLY = 2 };

typedef struct {
    pb_url urls[PB_URLS_MAX];
    int nurls;
    const char *secret;             /* the gateways' jwt_secret (not with nchan) */
    const char *prefix;             /* uuid = prefix + (first + i) */
    uint64_t first, n, expect;
    uint64_t per_proc;              /* clients per process */
    int procs;
    int src_addrs;                  /* 0: the kernel picks the source address */
    int nchan;                      /* nchan subscribers, not pushgate browsers */
    int reconnect;                  /* on a close or a failure: the next URL */
    int home_urls;                  /* first connects spread over urls[0..home_urls) */
    int inflight;                   /* attempts in progress at most, per process */
    double ramp_rate;               /* new attempts per second per process (0: no pacing) */
    double heartbeat;               /* seconds between HEART_BEATs (0: none) */
    double connect_timeout;         /* connect + upgrade + ONLINE */
    double token_ttl;
    double deadline;                /* a child stops by itself after this many seconds */
    const char *slow_log;           /* each order this late is a line here (NULL: none) */
    double slow_ms;
} pb_fleet_conf;

/* What a child tells the parent while it runs. */
typedef struct {
    uint64_t registered;            /* registered now */
    uint64_t ever_registered;
    uint64_t failed;                /* given up for good (no --reconnect) */
    uint64_t connect_errors;
    uint64_t received, unique;
    uint64_t server_closes;
    uint64_t settled;               /* every client registered or given up, once */
} pb_fleet_progress;

/* Runs clients [lo, hi) until told to stop; reports on fd.  Exit code. */
int pb_fleet_run(const pb_fleet_conf *conf, uint64_t lo, uint64_t hi, int fd);

#endif
