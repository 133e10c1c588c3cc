/* json_slice.h - where a member's value lies in the text of a JSON object.
 *
 * A value that only travels on (a cross-node push's remote_data, the event
 * a browser gets) need not be printed again from the parsed tree: its bytes
 * in the request are the JSON text to send.  This finds them.
 *
 * Contract: on text that jansson has parsed already (json_loadb without
 * JSON_REJECT_DUPLICATES) the answer is the one jansson's tree has: the last
 * member of that name at the top level.  A member name written with escapes
 * ("remote\u005fdata") cannot be compared as bytes, so the answer is then
 * "cannot tell" and the caller prints the value from the tree as before.
 * Nothing here validates: on any other text the answer means nothing, but
 * the scan never reads outside text[0..len) (the consumer looks at a
 * producer's text this way before a gateway parses it). */
#ifndef PG_JSON_SLICE_H
#define PG_JSON_SLICE_H

#include <stddef.h>

enum { PG_SLICE_FOUND = 0, PG_SLICE_ABSENT = 1, PG_SLICE_UNKNOWN = -1 };

/* The value of the top-level member key of the object in text[0..len):
 * PG_SLICE_FOUND with *value, *value_len its bytes; PG_SLICE_ABSENT; or
 * PG_SLICE_UNKNOWN (not an object, or a member name with escapes). */
int pg_json_member_slice(const char *text, size_t len, const char *key, const char **value,
                         size_t *value_len);

/* The elements of an array's text, in order, as jansson's tree has them
 * (same contract: text parsed by jansson already). */
typedef struct {
    const char *p, *end;
} pg_json_elements;

/* Starts at the array in text[0..len): 0, or PG_SLICE_UNKNOWN (not an array). */
int pg_json_elements_begin(pg_json_elements *it, const char *text, size_t len);
/* The next element: PG_SLICE_FOUND with *value, *value_len its bytes;
 * PG_SLICE_ABSENT past the last; PG_SLICE_UNKNOWN (malformed text). */
int pg_json_elements_next(pg_json_elements *it, const char **value, size_t *value_len);

#endif
