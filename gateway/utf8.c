/* utf8.c - strict UTF-8 validation (see utf8.h). */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

int gw_utf8_valid(const void *data, size_t len)
{
    if (len == 0)
        return 1;                  /* data may be NULL (wslay's empty message): NULL + 0 is UB */
    const unsigned char *s = data, *end = s + len;
    while (s < end) {
        /* ASCII runs eight bytes at a time. */
        if ((size_t)(end - s) >= 8) {
            uint64_t w;
            memcpy(&w, s, 8);
            if ((w & UINT64_C(0x8080808080808080)) == 0) {
                s += 8;
                continue;
            }
        }
        unsigned c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {          /* 0xC0, 0xC1: overlong */
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {   /* 0xF5..: above U+10FFFF */
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;                          /* continuation byte or 0xF5..0xFF */
        }
        if ((size_t)(end - s) <= n)
            return 0;                          /* truncated */
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if (n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
            return 0;                          /* overlong or surrogate */
        if (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))
            return 0;                          /* overlong or out of range */
        s += n + 1;
    }
    return 1;
}

size_t gw_utf8_prefix(const void *data, size_t len, size_t max)
{
    const unsigned char *s = data;
    if (len <= max)
        return len;
    size_t n = max;
    /* Step back over continuation bytes to the start of the cut character. */
    while (n > 0 && (s[n] & 0xC0) == 0x80)
        n--;
    return n;
}
