/* unit.h - small helpers shared by the libcheck unit programs: a per-TCase
 * scratch directory, file writing, recursive removal, and the runner.
 *
 * The scratch directory is an *unchecked* fixture: it is made once in the
 * parent process before a TCase's tests are forked and removed after the
 * last one, so files left by a failing (exited) child are still cleaned up.
 * Tests that need a clean place of their own call unit_subdir().
 *
 * Everything is static inline so that each check_*.c can include this
 * header without "defined but not used" warnings. */
#ifndef BW_TEST_UNIT_H
#define BW_TEST_UNIT_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* unit_tmp - the scratch directory of the running TCase ("" outside one). */
static char unit_tmp[PATH_MAX];

/* unit_rm_one - nftw callback: remove files and (post-order) directories */
static inline int unit_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        chmod(path, 0700), rmdir(path);
    else
        unlink(path);
    return 0;
}

/* unit_rmtree - remove a directory tree; missing is fine */
static inline void unit_rmtree(const char *dir)
{
    if (dir[0] != '\0')
        nftw(dir, unit_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* unit_tmp_setup, unit_tmp_teardown - the unchecked scratch fixture */
static inline void unit_tmp_setup(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    snprintf(unit_tmp, sizeof unit_tmp, "%s/bw-unit-XXXXXX", base);
    if (mkdtemp(unit_tmp) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", unit_tmp, strerror(errno));
        abort();
    }
}

static inline void unit_tmp_teardown(void)
{
    unit_rmtree(unit_tmp);
    unit_tmp[0] = '\0';
}

/* unit_subdir - a fresh directory "unit_tmp/<tag>XXXXXX" into out[PATH_MAX] */
static inline void unit_subdir(const char *tag, char out[PATH_MAX])
{
    ck_assert_msg(unit_tmp[0] != '\0', "no scratch directory: add the unit_tmp fixture");
    ck_assert_int_lt(snprintf(out, PATH_MAX, "%s/%sXXXXXX", unit_tmp, tag), PATH_MAX);
    ck_assert_msg(mkdtemp(out) != NULL, "mkdtemp %s: %s", out, strerror(errno));
}

/* unit_write_file - create (truncate) path with exactly len bytes */
static inline void unit_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        ck_assert_msg(w > 0, "write %s: %s", path, strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    ck_assert_int_eq(close(fd), 0);
}

/* unit_count_entries - entries of a directory other than "." and ".."
 * (-1 when it cannot be read) */
static inline int unit_count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* unit_exists - true when path names something (lstat) */
static inline bool unit_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* unit_tcase - a TCase with the scratch fixture and a timeout (seconds,
 * scaled by CK_TIMEOUT_MULTIPLIER as usual) */
static inline TCase *unit_tcase(const char *name, double timeout)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, unit_tmp_setup, unit_tmp_teardown);
    tcase_set_timeout(tc, timeout);
    return tc;
}

/* unit_run - run suites[0..n) in CK_NORMAL; returns the process exit status */
static inline int unit_run(Suite *const *suites, size_t n)
{
    SRunner *sr = srunner_create(suites[0]);
    for (size_t i = 1; i < n; i++)
        srunner_add_suite(sr, suites[i]);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
