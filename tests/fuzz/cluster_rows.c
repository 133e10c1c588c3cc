/* cluster_rows.c - fuzzes the cluster view's answer (gateway/admin.c), the
 * record a task worker sends a worker for /admin/cluster, as bytes of any
 * shape.
 *
 * Checked: an answer reads whole or is refused, never read past its end
 * (ASan); rows hold JSON values only, and a daemon's report is an object
 * or null. */
#include "../../gateway/gateway.h"

#include <stdint.h>
#include <stdlib.h>

gw_context gw;                     /* gateway/main.c's; nothing here reads it */

static void check_rows(json_t *rows, const char *report)
{
    size_t i;
    json_t *row;
    if (!json_is_array(rows))
        abort();
    json_array_foreach(rows, i, row) {
        json_t *status = json_object_get(row, report);
        if (!status || !(json_is_object(status) || json_is_null(status)))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_cluster_answer a;
    int rc = gw_admin_cluster_read((const char *)data, size, &a);
    if (!a.error || (rc < 0 && a.ok))
        abort();
    check_rows(a.nodes, "status");
    check_rows(a.daemons, "status");
    json_decref(a.nodes);
    json_decref(a.daemons);
    return 0;
}
