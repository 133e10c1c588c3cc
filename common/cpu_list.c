/* cpu_list.c - see cpu_list.h. */
#include "cpu_list.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* A CPU number at *p: 0 with *p past it, or -1. */
static int read_cpu(const char **p, unsigned *cpu)
{
    const char *s = *p;
    unsigned v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (unsigned)(*s++ - '0');
        if (v >= CPU_SETSIZE)
            return -1;
    }
    *p = s;
    *cpu = v;
    return 0;
}

int pg_cpu_list_parse(const char *text, cpu_set_t *out, char *err, size_t errlen)
{
    CPU_ZERO(out);
    const char *p = text;
    for (;;) {
        p = skip_blanks(p);
        unsigned first, last;
        if (read_cpu(&p, &first) < 0)
            goto bad;
        last = first;
        if (*p == '-') {
            p++;
            if (read_cpu(&p, &last) < 0 || last < first)
                goto bad;
        }
        for (unsigned cpu = first; cpu <= last; cpu++)
            CPU_SET(cpu, out);
        p = skip_blanks(p);
        if (*p == '\0')
            return 0;
        if (*p++ != ',')
            goto bad;
    }
bad:
    snprintf(err, errlen, "cpu_affinity \"%s\": not a list of CPUs 0..%d such as 0-3,6", text,
             CPU_SETSIZE - 1);
    CPU_ZERO(out);
    return -1;
}

int pg_cpu_affinity_apply(const char *text, char *err, size_t errlen)
{
    if (!text || !*text)
        return 0;
    cpu_set_t set;
    if (pg_cpu_list_parse(text, &set, err, errlen) < 0)
        return -1;
    if (sched_setaffinity(0, sizeof(set), &set) < 0) {
        snprintf(err, errlen, "cpu_affinity \"%s\": %s", text,
                 errno == EINVAL ? "none of these CPUs is one this process may use"
                                 : strerror(errno));
        return -1;
    }
    return 0;
}
