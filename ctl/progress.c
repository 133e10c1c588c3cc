/* progress.c - how long operations show that they are moving, on stderr so
 * stdout keeps only results.  On a terminal one line is rewritten in place
 * (carriage return); into a file or pipe, plain lines, a few per second at
 * most, so logs stay readable. */
#include "ctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

double ctl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ctl_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void ctl_progress_init(ctl_progress *p)
{
    p->last = ctl_now();
    p->tty = isatty(STDERR_FILENO) == 1;
    p->shown = false;
}

void ctl_progress_update(ctl_progress *p, double interval, bool force, const char *fmt, ...)
{
    double now = ctl_now();
    if (!force && now - p->last < interval)
        return;
    p->last = now;
    va_list ap;
    va_start(ap, fmt);
    if (p->tty)
        fputs("\r\033[K", stderr); /* back to the start, clear the line */
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (!p->tty)
        fputc('\n', stderr);
    p->shown = p->tty;
    fflush(stderr);
}

void ctl_progress_end(ctl_progress *p)
{
    if (p->shown)
        fputc('\n', stderr);
    p->shown = false;
    fflush(stderr);
}

void ctl_dots_tick(ctl_dots *d, const char *what)
{
    double now = ctl_now();
    if (!d->started) {
        fprintf(stderr, "%s ", what);
        d->started = true;
        d->last = now;
    } else if (now - d->last >= 0.5) {
        fputc('.', stderr);
        d->last = now;
    }
    fflush(stderr);
}

void ctl_dots_end(ctl_dots *d, const char *result)
{
    if (d->started)
        fprintf(stderr, " %s\n", result);
    d->started = false;
    fflush(stderr);
}
