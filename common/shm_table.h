/* shm_table.h - a fixed-size hash table in shared memory (Swoole\Table's idea).
 *
 * Rows have typed columns (64-bit int, double, fixed-size string) and a string
 * key of up to PG_TABLE_KEY_MAX bytes.  The table is created before fork with a
 * fixed capacity and never grows, so every process and thread of a node can use
 * it at the same addresses.  Each bucket has its own robust process-shared lock:
 * a process killed while holding one does not block the others (EOWNERDEAD is
 * recovered).  Operations copy values in and out; no pointer into the table is
 * handed out.
 *
 * Usage:
 *   pg_table *t = pg_table_new(1024);
 *   pg_table_column(t, "uuid", PG_TABLE_STRING, 64);
 *   pg_table_column(t, "hits", PG_TABLE_INT, 0);
 *   pg_table_create(t);                  // before fork
 *   char row[pg_table_row_size(t)] ...   // or malloc
 */
#ifndef PG_SHM_TABLE_H
#define PG_SHM_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define PG_TABLE_KEY_MAX 63

typedef enum {
    PG_TABLE_INT,     /* int64_t */
    PG_TABLE_FLOAT,   /* double */
    PG_TABLE_STRING,  /* up to size bytes, stored with its length */
} pg_table_type;

typedef struct pg_table pg_table;

/* capacity: the number of rows it can hold. NULL on bad capacity / no memory. */
pg_table *pg_table_new(uint32_t capacity);
/* Add a column before pg_table_create. size is used for STRING only.
 * Returns the column index, or -1 (bad name, duplicate, after create). */
int pg_table_column(pg_table *t, const char *name, pg_table_type type, uint32_t size);
/* Map the shared memory. 0 or -1. */
int pg_table_create(pg_table *t);
/* Unmap and free; call once per process that is done with it. */
void pg_table_destroy(pg_table *t);

int pg_table_column_index(const pg_table *t, const char *name);
uint32_t pg_table_capacity(const pg_table *t);
/* Rows in use now. */
uint32_t pg_table_count(const pg_table *t);
/* Bytes of one row's value buffer (what set/get copy). */
size_t pg_table_row_size(const pg_table *t);

/* Accessors for a row value buffer of pg_table_row_size bytes. */
void pg_table_row_set_int(const pg_table *t, void *row, int col, int64_t value);
void pg_table_row_set_float(const pg_table *t, void *row, int col, double value);
/* Truncates to the column size; returns the stored length. */
size_t pg_table_row_set_string(const pg_table *t, void *row, int col, const char *s, size_t len);
int64_t pg_table_row_get_int(const pg_table *t, const void *row, int col);
double pg_table_row_get_float(const pg_table *t, const void *row, int col);
/* Pointer into row and its length (not NUL-terminated in general). */
const char *pg_table_row_get_string(const pg_table *t, const void *row, int col, size_t *len);

/* Insert or replace the whole row. 0, or -1: key too long/empty, or table full. */
int pg_table_set(pg_table *t, const char *key, const void *row);
/* Copy the row out. 0 found, -1 missing. row may be NULL (exists test). */
int pg_table_get(pg_table *t, const char *key, void *row);
/* Add by to an INT column, creating the row (zeroed) if missing; *result gets the
 * new value when result is not NULL. 0, or -1 (full, bad key, not an INT column). */
int pg_table_incr(pg_table *t, const char *key, int col, int64_t by, int64_t *result);
int pg_table_incr_float(pg_table *t, const char *key, int col, double by, double *result);
/* 0 deleted, -1 missing. */
int pg_table_del(pg_table *t, const char *key);

/* Read, change and write key's row as one step under its bucket lock, for a
 * value that several processes change (a short list kept in a row, say).  fn
 * changes the row's values in place; when the key is missing they are zeroed
 * and found is 0.  fn must not use the table.  Returns fn's verdict, or -1:
 * bad key, or the key missing and the table full. */
typedef enum { PG_TABLE_KEEP, PG_TABLE_DELETE } pg_table_verdict;
typedef pg_table_verdict (*pg_table_update_fn)(void *row, int found, void *arg);
int pg_table_update(pg_table *t, const char *key, pg_table_update_fn fn, void *arg);

/* Calls fn for every row with a copy of its key and value (the bucket lock is
 * not held during fn, so fn may use the table).  fn returns non-zero to stop. */
typedef int (*pg_table_iter_fn)(const char *key, const void *row, void *arg);
void pg_table_iterate(pg_table *t, pg_table_iter_fn fn, void *arg);

#endif
