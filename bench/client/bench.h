/* bench.h - the modes of pushgate-bench, one file each:
 *   connect.c  many authenticated browsers; delivery, latency, reconnects
 *   publish.c  work orders into the Redis Stream, stamped for latency
 *   echo.c     the seed's load tool against the echo examples
 * Each takes the arguments after its name and returns the exit code. */
#ifndef PB_BENCH_H
#define PB_BENCH_H

int pb_connect_main(int argc, char **argv);
int pb_publish_main(int argc, char **argv);
int pb_echo_main(int argc, char **argv);

#endif
