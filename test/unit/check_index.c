/* check_index.c - unit tests of qmgr's Berkeley DB per-domain index: key
 * order (arrival order within a (gateway, domain), gateways and domains
 * kept apart), exclusive resumption, idempotent puts, deletes, the "sound"
 * mark across a reopen, and recovery from a corrupt file. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index.h"
#include "log.h"
#include "str.h"

static char dir[256];

static void setup(void)
{
    str_copy(dir, sizeof dir, "/tmp/check_index.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[512];
    str_fmt(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void make_id(int n, char *id)
{
    /* 18 upper-case hex digits, as spool ids */
    str_fmt(id, SPOOL_ID_LEN + 1, "%012X%06X", 0x1234u, (unsigned)n);
}

static int put(struct qindex *ix, const char *vg, const char *dom, int64_t at, int n)
{
    struct qindex_rec r = {.vg = vg, .domain = dom, .arrival_us = at, .n_rcpts = 1};
    make_id(n, r.id);
    return qindex_put(ix, &r);
}

struct seen {
    char ids[64][SPOOL_ID_LEN + 1];
    int64_t at[64];
    int n;
};

static bool collect(const struct qindex_rec *r, void *arg)
{
    struct seen *s = arg;
    if (s->n < 64) {
        str_copy(s->ids[s->n], sizeof s->ids[0], r->id);
        s->at[s->n] = r->arrival_us;
        s->n++;
    }
    return true;
}

START_TEST(test_order_and_resume)
{
    bool sound = true;
    char err[QINDEX_ERR_MAX];
    struct qindex *ix = qindex_open(dir, &sound, err, sizeof err);
    ck_assert_msg(ix != NULL, "%s", err);
    ck_assert(!sound); /* new: needs a build */
    /* out of order arrivals, two domains, two gateways, a domain that is a
     * prefix of another */
    ck_assert_int_eq(put(ix, "default", "b.example", 300, 3), 1);
    ck_assert_int_eq(put(ix, "default", "b.example", 100, 1), 1);
    ck_assert_int_eq(put(ix, "default", "b.example", 200, 2), 1);
    ck_assert_int_eq(put(ix, "default", "b.example.org", 50, 9), 1);
    ck_assert_int_eq(put(ix, "other", "b.example", 10, 8), 1);
    ck_assert_int_eq(put(ix, "default", "b.example", 200, 2), 0); /* idempotent */
    struct seen s = {.n = 0};
    ck_assert_int_eq(qindex_scan(ix, "default", "b.example", 0, NULL, 0, collect, &s), 3);
    ck_assert_int_eq(s.n, 3);
    ck_assert(s.at[0] == 100 && s.at[1] == 200 && s.at[2] == 300);
    /* resume after the first: exclusive */
    struct seen t = {.n = 0};
    ck_assert_int_eq(qindex_scan(ix, "default", "b.example", s.at[0], s.ids[0], 1, collect, &t), 1);
    ck_assert_int_eq(t.at[0], 200);
    /* everything */
    struct seen a = {.n = 0};
    ck_assert_int_eq(qindex_scan(ix, NULL, NULL, 0, NULL, 0, collect, &a), 5);
    /* delete */
    char id[SPOOL_ID_LEN + 1];
    make_id(2, id);
    ck_assert_int_eq(qindex_del(ix, "default", "b.example", 200, id, NULL), 1);
    ck_assert_int_eq(qindex_del(ix, "default", "b.example", 200, id, NULL), 0);
    struct seen u = {.n = 0};
    ck_assert_int_eq(qindex_scan(ix, "default", "b.example", 0, NULL, 0, collect, &u), 2);
    ck_assert_int_eq(qindex_set_sound(ix, true), 0);
    qindex_close(ix);

    /* reopen: records and the sound mark survive */
    ix = qindex_open(dir, &sound, err, sizeof err);
    ck_assert_msg(ix != NULL, "%s", err);
    ck_assert(sound);
    struct seen v = {.n = 0};
    ck_assert_int_eq(qindex_scan(ix, "default", "b.example", 0, NULL, 0, collect, &v), 2);
    ck_assert_int_eq(qindex_clear(ix), 0);
    struct seen w = {.n = 0};
    ck_assert_int_eq(qindex_scan(ix, NULL, NULL, 0, NULL, 0, collect, &w), 0);
    qindex_close(ix);
}
END_TEST

START_TEST(test_uncommitted_build_is_not_sound)
{
    bool sound = true;
    char err[QINDEX_ERR_MAX];
    struct qindex *ix = qindex_open(dir, &sound, err, sizeof err);
    ck_assert_ptr_nonnull(ix);
    ck_assert_int_eq(qindex_set_sound(ix, false), 0);
    ck_assert_int_eq(put(ix, "default", "a.example", 1, 1), 1);
    qindex_close(ix);
    ix = qindex_open(dir, &sound, err, sizeof err);
    ck_assert_ptr_nonnull(ix);
    ck_assert(!sound);
    qindex_close(ix);
}
END_TEST

START_TEST(test_corrupt_file_is_replaced)
{
    bool sound = false;
    char err[QINDEX_ERR_MAX];
    struct qindex *ix = qindex_open(dir, &sound, err, sizeof err);
    ck_assert_ptr_nonnull(ix);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(put(ix, "default", "a.example", i, i), 1);
    ck_assert_int_eq(qindex_set_sound(ix, true), 0);
    qindex_close(ix);
    /* garbage over the database file, and the logs removed */
    char path[512];
    str_fmt(path, sizeof path, "%s/index/domains.db", dir);
    int fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    char junk[8192];
    memset(junk, 'x', sizeof junk);
    ck_assert_int_eq(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    ix = qindex_open(dir, &sound, err, sizeof err);
    ck_assert_msg(ix != NULL, "%s", err);
    ck_assert(!sound);
    ck_assert_int_eq(put(ix, "default", "a.example", 5, 5), 1);
    qindex_close(ix);
}
END_TEST

int main(void)
{
    log_open("check_index", "check_index", "/dev/stderr");
    Suite *s = suite_create("index");
    TCase *tc = tcase_create("index");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_order_and_resume);
    tcase_add_test(tc, test_uncommitted_build_is_not_sound);
    tcase_add_test(tc, test_corrupt_file_is_replaced);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
