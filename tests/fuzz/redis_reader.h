/* redis_reader.h - what the fuzz targets of Redis replies share: the input
 * goes through hiredis's reader, as the daemons' links feed it, each reply
 * it builds is handed to the target's check, and what the parsers take or
 * refuse is checked the same way. */
#ifndef PG_FUZZ_REDIS_READER_H
#define PG_FUZZ_REDIS_READER_H

#include "redis_sentinel.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_ARRAY_MAX 65536

/* hiredis allocates an array's table of elements when it reads the header,
 * so "*999999999" is an 8 GB calloc that libFuzzer reports as out of memory
 * before any code of ours runs (in a daemon it is address space never
 * touched, freed when the connect timeout ends the attempt): such inputs
 * are skipped. */
static int fuzz_huge_array(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (data[i] != '*')
            continue;
        unsigned long long n = 0;
        for (size_t j = i + 1; j < size && data[j] >= '0' && data[j] <= '9'; j++)
            if ((n = n * 10 + (data[j] - '0')) > FUZZ_ARRAY_MAX)
                return 1;
    }
    return 0;
}

/* What a parser took: a host of allowed, printable characters and a port. */
static void fuzz_check_addr(const pg_redis_addr *a)
{
    size_t n = strnlen(a->host, sizeof(a->host));
    if (n == 0 || n >= sizeof(a->host) || a->port < 1 || a->port > 65535)
        abort();
    for (size_t i = 0; i < n; i++)
        if (a->host[i] <= ' ' || a->host[i] >= 0x7f)
            abort();
}

/* What a parser refused: a reason fit for a log line. */
static void fuzz_check_reason(const char *why)
{
    if (!*why)
        abort();
    for (const char *p = why; *p; p++)
        if (*p < ' ' || *p >= 0x7f)
            abort();
}

/* Every reply in data (at most 64), each to check. */
static void fuzz_each_reply(const uint8_t *data, size_t size, void (*check)(const redisReply *))
{
    if (fuzz_huge_array(data, size))
        return;
    redisReader *rd = redisReaderCreate();
    if (!rd)
        return;
    if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
        void *reply = NULL;
        for (int i = 0; i < 64 && redisReaderGetReply(rd, &reply) == REDIS_OK && reply; i++) {
            check(reply);
            freeReplyObject(reply);
            reply = NULL;
        }
    }
    redisReaderFree(rd);
}

#endif
