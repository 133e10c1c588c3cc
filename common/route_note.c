/* route_note.c - the notes of the route feed (route_note.h): pure functions,
 * no state. */
#include "route_note.h"

#include <stdio.h>
#include <string.h>

/* A part of a note: 1..max bytes, none of them a space or a control byte. */
static int take_part(const char *s, size_t len, char *out, size_t max)
{
    if (len == 0 || len > max)
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

int pg_route_note_parse(const char *text, size_t len, pg_route_note *note)
{
    memset(note, 0, sizeof(*note));
    if (len < 3 || text[1] != ' ')
        return -1;
    note->kind = text[0];
    const char *rest = text + 2, *space = memchr(rest, ' ', len - 2);
    size_t first = space ? (size_t)(space - rest) : len - 2;
    if (note->kind == 'h')
        return space ? -1 : take_part(rest, first, note->node_id, PG_NODE_ID_MAX);
    if (note->kind != 'u' || take_part(rest, first, note->uuid, PG_UUID_MAX) < 0)
        return -1;
    if (!space)
        return 0;
    return take_part(space + 1, len - 2 - first - 1, note->node_id, PG_NODE_ID_MAX);
}

int pg_route_note_format(char *out, const char *uuid, const char *node_id)
{
    size_t u = strlen(uuid), n = node_id ? strlen(node_id) : 0;
    if (u == 0 || u > PG_UUID_MAX || n > PG_NODE_ID_MAX || (node_id && n == 0))
        return -1;
    return node_id ? snprintf(out, PG_ROUTE_NOTE_MAX, "u %s %s", uuid, node_id)
                   : snprintf(out, PG_ROUTE_NOTE_MAX, "u %s", uuid);
}

uint64_t pg_route_uuid_hash(const char *uuid, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);     /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)uuid[i]) * UINT64_C(0x100000001b3);
    h ^= h >> 29;
    return h ? h : 1;
}
