/* main.c - pushgate-ctl: operate a pushgate cluster from a shell.
 *
 *   pushgate-ctl COMMAND [options]
 *
 * One table names every command with its options and help, so the usage
 * messages and --help cannot drift from what is parsed.  Exit codes: 0 done,
 * 1 the command failed (printed on stderr), 2 bad usage or settings. */
#include "ctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    const char *synopsis;
    const char *summary;
    const ctl_opt *opts;
    size_t nopts;
    size_t min_pos, max_pos;
    int (*run)(const ctl_args *a);
    bool rest;               /* takes words after "--" */
    const char *details;     /* more for its --help, or NULL */
} command;

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const ctl_opt publish_opts[] = {
    {"uuid", 0, "UUID", "recipient agent (repeat for several: one data entry each)"},
    {"type", 0, "TYPE", "work order type (data.type)"},
    {"infos", 0, "TEXT", "work order text (data.infos)"},
    {"chat-token", 0, "TOKEN", "app token (default: setting chat_token)"},
    {"raw", 0, "JSON", "publish this msg verbatim instead (must be a JSON object)"},
    {"count", 0, "N", "publish N entries (pipelined; progress on stderr)"},
    {"wait-replicas", 0, "N", "after each batch of XADDs, WAIT until N replicas have it; "
                              "exit 1 when fewer did within --wait-timeout"},
    {"wait-timeout", 0, "MS", "how long WAIT waits for the replicas (default 1000)"},
};
static const ctl_opt token_opts[] = {
    {"ttl", 0, "SECONDS", "validity (default 86400)"},
    {"admin", 0, NULL, "an operator's token (\"admin\": true; UUID names the operator): "
                       "opens /stats, /metrics and the cluster console on a public port"},
};
static const ctl_opt start_opts[] = {
    {"pid-file", 0, "FILE", "the node's pid file (default: setting pid_file)"},
    {"bin", 0, "PATH", "gateway program (default: pushgate-gateway next to pushgate-ctl)"},
    {"timeout", 0, "SECONDS", "wait at most this long (default 30)"},
};
static const ctl_opt stop_opts[] = {
    {"pid-file", 0, "FILE", "the node's pid file (default: setting pid_file)"},
    {"timeout", 0, "SECONDS", "wait at most this long for the node to exit (default 60)"},
};
static const ctl_opt reload_opts[] = {
    {"pid-file", 0, "FILE", "the node's pid file (default: setting pid_file)"},
    {"tasks", 0, NULL, "reload task workers only (SIGUSR2)"},
    {"timeout", 0, "SECONDS", "wait at most this long for the new workers (default 60; 0: "
                              "do not wait)"},
};
static const ctl_opt dead_opts[] = {
    {"count", 0, "N", "list: show at most N dead letters, oldest first (default 100)"},
    {"reason", 0, "CODE", "only those whose reason holds this error code (10500) or text"},
    {"json", 0, NULL, "list: one JSON object per line, with the whole msg"},
    {"id", 0, "ID", "replay: the dead letter with this entry id (repeatable)"},
    {"all", 0, NULL, "replay: every dead letter (that --reason selects)"},
};
static const ctl_opt status_opts[] = {
    {"pid-file", 0, "FILE", "the node's pid file (default: setting pid_file)"},
};

static const command commands[] = {
    {"publish",
     "--uuid UUID [--uuid UUID ...] --type TYPE --infos TEXT [--chat-token TOKEN] [--count N]\n"
     "       " CTL_PROGRAM " publish --raw JSON [--count N]\n"
     "       [--wait-replicas N [--wait-timeout MS]]",
     "append work orders to the Redis stream (field msg, the seed's format)", publish_opts,
     N(publish_opts), 0, 0, ctl_cmd_publish, false, NULL},
    {"token", "UUID [--ttl SECONDS] [--admin]",
     "print an HS256 browser token for UUID, or an operator's (setting jwt_secret)",
     token_opts, N(token_opts), 1, 1, ctl_cmd_token, false, NULL},
    {"nodes", "", "list the gateway nodes registered in MySQL", NULL, 0, 0, 0, ctl_cmd_nodes,
     false, NULL},
    {"online", "UUID", "list the connections of UUID (online_clients)", NULL, 0, 1, 1,
     ctl_cmd_online, false, NULL},
    {"start", "[--pid-file FILE] [--bin PATH] [--timeout SECONDS] [-- GATEWAY ARGS...]",
     "start a local gateway node as a daemon (with -c FILE and --set daemonize=true)",
     start_opts, N(start_opts), 0, 0, ctl_cmd_start, true, NULL},
    {"stop", "[--pid-file FILE] [--timeout SECONDS]",
     "stop the local node (SIGTERM) and wait until it is gone", stop_opts, N(stop_opts), 0, 0,
     ctl_cmd_stop, false, NULL},
    {"reload", "[--pid-file FILE] [--tasks] [--timeout SECONDS]",
     "replace the node's workers one at a time (SIGUSR1; --tasks: SIGUSR2)", reload_opts,
     N(reload_opts), 0, 0, ctl_cmd_reload, false, NULL},
    {"status", "[--pid-file FILE]", "is the local node running; its /stats as tables",
     status_opts, N(status_opts), 0, 0, ctl_cmd_status, false, NULL},
    {"dead",
     "list [--count N] [--reason CODE] [--json]\n"
     "       " CTL_PROGRAM " dead replay --id ID [--id ID ...] | --all [--reason CODE]",
     "list or replay the consumer's dead letters (setting dead_letter_stream)", dead_opts,
     N(dead_opts), 1, 1, ctl_cmd_dead, false,
     "list shows each dead letter's id, time, original entry id, reason and the start\n"
     "of its msg's data (--json: all of it, one JSON object a line).  replay XADDs msg\n"
     "back to the setting stream with a field msg_id holding the original entry id,\n"
     "which the consumer sends as the message id (browsers drop what they had\n"
     "already), and XDELs the dead letter only after that.  It prints one line per\n"
     "dead letter and how many were replayed, and exits 1 when any could not be\n"
     "(malformed, no msg, from another stream, Redis refused); malformed dead letters\n"
     "are reported and skipped, never guessed at.\n\n"
     "  " CTL_PROGRAM " dead list --reason 10500\n"
     "  " CTL_PROGRAM " dead replay --all --reason 10500 -c config/consumer.ini"},
};

void ctl_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(CTL_PROGRAM ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: " CTL_PROGRAM " COMMAND [options]\n\nCommands:\n");
    for (size_t i = 0; i < N(commands); i++)
        fprintf(out, "  %-8s  %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'" CTL_PROGRAM " COMMAND --help' shows a command's options.\n");
}

static void overall_help(void)
{
    usage(stdout);
    printf("\nOptions of every command:\n");
    ctl_opts_help(ctl_common_opts, ctl_common_nopts);
    printf("\nSettings (default, then -c FILE, then environment PUSHGATE_<KEY>, then --set;\n"
           "-c takes a daemon's INI file such as config/gateway.ini: keys pushgate-ctl\n"
           "does not use are skipped):\n");
    ctl_settings_help();
    printf("\nExit codes: 0 done, 1 the command failed, 2 bad usage or settings.\n");
}

static void command_usage(FILE *out, const command *c)
{
    fprintf(out, "Usage: " CTL_PROGRAM " %s%s%s\n", c->name, *c->synopsis ? " " : "",
            c->synopsis);
}

static void command_help(const command *c)
{
    command_usage(stdout, c);
    printf("\n%s\n", c->summary);
    if (c->details)
        printf("\n%s\n", c->details);
    printf("\nOptions:\n");
    ctl_opts_help(c->opts, c->nopts);
    ctl_opts_help(ctl_common_opts, ctl_common_nopts);
    printf("\nSettings: see '" CTL_PROGRAM " --help'.\n");
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < N(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int run_command(const command *c, int argc, char **argv)
{
    ctl_args a;
    int rc = CTL_USAGE;
    if (ctl_args_parse(&a, c->opts, c->nopts, argc, argv) < 0) {
        command_usage(stderr, c);
    } else if (a.help) {
        command_help(c);
        rc = CTL_OK;
    } else if (a.npos < c->min_pos) {
        ctl_err("%s: missing argument", c->name);
        command_usage(stderr, c);
    } else if (a.npos > c->max_pos || (a.nrest && !c->rest)) {
        ctl_err("%s: unexpected argument '%s'", c->name,
                a.npos > c->max_pos ? a.pos[c->max_pos] : a.rest[0]);
        command_usage(stderr, c);
    } else {
        if (ctl_settings_load(a.config, a.sets, a.nsets) == 0)
            rc = c->run(&a);
        ctl_settings_free();
    }
    ctl_args_free(&a);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CTL_USAGE;
    }
    const char *first = argv[1];
    if (strcmp(first, "-h") == 0 || strcmp(first, "--help") == 0 || strcmp(first, "help") == 0) {
        overall_help();
        return CTL_OK;
    }
    if (strcmp(first, "-v") == 0 || strcmp(first, "--version") == 0) {
        printf(CTL_PROGRAM " %s\n", PG_VERSION);
        return CTL_OK;
    }
    const command *c = find_command(first);
    if (!c) {
        if (first[0] == '-')
            ctl_err("the command comes first: " CTL_PROGRAM " COMMAND [options]");
        else
            ctl_err("unknown command '%s'", first);
        usage(stderr);
        return CTL_USAGE;
    }
    return run_command(c, argc - 2, argv + 2);
}
