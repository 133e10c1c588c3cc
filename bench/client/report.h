/* report.h - every mode builds one JSON object of its figures; this prints
 * it either as JSON (--json, one object on stdout) or as a short table of
 * "name  value" lines (nested objects on one line). */
#ifndef PB_REPORT_H
#define PB_REPORT_H

#include "hist.h"

#include <jansson.h>
#include <stdio.h>

/* {"count","p50","p90","p99","max","mean"} in milliseconds. */
json_t *pb_report_latency(const pb_hist *h);
/* Seconds between two monotonic stamps as a real, or null when either is 0. */
json_t *pb_report_span(uint64_t from_us, uint64_t to_us);
/* Prints o (not stolen); 0 or -1. */
int pb_report_print(FILE *out, json_t *o, int as_json);

#endif
