/* args.c - the options of one pushgate-ctl command.
 *
 * Each command lists its options (ctl_opt); -c, --set and --help belong to
 * every command.  "--name value", "--name=value" and "-x value" are accepted;
 * words after "--" are kept apart (start hands them to the gateway).  An
 * unknown option or a missing value is a usage error, never ignored. */
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const ctl_opt ctl_common_opts[] = {
    {"config", 'c', "FILE", "settings from an INI file (e.g. config/gateway.ini)"},
    {"set", 's', "KEY=VALUE", "override one setting (repeatable)"},
    {"help", 'h', NULL, "this help"},
};
const size_t ctl_common_nopts = sizeof(ctl_common_opts) / sizeof(ctl_common_opts[0]);

static const ctl_opt *find_in(const ctl_opt *opts, size_t n, const char *name, size_t len,
                              char short_name)
{
    for (size_t i = 0; i < n; i++) {
        if (short_name ? opts[i].short_name == short_name
                       : strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

static const ctl_opt *find_opt(const ctl_args *a, const char *name, size_t len, char short_name)
{
    const ctl_opt *o = find_in(a->opts, a->nopts, name, len, short_name);
    return o ? o : find_in(ctl_common_opts, ctl_common_nopts, name, len, short_name);
}

/* Records option o with value v (NULL for a flag). */
static int take(ctl_args *a, const ctl_opt *o, const char *v)
{
    if (o == &ctl_common_opts[2]) {
        a->help = true;
    } else if (o == &ctl_common_opts[0]) {
        if (a->config) {
            ctl_err("only one config file may be given (%s, %s)", a->config, v);
            return -1;
        }
        a->config = v;
    } else if (o == &ctl_common_opts[1]) {
        a->sets[a->nsets++] = v;
    } else {
        a->seen[a->nseen] = o;
        a->values[a->nseen++] = v ? v : "";
    }
    return 0;
}

/* One option word at argv[*i]; may consume the next word as its value. */
static int option(ctl_args *a, int argc, char **argv, int *i)
{
    const char *w = argv[*i];
    bool is_long = w[1] == '-';
    const char *name = w + (is_long ? 2 : 1);
    const char *eq = is_long ? strchr(name, '=') : NULL;
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if (!is_long && len != 1) {
        ctl_err("unknown option '%s'", w);
        return -1;
    }
    const ctl_opt *o = find_opt(a, name, len, is_long ? 0 : name[0]);
    if (!o) {
        ctl_err("unknown option '%.*s'", (int)(name - w + len), w);
        return -1;
    }
    if (!o->arg) {
        if (eq) {
            ctl_err("option --%s takes no value", o->name);
            return -1;
        }
        return take(a, o, NULL);
    }
    if (eq)
        return take(a, o, eq + 1);
    if (*i + 1 >= argc) {
        ctl_err("option %s needs a value (%s)", w, o->arg);
        return -1;
    }
    return take(a, o, argv[++*i]);
}

int ctl_args_parse(ctl_args *a, const ctl_opt *opts, size_t nopts, int argc, char **argv)
{
    memset(a, 0, sizeof(*a));
    a->opts = opts;
    a->nopts = nopts;
    size_t n = argc > 0 ? (size_t)argc : 1;
    a->seen = calloc(n, sizeof(*a->seen));
    a->values = calloc(n, sizeof(*a->values));
    a->pos = calloc(n, sizeof(*a->pos));
    a->rest = calloc(n, sizeof(*a->rest));
    a->sets = calloc(n, sizeof(*a->sets));
    if (!a->seen || !a->values || !a->pos || !a->rest || !a->sets) {
        ctl_err("out of memory");
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        const char *w = argv[i];
        if (strcmp(w, "--") == 0) {
            while (++i < argc)
                a->rest[a->nrest++] = argv[i];
        } else if (w[0] == '-' && w[1] != '\0') {
            if (option(a, argc, argv, &i) < 0)
                return -1;
        } else {
            a->pos[a->npos++] = w;
        }
    }
    return 0;
}

void ctl_args_free(ctl_args *a)
{
    free(a->seen);
    free(a->values);
    free(a->pos);
    free(a->rest);
    free(a->sets);
    memset(a, 0, sizeof(*a));
}

const char *ctl_arg(const ctl_args *a, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < a->nseen; i++)
        if (strcmp(a->seen[i]->name, name) == 0)
            v = a->values[i];
    return v;
}

size_t ctl_arg_all(const ctl_args *a, const char *name, const char **out)
{
    size_t n = 0;
    for (size_t i = 0; i < a->nseen; i++)
        if (strcmp(a->seen[i]->name, name) == 0)
            out[n++] = a->values[i];
    return n;
}

int ctl_arg_number(const ctl_args *a, const char *name, long long min, long long max,
                   long long *out)
{
    const char *v = ctl_arg(a, name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno == ERANGE || n < min || n > max) {
        ctl_err("--%s: '%s' is not a whole number in [%lld, %lld]", name, v, min, max);
        return -1;
    }
    *out = n;
    return 0;
}

void ctl_opts_help(const ctl_opt *opts, size_t nopts)
{
    for (size_t i = 0; i < nopts; i++) {
        char left[64], short_part[8] = "    ";
        if (opts[i].short_name)
            snprintf(short_part, sizeof(short_part), "-%c, ", opts[i].short_name);
        snprintf(left, sizeof(left), "%s--%s%s%s", short_part, opts[i].name,
                 opts[i].arg ? " " : "", opts[i].arg ? opts[i].arg : "");
        printf("  %-28s  %s\n", left, opts[i].help);
    }
}
