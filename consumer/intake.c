/* intake.c - checking an entry read from the stream before any gateway sees it.
 *
 * A malformed entry (no msg field, msg not JSON or not an object, url,
 * chat_token or data missing, too large) can never succeed, so it goes to
 * the dead-letter stream at once with its reason instead of being retried.
 * A good one gets its request built once: the producer's object plus
 * "msg_id": <entry id> (message format 2 of DESIGN.md).  An entry put back
 * by pushgate-ctl dead replay carries its original entry id in a field
 * msg_id, which is then the request's msg_id instead, so that browsers and
 * gateways that had the message already drop the copy.
 *
 * The usual entry is checked on its text alone (looks_sendable), without
 * a parsed tree: the gateway that gets it parses it in full anyway, and
 * refuses text that is not JSON with a final code, which makes it a dead
 * letter all the same (flow.c).  Parsing it here as well was two fifths of
 * the consumer's time.  Only an entry the text alone cannot settle is
 * parsed here, for its precise reason. */
#include "consumer.h"

#include "json_slice.h"
#include "log.h"
#include "route_note.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKSHEET_URL "/worksheet/send-message"

/* The value of field name in a [field, value, ...] array, or NULL. */
static const redisReply *field_value(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, name) == 0)
            return fields->element[i + 1];
    }
    return NULL;
}

/* Every field but skip (NULL: none) as a JSON object, so a dead letter
 * keeps what is not in its msg field. */
static char *fields_json(const redisReply *fields, const char *skip)
{
    json_t *o = json_object();
    for (size_t i = 0; fields && fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements;
         i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            !(skip && strcmp(k->str, skip) == 0))
            json_object_set_new(o, k->str, json_stringn_nocheck(v->str, v->len));
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* NULL when the request looks sendable, else the reason. */
static const char *check_request(json_t *req)
{
    const char *url = json_string_value(json_object_get(req, "url"));
    const char *token = json_string_value(json_object_get(req, "chat_token"));
    json_t *data = json_object_get(req, "data");
    if (!url)
        return "malformed: url is missing";
    if (strcmp(url, WORKSHEET_URL) != 0)
        return "malformed: url is not " WORKSHEET_URL;
    if (!token || !*token)
        return "malformed: chat_token is missing";
    if (!data)
        return "malformed: data is missing";
    if (!json_is_array(data) || json_array_size(data) == 0)
        return "malformed: data is not a non-empty array";
    return NULL;
}

/* A number of 1 to 20 digits within 64 bits at s; its length, or 0. */
static size_t number_len(const char *s, size_t len)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (i == 20 || v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    return i;
}

/* "<ms>-<seq>": a stream entry id. */
static bool is_stream_id(const char *s, size_t len)
{
    size_t a = number_len(s, len);
    return a > 0 && a < len && s[a] == '-' && number_len(s + a + 1, len - a - 1) == len - a - 1;
}

/* What a msg_id field may hold: a stream entry id, or one with a shard's
 * tag ("<ms>-<seq>@<shard>", the key of an entry of a set of streams). */
static bool is_msg_id(const char *s, size_t len)
{
    const char *at = memchr(s, '@', len);
    if (!at)
        return is_stream_id(s, len);
    size_t a = (size_t)(at - s), t = len - a - 1;
    return is_stream_id(s, a) && t >= 1 && t <= 4 && number_len(at + 1, t) == t;
}

/* The request's msg_id into id (CS_ID_MAX bytes): the entry's field msg_id
 * when it has one (a replayed entry), else its key (its own id, plus its
 * shard's tag with several streams).  The field is input
 * like any other: when it is not a stream entry id the entry is malformed
 * (-1, e DEAD). */
static int take_msg_id(cs_entry *e, const redisReply *fields, char *id)
{
    const redisReply *v = field_value(fields, "msg_id");
    if (!v) {
        snprintf(id, CS_ID_MAX, "%s", e->key);
        return 0;
    }
    if (v->type != REDIS_REPLY_STRING || !is_msg_id(v->str, v->len)) {
        cs_flow_dead(e, "malformed: msg_id is not a stream entry id");
        return -1;
    }
    memcpy(id, v->str, v->len + 1);
    return 0;
}

/* msg_id as a JSON string at out (room: 6 * strlen + 3 bytes): an entry id
 * (digits, '-', '@') is copied between quotes; anything else Redis gave is
 * escaped by jansson.  Its length, or 0. */
static size_t msg_id_json(const char *msg_id, char *out, size_t room)
{
    size_t n = strlen(msg_id);
    if (strspn(msg_id, "0123456789-@") == n) {
        out[0] = '"';
        memcpy(out + 1, msg_id, n);
        out[n + 1] = '"';
        return n + 2;
    }
    json_t *id = json_string(msg_id);
    size_t len = id ? json_dumpb(id, out, room, JSON_ENCODE_ANY) : 0;
    json_decref(id);
    return len <= room ? len : 0;
}

/* e->msg with "handoff": true (with wait_for_acks: the browsers' ACKs are
 * waited for) and "msg_id": msg_id added as its last members, so that a
 * producer's own are overridden (a parser keeps the last of duplicate
 * keys), and so that a gateway can name msg_id in its refusal of text that
 * is not JSON (gateway/internal.c).  The text is spliced rather than
 * printed again from a parsed object.  Text that is not an object's stays
 * invalid: the members take the place of the closing brace, so the result
 * is JSON only where the text was. */
static char *request_text(const cs_entry *e, const char *msg_id, size_t *len)
{
    static const char handoff[] = ",\"handoff\":true";
    size_t end = e->msg_len;
    while (end > 0 && strchr(" \t\r\n", e->msg[end - 1]))
        end--;
    size_t room = 6 * strlen(msg_id) + 3;   /* a six-byte \u escape per byte at worst */
    char *body = end > 0 && e->msg[end - 1] == '}' ? malloc(end + sizeof(handoff) + room + 16)
                                                   : NULL;
    if (!body)
        return NULL;
    size_t at = end - 1;
    memcpy(body, e->msg, at);
    if (cs.cfg.wait_for_acks) {
        memcpy(body + at, handoff, sizeof(handoff) - 1);
        at += sizeof(handoff) - 1;
    }
    at += (size_t)sprintf(body + at, ",\"msg_id\":");
    size_t id_len = msg_id_json(msg_id, body + at, room);
    if (id_len == 0) {
        free(body);
        return NULL;
    }
    at += id_len;
    body[at++] = '}';
    body[at] = '\0';
    *len = at;
    return body;
}

/* The producer's url, as PHP's json_encode writes it (slashes escaped) or
 * not. */
static bool is_worksheet_url(const char *value, size_t len)
{
    static const char plain[] = "\"" WORKSHEET_URL "\"";
    static const char escaped[] = "\"\\/worksheet\\/send-message\"";
    return (len == sizeof(plain) - 1 && memcmp(value, plain, len) == 0) ||
           (len == sizeof(escaped) - 1 && memcmp(value, escaped, len) == 0);
}

/* check_request's checks on the text alone: true when url, chat_token and
 * data look right, with *hint_key from the first entry's uuid (0: none).
 * The text itself is not validated (json_slice.c stays within it whatever
 * it holds); false when it cannot tell, and the caller parses. */
static bool looks_sendable(const char *msg, size_t len, uint64_t *hint_key)
{
    const char *v, *first;
    size_t n, first_len;
    pg_json_elements data;
    if (pg_json_member_slice(msg, len, "url", &v, &n) != PG_SLICE_FOUND ||
        !is_worksheet_url(v, n) ||
        pg_json_member_slice(msg, len, "chat_token", &v, &n) != PG_SLICE_FOUND || n < 3 ||
        v[0] != '"' || v[n - 1] != '"' ||
        pg_json_member_slice(msg, len, "data", &v, &n) != PG_SLICE_FOUND ||
        pg_json_elements_begin(&data, v, n) != 0 ||
        pg_json_elements_next(&data, &first, &first_len) != PG_SLICE_FOUND)
        return false;
    *hint_key = 0;
    if (pg_json_member_slice(first, first_len, "uuid", &v, &n) == PG_SLICE_FOUND && n >= 2 &&
        v[0] == '"' && v[n - 1] == '"' && !memchr(v, '\\', n))
        *hint_key = pg_route_uuid_hash(v + 1, n - 2);
    return true;
}

/* Why e->msg cannot be sent, from its parsed tree (NULL: it can), with
 * e->hint_key set. */
static const char *parsed_problem(cs_entry *e, char *why, size_t why_size)
{
    json_error_t err;
    json_t *req = json_loadb(e->msg, e->msg_len, 0, &err);
    const char *problem = NULL;
    if (!req) {
        snprintf(why, why_size, "malformed: msg is not JSON: %s", err.text);
        return why;
    }
    if (!json_is_object(req))
        problem = "malformed: msg is not a JSON object";
    else
        problem = check_request(req);
    if (!problem) {
        json_t *uuid = json_object_get(json_array_get(json_object_get(req, "data"), 0), "uuid");
        e->hint_key = json_is_string(uuid) ? pg_route_uuid_hash(json_string_value(uuid),
                                                                json_string_length(uuid)) : 0;
    }
    json_decref(req);
    return problem;
}

/* Builds e->body from e->msg and msg_id. 0, or -1 with e DEAD. */
static int build_body(cs_entry *e, const char *msg_id)
{
    char why[256];
    bool looked = looks_sendable(e->msg, e->msg_len, &e->hint_key);
    const char *problem = looked ? NULL : parsed_problem(e, why, sizeof(why));
    if (!problem && !(e->body = request_text(e, msg_id, &e->body_len))) {
        /* text that looked right but does not end its object: say why */
        problem = looked ? parsed_problem(e, why, sizeof(why)) : NULL;
        if (!problem)
            problem = "msg_id cannot be added (out of memory)";
    }
    if (problem) {
        cs_flow_dead(e, "%s", problem);
        return -1;
    }
    return 0;
}

/* Copies the msg field into e; -1 (e DEAD) when there is none or it is too
 * big.  A replayed entry (with a field msg_id) keeps its other fields in
 * e->fields, so that its dead letter, should it die again, still names the
 * original id. */
static int take_msg(cs_entry *e, const redisReply *fields)
{
    const redisReply *msg = field_value(fields, "msg");
    if (!msg || msg->type != REDIS_REPLY_STRING) {
        e->fields = fields_json(fields, NULL);
        cs_flow_dead(e, "malformed: no msg field");
        return -1;
    }
    if (field_value(fields, "msg_id"))
        e->fields = fields_json(fields, "msg");
    e->msg = malloc(msg->len + 1);
    if (!e->msg) {
        cs_flow_dead(e, "out of memory reading msg");
        return -1;
    }
    memcpy(e->msg, msg->str, msg->len);
    e->msg[msg->len] = '\0';
    e->msg_len = msg->len;
    if (msg->len > cs.cfg.max_message_size) {
        cs_flow_dead(e, "msg is %zu bytes, over max_message_size %zu", msg->len,
                     cs.cfg.max_message_size);
        return -1;
    }
    return 0;
}

void cs_intake(cs_shard *s, const redisReply *item, long long deliveries)
{
    if (!item || item->type != REDIS_REPLY_ARRAY || item->elements < 2 ||
        item->element[0]->type != REDIS_REPLY_STRING) {
        pg_error("unexpected stream entry shape from Redis: skipped");
        return;
    }
    const char *id = item->element[0]->str;
    if (cs_entry_find(s, id))
        return; /* held already (reclaimed while we work on it) */
    cs_entry *e = cs_entry_new(s, id);
    if (!e) {
        pg_error("entry %s cannot be held (out of memory or id too long): left pending", id);
        return;
    }
    e->deliveries = deliveries;
    e->touched_ms = cs_now_ms();
    char msg_id[CS_ID_MAX];
    if (take_msg(e, item->element[1]) < 0 || take_msg_id(e, item->element[1], msg_id) < 0 ||
        build_body(e, msg_id) < 0)
        return;
    snprintf(e->msg_id, sizeof(e->msg_id), "%s", msg_id);
    if (deliveries > 0)
        cs_flow_counted(e, deliveries);
    else
        cs_stream_count(e);
}
