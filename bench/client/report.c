/* report.c - a mode's figures as JSON or as a readable table (see report.h). */
#include "report.h"

#include <stdlib.h>
#include <string.h>

static double ms(uint64_t us)
{
    return (double)us / 1000.0;
}

json_t *pb_report_latency(const pb_hist *h)
{
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)h->count, "p50",
                     ms(pb_hist_percentile(h, 50)), "p90", ms(pb_hist_percentile(h, 90)), "p99",
                     ms(pb_hist_percentile(h, 99)), "max", ms(h->max), "mean",
                     pb_hist_mean(h) / 1000.0);
}

json_t *pb_report_span(uint64_t from_us, uint64_t to_us)
{
    if (!from_us || !to_us || to_us < from_us)
        return json_null();
    return json_real((double)(to_us - from_us) / 1e6);
}

static void print_scalar(FILE *out, json_t *v)
{
    if (json_is_integer(v)) {
        fprintf(out, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        fprintf(out, d >= 1000 ? "%.0f" : d >= 10 ? "%.2f" : "%.3f", d);
    } else if (json_is_string(v)) {
        fputs(json_string_value(v), out);
    } else if (json_is_boolean(v)) {
        fputs(json_is_true(v) ? "yes" : "no", out);
    } else if (json_is_null(v)) {
        fputs("-", out);
    } else {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        fputs(text ? text : "?", out);
        free(text);
    }
}

int pb_report_print(FILE *out, json_t *o, int as_json)
{
    if (!o)
        return -1;
    if (as_json) {
        if (json_dumpf(o, out, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) < 0)
            return -1;
        fputc('\n', out);
        return fflush(out) == 0 ? 0 : -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        fprintf(out, "%-20s", key);
        if (json_is_object(v)) {
            const char *k2;
            json_t *v2;
            int first = 1;
            json_object_foreach(v, k2, v2) {
                fprintf(out, "%s%s ", first ? "" : "  ", k2);
                print_scalar(out, v2);
                first = 0;
            }
            if (first)
                fputs("-", out);
        } else {
            print_scalar(out, v);
        }
        fputc('\n', out);
    }
    return fflush(out) == 0 ? 0 : -1;
}
