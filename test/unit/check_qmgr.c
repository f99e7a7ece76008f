/* check_qmgr.c - unit tests of qmgr's pure parts: the good-neighbour
 * controller against simulated receivers (deterministic clock). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "neighbour.h"

/* A receiver whose throughput grows by per_conn bytes/s with each connection
 * until the total reaches cap: the ideal concurrency is ceil(cap/per_conn). */
static double receiver_rate(int conns, double per_conn, double cap)
{
    double r = conns * per_conn;
    return r < cap ? r : cap;
}

/* run - drive g for seconds, delivering what the receiver allows; returns the
 * largest limit seen */
static int run(struct gn *g, int64_t *now, int seconds, double per_conn, double cap)
{
    int max_seen = g->limit;
    for (int t = 0; t < seconds * 10; t++) { /* 100 ms steps */
        *now += 100;
        gn_delivered(g, (uint64_t)(receiver_rate(g->limit, per_conn, cap) / 10));
        gn_tick(g, *now, true);
        if (g->limit > max_seen)
            max_seen = g->limit;
    }
    return max_seen;
}

START_TEST(test_ramps_then_holds_at_the_knee)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    ck_assert_int_eq(g.limit, GN_START);
    /* 100 KB/s per connection, 500 KB/s in all: 5 connections fill it. */
    run(&g, &now, 20, 100e3, 500e3);
    ck_assert_msg(g.phase == GN_HOLD, "phase %s, reason %s", gn_phase_name(g.phase), g.reason);
    ck_assert_msg(g.limit >= 5 && g.limit <= 8, "holding at %d: %s", g.limit, g.reason);
    ck_assert_msg(strstr(g.reason, "holding") != NULL, "%s", g.reason);
    /* While holding it never grows (it may only trim towards the knee). */
    int at = g.limit;
    int seen = run(&g, &now, GN_HOLD_MS / 1000, 100e3, 500e3);
    ck_assert_int_le(seen, at);
}
END_TEST

START_TEST(test_additive_after_hold_finds_exact_knee)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    run(&g, &now, 200, 100e3, 500e3); /* several hold / probe cycles */
    /* The probes settle on the smallest limit that reaches the cap, +1 at most
     * while probing. */
    ck_assert_msg(g.limit >= 5 && g.limit <= 6, "limit %d: %s", g.limit, g.reason);
    ck_assert(receiver_rate(g.limit, 100e3, 500e3) >= 500e3);
}
END_TEST

START_TEST(test_linear_receiver_goes_to_max)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 20, now);
    run(&g, &now, 20, 100e3, 1e12);
    ck_assert_int_eq(g.limit, 20);
}
END_TEST

START_TEST(test_throttle_backs_off_and_holds)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    run(&g, &now, 5, 100e3, 1e12);
    int before = g.limit;
    ck_assert_int_gt(before, 4);
    gn_throttled(&g, now, "421 4.7.0 too many connections from your IP");
    ck_assert_int_eq(g.limit, before / 2);
    ck_assert(g.phase == GN_HOLD);
    ck_assert_msg(strstr(g.reason, "421") != NULL, "%s", g.reason);
    run(&g, &now, GN_HOLD_MS / 1000 - 2, 100e3, 1e12);
    ck_assert_int_eq(g.limit, before / 2);
    gn_throttled(&g, now, "x");
    gn_throttled(&g, now, "x");
    gn_throttled(&g, now, "x");
    gn_throttled(&g, now, "x");
    gn_throttled(&g, now, "x");
    ck_assert_int_eq(g.limit, 1); /* never below one */
}
END_TEST

START_TEST(test_fixed_when_disabled)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, false, 12, now);
    ck_assert_int_eq(g.limit, 12);
    run(&g, &now, 10, 100e3, 200e3);
    ck_assert_int_eq(g.limit, 12);
    gn_throttled(&g, now, "421");
    ck_assert_int_eq(g.limit, 12);
    ck_assert(strstr(g.reason, "good_neighbor=no") != NULL);
    gn_configure(&g, true, 12, now); /* turned on by a reload */
    ck_assert_int_eq(g.limit, GN_START);
}
END_TEST

START_TEST(test_no_demand_no_change)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    for (int t = 0; t < 100; t++) {
        now += 100;
        gn_delivered(&g, 1000);
        gn_tick(&g, now, false); /* never backlogged */
    }
    ck_assert_int_eq(g.limit, GN_START);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("qmgr");
    TCase *tc = tcase_create("good neighbour");
    tcase_add_test(tc, test_ramps_then_holds_at_the_knee);
    tcase_add_test(tc, test_additive_after_hold_finds_exact_knee);
    tcase_add_test(tc, test_linear_receiver_goes_to_max);
    tcase_add_test(tc, test_throttle_backs_off_and_holds);
    tcase_add_test(tc, test_fixed_when_disabled);
    tcase_add_test(tc, test_no_demand_no_change);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
