/* children.c - spawn, reap and restart the daemons. */
#include "children.h"
#include "log.h"
#include "server.h"
#include "str.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define EARLY_DEATH_MS 5000   /* a daemon that dies sooner counts as failing */
#define FIRST_DELAY_MS 100    /* back-off starts here, then doubles */

enum child_state { CHILD_RUNNING, CHILD_WAITING, CHILD_STOPPED, CHILD_STATE_MAX };

static const char *const child_state_names[CHILD_STATE_MAX] = {"running", "waiting", "stopped"};

struct child {
    char name[32];
    char instance[64];          /* -n value ("" = none), e.g. the virtual gateway */
    int slot;
    bool listeners;
    bool retired;               /* removed by children_ensure: do not restart */
    pid_t pid;
    enum child_state state;
    int restarts;
    int quick_failures;         /* consecutive early deaths */
    struct timeval started;
    struct event *restart_timer;
    int ready_fd;               /* read end of the child's "initialised" pipe */
    struct event *ready_ev;
    bool ready;                 /* said so since its last start */
    struct children *owner;
};

struct children {
    struct event_base *base;
    char *daemon_directory, *config_dir;
    int master_pipe;
    const struct listeners *listeners;
    int throttle_max_ms;
    bool stopping;
    struct child **list;
    size_t n, cap;
};

static long ms_since(const struct timeval *t)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    return (now.tv_sec - t->tv_sec) * 1000L + (now.tv_usec - t->tv_usec) / 1000L;
}

struct children *children_new(struct event_base *base, const struct children_env *env)
{
    struct children *cs = calloc(1, sizeof *cs);
    if (cs == NULL)
        return NULL;
    cs->base = base;
    if (!children_set_env(cs, env)) {
        free(cs);
        return NULL;
    }
    return cs;
}

bool children_set_env(struct children *cs, const struct children_env *env)
{
    char *dd = str_dup(env->daemon_directory), *cd = str_dup(env->config_dir);
    if (dd == NULL || cd == NULL) {
        free(dd);
        free(cd);
        return false;
    }
    free(cs->daemon_directory);
    free(cs->config_dir);
    cs->daemon_directory = dd;
    cs->config_dir = cd;
    cs->master_pipe = env->master_pipe;
    cs->listeners = env->listeners;
    cs->throttle_max_ms = env->throttle_max_ms;
    return true;
}

/* exec_child - in the forked child: set up fds and exec the daemon */
static _Noreturn void exec_child(struct children *cs, struct child *c, int ready_w)
{
    int n = c->listeners ? cs->listeners->n : 0;
    int high[SERVER_LISTEN_MAX + 2];
    /* Move everything out of the way first, so the dup2s below cannot clobber:
     * 3 liveness pipe, 4.. listeners, then the ready pipe. */
    high[0] = fcntl(cs->master_pipe, F_DUPFD, 1000);
    for (int i = 0; i < n; i++)
        high[i + 1] = fcntl(cs->listeners->fds[i], F_DUPFD, 1000);
    high[n + 1] = fcntl(ready_w, F_DUPFD, 1000);
    for (int i = 0; i <= n + 1; i++)
        if (high[i] < 0 || dup2(high[i], SERVER_MASTER_FD + i) < 0)
            _exit(127);
    int ready_fd = SERVER_MASTER_FD + n + 1;
    close_range((unsigned)(ready_fd + 1), ~0u, 0);
    /* SIGHUP/SIGTERM stay blocked across exec until the daemon has its
     * handlers (server_main unblocks them): an early reload or stop is then
     * delivered late instead of killing the daemon with the default action. */
    sigset_t held;
    sigemptyset(&held);
    sigaddset(&held, SIGHUP);
    sigaddset(&held, SIGTERM);
    sigaddset(&held, SIGINT);
    sigprocmask(SIG_SETMASK, &held, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    char path[4096], slot[16], nl[16], rf[16];
    str_fmt(rf, sizeof rf, "%d", ready_fd);
    str_fmt(path, sizeof path, "%s/%s", cs->daemon_directory, c->name);
    str_fmt(slot, sizeof slot, "%d", c->slot);
    str_fmt(nl, sizeof nl, "%d", n);
    char *argv[] = {c->name, "-c", cs->config_dir, "-i", slot, "-l", nl, "-R", rf, NULL, NULL, NULL};
    if (c->instance[0]) {
        argv[9] = "-n";
        argv[10] = c->instance;
    }
    execv(path, argv);
    log_error_errno("cannot execute %s", path);
    _exit(127);
}

static void on_ready(evutil_socket_t fd, short what, void *arg)
{
    struct child *c = arg;
    char b[8];
    ssize_t n = read(fd, b, sizeof b);
    if (n > 0 && b[0] == 'R')
        c->ready = true;
    if (n > 0 && n < (ssize_t)sizeof b)
        return;
    event_del(c->ready_ev); /* EOF or error: the pipe has done its job */
    event_free(c->ready_ev);
    c->ready_ev = NULL;
    close(c->ready_fd);
    c->ready_fd = -1;
}

static void ready_close(struct child *c)
{
    if (c->ready_ev) {
        event_free(c->ready_ev);
        c->ready_ev = NULL;
    }
    if (c->ready_fd >= 0) {
        close(c->ready_fd);
        c->ready_fd = -1;
    }
}

/* child_start - fork and exec one daemon */
static void child_start(struct child *c)
{
    struct children *cs = c->owner;
    int rp[2];
    ready_close(c);
    c->ready = false;
    if (pipe2(rp, O_CLOEXEC) != 0) {
        rp[0] = rp[1] = -1;
        c->ready = true; /* cannot watch: do not wait for it */
    }
    pid_t pid = fork();
    if (pid < 0) {
        if (rp[0] >= 0) {
            close(rp[0]);
            close(rp[1]);
        }
        log_error_errno("fork for %s[%d]", c->name, c->slot);
        c->state = CHILD_WAITING;
        struct timeval tv = {1, 0};
        evtimer_add(c->restart_timer, &tv);
        return;
    }
    if (pid == 0)
        exec_child(cs, c, rp[1]);
    if (rp[0] >= 0) {
        close(rp[1]);
        c->ready_fd = rp[0];
        c->ready_ev = event_new(cs->base, rp[0], EV_READ | EV_PERSIST, on_ready, c);
        if (c->ready_ev == NULL || event_add(c->ready_ev, NULL) != 0) {
            ready_close(c);
            c->ready = true;
        }
    }
    c->pid = pid;
    c->state = CHILD_RUNNING;
    gettimeofday(&c->started, NULL);
    log_info("daemon %s[%d]%s%s started, pid %ld", c->name, c->slot, c->instance[0] ? " for " : "", c->instance,
             (long)pid);
}

static void on_restart_timer(evutil_socket_t fd, short what, void *arg)
{
    struct child *c = arg;
    if (!c->owner->stopping && !c->retired)
        child_start(c);
}

/* child_add - a new slot of a service, started at once */
static struct child *child_add(struct children *cs, const char *name, int slot, bool listeners, const char *instance)
{
    if (cs->n == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 8;
        struct child **p = realloc(cs->list, cap * sizeof *p);
        if (p == NULL)
            return NULL;
        cs->list = p;
        cs->cap = cap;
    }
    struct child *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    str_copy(c->name, sizeof c->name, name);
    str_copy(c->instance, sizeof c->instance, instance);
    c->slot = slot;
    c->listeners = listeners;
    c->owner = cs;
    c->ready_fd = -1;
    c->restart_timer = evtimer_new(cs->base, on_restart_timer, c);
    if (c->restart_timer == NULL) {
        free(c);
        return NULL;
    }
    cs->list[cs->n++] = c;
    child_start(c);
    return c;
}

/* ensure - exactly count slots of a service, with optional instance names */
static bool ensure(struct children *cs, const char *name, int count, bool listeners, const char *const *instances)
{
    for (int slot = 0; slot < count; slot++) {
        const char *inst = instances ? instances[slot] : "";
        bool found = false;
        for (size_t i = 0; i < cs->n; i++) {
            struct child *c = cs->list[i];
            if (strcmp(c->name, name) != 0 || c->slot != slot)
                continue;
            found = true;
            if (strcmp(c->instance, inst) != 0) {
                /* A new name for this slot: it restarts under that name. */
                str_copy(c->instance, sizeof c->instance, inst);
                if (c->state == CHILD_RUNNING && !c->retired)
                    kill(c->pid, SIGTERM);
            }
            if (c->retired) { /* wanted again */
                c->retired = false;
                if (c->state == CHILD_STOPPED)
                    child_start(c);
            }
        }
        if (!found && child_add(cs, name, slot, listeners, inst) == NULL)
            return false;
    }
    for (size_t i = 0; i < cs->n; i++) {
        struct child *c = cs->list[i];
        if (strcmp(c->name, name) == 0 && c->slot >= count && !c->retired) {
            c->retired = true;
            evtimer_del(c->restart_timer);
            if (c->state == CHILD_RUNNING)
                kill(c->pid, SIGTERM);
            else
                c->state = CHILD_STOPPED;
        }
    }
    return true;
}

bool children_ensure(struct children *cs, const char *name, int count, bool listeners)
{
    return ensure(cs, name, count, listeners, NULL);
}

bool children_ensure_named(struct children *cs, const char *name, const char *const *instances, int count)
{
    return ensure(cs, name, count, false, instances);
}

/* child_exited - log, then decide when to restart */
static void child_exited(struct child *c, int status)
{
    long ran = ms_since(&c->started);
    if (WIFSIGNALED(status))
        log_warn("daemon %s[%d] pid %ld killed by signal %d", c->name, c->slot, (long)c->pid, WTERMSIG(status));
    else if (WEXITSTATUS(status) != 0)
        log_warn("daemon %s[%d] pid %ld exited with status %d", c->name, c->slot, (long)c->pid,
                 WEXITSTATUS(status));
    else
        log_info("daemon %s[%d] pid %ld exited with status 0", c->name, c->slot, (long)c->pid);
    c->pid = 0;
    if (c->owner->stopping || c->retired) {
        c->state = CHILD_STOPPED;
        return;
    }
    c->restarts++;
    c->quick_failures = ran < EARLY_DEATH_MS ? c->quick_failures + 1 : 0;
    long delay = 0;
    if (c->quick_failures > 1) {
        delay = FIRST_DELAY_MS;
        for (int i = 2; i < c->quick_failures && delay < c->owner->throttle_max_ms; i++)
            delay *= 2;
        if (delay > c->owner->throttle_max_ms)
            delay = c->owner->throttle_max_ms;
        log_warn("daemon %s[%d] throttled: %d quick failures in a row, restart in %ld ms", c->name, c->slot,
                 c->quick_failures, delay);
    }
    c->state = CHILD_WAITING;
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    evtimer_add(c->restart_timer, &tv);
}

void children_reap(struct children *cs)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (size_t i = 0; i < cs->n; i++)
            if (cs->list[i]->pid == pid) {
                child_exited(cs->list[i], status);
                break;
            }
    }
}

void children_signal(struct children *cs, int sig)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->list[i]->state == CHILD_RUNNING)
            kill(cs->list[i]->pid, sig);
}

void children_stop(struct children *cs)
{
    cs->stopping = true;
    for (size_t i = 0; i < cs->n; i++) {
        evtimer_del(cs->list[i]->restart_timer);
        if (cs->list[i]->state == CHILD_WAITING)
            cs->list[i]->state = CHILD_STOPPED;
    }
    children_signal(cs, SIGTERM);
}

bool children_settled(const struct children *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        const struct child *c = cs->list[i];
        if (!c->retired && !c->ready && c->restarts == 0 && c->state == CHILD_RUNNING)
            return false;
    }
    return true;
}

int children_alive(const struct children *cs)
{
    int n = 0;
    for (size_t i = 0; i < cs->n; i++)
        n += cs->list[i]->state == CHILD_RUNNING;
    return n;
}

bool children_json(const struct children *cs, struct buf *out)
{
    bool ok = buf_puts(out, "[");
    for (size_t i = 0; ok && i < cs->n; i++) {
        const struct child *c = cs->list[i];
        ok = buf_printf(out,
                        "%s{\"name\": \"%s\", \"slot\": %d, \"instance\": \"%s\", \"pid\": %ld, \"state\": \"%s\", "
                        "\"restarts\": %d}",
                        i ? ", " : "", c->name, c->slot, c->instance, (long)c->pid, child_state_names[c->state],
                        c->restarts);
    }
    return ok && buf_puts(out, "]");
}

bool children_text(const struct children *cs, struct buf *out)
{
    bool ok = true;
    for (size_t i = 0; ok && i < cs->n; i++) {
        const struct child *c = cs->list[i];
        ok = buf_printf(out, "  %s[%d]%s%s: %s, pid %ld, restarts %d\n", c->name, c->slot, c->instance[0] ? " " : "",
                        c->instance, child_state_names[c->state], (long)c->pid, c->restarts);
    }
    return ok;
}

void children_free(struct children *cs)
{
    if (cs == NULL)
        return;
    for (size_t i = 0; i < cs->n; i++) {
        ready_close(cs->list[i]);
        event_free(cs->list[i]->restart_timer);
        free(cs->list[i]);
    }
    free(cs->list);
    free(cs->daemon_directory);
    free(cs->config_dir);
    free(cs);
}
