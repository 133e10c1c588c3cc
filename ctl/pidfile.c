/* pidfile.c - finding a local node through its pid file.
 *
 * A pid file outlives its process when a node is killed -9, and the pid may
 * since belong to something else: before any signal is sent the pid must be
 * alive and its command line must be a pushgate one, so ctl never signals a
 * stranger. */
#include "ctl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ctl_pid_file(const ctl_args *a)
{
    const char *path = ctl_arg(a, "pid-file");
    if (!path)
        path = ctl_cfg.pid_file;
    if (!path || !*path) {
        ctl_err("no pid file: give --pid-file FILE or set pid_file (e.g. in the -c FILE)");
        return NULL;
    }
    return path;
}

pid_t ctl_pid_read(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        ctl_err("%s: %s", path, strerror(errno));
        return -1;
    }
    char buf[64] = "";
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    while (*end == '\n' || *end == ' ' || *end == '\r')
        end++;
    if (end == buf || *end != '\0' || pid <= 0 || pid > 0x3fffffff) {
        ctl_err("%s: no pid in it", path);
        return -1;
    }
    return (pid_t)pid;
}

/* The state letter of pid from /proc, or 0 when there is none. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' ? paren[2] : 0;
}

bool ctl_pid_alive(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno != EPERM)
        return false;
    char st = proc_state(pid);
    return st != 'Z' && st != 'X';
}

/* The first word of pid's command line (its process title). */
static void proc_title(pid_t pid, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)pid);
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    size_t n = fread(out, 1, len - 1, f);
    fclose(f);
    out[n] = '\0';
}

pid_t ctl_pid_running(const char *path)
{
    pid_t pid = ctl_pid_read(path);
    if (pid == 0)
        ctl_err("not running: there is no pid file %s", path);
    if (pid <= 0)
        return -1;
    if (!ctl_pid_alive(pid)) {
        ctl_err("stale pid file %s: pid %ld is not running (the node died without removing "
                "it; delete the file)", path, (long)pid);
        return -1;
    }
    char title[256];
    proc_title(pid, title, sizeof(title));
    if (!strstr(title, "pushgate")) {
        ctl_err("stale pid file %s: pid %ld is '%s', not a pushgate process (delete the file)",
                path, (long)pid, title);
        return -1;
    }
    return pid;
}
