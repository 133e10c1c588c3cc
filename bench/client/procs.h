/* procs.h - child processes, each with a pipe to the parent.
 *
 * One process may hold only so many sockets (the open-file limit), so a
 * large run is split over children.  Each child writes framed messages
 * (type, length, bytes) to its pipe; the parent polls all pipes, collects
 * the messages, and reaps the children, killing those that overstay. */
#ifndef PB_PROCS_H
#define PB_PROCS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;
    int fd;                 /* read end; -1 after EOF */
    char *buf;
    size_t len, cap, pos;   /* unread bytes are buf[pos..len) */
    int status;             /* wait status once reaped */
    int reaped;
} pb_proc;

/* Forks n children; child i runs fn(i, fd, arg) with fd its pipe's write
 * end and exits with what it returns (it gets SIGTERM if the parent dies).
 * -1 when a fork or pipe fails (children already made are killed). */
int pb_proc_spawn(pb_proc *procs, int n, int (*fn)(int i, int fd, void *arg), void *arg);

/* Child: one message, written whole (blocking). 0 or -1. */
int pb_proc_send(int fd, uint32_t type, const void *data, size_t len);

/* Parent: waits up to timeout_ms for data, reads what is there.  Returns the
 * number of pipes still open, -1 when interrupted by a signal. */
int pb_proc_poll(pb_proc *procs, int n, int timeout_ms);

/* Parent: the next complete message of p, 1; 0 when none is complete.
 * *data stays valid until the next pb_proc_poll. */
int pb_proc_next(pb_proc *p, uint32_t *type, const char **data, uint32_t *len);

void pb_proc_signal(pb_proc *procs, int n, int sig);
/* Waits for every child up to timeout_ms, then SIGKILLs and waits for the
 * rest.  Returns how many exited with status 0. */
int pb_proc_reap(pb_proc *procs, int n, int timeout_ms);
void pb_proc_free(pb_proc *procs, int n);

#endif
