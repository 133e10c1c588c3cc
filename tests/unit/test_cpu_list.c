/* test_cpu_list.c - unit tests for common/cpu_list.c: the setting
 * cpu_affinity, read from a config file or the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_list.h"

static int cpus_of(const char *text, cpu_set_t *set)
{
    char err[128];
    return pg_cpu_list_parse(text, set, err, sizeof(err));
}

static void reads_numbers_ranges_and_lists(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(cpus_of("0", &set), 0);
    assert_int_equal(CPU_COUNT(&set), 1);
    assert_true(CPU_ISSET(0, &set));

    assert_int_equal(cpus_of("0-3,6", &set), 0);
    assert_int_equal(CPU_COUNT(&set), 5);
    assert_true(CPU_ISSET(3, &set) && CPU_ISSET(6, &set) && !CPU_ISSET(4, &set));

    assert_int_equal(cpus_of(" 1 , 5-5 ,2", &set), 0);
    assert_int_equal(CPU_COUNT(&set), 3);
    assert_true(CPU_ISSET(1, &set) && CPU_ISSET(2, &set) && CPU_ISSET(5, &set));

    assert_int_equal(cpus_of("1023", &set), 0);
    assert_true(CPU_ISSET(1023, &set));
}

static void refuses_what_is_not_a_list(void **state)
{
    (void)state;
    const char *bad[] = {"", " ", ",", "0,", ",0", "0,,1", "a", "0x1", "-1", "1-", "-",
                         "3-1", "1-2-3", "0 1", "1024", "99999999999999999999", "0;1", "+1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cpu_set_t set;
        char err[128] = "";
        assert_int_equal(pg_cpu_list_parse(bad[i], &set, err, sizeof(err)), -1);
        assert_int_equal(CPU_COUNT(&set), 0);
        assert_non_null(strstr(err, "cpu_affinity"));
    }
}

static void applies_to_the_calling_process(void **state)
{
    (void)state;
    char err[128];
    cpu_set_t before, now;
    assert_int_equal(sched_getaffinity(0, sizeof(before), &before), 0);
    int cpu = -1;
    for (int i = 0; i < CPU_SETSIZE && cpu < 0; i++)
        if (CPU_ISSET(i, &before))
            cpu = i;
    char text[16];
    snprintf(text, sizeof(text), "%d", cpu);

    assert_int_equal(pg_cpu_affinity_apply("", err, sizeof(err)), 0);
    assert_int_equal(pg_cpu_affinity_apply(NULL, err, sizeof(err)), 0);
    assert_int_equal(pg_cpu_affinity_apply(text, err, sizeof(err)), 0);
    assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
    assert_int_equal(CPU_COUNT(&now), 1);
    assert_true(CPU_ISSET(cpu, &now));

    /* a CPU this machine does not have: refused, and nothing changed */
    assert_int_equal(pg_cpu_affinity_apply("1023", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "none of these CPUs"));
    assert_int_equal(pg_cpu_affinity_apply("x", err, sizeof(err)), -1);
    assert_int_equal(sched_getaffinity(0, sizeof(now), &now), 0);
    assert_int_equal(CPU_COUNT(&now), 1);

    assert_int_equal(sched_setaffinity(0, sizeof(before), &before), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_numbers_ranges_and_lists),
        cmocka_unit_test(refuses_what_is_not_a_list),
        cmocka_unit_test(applies_to_the_calling_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
