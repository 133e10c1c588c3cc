/* daemon.c - see daemon.h. */
#include "daemon.h"

#include "log.h"
#include "proctitle.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int pg_daemon_init(int argc, char **argv, const char *program, pg_conf_table *tables,
                   size_t ntables)
{
    pg_proctitle_init(argc, argv);
    int rc = pg_config_from_args(argc, argv, program, PG_VERSION, tables, ntables);
    if (rc != 0)
        return rc;
    const pg_server_settings *st = tables[0].target;
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
