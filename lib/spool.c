/* spool.c - queue ids, spool paths, message files and the group committer. */
/* syncfs needs _GNU_SOURCE, set for the whole build in Makefile.am. */
#include "spool.h"
#include "buf.h"
#include "log.h"
#include "str.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ENVELOPE_MAX (SPOOL_RCPT_MAX * 600 + 64 * 1024) /* bound on the envelope part */

/* spool_id_new - monotonic id: microseconds, slot, sequence */
void spool_id_new(int slot, char id[SPOOL_ID_LEN + 1])
{
    static uint64_t last_us;
    static unsigned seq;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t now = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    if (now > last_us) {
        last_us = now;
        seq = 0;
    } else if (++seq > 0xfff) {
        last_us++;
        seq = 0;
    }
    str_fmt(id, SPOOL_ID_LEN + 1, "%013llX%02X%03X", (unsigned long long)(last_us & 0xfffffffffffffULL),
            (unsigned)(slot & 0xff), seq);
}

/* spool_id_valid - 18 upper-case hex digits */
bool spool_id_valid(const char *s)
{
    size_t i;
    for (i = 0; i < SPOOL_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return s[i] == '\0';
}

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'A' + 10; }

/* spool_id_slot - producer slot of an id */
int spool_id_slot(const char *id) { return hexval(id[13]) * 16 + hexval(id[14]); }

/* spool_path_incoming - incoming/ID */
bool spool_path_incoming(const char *qdir, const char *id, char *out, size_t len)
{
    return spool_id_valid(id) && str_fmt(out, len, "%s/incoming/%s", qdir, id);
}

/* spool_path_queue - queue/XX/ID, XX = low digits of the time part */
bool spool_path_queue(const char *qdir, const char *id, char *out, size_t len)
{
    return spool_id_valid(id) && str_fmt(out, len, "%s/queue/%c%c/%s", qdir, id[11], id[12], id);
}

/* make_dir - mkdir if missing, then fix mode and owner */
static int make_dir(const char *path, mode_t mode, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST) {
        str_fmt(err, errlen, "mkdir %s: %s", path, strerror(errno));
        return -1;
    }
    if (uid != (uid_t)-1 && chown(path, uid, gid) != 0) {
        str_fmt(err, errlen, "chown %s: %s", path, strerror(errno));
        return -1;
    }
    if (chmod(path, mode) != 0) {
        str_fmt(err, errlen, "chmod %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* spool_init_dirs - the spool's directory tree */
int spool_init_dirs(const char *qdir, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    char path[SPOOL_PATH_MAX];
    static const char *const subdirs[] = {"incoming", "queue", "new", "index", "free"};
    for (size_t i = 0; i < 5; i++) {
        if (!str_fmt(path, sizeof path, "%s/%s", qdir, subdirs[i]))
            return str_copy(err, errlen, "queue_directory path too long"), errno = ENAMETOOLONG, -1;
        if (make_dir(path, 0700, uid, gid, err, errlen) != 0)
            return -1;
    }
    for (int h = 0; h < 256; h++) {
        str_fmt(path, sizeof path, "%s/queue/%02X", qdir, h);
        if (make_dir(path, 0700, uid, gid, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* spool_clean_incoming - drop unfinished files of one producer slot */
int spool_clean_incoming(const char *qdir, int slot)
{
    char path[SPOOL_PATH_MAX];
    str_fmt(path, sizeof path, "%s/incoming", qdir);
    DIR *d = opendir(path);
    if (d == NULL)
        return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!spool_id_valid(de->d_name) || spool_id_slot(de->d_name) != slot)
            continue;
        if (spool_path_incoming(qdir, de->d_name, path, sizeof path) && unlink(path) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

struct spool_file {
    int fd;
    char id[SPOOL_ID_LEN + 1];
    char incoming[SPOOL_PATH_MAX];
    char final[SPOOL_PATH_MAX];
    char marker[SPOOL_PATH_MAX];    /* new/ID: committed, maybe not yet in qmgr's index */
    size_t content_len;
    bool reused;                    /* a file from free/: cut to length at the end */
    bool failed;
};

/* write_all - write(2) until done */
static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* field_ok - envelope fields are single-line text */
static bool field_ok(const char *s)
{
    size_t n = strlen(s);
    return n <= SPOOL_FIELD_MAX && memchr(s, '\n', n) == NULL && memchr(s, '\r', n) == NULL;
}

static const char *nz(const char *s) { return s ? s : ""; }

/* ---- free/: finished queue files kept for reuse (qmgr puts them there) ----
 * Taking one is a rename(2) into incoming/; writing over its blocks needs
 * no allocation, and nobody pays for an inode allocation and removal. The
 * names are read in batches; two processes may race for a name, and the
 * loser tries the next. Used from one thread per process. */
#define POOL_BATCH 128
#define POOL_EMPTY_MS 20 /* after finding free/ empty, look again this much later */

static struct {
    char names[POOL_BATCH][SPOOL_ID_LEN + 1];
    size_t n, next;
    int64_t empty_until_ms;
} pool;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pool_read(const char *qdir)
{
    char path[SPOOL_PATH_MAX];
    pool.n = pool.next = 0;
    if (!str_fmt(path, sizeof path, "%s/free", qdir))
        return;
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *de;
    while (pool.n < POOL_BATCH && (de = readdir(d)) != NULL)
        if (spool_id_valid(de->d_name))
            str_copy(pool.names[pool.n++], SPOOL_ID_LEN + 1, de->d_name);
    closedir(d);
    if (pool.n > 1)
        pool.next = (size_t)random() % pool.n; /* another process reads the same order */
}

/* pool_take - move a free file to dest; false when there is none */
static bool pool_take(const char *qdir, const char *dest)
{
    for (int round = 0; round < 2; round++) {
        for (size_t tried = 0; pool.n > 0 && tried < pool.n; tried++) {
            char *name = pool.names[pool.next];
            pool.next = (pool.next + 1) % pool.n;
            if (name[0] == '\0')
                continue;
            char src[SPOOL_PATH_MAX];
            bool ok = str_fmt(src, sizeof src, "%s/free/%s", qdir, name) && rename(src, dest) == 0;
            name[0] = '\0'; /* taken, by us or by another process */
            if (ok)
                return true;
        }
        if (round == 1 || mono_ms() < pool.empty_until_ms)
            return false;
        pool_read(qdir);
        if (pool.n == 0) {
            pool.empty_until_ms = mono_ms() + POOL_EMPTY_MS;
            return false;
        }
    }
    return false;
}

/* spool_file_create - incoming/ID with header and envelope */
struct spool_file *spool_file_create(const char *qdir, const char *id, const struct spool_envelope *env)
{
    const char *fields[] = {nz(env->sender),   nz(env->client_addr), nz(env->client_name), nz(env->helo),
                            nz(env->protocol), nz(env->body_type),   nz(env->vg),          nz(env->listener)};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!field_ok(fields[i]))
            return errno = EINVAL, NULL;
    if (env->n_rcpts == 0 || env->n_rcpts > SPOOL_RCPT_MAX)
        return errno = EINVAL, NULL;
    struct spool_file *sf = calloc(1, sizeof *sf);
    if (sf == NULL)
        return NULL;
    if (!str_copy(sf->id, sizeof sf->id, id) || !spool_path_incoming(qdir, id, sf->incoming, sizeof sf->incoming) ||
        !spool_path_queue(qdir, id, sf->final, sizeof sf->final) ||
        !str_fmt(sf->marker, sizeof sf->marker, "%s/new/%s", qdir, id)) {
        free(sf);
        return errno = ENAMETOOLONG, NULL;
    }
    struct buf b;
    buf_init(&b, ENVELOPE_MAX);
    bool ok = buf_printf(&b, "BWQ1 %016d\n", 0) &&
              buf_printf(&b, "T %lld\nI %s\nS %s\nC %s\nN %s\nH %s\nP %s\nB %s\nU %d\nV %s\nL %s\n",
                         (long long)env->arrival_us, id, fields[0], fields[1], fields[2], fields[3], fields[4],
                         fields[5], env->smtputf8 ? 1 : 0, fields[6], fields[7]);
    for (size_t i = 0; ok && i < env->n_rcpts; i++)
        ok = field_ok(env->rcpts[i]) && buf_printf(&b, "R- %s\n", env->rcpts[i]);
    ok = ok && buf_puts(&b, "M\n");
    if (!ok) {
        buf_free(&b);
        free(sf);
        return errno = EINVAL, NULL;
    }
    sf->reused = pool_take(qdir, sf->incoming);
    sf->fd = sf->reused ? open(sf->incoming, O_WRONLY | O_CLOEXEC) : -1;
    if (sf->reused && sf->fd < 0) {
        unlink(sf->incoming);
        sf->reused = false;
    }
    if (!sf->reused)
        sf->fd = open(sf->incoming, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (sf->fd < 0 || write_all(sf->fd, b.data, b.len) != 0) {
        int e = errno;
        if (sf->fd >= 0) {
            close(sf->fd);
            unlink(sf->incoming);
        }
        buf_free(&b);
        free(sf);
        errno = e;
        return NULL;
    }
    buf_free(&b);
    return sf;
}

/* spool_file_write - append content */
int spool_file_write(struct spool_file *sf, const void *data, size_t len)
{
    if (sf->failed)
        return -1;
    if (write_all(sf->fd, data, len) != 0) {
        sf->failed = true;
        return -1;
    }
    sf->content_len += len;
    return 0;
}

size_t spool_file_size(const struct spool_file *sf) { return sf->content_len; }

/* spool_file_abort - discard an unfinished file */
void spool_file_abort(struct spool_file *sf)
{
    if (sf == NULL)
        return;
    close(sf->fd);
    unlink(sf->incoming);
    free(sf);
}

/* finish - trailer and content length; false on I/O error */
static bool finish(struct spool_file *sf)
{
    char head[SPOOL_HEADER_LEN + 1];
    str_fmt(head, sizeof head, "BWQ1 %016zu\n", sf->content_len);
    if (sf->failed || write_all(sf->fd, "E\n", 2) != 0)
        return false;
    if (sf->reused) { /* whatever the file held before ends here */
        off_t end = lseek(sf->fd, 0, SEEK_CUR);
        if (end < 0 || ftruncate(sf->fd, end) != 0)
            return false;
    }
    return pwrite(sf->fd, head, SPOOL_HEADER_LEN, 0) == SPOOL_HEADER_LEN;
}

/* link_marker - new/ID, a second name of the file being committed: it
 * tells qmgr, even after a crash, that this message may not be in its
 * index yet (qmgr removes it once the index holds the message) */
static bool link_marker(struct spool_file *sf)
{
    return link(sf->incoming, sf->marker) == 0 || errno == EEXIST;
}

/* fsync_dir - one directory's entries to disk */
static int fsync_dir(const char *path)
{
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    errno = e;
    return rc;
}

/* spool_write_sync - create, write and commit one message synchronously */
int spool_write_sync(const char *qdir, int slot, const struct spool_envelope *env, const void *content, size_t len,
                     char id[SPOOL_ID_LEN + 1])
{
    spool_id_new(slot, id);
    struct spool_file *sf = spool_file_create(qdir, id, env);
    if (sf == NULL)
        return -1;
    char dir[SPOOL_PATH_MAX];
    str_fmt(dir, sizeof dir, "%s/queue/%c%c", qdir, id[11], id[12]);
    int dfd = -1;
    char newdir[SPOOL_PATH_MAX];
    str_fmt(newdir, sizeof newdir, "%s/new", qdir);
    if (spool_file_write(sf, content, len) != 0 || !finish(sf) || fdatasync(sf->fd) != 0 || !link_marker(sf) ||
        rename(sf->incoming, sf->final) != 0) {
        int e = errno;
        unlink(sf->marker);
        spool_file_abort(sf);
        return errno = e, -1;
    }
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fsync(dfd) != 0 || fsync_dir(newdir) != 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        unlink(sf->marker);
        unlink(sf->final);
        close(sf->fd);
        free(sf);
        return errno = e, -1;
    }
    close(dfd);
    close(sf->fd);
    free(sf);
    return 0;
}

/* spool_set_rcpt_state - one state byte in place */
int spool_set_rcpt_state(int fd, off_t state_offset, char state)
{
    if (strchr("-DBNX", state) == NULL || state == '\0')
        return errno = EINVAL, -1;
    return pwrite(fd, &state, 1, state_offset) == 1 ? 0 : -1;
}

/* ---- group committer ---- */

struct commit_req {
    struct spool_file *sf;
    spool_commit_cb cb;
    void *arg;
    bool ok;
    struct commit_req *next;
};

struct spool_committer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct commit_req *head, *tail; /* waiting for the next batch */
    bool stop;
    int notify[2];                  /* thread -> loop: batch pointers */
    struct event *notify_ev;
    enum spool_sync method;
    int sync_fd;                    /* the queue directory, for syncfs */
    int dir_fd[256];                /* queue/XX, for fsync of entries */
    int new_fd;                     /* new/, likewise */
    size_t pending;
    uint64_t batches, files;
};

/* commit_batch - make one batch durable (runs in the committer thread) */
static void commit_batch(struct spool_committer *sc, struct commit_req *batch)
{
    bool any = false;
    for (struct commit_req *r = batch; r; r = r->next) {
        if (!r->ok)
            continue;
        if (sc->method == SPOOL_SYNC_FSYNC && fdatasync(r->sf->fd) != 0) {
            log_error_errno("%s: fdatasync %s", r->sf->id, r->sf->incoming);
            r->ok = false;
        }
        any = any || r->ok;
    }
    if (any && sc->method == SPOOL_SYNC_SYNCFS && syncfs(sc->sync_fd) != 0) {
        log_error_errno("syncfs of the spool");
        for (struct commit_req *r = batch; r; r = r->next)
            r->ok = false;
    }
    uint8_t touched[32] = {0};
    for (struct commit_req *r = batch; r; r = r->next) {
        if (r->ok && !link_marker(r->sf)) {
            log_error_errno("%s: link to %s", r->sf->id, r->sf->marker);
            r->ok = false;
        }
        if (r->ok && rename(r->sf->incoming, r->sf->final) != 0) {
            log_error_errno("%s: rename to %s", r->sf->id, r->sf->final);
            unlink(r->sf->marker);
            r->ok = false;
        }
        if (r->ok) {
            int h = hexval(r->sf->id[11]) * 16 + hexval(r->sf->id[12]);
            touched[h / 8] |= (uint8_t)(1u << (h % 8));
        }
    }
    bool dirs_ok = true;
    if (sc->method == SPOOL_SYNC_SYNCFS) {
        for (struct commit_req *r = batch; r; r = r->next)
            if (r->ok) {
                dirs_ok = syncfs(sc->sync_fd) == 0;
                break;
            }
    } else {
        for (int h = 0; h < 256; h++)
            if ((touched[h / 8] & (1u << (h % 8))) && fsync(sc->dir_fd[h]) != 0)
                dirs_ok = false;
        if (dirs_ok && fsync(sc->new_fd) != 0)
            dirs_ok = false;
    }
    if (!dirs_ok)
        log_error_errno("flush of spool directory entries");
    for (struct commit_req *r = batch; r; r = r->next) {
        close(r->sf->fd);
        r->sf->fd = -1;
        if (!r->ok) {
            unlink(r->sf->incoming);
        } else if (!dirs_ok) {
            unlink(r->sf->marker);
            unlink(r->sf->final); /* not known durable: the client gets 4xx and retries */
            r->ok = false;
        }
    }
}

/* committer_main - the thread: take everything queued, commit, report */
static void *committer_main(void *arg)
{
    struct spool_committer *sc = arg;
    for (;;) {
        pthread_mutex_lock(&sc->mu);
        while (sc->head == NULL && !sc->stop)
            pthread_cond_wait(&sc->cv, &sc->mu);
        struct commit_req *batch = sc->head;
        sc->head = sc->tail = NULL;
        bool stop = sc->stop;
        pthread_mutex_unlock(&sc->mu);
        if (batch == NULL && stop)
            return NULL;
        commit_batch(sc, batch);
        ssize_t w;
        do
            w = write(sc->notify[1], &batch, sizeof batch);
        while (w < 0 && errno == EINTR);
        if (w != (ssize_t)sizeof batch)
            log_panic("spool committer: cannot notify the event loop: %s", strerror(errno));
    }
}

/* committer_done - loop side: deliver results of finished batches */
static void committer_done(evutil_socket_t fd, short what, void *arg)
{
    struct spool_committer *sc = arg;
    struct commit_req *batch;
    for (;;) {
        ssize_t n = read(fd, &batch, sizeof batch);
        if (n != (ssize_t)sizeof batch)
            break;
        size_t count = 0;
        while (batch) {
            struct commit_req *next = batch->next;
            sc->pending--;
            count++;
            spool_commit_cb cb = batch->cb;
            void *cb_arg = batch->arg;
            bool ok = batch->ok;
            free(batch->sf);
            free(batch);
            cb(cb_arg, ok);
            batch = next;
        }
        sc->batches++;
        sc->files += count;
    }
}

/* spool_committer_new - start the thread */
struct spool_committer *spool_committer_new(struct event_base *base, const char *qdir, enum spool_sync method)
{
    struct spool_committer *sc = calloc(1, sizeof *sc);
    if (sc == NULL)
        return NULL;
    sc->method = method;
    sc->notify[0] = sc->notify[1] = sc->sync_fd = sc->new_fd = -1;
    for (int h = 0; h < 256; h++)
        sc->dir_fd[h] = -1;
    char path[SPOOL_PATH_MAX];
    str_fmt(path, sizeof path, "%s/queue", qdir);
    if ((sc->sync_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        goto fail;
    if (method == SPOOL_SYNC_FSYNC) {
        for (int h = 0; h < 256; h++) {
            str_fmt(path, sizeof path, "%s/queue/%02X", qdir, h);
            if ((sc->dir_fd[h] = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
                goto fail;
        }
        str_fmt(path, sizeof path, "%s/new", qdir);
        if ((sc->new_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
            goto fail;
    }
    if (pipe2(sc->notify, O_CLOEXEC) != 0)
        goto fail;
    evutil_make_socket_nonblocking(sc->notify[0]);
    sc->notify_ev = event_new(base, sc->notify[0], EV_READ | EV_PERSIST, committer_done, sc);
    if (sc->notify_ev == NULL || event_add(sc->notify_ev, NULL) != 0)
        goto fail;
    pthread_mutex_init(&sc->mu, NULL);
    pthread_cond_init(&sc->cv, NULL);
    if ((errno = pthread_create(&sc->thread, NULL, committer_main, sc)) != 0) {
        pthread_mutex_destroy(&sc->mu);
        pthread_cond_destroy(&sc->cv);
        goto fail;
    }
    return sc;
fail:;
    int e = errno;
    if (sc->notify_ev)
        event_free(sc->notify_ev);
    for (int h = 0; h < 256; h++)
        if (sc->dir_fd[h] >= 0)
            close(sc->dir_fd[h]);
    if (sc->sync_fd >= 0)
        close(sc->sync_fd);
    if (sc->new_fd >= 0)
        close(sc->new_fd);
    if (sc->notify[0] >= 0) {
        close(sc->notify[0]);
        close(sc->notify[1]);
    }
    free(sc);
    errno = e;
    return NULL;
}

/* spool_commit - queue a finished file for the next batch */
void spool_commit(struct spool_committer *sc, struct spool_file *sf, spool_commit_cb cb, void *arg)
{
    struct commit_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        log_fatal("spool_commit: out of memory"); /* the client sees a dropped connection, no 250 */
    r->sf = sf;
    r->cb = cb;
    r->arg = arg;
    r->ok = finish(sf);
    if (!r->ok)
        log_error_errno("%s: cannot finish queue file", sf->id);
    pthread_mutex_lock(&sc->mu);
    if (sc->tail)
        sc->tail->next = r;
    else
        sc->head = r;
    sc->tail = r;
    sc->pending++;
    pthread_cond_signal(&sc->cv);
    pthread_mutex_unlock(&sc->mu);
}

size_t spool_committer_pending(const struct spool_committer *sc) { return sc->pending; }

void spool_committer_stats(const struct spool_committer *sc, uint64_t *batches, uint64_t *files)
{
    *batches = sc->batches;
    *files = sc->files;
}

/* spool_committer_free - stop the thread and free */
void spool_committer_free(struct spool_committer *sc)
{
    if (sc == NULL)
        return;
    pthread_mutex_lock(&sc->mu);
    sc->stop = true;
    pthread_cond_signal(&sc->cv);
    pthread_mutex_unlock(&sc->mu);
    pthread_join(sc->thread, NULL);
    struct commit_req *batch;
    while (read(sc->notify[0], &batch, sizeof batch) == (ssize_t)sizeof batch)
        while (batch) {
            struct commit_req *next = batch->next;
            free(batch->sf);
            free(batch);
            batch = next;
        }
    event_free(sc->notify_ev);
    close(sc->notify[0]);
    close(sc->notify[1]);
    close(sc->sync_fd);
    if (sc->new_fd >= 0)
        close(sc->new_fd);
    for (int h = 0; h < 256; h++)
        if (sc->dir_fd[h] >= 0)
            close(sc->dir_fd[h]);
    pthread_mutex_destroy(&sc->mu);
    pthread_cond_destroy(&sc->cv);
    free(sc);
}

/* ---- reader ---- */

static int bad(char *err, size_t errlen, const char *path, const char *why)
{
    str_fmt(err, errlen, "%s: %s", path, why);
    errno = EINVAL;
    return -1;
}

/* spool_message_read - parse and validate */
int spool_message_read(const char *path, struct spool_message *msg, char *err, size_t errlen)
{
    memset(msg, 0, sizeof *msg);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        str_fmt(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    size_t content_len = 0, cap_rcpts = 0;
    int rc = -1;
    bool saw_m = false;
    n = getline(&line, &cap, fp);
    if (n != SPOOL_HEADER_LEN || strncmp(line, "BWQ1 ", 5) != 0) {
        bad(err, errlen, path, "not a Breakwater queue file (bad header)");
        goto out;
    }
    line[n - 1] = '\0';
    int64_t v;
    if (strspn(line + 5, "0123456789") != 16 || !str_to_i64(line + 5, 0, INT64_MAX, &v)) {
        bad(err, errlen, path, "bad content length in header");
        goto out;
    }
    content_len = (size_t)v;
    off_t pos = SPOOL_HEADER_LEN;
    while ((n = getline(&line, &cap, fp)) > 0) {
        off_t here = pos;
        pos += n;
        if (pos > ENVELOPE_MAX) {
            bad(err, errlen, path, "envelope too large");
            goto out;
        }
        if (line[n - 1] != '\n' || n < 2) {
            bad(err, errlen, path, "truncated envelope");
            goto out;
        }
        line[n - 1] = '\0';
        if (strcmp(line, "M") == 0) {
            saw_m = true;
            break;
        }
        if (line[0] == 'R') {
            if (n < 4 || line[2] != ' ' || strchr("-DBNX", line[1]) == NULL) {
                bad(err, errlen, path, "bad recipient record");
                goto out;
            }
            if (msg->n_rcpts == cap_rcpts) {
                size_t nc = cap_rcpts ? cap_rcpts * 2 : 8;
                struct spool_rcpt *p = realloc(msg->rcpts, nc * sizeof *p);
                if (p == NULL)
                    goto out;
                msg->rcpts = p;
                cap_rcpts = nc;
            }
            struct spool_rcpt *r = &msg->rcpts[msg->n_rcpts];
            r->state = line[1];
            r->state_offset = here + 1;
            if ((r->address = str_dup(line + 3)) == NULL)
                goto out;
            msg->n_rcpts++;
            continue;
        }
        if (line[1] != ' ') {
            bad(err, errlen, path, "bad envelope record");
            goto out;
        }
        char **slot = NULL;
        switch (line[0]) {
        case 'T':
            if (!str_to_i64(line + 2, 0, INT64_MAX, &msg->arrival_us)) {
                bad(err, errlen, path, "bad arrival time");
                goto out;
            }
            break;
        case 'I':
            if (!str_copy(msg->id, sizeof msg->id, line + 2) || !spool_id_valid(msg->id)) {
                bad(err, errlen, path, "bad queue id");
                goto out;
            }
            break;
        case 'U': msg->smtputf8 = line[2] == '1'; break;
        case 'S': slot = &msg->sender; break;
        case 'C': slot = &msg->client_addr; break;
        case 'N': slot = &msg->client_name; break;
        case 'H': slot = &msg->helo; break;
        case 'P': slot = &msg->protocol; break;
        case 'B': slot = &msg->body_type; break;
        case 'V': slot = &msg->vg; break;
        case 'L': slot = &msg->listener; break;
        default: break; /* later versions may add records */
        }
        if (slot) {
            free(*slot);
            if ((*slot = str_dup(line + 2)) == NULL)
                goto out;
        }
    }
    if (!saw_m || msg->id[0] == '\0' || msg->n_rcpts == 0 || msg->sender == NULL) {
        bad(err, errlen, path, "incomplete envelope");
        goto out;
    }
    msg->content_offset = pos;
    msg->content_len = content_len;
    struct stat st;
    char trailer[2];
    if (fstat(fileno(fp), &st) != 0 || (uint64_t)st.st_size != (uint64_t)pos + content_len + 2 ||
        pread(fileno(fp), trailer, 2, pos + (off_t)content_len) != 2 || memcmp(trailer, "E\n", 2) != 0) {
        bad(err, errlen, path, "incomplete content (size or trailer does not match)");
        goto out;
    }
    rc = 0;
out:
    free(line);
    fclose(fp);
    if (rc != 0) {
        int e = errno;
        spool_message_free(msg);
        errno = e ? e : EINVAL;
    }
    return rc;
}

/* spool_message_free - release a parsed message */
void spool_message_free(struct spool_message *msg)
{
    for (size_t i = 0; i < msg->n_rcpts; i++)
        free(msg->rcpts[i].address);
    free(msg->rcpts);
    free(msg->sender);
    free(msg->client_addr);
    free(msg->client_name);
    free(msg->helo);
    free(msg->protocol);
    free(msg->body_type);
    free(msg->vg);
    free(msg->listener);
    memset(msg, 0, sizeof *msg);
}
