/* check_schedule.c - unit tests of the retry schedule parser and timing
 * (lib/schedule.c), the destination_controls checks with their FILE:LINE
 * errors, and the domain state machine (qmgr/domstate.c). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "domstate.h"
#include "schedule.h"
#include "str.h"
#include "table.h"

START_TEST(test_parse_good)
{
    int64_t s[SCHEDULE_MAX];
    char err[256];
    ck_assert_int_eq(schedule_parse("1m,5m,1h", s, SCHEDULE_MAX, err, sizeof err), 3);
    ck_assert(s[0] == 60 && s[1] == 300 && s[2] == 3600);
    ck_assert_int_eq(schedule_parse(" 30s  2m ,1d", s, SCHEDULE_MAX, err, sizeof err), 3);
    ck_assert(s[0] == 30 && s[1] == 120 && s[2] == 86400);
    ck_assert_int_eq(schedule_parse("45", s, SCHEDULE_MAX, err, sizeof err), 1);
    ck_assert(s[0] == 45);
}
END_TEST

START_TEST(test_parse_bad)
{
    int64_t s[4];
    char err[256];
    ck_assert_int_eq(schedule_parse("5x", s, 4, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "'5x' is not a duration") != NULL, "%s", err);
    ck_assert_int_eq(schedule_parse("", s, 4, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "empty") != NULL, "%s", err);
    ck_assert_int_eq(schedule_parse("0s", s, 4, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "longer than 0") != NULL, "%s", err);
    ck_assert_int_eq(schedule_parse("1s 2s 3s 4s 5s", s, 4, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "more than 4") != NULL, "%s", err);
    ck_assert_int_eq(schedule_parse("-5m", s, 4, err, sizeof err), -1);
}
END_TEST

START_TEST(test_delay_last_repeats)
{
    const int64_t s[] = {60, 300, 3600};
    ck_assert_int_eq(schedule_delay(s, 3, 1), 60);
    ck_assert_int_eq(schedule_delay(s, 3, 2), 300);
    ck_assert_int_eq(schedule_delay(s, 3, 3), 3600);
    ck_assert_int_eq(schedule_delay(s, 3, 50), 3600);
    ck_assert_int_eq(schedule_delay(s, 3, 0), 60); /* no failure yet: the first */
    ck_assert_int_eq(schedule_delay(s, 0, 4), SCHEDULE_DEFAULT_S);
}
END_TEST

START_TEST(test_jitter_bounds)
{
    int64_t lo = 1000000, hi = 0;
    for (long r = 0; r < 5000; r++) {
        int64_t d = schedule_jitter(600, r * 7919);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    ck_assert_int_ge(lo, 540);
    ck_assert_int_le(hi, 660);
    ck_assert_int_lt(lo, 560); /* it does spread */
    ck_assert_int_gt(hi, 640);
    ck_assert_int_eq(schedule_jitter(5, 12345), 5); /* short delays are kept */
}
END_TEST

/* write_table - a table file with text; returns its path */
static const char *write_table(const char *text)
{
    static char path[64];
    str_copy(path, sizeof path, "/tmp/check_schedule.XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static bool check_text(const char *text, char *err, size_t errlen)
{
    const char *path = write_table(text);
    bool ok = controls_file_check(path, err, errlen);
    unlink(path);
    return ok;
}

START_TEST(test_controls_good)
{
    char err[512] = "";
    ck_assert_msg(check_text("# comment\ndefault retry_schedule=1m,5m max_connections=10\n"
                             ".junk.example retry=0\nslow.example good_neighbor=no max_messages_per_connection=5 "
                             "tls=may max_rate=100/h\n",
                             err, sizeof err),
                  "%s", err);
    ck_assert(controls_file_check("", err, sizeof err)); /* no table */
}
END_TEST

START_TEST(test_controls_bad)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"a.example retry_schedule=5x\n", ":1: retry_schedule=5x: '5x' is not a duration"},
        {"default max_connections=10\nb.example max_connections=0\n", ":2: max_connections=0"},
        {"c.example retry=3\n", ":1: retry=3: only retry=0"},
        {"d.example good_neighbour=no\n", ":1: 'good_neighbour=no' is not a destination control"},
        {"e.example good_neighbor=maybe\n", ":1: good_neighbor=maybe: yes or no"},
        {"f.example tls=always\n", ":1: tls=always"},
        {"\n\n\ng.example max_messages_per_connection=abc\n", ":4: max_messages_per_connection=abc"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        ck_assert_msg(!check_text(cases[i].text, err, sizeof err), "accepted: %s", cases[i].text);
        ck_assert_msg(strstr(err, cases[i].want) != NULL && strstr(err, "/tmp/check_schedule.") == err,
                      "case %zu: got '%s', want '%s'", i, err, cases[i].want);
    }
}
END_TEST

START_TEST(test_domain_state_machine)
{
    const int64_t busy = 10, now = 100000;
    /* up, nothing delivered lately: unreachable -> down */
    ck_assert_int_eq(site_judge(false, false, 0, SITE_UNREACHABLE, now, 0, busy), SITE_DOWN);
    ck_assert_int_eq(site_judge(false, false, 0, SITE_UNREACHABLE, now, now - 60, busy), SITE_DOWN);
    /* up and delivering a moment ago: a refusal is pushback, not an outage */
    ck_assert_int_eq(site_judge(false, false, 0, SITE_UNREACHABLE, now, now - 3, busy), SITE_PUSHBACK);
    /* down: a failed probe keeps it down (even just after a success long ago) */
    ck_assert_int_eq(site_judge(false, true, 3, SITE_UNREACHABLE, now, now - 3, busy), SITE_DOWN);
    /* a host answered: up again; already up with no failures: nothing */
    ck_assert_int_eq(site_judge(false, true, 3, SITE_REACHED, now, 0, busy), SITE_UP);
    ck_assert_int_eq(site_judge(false, false, 1, SITE_REACHED, now, 0, busy), SITE_UP);
    ck_assert_int_eq(site_judge(false, false, 0, SITE_REACHED, now, 0, busy), SITE_NOTHING);
    /* DNS trouble and redirected mail say nothing about the domain */
    ck_assert_int_eq(site_judge(false, false, 0, SITE_UNKNOWN, now, 0, busy), SITE_NOTHING);
    ck_assert_int_eq(site_judge(true, false, 0, SITE_UNREACHABLE, now, 0, busy), SITE_NOTHING);
    ck_assert_int_eq(site_judge(true, true, 2, SITE_REACHED, now, 0, busy), SITE_NOTHING);
    ck_assert_int_eq(site_judge(false, false, 0, 7, now, 0, busy), SITE_NOTHING);
    ck_assert_str_eq(site_verdict_name(SITE_PUSHBACK), "pushback");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("schedule");
    tcase_add_test(tc, test_parse_good);
    tcase_add_test(tc, test_parse_bad);
    tcase_add_test(tc, test_delay_last_repeats);
    tcase_add_test(tc, test_jitter_bounds);
    tcase_add_test(tc, test_controls_good);
    tcase_add_test(tc, test_controls_bad);
    tcase_add_test(tc, test_domain_state_machine);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
