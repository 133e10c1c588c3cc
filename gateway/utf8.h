/* utf8.h - strict UTF-8 checks for WebSocket text (RFC 3629 / RFC 6455 8.1):
 * no overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF. */
#ifndef GW_UTF8_H
#define GW_UTF8_H

#include <stddef.h>

/* 1 when data[0..len) is valid UTF-8, else 0 (an empty string is valid). */
int gw_utf8_valid(const void *data, size_t len);

/* The longest prefix of data[0..len), at most max bytes, that does not cut a
 * character in two (for truncating valid UTF-8 text). */
size_t gw_utf8_prefix(const void *data, size_t len, size_t max);

#endif
