/* procs.c - forking children with a message pipe each (see procs.h). */
#include "procs.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROC_MSG_MAX (512u << 20)

typedef struct {
    uint32_t type, len;
} proc_head;

static void proc_child(pb_proc *procs, int i, int wfd, int (*fn)(int, int, void *), void *arg)
{
    for (int j = 0; j < i; j++)
        if (procs[j].fd >= 0)
            close(procs[j].fd);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        exit(PB_INCOMPLETE);        /* the parent is gone already */
    int rc = fn(i, wfd, arg);
    close(wfd);
    exit(rc);
}

int pb_proc_spawn(pb_proc *procs, int n, int (*fn)(int i, int fd, void *arg), void *arg)
{
    memset(procs, 0, sizeof(*procs) * (size_t)n);
    for (int i = 0; i < n; i++)
        procs[i].fd = -1;
    fflush(NULL);                   /* nothing buffered is written twice */
    for (int i = 0; i < n; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
            pb_err("pipe: %s", strerror(errno));
            goto fail;
        }
        pid_t pid = fork();
        if (pid < 0) {
            pb_err("fork: %s", strerror(errno));
            close(p[0]);
            close(p[1]);
            goto fail;
        }
        if (pid == 0) {
            close(p[0]);
            proc_child(procs, i, p[1], fn, arg);
        }
        close(p[1]);
        procs[i].pid = pid;
        procs[i].fd = p[0];
    }
    return 0;
fail:
    pb_proc_signal(procs, n, SIGKILL);
    pb_proc_reap(procs, n, 0);
    return -1;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int pb_proc_send(int fd, uint32_t type, const void *data, size_t len)
{
    if (len > PROC_MSG_MAX)
        return -1;
    proc_head h = {type, (uint32_t)len};
    return write_all(fd, &h, sizeof(h)) < 0 || write_all(fd, data, len) < 0 ? -1 : 0;
}

/* Reads what the pipe holds now into p->buf; EOF closes it. */
static void proc_read(pb_proc *p)
{
    if (p->pos > 0) {               /* what was handed out is no longer needed */
        memmove(p->buf, p->buf + p->pos, p->len - p->pos);
        p->len -= p->pos;
        p->pos = 0;
    }
    if (p->cap - p->len < 65536) {
        size_t cap = p->cap ? p->cap * 2 : 131072;
        char *buf = cap <= 2 * (size_t)PROC_MSG_MAX ? realloc(p->buf, cap) : NULL;
        if (!buf) {
            close(p->fd);           /* a child flooding us: stop listening */
            p->fd = -1;
            return;
        }
        p->buf = buf;
        p->cap = cap;
    }
    ssize_t r = read(p->fd, p->buf + p->len, p->cap - p->len);
    if (r > 0) {
        p->len += (size_t)r;
    } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(p->fd);
        p->fd = -1;
    }
}

int pb_proc_poll(pb_proc *procs, int n, int timeout_ms)
{
    struct pollfd pfd[n > 0 ? n : 1];
    int open = 0;
    for (int i = 0; i < n; i++) {
        pfd[i].fd = procs[i].fd;
        pfd[i].events = POLLIN;
        pfd[i].revents = 0;
        open += procs[i].fd >= 0;
    }
    if (open == 0)
        return 0;
    int r = poll(pfd, (nfds_t)n, timeout_ms);
    if (r < 0)
        return errno == EINTR ? -1 : 0;
    open = 0;
    for (int i = 0; i < n; i++) {
        if (procs[i].fd >= 0 && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
            proc_read(&procs[i]);
        open += procs[i].fd >= 0;
    }
    return open;
}

int pb_proc_next(pb_proc *p, uint32_t *type, const char **data, uint32_t *len)
{
    proc_head h;
    if (p->len - p->pos < sizeof(h))
        return 0;
    memcpy(&h, p->buf + p->pos, sizeof(h));
    if (p->len - p->pos - sizeof(h) < h.len)
        return 0;
    *type = h.type;
    *len = h.len;
    *data = p->buf + p->pos + sizeof(h);
    p->pos += sizeof(h) + h.len;
    return 1;
}

void pb_proc_signal(pb_proc *procs, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (procs[i].pid > 0 && !procs[i].reaped)
            kill(procs[i].pid, sig);
}

static int proc_reap_some(pb_proc *procs, int n)
{
    int left = 0;
    for (int i = 0; i < n; i++) {
        if (procs[i].pid <= 0 || procs[i].reaped)
            continue;
        pid_t r = waitpid(procs[i].pid, &procs[i].status, WNOHANG);
        if (r == procs[i].pid || (r < 0 && errno == ECHILD))
            procs[i].reaped = 1;
        else
            left++;
    }
    return left;
}

int pb_proc_reap(pb_proc *procs, int n, int timeout_ms)
{
    uint64_t deadline = pb_mono_us() + (uint64_t)timeout_ms * 1000;
    while (proc_reap_some(procs, n) > 0 && pb_mono_us() < deadline)
        usleep(10000);
    if (proc_reap_some(procs, n) > 0) {
        pb_proc_signal(procs, n, SIGKILL);
        for (int i = 0; i < n; i++)
            if (procs[i].pid > 0 && !procs[i].reaped &&
                waitpid(procs[i].pid, &procs[i].status, 0) == procs[i].pid)
                procs[i].reaped = 1;
    }
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += procs[i].reaped && WIFEXITED(procs[i].status) && WEXITSTATUS(procs[i].status) == 0;
    return ok;
}

void pb_proc_free(pb_proc *procs, int n)
{
    for (int i = 0; i < n; i++) {
        if (procs[i].fd >= 0)
            close(procs[i].fd);
        free(procs[i].buf);
        procs[i].buf = NULL;
        procs[i].fd = -1;
    }
}
