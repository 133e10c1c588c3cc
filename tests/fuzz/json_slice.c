/* json_slice.c - fuzzes pg_json_member_slice (common/json_slice.c) against
 * jansson, whose parse the gateway trusts before it takes a slice.
 *
 * For any input jansson parses as an object, and for each of a few member
 * names: a slice that is found must parse to a value equal to the member in
 * jansson's tree; "absent" must mean the tree has no such member.  Only
 * "cannot tell" is allowed to say nothing (the caller then prints the tree's
 * value, as before).  For an array: pg_json_elements_next gives every
 * element, in order, each equal to the tree's.  On any text at all, neither
 * reads outside it. */
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

/* An array's elements: as many as the tree has, each equal to its own. */
static void check_elements(const char *text, size_t len, json_t *tree)
{
    pg_json_elements it;
    if (pg_json_elements_begin(&it, text, len) != 0)
        abort();
    const char *value;
    size_t value_len, i = 0;
    int rc;
    while ((rc = pg_json_elements_next(&it, &value, &value_len)) == PG_SLICE_FOUND) {
        json_t *again = json_loadb(value, value_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (value < text || value + value_len > text + len || !again ||
            !json_equal(again, json_array_get(tree, i++)))
            abort();
        json_decref(again);
    }
    if (rc != PG_SLICE_ABSENT || i != json_array_size(tree))
        abort();
}

/* Any text at all: the scan stays inside it (the consumer's looks_sendable
 * runs on text no parser has seen). */
static void scan_anything(const char *text, size_t len)
{
    const char *value;
    size_t value_len;
    if (pg_json_member_slice(text, len, "data", &value, &value_len) == PG_SLICE_FOUND &&
        (value < text || value + value_len > text + len))
        abort();
    pg_json_elements it;
    if (pg_json_elements_begin(&it, text, len) != 0)
        return;
    for (int i = 0; i < 64 && pg_json_elements_next(&it, &value, &value_len) == PG_SLICE_FOUND;
         i++)
        if (value < text || value + value_len > text + len)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    scan_anything(text, size);   /* libFuzzer's buffer ends at size: ASan sees past it */
    json_t *tree = json_loadb(text, size, JSON_ALLOW_NUL, NULL);
    if (json_is_array(tree))
        check_elements(text, size, tree);
    if (json_is_object(tree)) {
        static const char *const keys[] = {"remote_data", "a", "", "id", "url"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            check(text, size, tree, keys[i]);
    }
    json_decref(tree);
    return 0;
}
