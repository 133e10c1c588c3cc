/* proctitle.c - process titles (see proctitle.h). */
#include "proctitle.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

extern char **environ;

static char *g_area;        /* start of the original argv strings */
static size_t g_area_len;   /* bytes of argv (+ environ) strings we may overwrite */

/* Allocated once by pg_proctitle_init() and never freed: they hold the moved
 * argv and environment strings for the life of the process.  The static
 * pointers keep them reachable for LeakSanitizer even after setenv() replaces
 * environ with an array of its own.  This one-time "leak" is intentional. */
static char *volatile g_moved_strings;  /* volatile: the stores must not be */
static char **volatile g_moved_environ; /* optimised away as "never read" */

void pg_proctitle_init(int argc, char **argv)
{
    if (g_area != NULL || argc <= 0 || argv == NULL || argv[0] == NULL)
        return;

    char *start = argv[0];
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc && argv[i] == end; i++)
        end = argv[i] + strlen(argv[i]) + 1;

    size_t nenv = 0;
    size_t total = 0;
    for (int i = 0; i < argc; i++)
        total += strlen(argv[i]) + 1;
    if (environ != NULL) {
        for (; environ[nenv] != NULL; nenv++) {
            if (environ[nenv] == end)
                end = environ[nenv] + strlen(environ[nenv]) + 1;
            total += strlen(environ[nenv]) + 1;
        }
    }

    char *copies = malloc(total);
    char **env = malloc((nenv + 1) * sizeof(*env));
    if (copies == NULL || env == NULL) {
        free(copies);
        free(env);
        return; /* titles then only change the thread name */
    }

    char *p = copies;
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        memcpy(p, argv[i], n);
        argv[i] = p;
        p += n;
    }
    for (size_t i = 0; i < nenv; i++) {
        size_t n = strlen(environ[i]) + 1;
        memcpy(p, environ[i], n);
        env[i] = p;
        p += n;
    }
    env[nenv] = NULL;
    environ = env;

    /* glibc's err()/error() print program_invocation_name, which points into
     * the area we are about to overwrite. */
    program_invocation_name = argv[0];
    char *slash = strrchr(argv[0], '/');
    program_invocation_short_name = slash ? slash + 1 : argv[0];

    g_moved_strings = copies;
    g_moved_environ = env;
    g_area = start;
    g_area_len = (size_t)(end - start);
}

void pg_proctitle_set(const char *fmt, ...)
{
    char title[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(title, sizeof(title), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;

    /* The kernel keeps the first 15 characters (TASK_COMM_LEN - 1). */
    char comm[16];
    size_t clen = strnlen(title, sizeof(comm) - 1);
    memcpy(comm, title, clen);
    comm[clen] = '\0';
    prctl(PR_SET_NAME, (unsigned long)comm, 0UL, 0UL, 0UL);

    if (g_area == NULL || g_area_len < 2)
        return;
    size_t len = strlen(title);
    if (len > g_area_len - 1)
        len = g_area_len - 1;
    memcpy(g_area, title, len);
    memset(g_area + len, 0, g_area_len - len);
}
