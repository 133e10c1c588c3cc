/* json_out.c - see json_out.h. */
#include "json_out.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

static int add_to_buffer(const char *text, size_t size, void *buffer)
{
    return evbuffer_add(buffer, text, size);
}

int pg_json_put(struct evbuffer *out, json_t *v, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int rc = evbuffer_add_vprintf(out, format, ap) < 0 ? -1 : 0;
    va_end(ap);
    if (rc == 0 && v)
        rc = json_dump_callback(v, add_to_buffer, out, JSON_COMPACT | JSON_ENCODE_ANY);
    return rc;
}

int pg_json_plain(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

int pg_json_put_str(struct evbuffer *out, const char *s, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int rc = evbuffer_add_vprintf(out, format, ap) < 0 ? -1 : 0;
    va_end(ap);
    size_t n = s ? strlen(s) : 0;
    if (rc < 0 || !s)
        return rc < 0 || evbuffer_add(out, "null", 4) < 0 ? -1 : 0;
    if (pg_json_plain(s, n))
        return evbuffer_add(out, "\"", 1) < 0 || evbuffer_add(out, s, n) < 0 ||
                       evbuffer_add(out, "\"", 1) < 0
                   ? -1
                   : 0;
    json_t *v = json_stringn(s, n);   /* NULL: not UTF-8 */
    rc = v ? json_dump_callback(v, add_to_buffer, out, JSON_COMPACT | JSON_ENCODE_ANY) : -1;
    json_decref(v);
    return rc;
}

int pg_json_frame(struct evbuffer *out, struct evbuffer *body)
{
    size_t len = evbuffer_get_length(body);
    unsigned char head[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len};
    /* the head goes in front of the body, then both move to out in one
     * step: a frame is queued whole or not at all */
    if (len > UINT32_MAX || evbuffer_prepend(body, head, 4) < 0)
        return -1;
    return evbuffer_add_buffer(out, body);
}
