/* check_qmgr.c - unit tests of qmgr's pure parts: the good-neighbour
 * controller against simulated receivers (deterministic clock): one whose
 * rate flattens, one that is linear, and one with a connection limit that
 * answers 421 above it while its rate still rises (issue 5). */
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

/* A doubling that adds a little (4 -> 8 connections: +15%) passed the old
 * 10% test and doubled on to 16; now the new connections must each carry
 * half of what the old ones did, so it goes back to 4 and on one at a time. */
START_TEST(test_weak_doubling_ends_slow_start)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    int seen = run(&g, &now, 20, 100e3, 460e3);
    ck_assert_int_le(seen, 8);
    ck_assert_msg(g.phase == GN_HOLD && g.limit == 5, "limit %d (%s): %s", g.limit, gn_phase_name(g.phase), g.reason);
    ck_assert_msg(strstr(g.reason, "going to 6 added only") != NULL, "%s", g.reason);
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

/* A receiver with a connection limit (issue 5, scenario 2): it answers 421
 * to a connection beyond its limit while each connection still adds per_conn
 * bytes/s up to cap. The sender opens connections up to g->limit at once;
 * each refused one is reported twice, as the delivery agent does (the site
 * as unreachable, then the recipient's 421). With rotate_every, every that
 * many 100 ms steps one connection is replaced, and the receiver still counts
 * the old one while the new one opens (a sender that says QUIT and moves on
 * without waiting for the reply). */
struct rcv {
    int limit;
    double per_conn, cap;
    int rotate_every;
    int open;
    long steps;
    int refused;
};

static void refuse(struct rcv *r, struct gn *g, int64_t now)
{
    r->refused++;
    gn_throttled(g, now, "421 4.7.0 too many connections");
    gn_throttled(g, now, "421 4.7.0 too many connections");
}

/* rcv_run - drive g against r for seconds; returns the largest limit seen */
static int rcv_run(struct gn *g, int64_t *now, struct rcv *r, int seconds)
{
    int max_seen = g->limit;
    for (int t = 0; t < seconds * 10; t++) {
        *now += 100;
        if (r->open > g->limit)
            r->open = g->limit; /* jobs finish, their slots are not refilled */
        int want = g->limit - r->open;
        for (int i = 0; i < want; i++) {
            if (r->open < r->limit)
                r->open++;
            else
                refuse(r, g, *now);
        }
        r->steps++;
        if (r->rotate_every && r->steps % r->rotate_every == 0 && r->open >= r->limit) {
            refuse(r, g, *now); /* the replacement: the old one still counts */
            r->open--;
        }
        gn_delivered(g, (uint64_t)(receiver_rate(r->open, r->per_conn, r->cap) / 10));
        gn_tick(g, *now, true);
        if (g->limit > max_seen)
            max_seen = g->limit;
    }
    return max_seen;
}

/* settle - run until g holds at a ceiling (at most 200 s); returns the
 * refusals so far */
static int settle(struct gn *g, int64_t *now, struct rcv *r)
{
    for (int s = 0; s < 200 && !(g->phase == GN_HOLD && g->ceiling > 0 && g->limit == g->ceiling); s++)
        rcv_run(g, now, r, 1);
    return r->refused;
}

/* The receiver of bench scenario 2: 160 KB/s per connection up to 2 MB/s, so
 * the rate still rises where the connection limit stops it. For every limit
 * N, on a slow-start boundary or not: the limit settles at N (the ceiling),
 * never goes above it during the ceiling's hold, and nothing is refused
 * after it settled. */
START_TEST(test_limit_binds_before_the_rate_flattens)
{
    int n = _i;
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    struct rcv r = {.limit = n, .per_conn = 160e3, .cap = 2e6};
    int refused = settle(&g, &now, &r);
    ck_assert_msg(g.limit == n, "N=%d: limit %d: %s", n, g.limit, g.reason);
    ck_assert_msg(g.ceiling == n, "N=%d: ceiling %d: %s", n, g.ceiling, g.reason);
    ck_assert_msg(strstr(g.reason, "ceiling") != NULL, "N=%d: %s", n, g.reason);
    ck_assert_msg(now < GN_HOLD_MS + 15000, "N=%d: settled only at %lld ms", n, (long long)now);
    /* It found N with a few refused connections: one slow-start overshoot and
     * the one its search met. */
    ck_assert_msg(refused <= n + 1, "N=%d: %d refused", n, refused);
    int64_t hold_end = g.ceiling_until;
    int seen = rcv_run(&g, &now, &r, (int)((hold_end - now) / 1000) - 1);
    ck_assert_msg(seen <= n, "N=%d: went to %d during the hold", n, seen);
    ck_assert_msg(r.refused == refused, "N=%d: %d refused after settling", n, r.refused - refused);
    ck_assert_msg(g.limit == n, "N=%d: limit %d at the end of the hold: %s", n, g.limit, g.reason);
}
END_TEST

/* The same receiver keeps its limit: after the hold the ceiling decays and a
 * probe finds it again, now held twice as long; the refusals stay rare. */
START_TEST(test_same_ceiling_found_again_holds_longer)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    struct rcv r = {.limit = 6, .per_conn = 160e3, .cap = 2e6};
    settle(&g, &now, &r);
    ck_assert_int_eq(g.ceiling_hold, GN_CEILING_HOLD_MS);
    int refused = r.refused;
    /* 5 min hold, then the ceiling rises to 7 and the next probe meets a 421 */
    int seen = rcv_run(&g, &now, &r, (GN_CEILING_HOLD_MS + GN_CEILING_DECAY_MS + 2 * GN_HOLD_MS) / 1000 + 10);
    ck_assert_int_le(seen, 7);
    ck_assert_msg(r.refused - refused == 1, "%d refused: %s", r.refused - refused, g.reason);
    ck_assert_int_eq(g.limit, 6);
    ck_assert_int_eq(g.ceiling, 6);
    ck_assert_int_eq(g.ceiling_hold, 2 * GN_CEILING_HOLD_MS);
    /* an hour: one probe per (doubling) hold, at most */
    refused = r.refused;
    seen = rcv_run(&g, &now, &r, 3600);
    ck_assert_int_le(seen, 7);
    ck_assert_msg(r.refused - refused <= 3, "%d refused in an hour", r.refused - refused);
    ck_assert_int_eq(g.ceiling_hold, GN_CEILING_HOLD_MAX_MS);
}
END_TEST

/* The receiver raised its limit: once the ceiling decays the limit rises
 * again, up to the new limit. */
START_TEST(test_ceiling_decays_to_a_raised_limit)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    struct rcv r = {.limit = 6, .per_conn = 160e3, .cap = 2e6};
    settle(&g, &now, &r);
    ck_assert_int_eq(g.limit, 6);
    r.limit = 9;
    /* still the old ceiling while it holds */
    int seen = rcv_run(&g, &now, &r, (int)((g.ceiling_until - now) / 1000) - 1);
    ck_assert_int_le(seen, 6);
    /* then one more a minute, at most: 9 within 3 more minutes or so */
    rcv_run(&g, &now, &r, 6 * GN_CEILING_DECAY_MS / 1000);
    ck_assert_msg(g.limit >= 8 && g.limit <= 9, "limit %d: %s", g.limit, g.reason);
    rcv_run(&g, &now, &r, 20 * 60);
    ck_assert_msg(g.limit == 9, "limit %d: %s", g.limit, g.reason);
}
END_TEST

/* The time a domain had no traffic counts for the decay: back after 20 idle
 * minutes, the ceiling has risen as if the minutes had been ticked. */
START_TEST(test_decay_counts_idle_time)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    struct rcv r = {.limit = 6, .per_conn = 160e3, .cap = 2e6};
    settle(&g, &now, &r);
    ck_assert_int_eq(g.ceiling, 6);
    now = g.ceiling_until + 3 * GN_CEILING_DECAY_MS + 1; /* no gn_tick meanwhile */
    gn_tick(&g, now, true);
    ck_assert_int_eq(g.ceiling, 10);
    now += 60 * GN_CEILING_DECAY_MS;
    gn_tick(&g, now, true);
    ck_assert_int_eq(g.ceiling, 0);
}
END_TEST

/* A sender that rotates connections (QUIT and move on) briefly holds one more
 * than its limit: at N the receiver refuses the replacement. That throttle
 * at a limit that had worked lowers the ceiling to N-1 (no halving for one),
 * and at N-1 nothing is refused. */
START_TEST(test_rotation_at_the_limit_lowers_the_ceiling_by_one)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    struct rcv r = {.limit = 8, .per_conn = 160e3, .cap = 2e6};
    settle(&g, &now, &r);
    ck_assert_int_eq(g.limit, 8);
    r.rotate_every = 30; /* one rotation every 3 s */
    rcv_run(&g, &now, &r, 10);
    ck_assert_msg(g.limit == 7 && g.ceiling == 7, "limit %d ceiling %d: %s", g.limit, g.ceiling, g.reason);
    ck_assert_msg(strstr(g.reason, "ceiling 7") != NULL, "%s", g.reason);
    int refused = r.refused;
    int seen = rcv_run(&g, &now, &r, (int)((g.ceiling_until - now) / 1000) - 1);
    ck_assert_int_le(seen, 7);
    ck_assert_int_eq(r.refused, refused);
    ck_assert_int_ge(g.limit, 6); /* trims may try 6 for a moment; 7 it keeps */
}
END_TEST

START_TEST(test_throttle_backs_off_and_holds)
{
    struct gn g;
    int64_t now = 0;
    gn_init(&g, true, 50, now);
    run(&g, &now, 5, 100e3, 1e12); /* slow start: 2, 4, 8, 16 */
    int before = g.limit;
    ck_assert_int_eq(before, 16);
    /* A throttle after a doubling: back to the limit that worked, search up
     * from there, never to 16 again. Every report of the burst is one event
     * (this was the bug: each one halved again, 16 -> 8 -> 4 -> 2 -> 1). */
    for (int i = 0; i < 8; i++)
        gn_throttled(&g, now, "421 4.7.0 too many connections from your IP");
    ck_assert_int_eq(g.limit, 8);
    ck_assert_int_eq(g.ceiling, 15);
    ck_assert(g.phase == GN_HOLD);
    ck_assert_msg(strncmp(g.reason, "backed off from 16 to 8 connections: 421 4.7.0", 46) == 0, "%s", g.reason);
    ck_assert_msg(strstr(g.reason, "searching up to 15") != NULL, "%s", g.reason);
    int seen = run(&g, &now, GN_HOLD_MS / 1000 - 1, 100e3, 1e12);
    ck_assert_int_eq(seen, 8); /* it holds */
    seen = run(&g, &now, 20, 100e3, 1e12);
    ck_assert_int_le(seen, 15);
    ck_assert_int_gt(g.limit, 8); /* then searches up: the rate still rose */
    /* A throttle one step up from a limit that worked: ceiling N-1, hold. */
    now += GN_BURST_MS;
    int at = g.limit;
    gn_throttled(&g, now, "421 4.7.0 too many connections");
    ck_assert(g.phase == GN_HOLD);
    ck_assert_msg(strstr(g.reason, "connections: 421 4.7.0 too many connections [ceiling") != NULL, "%s", g.reason);
    ck_assert_int_eq(g.ceiling, at - 1);
    ck_assert_int_eq(g.limit, at - 1);
    ck_assert_int_eq(g.ceiling_hold, GN_CEILING_HOLD_MS);
    seen = run(&g, &now, GN_CEILING_HOLD_MS / 1000 - 10, 100e3, 1e12);
    ck_assert_int_le(seen, at - 1);
    /* Under the ceiling at a limit that worked: one fewer; again at once: halve. */
    now += 100;
    int c = g.limit;
    gn_throttled(&g, now, "421 4.7.0 too many connections");
    ck_assert_int_eq(g.limit, c - 1);
    ck_assert_int_eq(g.ceiling, c - 1);
    now += GN_BURST_MS;
    gn_throttled(&g, now, "421 4.7.0 too many connections");
    ck_assert_int_eq(g.limit, (c - 1) / 2);
    ck_assert_int_eq(g.ceiling, c - 2);
    ck_assert_msg(strstr(g.reason, "halved") != NULL, "%s", g.reason);
    for (int i = 0; i < 10; i++) {
        now += GN_BURST_MS;
        gn_throttled(&g, now, "x");
    }
    ck_assert_int_eq(g.limit, 1); /* never below one */
    ck_assert_int_eq(g.ceiling, 1);
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
    tcase_add_test(tc, test_weak_doubling_ends_slow_start);
    tcase_add_test(tc, test_linear_receiver_goes_to_max);
    tcase_add_test(tc, test_throttle_backs_off_and_holds);
    tcase_add_loop_test(tc, test_limit_binds_before_the_rate_flattens, 3, 11);
    tcase_add_test(tc, test_same_ceiling_found_again_holds_longer);
    tcase_add_test(tc, test_ceiling_decays_to_a_raised_limit);
    tcase_add_test(tc, test_decay_counts_idle_time);
    tcase_add_test(tc, test_rotation_at_the_limit_lowers_the_ceiling_by_one);
    tcase_add_test(tc, test_fixed_when_disabled);
    tcase_add_test(tc, test_no_demand_no_change);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
