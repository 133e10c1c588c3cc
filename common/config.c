/* config.c - settings from INI files, environment and the command line
 * (see config.h).
 *
 * INI files are parsed by libinih through ini_parse_stream() with our own
 * line reader, because Debian's libinih is built without INI_HANDLER_LINENO
 * (the handler cannot be told the line number; defining the macro ourselves
 * would only change our view of the callback type, not how the library calls
 * it).  The reader hands inih exactly one physical line per call and counts
 * them; inih processes each line before asking for the next, so while the
 * handler runs, ctx->lineno is the line of the key being handled.  The reader
 * also:
 *   - strips leading blanks, so indented keys ("  worker_num = 4" under a
 *     [section]) are never mistaken for inih's multi-line continuations;
 *   - rejects lines longer than inih's buffer (instead of inih silently
 *     splitting them into two "lines");
 *   - stops the parse at the first error we report.
 * Inline comments start with ';' preceded by whitespace (inih's rule), also
 * inside "quoted" values; a quoted value cut by one is reported as unterminated. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#define ENV_PREFIX "PUSHGATE_"
#define VALUE_SHOW 80   /* longest value quoted back in an error message */

/* ------------------------------------------------------------------ errors */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ----------------------------------------------------------------- lookup */

static void *field_of(const pg_conf_table *t, const pg_conf_def *d)
{
    return (char *)t->target + d->offset;
}

/* First table wins when a key is defined in several tables. */
static const pg_conf_def *find_def(const pg_conf_table *tables, size_t ntables,
                                   const char *key, size_t keylen,
                                   const pg_conf_table **table_out)
{
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].ndefs; i++) {
            const pg_conf_def *d = &tables[t].defs[i];
            if (d->key && strlen(d->key) == keylen && strncasecmp(d->key, key, keylen) == 0) {
                if (table_out)
                    *table_out = &tables[t];
                return d;
            }
        }
    }
    return NULL;
}

/* ---------------------------------------------------------- value parsing */

static int bounded(const pg_conf_def *d)
{
    return d->min != 0 || d->max != 0;
}

static int parse_int(const pg_conf_def *d, const char *s, long long *out, char *msg, size_t mlen)
{
    if (s[0] == '\0' || isspace((unsigned char)s[0])) {
        set_err(msg, mlen, "'%.*s' is not a number", VALUE_SHOW, s);
        return -1;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0') {
        set_err(msg, mlen, "'%.*s' is not a number", VALUE_SHOW, s);
        return -1;
    }
    if (errno == ERANGE) {
        set_err(msg, mlen, "'%.*s' is too large", VALUE_SHOW, s);
        return -1;
    }
    if (bounded(d) && (v < d->min || v > d->max)) {
        set_err(msg, mlen, "%lld is out of range [%lld, %lld]", v, d->min, d->max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out, char *msg, size_t mlen)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    set_err(msg, mlen, "'%.*s' is not a boolean (true/false, yes/no, on/off, 1/0)", VALUE_SHOW, s);
    return -1;
}

static int parse_size(const pg_conf_def *d, const char *s, size_t *out, char *msg, size_t mlen)
{
    static const struct { const char *suffix; unsigned shift; } units[] = {
        { "", 0 },    { "b", 0 },
        { "k", 10 },  { "kb", 10 }, { "kib", 10 },
        { "m", 20 },  { "mb", 20 }, { "mib", 20 },
        { "g", 30 },  { "gb", 30 }, { "gib", 30 },
    };
    if (!isdigit((unsigned char)s[0])) {
        set_err(msg, mlen, "'%.*s' is not a size (e.g. 4096, 64K, 2M, 1G)", VALUE_SHOW, s);
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int overflow = errno == ERANGE;
    size_t u;
    for (u = 0; u < sizeof(units) / sizeof(units[0]); u++)
        if (strcasecmp(end, units[u].suffix) == 0)
            break;
    if (u == sizeof(units) / sizeof(units[0])) {
        set_err(msg, mlen, "'%.*s' is not a size (e.g. 4096, 64K, 2M, 1G)", VALUE_SHOW, s);
        return -1;
    }
    unsigned shift = units[u].shift;
    if (overflow || v > (unsigned long long)SIZE_MAX || (shift && v > ((unsigned long long)SIZE_MAX >> shift))) {
        set_err(msg, mlen, "'%.*s' is too large", VALUE_SHOW, s);
        return -1;
    }
    v <<= shift;
    if (bounded(d)) {
        unsigned long long lo = d->min < 0 ? 0 : (unsigned long long)d->min;
        if (d->max < 0 || v < lo || v > (unsigned long long)d->max) {
            set_err(msg, mlen, "'%.*s' (%llu bytes) is out of range [%lld, %lld]",
                    VALUE_SHOW, s, v, d->min, d->max);
            return -1;
        }
    }
    *out = (size_t)v;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int parse_bytes(const char *s, pg_conf_bytes *out, char *msg, size_t mlen)
{
    size_t n = strlen(s);
    char *buf = malloc(n + 1);
    if (buf == NULL) {
        set_err(msg, mlen, "out of memory");
        return -1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            buf[o++] = s[i];
            continue;
        }
        char c = s[++i];
        switch (c) {
        case 'r': buf[o++] = '\r'; break;
        case 'n': buf[o++] = '\n'; break;
        case 't': buf[o++] = '\t'; break;
        case '\\': buf[o++] = '\\'; break;
        case '0': buf[o++] = '\0'; break;
        case 'x': {
            int hi = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free(buf);
                set_err(msg, mlen, "bad escape '\\x' (needs two hex digits) in '%.*s'", VALUE_SHOW, s);
                return -1;
            }
            buf[o++] = (char)(hi << 4 | lo);
            i += 2;
            break;
        }
        case '\0':
            free(buf);
            set_err(msg, mlen, "trailing backslash in '%.*s'", VALUE_SHOW, s);
            return -1;
        default:
            free(buf);
            if (isprint((unsigned char)c))
                set_err(msg, mlen, "bad escape '\\%c' in '%.*s' (use \\r \\n \\t \\\\ \\0 \\xHH)",
                        c, VALUE_SHOW, s);
            else
                set_err(msg, mlen, "bad escape in '%.*s' (use \\r \\n \\t \\\\ \\0 \\xHH)", VALUE_SHOW, s);
            return -1;
        }
    }
    buf[o] = '\0';
    out->data = buf;
    out->len = o;
    return 0;
}

static int parse_enum(const pg_conf_def *d, const char *s, int *out, char *msg, size_t mlen)
{
    const char *choices = d->choices ? d->choices : "";
    size_t slen = strlen(s);
    const char *p = choices;
    int idx = 0;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == slen && strncasecmp(p, s, len) == 0) {
            *out = idx;
            return 0;
        }
        if (bar == NULL)
            break;
        p = bar + 1;
        idx++;
    }
    set_err(msg, mlen, "'%.*s' is not one of %s", VALUE_SHOW, s, choices);
    return -1;
}

/* Parses value for d and stores it in field only on success (so a bad value
 * never leaves a half-updated setting).  msg gets the reason, without origin. */
static int apply_value(const pg_conf_def *d, void *field, const char *value,
                       char *msg, size_t mlen)
{
    switch (d->type) {
    case PG_CONF_INT: {
        long long v;
        if (parse_int(d, value, &v, msg, mlen) < 0)
            return -1;
        *(long long *)field = v;
        return 0;
    }
    case PG_CONF_BOOL: {
        int v;
        if (parse_bool(value, &v, msg, mlen) < 0)
            return -1;
        *(int *)field = v;
        return 0;
    }
    case PG_CONF_SIZE: {
        size_t v;
        if (parse_size(d, value, &v, msg, mlen) < 0)
            return -1;
        *(size_t *)field = v;
        return 0;
    }
    case PG_CONF_STRING: {
        char *v = strdup(value);
        if (v == NULL) {
            set_err(msg, mlen, "out of memory");
            return -1;
        }
        char **slot = field;
        free(*slot);
        *slot = v;
        return 0;
    }
    case PG_CONF_BYTES: {
        pg_conf_bytes v;
        if (parse_bytes(value, &v, msg, mlen) < 0)
            return -1;
        pg_conf_bytes *slot = field;
        free(slot->data);
        *slot = v;
        return 0;
    }
    case PG_CONF_ENUM: {
        int v;
        if (parse_enum(d, value, &v, msg, mlen) < 0)
            return -1;
        *(int *)field = v;
        return 0;
    }
    }
    set_err(msg, mlen, "unsupported setting type %d", (int)d->type);
    return -1;
}

/* --------------------------------------------------------------- defaults */

static const char *check_def(const pg_conf_def *d)
{
    if (d->key == NULL || d->key[0] == '\0')
        return "setting without a key";
    if ((int)d->type < PG_CONF_INT || (int)d->type > PG_CONF_ENUM)
        return "unknown type";
    if (d->type == PG_CONF_ENUM && (d->choices == NULL || d->choices[0] == '\0'))
        return "enum without choices";
    if ((d->type == PG_CONF_INT || d->type == PG_CONF_SIZE) && d->min > d->max)
        return "min > max";
    return NULL;
}

int pg_config_defaults(const pg_conf_table *tables, size_t ntables, char *err, size_t errlen)
{
    /* Pointers first, so pg_config_free() is safe whatever happens below. */
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].ndefs; i++) {
            const pg_conf_def *d = &tables[t].defs[i];
            void *f = field_of(&tables[t], d);
            if (d->type == PG_CONF_STRING)
                *(char **)f = NULL;
            else if (d->type == PG_CONF_BYTES)
                *(pg_conf_bytes *)f = (pg_conf_bytes){ NULL, 0 };
        }
    }
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].ndefs; i++) {
            const pg_conf_def *d = &tables[t].defs[i];
            void *f = field_of(&tables[t], d);
            const char *bad = check_def(d);
            if (bad) {
                set_err(err, errlen, "default %s: bad definition: %s", d->key ? d->key : "(null)", bad);
                return -1;
            }
            const char *v = d->default_value;
            if (v == NULL) {
                switch (d->type) {
                case PG_CONF_INT: *(long long *)f = 0; continue;
                case PG_CONF_BOOL:
                case PG_CONF_ENUM: *(int *)f = 0; continue;
                case PG_CONF_SIZE: *(size_t *)f = 0; continue;
                case PG_CONF_STRING:
                case PG_CONF_BYTES: v = ""; break;
                }
            }
            char msg[256];
            if (apply_value(d, f, v, msg, sizeof(msg)) < 0) {
                set_err(err, errlen, "default %s: %s", d->key, msg);
                return -1;
            }
        }
    }
    return 0;
}

void pg_config_free(const pg_conf_table *tables, size_t ntables)
{
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].ndefs; i++) {
            const pg_conf_def *d = &tables[t].defs[i];
            void *f = field_of(&tables[t], d);
            if (d->type == PG_CONF_STRING) {
                char **s = f;
                free(*s);
                *s = NULL;
            } else if (d->type == PG_CONF_BYTES) {
                pg_conf_bytes *b = f;
                free(b->data);
                b->data = NULL;
                b->len = 0;
            }
        }
    }
}

/* ------------------------------------------------------------------- file */

typedef struct {
    FILE *fp;
    const char *path;
    int lineno;          /* physical line last handed to inih */
    char *line;          /* getline() buffer */
    size_t cap;
    const pg_conf_table *tables;
    size_t ntables;
    int failed;          /* first error recorded in err */
    int err_line;
    char *err;
    size_t errlen;
} file_ctx;

static char *ini_line_reader(char *str, int num, void *stream)
{
    file_ctx *c = stream;
    if (c->failed)
        return NULL; /* stop at the first error */
    errno = 0;
    ssize_t n = getline(&c->line, &c->cap, c->fp);
    if (n < 0) {
        if (ferror(c->fp)) {
            c->failed = 1;
            c->err_line = c->lineno + 1;
            set_err(c->err, c->errlen, "%s:%d: read error: %s", c->path, c->lineno + 1,
                    strerror(errno ? errno : EIO));
        }
        return NULL;
    }
    c->lineno++;
    size_t len = (size_t)n;
    if (strlen(c->line) != len) {
        c->failed = 1;
        c->err_line = c->lineno;
        set_err(c->err, c->errlen, "%s:%d: NUL byte in line", c->path, c->lineno);
        return NULL;
    }
    while (len > 0 && (c->line[len - 1] == '\n' || c->line[len - 1] == '\r'))
        len--;
    const char *p = c->line;
    while (len > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        len--;
    }
    /* inih wants 3 bytes of slack (\r \n \0). */
    if (num < 4 || len > (size_t)num - 3) {
        c->failed = 1;
        c->err_line = c->lineno;
        set_err(c->err, c->errlen, "%s:%d: line too long (more than %d characters)",
                c->path, c->lineno, num < 4 ? 0 : num - 3);
        return NULL;
    }
    memcpy(str, p, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

static int ini_handler_cb(void *user, const char *section, const char *name, const char *value)
{
    (void)section; /* sections only group keys */
    file_ctx *c = user;
    if (c->failed)
        return 0;
    const pg_conf_table *t = NULL;
    const pg_conf_def *d = find_def(c->tables, c->ntables, name, strlen(name), &t);
    if (d == NULL) {
        c->failed = 1;
        c->err_line = c->lineno;
        set_err(c->err, c->errlen, "%s:%d: unknown setting '%s'", c->path, c->lineno, name);
        return 0;
    }
    if (value == NULL)
        value = "";
    size_t vlen = strlen(value);
    char *unquoted = NULL;
    if (vlen > 0 && value[0] == '"') {
        if (vlen < 2 || value[vlen - 1] != '"') {
            c->failed = 1;
            c->err_line = c->lineno;
            set_err(c->err, c->errlen,
                    "%s:%d: %s: unterminated quoted value (note: ' ;' starts a comment)",
                    c->path, c->lineno, d->key);
            return 0;
        }
        unquoted = strndup(value + 1, vlen - 2);
        if (unquoted == NULL) {
            c->failed = 1;
            c->err_line = c->lineno;
            set_err(c->err, c->errlen, "%s:%d: out of memory", c->path, c->lineno);
            return 0;
        }
        value = unquoted;
    }
    char msg[512];
    int rc = apply_value(d, field_of(t, d), value, msg, sizeof(msg));
    free(unquoted);
    if (rc < 0) {
        c->failed = 1;
        c->err_line = c->lineno;
        set_err(c->err, c->errlen, "%s:%d: %s: %s", c->path, c->lineno, d->key, msg);
        return 0;
    }
    return 1;
}

int pg_config_load_file(const pg_conf_table *tables, size_t ntables, const char *path,
                        char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0') {
        set_err(err, errlen, "empty config file name");
        return -1;
    }
    FILE *fp = fopen(path, "re");
    if (fp == NULL) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    file_ctx c = {
        .fp = fp, .path = path, .tables = tables, .ntables = ntables,
        .err = err, .errlen = errlen,
    };
    int rc = ini_parse_stream(ini_line_reader, &c, ini_handler_cb, &c);
    free(c.line);
    fclose(fp);
    if (rc == -2) {
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    /* rc > 0: first line inih rejected (our handler's errors included). */
    if (rc > 0 && (!c.failed || rc < c.err_line)) {
        set_err(err, errlen, "%s:%d: syntax error (expected 'key = value' or '[section]')",
                path, rc);
        return -1;
    }
    if (c.failed || rc != 0) {
        if (!c.failed)
            set_err(err, errlen, "%s: parse error", path);
        return -1;
    }
    return 0;
}

/* -------------------------------------------------------------------- env */

int pg_config_load_env(const pg_conf_table *tables, size_t ntables, char *err, size_t errlen)
{
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].ndefs; i++) {
            const pg_conf_def *d = &tables[t].defs[i];
            if (d->key == NULL)
                continue;
            size_t klen = strlen(d->key);
            const pg_conf_table *owner = NULL;
            if (find_def(tables, ntables, d->key, klen, &owner) != d)
                continue; /* shadowed by an earlier table */
            char name[256];
            if (sizeof(ENV_PREFIX) - 1 + klen >= sizeof(name))
                continue;
            memcpy(name, ENV_PREFIX, sizeof(ENV_PREFIX) - 1);
            for (size_t k = 0; k < klen; k++) {
                unsigned char ch = (unsigned char)d->key[k];
                name[sizeof(ENV_PREFIX) - 1 + k] = isalnum(ch) ? (char)toupper(ch) : '_';
            }
            name[sizeof(ENV_PREFIX) - 1 + klen] = '\0';
            const char *v = getenv(name);
            if (v == NULL)
                continue;
            char msg[512];
            if (apply_value(d, field_of(owner, d), v, msg, sizeof(msg)) < 0) {
                set_err(err, errlen, "env %s: %s", name, msg);
                return -1;
            }
        }
    }
    return 0;
}

/* -------------------------------------------------------------------- set */

int pg_config_set(const pg_conf_table *tables, size_t ntables, const char *assignment,
                  char *err, size_t errlen)
{
    if (assignment == NULL)
        assignment = "";
    const char *eq = strchr(assignment, '=');
    if (eq == NULL || eq == assignment) {
        set_err(err, errlen, "--set '%.*s': expected key=value", VALUE_SHOW, assignment);
        return -1;
    }
    size_t klen = (size_t)(eq - assignment);
    const pg_conf_table *t = NULL;
    const pg_conf_def *d = find_def(tables, ntables, assignment, klen, &t);
    if (d == NULL) {
        set_err(err, errlen, "--set: unknown setting '%.*s'", (int)(klen > VALUE_SHOW ? VALUE_SHOW : klen),
                assignment);
        return -1;
    }
    char msg[512];
    if (apply_value(d, field_of(t, d), eq + 1, msg, sizeof(msg)) < 0) {
        set_err(err, errlen, "--set %s: %s", d->key, msg);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------- help */

static void format_default(const pg_conf_def *d, char *buf, size_t len)
{
    const char *v = d->default_value;
    if (v == NULL) {
        if (d->type == PG_CONF_STRING || d->type == PG_CONF_BYTES)
            v = "";
        else if (d->type == PG_CONF_BOOL)
            v = "false";
        else if (d->type == PG_CONF_ENUM) {
            const char *bar = d->choices ? strchr(d->choices, '|') : NULL;
            snprintf(buf, len, "%s = %.*s", d->key,
                     d->choices ? (int)(bar ? (size_t)(bar - d->choices) : strlen(d->choices)) : 0,
                     d->choices ? d->choices : "");
            return;
        } else
            v = "0";
    }
    if (v[0] == '\0')
        v = "\"\"";
    snprintf(buf, len, "%s = %s", d->key, v);
}

void pg_config_print_help(FILE *out, const pg_conf_table *tables, size_t ntables)
{
    int width = 0;
    char buf[160];
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].ndefs; i++) {
            format_default(&tables[t].defs[i], buf, sizeof(buf));
            int l = (int)strlen(buf);
            if (l > width)
                width = l;
        }
    }
    if (width > 48)
        width = 48;
    for (size_t t = 0; t < ntables; t++) {
        if (t > 0)
            fputc('\n', out);
        for (size_t i = 0; i < tables[t].ndefs; i++) {
            const pg_conf_def *d = &tables[t].defs[i];
            if (d->key == NULL)
                continue;
            format_default(d, buf, sizeof(buf));
            fprintf(out, "  %-*s    %s", width, buf, d->help ? d->help : "");
            if (d->type == PG_CONF_ENUM && d->choices)
                fprintf(out, " (%s)", d->choices);
            else if (d->type == PG_CONF_BOOL)
                fputs(" (true/false)", out);
            else if ((d->type == PG_CONF_INT || d->type == PG_CONF_SIZE) && bounded(d))
                fprintf(out, " [%lld..%lld]", d->min, d->max);
            fputc('\n', out);
        }
    }
}

/* ------------------------------------------------------------------- args */

static void print_usage(FILE *out, const char *program)
{
    fprintf(out, "Usage: %s [-c FILE] [--set key=value ...] [--help] [--version]\n", program);
}

int pg_config_from_args(int argc, char **argv, const char *program, const char *version,
                        const pg_conf_table *tables, size_t ntables)
{
    char err[1024];
    const char *file = NULL;
    const char **sets = NULL;
    size_t nsets = 0;
    int help = 0, show_version = 0, rc = -1;

    if (program == NULL)
        program = (argc > 0 && argv && argv[0]) ? argv[0] : "pushgate";

    /* Defaults first, so that every return path leaves the tables in a state
     * pg_config_free() can handle. */
    if (pg_config_defaults(tables, ntables, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        goto out;
    }

    if (argc > 1) {
        sets = calloc((size_t)argc, sizeof(*sets));
        if (sets == NULL) {
            fprintf(stderr, "%s: out of memory\n", program);
            goto out;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int is_config = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            help = 1;
            continue;
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            show_version = 1;
            continue;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            is_config = 1;
        } else if (strncmp(a, "--config=", 9) == 0) {
            is_config = 1;
            val = a + 9;
        } else if (strcmp(a, "-s") == 0 || strcmp(a, "--set") == 0) {
            /* value in the next argument */
        } else if (strncmp(a, "--set=", 6) == 0) {
            val = a + 6;
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", program, a);
            print_usage(stderr, program);
            goto out;
        }
        if (val == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: option '%s' needs an argument\n", program, a);
                print_usage(stderr, program);
                goto out;
            }
            val = argv[++i];
        }
        if (is_config) {
            if (file != NULL) {
                fprintf(stderr, "%s: only one config file may be given (%s, %s)\n", program, file, val);
                goto out;
            }
            file = val;
        } else {
            sets[nsets++] = val;
        }
    }

    if (help) {
        print_usage(stdout, program);
        printf("\n  -c, --config FILE      INI file (sections only group keys)\n"
               "  -s, --set key=value    override one setting (repeatable)\n"
               "  -h, --help             this help\n"
               "  -v, --version          print the version\n"
               "\nSettings (applied in order: default, file, environment " ENV_PREFIX
               "<KEY>, --set):\n");
        pg_config_print_help(stdout, tables, ntables);
        fflush(stdout);
        rc = 1;
        goto out;
    }
    if (show_version) {
        printf("%s %s\n", program, version ? version : "");
        fflush(stdout);
        rc = 1;
        goto out;
    }

    if (file && pg_config_load_file(tables, ntables, file, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        goto out;
    }
    if (pg_config_load_env(tables, ntables, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        goto out;
    }
    for (size_t i = 0; i < nsets; i++) {
        if (pg_config_set(tables, ntables, sets[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "%s: %s\n", program, err);
            goto out;
        }
    }
    rc = 0;
out:
    free(sets);
    if (rc != 0)
        pg_config_free(tables, ntables); /* nothing left to free for the caller */
    return rc;
}
