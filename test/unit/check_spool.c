/* check_spool.c - unit tests of lib/spool: queue ids, spool paths, the
 * directory tree, message files written through the real group committer
 * (both flush methods) and read back, and the reader's refusals.
 *
 * Each test gets its own queue_directory under the TCase's scratch
 * directory (unit.h) and, when it commits, its own event_base; waiting for a
 * commit runs the loop until the callback fired, bounded by a timer. */
#include "spool.h"
#include "buf.h"
#include "log.h"
#include "str.h"
#include "unit.h"

#include <event2/event.h>
#include <stdio.h>
#include <sys/time.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- helpers ---- */

/* make_spool - a fresh, initialised queue_directory */
static void make_spool(char q[PATH_MAX])
{
    char err[512] = "";
    unit_subdir("q", q);
    ck_assert_msg(spool_init_dirs(q, (uid_t)-1, (gid_t)-1, err, sizeof err) == 0, "spool_init_dirs: %s", err);
}

static const char *const sample_rcpts[] = {"a@example.com", "\"b c\"@example.org", "postmaster",
                                           "d\xc3\xa9@\xc3\xa9xample.com"};

static struct spool_envelope sample_env(void)
{
    struct spool_envelope env = {
        .arrival_us = INT64_C(1700000000123456),
        .sender = "sender@example.net",
        .client_addr = "192.0.2.1",
        .client_name = "client.example",
        .helo = "helo.example",
        .protocol = "ESMTP",
        .body_type = "8BITMIME",
        .smtputf8 = true,
        .vg = "gw1",
        .listener = "127.0.0.1:25",
        .rcpts = sample_rcpts,
        .n_rcpts = 4,
    };
    return env;
}

/* sample_content - n bytes of awkward content: CRLF, NUL, "E\n", "M\n", 8-bit */
static char *sample_content(size_t n)
{
    static const char pattern[] = "Received: from x\r\nE\n\0M\nR- fake@x\n\r\n.\r\n\xff\xfe body\r\n";
    char *c = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(c);
    for (size_t i = 0; i < n; i++)
        c[i] = pattern[i % (sizeof pattern - 1)];
    return c;
}

/* Waiting for commit callbacks in the event loop. */
struct waiter {
    struct event_base *base;
    int want, calls, ok_calls;
    bool timed_out;
};

static void on_commit(void *arg, bool ok)
{
    struct waiter *w = arg;
    w->calls++;
    if (ok)
        w->ok_calls++;
    if (w->calls >= w->want)
        event_base_loopbreak(w->base);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *w = arg;
    w->timed_out = true;
    event_base_loopbreak(w->base);
}

/* run_until - run the loop until w->want callbacks came, at most 20 seconds */
static void run_until(struct waiter *w)
{
    struct event *t = evtimer_new(w->base, on_timeout, w);
    ck_assert_ptr_nonnull(t);
    struct timeval tv = {20, 0};
    ck_assert_int_eq(evtimer_add(t, &tv), 0);
    while (w->calls < w->want && !w->timed_out)
        ck_assert_int_ge(event_base_loop(w->base, EVLOOP_ONCE), 0);
    event_free(t);
    ck_assert_msg(!w->timed_out, "timed out: %d of %d commit callbacks", w->calls, w->want);
    ck_assert_int_eq(w->calls, w->want);
}

/* file_size - st_size or -1 */
static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* check_message - path holds env and content exactly as written */
static void check_message(const char *path, const char *id, const struct spool_envelope *env, const char *content,
                          size_t clen)
{
    struct spool_message msg;
    char err[512] = "";
    ck_assert_msg(spool_message_read(path, &msg, err, sizeof err) == 0, "spool_message_read: %s", err);
    ck_assert_str_eq(msg.id, id);
    ck_assert_int_eq(msg.arrival_us, env->arrival_us);
    ck_assert_str_eq(msg.sender, env->sender ? env->sender : "");
    ck_assert_str_eq(msg.client_addr, env->client_addr ? env->client_addr : "");
    ck_assert_str_eq(msg.client_name, env->client_name ? env->client_name : "");
    ck_assert_str_eq(msg.helo, env->helo ? env->helo : "");
    ck_assert_str_eq(msg.protocol, env->protocol ? env->protocol : "");
    ck_assert_str_eq(msg.body_type, env->body_type ? env->body_type : "");
    ck_assert_str_eq(msg.vg, env->vg ? env->vg : "");
    ck_assert_str_eq(msg.listener, env->listener ? env->listener : "");
    ck_assert_int_eq(msg.smtputf8, env->smtputf8);
    ck_assert_uint_eq(msg.n_rcpts, env->n_rcpts);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    for (size_t i = 0; i < msg.n_rcpts; i++) {
        ck_assert_str_eq(msg.rcpts[i].address, env->rcpts[i]);
        ck_assert_int_eq(msg.rcpts[i].state, '-');
        char b[3] = "";
        ck_assert_int_eq(pread(fd, b, 3, msg.rcpts[i].state_offset - 1), 3);
        ck_assert_msg(b[0] == 'R' && b[1] == '-' && b[2] == ' ', "state_offset %lld of rcpt %zu: got \"%.3s\"",
                      (long long)msg.rcpts[i].state_offset, i, b);
    }
    ck_assert_uint_eq(msg.content_len, clen);
    ck_assert_int_eq(file_size(path), msg.content_offset + (off_t)clen + 2);
    char *got = malloc(clen + 2);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(pread(fd, got, clen + 2, msg.content_offset), (ssize_t)(clen + 2));
    ck_assert_msg(memcmp(got, content, clen) == 0, "content differs");
    ck_assert_mem_eq(got + clen, "E\n", 2);
    char head[SPOOL_HEADER_LEN + 1], want[SPOOL_HEADER_LEN + 1];
    ck_assert_int_eq(pread(fd, head, SPOOL_HEADER_LEN, 0), SPOOL_HEADER_LEN);
    head[SPOOL_HEADER_LEN] = '\0';
    snprintf(want, sizeof want, "BWQ1 %016zu\n", clen);
    ck_assert_str_eq(head, want);
    free(got);
    close(fd);
    spool_message_free(&msg);
}

/* ---- ids and paths ---- */

static const int id_slots[] = {0, 1, 0x7f, 0xfe, SPOOL_SLOT_MAX};

START_TEST(test_id_format)
{
    int slot = id_slots[_i];
    char id[SPOOL_ID_LEN + 1];
    struct timeval before, after;
    gettimeofday(&before, NULL);
    spool_id_new(slot, id);
    gettimeofday(&after, NULL);
    ck_assert_uint_eq(strlen(id), SPOOL_ID_LEN);
    for (int i = 0; i < SPOOL_ID_LEN; i++)
        ck_assert_msg((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F'),
                      "id %s: byte %d is not an upper-case hex digit", id, i);
    ck_assert(spool_id_valid(id));
    ck_assert_int_eq(spool_id_slot(id), slot);
    /* the first 13 digits are the time in microseconds */
    char us[14];
    memcpy(us, id, 13);
    us[13] = '\0';
    unsigned long long t = strtoull(us, NULL, 16);
    unsigned long long lo = ((unsigned long long)before.tv_sec * 1000000u + (unsigned long long)before.tv_usec) &
                            0xfffffffffffffULL,
                       hi = ((unsigned long long)after.tv_sec * 1000000u + (unsigned long long)after.tv_usec) &
                            0xfffffffffffffULL;
    ck_assert_msg(t + 1000000 >= lo && t <= hi + 1000000, "id %s: time part %llx not near %llx..%llx", id, t, lo, hi);
}
END_TEST

START_TEST(test_id_monotonic)
{
    char prev[SPOOL_ID_LEN + 1], cur[SPOOL_ID_LEN + 1];
    spool_id_new(5, prev);
    for (int i = 0; i < 50000; i++) {
        spool_id_new(5, cur);
        ck_assert_msg(strcmp(prev, cur) < 0, "id %d: %s does not follow %s", i, cur, prev);
        ck_assert_int_eq(spool_id_slot(cur), 5);
        memcpy(prev, cur, sizeof cur);
    }
}
END_TEST

START_TEST(test_id_valid)
{
    ck_assert(spool_id_valid("0123456789ABCDEF01"));
    ck_assert(spool_id_valid("000000000000000000"));
    ck_assert(spool_id_valid("FFFFFFFFFFFFFFFFFF"));
    ck_assert(!spool_id_valid(""));
    ck_assert(!spool_id_valid("0123456789ABCDEF0"));   /* 17 */
    ck_assert(!spool_id_valid("0123456789ABCDEF012")); /* 19 */
    ck_assert(!spool_id_valid("0123456789abcdef01"));  /* lower case */
    ck_assert(!spool_id_valid("0123456789ABCDEFG1"));
    ck_assert(!spool_id_valid("0123456789ABCDEF0 "));
    ck_assert(!spool_id_valid("../../../etc/passwd"));
    ck_assert(!spool_id_valid("0123456789ABCDEF/1"));
    ck_assert(!spool_id_valid(".."));
    ck_assert_int_eq(spool_id_slot("0000000000000FF000"), 255);
    ck_assert_int_eq(spool_id_slot("00000000000000A000"), 10);
}
END_TEST

START_TEST(test_paths)
{
    char p[SPOOL_PATH_MAX];
    ck_assert(spool_path_incoming("/var/spool/bw", "0123456789ABCDEF01", p, sizeof p));
    ck_assert_str_eq(p, "/var/spool/bw/incoming/0123456789ABCDEF01");
    ck_assert(spool_path_queue("/var/spool/bw", "0123456789ABCDEF01", p, sizeof p));
    ck_assert_str_eq(p, "/var/spool/bw/queue/BC/0123456789ABCDEF01"); /* id[11..12] */
    char id[SPOOL_ID_LEN + 1];
    spool_id_new(9, id);
    ck_assert(spool_path_queue("q", id, p, sizeof p));
    char want[64];
    snprintf(want, sizeof want, "q/queue/%.2s/%s", id + 11, id);
    ck_assert_str_eq(p, want);

    /* refusals: bad ids and paths that do not fit */
    ck_assert(!spool_path_incoming("/q", "../x", p, sizeof p));
    ck_assert(!spool_path_queue("/q", "0123456789abcdef01", p, sizeof p));
    ck_assert(!spool_path_queue("/q", "", p, sizeof p));
    char small[20];
    ck_assert(!spool_path_incoming("/q", "0123456789ABCDEF01", small, sizeof small));
    ck_assert(!spool_path_queue("/q", "0123456789ABCDEF01", small, sizeof small));
    char *longdir = malloc(SPOOL_PATH_MAX + 1);
    ck_assert_ptr_nonnull(longdir);
    memset(longdir, 'd', SPOOL_PATH_MAX);
    longdir[SPOOL_PATH_MAX] = '\0';
    ck_assert(!spool_path_queue(longdir, "0123456789ABCDEF01", p, sizeof p));
    free(longdir);
}
END_TEST

/* ---- directories ---- */

static void check_dir(const char *path)
{
    struct stat st;
    ck_assert_msg(stat(path, &st) == 0, "%s: %s", path, strerror(errno));
    ck_assert_msg(S_ISDIR(st.st_mode), "%s is not a directory", path);
    ck_assert_msg((st.st_mode & 07777) == 0700, "%s: got mode %04o, want 0700", path, (unsigned)(st.st_mode & 07777));
}

START_TEST(test_init_dirs)
{
    char q[PATH_MAX], p[PATH_MAX + 32], err[512] = "";
    unit_subdir("q", q);
    ck_assert_int_eq(spool_init_dirs(q, (uid_t)-1, (gid_t)-1, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/incoming", q);
    check_dir(p);
    snprintf(p, sizeof p, "%s/queue", q);
    check_dir(p);
    ck_assert_int_eq(unit_count_entries(p), 256);
    for (int h = 0; h < 256; h++) {
        snprintf(p, sizeof p, "%s/queue/%02X", q, h);
        check_dir(p);
    }
    static const char *const more[] = {"new", "index", "free"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", q, more[i]);
        check_dir(p);
    }
    ck_assert_int_eq(unit_count_entries(q), 5);

    /* again: idempotent, and modes are put back */
    snprintf(p, sizeof p, "%s/queue/A7", q);
    ck_assert_int_eq(chmod(p, 0755), 0);
    ck_assert_int_eq(spool_init_dirs(q, getuid(), getgid(), err, sizeof err), 0);
    check_dir(p);
}
END_TEST

START_TEST(test_init_dirs_errors)
{
    char q[PATH_MAX], missing[PATH_MAX + 32], err[512] = "";
    unit_subdir("q", q);
    snprintf(missing, sizeof missing, "%s/no/such", q);
    errno = 0;
    ck_assert_int_eq(spool_init_dirs(missing, (uid_t)-1, (gid_t)-1, err, sizeof err), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_msg(strstr(err, missing) != NULL, "got \"%s\", want the failing path in it", err);

    /* queue/ is a plain file */
    char file[PATH_MAX + 32];
    snprintf(file, sizeof file, "%s/queue", q);
    unit_write_file(file, "x", 1);
    err[0] = '\0';
    ck_assert_int_eq(spool_init_dirs(q, (uid_t)-1, (gid_t)-1, err, sizeof err), -1);
    ck_assert_msg(err[0] != '\0', "no reason given");
}
END_TEST

/* ---- write, commit, read ---- */

static const enum spool_sync methods[] = {SPOOL_SYNC_SYNCFS, SPOOL_SYNC_FSYNC};

/* test_commit_read - one message through the committer, then read back */
START_TEST(test_commit_read)
{
    char q[PATH_MAX];
    make_spool(q);
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    struct spool_committer *sc = spool_committer_new(base, q, methods[_i]);
    ck_assert_msg(sc != NULL, "spool_committer_new: %s", strerror(errno));

    char id[SPOOL_ID_LEN + 1], inc[SPOOL_PATH_MAX], fin[SPOOL_PATH_MAX];
    spool_id_new(3, id);
    ck_assert(spool_path_incoming(q, id, inc, sizeof inc));
    ck_assert(spool_path_queue(q, id, fin, sizeof fin));
    struct spool_envelope env = sample_env();
    struct spool_file *sf = spool_file_create(q, id, &env);
    ck_assert_msg(sf != NULL, "spool_file_create: %s", strerror(errno));
    ck_assert(unit_exists(inc));
    ck_assert(!unit_exists(fin));
    ck_assert_uint_eq(spool_file_size(sf), 0);

    size_t clen = 200000;
    char *content = sample_content(clen);
    static const size_t chunks[] = {1, 7, 0, 4096, 65536};
    size_t off = 0;
    for (int i = 0; off < clen; i = (i + 1) % COUNT(chunks)) {
        size_t n = chunks[i] < clen - off ? chunks[i] : clen - off;
        ck_assert_int_eq(spool_file_write(sf, content + off, n), 0);
        off += n;
        ck_assert_uint_eq(spool_file_size(sf), off);
    }

    struct waiter w = {base, 1, 0, 0, false};
    spool_commit(sc, sf, on_commit, &w);
    ck_assert_int_eq(w.calls, 0); /* never from inside spool_commit */
    ck_assert_uint_eq(spool_committer_pending(sc), 1);
    run_until(&w);
    ck_assert_int_eq(w.ok_calls, 1);
    ck_assert_uint_eq(spool_committer_pending(sc), 0);
    uint64_t batches = 0, files = 0;
    spool_committer_stats(sc, &batches, &files);
    ck_assert_uint_eq(batches, 1);
    ck_assert_uint_eq(files, 1);

    ck_assert_msg(!unit_exists(inc), "incoming/%s still there after commit", id);
    struct stat st;
    ck_assert_int_eq(stat(fin, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    check_message(fin, id, &env, content, clen);

    spool_committer_free(sc);
    event_base_free(base);
    free(content);
}
END_TEST

/* test_commit_batch - many files, some with empty or absent fields */
START_TEST(test_commit_batch)
{
    char q[PATH_MAX];
    make_spool(q);
    struct event_base *base = event_base_new();
    struct spool_committer *sc = spool_committer_new(base, q, methods[_i]);
    ck_assert_ptr_nonnull(sc);
    enum { NFILES = 12 };
    char ids[NFILES][SPOOL_ID_LEN + 1];
    struct spool_envelope envs[NFILES];
    char *contents[NFILES];
    size_t lens[NFILES];
    struct waiter w = {base, NFILES, 0, 0, false};
    for (int i = 0; i < NFILES; i++) {
        spool_id_new(i, ids[i]);
        envs[i] = sample_env();
        envs[i].n_rcpts = 1 + (size_t)i % 4;
        if (i % 2) {
            envs[i].sender = ""; /* null sender */
            envs[i].client_name = NULL;
            envs[i].helo = NULL;
            envs[i].vg = NULL;
            envs[i].smtputf8 = false;
        }
        lens[i] = (size_t)i * 1000;
        contents[i] = sample_content(lens[i]);
        struct spool_file *sf = spool_file_create(q, ids[i], &envs[i]);
        ck_assert_msg(sf != NULL, "spool_file_create %d: %s", i, strerror(errno));
        ck_assert_int_eq(spool_file_write(sf, contents[i], lens[i]), 0);
        spool_commit(sc, sf, on_commit, &w);
    }
    run_until(&w);
    ck_assert_int_eq(w.ok_calls, NFILES);
    uint64_t batches, files;
    spool_committer_stats(sc, &batches, &files);
    ck_assert_uint_eq(files, NFILES);
    ck_assert_uint_ge(batches, 1);
    ck_assert_uint_le(batches, NFILES);
    char inc[PATH_MAX + 32];
    snprintf(inc, sizeof inc, "%s/incoming", q);
    ck_assert_int_eq(unit_count_entries(inc), 0);
    for (int i = 0; i < NFILES; i++) {
        char fin[SPOOL_PATH_MAX];
        ck_assert(spool_path_queue(q, ids[i], fin, sizeof fin));
        check_message(fin, ids[i], &envs[i], contents[i], lens[i]);
        free(contents[i]);
    }
    spool_committer_free(sc);
    event_base_free(base);
}
END_TEST

/* test_commit_fails - the rename cannot happen: ok false, nothing left */
START_TEST(test_commit_fails)
{
    char q[PATH_MAX];
    make_spool(q);
    struct event_base *base = event_base_new();
    struct spool_committer *sc = spool_committer_new(base, q, methods[_i]);
    ck_assert_ptr_nonnull(sc);
    char id[SPOOL_ID_LEN + 1], inc[SPOOL_PATH_MAX], fin[SPOOL_PATH_MAX], dir[PATH_MAX + 32];
    spool_id_new(1, id);
    ck_assert(spool_path_incoming(q, id, inc, sizeof inc));
    ck_assert(spool_path_queue(q, id, fin, sizeof fin));
    snprintf(dir, sizeof dir, "%s/queue/%.2s", q, id + 11);
    ck_assert_int_eq(rmdir(dir), 0);

    char logf[PATH_MAX + 32];
    snprintf(logf, sizeof logf, "%s/log", q);
    ck_assert(log_open("check_spool", "breakwater", logf));

    struct spool_envelope env = sample_env();
    struct spool_file *sf = spool_file_create(q, id, &env);
    ck_assert_ptr_nonnull(sf);
    ck_assert_int_eq(spool_file_write(sf, "x\r\n", 3), 0);
    struct waiter w = {base, 1, 0, 0, false};
    spool_commit(sc, sf, on_commit, &w);
    run_until(&w);
    ck_assert_int_eq(w.ok_calls, 0);
    log_open("check_spool", "breakwater", "-");
    /* the failure is logged with the queue id */
    FILE *fp = fopen(logf, "r");
    ck_assert_ptr_nonnull(fp);
    char line[1024];
    bool seen = false;
    while (fgets(line, sizeof line, fp))
        seen = seen || (strstr(line, id) != NULL && strstr(line, "rename") != NULL);
    fclose(fp);
    ck_assert_msg(seen, "no log line naming %s and the failed rename", id);
    ck_assert_msg(!unit_exists(inc), "incoming file left after a failed commit");
    ck_assert(!unit_exists(fin));
    ck_assert_uint_eq(spool_committer_pending(sc), 0);
    spool_committer_free(sc);
    event_base_free(base);
}
END_TEST

/* test_committer_free_pending - free waits for what the thread holds; no callbacks */
START_TEST(test_committer_free_pending)
{
    char q[PATH_MAX];
    make_spool(q);
    struct event_base *base = event_base_new();
    struct spool_committer *sc = spool_committer_new(base, q, methods[_i]);
    ck_assert_ptr_nonnull(sc);
    char id[SPOOL_ID_LEN + 1], fin[SPOOL_PATH_MAX];
    spool_id_new(2, id);
    struct spool_envelope env = sample_env();
    struct spool_file *sf = spool_file_create(q, id, &env);
    ck_assert_ptr_nonnull(sf);
    ck_assert_int_eq(spool_file_write(sf, "hello\r\n", 7), 0);
    struct waiter w = {base, 1, 0, 0, false};
    spool_commit(sc, sf, on_commit, &w);
    spool_committer_free(sc);
    ck_assert_int_eq(w.calls, 0);
    ck_assert(spool_path_queue(q, id, fin, sizeof fin));
    check_message(fin, id, &env, "hello\r\n", 7);
    /* the loop has nothing left to call */
    ck_assert_int_ge(event_base_loop(base, EVLOOP_NONBLOCK), 0);
    ck_assert_int_eq(w.calls, 0);
    event_base_free(base);
    spool_committer_free(NULL);
}
END_TEST

START_TEST(test_committer_new_fails)
{
    char q[PATH_MAX];
    unit_subdir("q", q); /* no queue/ inside */
    struct event_base *base = event_base_new();
    errno = 0;
    ck_assert_ptr_null(spool_committer_new(base, q, methods[_i]));
    ck_assert_int_eq(errno, ENOENT);
    event_base_free(base);
}
END_TEST

/* ---- file create refusals and abort ---- */

START_TEST(test_file_abort)
{
    char q[PATH_MAX], inc[PATH_MAX + 32], qd[PATH_MAX + 32];
    make_spool(q);
    char id[SPOOL_ID_LEN + 1];
    spool_id_new(4, id);
    struct spool_envelope env = sample_env();
    struct spool_file *sf = spool_file_create(q, id, &env);
    ck_assert_ptr_nonnull(sf);
    ck_assert_int_eq(spool_file_write(sf, "data", 4), 0);
    snprintf(inc, sizeof inc, "%s/incoming", q);
    ck_assert_int_eq(unit_count_entries(inc), 1);
    spool_file_abort(sf);
    ck_assert_int_eq(unit_count_entries(inc), 0);
    snprintf(qd, sizeof qd, "%s/queue/%.2s", q, id + 11);
    ck_assert_int_eq(unit_count_entries(qd), 0);
    spool_file_abort(NULL);
}
END_TEST

START_TEST(test_file_create_refusals)
{
    char q[PATH_MAX], inc[PATH_MAX + 32], path[SPOOL_PATH_MAX];
    make_spool(q);
    snprintf(inc, sizeof inc, "%s/incoming", q);
    char id[SPOOL_ID_LEN + 1];
    struct spool_envelope env;
    struct spool_file *sf;

    env = sample_env();
    env.n_rcpts = 0;
    spool_id_new(1, id);
    errno = 0;
    ck_assert_ptr_null(spool_file_create(q, id, &env));
    ck_assert_int_eq(errno, EINVAL);

    static const char *const bad_rcpt[] = {"ok@example.com", "bad\n@example.com"};
    env = sample_env();
    env.rcpts = bad_rcpt;
    env.n_rcpts = 2;
    errno = 0;
    ck_assert_ptr_null(spool_file_create(q, id, &env));
    ck_assert_int_eq(errno, EINVAL);

    env = sample_env();
    env.sender = "a\rb@example.com";
    errno = 0;
    ck_assert_ptr_null(spool_file_create(q, id, &env));
    ck_assert_int_eq(errno, EINVAL);

    env = sample_env();
    env.helo = "multi\nline";
    ck_assert_ptr_null(spool_file_create(q, id, &env));

    char *longf = malloc(SPOOL_FIELD_MAX + 2);
    ck_assert_ptr_nonnull(longf);
    memset(longf, 'h', SPOOL_FIELD_MAX + 1);
    longf[SPOOL_FIELD_MAX + 1] = '\0';
    env = sample_env();
    env.helo = longf;
    errno = 0;
    ck_assert_ptr_null(spool_file_create(q, id, &env));
    ck_assert_int_eq(errno, EINVAL);
    longf[SPOOL_FIELD_MAX] = '\0'; /* exactly the limit is fine */
    sf = spool_file_create(q, id, &env);
    ck_assert_ptr_nonnull(sf);
    spool_file_abort(sf);
    free(longf);

    env = sample_env();
    ck_assert_ptr_null(spool_file_create(q, "not-an-id", &env));
    ck_assert_ptr_null(spool_file_create(q, "0123456789abcdef01", &env));
    ck_assert_int_eq(unit_count_entries(inc), 0); /* nothing left behind */

    /* an id already in use: refused, the existing file untouched */
    ck_assert(spool_path_incoming(q, id, path, sizeof path));
    unit_write_file(path, "keep", 4);
    errno = 0;
    ck_assert_ptr_null(spool_file_create(q, id, &env));
    ck_assert_int_eq(errno, EEXIST);
    ck_assert_int_eq(file_size(path), 4);
    ck_assert_int_eq(unit_count_entries(inc), 1);

    /* no incoming/ at all */
    char bare[PATH_MAX];
    unit_subdir("bare", bare);
    errno = 0;
    ck_assert_ptr_null(spool_file_create(bare, id, &env));
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

/* ---- reader ---- */

#define GOOD_ID "0123456789ABC01000"
#define ENV_OK                                                                                                     \
    "T 1700000000000000\nI " GOOD_ID "\nS a@b.example\nC 192.0.2.1\nN client.example\nH helo.example\nP ESMTP\n" \
    "B 7BIT\nU 0\nV \nL 127.0.0.1:25\nR- x@y.example\nM\n"

static const char read_content[] = "Subject: x\r\n\r\nE\n\0M\nbody\r\n";
#define READ_CLEN (sizeof read_content - 1)

struct read_case {
    const char *name;
    const char *header;   /* NULL: the right "BWQ1 <length>\n" */
    const char *envelope; /* NULL: ENV_OK */
    const char *trailer;  /* NULL: "E\n" */
    size_t cut;           /* bytes removed from the end */
    const char *extra;    /* appended after the trailer */
    bool content;         /* write the content (false: stop after the envelope) */
    bool ok;
};

static const struct read_case read_cases[] = {
    {"valid", NULL, NULL, NULL, 0, NULL, true, true},
    {"unknown record type is skipped", NULL, "T 1\nI " GOOD_ID "\nQ future\nS \nR- x\nM\n", NULL, 0, NULL, true, true},
    {"empty file", "", "", "", 0, NULL, false, false},
    {"header only", NULL, "", "", 0, NULL, false, false},
    {"bad magic", "BWQ2 0000000000000025\n", NULL, NULL, 0, NULL, true, false},
    {"lower-case magic", "bwq1 0000000000000025\n", NULL, NULL, 0, NULL, true, false},
    {"15 digits", "BWQ1 000000000000025\n", NULL, NULL, 0, NULL, true, false},
    {"17 digits", "BWQ1 00000000000000025\n", NULL, NULL, 0, NULL, true, false},
    {"junk in length", "BWQ1 00000000000000x5\n", NULL, NULL, 0, NULL, true, false},
    {"negative length", "BWQ1 -000000000000025\n", NULL, NULL, 0, NULL, true, false},
    {"signed length", "BWQ1 +000000000000025\n", NULL, NULL, 0, NULL, true, false},
    {"length too large", "BWQ1 0000000000000026\n", NULL, NULL, 0, NULL, true, false},
    {"length too small", "BWQ1 0000000000000024\n", NULL, NULL, 0, NULL, true, false},
    {"length zero", "BWQ1 0000000000000000\n", NULL, NULL, 0, NULL, true, false},
    {"huge length", "BWQ1 9999999999999999\n", NULL, NULL, 0, NULL, true, false},
    {"header without newline", "BWQ1 0000000000000025 ", NULL, NULL, 0, NULL, true, false},
    {"bad trailer", NULL, NULL, "X\n", 0, NULL, true, false},
    {"trailer without newline", NULL, NULL, "E ", 0, NULL, true, false},
    {"no trailer", NULL, NULL, "", 0, NULL, true, false},
    {"short trailer", NULL, NULL, "E", 0, NULL, true, false},
    {"bytes after the trailer", NULL, NULL, NULL, 0, "x", true, false},
    {"second trailer", NULL, NULL, NULL, 0, "E\n", true, false},
    {"truncated by 1", NULL, NULL, NULL, 1, NULL, true, false},
    {"truncated by 2", NULL, NULL, NULL, 2, NULL, true, false},
    {"truncated in content", NULL, NULL, NULL, 2 + READ_CLEN / 2, NULL, true, false},
    {"truncated after M", NULL, NULL, NULL, 2 + READ_CLEN, NULL, true, false},
    {"truncated in envelope", NULL, NULL, NULL, 2 + READ_CLEN + 10, NULL, true, false},
    {"no M line", NULL, "T 1\nI " GOOD_ID "\nS a@b\nR- x\n", "", 0, NULL, false, false},
    {"envelope cut mid-line", NULL, "T 1\nI " GOOD_ID "\nS a@b\nR- x", "", 0, NULL, false, false},
    {"no I record", NULL, "T 1\nS a@b\nR- x\nM\n", NULL, 0, NULL, true, false},
    {"no S record", NULL, "T 1\nI " GOOD_ID "\nR- x\nM\n", NULL, 0, NULL, true, false},
    {"no recipients", NULL, "T 1\nI " GOOD_ID "\nS a@b\nM\n", NULL, 0, NULL, true, false},
    {"bad recipient state", NULL, "T 1\nI " GOOD_ID "\nS a@b\nR? x\nM\n", NULL, 0, NULL, true, false},
    {"recipient without space", NULL, "T 1\nI " GOOD_ID "\nS a@b\nR-x\nM\n", NULL, 0, NULL, true, false},
    {"bare R", NULL, "T 1\nI " GOOD_ID "\nS a@b\nR-\nM\n", NULL, 0, NULL, true, false},
    {"record without space", NULL, "T 1\nI " GOOD_ID "\nSa@b\nR- x\nM\n", NULL, 0, NULL, true, false},
    {"empty line", NULL, "T 1\nI " GOOD_ID "\n\nS a@b\nR- x\nM\n", NULL, 0, NULL, true, false},
    {"bad id", NULL, "T 1\nI 0123\nS a@b\nR- x\nM\n", NULL, 0, NULL, true, false},
    {"lower-case id", NULL, "T 1\nI 0123456789abc01000\nS a@b\nR- x\nM\n", NULL, 0, NULL, true, false},
    {"bad arrival", NULL, "T abc\nI " GOOD_ID "\nS a@b\nR- x\nM\n", NULL, 0, NULL, true, false},
    {"negative arrival", NULL, "T -1\nI " GOOD_ID "\nS a@b\nR- x\nM\n", NULL, 0, NULL, true, false},
};

/* write_case - build the file of a read case at path */
static void write_case(const struct read_case *c, const char *path)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    if (c->header)
        ck_assert(buf_puts(&b, c->header));
    else
        ck_assert(buf_printf(&b, "BWQ1 %016zu\n", READ_CLEN));
    ck_assert(buf_puts(&b, c->envelope ? c->envelope : ENV_OK));
    if (c->content)
        ck_assert(buf_append(&b, read_content, READ_CLEN));
    ck_assert(buf_puts(&b, c->trailer ? c->trailer : "E\n"));
    if (c->extra)
        ck_assert(buf_puts(&b, c->extra));
    ck_assert_uint_le(c->cut, b.len);
    unit_write_file(path, b.data ? b.data : "", b.len - c->cut);
    buf_free(&b);
}

START_TEST(test_read_table)
{
    const struct read_case *c = &read_cases[_i];
    char d[PATH_MAX], path[PATH_MAX + 32], err[512] = "";
    unit_subdir("rd", d);
    snprintf(path, sizeof path, "%s/" GOOD_ID, d);
    write_case(c, path);
    struct spool_message msg;
    errno = 0;
    int rc = spool_message_read(path, &msg, err, sizeof err);
    if (c->ok) {
        ck_assert_msg(rc == 0, "%s: got -1 (%s), want 0", c->name, err);
        ck_assert_str_eq(msg.id, GOOD_ID);
        ck_assert_uint_eq(msg.content_len, READ_CLEN);
        spool_message_free(&msg);
    } else {
        if (rc == 0)
            spool_message_free(&msg);
        ck_assert_msg(rc == -1, "%s: got 0, want -1 (EINVAL)", c->name);
        ck_assert_msg(errno == EINVAL, "%s: got errno %d (%s), want EINVAL", c->name, errno, strerror(errno));
        ck_assert_msg(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':',
                      "%s: got reason \"%s\", want \"%s: ...\"", c->name, err, path);
    }
}
END_TEST

START_TEST(test_read_states)
{
    char d[PATH_MAX], path[PATH_MAX + 32], err[512];
    unit_subdir("rd", d);
    snprintf(path, sizeof path, "%s/m", d);
    static const char env[] = "T 42\nI " GOOD_ID "\nS \nU 1\nRD done@x\nRB bounced@x\nRX deleted@x\nR- todo@x\n"
                              "R- \"q r\"@x\nRN notified@x\nM\n";
    struct buf b;
    buf_init(&b, 1 << 16);
    ck_assert(buf_printf(&b, "BWQ1 %016d\n%sxyE\n", 2, env));
    unit_write_file(path, b.data, b.len);
    struct spool_message msg;
    ck_assert_msg(spool_message_read(path, &msg, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(msg.arrival_us, 42);
    ck_assert_str_eq(msg.sender, "");
    ck_assert(msg.smtputf8);
    ck_assert_uint_eq(msg.n_rcpts, 6);
    static const char states[] = "DBX--N";
    static const char *const addrs[] = {"done@x", "bounced@x", "deleted@x", "todo@x", "\"q r\"@x", "notified@x"};
    for (size_t i = 0; i < 6; i++) {
        ck_assert_int_eq(msg.rcpts[i].state, states[i]);
        ck_assert_str_eq(msg.rcpts[i].address, addrs[i]);
        ck_assert_int_eq(b.data[msg.rcpts[i].state_offset], states[i]);
        ck_assert_int_eq(b.data[msg.rcpts[i].state_offset - 1], 'R');
    }
    ck_assert_uint_eq(msg.content_len, 2);
    ck_assert_mem_eq(b.data + msg.content_offset, "xy", 2);
    spool_message_free(&msg);
    buf_free(&b);

    errno = 0;
    snprintf(path, sizeof path, "%s/missing", d);
    ck_assert_int_eq(spool_message_read(path, &msg, err, sizeof err), -1);
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

/* ---- crash clean-up ---- */

START_TEST(test_clean_incoming)
{
    char q[PATH_MAX], inc[PATH_MAX + 32], p[SPOOL_PATH_MAX];
    make_spool(q);
    snprintf(inc, sizeof inc, "%s/incoming", q);
    struct spool_envelope env = sample_env();
    char id1a[SPOOL_ID_LEN + 1], id1b[SPOOL_ID_LEN + 1], id1c[SPOOL_ID_LEN + 1], id2[SPOOL_ID_LEN + 1],
        id1q[SPOOL_ID_LEN + 1];
    spool_id_new(1, id1a);
    spool_id_new(1, id1b);
    spool_id_new(1, id1c);
    spool_id_new(2, id2);
    spool_id_new(1, id1q);
    struct spool_file *a = spool_file_create(q, id1a, &env), *b = spool_file_create(q, id1b, &env),
                      *c2 = spool_file_create(q, id2, &env);
    ck_assert(a && b && c2);
    ck_assert(spool_path_incoming(q, id1c, p, sizeof p));
    unit_write_file(p, "left by a crash", 15);
    /* names that are not queue ids stay, whatever they look like */
    char j[PATH_MAX + 64];
    snprintf(j, sizeof j, "%s/junk", inc);
    unit_write_file(j, "j", 1);
    snprintf(j, sizeof j, "%s/%s", inc, "0123456789abc01000");
    unit_write_file(j, "j", 1);
    snprintf(j, sizeof j, "%s/%s.tmp", inc, id1a);
    unit_write_file(j, "j", 1);
    /* a committed file of slot 1 is not incoming: it stays */
    ck_assert(spool_path_queue(q, id1q, p, sizeof p));
    unit_write_file(p, "q", 1);

    ck_assert_int_eq(unit_count_entries(inc), 7);
    ck_assert_int_eq(spool_clean_incoming(q, 1), 3);
    ck_assert_int_eq(unit_count_entries(inc), 4);
    ck_assert(spool_path_incoming(q, id2, p, sizeof p));
    ck_assert(unit_exists(p));
    ck_assert(spool_path_queue(q, id1q, p, sizeof p));
    ck_assert(unit_exists(p));
    ck_assert_int_eq(spool_clean_incoming(q, 1), 0);
    ck_assert_int_eq(spool_clean_incoming(q, 3), 0);
    ck_assert_int_eq(spool_clean_incoming(q, 2), 1);
    ck_assert_int_eq(unit_count_entries(inc), 3);
    spool_file_abort(a);
    spool_file_abort(b);
    spool_file_abort(c2);

    char missing[PATH_MAX + 32];
    snprintf(missing, sizeof missing, "%s/none", q);
    ck_assert_int_eq(spool_clean_incoming(missing, 1), 0);
}
END_TEST

/* test_reuse_free_file - a file in free/ (a finished message, bigger than
 * the new one) is taken for the next message: same inode, exact new
 * content and size, free/ empty after; and the commit links new/ID */
START_TEST(test_reuse_free_file)
{
    char q[PATH_MAX];
    make_spool(q);
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    struct spool_committer *sc = spool_committer_new(base, q, methods[_i]);
    ck_assert_ptr_nonnull(sc);
    /* an old finished file of 300,000 bytes in free/ */
    char old_id[SPOOL_ID_LEN + 1], freep[SPOOL_PATH_MAX];
    spool_id_new(5, old_id);
    ck_assert(str_fmt(freep, sizeof freep, "%s/free/%s", q, old_id));
    FILE *f = fopen(freep, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 300000; i++)
        fputc('Z', f);
    fclose(f);
    struct stat before;
    ck_assert_int_eq(stat(freep, &before), 0);

    char id[SPOOL_ID_LEN + 1], fin[SPOOL_PATH_MAX], marker[SPOOL_PATH_MAX];
    spool_id_new(3, id);
    ck_assert(spool_path_queue(q, id, fin, sizeof fin));
    ck_assert(str_fmt(marker, sizeof marker, "%s/new/%s", q, id));
    struct spool_envelope env = sample_env();
    struct spool_file *sf = spool_file_create(q, id, &env);
    ck_assert_ptr_nonnull(sf);
    ck_assert_msg(!unit_exists(freep), "the free file was not taken");
    size_t clen = 5000;
    char *content = sample_content(clen);
    ck_assert_int_eq(spool_file_write(sf, content, clen), 0);
    struct waiter w = {base, 1, 0, 0, false};
    spool_commit(sc, sf, on_commit, &w);
    run_until(&w);
    ck_assert_int_eq(w.ok_calls, 1);
    struct stat after, st_marker;
    ck_assert_int_eq(stat(fin, &after), 0);
    ck_assert_uint_eq(after.st_ino, before.st_ino); /* the same file, no new inode */
    ck_assert_int_lt(after.st_size, 300000);
    check_message(fin, id, &env, content, clen); /* exact: nothing of the old content is left */
    ck_assert_int_eq(stat(marker, &st_marker), 0);
    ck_assert_uint_eq(st_marker.st_ino, after.st_ino);

    /* free/ empty: the next file is a new one */
    char id2[SPOOL_ID_LEN + 1];
    spool_id_new(3, id2);
    sf = spool_file_create(q, id2, &env);
    ck_assert_ptr_nonnull(sf);
    spool_file_abort(sf);
    spool_committer_free(sc);
    event_base_free(base);
    free(content);
}
END_TEST

/* ---- suite ---- */

int main(void)
{
    Suite *s = suite_create("spool");
    TCase *tc = unit_tcase("ids", 30);
    tcase_add_loop_test(tc, test_id_format, 0, COUNT(id_slots));
    tcase_add_test(tc, test_id_monotonic);
    tcase_add_test(tc, test_id_valid);
    tcase_add_test(tc, test_paths);
    suite_add_tcase(s, tc);

    tc = unit_tcase("dirs", 30);
    tcase_add_test(tc, test_init_dirs);
    tcase_add_test(tc, test_init_dirs_errors);
    tcase_add_test(tc, test_clean_incoming);
    suite_add_tcase(s, tc);

    tc = unit_tcase("commit", 60);
    tcase_add_loop_test(tc, test_commit_read, 0, COUNT(methods));
    tcase_add_loop_test(tc, test_commit_batch, 0, COUNT(methods));
    tcase_add_loop_test(tc, test_commit_fails, 0, COUNT(methods));
    tcase_add_loop_test(tc, test_committer_free_pending, 0, COUNT(methods));
    tcase_add_loop_test(tc, test_committer_new_fails, 0, COUNT(methods));
    tcase_add_test(tc, test_file_abort);
    tcase_add_test(tc, test_file_create_refusals);
    tcase_add_loop_test(tc, test_reuse_free_file, 0, COUNT(methods));
    suite_add_tcase(s, tc);

    tc = unit_tcase("read", 30);
    tcase_add_loop_test(tc, test_read_table, 0, COUNT(read_cases));
    tcase_add_test(tc, test_read_states);
    suite_add_tcase(s, tc);

    Suite *suites[] = {s};
    return unit_run(suites, 1);
}
