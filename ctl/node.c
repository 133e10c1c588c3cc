/* node.c - pushgate-ctl start and stop: a local gateway node driven through
 * its pid file (SIGTERM stops it; it drains and removes the pid file).
 *
 * Every wait is bounded and shows a dot line on stderr; the result goes to
 * stdout.  start runs the gateway with daemonize=true: its launching process
 * exits only once the daemon runs (0) or failed (non-zero), so start knows
 * the outcome without guessing from the log. */
#include "ctl.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define GATEWAY "pushgate-gateway"
#define POLL_MS 100

/* ---- start ---- */

/* pushgate-gateway next to this program. */
static int default_bin(char *out, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0) {
        ctl_err("/proc/self/exe: %s (give --bin PATH)", strerror(errno));
        return -1;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *(slash ? slash : self) = '\0';
    if ((size_t)snprintf(out, len, "%s/" GATEWAY, self) >= len) {
        ctl_err("path too long (give --bin PATH)");
        return -1;
    }
    return 0;
}

/* BIN [-c FILE] [--set k=v (ctl's, the gateway's keys only)] --set daemonize=true
 * --set pid_file=F [words after --]; NULL-terminated, malloc'd. */
static char **gateway_argv(const ctl_args *a, const char *bin, const char *pidset)
{
    char **v = calloc(8 + 2 * a->nsets + a->nrest, sizeof(char *));
    if (!v)
        return NULL;
    size_t n = 0;
    v[n++] = (char *)bin;
    if (a->config) {
        v[n++] = "-c";
        v[n++] = (char *)a->config;
    }
    for (size_t i = 0; i < a->nsets; i++) {
        const char *eq = strchr(a->sets[i], '=');
        if (eq && !ctl_setting_is_ctl_only(a->sets[i], (size_t)(eq - a->sets[i]))) {
            v[n++] = "--set";
            v[n++] = (char *)a->sets[i];
        }
    }
    v[n++] = "--set";
    v[n++] = "daemonize=true";
    v[n++] = "--set";
    v[n++] = (char *)pidset;
    for (size_t i = 0; i < a->nrest; i++)
        v[n++] = (char *)a->rest[i];
    return v;
}

static pid_t spawn(char **argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        fprintf(stderr, CTL_PROGRAM ": %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (pid < 0)
        ctl_err("fork: %s", strerror(errno));
    return pid;
}

/* Waits for the launching process; its exit code, or -1 after deadline. */
static int wait_launcher(pid_t child, double deadline, ctl_dots *dots)
{
    for (;;) {
        int status;
        pid_t r = waitpid(child, &status, WNOHANG);
        if (r == child)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0 && errno != EINTR) {
            ctl_err("waitpid: %s", strerror(errno));
            return -1;
        }
        if (ctl_now() >= deadline)
            return -1;
        ctl_dots_tick(dots, "starting " GATEWAY);
        ctl_sleep_ms(POLL_MS);
    }
}

/* The live pid in path, waiting until deadline; -1 when none came. */
static pid_t wait_pid_file(const char *path, double deadline, ctl_dots *dots)
{
    for (;;) {
        pid_t pid = ctl_pid_read(path);
        if (pid > 0 && ctl_pid_alive(pid))
            return pid;
        if (pid < 0 || ctl_now() >= deadline)
            return -1;
        ctl_dots_tick(dots, "starting " GATEWAY);
        ctl_sleep_ms(POLL_MS);
    }
}

static int launch(const ctl_args *a, const char *bin, const char *path, long long timeout)
{
    char pidset[PATH_MAX + 16];
    snprintf(pidset, sizeof(pidset), "pid_file=%s", path);
    char **argv = gateway_argv(a, bin, pidset);
    if (!argv) {
        ctl_err("out of memory");
        return CTL_FAIL;
    }
    fflush(NULL);
    pid_t child = spawn(argv);
    free(argv);
    if (child < 0)
        return CTL_FAIL;
    ctl_dots dots = {0};
    ctl_dots_tick(&dots, "starting " GATEWAY);
    double deadline = ctl_now() + (double)timeout;
    int code = wait_launcher(child, deadline, &dots);
    pid_t pid = code == 0 ? wait_pid_file(path, deadline, &dots) : -1;
    ctl_dots_end(&dots, pid > 0 ? "started" : "failed");
    if (pid > 0) {
        printf("started, pid %ld (pid file %s)\n", (long)pid, path);
        return CTL_OK;
    }
    if (code < 0)
        ctl_err("%s did not start within %lld s (launching process %ld)", bin, timeout,
                (long)child);
    else if (code > 0)
        ctl_err("%s failed to start (exit code %d): see the messages above%s%s", bin, code,
                *ctl_cfg.log_file ? " or " : "", ctl_cfg.log_file);
    else
        ctl_err("%s started but %s names no running process", bin, path);
    return CTL_FAIL;
}

int ctl_cmd_start(const ctl_args *a)
{
    const char *path = ctl_pid_file(a);
    long long timeout = 30;
    if (!path || ctl_arg_number(a, "timeout", 1, 3600, &timeout) < 0)
        return CTL_USAGE;
    pid_t old = ctl_pid_read(path);
    if (old < 0)
        return CTL_FAIL;
    if (old > 0 && ctl_pid_alive(old)) {
        ctl_err("already running as pid %ld (pid file %s)", (long)old, path);
        return CTL_FAIL;
    }
    char bin[PATH_MAX];
    const char *given = ctl_arg(a, "bin");
    if (given)
        snprintf(bin, sizeof(bin), "%s", given);
    else if (default_bin(bin, sizeof(bin)) < 0)
        return CTL_FAIL;
    if (access(bin, X_OK) < 0) {
        ctl_err("%s: %s%s", bin, strerror(errno), given ? "" : " (give --bin PATH)");
        return CTL_FAIL;
    }
    if (old > 0 && unlink(path) == 0)
        fprintf(stderr, "removed the stale pid file %s (pid %ld was gone)\n", path, (long)old);
    return launch(a, bin, path, timeout);
}

/* ---- stop ---- */

int ctl_cmd_stop(const ctl_args *a)
{
    const char *path = ctl_pid_file(a);
    long long timeout = 60;
    if (!path || ctl_arg_number(a, "timeout", 1, 3600, &timeout) < 0)
        return CTL_USAGE;
    pid_t pid = ctl_pid_running(path);
    if (pid < 0)
        return CTL_FAIL;
    if (kill(pid, SIGTERM) < 0) {
        ctl_err("kill %ld: %s", (long)pid, strerror(errno));
        return CTL_FAIL;
    }
    char what[64];
    snprintf(what, sizeof(what), "stopping pid %ld", (long)pid);
    ctl_dots dots = {0};
    ctl_dots_tick(&dots, what);
    double deadline = ctl_now() + (double)timeout;
    while (ctl_pid_alive(pid) && ctl_now() < deadline) {
        ctl_sleep_ms(POLL_MS);
        ctl_dots_tick(&dots, what);
    }
    bool gone = !ctl_pid_alive(pid);
    ctl_dots_end(&dots, gone ? "stopped" : "still running");
    if (!gone) {
        ctl_err("pid %ld did not exit within %lld s (still draining? try again, or kill it)",
                (long)pid, timeout);
        return CTL_FAIL;
    }
    /* A node always removes its pid file; one killed on the way out cannot. */
    if (ctl_pid_read(path) == pid)
        unlink(path);
    printf("stopped pid %ld\n", (long)pid);
    return CTL_OK;
}
