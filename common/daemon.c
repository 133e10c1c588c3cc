/* daemon.c - see daemon.h. */
#include "daemon.h"

#include "cpu_list.h"
#include "log.h"
#include "proctitle.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

int pg_daemon_init(int argc, char **argv, const char *program, pg_conf_table *tables,
                   size_t ntables)
{
    pg_proctitle_init(argc, argv);
    int rc = pg_config_from_args(argc, argv, program, PG_VERSION, tables, ntables);
    if (rc != 0)
        return rc;
    const pg_server_settings *st = tables[0].target;
    char err[256];
    if (pg_cpu_affinity_apply(st->cpu_affinity, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        pg_config_free(tables, ntables);
        return -1;
    }
    pg_log_set_level((pg_log_level)st->log_level);
    if (st->log_file && *st->log_file && pg_log_open(st->log_file) < 0) {
        fprintf(stderr, "%s: log_file %s: %s\n", program, st->log_file, strerror(errno));
        pg_config_free(tables, ntables);
        return -1;
    }
    pg_log_set_role("master");
    return 0;
}

void pg_daemon_done(pg_conf_table *tables, size_t ntables)
{
    pg_config_free(tables, ntables);
    pg_log_close();
}

long long pg_daemon_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
        else
            pg_warn("cannot raise the open-file limit from %llu: %s",
                    (unsigned long long)rl.rlim_cur, strerror(errno));
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1LL << 20 : (long long)rl.rlim_cur;
}
