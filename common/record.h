/* record.h - fixed-layout records: how the processes of one node hand each
 * other structured data without JSON.
 *
 * A record is a flat byte string written field after field and read back
 * in the same order.  Integers are in host byte order (both ends are the
 * same binary on the same machine); a string is a 4-byte length, its bytes
 * and a NUL, so a reader hands out a C string that points into the record
 * and copies nothing; PG_REC_NULL as the length is a NULL string.
 *
 * The writer grows a heap buffer; should an allocation fail it stops
 * writing and pg_rec_written says so once, at the end.  The reader checks
 * every length against what is left: once a read would pass the end (or a
 * string lacks its NUL) it returns zeros and NULL from then on and
 * pg_rec_read_ok is false, so a caller reads a whole record and checks
 * once.  A record from another process is thus never trusted to be
 * well-formed, only to be bytes. */
#ifndef PG_RECORD_H
#define PG_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define PG_REC_NULL UINT32_MAX

typedef struct {
    char *data;
    size_t len, cap;
    int failed;          /* an allocation failed: the record is incomplete */
} pg_rec_writer;

void pg_rec_put_u8(pg_rec_writer *w, uint8_t v);
void pg_rec_put_u32(pg_rec_writer *w, uint32_t v);
void pg_rec_put_u64(pg_rec_writer *w, uint64_t v);
void pg_rec_put_i64(pg_rec_writer *w, int64_t v);
/* s NULL: a NULL string */
void pg_rec_put_str(pg_rec_writer *w, const char *s);
void pg_rec_put_strn(pg_rec_writer *w, const char *s, size_t len);
/* The fields another writer holds, as if written here: a part whose place
 * comes before fields known only once it is written. */
void pg_rec_put_part(pg_rec_writer *w, const pg_rec_writer *part);
/* A count of items not known yet: returns where it is, for pg_rec_count_one
 * after each item written. */
size_t pg_rec_put_count(pg_rec_writer *w);
void pg_rec_count_one(pg_rec_writer *w, size_t at);
/* 0 and the record in w->data[0..w->len), or -1 when it is incomplete. */
int pg_rec_written(const pg_rec_writer *w);
void pg_rec_writer_free(pg_rec_writer *w);

typedef struct {
    const char *at;
    size_t left;
    int bad;             /* a read passed the end: the record is malformed */
} pg_rec_reader;

pg_rec_reader pg_rec_reader_of(const char *data, size_t len);
uint8_t pg_rec_u8(pg_rec_reader *r);
uint32_t pg_rec_u32(pg_rec_reader *r);
uint64_t pg_rec_u64(pg_rec_reader *r);
int64_t pg_rec_i64(pg_rec_reader *r);
/* A string inside the record (NUL-terminated), or NULL: a NULL string or a
 * malformed record.  len (may be NULL) gets its length. */
const char *pg_rec_str(pg_rec_reader *r, size_t *len);
/* A count of items each at least min_bytes long: 0 when the rest of the
 * record cannot hold that many (the record is then bad), so that a
 * malformed count never sizes an allocation. */
uint32_t pg_rec_count(pg_rec_reader *r, size_t min_bytes);
/* Everything read was inside the record. */
int pg_rec_read_ok(const pg_rec_reader *r);
/* That, and nothing is left after what was read: the record was read whole. */
int pg_rec_read_whole(const pg_rec_reader *r);

#endif
