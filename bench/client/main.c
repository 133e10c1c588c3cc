/* main.c - pushgate-bench: load and delivery benchmarks for pushgate.
 *
 *   pushgate-bench connect ...   many authenticated browsers (connect.c)
 *   pushgate-bench publish ...   stamped work orders into the stream (publish.c)
 *   pushgate-bench -c C -n N -s tcp://... -f MODE   the seed's echo load tool (echo.c)
 *
 * Every mode reports one table (or with --json one JSON object) on stdout,
 * exits 0 when the run completed, 1 when it did not, 2 on a usage error. */
#include "bench.h"
#include "util.h"

#include <signal.h>
#include <string.h>

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "connect") == 0)
        return pb_connect_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "publish") == 0)
        return pb_publish_main(argc - 1, argv + 1);
    return pb_echo_main(argc, argv);
}
