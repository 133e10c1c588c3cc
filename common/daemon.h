/* daemon.h - the start of every pushgate program's main(): process title,
 * settings (defaults, -c FILE, PUSHGATE_* environment, --set), the CPUs it
 * runs on (cpu_affinity), logging. */
#ifndef PG_DAEMON_H
#define PG_DAEMON_H

#include "config.h"
#include "server.h"

/* tables[0] must be the server settings (pg_server_conf_defs on a
 * pg_server_settings); the rest are the program's own.  Returns 0 to go on,
 * 1 when --help or --version was answered, -1 on an error (printed). */
int pg_daemon_init(int argc, char **argv, const char *program, pg_conf_table *tables,
                   size_t ntables);

/* Raises the open-file limit to the hard limit (a warning when that is
 * refused) and returns the limit in force: every connection costs a file. */
long long pg_daemon_raise_nofile(void);

/* Frees the settings and closes the log. */
void pg_daemon_done(pg_conf_table *tables, size_t ntables);

#endif
