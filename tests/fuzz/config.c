/* config.c - fuzzes the settings parser (common/config.c): INI files read
 * through libinih with its own line reader, and --set key=value.
 *
 * The input is an INI file.  It is loaded (pg_config_load_file, through a
 * memfd so the real file path is used) into the engine's server settings,
 * the database settings and a table with one setting of every type, after
 * pg_config_defaults; then every line of the input is also given to
 * pg_config_set as if it came from --set.  pg_config_free must free it all
 * (ASan's leak check), and an error message is always one NUL-terminated
 * line. */
#include "config.h"
#include "db.h"
#include "server.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    long long count;
    int flag;
    size_t size;
    char *name;
    pg_conf_bytes marker;
    int level;
} every_type;

static const pg_conf_def every_type_defs[] = {
    {"count", PG_CONF_INT, offsetof(every_type, count), "5", -10, 1000, NULL, "an int"},
    {"flag", PG_CONF_BOOL, offsetof(every_type, flag), "no", 0, 0, NULL, "a bool"},
    {"size", PG_CONF_SIZE, offsetof(every_type, size), "64K", 1, (long long)1 << 40, NULL, "a size"},
    {"name", PG_CONF_STRING, offsetof(every_type, name), "pushgate", 0, 0, NULL, "a string"},
    {"marker", PG_CONF_BYTES, offsetof(every_type, marker), "\\r\\n\\r\\n", 0, 0, NULL, "bytes"},
    {"level", PG_CONF_ENUM, offsetof(every_type, level), "info", 0, 0, "debug|info|warn", "an enum"},
};

static void check_err(const char *err, size_t errlen)
{
    if (!memchr(err, '\0', errlen) || strchr(err, '\n'))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0 && (fd = memfd_create("fuzz.ini", 0)) < 0)
        abort();
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    pg_server_settings server;
    pg_db_settings db;
    every_type mine;
    memset(&server, 0, sizeof(server));
    memset(&db, 0, sizeof(db));
    memset(&mine, 0, sizeof(mine));
    pg_conf_table tables[] = {
        {pg_server_conf_defs, pg_server_conf_ndefs, &server},
        {pg_db_conf_defs, pg_db_conf_ndefs, &db},
        {every_type_defs, sizeof(every_type_defs) / sizeof(every_type_defs[0]), &mine},
    };
    const size_t ntables = sizeof(tables) / sizeof(tables[0]);
    char err[256];
    err[0] = '\0';
    if (pg_config_defaults(tables, ntables, err, sizeof(err)) != 0)
        abort();
    if (pg_config_load_file(tables, ntables, path, err, sizeof(err)) != 0)
        check_err(err, sizeof(err));

    /* each line as --set */
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (pg_config_set(tables, ntables, line, err, sizeof(err)) != 0)
            check_err(err, sizeof(err));
    }
    free(text);
    /* the MySQL server list, as every daemon checks it at start */
    pg_db_host_list hosts;
    if (pg_db_settings_hosts(&db, &hosts, err, sizeof(err)) != 0)
        check_err(err, sizeof(err));
    pg_config_free(tables, ntables);
    return 0;
}
