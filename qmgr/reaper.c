/* reaper.c - queue file removal (and recycling into free/) off the event
 * loop. */
#include "reaper.h"
#include "log.h"
#include "spool.h"
#include "str.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define REAPER_MAX 100000 /* paths waiting at most; beyond, unlink in place */

#define POOL_RECOUNT 256 /* recount free/ after this many recycled files */

struct item {
    char *path;
    bool recycle;
    struct item *next;
};

static char *pool_dir;     /* free/ (NULL: no recycling) */
static size_t pool_max, pool_count, since_recount;

/* pool_recount - how many files free/ holds now (smtpd takes them) */
static void pool_recount(void)
{
    DIR *d = opendir(pool_dir);
    size_t n = 0;
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            n += de->d_name[0] != '.';
        closedir(d);
    }
    pool_count = n;
    since_recount = 0;
}

/* recycle - a finished queue file into free/ while it has room, else gone */
static void recycle_path(const char *path)
{
    const char *name = strrchr(path, '/');
    char dest[SPOOL_PATH_MAX];
    if (pool_dir && name && spool_id_valid(name + 1)) {
        if (since_recount++ >= POOL_RECOUNT)
            pool_recount();
        if (pool_count < pool_max && str_fmt(dest, sizeof dest, "%s%s", pool_dir, name) && rename(path, dest) == 0) {
            pool_count++;
            return;
        }
    }
    if (unlink(path) != 0 && errno != ENOENT)
        log_error_errno("cannot remove %s", path);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct item *head, *tail;
static size_t queued;
static bool running, stopping;
static pthread_t thread;

static void remove_path(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        log_error_errno("cannot remove %s", path);
}

static void *reaper_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (head == NULL && !stopping)
            pthread_cond_wait(&cv, &mu);
        if (head == NULL && stopping)
            break;
        struct item *it = head;
        head = it->next;
        if (head == NULL)
            tail = NULL;
        queued--;
        pthread_mutex_unlock(&mu);
        if (it->recycle)
            recycle_path(it->path);
        else
            remove_path(it->path);
        free(it->path);
        free(it);
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

bool reaper_start(const char *qdir, size_t free_pool)
{
    stopping = false;
    free(pool_dir);
    pool_dir = NULL;
    pool_max = free_pool;
    char path[SPOOL_PATH_MAX];
    if (free_pool > 0 && str_fmt(path, sizeof path, "%s/free", qdir) && (pool_dir = str_dup(path)) != NULL)
        pool_recount();
    if ((errno = pthread_create(&thread, NULL, reaper_main, NULL)) != 0)
        return false;
    running = true;
    return true;
}

static void enqueue(const char *path, bool recycle)
{
    struct item *it = running ? malloc(sizeof *it) : NULL;
    if (it && (it->path = str_dup(path)) == NULL) {
        free(it);
        it = NULL;
    }
    pthread_mutex_lock(&mu);
    if (it == NULL || queued >= REAPER_MAX) {
        pthread_mutex_unlock(&mu);
        if (it) {
            free(it->path);
            free(it);
        }
        remove_path(path);
        return;
    }
    it->recycle = recycle;
    it->next = NULL;
    if (tail)
        tail->next = it;
    else
        head = it;
    tail = it;
    queued++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

void reaper_unlink(const char *path) { enqueue(path, false); }

void reaper_recycle(const char *path) { enqueue(path, true); }

void reaper_stop(void)
{
    if (!running)
        return;
    pthread_mutex_lock(&mu);
    stopping = true;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(thread, NULL);
    running = false;
    free(pool_dir);
    pool_dir = NULL;
}
