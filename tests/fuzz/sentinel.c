/* sentinel.c - fuzzes what common/redis_sentinel.c reads from sentinels and
 * Redis servers.  The bytes go through hiredis's reader, as the daemons'
 * links and pushgate-ctl feed it, and every reply it builds is read as an
 * answer to SENTINEL get-master-addr-by-name and to ROLE; the bytes are also
 * read as a +switch-master message and, up to the first NUL, as the setting
 * redis_sentinels.  Whatever is taken must be an address that can be used
 * (a host of 1 to 255 allowed characters, a port in 1..65535); whatever is
 * refused must come with a printable reason for the log. */
#include "redis_sentinel.h"

#include "redis_reader.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_reply(const redisReply *r)
{
    pg_redis_addr a;
    char why[512];
    why[0] = '\0';
    if (pg_redis_master_reply(r, &a, why, sizeof(why)) == 0)
        fuzz_check_addr(&a);
    else
        fuzz_check_reason(why);
    why[0] = '\0';
    if (!pg_redis_role_is_primary(r, why, sizeof(why)))
        fuzz_check_reason(why);
}

static void check_texts(const uint8_t *data, size_t size)
{
    pg_redis_addr a;
    int rc = pg_redis_switch_parse((const char *)data, size, "pushgate", &a);
    if (rc == 1)
        fuzz_check_addr(&a);
    char *text = malloc(size + 1);
    if (!text)
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    pg_redis_addr addrs[PG_REDIS_SENTINELS_MAX];
    char err[256] = "";
    int n = pg_redis_addrs_parse(text, addrs, PG_REDIS_SENTINELS_MAX, err, sizeof(err));
    if (n < 0)
        fuzz_check_reason(err);
    for (int i = 0; i < n; i++)
        fuzz_check_addr(&addrs[i]);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_each_reply(data, size, check_reply);
    check_texts(data, size);
    return 0;
}
