/* proctitle.h - set the process title shown by ps, top and /proc/PID/cmdline.
 *
 * Why: a pushgate node is a master plus forked manager, worker and task
 * processes that all run the same binary with the same argv.  Giving each one
 * a title ("pushgate-gateway: master", "pushgate-gateway: worker 0", ...) lets
 * an operator see at a glance which pid is which, as nginx and Swoole do.
 *
 * How (Linux): the kernel shows the memory that originally held argv as
 * /proc/PID/cmdline, and the environment strings follow it directly in that
 * memory.  pg_proctitle_init() copies the argv and environ strings to the heap,
 * points argv[i] and environ at the copies, and so frees the whole contiguous
 * area for pg_proctitle_set() to overwrite (the technique of nginx's
 * ngx_init_setproctitle()).  argv stays usable after init (argv[i] point to
 * the copies), and so does the environment (getenv/setenv work on the copy).
 * pg_proctitle_set() also sets the thread name (prctl PR_SET_NAME, first 15
 * characters), which is what top and /proc/PID/comm show.
 *
 * Call pg_proctitle_init() first thing in main(), before other threads exist
 * and before anything keeps pointers into argv or the environment.  Neither
 * function is thread-safe; call them from the main thread (each forked child
 * calls pg_proctitle_set() once after fork).  The copies made by init live
 * until exit by design (kept reachable, so LeakSanitizer stays quiet). */
#ifndef PG_PROCTITLE_H
#define PG_PROCTITLE_H

void pg_proctitle_init(int argc, char **argv);

/* printf-style title; truncated to the space argv and environ occupied.
 * Without a prior pg_proctitle_init() only the thread name is set. */
void pg_proctitle_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
