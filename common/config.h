/* config.h - settings from INI files, environment and the command line.
 *
 * A program describes its settings once, as tables of pg_conf_def that point
 * into plain C structs.  Values are applied in this order, each overriding the
 * one before: built-in defaults, the INI file given with -c (parsed by libinih;
 * section names only group keys), environment variables PUSHGATE_<KEY> (key in
 * upper case), then --set key=value.  Unknown keys and bad values are errors
 * that name their origin ("gateway.ini:12: ...", "env PUSHGATE_X: ...",
 * "--set x: ...") so a node never starts with a setting it silently ignored. */
#ifndef PG_CONFIG_H
#define PG_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    PG_CONF_INT,     /* long long, within [min, max] */
    PG_CONF_BOOL,    /* int 0/1: true/false, yes/no, on/off, 1/0 */
    PG_CONF_SIZE,    /* size_t bytes: "4096", "64K", "2M", "1G" (also KB/KiB, MB/MiB, GB/GiB); within [min, max] */
    PG_CONF_STRING,  /* char * (malloc'd, owned by the config); "" allowed */
    PG_CONF_BYTES,   /* pg_conf_bytes: string with C escapes decoded ("\r\n", "\x00", "\\") */
    PG_CONF_ENUM,    /* int: index of the value in choices ("debug|info|warn") */
} pg_conf_type;

typedef struct {
    char *data;      /* malloc'd, NUL-terminated for convenience */
    size_t len;
} pg_conf_bytes;

typedef struct {
    const char *key;            /* INI key, lower case, e.g. "worker_num" */
    pg_conf_type type;
    size_t offset;              /* offsetof(struct, field) in the target */
    const char *default_value;  /* as it would be written in the INI file */
    long long min, max;         /* bounds for INT and SIZE (both 0: unbounded) */
    const char *choices;        /* ENUM only: "a|b|c" */
    const char *help;           /* one line, shown by --help and in examples */
} pg_conf_def;

/* One struct and the settings that live in it; a program passes several
 * (the engine's server settings, its own settings). */
typedef struct {
    const pg_conf_def *defs;
    size_t ndefs;
    void *target;
} pg_conf_table;

/* Each function returns 0 on success, or -1 and writes a one-line message
 * (origin included) into err. */
int pg_config_defaults(const pg_conf_table *tables, size_t ntables, char *err, size_t errlen);
int pg_config_load_file(const pg_conf_table *tables, size_t ntables, const char *path,
                        char *err, size_t errlen);
int pg_config_load_env(const pg_conf_table *tables, size_t ntables, char *err, size_t errlen);
/* "key=value" */
int pg_config_set(const pg_conf_table *tables, size_t ntables, const char *assignment,
                  char *err, size_t errlen);
/* Frees STRING and BYTES values. */
void pg_config_free(const pg_conf_table *tables, size_t ntables);

/* Prints every setting, its default and help, one per line. */
void pg_config_print_help(FILE *out, const pg_conf_table *tables, size_t ntables);

/* The whole command line of a daemon:
 *   PROGRAM [-c FILE] [--set key=value ...] [--help] [--version]
 * Applies defaults, file, env, --set in that order.
 * Returns 0 to go on, 1 when --help/--version was handled (exit 0),
 * -1 on error (message printed to stderr; exit non-zero). */
int pg_config_from_args(int argc, char **argv, const char *program, const char *version,
                        const pg_conf_table *tables, size_t ntables);

#endif
