/* json_slice.c - fuzzes pg_json_member_slice (common/json_slice.c) against
 * jansson, whose parse the gateway trusts before it takes a slice.
 *
 * For any input jansson parses as an object, and for each of a few member
 * names: a slice that is found must parse to a value equal to the member in
 * jansson's tree; "absent" must mean the tree has no such member.  Only
 * "cannot tell" is allowed to say nothing (the caller then prints the tree's
 * value, as before). */
#include "json_slice.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

static void check(const char *text, size_t len, json_t *tree, const char *key)
{
    const char *value = NULL;
    size_t value_len = 0;
    int rc = pg_json_member_slice(text, len, key, &value, &value_len);
    json_t *member = json_object_get(tree, key);
    if (rc == PG_SLICE_ABSENT && member)
        abort();
    if (rc != PG_SLICE_FOUND)
        return;
    if (!member || value < text || value + value_len > text + len)
        abort();
    json_t *again = json_loadb(value, value_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!again || !json_equal(again, member))
        abort();
    json_decref(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    json_t *tree = json_loadb(text, size, JSON_ALLOW_NUL, NULL);
    if (json_is_object(tree)) {
        static const char *const keys[] = {"remote_data", "a", "", "id", "url"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            check(text, size, tree, keys[i]);
    }
    json_decref(tree);
    return 0;
}
