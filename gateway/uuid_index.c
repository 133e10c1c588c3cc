/* uuid_index.c - this node's own sessions of each uuid, in shared memory.
 *
 * Routing asks MySQL where a uuid's sessions are, because some may be on
 * other nodes.  Those on this node are known here already, so a work order
 * or chat message is pushed to them at once, from this table, while the
 * lookup runs; its answer then skips them (route.c).  Every process of the
 * node sees the table: a session is added when it authenticates and removed
 * when it closes, by its home worker.
 *
 * A row holds up to GW_INDEX_SESSIONS sessions.  An agent with more tabs on
 * this node gets the others from the lookup's answer, as every target was
 * before.  The row also counts all the uuid's sessions here, for
 * max_tabs_per_uuid: a tab past it is refused (browser.c closes it).  An entry can be stale for a moment (a worker killed between
 * closing a session and removing it): that is harmless, since a push checks
 * that the session is still open and still that uuid's. */
#include "gateway.h"

#include "log.h"

#include <stdio.h>

static pg_table *index_table;
static int session_col[GW_INDEX_SESSIONS];
static int tabs_col;

int gw_uuid_index_create(uint32_t capacity)
{
    index_table = pg_table_new(capacity);
    if (!index_table)
        return -1;
    for (int i = 0; i < GW_INDEX_SESSIONS; i++) {
        char name[24];
        snprintf(name, sizeof(name), "session%d", i);
        if ((session_col[i] = pg_table_column(index_table, name, PG_TABLE_INT, 0)) < 0)
            return -1;
    }
    if ((tabs_col = pg_table_column(index_table, "tabs", PG_TABLE_INT, 0)) < 0)
        return -1;
    return pg_table_create(index_table);
}

void gw_uuid_index_destroy(void)
{
    pg_table_destroy(index_table);
    index_table = NULL;
}

typedef struct {
    pg_session_id session;
    int add;
    long long max_tabs;      /* 0: no limit */
    int refused;
} index_change;

/* A row is a set of session ids (0 is an empty place) and how many
 * sessions the uuid has here, in the set or not. */
static pg_table_verdict change_row(void *row, int found, void *arg)
{
    index_change *c = arg;
    int64_t tabs = found ? pg_table_row_get_int(index_table, row, tabs_col) : 0;
    if (c->add && c->max_tabs > 0 && tabs >= c->max_tabs) {
        c->refused = 1;
        return found ? PG_TABLE_KEEP : PG_TABLE_DELETE;
    }
    int used = 0, placed = !c->add;
    for (int i = 0; i < GW_INDEX_SESSIONS; i++) {
        pg_session_id s = (pg_session_id)pg_table_row_get_int(index_table, row, session_col[i]);
        if (s == c->session && !c->add)
            s = 0;
        else if (s == 0 && !placed)
            s = c->session, placed = 1;
        pg_table_row_set_int(index_table, row, session_col[i], (int64_t)s);
        used += s != 0;
    }
    tabs += c->add ? 1 : -1;
    if (tabs < used)
        tabs = used;
    pg_table_row_set_int(index_table, row, tabs_col, tabs);
    return tabs > 0 ? PG_TABLE_KEEP : PG_TABLE_DELETE;
}

int gw_uuid_index_add(const char *uuid, pg_session_id session, long long max_tabs)
{
    index_change c = {.session = session, .add = 1, .max_tabs = max_tabs};
    if (pg_table_update(index_table, uuid, change_row, &c) < 0)
        pg_warn("uuid index full: %s is routed through MySQL only", uuid);
    return c.refused ? -1 : 0;
}

void gw_uuid_index_remove(const char *uuid, pg_session_id session)
{
    index_change c = {.session = session, .add = 0};
    pg_table_update(index_table, uuid, change_row, &c);
}

size_t gw_uuid_index_get(const char *uuid, pg_session_id *sessions, size_t max)
{
    char row[(GW_INDEX_SESSIONS + 1) * sizeof(int64_t)];
    if (pg_table_row_size(index_table) > sizeof(row) || pg_table_get(index_table, uuid, row) < 0)
        return 0;
    size_t n = 0;
    for (int i = 0; i < GW_INDEX_SESSIONS && n < max; i++) {
        pg_session_id s = (pg_session_id)pg_table_row_get_int(index_table, row, session_col[i]);
        if (s != 0)
            sessions[n++] = s;
    }
    return n;
}
