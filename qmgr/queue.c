/* queue.c - qmgr's queue: messages, per-(gateway, domain) queues, jobs,
 * retries, durable recipient states, removal and bounces. */
#include "queue.h"
#include "reaper.h"
#include "neighbour.h"
#include "addr.h"
#include "bounce.h"
#include "config.h"
#include "ipc.h"
#include "log.h"
#include "peer.h"
#include "spool.h"
#include "str.h"
#include "table.h"
#include "vg.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MSG_BUCKETS 65536
#define DOMAIN_BUCKETS 4096
#define JOB_BUCKETS 4096
#define DOMAIN_CONCURRENCY 20      /* jobs in flight per domain (destination_controls later) */
#define AGENT_CONCURRENCY 1000     /* jobs in flight per delivery agent */
#define RETRY_MAX 32
#define SITE_BUSY_S 10             /* a refused connection this soon after a delivery is pushback, not an outage */
#define JOB_RCPTS_MAX 1000         /* recipients per transaction (the delivery agent's bound) */
#define TICK_MS 500                /* retry timers and good-neighbour windows */

struct qrcpt {
    char *addr;
    off_t off;
    char state;        /* spool state: '-', 'D', 'B', 'X' */
    bool busy;         /* in a job */
    bool changed;      /* state to write */
    int attempts;
    int64_t next_try;  /* wall clock, milliseconds */
    char *error;
    char dsn[16];
};

struct qentry;

struct qmsg {
    char id[SPOOL_ID_LEN + 1];
    char *sender;
    char *vg;
    int64_t arrival_us;
    size_t size;
    struct qrcpt *r;
    size_t n;
    size_t open;       /* recipients not yet final */
    int entries;       /* qentries alive */
    bool dirty;
    bool sync_failed;
    struct qmsg *dirty_next;
    struct qmsg *hnext;
};

struct qdomain;

struct qentry {
    struct qmsg *m;
    struct qdomain *d;
    size_t *idx;
    size_t n_idx;
    int64_t due;       /* wall clock, milliseconds */
    char *relay;       /* mailctl queue redirect: deliver here instead */
    struct qentry *next, *prev;
};

struct qdomain {
    char *name;
    char *vg;
    struct qentry *ready_head, *ready_tail;
    struct qentry *wait;   /* deferred, any order */
    size_t n_ready, n_wait;
    int active;
    bool on_runq;
    struct qdomain *runq_next;
    struct qdomain *hnext;
    char *last_error;
    time_t last_attempt;
    /* state (issue 4): a down domain is parked and probed once per interval */
    enum domain_state state;
    time_t down_since, next_probe;
    uint64_t probe_job;
    int failures;          /* consecutive unreachable attempts */
    uint64_t delivered, hard_bounces, soft_bounces;
    time_t last_success;   /* a recipient was delivered then */
    /* destination_controls */
    int64_t retry[RETRY_MAX];
    int n_retry;           /* 0: the global retry_schedule */
    bool retry_zero;
    int max_connections;
    bool good_neighbor;
    struct gn gn;          /* the connections this domain gets now */
};

static const char *const domain_state_names[DOM_STATE_MAX] = {"up", "down"};

const char *domain_state_name(enum domain_state st)
{
    return st < DOM_STATE_MAX ? domain_state_names[st] : "?";
}

struct agent {
    struct peer *p;
    char name[96];
    char vg[64];
    int active;
    struct agent *next;
};

struct qjob {
    uint64_t id;
    bool probe;
    struct qentry *e;
    struct agent *a;
    size_t remaining;
    time_t started;
    struct qjob *hnext;
};

struct qmgr_queue {
    struct event_base *base;
    char *qdir;
    int64_t retry[RETRY_MAX];
    int n_retry;
    int64_t lifetime;
    char *hostname;
    char *bounce_vg;
    struct qmsg *msgs[MSG_BUCKETS];
    struct qdomain *domains[DOMAIN_BUCKETS];
    struct qjob *jobs[JOB_BUCKETS];
    size_t n_msgs;
    struct qdomain *runq_head, *runq_tail;
    struct agent *agents;
    uint64_t next_job;
    struct qmsg *dirty;
    struct event *kick_ev, *sync_ev, *retry_ev;
    bool use_syncfs;
    int sync_fd;       /* queue/ directory, for syncfs */
    struct table *controls; /* destination_controls */
    struct vg_set *vgs;     /* virtual gateways (which agents exist) */
};

static unsigned hash_str(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void kick(struct qmgr_queue *q) { event_active(q->kick_ev, EV_TIMEOUT, 0); }

/* ---- messages ---- */

static struct qmsg *msg_find(struct qmgr_queue *q, const char *id)
{
    for (struct qmsg *m = q->msgs[hash_str(id) % MSG_BUCKETS]; m; m = m->hnext)
        if (strcmp(m->id, id) == 0)
            return m;
    return NULL;
}

static void msg_free(struct qmgr_queue *q, struct qmsg *m)
{
    struct qmsg **pp = &q->msgs[hash_str(m->id) % MSG_BUCKETS];
    while (*pp && *pp != m)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = m->hnext;
    q->n_msgs--;
    for (size_t i = 0; i < m->n; i++) {
        free(m->r[i].addr);
        free(m->r[i].error);
    }
    free(m->r);
    free(m->sender);
    free(m->vg);
    free(m);
}

static void mark_dirty(struct qmgr_queue *q, struct qmsg *m)
{
    if (!m->dirty) {
        m->dirty = true;
        m->dirty_next = q->dirty;
        q->dirty = m;
    }
    event_active(q->sync_ev, EV_TIMEOUT, 0);
}

/* ---- domains ---- */

/* parse_schedule - "1m,5m,1h" (commas or spaces) into seconds */
static int parse_schedule(const char *text, int64_t *out)
{
    char *copy = str_dup(text), *cur = copy, *tok;
    int n = 0;
    while (copy && (tok = str_split_next(&cur)) != NULL && n < RETRY_MAX) {
        int64_t sec;
        if (parse_duration(tok, &sec) && sec > 0)
            out[n++] = sec;
    }
    free(copy);
    return n;
}

/* wall_ms - wall clock in milliseconds (retry times, shown to people) */
static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void domain_controls_rest(struct qdomain *d, const char *v, char *val, size_t vlen);

/* domain_controls - this domain's destination_controls entry, if any */
static void domain_controls(struct qmgr_queue *q, struct qdomain *d)
{
    d->n_retry = 0;
    d->retry_zero = false;
    d->max_connections = DOMAIN_CONCURRENCY;
    d->good_neighbor = true;
    const char *v = q->controls ? table_find_domain(q->controls, d->name, "default") : NULL;
    char val[1024];
    if (v && table_attr(v, "good_neighbor", val, sizeof val))
        d->good_neighbor = !(strcmp(val, "no") == 0 || strcmp(val, "0") == 0 || strcmp(val, "off") == 0);
    domain_controls_rest(d, v, val, sizeof val);
    if (d->gn.max == 0)
        gn_init(&d->gn, d->good_neighbor, d->max_connections, now_ms());
    else
        gn_configure(&d->gn, d->good_neighbor, d->max_connections, now_ms());
}

static void domain_controls_rest(struct qdomain *d, const char *v, char *val, size_t vlen)
{
    if (v == NULL)
        return;
    if (table_attr(v, "retry_schedule", val, vlen))
        d->n_retry = parse_schedule(val, d->retry);
    if (table_attr(v, "retry", val, vlen) && strcmp(val, "0") == 0)
        d->retry_zero = true;
    if (table_attr(v, "max_connections", val, vlen)) {
        int64_t n;
        if (str_to_i64(val, 1, 10000, &n))
            d->max_connections = (int)n;
    }
}

static struct qdomain *domain_get(struct qmgr_queue *q, const char *vg, const char *name, bool create)
{
    unsigned h = (hash_str(name) ^ hash_str(vg)) % DOMAIN_BUCKETS;
    for (struct qdomain *d = q->domains[h]; d; d = d->hnext)
        if (strcmp(d->name, name) == 0 && strcmp(d->vg, vg) == 0)
            return d;
    if (!create)
        return NULL;
    struct qdomain *d = calloc(1, sizeof *d);
    if (d == NULL || (d->name = str_dup(name)) == NULL || (d->vg = str_dup(vg)) == NULL) {
        if (d)
            free(d->name);
        free(d);
        return NULL;
    }
    d->hnext = q->domains[h];
    q->domains[h] = d;
    domain_controls(q, d);
    return d;
}

static void runq_add(struct qmgr_queue *q, struct qdomain *d)
{
    if (d->on_runq)
        return;
    d->on_runq = true;
    d->runq_next = NULL;
    if (q->runq_tail)
        q->runq_tail->runq_next = d;
    else
        q->runq_head = d;
    q->runq_tail = d;
}

static void ready_push(struct qmgr_queue *q, struct qentry *e)
{
    struct qdomain *d = e->d;
    e->next = NULL;
    e->prev = d->ready_tail;
    if (d->ready_tail)
        d->ready_tail->next = e;
    else
        d->ready_head = e;
    d->ready_tail = e;
    d->n_ready++;
    runq_add(q, d);
}

/* ready_push_front - first in line (released or redirected mail) */
static void ready_push_front(struct qmgr_queue *q, struct qentry *e)
{
    struct qdomain *d = e->d;
    e->prev = NULL;
    e->next = d->ready_head;
    if (d->ready_head)
        d->ready_head->prev = e;
    else
        d->ready_tail = e;
    d->ready_head = e;
    d->n_ready++;
    runq_add(q, d);
}

static struct qentry *ready_pop(struct qdomain *d)
{
    struct qentry *e = d->ready_head;
    if (e) {
        d->ready_head = e->next;
        if (d->ready_head)
            d->ready_head->prev = NULL;
        else
            d->ready_tail = NULL;
        d->n_ready--;
        e->next = e->prev = NULL;
    }
    return e;
}

static void wait_push(struct qentry *e)
{
    struct qdomain *d = e->d;
    e->prev = NULL;
    e->next = d->wait;
    if (d->wait)
        d->wait->prev = e;
    d->wait = e;
    d->n_wait++;
}

static void wait_remove(struct qentry *e)
{
    struct qdomain *d = e->d;
    if (e->prev)
        e->prev->next = e->next;
    else
        d->wait = e->next;
    if (e->next)
        e->next->prev = e->prev;
    d->n_wait--;
    e->next = e->prev = NULL;
}

/* ---- loading ---- */

/* msg_load - read a committed message and queue its pending recipients */
static bool msg_load(struct qmgr_queue *q, const char *id, bool log_new)
{
    if (msg_find(q, id))
        return true;
    char path[SPOOL_PATH_MAX], err[512];
    if (!spool_path_queue(q->qdir, id, path, sizeof path))
        return false;
    struct spool_message sm;
    if (spool_message_read(path, &sm, err, sizeof err) != 0) {
        log_warn("%s: cannot load: %s", id, err);
        return false;
    }
    struct qmsg *m = calloc(1, sizeof *m);
    if (m == NULL || (m->r = calloc(sm.n_rcpts, sizeof *m->r)) == NULL) {
        free(m);
        spool_message_free(&sm);
        log_error("%s: out of memory", id);
        return false;
    }
    str_copy(m->id, sizeof m->id, id);
    m->sender = sm.sender;
    sm.sender = NULL;
    m->vg = sm.vg && *sm.vg ? sm.vg : str_dup("default");
    if (m->vg == sm.vg)
        sm.vg = NULL;
    m->arrival_us = sm.arrival_us;
    m->size = sm.content_len;
    m->n = sm.n_rcpts;
    for (size_t i = 0; i < sm.n_rcpts; i++) {
        m->r[i].addr = sm.rcpts[i].address;
        sm.rcpts[i].address = NULL;
        m->r[i].off = sm.rcpts[i].state_offset;
        m->r[i].state = sm.rcpts[i].state;
        if (m->r[i].state == '-')
            m->open++;
    }
    spool_message_free(&sm);
    unsigned h = hash_str(id) % MSG_BUCKETS;
    m->hnext = q->msgs[h];
    q->msgs[h] = m;
    q->n_msgs++;
    if (log_new)
        log_msg(m->id, "from=<%s>, size=%zu, nrcpt=%zu (queue active)", m->sender, m->size, m->n);
    if (m->open == 0) { /* everything was done before a restart */
        mark_dirty(q, m);
        return true;
    }
    /* One entry per domain: all of its recipients go in one transaction. */
    bool *taken = calloc(m->n, sizeof *taken);
    if (taken == NULL)
        return false;
    for (size_t i = 0; i < m->n; i++) {
        if (taken[i] || m->r[i].state != '-')
            continue;
        char dom[ADDR_DOMAIN_MAX + 1];
        str_copy(dom, sizeof dom, addr_domain(m->r[i].addr));
        str_lower(dom);
        struct qdomain *d = domain_get(q, m->vg, dom, true);
        struct qentry *e = calloc(1, sizeof *e);
        size_t *idx = calloc(m->n, sizeof *idx);
        if (d == NULL || e == NULL || idx == NULL) {
            free(e);
            free(idx);
            log_error("%s: out of memory", id);
            break;
        }
        e->m = m;
        e->d = d;
        e->idx = idx;
        for (size_t j = i; j < m->n && e->n_idx < JOB_RCPTS_MAX; j++) {
            if (taken[j] || m->r[j].state != '-' || !str_case_eq(addr_domain(m->r[j].addr), dom))
                continue;
            taken[j] = true;
            e->idx[e->n_idx++] = j;
        }
        m->entries++;
        ready_push(q, e); /* past JOB_RCPTS_MAX the rest of the domain starts another entry below */
    }
    free(taken);
    kick(q);
    return true;
}

size_t qmgr_queue_scan(struct qmgr_queue *q)
{
    size_t n = 0;
    for (int h = 0; h < 256; h++) {
        char path[SPOOL_PATH_MAX];
        str_fmt(path, sizeof path, "%s/queue/%02X", q->qdir, h);
        DIR *dir = opendir(path);
        if (dir == NULL)
            continue;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL)
            if (spool_id_valid(de->d_name) && msg_load(q, de->d_name, false))
                n++;
        closedir(dir);
    }
    return n;
}

size_t qmgr_queue_count(const struct qmgr_queue *q) { return q->n_msgs; }

bool qmgr_queue_add(struct qmgr_queue *q, const char *id)
{
    return spool_id_valid(id) && msg_load(q, id, true);
}

/* ---- dispatch ---- */

/* agent_pick - the least busy agent of a virtual gateway (a gateway that is
 * no longer configured falls back to "default") */
static struct agent *agent_pick(struct qmgr_queue *q, const char *vg)
{
    if (q->vgs && vg_find(q->vgs, vg) == NULL)
        vg = "default";
    struct agent *best = NULL;
    for (struct agent *a = q->agents; a; a = a->next)
        if (strcmp(a->vg, vg) == 0 && a->active < AGENT_CONCURRENCY && (best == NULL || a->active < best->active))
            best = a;
    return best;
}

static bool job_send(struct qmgr_queue *q, struct agent *a, struct qjob *j)
{
    struct qentry *e = j->e;
    struct ipc_msg msg;
    bool ok = ipc_begin(&msg, e->relay ? IPC_QMGR_DELIVER_VIA : IPC_QMGR_DELIVER) && ipc_put_u64(&msg, j->id) &&
              ipc_put_str(&msg, e->m->id) && ipc_put_str(&msg, e->d->name) && ipc_put_str(&msg, e->d->vg) &&
              (e->relay == NULL || ipc_put_str(&msg, e->relay));
    for (size_t i = 0; ok && i < e->n_idx; i++)
        ok = ipc_put_str(&msg, e->m->r[e->idx[i]].addr);
    ok = ok && ipc_finish(&msg) && peer_send(a->p, &msg);
    ipc_msg_free(&msg);
    return ok;
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr_queue *q = arg;
    /* Round robin: each domain gets one job per turn while it can take more.
     * Domains whose gateway has no agent with room wait for the next kick. */
    struct qdomain *blocked = NULL, *blocked_tail = NULL;
    while (q->runq_head) {
        struct qdomain *d = q->runq_head;
        q->runq_head = d->runq_next;
        if (q->runq_head == NULL)
            q->runq_tail = NULL;
        struct agent *a = agent_pick(q, d->vg);
        if (a == NULL) {
            d->runq_next = NULL;
            if (blocked_tail)
                blocked_tail->runq_next = d;
            else
                blocked = d;
            blocked_tail = d;
            continue;
        }
        d->on_runq = false;
        if (d->ready_head == NULL || d->active >= d->gn.limit)
            continue; /* back on the queue when something changes */
        bool probe = false;
        if (d->state == DOM_DOWN && !(d->ready_head && d->ready_head->relay)) {
            /* Parked: one probe per retry interval, nothing else. */
            if (d->probe_job != 0 || time(NULL) < d->next_probe)
                continue;
            probe = true;
        }
        struct qentry *e = ready_pop(d);
        struct qjob *j = calloc(1, sizeof *j);
        if (j == NULL) {
            ready_push(q, e);
            break;
        }
        j->id = ++q->next_job;
        j->probe = probe;
        j->e = e;
        j->a = a;
        j->remaining = e->n_idx;
        j->started = time(NULL);
        for (size_t i = 0; i < e->n_idx; i++)
            e->m->r[e->idx[i]].busy = true;
        if (!job_send(q, a, j)) {
            log_warn("%s: cannot hand the job to delivery agent %s", e->m->id, a->name);
            for (size_t i = 0; i < e->n_idx; i++)
                e->m->r[e->idx[i]].busy = false;
            ready_push(q, e);
            free(j);
            break;
        }
        unsigned h = (unsigned)(j->id % JOB_BUCKETS);
        j->hnext = q->jobs[h];
        q->jobs[h] = j;
        d->active++;
        a->active++;
        d->last_attempt = j->started;
        if (probe) {
            d->probe_job = j->id;
            log_info("domain %s (vg %s): probe with %s", d->name, d->vg, e->m->id);
        }
        if (d->ready_head && d->state == DOM_UP)
            runq_add(q, d);
    }
    if (blocked) { /* still on the run queue (on_runq stays true), after what is left */
        if (q->runq_tail)
            q->runq_tail->runq_next = blocked;
        else
            q->runq_head = blocked;
        q->runq_tail = blocked_tail;
    }
}

/* ---- results ---- */

static struct qjob *job_find(struct qmgr_queue *q, uint64_t id)
{
    for (struct qjob *j = q->jobs[id % JOB_BUCKETS]; j; j = j->hnext)
        if (j->id == id)
            return j;
    return NULL;
}

static void job_unlink(struct qmgr_queue *q, struct qjob *j)
{
    struct qjob **pp = &q->jobs[j->id % JOB_BUCKETS];
    while (*pp && *pp != j)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = j->hnext;
}

static int64_t retry_delay(struct qmgr_queue *q, const struct qdomain *d, int attempts)
{
    const int64_t *sched = d && d->n_retry ? d->retry : q->retry;
    int n = d && d->n_retry ? d->n_retry : q->n_retry;
    if (n == 0)
        return 300;
    int i = attempts - 1 < n ? attempts - 1 : n - 1;
    return sched[i < 0 ? 0 : i];
}

/* job_done - every recipient of the job reported: requeue what is left */
static void job_done(struct qmgr_queue *q, struct qjob *j)
{
    struct qentry *e = j->e;
    struct qmsg *m = e->m;
    struct qdomain *d = e->d;
    job_unlink(q, j);
    if (d->probe_job == j->id)
        d->probe_job = 0;
    e->d->active--;
    j->a->active--;
    size_t keep = 0;
    int64_t due = 0;
    bool sent = false;
    for (size_t i = 0; i < e->n_idx; i++) {
        struct qrcpt *r = &m->r[e->idx[i]];
        r->busy = false;
        sent = sent || r->state == 'D';
        if (r->state == '-') {
            e->idx[keep++] = e->idx[i];
            if (due == 0 || r->next_try < due)
                due = r->next_try;
        }
    }
    e->n_idx = keep;
    if (sent)
        gn_delivered(&d->gn, m->size);
    if (keep == 0) {
        m->entries--;
        free(e->idx);
        free(e->relay);
        free(e);
        mark_dirty(q, m);
    } else if (due <= wall_ms()) {
        ready_push(q, e);
    } else {
        e->due = due;
        wait_push(e);
    }
    runq_add(q, d); /* a slot is free again */
    free(j);
    kick(q);
}

static void set_error(struct qrcpt *r, const char *dsn, const char *reply)
{
    free(r->error);
    r->error = str_dup(reply);
    str_copy(r->dsn, sizeof r->dsn, dsn);
}

bool qmgr_queue_result(struct qmgr_queue *q, struct peer *p, uint64_t job, const char *rcpt, unsigned status,
                       const char *dsn, const char *reply)
{
    struct qjob *j = job_find(q, job);
    if (j == NULL || j->a->p != p || status > RESULT_BOUNCED)
        return false;
    struct qentry *e = j->e;
    struct qmsg *m = e->m;
    struct qrcpt *r = NULL;
    for (size_t i = 0; i < e->n_idx; i++) {
        struct qrcpt *c = &m->r[e->idx[i]];
        if (c->busy && c->state == '-' && strcmp(c->addr, rcpt) == 0) {
            r = c;
            break;
        }
    }
    if (r == NULL)
        return false;
    r->busy = false; /* reported; job_done clears the rest */
    time_t now = time(NULL);
    r->attempts++;
    bool converted = false; /* a deferral made final here (retry=0, expiry) */
    if (status == RESULT_DEFERRED && e->d->retry_zero) {
        converted = true;
        /* destination_controls retry=0: a temporary failure is final. */
        char why[1024];
        str_fmt(why, sizeof why, "%s (retry=0 for this destination)", reply);
        set_error(r, dsn, why);
        status = RESULT_BOUNCED;
    }
    if (status == RESULT_DEFERRED && (strncmp(reply, "421", 3) == 0 || strncmp(dsn, "4.7.", 4) == 0 ||
                                      strstr(reply, "too many") != NULL)) {
        int before = e->d->gn.limit;
        gn_throttled(&e->d->gn, now_ms(), reply);
        if (e->d->gn.limit != before)
            log_info("domain %s (vg %s): concurrency %d -> %d: %s", e->d->name, e->d->vg, before, e->d->gn.limit,
                     e->d->gn.reason);
    }
    if (status == RESULT_DEFERRED) {
        e->d->soft_bounces++;
        set_error(r, dsn, reply);
        free(e->d->last_error);
        e->d->last_error = str_dup(reply);
        if (now - m->arrival_us / 1000000 >= q->lifetime) {
            char why[1024];
            str_fmt(why, sizeof why, "message expired after %lld seconds in the queue; last error: %s",
                    (long long)(now - m->arrival_us / 1000000), reply);
            set_error(r, dsn[0] == '4' ? dsn : "4.4.7", why);
            status = RESULT_BOUNCED;
            converted = true;
        } else {
            r->next_try = wall_ms() + retry_delay(q, e->d, r->attempts) * 1000;
        }
    }
    if (status == RESULT_SENT || status == RESULT_BOUNCED) {
        if (status == RESULT_BOUNCED && r->error == NULL)
            set_error(r, dsn, reply);
        else if (status == RESULT_BOUNCED && r->dsn[0] != '4')
            set_error(r, dsn, reply);
        if (status == RESULT_BOUNCED && converted) /* the agent said deferred: say why it is final */
            log_msg(m->id, "to=<%s>, relay=none, delay=%lld, delays=0/0/0/0, dsn=%s, status=bounced (%s)", r->addr,
                    (long long)(now - m->arrival_us / 1000000), r->dsn, r->error ? r->error : reply);
        r->state = status == RESULT_SENT ? 'D' : 'B';
        if (status == RESULT_SENT) {
            e->d->delivered++;
            e->d->last_success = now;
        }
        else
            e->d->hard_bounces++;
        r->changed = true;
        m->open--;
        mark_dirty(q, m);
    }
    if (--j->remaining == 0)
        job_done(q, j);
    return true;
}

/* ---- domain state ---- */

/* domain_set_state - the one place a domain changes state (and says so) */
static void domain_set_state(struct qmgr_queue *q, struct qdomain *d, enum domain_state st, const char *reason)
{
    time_t now = time(NULL);
    if (st == DOM_DOWN) {
        d->failures++;
        /* One probe per retry interval, spread by +-10% so that domains that
         * went down together do not come back in one stampede. */
        int64_t delay = retry_delay(q, d, d->failures);
        int64_t jitter = delay / 10 > 0 ? (int64_t)(random() % (2 * (delay / 10) + 1)) - delay / 10 : 0;
        d->next_probe = now + delay + jitter;
        if (d->state != DOM_DOWN) {
            d->down_since = now;
            log_warn("domain %s (vg %s) is down: %s; parked, next probe in %llds", d->name, d->vg, reason,
                     (long long)(d->next_probe - now));
        } else {
            log_info("domain %s (vg %s) still down: %s; next probe in %llds", d->name, d->vg, reason,
                     (long long)(d->next_probe - now));
        }
        free(d->last_error);
        d->last_error = str_dup(reason);
        d->state = DOM_DOWN;
        return;
    }
    if (d->state == DOM_DOWN) {
        log_info("domain %s (vg %s) is up after %llds down; releasing %zu parked entries", d->name, d->vg,
                 (long long)(now - d->down_since), d->n_ready + d->n_wait);
        /* Everything parked flows now, oldest first: the wait list holds the
         * older (deferred) entries newest first, so pushing each to the front
         * of the ready list leaves the oldest at its head. */
        while (d->wait) {
            struct qentry *e = d->wait;
            wait_remove(e);
            for (size_t i = 0; i < e->n_idx; i++)
                e->m->r[e->idx[i]].next_try = 0;
            ready_push_front(q, e);
        }
    }
    if (d->state == DOM_DOWN)
        gn_restart(&d->gn, now_ms()); /* the receiver is back: learn its rate afresh */
    d->state = DOM_UP;
    d->failures = 0;
    d->next_probe = 0;
    runq_add(q, d);
    kick(q);
}

bool qmgr_queue_site(struct qmgr_queue *q, struct peer *p, uint64_t job, unsigned reachable, const char *reason)
{
    struct qjob *j = job_find(q, job);
    if (j == NULL || j->a->p != p || reachable > 2)
        return false;
    struct qdomain *d = j->e->d;
    if (j->e->relay)
        return true; /* redirected elsewhere: says nothing about the domain's own hosts */
    if (reachable == 0 && d->state == DOM_UP && time(NULL) - d->last_success < SITE_BUSY_S) {
        /* Other connections were delivering a moment ago: the receiver is
         * busy (e.g. 421 beyond its connection limit), not down. */
        int before = d->gn.limit;
        gn_throttled(&d->gn, now_ms(), reason);
        if (d->gn.limit != before)
            log_info("domain %s (vg %s): concurrency %d -> %d: %s", d->name, d->vg, before, d->gn.limit, d->gn.reason);
        return true;
    }
    if (reachable == 0)
        domain_set_state(q, d, DOM_DOWN, reason[0] ? reason : "no host reachable");
    else if (reachable == 1 && (d->state == DOM_DOWN || d->failures))
        domain_set_state(q, d, DOM_UP, "");
    return true;
}

/* ---- durability and removal ---- */

/* msg_finish - every recipient is final: bounce if needed, then remove */
static void msg_finish(struct qmgr_queue *q, struct qmsg *m)
{
    size_t n_bounced = 0;
    for (size_t i = 0; i < m->n; i++)
        n_bounced += m->r[i].state == 'B';
    if (n_bounced > 0) {
        if (m->sender[0] == '\0') {
            log_msg(m->id, "undeliverable bounce (null sender): %zu recipient(s) dropped", n_bounced);
        } else {
            struct bounce_rcpt br[256];
            size_t k = 0;
            for (size_t i = 0; i < m->n && k < 256; i++)
                if (m->r[i].state == 'B') {
                    br[k].address = m->r[i].addr;
                    br[k].status = m->r[i].dsn[0] ? m->r[i].dsn : "5.0.0";
                    br[k].diagnostic = m->r[i].error ? m->r[i].error : "delivery failed";
                    k++;
                }
            char newid[SPOOL_ID_LEN + 1];
            const char *vg = q->bounce_vg && *q->bounce_vg ? q->bounce_vg : m->vg;
            if (bounce_send(q->qdir, q->hostname, vg, m->id, m->sender, m->arrival_us, br, k, newid) != 0) {
                log_error_errno("%s: cannot queue the bounce, keeping the message", m->id);
                return; /* retried at the next sync or restart */
            }
            log_msg(m->id, "sender non-delivery notification: %s", newid);
            msg_load(q, newid, true);
        }
    }
    char path[SPOOL_PATH_MAX];
    if (spool_path_queue(q->qdir, m->id, path, sizeof path))
        reaper_unlink(path);
    log_msg(m->id, "removed");
    msg_free(q, m);
}

static void on_sync(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr_queue *q = arg;
    struct qmsg *list = q->dirty;
    q->dirty = NULL;
    /* First make every state change of the batch durable (one syncfs, or one
     * fdatasync per file), then act on it: removal, bounces. */
    bool wrote = false, flush_ok = true;
    for (struct qmsg *m = list; m; m = m->dirty_next) {
        bool any = false, bounced = false;
        for (size_t i = 0; i < m->n; i++) {
            any = any || m->r[i].changed;
            bounced = bounced || m->r[i].state == 'B';
        }
        if (!any)
            continue;
        /* Every recipient delivered: removing the file is the record, so the
         * states are written (for a qmgr crash) but not flushed; only an OS
         * crash in this instant could deliver the message once more, as for
         * any delivery in flight. */
        bool finished = m->open == 0 && m->entries == 0 && !bounced;
        char path[SPOOL_PATH_MAX];
        spool_path_queue(q->qdir, m->id, path, sizeof path);
        int f = open(path, O_RDWR | O_CLOEXEC);
        bool ok = f >= 0;
        for (size_t i = 0; ok && i < m->n; i++)
            if (m->r[i].changed)
                ok = spool_set_rcpt_state(f, m->r[i].off, m->r[i].state) == 0;
        if (ok && !q->use_syncfs && !finished)
            ok = fdatasync(f) == 0;
        if (f >= 0)
            close(f);
        if (!ok) {
            /* Not durable: keep the message (a restart re-reads the file and
             * retries what was not recorded, at worst delivering twice). */
            log_error_errno("%s: cannot record recipient state in %s", m->id, path);
            m->sync_failed = true;
            continue;
        }
        wrote = wrote || !finished;
        for (size_t i = 0; i < m->n; i++)
            m->r[i].changed = false;
    }
    if (wrote && q->use_syncfs && syncfs(q->sync_fd) != 0) {
        log_error_errno("syncfs of the spool");
        flush_ok = false;
    }
    struct qmsg *next;
    for (struct qmsg *m = list; m; m = next) {
        next = m->dirty_next;
        m->dirty = false;
        if (flush_ok && m->open == 0 && m->entries == 0 && !m->sync_failed)
            msg_finish(q, m);
    }
}

static void on_retry_tick(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr_queue *q = arg;
    time_t now = time(NULL);
    int64_t ms = now_ms(), wall = wall_ms();
    for (int h = 0; h < DOMAIN_BUCKETS; h++)
        for (struct qdomain *d = q->domains[h]; d; d = d->hnext) {
            if (d->state == DOM_UP && (d->active > 0 || d->ready_head)) {
                int before = d->gn.limit;
                gn_tick(&d->gn, ms, d->ready_head != NULL && d->active >= d->gn.limit);
                if (d->gn.limit != before) {
                    log_info("domain %s (vg %s): concurrency %d -> %d: %s", d->name, d->vg, before, d->gn.limit,
                             d->gn.reason);
                    if (d->gn.limit > before)
                        runq_add(q, d);
                }
            }
            if (d->state == DOM_DOWN && d->probe_job == 0 && now >= d->next_probe && (d->ready_head || d->wait)) {
                if (!d->ready_head && d->wait) { /* the probe needs an entry: the oldest parked one */
                    struct qentry *old = d->wait;
                    while (old->next)
                        old = old->next;
                    wait_remove(old);
                    ready_push(q, old);
                }
                runq_add(q, d);
            }
            if (d->state == DOM_DOWN)
                continue; /* parked entries wait for the domain, not their own timers */
            struct qentry *e = d->wait, *next;
            for (; e; e = next) {
                next = e->next;
                if (e->due <= wall) {
                    wait_remove(e);
                    ready_push(q, e);
                }
            }
        }
    kick(q);
}

/* ---- agents ---- */

void qmgr_queue_agent_add(struct qmgr_queue *q, struct peer *p, const char *name)
{
    struct agent *a = calloc(1, sizeof *a);
    if (a == NULL)
        return;
    a->p = p;
    str_copy(a->name, sizeof a->name, name);
    const char *slash = strchr(name, '/');
    str_copy(a->vg, sizeof a->vg, slash ? slash + 1 : "default");
    a->next = q->agents;
    q->agents = a;
    log_info("delivery agent %s connected", name);
    kick(q);
}

void qmgr_queue_agent_gone(struct qmgr_queue *q, struct peer *p)
{
    struct agent **pp = &q->agents, *a = NULL;
    while (*pp && (*pp)->p != p)
        pp = &(*pp)->next;
    if ((a = *pp) == NULL)
        return;
    *pp = a->next;
    int requeued = 0;
    for (int h = 0; h < JOB_BUCKETS; h++) {
        struct qjob *j = q->jobs[h], *next;
        for (; j; j = next) {
            next = j->hnext;
            if (j->a != a)
                continue;
            /* In flight when the agent died: try again now (at most once more). */
            j->remaining = 0;
            job_done(q, j);
            requeued++;
        }
    }
    log_warn("delivery agent %s went away; %d jobs in flight requeued", a->name, requeued);
    free(a);
}

/* ---- operator commands ---- */

size_t qmgr_queue_flush(struct qmgr_queue *q, const char *domain)
{
    size_t n = 0;
    for (int h = 0; h < DOMAIN_BUCKETS; h++)
        for (struct qdomain *d = q->domains[h]; d; d = d->hnext) {
            if (domain && !str_case_eq(d->name, domain))
                continue;
            if (d->state == DOM_DOWN) { /* probe now */
                d->next_probe = 0;
                runq_add(q, d);
            }
            while (d->wait) {
                struct qentry *e = d->wait;
                wait_remove(e);
                for (size_t i = 0; i < e->n_idx; i++)
                    e->m->r[e->idx[i]].next_try = 0;
                ready_push(q, e);
                n++;
            }
        }
    kick(q);
    return n;
}

static const char *rcpt_state_name(const struct qrcpt *r)
{
    if (r->state == 'D')
        return "delivered";
    if (r->state == 'B')
        return "bounced";
    if (r->state == 'X')
        return "deleted";
    if (r->busy)
        return "active";
    return r->attempts ? "deferred" : "queued";
}

static bool msg_json(const struct qmsg *m, struct buf *out)
{
    bool ok = buf_printf(out, "{\"id\": \"%s\", \"sender\": ", m->id) && buf_json_str(out, m->sender) &&
              buf_printf(out, ", \"vg\": ") && buf_json_str(out, m->vg) &&
              buf_printf(out, ", \"arrival\": %lld, \"size\": %zu, \"recipients\": [", (long long)(m->arrival_us / 1000000),
                         m->size);
    for (size_t i = 0; ok && i < m->n; i++) {
        const struct qrcpt *r = &m->r[i];
        ok = buf_printf(out, "%s{\"address\": ", i ? ", " : "") && buf_json_str(out, r->addr) &&
             buf_printf(out, ", \"state\": \"%s\", \"attempts\": %d, \"next_retry\": %lld, \"last_error\": ",
                        rcpt_state_name(r), r->attempts, (long long)(r->next_try / 1000)) &&
             buf_json_str(out, r->error ? r->error : "") && buf_puts(out, "}");
    }
    return ok && buf_puts(out, "]}");
}

static bool msg_text(const struct qmsg *m, struct buf *out)
{
    char when[32];
    time_t t = (time_t)(m->arrival_us / 1000000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    bool ok = buf_printf(out, "%s  %8zu  %s  <%s>  vg=%s\n", m->id, m->size, when, m->sender, m->vg);
    for (size_t i = 0; ok && i < m->n; i++) {
        const struct qrcpt *r = &m->r[i];
        ok = buf_printf(out, "    %-9s <%s>", rcpt_state_name(r), r->addr);
        if (ok && r->attempts)
            ok = buf_printf(out, " attempts=%d next_retry=%lld", r->attempts, (long long)(r->next_try / 1000));
        if (ok && r->error)
            ok = buf_printf(out, " (%s)", r->error);
        ok = ok && buf_puts(out, "\n");
    }
    return ok;
}

static bool msg_has_domain(const struct qmsg *m, const char *domain)
{
    for (size_t i = 0; i < m->n; i++)
        if (str_case_eq(addr_domain(m->r[i].addr), domain))
            return true;
    return false;
}

bool qmgr_queue_list(struct qmgr_queue *q, const char *domain, const char *vg, bool json, struct buf *out)
{
    bool ok = json ? buf_puts(out, "[") : true;
    size_t n = 0;
    for (int h = 0; ok && h < MSG_BUCKETS; h++)
        for (struct qmsg *m = q->msgs[h]; ok && m; m = m->hnext) {
            if ((domain && !msg_has_domain(m, domain)) || (vg && !str_case_eq(m->vg, vg)))
                continue;
            ok = json ? (buf_puts(out, n ? ", " : "") && msg_json(m, out)) : msg_text(m, out);
            n++;
        }
    if (ok && json)
        ok = buf_puts(out, "]");
    else if (ok)
        ok = buf_printf(out, "-- %zu message(s)", n);
    return ok;
}

bool qmgr_queue_show(struct qmgr_queue *q, const char *id, bool json, struct buf *out)
{
    struct qmsg *m = msg_find(q, id);
    if (m == NULL)
        return false;
    if (json)
        return msg_json(m, out);
    bool ok = msg_text(m, out);
    if (ok && out->len && out->data[out->len - 1] == '\n')
        out->data[--out->len] = '\0';
    return ok;
}

struct domain_counts {
    size_t queued;        /* recipients not final */
    int64_t oldest_us;
    time_t next_retry;
};

static void count_entry(const struct qentry *e, struct domain_counts *c)
{
    c->queued += e->n_idx;
    if (c->oldest_us == 0 || e->m->arrival_us < c->oldest_us)
        c->oldest_us = e->m->arrival_us;
}

static void domain_count(struct qmgr_queue *q, const struct qdomain *d, struct domain_counts *c)
{
    memset(c, 0, sizeof *c);
    for (const struct qentry *e = d->ready_head; e; e = e->next)
        count_entry(e, c);
    for (const struct qentry *e = d->wait; e; e = e->next) {
        count_entry(e, c);
        if (c->next_retry == 0 || e->due / 1000 < c->next_retry)
            c->next_retry = (time_t)(e->due / 1000);
    }
    for (int h = 0; h < JOB_BUCKETS; h++)
        for (const struct qjob *j = q->jobs[h]; j; j = j->hnext)
            if (j->e->d == d)
                count_entry(j->e, c);
    if (d->state == DOM_DOWN)
        c->next_retry = d->next_probe;
}

static bool domain_json(struct qmgr_queue *q, const struct qdomain *d, struct buf *out)
{
    struct domain_counts c;
    domain_count(q, d, &c);
    time_t now = time(NULL);
    return buf_puts(out, "{\"domain\": ") && buf_json_str(out, d->name) && buf_puts(out, ", \"vg\": ") &&
           buf_json_str(out, d->vg) &&
           buf_printf(out,
                      ", \"state\": \"%s\", \"queued\": %zu, \"oldest_age_s\": %lld, \"connections\": %d, "
                      "\"delivered\": %llu, \"hard_bounces\": %llu, \"soft_bounces\": %llu, \"last_attempt\": %lld, "
                      "\"next_retry\": %lld, \"down_since\": %lld, \"concurrency\": %d, \"max_connections\": %d, "
                      "\"rate_bytes_per_s\": %.0f, \"good_neighbor\": \"%s\", \"mx\": [], \"concurrency_reason\": ",
                      domain_state_name(d->state), c.queued,
                      (long long)(c.oldest_us ? now - c.oldest_us / 1000000 : 0), d->active,
                      (unsigned long long)d->delivered, (unsigned long long)d->hard_bounces,
                      (unsigned long long)d->soft_bounces, (long long)d->last_attempt, (long long)c.next_retry,
                      (long long)(d->state == DOM_DOWN ? d->down_since : 0), d->gn.limit, d->max_connections,
                      d->gn.rate, gn_phase_name(d->gn.phase)) &&
           buf_json_str(out, d->gn.reason) && buf_puts(out, ", \"last_error\": ") &&
           buf_json_str(out, d->last_error ? d->last_error : "") && buf_puts(out, "}");
}

static bool domain_text(struct qmgr_queue *q, const struct qdomain *d, struct buf *out)
{
    struct domain_counts c;
    domain_count(q, d, &c);
    time_t now = time(NULL);
    return buf_printf(out, "%-30s vg=%-10s %-4s queued=%zu oldest=%llds connections=%d/%d delivered=%llu bounced=%llu "
                           "deferred=%llu next_retry=%llds (%s)%s%s\n",
                      d->name, d->vg, domain_state_name(d->state), c.queued,
                      (long long)(c.oldest_us ? now - c.oldest_us / 1000000 : 0), d->active, d->gn.limit,
                      (unsigned long long)d->delivered, (unsigned long long)d->hard_bounces,
                      (unsigned long long)d->soft_bounces, (long long)(c.next_retry ? c.next_retry - now : 0),
                      d->gn.reason, d->last_error ? " last_error=" : "", d->last_error ? d->last_error : "");
}

bool qmgr_queue_domains(struct qmgr_queue *q, const char *domain, bool json, struct buf *out)
{
    size_t n = 0;
    bool ok = json ? buf_puts(out, "[") : true;
    for (int h = 0; ok && h < DOMAIN_BUCKETS; h++)
        for (const struct qdomain *d = q->domains[h]; ok && d; d = d->hnext) {
            if (domain && !str_case_eq(d->name, domain))
                continue;
            ok = json ? (buf_puts(out, n ? ", " : "") && domain_json(q, d, out)) : domain_text(q, d, out);
            n++;
        }
    if (ok && json)
        ok = buf_puts(out, "]");
    if (ok && !json && out->len && out->data[out->len - 1] == '\n')
        out->data[--out->len] = '\0';
    if (ok && !json && n == 0)
        ok = buf_puts(out, domain ? "" : "-- no destination queues");
    return ok && (domain == NULL || n > 0);
}

/* ready_remove - take an entry out of its domain's ready list */
static void ready_remove(struct qentry *e)
{
    struct qdomain *d = e->d;
    if (e->prev)
        e->prev->next = e->next;
    else
        d->ready_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        d->ready_tail = e->prev;
    d->n_ready--;
    e->next = e->prev = NULL;
}

/* for_each_idle_entry - call fn on every entry not in flight, of one
 * message (id) or of one domain (all gateways); returns how many matched */
typedef void (*entry_fn)(struct qmgr_queue *q, struct qentry *e, void *arg);

static size_t for_each_idle_entry(struct qmgr_queue *q, const char *id, const char *domain, entry_fn fn, void *arg)
{
    size_t n = 0;
    for (int h = 0; h < DOMAIN_BUCKETS; h++)
        for (struct qdomain *d = q->domains[h]; d; d = d->hnext) {
            if (domain && !str_case_eq(d->name, domain))
                continue;
            struct qentry *lists[2] = {d->ready_head, d->wait};
            for (int l = 0; l < 2; l++) {
                struct qentry *e = lists[l], *next;
                for (; e; e = next) {
                    next = e->next;
                    if (id && strcmp(e->m->id, id) != 0)
                        continue;
                    fn(q, e, arg);
                    n++;
                }
            }
        }
    return n;
}

/* entry_detach - out of whichever list holds it */
static void entry_detach(struct qentry *e)
{
    bool in_wait = false;
    for (struct qentry *w = e->d->wait; w; w = w->next)
        if (w == e) {
            in_wait = true;
            break;
        }
    if (in_wait)
        wait_remove(e);
    else
        ready_remove(e);
}

static void delete_entry(struct qmgr_queue *q, struct qentry *e, void *arg)
{
    size_t *count = arg;
    struct qmsg *m = e->m;
    entry_detach(e);
    for (size_t i = 0; i < e->n_idx; i++) {
        struct qrcpt *r = &m->r[e->idx[i]];
        if (r->state == '-') {
            r->state = 'X';
            r->changed = true;
            m->open--;
            (*count)++;
        }
    }
    log_msg(m->id, "deleted by the operator: %zu recipient(s) for %s", e->n_idx, e->d->name);
    m->entries--;
    free(e->idx);
    free(e->relay);
    free(e);
    mark_dirty(q, m);
}

size_t qmgr_queue_delete(struct qmgr_queue *q, const char *id, const char *domain)
{
    size_t count = 0;
    for_each_idle_entry(q, id, domain, delete_entry, &count);
    return count;
}

struct redirect_arg {
    const char *relay;
    size_t count;
};

static void redirect_entry(struct qmgr_queue *q, struct qentry *e, void *arg)
{
    struct redirect_arg *ra = arg;
    char *relay = str_dup(ra->relay);
    if (relay == NULL)
        return;
    entry_detach(e);
    free(e->relay);
    e->relay = relay;
    for (size_t i = 0; i < e->n_idx; i++)
        e->m->r[e->idx[i]].next_try = 0;
    /* Redirected entries go to the front: the operator wants them out now. */
    struct qdomain *d = e->d;
    ready_push_front(q, e);
    ra->count += e->n_idx;
    log_msg(e->m->id, "redirected by the operator: %zu recipient(s) for %s to %s", e->n_idx, d->name, relay);
}

size_t qmgr_queue_redirect(struct qmgr_queue *q, const char *id, const char *domain, const char *relay)
{
    struct redirect_arg ra = {relay, 0};
    for_each_idle_entry(q, id, domain, redirect_entry, &ra);
    kick(q);
    return ra.count;
}

bool qmgr_queue_known(struct qmgr_queue *q, const char *id) { return msg_find(q, id) != NULL; }

bool qmgr_queue_has_domain(struct qmgr_queue *q, const char *domain)
{
    for (int h = 0; h < DOMAIN_BUCKETS; h++)
        for (struct qdomain *d = q->domains[h]; d; d = d->hnext)
            if (str_case_eq(d->name, domain))
                return true;
    return false;
}

/* ---- life cycle ---- */

void qmgr_queue_configure(struct qmgr_queue *q, const struct config *cfg)
{
    q->n_retry = 0;
    char *copy = str_dup(cfg_str(cfg, P_retry_schedule)), *cur = copy, *tok;
    while (copy && (tok = str_split_next(&cur)) != NULL && q->n_retry < RETRY_MAX) {
        int64_t s;
        if (parse_duration(tok, &s))
            q->retry[q->n_retry++] = s;
    }
    free(copy);
    q->lifetime = cfg_int(cfg, P_max_queue_lifetime);
    q->use_syncfs = strcmp(cfg_str(cfg, P_spool_sync_method), "syncfs") == 0;
    char verr[VG_ERR_MAX];
    struct vg_set *vs = vg_load(cfg, verr);
    if (vs == NULL) {
        log_error("%s (keeping the previous virtual gateways)", verr);
    } else {
        vg_free(q->vgs);
        q->vgs = vs;
    }
    char terr[TABLE_ERR_MAX];
    struct table *t = table_load(cfg_str(cfg, P_destination_controls), terr);
    if (t == NULL) {
        log_error("destination_controls: %s (keeping the previous table)", terr);
    } else {
        table_free(q->controls);
        q->controls = t;
        for (int h = 0; h < DOMAIN_BUCKETS; h++)
            for (struct qdomain *d = q->domains[h]; d; d = d->hnext)
                domain_controls(q, d);
    }
    free(q->hostname);
    q->hostname = str_dup(cfg_str(cfg, P_myhostname));
    free(q->bounce_vg);
    q->bounce_vg = str_dup(cfg_str(cfg, P_bounce_virtual_gateway));
}

struct qmgr_queue *qmgr_queue_new(struct event_base *base, const struct config *cfg)
{
    struct qmgr_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->base = base;
    q->qdir = str_dup(cfg_str(cfg, P_queue_directory));
    char qpath[SPOOL_PATH_MAX];
    str_fmt(qpath, sizeof qpath, "%s/queue", q->qdir ? q->qdir : "");
    q->sync_fd = open(qpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    q->kick_ev = event_new(base, -1, 0, on_kick, q);
    q->sync_ev = event_new(base, -1, 0, on_sync, q);
    q->retry_ev = event_new(base, -1, EV_PERSIST, on_retry_tick, q);
    struct timeval tick = {0, TICK_MS * 1000};
    if (q->qdir == NULL || q->sync_fd < 0 || !q->kick_ev || !q->sync_ev || !q->retry_ev || event_add(q->retry_ev, &tick) != 0) {
        qmgr_queue_free(q);
        return NULL;
    }
    qmgr_queue_configure(q, cfg);
    return q;
}

void qmgr_queue_free(struct qmgr_queue *q)
{
    if (q == NULL)
        return;
    for (int h = 0; h < JOB_BUCKETS; h++)
        while (q->jobs[h]) {
            struct qjob *j = q->jobs[h];
            q->jobs[h] = j->hnext;
            free(j);
        }
    for (int h = 0; h < DOMAIN_BUCKETS; h++)
        while (q->domains[h]) {
            struct qdomain *d = q->domains[h];
            q->domains[h] = d->hnext;
            struct qentry *e, *next;
            for (e = d->ready_head; e; e = next) {
                next = e->next;
                free(e->idx);
                free(e->relay);
                free(e);
            }
            for (e = d->wait; e; e = next) {
                next = e->next;
                free(e->idx);
                free(e->relay);
                free(e);
            }
            free(d->name);
            free(d->vg);
            free(d->last_error);
            free(d);
        }
    for (int h = 0; h < MSG_BUCKETS; h++)
        while (q->msgs[h])
            msg_free(q, q->msgs[h]);
    while (q->agents) {
        struct agent *a = q->agents;
        q->agents = a->next;
        free(a);
    }
    if (q->kick_ev)
        event_free(q->kick_ev);
    if (q->sync_ev)
        event_free(q->sync_ev);
    if (q->retry_ev)
        event_free(q->retry_ev);
    if (q->sync_fd > 0)
        close(q->sync_fd);
    table_free(q->controls);
    vg_free(q->vgs);
    free(q->qdir);
    free(q->hostname);
    free(q->bounce_vg);
    free(q);
}
