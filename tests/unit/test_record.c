/* test_record.c - unit tests for common/record.c: what is written reads back
 * the same, and a record cut short or tampered with reads as malformed,
 * never past its end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "record.h"

static pg_rec_writer sample(void)
{
    pg_rec_writer w = {0};
    pg_rec_put_u8(&w, 7);
    pg_rec_put_u32(&w, 2);
    pg_rec_put_str(&w, "uuid-1");
    pg_rec_put_str(&w, NULL);
    pg_rec_put_strn(&w, "a\0b", 3);
    pg_rec_put_u64(&w, UINT64_MAX - 1);
    pg_rec_put_i64(&w, -42);
    assert_int_equal(pg_rec_written(&w), 0);
    return w;
}

static void what_is_written_reads_back(void **state)
{
    (void)state;
    pg_rec_writer w = sample();
    pg_rec_reader r = pg_rec_reader_of(w.data, w.len);
    size_t len = 99;
    assert_int_equal(pg_rec_u8(&r), 7);
    assert_int_equal(pg_rec_count(&r, 5), 2);
    assert_string_equal(pg_rec_str(&r, &len), "uuid-1");
    assert_int_equal(len, 6);
    assert_null(pg_rec_str(&r, &len));
    assert_int_equal(len, 0);
    assert_memory_equal(pg_rec_str(&r, &len), "a\0b", 3);
    assert_int_equal(len, 3);
    assert_true(pg_rec_u64(&r) == UINT64_MAX - 1);
    assert_true(pg_rec_i64(&r) == -42);
    assert_true(pg_rec_read_ok(&r));
    assert_int_equal(r.left, 0);
    pg_rec_writer_free(&w);
}

/* Every proper prefix of a record is malformed, and reading it to the end
 * returns zeros and NULLs rather than bytes beyond it. */
static void a_record_cut_short_is_malformed(void **state)
{
    (void)state;
    pg_rec_writer w = sample();
    for (size_t cut = 0; cut < w.len; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.data, cut);
        pg_rec_reader r = pg_rec_reader_of(copy, cut);
        pg_rec_u8(&r);
        pg_rec_count(&r, 5);
        pg_rec_str(&r, NULL);
        pg_rec_str(&r, NULL);
        pg_rec_str(&r, NULL);
        uint64_t u = pg_rec_u64(&r);
        int64_t i = pg_rec_i64(&r);
        assert_false(pg_rec_read_ok(&r));
        assert_true(i == 0);
        (void)u;
        free(copy);
    }
    pg_rec_writer_free(&w);
}

static void a_string_without_its_nul_is_malformed(void **state)
{
    (void)state;
    pg_rec_writer w = {0};
    pg_rec_put_str(&w, "abc");
    w.data[w.len - 1] = 'x';
    pg_rec_reader r = pg_rec_reader_of(w.data, w.len);
    assert_null(pg_rec_str(&r, NULL));
    assert_false(pg_rec_read_ok(&r));
    pg_rec_writer_free(&w);
}

/* A count larger than the rest of the record could hold is refused before
 * anyone allocates for it. */
static void a_count_beyond_the_record_is_refused(void **state)
{
    (void)state;
    pg_rec_writer w = {0};
    pg_rec_put_u32(&w, 1000000);
    pg_rec_put_u64(&w, 1);
    pg_rec_reader r = pg_rec_reader_of(w.data, w.len);
    assert_int_equal(pg_rec_count(&r, 8), 0);
    assert_false(pg_rec_read_ok(&r));
    r = pg_rec_reader_of(w.data, w.len);
    assert_int_equal(pg_rec_u32(&r), 1000000);   /* as a plain number it reads */
    assert_true(pg_rec_read_ok(&r));
    pg_rec_writer_free(&w);
}

static void a_writer_grows_past_its_first_buffer(void **state)
{
    (void)state;
    pg_rec_writer w = {0};
    for (uint32_t i = 0; i < 10000; i++)
        pg_rec_put_u32(&w, i);
    assert_int_equal(pg_rec_written(&w), 0);
    pg_rec_reader r = pg_rec_reader_of(w.data, w.len);
    for (uint32_t i = 0; i < 10000; i++)
        assert_int_equal(pg_rec_u32(&r), i);
    assert_true(pg_rec_read_ok(&r));
    pg_rec_writer_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(what_is_written_reads_back),
        cmocka_unit_test(a_record_cut_short_is_malformed),
        cmocka_unit_test(a_string_without_its_nul_is_malformed),
        cmocka_unit_test(a_count_beyond_the_record_is_refused),
        cmocka_unit_test(a_writer_grows_past_its_first_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
