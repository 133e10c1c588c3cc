/* ctl.h - what the files of pushgate-ctl share.
 *
 * pushgate-ctl is a short-lived command-line tool: one command per run, no
 * event loop, so everything here is synchronous and plain.  The files:
 * main.c (commands, help, exit codes), args.c (per-command options),
 * settings.c (the settings ctl reads, lenient about a daemon's INI file),
 * table.c (text tables), publish.c (XADD work orders), redis.c (the
 * connection to Redis, through Sentinel when set), token.c (JWTs),
 * cluster.c (nodes and online, from MySQL), pidfile.c (a local node's pid),
 * node.c (start, stop), reload.c (reload), http.c (GET over a plain socket),
 * status.c (/stats as tables), progress.c (progress lines on stderr),
 * dead_letter.c (reading one dead letter; no I/O), dead.c (dead list,
 * dead replay). */
#ifndef CTL_H
#define CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#define CTL_OK 0
#define CTL_FAIL 1
#define CTL_USAGE 2

#define CTL_PROGRAM "pushgate-ctl"

/* ---- settings (settings.c) ---- */

typedef struct {
    char *redis_host;
    long long redis_port;
    char *redis_sentinels;
    char *redis_master_name;
    char *redis_cluster_nodes;
    char *stream;
    char *dead_letter_stream;
    char *chat_token;
    char *mysql_hosts;
    char *mysql_host;
    long long mysql_port;
    char *mysql_socket;
    char *mysql_user;
    char *mysql_password;
    char *mysql_database;
    char *jwt_secret;
    char *pid_file;
    char *log_file;
    char *host;
    long long port;
    char *admin_host;
    long long admin_port;
    char *admin_secret;
} ctl_settings;

extern ctl_settings ctl_cfg;

/* Defaults, then FILE (may be NULL), then PUSHGATE_<KEY>, then each
 * "key=value" of sets.  0, or -1 with the reason printed. */
int ctl_settings_load(const char *file, const char *const *sets, size_t nsets);
void ctl_settings_free(void);
void ctl_settings_help(void);
/* Whether key is one pushgate-ctl reads but the gateway does not know. */
bool ctl_setting_is_ctl_only(const char *key, size_t keylen);

/* ---- options (args.c) ---- */

typedef struct {
    const char *name;   /* "uuid" for --uuid */
    char short_name;    /* 'c' for -c, or 0 */
    const char *arg;    /* placeholder of its value ("SECONDS"), NULL for a flag */
    const char *help;
} ctl_opt;

typedef struct {
    const ctl_opt *opts;     /* the command's options, then the common ones */
    size_t nopts;
    size_t nseen;            /* options given, in order */
    const ctl_opt **seen;
    const char **values;
    const char **pos;        /* positional arguments */
    size_t npos;
    const char **rest;       /* the words after "--" */
    size_t nrest;
    const char **sets;       /* every --set key=value, in order */
    size_t nsets;
    const char *config;      /* -c FILE */
    bool help;
} ctl_args;

/* Parses argv (the words after the command).  0, or -1 with the reason
 * printed.  ctl_args_free() is safe after either. */
int ctl_args_parse(ctl_args *a, const ctl_opt *opts, size_t nopts, int argc, char **argv);
void ctl_args_free(ctl_args *a);
/* The last value of --name, or NULL; flags give "" when present. */
const char *ctl_arg(const ctl_args *a, const char *name);
/* Every value of --name in order (n of them); out has room for nseen. */
size_t ctl_arg_all(const ctl_args *a, const char *name, const char **out);
/* --name as a whole number in [min, max]; *out keeps its value when absent.
 * 0, or -1 with the reason printed. */
int ctl_arg_number(const ctl_args *a, const char *name, long long min, long long max,
                   long long *out);
void ctl_opts_help(const ctl_opt *opts, size_t nopts);
extern const ctl_opt ctl_common_opts[];
extern const size_t ctl_common_nopts;

/* ---- commands ---- */

int ctl_cmd_publish(const ctl_args *a);
int ctl_cmd_token(const ctl_args *a);
int ctl_cmd_nodes(const ctl_args *a);
int ctl_cmd_online(const ctl_args *a);
int ctl_cmd_start(const ctl_args *a);
int ctl_cmd_stop(const ctl_args *a);
int ctl_cmd_reload(const ctl_args *a);
int ctl_cmd_status(const ctl_args *a);
int ctl_cmd_dead(const ctl_args *a);

/* A connection to redis_host:redis_port, or with redis_sentinels to the
 * primary they name (checked with ROLE; asked again for up to 10 s while a
 * failover is under way), with 5 s to connect and 30 s per reply
 * (redis.c), or NULL with the reason printed. */
struct redisContext;
struct redisContext *ctl_redis_connect(void);
/* The same for the server holding key: with redis_cluster_nodes, the
 * primary that the nodes' slot map (CLUSTER SLOTS) names for key's slot;
 * without, ctl_redis_connect(). */
struct redisContext *ctl_redis_connect_for(const char *key);

/* Prints "pushgate-ctl: ..." on stderr. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- text tables (table.c) ---- */

typedef struct {
    size_t ncols, nrows, cap;
    char **cells;            /* row-major, ncols per row; row 0 is the header */
} ctl_table;

int ctl_table_init(ctl_table *t, size_t ncols, const char *const *header);
/* Appends a row of ncols values (copied). 0 or -1 (out of memory). */
int ctl_table_row(ctl_table *t, const char *const *values);
void ctl_table_print(const ctl_table *t, const char *indent);
void ctl_table_free(ctl_table *t);

/* ---- a local node's pid file (pidfile.c) ---- */

/* The pid file from --pid-file or the setting, or NULL (reason printed). */
const char *ctl_pid_file(const ctl_args *a);
/* The running pushgate master named by path: its pid, or -1 with the reason
 * printed (no file, no pid in it, stale, not a pushgate process). */
pid_t ctl_pid_running(const char *path);
/* Reads the pid in path: >0, 0 when there is no file, -1 on garbage. */
pid_t ctl_pid_read(const char *path);
/* Whether pid runs (a zombie counts as gone). */
bool ctl_pid_alive(pid_t pid);

/* ---- HTTP and /stats (http.c, status.c) ---- */

/* GET path from host:port, with the bearer token (NULL: none), the 200 body
 * in *body (malloc'd).  0, or -1 with the reason in err. */
int ctl_http_get(const char *host, int port, const char *path, const char *token,
                 int timeout_ms, char **body, char *err, size_t errlen);
/* The node's /stats as JSON, or NULL with the reason in err. */
json_t *ctl_stats_fetch(char *err, size_t errlen);
/* The pids of "workers" or "task_workers" in stats (up to max). */
size_t ctl_stats_pids(json_t *stats, const char *key, pid_t *out, size_t max);

/* ---- progress on stderr (progress.c) ---- */

double ctl_now(void);
void ctl_sleep_ms(int ms);

typedef struct {
    double last;             /* when the last line was written */
    bool tty;                /* stderr is a terminal: one line rewritten with \r */
    bool shown;              /* something is on the line */
} ctl_progress;

void ctl_progress_init(ctl_progress *p);
/* Writes text (printf-style) when at least interval s passed since the last
 * line (force: always). */
void ctl_progress_update(ctl_progress *p, double interval, bool force, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Ends the line when a terminal line is open. */
void ctl_progress_end(ctl_progress *p);

/* A dot line for waits: "what ..." then a dot every half second. */
typedef struct {
    double last;
    bool started;
} ctl_dots;

void ctl_dots_tick(ctl_dots *d, const char *what);
void ctl_dots_end(ctl_dots *d, const char *result);

/* ---- dead letters (dead_letter.c) ---- */

/* A stream entry id: two numbers of up to 20 digits and a '-'. */
#define CTL_ID_MAX 42
/* A request's msg_id: an entry id, with a shard's tag "@<n>" (n: 1 to 4
 * digits) when the consumer reads a set of streams. */
#define CTL_MSG_ID_MAX (CTL_ID_MAX + 5)

/* Bytes from Redis: p is NULL when the field is missing. */
typedef struct {
    const char *p;
    size_t len;
} ctl_bytes;

/* One entry of the consumer's dead-letter stream, read from an XRANGE reply
 * (the bytes point into it).  The consumer writes the fields msg, reason,
 * source_id, source_stream, deliveries, and fields (the original entry's
 * fields but msg, as a JSON object) when the original had no msg or was a
 * replay (a field msg_id: then that is the original id). */
typedef struct {
    char id[CTL_ID_MAX];            /* the dead letter's own entry id */
    ctl_bytes msg, reason, source_id, source_stream, deliveries, fields;
    char original_id[CTL_MSG_ID_MAX];   /* the msg_id a replay carries */
    bool id_from_fields;            /* original_id is fields' msg_id, not source_id */
    char problem[160];              /* why it is malformed; "" when it is not */
} ctl_dead_letter;

struct redisReply;

/* Whether s is a stream entry id "<ms>-<seq>" (both within 64 bits). */
bool ctl_stream_id_valid(const char *s, size_t len);
/* Whether s is a stream entry id, or one with a shard's tag "@<n>". */
bool ctl_msg_id_valid(const char *s, size_t len);
/* The milliseconds part of a valid stream entry id. */
unsigned long long ctl_stream_id_ms(const char *id);
/* Reads item, one [id, [field, value, ...]] element of an XRANGE reply.
 * -1 when it has no usable id (d->problem says why); else 0, with
 * d->problem set when the dead letter is malformed (a field missing, not a
 * string, or not what the consumer writes). */
int ctl_dead_letter_parse(const struct redisReply *item, ctl_dead_letter *d);
/* NULL when d (well-formed) can be put back on stream, else why not. */
const char *ctl_dead_letter_unreplayable(const ctl_dead_letter *d, const char *stream, char *buf,
                                         size_t buflen);
/* --reason: a number matches that whole number in the reason (10500, not
 * 105001); other text a substring, ignoring case. */
bool ctl_reason_matches(ctl_bytes reason, const char *filter);
/* At most max characters of text for a terminal, malloc'd: control
 * characters and bad UTF-8 become '?', line breaks and tabs a space, and
 * "..." marks a cut.  NULL when out of memory. */
char *ctl_excerpt(ctl_bytes text, size_t max);
/* What the table shows of d's message: its data member when msg is a JSON
 * object that has one (not the url and chat_token every work order starts
 * with), else msg itself; the original's other fields when it had no msg. */
char *ctl_dead_letter_excerpt(const ctl_dead_letter *d, size_t max);
/* text with bad UTF-8 replaced by U+FFFD, as a JSON string (NULL: no memory). */
json_t *ctl_json_text(ctl_bytes text);

#endif
