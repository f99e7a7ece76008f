/* reaper.c - queue file removal off the event loop. */
#include "reaper.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define REAPER_MAX 100000 /* paths waiting at most; beyond, unlink in place */

struct item {
    char *path;
    struct item *next;
};

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
        remove_path(it->path);
        free(it->path);
        free(it);
        pthread_mutex_lock(&mu);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

bool reaper_start(void)
{
    stopping = false;
    if ((errno = pthread_create(&thread, NULL, reaper_main, NULL)) != 0)
        return false;
    running = true;
    return true;
}

void reaper_unlink(const char *path)
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
}
