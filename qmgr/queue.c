/* queue.c - qmgr's queue: messages, per-(gateway, domain) queues, jobs,
 * retries, durable recipient states, removal and bounces. */
#include "queue.h"
#include "domstate.h"
#include "index.h"
#include "schedule.h"
#include "reaper.h"
#include "neighbour.h"
#include "sites.h"
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
#define RETRY_MAX SCHEDULE_MAX
#define THROTTLE_RETRY_MS 2000     /* a recipient refused by a busy receiver is retried after 2, 4, 8... s */
#define THROTTLE_RETRIES 6         /* then (or once the receiver delivers nothing) by the retry schedule */
#define SITE_BUSY_S 10             /* a refused connection this soon after a delivery is pushback, not an outage */
#define JOB_RCPTS_MAX 1000         /* recipients per transaction (the delivery agent's bound) */
#define TICK_MS 500                /* retry timers and good-neighbour windows */
#define INDEX_FLUSH_S 1            /* the index to disk (and new/ links removed) this often */
#define INDEX_CHECKPOINT_S 60
#define INDEX_COMMIT_MS 100
#define EXPIRE_SWEEP_S 60          /* waiting mail past max_queue_lifetime is looked for this often */

struct qrcpt {
    char *addr;
    off_t off;
    char state;        /* spool state: '-', 'D', 'B', 'N' (bounced, DSN queued), 'X' */
    bool busy;         /* in a job */
    bool queued;       /* in a queue entry (in memory) */
    bool indexed;      /* the index has the record of (message, this domain) */
    bool changed;      /* state to write */
    int attempts;
    int throttles;     /* of the attempts, deferrals by a busy receiver (421) */
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
    uint32_t marker_slot, marker_gen; /* its new/ link in q->markers, if that generation */
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
    time_t down_since;
    int64_t next_probe;    /* wall clock, milliseconds */
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
    /* paging: the index records of this queue after the cursor are not in
     * memory (n_paged of them, for n_paged_rcpts recipients); those up to
     * the cursor are, or are done */
    size_t n_paged;
    uint64_t n_paged_rcpts;
    bool cur_set;
    int64_t cur_us;
    char cur_id[SPOOL_ID_LEN + 1];
    char *relay;           /* mailctl queue redirect --domain: mail queued ... */
    int64_t relay_until_us; /* ... until then goes there */
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
    bool held;              /* DELIVERY_SLOT 1: the slot outlives the results */
    struct qentry *e;
    struct agent *a;
    size_t remaining;
    time_t started;
    struct qjob *hnext;
};

/* A slot of a job whose results are in while its connection still says QUIT
 * (DELIVERY_SLOT): it counts against the domain's concurrency until the
 * agent releases it or goes away. */
struct qslot {
    uint64_t id;
    struct qdomain *d;
    struct agent *a;
    struct qslot *hnext;
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
    struct qslot *slots[JOB_BUCKETS]; /* held slots, by job id */
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
    struct qindex *ix;      /* the per-domain index (NULL: unusable, all in memory) */
    size_t window;          /* qmgr_domain_active_limit */
    struct event *commit_ev, *flush_ev;
    char (*markers)[SPOOL_ID_LEN + 1]; /* new/ links to remove once the index is flushed */
    size_t n_markers, cap_markers;
    uint32_t marker_gen;    /* one per index flush */
    time_t last_checkpoint;
    time_t last_expiry_sweep;
    bool ix_sound;          /* the index was found complete at start */
    char ix_why[QINDEX_ERR_MAX]; /* why not */
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
    char why[256];
    if (table_attr(v, "retry_schedule", val, vlen) && (d->n_retry = schedule_parse(val, d->retry, RETRY_MAX, why, sizeof why)) < 0)
        d->n_retry = 0; /* refused at load (controls_check): not reached */
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

/* ---- loading and paging ---- */

static void ready_remove(struct qentry *e);
static void domain_recount(struct qmgr_queue *q, struct qdomain *d);
static void domain_relay_done(struct qdomain *d);

/* msg_read - a committed message into memory (hashed, no queue entries);
 * NULL when it cannot be read (a missing file is not worth a warning when
 * quiet_missing: the index outlived it). */
static struct qmsg *msg_read(struct qmgr_queue *q, const char *id, bool quiet_missing)
{
    char path[SPOOL_PATH_MAX], err[512];
    if (!spool_path_queue(q->qdir, id, path, sizeof path))
        return NULL;
    struct spool_message sm;
    if (spool_message_read(path, &sm, err, sizeof err) != 0) {
        if (!(quiet_missing && access(path, F_OK) != 0))
            log_warn("%s: cannot load: %s", id, err);
        return NULL;
    }
    struct qmsg *m = calloc(1, sizeof *m);
    if (m == NULL || (m->r = calloc(sm.n_rcpts ? sm.n_rcpts : 1, sizeof *m->r)) == NULL) {
        free(m);
        spool_message_free(&sm);
        log_error("%s: out of memory", id);
        return NULL;
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
    if (m->sender == NULL || m->vg == NULL) {
        m->hnext = NULL;
        q->n_msgs++; /* msg_free counts it out again */
        msg_free(q, m);
        return NULL;
    }
    unsigned h = hash_str(id) % MSG_BUCKETS;
    m->hnext = q->msgs[h];
    q->msgs[h] = m;
    q->n_msgs++;
    return m;
}

/* msg_release - forget a message that has nothing in memory to do (its
 * pending recipients wait in the index). Kept while a recipient has bounced
 * and the DSN is still to come (its diagnostic lives only here). */
static void index_deferred(struct qmgr_queue *q, struct qmsg *m);

static void msg_release(struct qmgr_queue *q, struct qmsg *m)
{
    if (m->entries > 0 || m->dirty || m->open == 0)
        return;
    for (size_t i = 0; i < m->n; i++)
        if (m->r[i].busy || m->r[i].queued || m->r[i].state == 'B' || m->r[i].changed)
            return;
    index_deferred(q, m); /* only the index will know of it */
    msg_free(q, m);
}

static bool rcpt_in(const struct qrcpt *r, const char *dom) { return str_case_eq(addr_domain(r->addr), dom); }

/* pending_for - recipients of m for dom that are not final */
static size_t pending_for(const struct qmsg *m, const char *dom)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++)
        n += m->r[i].state == '-' && rcpt_in(&m->r[i], dom);
    return n;
}

static bool after_cursor(const struct qdomain *d, int64_t us, const char *id)
{
    if (!d->cur_set)
        return true;
    if (us != d->cur_us)
        return us > d->cur_us;
    return strcmp(id, d->cur_id) > 0;
}

static void cursor_to(struct qdomain *d, int64_t us, const char *id)
{
    if (after_cursor(d, us, id)) {
        d->cur_set = true;
        d->cur_us = us;
        str_copy(d->cur_id, sizeof d->cur_id, id);
    }
}

/* index_touched - the running index transaction is committed within
 * INDEX_COMMIT_MS (durability comes from the flush and the new/ links, so
 * commits are batched) */
static void index_touched(struct qmgr_queue *q)
{
    if (!evtimer_pending(q->commit_ev, NULL)) {
        struct timeval tv = {0, INDEX_COMMIT_MS * 1000};
        evtimer_add(q->commit_ev, &tv);
    }
}

/* in_memory_for - m has an entry (queued or in flight) for d. The waiting
 * count of a domain (n_paged) counts the records after the cursor whose
 * mail is not in memory. */
static bool in_memory_for(const struct qmsg *m, const struct qdomain *d)
{
    for (size_t i = 0; m && i < m->n; i++)
        if (m->r[i].state == '-' && (m->r[i].queued || m->r[i].busy) && rcpt_in(&m->r[i], d->name))
            return true;
    return false;
}

/* index_drop - m has nothing left for d: its record goes (was_waiting: its
 * mail was not in memory, so it counted as waiting) */
static void index_drop(struct qmgr_queue *q, struct qdomain *d, const struct qmsg *m, bool was_waiting)
{
    if (q->ix == NULL)
        return;
    uint32_t nr = 0;
    bool counted = was_waiting && after_cursor(d, m->arrival_us, m->id);
    if (qindex_del(q->ix, d->vg, d->name, m->arrival_us, m->id, counted ? &nr : NULL) == 1 && counted) {
        if (d->n_paged)
            d->n_paged--;
        d->n_paged_rcpts = d->n_paged_rcpts > nr ? d->n_paged_rcpts - nr : 0;
    }
    index_touched(q);
}

/* entry_freed - an entry of m for d is gone: drop the record if m has
 * nothing else for d */
static void entry_freed(struct qmgr_queue *q, struct qdomain *d, struct qmsg *m)
{
    if (pending_for(m, d->name) > 0)
        return;
    for (size_t i = 0; i < m->n; i++)
        if (m->r[i].indexed && rcpt_in(&m->r[i], d->name)) {
            index_drop(q, d, m, false);
            return;
        }
    /* never indexed (delivered before the index flush): nothing to drop */
}

static size_t domain_window(const struct qmgr_queue *q, const struct qdomain *d)
{
    return d->state == DOM_DOWN && d->relay == NULL ? 1 : q->window;
}

static size_t domain_in_memory(const struct qdomain *d) { return d->n_ready + d->n_wait + (size_t)d->active; }

/* entries_make - queue entries in memory for m's recipients of d that are
 * pending and in no entry yet (at most JOB_RCPTS_MAX per entry, as one
 * transaction each); returns how many recipients were taken */
static size_t entries_make(struct qmgr_queue *q, struct qmsg *m, struct qdomain *d, bool front)
{
    size_t taken = 0;
    for (;;) {
        size_t first = m->n;
        for (size_t i = 0; i < m->n && first == m->n; i++)
            if (m->r[i].state == '-' && !m->r[i].queued && !m->r[i].busy && rcpt_in(&m->r[i], d->name))
                first = i;
        if (first == m->n)
            break;
        struct qentry *e = calloc(1, sizeof *e);
        size_t *idx = calloc(m->n, sizeof *idx);
        if (e == NULL || idx == NULL) {
            free(e);
            free(idx);
            log_error("%s: out of memory", m->id);
            break;
        }
        e->m = m;
        e->d = d;
        e->idx = idx;
        for (size_t j = first; j < m->n && e->n_idx < JOB_RCPTS_MAX; j++)
            if (m->r[j].state == '-' && !m->r[j].queued && !m->r[j].busy && rcpt_in(&m->r[j], d->name)) {
                m->r[j].queued = true;
                e->idx[e->n_idx++] = j;
            }
        if (d->relay && m->arrival_us <= d->relay_until_us)
            e->relay = str_dup(d->relay);
        taken += e->n_idx;
        m->entries++;
        if (front || e->relay)
            ready_push_front(q, e);
        else
            ready_push(q, e);
    }
    return taken;
}

/* markers_add - remove new/ID once the index holding it is on disk (at
 * once when there is no index: a start scans the whole spool then) */
static void markers_add(struct qmgr_queue *q, const char *id)
{
    if (q->ix == NULL) {
        char path[SPOOL_PATH_MAX];
        if (str_fmt(path, sizeof path, "%s/new/%s", q->qdir, id))
            reaper_unlink(path);
        return;
    }
    if (q->n_markers == q->cap_markers) {
        size_t cap = q->cap_markers ? q->cap_markers * 2 : 1024;
        void *p = realloc(q->markers, cap * sizeof *q->markers);
        if (p == NULL)
            return; /* the link stays: found again at the next scan, harmless */
        q->markers = p;
        q->cap_markers = cap;
    }
    struct qmsg *m = msg_find(q, id);
    if (m) {
        m->marker_slot = (uint32_t)q->n_markers;
        m->marker_gen = q->marker_gen;
    }
    str_copy(q->markers[q->n_markers++], SPOOL_ID_LEN + 1, id);
}

/* msg_each_domain - call fn once for every destination domain that has
 * pending recipients in m (lower-case), with their count */
typedef void (*msg_domain_fn)(struct qmgr_queue *q, struct qmsg *m, const char *dom, uint32_t n, void *arg);

static void msg_each_domain(struct qmgr_queue *q, struct qmsg *m, msg_domain_fn fn, void *arg)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->r[i].state != '-')
            continue;
        const char *dom = addr_domain(m->r[i].addr);
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = m->r[j].state == '-' && str_case_eq(addr_domain(m->r[j].addr), dom);
        if (seen)
            continue;
        char low[ADDR_DOMAIN_MAX + 1];
        str_copy(low, sizeof low, dom);
        str_lower(low);
        fn(q, m, low, (uint32_t)pending_for(m, low), arg);
    }
}

/* index_put_domain - the record of (m, d) into the index now; 1 added, 0
 * it was there, -1 error */
static int index_put_domain(struct qmgr_queue *q, struct qmsg *m, struct qdomain *d)
{
    if (q->ix == NULL)
        return -1;
    struct qindex_rec rec = {.vg = m->vg, .domain = d->name, .arrival_us = m->arrival_us,
                             .n_rcpts = (uint32_t)pending_for(m, d->name)};
    str_copy(rec.id, sizeof rec.id, m->id);
    int put = qindex_put(q->ix, &rec);
    index_touched(q);
    if (put >= 0)
        for (size_t i = 0; i < m->n; i++)
            if (rcpt_in(&m->r[i], d->name))
                m->r[i].indexed = true;
    return put;
}

/* enqueue_domain - a message's recipients for one domain: into memory
 * unless the domain has enough there already (or is down), else they wait
 * in the index. Mail that goes into memory is indexed only if it is still
 * queued at the next index flush (index_deferred): most mail is delivered
 * before, and costs the index nothing. arg: non-NULL for mail qmgr may
 * have indexed before (a restart), which is checked in the index. */
static void enqueue_domain(struct qmgr_queue *q, struct qmsg *m, const char *dom, uint32_t n, void *arg)
{
    struct qdomain *d = domain_get(q, m->vg, dom, true);
    if (d == NULL) {
        log_error("%s: out of memory", m->id);
        return;
    }
    bool memory = q->ix == NULL || !after_cursor(d, m->arrival_us, m->id) ||
                  (d->n_paged == 0 && domain_in_memory(d) < domain_window(q, d));
    if (q->ix && (arg != NULL || !memory)) {
        int put = index_put_domain(q, m, d);
        if (put == 0)
            return; /* indexed before (a restart): counted when the index was read */
        if (put < 0)
            memory = true; /* no index for it: keep it here */
    }
    domain_relay_done(d);
    if (memory) {
        entries_make(q, m, d, false);
        cursor_to(d, m->arrival_us, m->id);
    } else {
        d->n_paged++;
        d->n_paged_rcpts += n;
        runq_add(q, d);
    }
}

/* index_deferred - the records of m's domains that went into memory
 * unindexed (enqueue_domain): into the index now */
static void index_deferred_domain(struct qmgr_queue *q, struct qmsg *m, const char *dom, uint32_t n, void *arg)
{
    (void)n;
    (void)arg;
    for (size_t i = 0; i < m->n; i++)
        if (m->r[i].state == '-' && rcpt_in(&m->r[i], dom)) {
            if (m->r[i].indexed)
                return;
            break;
        }
    struct qdomain *d = domain_get(q, m->vg, dom, true);
    if (d)
        index_put_domain(q, m, d);
}

static void index_deferred(struct qmgr_queue *q, struct qmsg *m)
{
    if (q->ix && m->open > 0)
        msg_each_domain(q, m, index_deferred_domain, NULL);
}

/* msg_load - a committed message qmgr did not know: index and queue it */
static bool msg_load(struct qmgr_queue *q, const char *id, bool log_new)
{
    if (msg_find(q, id))
        return true;
    struct qmsg *m = msg_read(q, id, false);
    if (m == NULL)
        return false;
    if (log_new)
        log_msg(m->id, "from=<%s>, size=%zu, nrcpt=%zu (queue active)", m->sender, m->size, m->n);
    if (m->open == 0) { /* everything was done before a restart */
        mark_dirty(q, m);
        return true;
    }
    msg_each_domain(q, m, enqueue_domain, log_new ? NULL : (void *)m);
    markers_add(q, id);
    for (size_t i = 0; i < m->n; i++)
        if (m->r[i].state == 'B') { /* bounced before a restart, sender not told yet */
            mark_dirty(q, m);
            break;
        }
    msg_release(q, m);
    kick(q);
    return true;
}

/* A page of index records, read before acting on them (the index must not
 * change under a scan). cutoff_us: stop at the first record that young. */
struct page {
    int64_t us[256];
    char id[256][SPOOL_ID_LEN + 1];
    uint32_t nr[256];
    size_t n;
    int64_t cutoff_us;
};

static bool page_collect(const struct qindex_rec *r, void *arg)
{
    struct page *pg = arg;
    if (pg->cutoff_us && r->arrival_us >= pg->cutoff_us)
        return false; /* records are in arrival order: the rest are younger */
    pg->us[pg->n] = r->arrival_us;
    str_copy(pg->id[pg->n], SPOOL_ID_LEN + 1, r->id);
    pg->nr[pg->n] = r->n_rcpts;
    return ++pg->n < 256;
}

/* domain_relay_done - a redirection of the domain's queued mail (mailctl
 * queue redirect --domain) ends once all that mail is in memory, each entry
 * with its relay */
static void domain_relay_done(struct qdomain *d)
{
    if (d->relay && (d->n_paged == 0 || (d->cur_set && d->cur_us > d->relay_until_us))) {
        free(d->relay);
        d->relay = NULL;
    }
}

/* domain_refill - read up to want of d's waiting records into memory, oldest
 * first; returns how many recipients came in */
static size_t domain_refill(struct qmgr_queue *q, struct qdomain *d, size_t want)
{
    if (q->ix == NULL || d->n_paged == 0)
        return 0;
    static struct page pg;
    pg.cutoff_us = 0;
    size_t got = 0;
    while (want > 0 && d->n_paged > 0) {
        pg.n = 0;
        long n = qindex_scan(q->ix, d->vg, d->name, d->cur_us, d->cur_set ? d->cur_id : NULL, want < 256 ? want : 256,
                             page_collect, &pg);
        if (n <= 0) { /* the count was off (a record dropped behind our back): trust the index */
            d->n_paged = 0;
            d->n_paged_rcpts = 0;
            break;
        }
        for (size_t i = 0; i < pg.n; i++) {
            cursor_to(d, pg.us[i], pg.id[i]);
            struct qmsg *m = msg_find(q, pg.id[i]);
            if (!in_memory_for(m, d)) { /* it counted as waiting */
                if (d->n_paged)
                    d->n_paged--;
                d->n_paged_rcpts = d->n_paged_rcpts > pg.nr[i] ? d->n_paged_rcpts - pg.nr[i] : 0;
            }
            if (m == NULL)
                m = msg_read(q, pg.id[i], true);
            if (m == NULL) { /* gone: the record outlived its message */
                qindex_del(q->ix, d->vg, d->name, pg.us[i], pg.id[i], NULL);
                index_touched(q);
                continue;
            }
            for (size_t k = 0; k < m->n; k++)
                if (rcpt_in(&m->r[k], d->name))
                    m->r[k].indexed = true; /* that is where it came from */
            size_t took = entries_make(q, m, d, false);
            got += took;
            if (took == 0 && pending_for(m, d->name) == 0) {
                qindex_del(q->ix, d->vg, d->name, pg.us[i], pg.id[i], NULL);
                index_touched(q);
            }
            if (m->open == 0 && m->entries == 0)
                mark_dirty(q, m); /* done before a restart: finish it */
            else
                msg_release(q, m);
            want = want > 0 ? want - 1 : 0;
        }
        if (pg.n < 256 && (size_t)n < 256 && want > 0 && d->n_paged > 0 && (size_t)n < want) {
            d->n_paged = 0; /* the index has no more */
            d->n_paged_rcpts = 0;
        }
    }
    domain_relay_done(d);
    return got;
}

/* domain_page_out - a domain went down: its idle entries go back to the
 * index (the probe reads one in again), so parked mail costs no memory */
static void domain_page_out(struct qmgr_queue *q, struct qdomain *d)
{
    if (q->ix == NULL)
        return;
    struct qentry *lists[2] = {d->ready_head, d->wait};
    for (int l = 0; l < 2; l++) {
        struct qentry *e = lists[l], *next;
        for (; e; e = next) {
            next = e->next;
            if (e->relay)
                continue;
            if (l == 0)
                ready_remove(e);
            else
                wait_remove(e);
            struct qmsg *m = e->m;
            for (size_t i = 0; i < e->n_idx; i++)
                m->r[e->idx[i]].queued = false;
            m->entries--;
            free(e->idx);
            free(e);
            msg_release(q, m);
        }
    }
    domain_recount(q, d);
}

struct recount {
    size_t n;
    uint64_t rcpts;
    struct qmgr_queue *q;
    struct qdomain *d;
};

static bool recount_one(const struct qindex_rec *r, void *arg)
{
    struct recount *rc = arg;
    if (rc->d && in_memory_for(msg_find(rc->q, r->id), rc->d))
        return true;
    rc->n++;
    rc->rcpts += r->n_rcpts;
    return true;
}

/* domain_recount - everything d has in the index counts as waiting; the
 * cursor goes back to the start (records of mail in memory are met again
 * and skipped) */
static void domain_recount(struct qmgr_queue *q, struct qdomain *d)
{
    struct recount rc = {0, 0, q, d};
    if (q->ix)
        qindex_scan(q->ix, d->vg, d->name, 0, NULL, 0, recount_one, &rc);
    d->cur_set = false;
    d->cur_us = 0;
    d->cur_id[0] = '\0';
    d->n_paged = rc.n;
    d->n_paged_rcpts = rc.rcpts;
    if (rc.n)
        runq_add(q, d);
}

static bool count_record(const struct qindex_rec *r, void *arg)
{
    struct qmgr_queue *q = arg;
    struct qdomain *d = domain_get(q, r->vg, r->domain, true);
    if (d) {
        d->n_paged++;
        d->n_paged_rcpts += r->n_rcpts;
        runq_add(q, d);
    }
    return true;
}

/* scan_new - new/ holds a link for every message committed but perhaps not
 * yet in the index: load those (a link without a queue file is a commit
 * that did not finish, or a message already removed) */
static size_t scan_new(struct qmgr_queue *q)
{
    char path[SPOOL_PATH_MAX];
    str_fmt(path, sizeof path, "%s/new", q->qdir);
    DIR *dir = opendir(path);
    if (dir == NULL)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (!spool_id_valid(de->d_name))
            continue;
        char qpath[SPOOL_PATH_MAX], ipath[SPOOL_PATH_MAX];
        spool_path_queue(q->qdir, de->d_name, qpath, sizeof qpath);
        if (access(qpath, F_OK) == 0) {
            if (!msg_find(q, de->d_name) && msg_load(q, de->d_name, false))
                n++;
            else
                markers_add(q, de->d_name);
        } else if (!spool_path_incoming(q->qdir, de->d_name, ipath, sizeof ipath) || access(ipath, F_OK) != 0) {
            markers_add(q, de->d_name); /* nothing to load: the link just goes */
        }
    }
    closedir(dir);
    return n;
}

struct rebuild {
    struct qmgr_queue *q;
    size_t msgs, records;
};

static void rebuild_domain(struct qmgr_queue *q, struct qmsg *m, const char *dom, uint32_t n, void *arg)
{
    struct rebuild *rb = arg;
    struct qindex_rec rec = {.vg = m->vg, .domain = dom, .arrival_us = m->arrival_us, .n_rcpts = n};
    str_copy(rec.id, sizeof rec.id, m->id);
    if (qindex_put(q->ix, &rec) >= 0) {
        rb->records++;
        for (size_t i = 0; i < m->n; i++)
            if (rcpt_in(&m->r[i], dom))
                m->r[i].indexed = true;
    }
}

/* index_rebuild - the index afresh from every file of the spool, with
 * progress in the log; nothing stays in memory */
static size_t index_rebuild(struct qmgr_queue *q, const char *why)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    log_info("index: rebuilding from the spool (%s)", why);
    if (qindex_clear(q->ix) != 0 || qindex_set_sound(q->ix, false) != 0)
        log_error("index: cannot clear it; rebuilding over what is there");
    struct rebuild rb = {q, 0, 0};
    for (int h = 0; h < 256; h++) {
        char path[SPOOL_PATH_MAX];
        str_fmt(path, sizeof path, "%s/queue/%02X", q->qdir, h);
        DIR *dir = opendir(path);
        if (dir != NULL) {
            struct dirent *de;
            while ((de = readdir(dir)) != NULL) {
                if (!spool_id_valid(de->d_name))
                    continue;
                struct qmsg *m = msg_find(q, de->d_name);
                bool temp = m == NULL;
                if (temp && (m = msg_read(q, de->d_name, true)) == NULL)
                    continue;
                rb.msgs++;
                msg_each_domain(q, m, rebuild_domain, &rb);
                if (temp && m->open == 0)
                    mark_dirty(q, m); /* done before a restart: finish it */
                else if (temp)
                    msg_free(q, m);
            }
            closedir(dir);
        }
        if ((h + 1) % 32 == 0)
            log_info("index: rebuilding: %d%% of the spool read, %zu messages, %zu records", (h + 1) * 100 / 256,
                     rb.msgs, rb.records);
    }
    qindex_set_sound(q->ix, true);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    log_info("index: rebuilt: %zu messages, %zu records in %.1f s", rb.msgs, rb.records, secs);
    return rb.msgs;
}

size_t qmgr_queue_start(struct qmgr_queue *q)
{
    if (q->ix == NULL) { /* no index: everything in memory, as before */
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
    if (!q->ix_sound)
        index_rebuild(q, q->ix_why);
    struct recount before = {0, 0, q, NULL};
    qindex_scan(q->ix, NULL, NULL, 0, NULL, 0, recount_one, &before);
    qindex_scan(q->ix, NULL, NULL, 0, NULL, 0, count_record, q);
    size_t found = scan_new(q);
    if (found)
        log_info("index: %zu committed message(s) were not in it yet", found);
    qindex_flush(q->ix);
    kick(q);
    return before.n + found;
}

size_t qmgr_queue_reindex(struct qmgr_queue *q, double *secs)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t n = 0;
    if (q->ix) {
        n = index_rebuild(q, "mailctl queue reindex");
        for (int h = 0; h < DOMAIN_BUCKETS; h++)
            for (struct qdomain *d = q->domains[h]; d; d = d->hnext)
                domain_recount(q, d);
        kick(q);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    return n;
}

size_t qmgr_queue_scan(struct qmgr_queue *q) { return scan_new(q); }


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
        size_t window = domain_window(q, d), mem = domain_in_memory(d);
        if (d->n_paged && (d->ready_head == NULL || mem < window / 2 + 1) && mem < window)
            domain_refill(q, d, window - mem); /* the next of the domain's mail, oldest first */
        if (d->ready_head == NULL || d->active >= d->gn.limit)
            continue; /* back on the queue when something changes */
        bool probe = false;
        if (d->state == DOM_DOWN && !(d->ready_head && d->ready_head->relay)) {
            /* Parked: one probe per retry interval, nothing else. */
            if (d->probe_job != 0 || wall_ms() < d->next_probe)
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
    if (d && d->n_retry)
        return schedule_delay(d->retry, d->n_retry, attempts);
    return schedule_delay(q->retry, q->n_retry, attempts);
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
    struct qslot *slot = j->held ? calloc(1, sizeof *slot) : NULL;
    if (slot) { /* the connection is still closing: its slot stays taken */
        slot->id = j->id;
        slot->d = d;
        slot->a = j->a;
        unsigned h = (unsigned)(j->id % JOB_BUCKETS);
        slot->hnext = q->slots[h];
        q->slots[h] = slot;
    } else {
        d->active--;
        j->a->active--;
    }
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
        entry_freed(q, d, m);
        mark_dirty(q, m);
    } else if (due <= wall_ms()) {
        ready_push(q, e);
    } else {
        e->due = due;
        wait_push(e);
    }
    runq_add(q, d); /* a slot is free again, or the entry is back */
    free(j);
    kick(q);
}

static void slot_free(struct qmgr_queue *q, struct qslot *slot)
{
    struct qslot **pp = &q->slots[slot->id % JOB_BUCKETS];
    while (*pp && *pp != slot)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = slot->hnext;
    slot->d->active--;
    slot->a->active--;
    runq_add(q, slot->d);
    free(slot);
    kick(q);
}

bool qmgr_queue_slot(struct qmgr_queue *q, struct peer *p, uint64_t job, unsigned held)
{
    if (held > 1)
        return false;
    struct qjob *j = job_find(q, job);
    if (j != NULL) { /* before its results */
        if (j->a->p != p)
            return false;
        j->held = held == 1;
        return true;
    }
    if (held == 1)
        return false; /* a hold after the results: the agent broke the order */
    for (struct qslot *slot = q->slots[job % JOB_BUCKETS]; slot; slot = slot->hnext)
        if (slot->id == job && slot->a->p == p) {
            slot_free(q, slot);
            return true;
        }
    return false;
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
    bool throttle = status == RESULT_DEFERRED && (strncmp(reply, "421", 3) == 0 || strncmp(dsn, "4.7.", 4) == 0 ||
                                                  strstr(reply, "too many") != NULL);
    if (throttle) {
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
            int64_t delay = retry_delay(q, e->d, r->attempts - r->throttles) * 1000;
            if (throttle && r->throttles < THROTTLE_RETRIES && e->d->gn.phase != GN_FIXED &&
                e->d->last_success != 0 && now - e->d->last_success <= SITE_BUSY_S) {
                /* The receiver is delivering other mail and only pushed back
                 * on this connection (its connection limit, a rate limit):
                 * the recipient goes back to the domain's queue soon, behind
                 * the concurrency the controller just lowered, instead of
                 * waiting out a retry interval. Not with good_neighbor=no:
                 * nothing lowers a fixed limit, and the retries would only
                 * meet the same refusal. */
                int64_t soon = (int64_t)THROTTLE_RETRY_MS << r->throttles;
                r->throttles++;
                if (soon < delay)
                    delay = soon;
            }
            r->next_try = wall_ms() + delay;
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
        /* in milliseconds: a whole-second clock would probe up to a second early */
        int64_t delay_ms = schedule_jitter(retry_delay(q, d, d->failures) * 1000, random());
        d->next_probe = wall_ms() + delay_ms;
        if (d->state != DOM_DOWN) {
            d->down_since = now;
            d->state = DOM_DOWN;
            domain_page_out(q, d); /* parked mail waits in the index, not in memory */
            log_warn("domain %s (vg %s) is down: %s; parked, next probe in %llds", d->name, d->vg, reason,
                     (long long)((delay_ms + 500) / 1000));
        } else {
            log_info("domain %s (vg %s) still down: %s; next probe in %llds", d->name, d->vg, reason,
                     (long long)((delay_ms + 500) / 1000));
        }
        free(d->last_error);
        d->last_error = str_dup(reason);
        d->state = DOM_DOWN;
        return;
    }
    if (d->state == DOM_DOWN) {
        log_info("domain %s (vg %s) is up after %llds down; releasing %zu parked entries", d->name, d->vg,
                 (long long)(now - d->down_since), d->n_ready + d->n_wait + d->n_paged);
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
    switch (site_judge(j->e->relay != NULL, d->state == DOM_DOWN, d->failures, reachable, time(NULL),
                       d->last_success, SITE_BUSY_S)) {
    case SITE_PUSHBACK: {
        /* Other connections were delivering a moment ago: the receiver is
         * busy (e.g. 421 beyond its connection limit), not down. */
        int before = d->gn.limit;
        gn_throttled(&d->gn, now_ms(), reason);
        if (d->gn.limit != before)
            log_info("domain %s (vg %s): concurrency %d -> %d: %s", d->name, d->vg, before, d->gn.limit, d->gn.reason);
        break;
    }
    case SITE_DOWN:
        domain_set_state(q, d, DOM_DOWN, reason[0] ? reason : "no host reachable");
        break;
    case SITE_UP:
        domain_set_state(q, d, DOM_UP, "");
        break;
    case SITE_NOTHING:
        break;
    }
    return true;
}

/* ---- durability and removal ---- */

/* bounce_send_for - one DSN for m's bounced recipients that the sender has
 * not been told of (state 'B'); they become 'N' (written at the next sync).
 * False when the DSN could not be queued (the states stay, tried again at
 * the next sync or restart). */
static bool bounce_send_for(struct qmgr_queue *q, struct qmsg *m)
{
    size_t n_bounced = 0;
    for (size_t i = 0; i < m->n; i++)
        n_bounced += m->r[i].state == 'B';
    if (n_bounced == 0)
        return true;
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
            return false;
        }
        log_msg(m->id, "sender non-delivery notification: %s", newid);
        msg_load(q, newid, true);
    }
    for (size_t i = 0; i < m->n; i++)
        if (m->r[i].state == 'B') {
            m->r[i].state = 'N';
            m->r[i].changed = true;
        }
    return true;
}

/* bounce_due - m has bounced recipients the sender was not told of, and
 * none of its other recipients is in a job or about to go (every pending
 * one in memory has been tried and waits for its retry, or waits in the
 * index): the DSN goes now, not when the last recipient is final, and one
 * DSN covers the failures of one round of attempts. */
static bool bounce_due(const struct qmsg *m)
{
    bool any = false;
    for (size_t i = 0; i < m->n; i++) {
        const struct qrcpt *r = &m->r[i];
        any = any || r->state == 'B';
        if (r->state == '-' && (r->busy || (r->queued && r->attempts == 0)))
            return false;
    }
    return any;
}

/* bounce_now - the DSN for m's bounced recipients while others are still
 * pending (bounce_due); their new state is made durable by the next sync */
static void bounce_now(struct qmgr_queue *q, struct qmsg *m)
{
    if (bounce_send_for(q, m))
        mark_dirty(q, m);
}

/* msg_finish - every recipient is final: bounce if needed, then remove */
static void msg_finish(struct qmgr_queue *q, struct qmsg *m)
{
    if (!bounce_send_for(q, m))
        return; /* retried at the next sync or restart */
    char path[SPOOL_PATH_MAX];
    spool_path_queue(q->qdir, m->id, path, sizeof path);
    /* A finished message keeps a new/ link until its file is gone (the
     * reaper keeps the order: file, then link), so that qmgr dying in
     * between finds it at the next start and removes it: its index records
     * may be gone already, and a start reads new/, not the whole queue.
     * The link made at commit is used if the index flush has not removed
     * it yet; else a new one is made. */
    char marker[SPOOL_PATH_MAX] = "";
    if (str_fmt(marker, sizeof marker, "%s/new/%s", q->qdir, m->id)) {
        if (m->marker_gen == q->marker_gen && m->marker_slot < q->n_markers &&
            strcmp(q->markers[m->marker_slot], m->id) == 0)
            q->markers[m->marker_slot][0] = '\0'; /* taken over */
        else if (q->ix && link(path, marker) != 0 && errno != EEXIST)
            log_warn_errno("%s: cannot link %s", m->id, marker);
    }
    reaper_recycle(path);
    if (marker[0])
        reaper_unlink(marker);
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
            bounced = bounced || m->r[i].state == 'B' || m->r[i].state == 'N';
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
        if (flush_ok && m->open > 0 && !m->sync_failed && bounce_due(m))
            bounce_now(q, m);
        if (flush_ok && m->open == 0 && m->entries == 0 && !m->sync_failed)
            msg_finish(q, m);
        else if (flush_ok && m->entries == 0 && !m->sync_failed)
            msg_release(q, m); /* the rest of its recipients wait in the index */
    }
}

static struct qmsg *msg_get(struct qmgr_queue *q, const char *id);

/* expire_waiting - bounce m's recipients for d that wait in the index past
 * max_queue_lifetime (their domain may be down: nothing attempts them) */
static void expire_waiting(struct qmgr_queue *q, struct qmsg *m, struct qdomain *d, void *arg)
{
    size_t *count = arg;
    time_t now = time(NULL);
    long long age = (long long)(now - m->arrival_us / 1000000);
    bool waiting = !in_memory_for(m, d);
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        struct qrcpt *r = &m->r[i];
        if (r->state != '-' || r->queued || r->busy || !rcpt_in(r, d->name))
            continue;
        char why[1024];
        str_fmt(why, sizeof why, "message expired after %lld seconds in the queue; last error: %s", age,
                d->last_error ? d->last_error : "none (never attempted)");
        set_error(r, "4.4.7", why);
        r->state = 'B';
        r->changed = true;
        m->open--;
        d->hard_bounces++;
        n++;
        log_msg(m->id, "to=<%s>, relay=none, delay=%lld, delays=%lld/0/0/0, dsn=4.4.7, status=bounced (%s)", r->addr, age,
                age, why);
    }
    if (n) {
        *count += n;
        if (pending_for(m, d->name) == 0)
            index_drop(q, d, m, waiting);
        mark_dirty(q, m);
    }
}

/* domain_expire - the domain's mail older than max_queue_lifetime that
 * waits in the index bounces (what is in memory expires at its attempt);
 * costs in proportion to what expires: the index is in arrival order */
static void domain_expire(struct qmgr_queue *q, struct qdomain *d)
{
    if (q->ix == NULL || q->lifetime <= 0)
        return;
    static struct page es;
    es.cutoff_us = (wall_ms() - q->lifetime * 1000) * 1000;
    size_t bounced = 0;
    for (int round = 0; round < 64; round++) { /* at most 16,384 messages per sweep */
        es.n = 0;
        if (qindex_scan(q->ix, d->vg, d->name, 0, NULL, 256, page_collect, &es) < 0 || es.n == 0)
            break;
        size_t before = bounced;
        for (size_t i = 0; i < es.n; i++) {
            struct qmsg *m = msg_get(q, es.id[i]);
            if (m == NULL) {
                continue;
            }
            expire_waiting(q, m, d, &bounced);
            if (!m->dirty)
                msg_release(q, m);
        }
        on_sync(-1, 0, q); /* record, bounce, free; then the next page */
        if (bounced == before)
            break; /* what is left of the oldest is in memory: it expires at its own attempt */
    }
    if (bounced)
        log_info("domain %s (vg %s): %zu waiting recipient(s) expired after max_queue_lifetime", d->name, d->vg,
                 bounced);
}

static void on_retry_tick(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr_queue *q = arg;
    time_t now = time(NULL);
    int64_t ms = now_ms(), wall = wall_ms();
    int64_t sweep_s = q->lifetime / 4 < EXPIRE_SWEEP_S ? (q->lifetime / 4 > 0 ? q->lifetime / 4 : 1) : EXPIRE_SWEEP_S;
    bool sweep = now - q->last_expiry_sweep >= sweep_s;
    if (sweep)
        q->last_expiry_sweep = now;
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
            if (sweep && d->n_paged)
                domain_expire(q, d);
            if (d->n_paged && d->state == DOM_UP && !d->on_runq && domain_in_memory(d) < q->window / 2 + 1)
                runq_add(q, d);
            if (d->state == DOM_DOWN && d->probe_job == 0 && wall >= d->next_probe &&
                (d->ready_head || d->wait || d->n_paged)) {
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
            j->held = false;
            job_done(q, j);
            requeued++;
        }
        struct qslot *slot = q->slots[h], *snext;
        for (; slot; slot = snext) { /* its closing connections are gone too */
            snext = slot->hnext;
            if (slot->a == a)
                slot_free(q, slot);
        }
    }
    log_warn("delivery agent %s went away; %d jobs in flight requeued", a->name, requeued);
    free(a);
}

/* ---- operator commands ---- */

size_t qmgr_queue_flush(struct qmgr_queue *q, const char *domain, size_t *waiting)
{
    size_t n = 0;
    if (waiting)
        *waiting = 0;
    for (int h = 0; h < DOMAIN_BUCKETS; h++)
        for (struct qdomain *d = q->domains[h]; d; d = d->hnext) {
            if (domain && !str_case_eq(d->name, domain))
                continue;
            if (waiting)
                *waiting += (size_t)d->n_paged_rcpts;
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
    if (r->state == 'B' || r->state == 'N')
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

struct lister {
    struct qmgr_queue *q;
    bool json, ok;
    size_t offset, limit, seen, shown;
    struct buf *out;
    char prev[SPOOL_ID_LEN + 1];
};

static bool list_one(struct lister *l, const char *id)
{
    if (strcmp(id, l->prev) == 0)
        return true;
    str_copy(l->prev, sizeof l->prev, id);
    l->seen++;
    if (l->seen <= l->offset || l->shown >= l->limit)
        return true;
    struct qmgr_queue *q = l->q;
    struct qmsg *m = msg_find(q, id);
    bool temp = m == NULL;
    if (temp && (m = msg_read(q, id, true)) == NULL)
        return true;
    l->ok = l->json ? (buf_puts(l->out, l->shown ? ", " : "") && msg_json(m, l->out)) : msg_text(m, l->out);
    l->shown++;
    if (temp)
        msg_free(q, m);
    return l->ok;
}

static bool list_record(const struct qindex_rec *r, void *arg) { return list_one(arg, r->id); }

bool qmgr_queue_list(struct qmgr_queue *q, const char *domain, const char *vg, bool json, size_t offset, size_t limit,
                     struct buf *out)
{
    struct lister l = {q, json, true, offset, limit ? limit : SIZE_MAX, 0, 0, out, ""};
    l.ok = json ? buf_puts(out, "[") : true;
    if (q->ix) {
        /* From the index, in arrival order per (gateway, domain): a message
         * with recipients in several domains is listed under each. */
        for (int h = 0; l.ok && h < DOMAIN_BUCKETS; h++)
            for (struct qdomain *d = q->domains[h]; l.ok && d; d = d->hnext) {
                if ((domain && !str_case_eq(d->name, domain)) || (vg && !str_case_eq(d->vg, vg)))
                    continue;
                qindex_scan(q->ix, d->vg, d->name, 0, NULL, 0, list_record, &l);
            }
        /* and the newest, not indexed yet (index_deferred) */
        for (size_t i = 0; l.ok && i < q->n_markers; i++) {
            struct qmsg *m = q->markers[i][0] ? msg_find(q, q->markers[i]) : NULL;
            bool unindexed = false;
            for (size_t k = 0; m && k < m->n && !unindexed; k++)
                unindexed = m->r[k].state == '-' && !m->r[k].indexed &&
                            (domain == NULL || rcpt_in(&m->r[k], domain));
            if (unindexed && !(vg && !str_case_eq(m->vg, vg)))
                list_one(&l, m->id);
        }
    } else {
        for (int h = 0; l.ok && h < MSG_BUCKETS; h++)
            for (struct qmsg *m = q->msgs[h]; l.ok && m; m = m->hnext)
                if (!(domain && !msg_has_domain(m, domain)) && !(vg && !str_case_eq(m->vg, vg)))
                    list_one(&l, m->id);
    }
    if (l.ok && json)
        l.ok = buf_puts(out, "]");
    else if (l.ok && l.shown == l.seen)
        l.ok = buf_printf(out, "-- %zu message(s)", l.shown);
    else if (l.ok)
        l.ok = buf_printf(out, "-- %zu message(s) of %zu shown (from number %zu; --offset N --limit N for others)",
                          l.shown, l.seen, offset + 1);
    return l.ok;
}

bool qmgr_queue_show(struct qmgr_queue *q, const char *id, bool json, struct buf *out)
{
    struct qmsg *m = msg_find(q, id);
    bool temp = m == NULL;
    if (temp && (m = msg_read(q, id, true)) == NULL)
        return false;
    bool ok = json ? msg_json(m, out) : msg_text(m, out);
    if (!json && ok && out->len && out->data[out->len - 1] == '\n')
        out->data[--out->len] = '\0';
    if (temp)
        msg_free(q, m);
    return ok;
}

struct domain_counts {
    size_t paged;         /* messages waiting in the index */
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
        c->next_retry = (time_t)(d->next_probe / 1000);
    c->queued += (size_t)d->n_paged_rcpts;
    c->paged = d->n_paged;
    if (d->n_paged && q->ix) { /* the oldest waiting in the index */
        static struct page pf;
        pf.n = 0;
        pf.cutoff_us = 0;
        qindex_scan(q->ix, d->vg, d->name, d->cur_us, d->cur_set ? d->cur_id : NULL, 1, page_collect, &pf);
        if (pf.n && (c->oldest_us == 0 || pf.us[0] < c->oldest_us))
            c->oldest_us = pf.us[0];
    }
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
                      "\"rate_bytes_per_s\": %.0f, \"good_neighbor\": \"%s\", \"in_index\": %zu, \"mx\": ",
                      domain_state_name(d->state), c.queued,
                      (long long)(c.oldest_us ? now - c.oldest_us / 1000000 : 0), d->active,
                      (unsigned long long)d->delivered, (unsigned long long)d->hard_bounces,
                      (unsigned long long)d->soft_bounces, (long long)d->last_attempt, (long long)c.next_retry,
                      (long long)(d->state == DOM_DOWN ? d->down_since : 0), d->gn.limit, d->max_connections,
                      d->gn.rate, gn_phase_name(d->gn.phase), c.paged) &&
           qmgr_sites_json(d->vg, d->name, out) && buf_puts(out, ", \"concurrency_reason\": ") &&
           buf_json_str(out, d->gn.reason) && buf_puts(out, ", \"last_error\": ") &&
           buf_json_str(out, d->last_error ? d->last_error : "") && buf_puts(out, "}");
}

static bool domain_text(struct qmgr_queue *q, const struct qdomain *d, struct buf *out)
{
    struct domain_counts c;
    domain_count(q, d, &c);
    time_t now = time(NULL);
    return buf_printf(out, "%-30s vg=%-10s %-4s queued=%zu oldest=%llds connections=%d/%d delivered=%llu bounced=%llu "
                           "deferred=%llu next_retry=%llds (%s)",
                      d->name, d->vg, domain_state_name(d->state), c.queued,
                      (long long)(c.oldest_us ? now - c.oldest_us / 1000000 : 0), d->active, d->gn.limit,
                      (unsigned long long)d->delivered, (unsigned long long)d->hard_bounces,
                      (unsigned long long)d->soft_bounces, (long long)(c.next_retry ? c.next_retry - now : 0),
                      d->gn.reason) && qmgr_sites_text(d->vg, d->name, out) &&
           buf_printf(out, "%s%s\n", d->last_error ? " last_error=" : "", d->last_error ? d->last_error : "");
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
    struct qdomain *d = e->d;
    free(e->idx);
    free(e->relay);
    free(e);
    entry_freed(q, d, m);
    mark_dirty(q, m);
}

/* delete_waiting - the recipients of m for d that wait in the index (in no
 * entry, not in flight): deleted; returns how many */
static size_t delete_waiting(struct qmgr_queue *q, struct qmsg *m, struct qdomain *d)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        struct qrcpt *r = &m->r[i];
        if (r->state == '-' && !r->queued && !r->busy && rcpt_in(r, d->name)) {
            r->state = 'X';
            r->changed = true;
            m->open--;
            n++;
        }
    }
    if (n) {
        log_msg(m->id, "deleted by the operator: %zu recipient(s) for %s", n, d->name);
        if (pending_for(m, d->name) == 0)
            index_drop(q, d, m, !in_memory_for(m, d));
        mark_dirty(q, m);
    }
    return n;
}

/* msg_get - m in memory, read from the spool if it is only in the index */
static struct qmsg *msg_get(struct qmgr_queue *q, const char *id)
{
    struct qmsg *m = msg_find(q, id);
    return m ? m : msg_read(q, id, true);
}

/* each_domain_of - call fn for the qdomain of each domain m has pending
 * recipients for (creating it if need be) */
struct domain_visit {
    void (*fn)(struct qmgr_queue *q, struct qmsg *m, struct qdomain *d, void *arg);
    void *arg;
};

static void visit_domain(struct qmgr_queue *q, struct qmsg *m, const char *dom, uint32_t n, void *arg)
{
    (void)n;
    struct domain_visit *v = arg;
    struct qdomain *d = domain_get(q, m->vg, dom, true);
    if (d)
        v->fn(q, m, d, v->arg);
}

static void delete_visit(struct qmgr_queue *q, struct qmsg *m, struct qdomain *d, void *arg)
{
    *(size_t *)arg += delete_waiting(q, m, d);
}

/* domain_each_waiting - call fn on every message of d's index records (in
 * pages, so that memory stays bounded: the sync runs between pages) */
static void domain_each_waiting(struct qmgr_queue *q, struct qdomain *d,
                                void (*fn)(struct qmgr_queue *q, struct qmsg *m, struct qdomain *d, void *arg),
                                void *arg)
{
    if (q->ix == NULL)
        return;
    static struct page pg;
    pg.cutoff_us = 0;
    int64_t after_us = 0;
    char after_id[SPOOL_ID_LEN + 1] = "";
    for (;;) {
        pg.n = 0;
        long n = qindex_scan(q->ix, d->vg, d->name, after_us, after_id[0] ? after_id : NULL, 256, page_collect, &pg);
        if (n <= 0)
            break;
        for (size_t i = 0; i < pg.n; i++) {
            struct qmsg *m = msg_get(q, pg.id[i]);
            if (m == NULL) {
                qindex_del(q->ix, d->vg, d->name, pg.us[i], pg.id[i], NULL);
                continue;
            }
            fn(q, m, d, arg);
            if (!m->dirty)
                msg_release(q, m);
        }
        after_us = pg.us[pg.n - 1];
        str_copy(after_id, sizeof after_id, pg.id[pg.n - 1]);
        on_sync(-1, 0, q); /* write what changed, free what is done */
        index_touched(q);
        if (pg.n < 256)
            break;
    }
}

size_t qmgr_queue_delete(struct qmgr_queue *q, const char *id, const char *domain)
{
    size_t count = 0;
    for_each_idle_entry(q, id, domain, delete_entry, &count);
    if (id) { /* what of it waits in the index */
        struct qmsg *m = msg_get(q, id);
        if (m) {
            struct domain_visit v = {delete_visit, &count};
            msg_each_domain(q, m, visit_domain, &v);
            if (!m->dirty)
                msg_release(q, m);
        }
    } else if (domain) {
        for (int h = 0; h < DOMAIN_BUCKETS; h++)
            for (struct qdomain *d = q->domains[h]; d; d = d->hnext)
                if (str_case_eq(d->name, domain))
                    domain_each_waiting(q, d, delete_visit, &count);
    }
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

static void redirect_visit(struct qmgr_queue *q, struct qmsg *m, struct qdomain *d, void *arg)
{
    struct redirect_arg *ra = arg;
    /* into memory now, at the front, to the operator's host */
    char *saved = d->relay;
    int64_t saved_until = d->relay_until_us;
    d->relay = (char *)ra->relay;
    d->relay_until_us = INT64_MAX;
    bool waiting = !in_memory_for(m, d);
    size_t n = entries_make(q, m, d, true);
    if (n && waiting && after_cursor(d, m->arrival_us, m->id)) { /* no longer waiting */
        if (d->n_paged)
            d->n_paged--;
        d->n_paged_rcpts = d->n_paged_rcpts > n ? d->n_paged_rcpts - n : 0;
    }
    d->relay = saved;
    d->relay_until_us = saved_until;
    if (n) {
        ra->count += n;
        log_msg(m->id, "redirected by the operator: %zu recipient(s) for %s to %s", n, d->name, ra->relay);
    }
}

/* count_waiting - recipients of domain (every gateway) in the index only */
static size_t count_waiting(struct qmgr_queue *q, const char *domain)
{
    size_t n = 0;
    for (int h = 0; h < DOMAIN_BUCKETS; h++)
        for (struct qdomain *d = q->domains[h]; d; d = d->hnext)
            if (str_case_eq(d->name, domain))
                n += (size_t)d->n_paged_rcpts;
    return n;
}

size_t qmgr_queue_redirect(struct qmgr_queue *q, const char *id, const char *domain, const char *relay)
{
    struct redirect_arg ra = {relay, 0};
    for_each_idle_entry(q, id, domain, redirect_entry, &ra);
    if (id) {
        struct qmsg *m = msg_get(q, id);
        if (m) {
            struct domain_visit v = {redirect_visit, &ra};
            msg_each_domain(q, m, visit_domain, &v);
            msg_release(q, m);
        }
    } else if (domain) {
        /* What waits in the index follows as it is read in (at full
         * concurrency even if the domain is down); mail arriving later
         * takes the domain's own route. */
        ra.count += count_waiting(q, domain);
        struct timeval tv;
        gettimeofday(&tv, NULL);
        for (int h = 0; h < DOMAIN_BUCKETS; h++)
            for (struct qdomain *d = q->domains[h]; d; d = d->hnext)
                if (str_case_eq(d->name, domain)) {
                    free(d->relay);
                    d->relay = str_dup(relay);
                    d->relay_until_us = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
                    runq_add(q, d);
                }
        if (ra.count)
            log_info("domain %s: %zu recipient(s) redirected by the operator to %s", domain, ra.count, relay);
    }
    kick(q);
    return ra.count;
}

bool qmgr_queue_known(struct qmgr_queue *q, const char *id)
{
    if (msg_find(q, id))
        return true;
    char path[SPOOL_PATH_MAX];
    return spool_id_valid(id) && spool_path_queue(q->qdir, id, path, sizeof path) && access(path, F_OK) == 0;
}

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
    char why[256];
    q->n_retry = schedule_parse(cfg_str(cfg, P_retry_schedule), q->retry, RETRY_MAX, why, sizeof why);
    if (q->n_retry < 0) {
        log_error("retry_schedule: %s (using %d s)", why, SCHEDULE_DEFAULT_S);
        q->n_retry = 0;
    }
    q->lifetime = cfg_int(cfg, P_max_queue_lifetime);
    q->window = (size_t)cfg_int(cfg, P_qmgr_domain_active_limit);
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
    if (t != NULL && !controls_check(t, cfg_str(cfg, P_destination_controls), terr, sizeof terr)) {
        table_free(t);
        t = NULL;
    }
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

static void on_index_commit(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr_queue *q = arg;
    if (q->ix)
        qindex_commit(q->ix);
}

/* on_index_flush - the index to stable storage, then the new/ links of what
 * it holds go; a checkpoint now and then keeps the log short */
static void on_index_flush(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr_queue *q = arg;
    if (q->ix == NULL)
        return;
    /* Mail still queued a second after it came: into the index now (the
     * markers name every message that may have such records). */
    for (size_t i = 0; i < q->n_markers; i++) {
        struct qmsg *m = q->markers[i][0] ? msg_find(q, q->markers[i]) : NULL;
        if (m)
            index_deferred(q, m);
    }
    if (q->n_markers && qindex_flush(q->ix) == 0) {
        for (size_t i = 0; i < q->n_markers; i++) {
            char path[SPOOL_PATH_MAX];
            if (q->markers[i][0] && str_fmt(path, sizeof path, "%s/new/%s", q->qdir, q->markers[i]))
                reaper_unlink(path);
        }
        q->n_markers = 0;
        q->marker_gen++;
    }
    time_t now = time(NULL);
    if (now - q->last_checkpoint >= INDEX_CHECKPOINT_S) {
        q->last_checkpoint = now;
        qindex_checkpoint(q->ix);
    }
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
    q->commit_ev = evtimer_new(base, on_index_commit, q);
    q->flush_ev = event_new(base, -1, EV_PERSIST, on_index_flush, q);
    struct timeval tick = {0, TICK_MS * 1000}, flush = {INDEX_FLUSH_S, 0};
    if (q->qdir == NULL || q->sync_fd < 0 || !q->kick_ev || !q->sync_ev || !q->retry_ev || !q->commit_ev ||
        !q->flush_ev || event_add(q->retry_ev, &tick) != 0 || event_add(q->flush_ev, &flush) != 0) {
        qmgr_queue_free(q);
        return NULL;
    }
    char err[QINDEX_ERR_MAX];
    q->ix = qindex_open(q->qdir, &q->ix_sound, err, sizeof err);
    if (q->ix == NULL)
        log_error("index: %s; queue kept in memory only", err);
    else if (!q->ix_sound)
        str_copy(q->ix_why, sizeof q->ix_why, "missing or not completely built");
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
    for (int h = 0; h < JOB_BUCKETS; h++)
        while (q->slots[h]) {
            struct qslot *slot = q->slots[h];
            q->slots[h] = slot->hnext;
            free(slot);
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
            free(d->relay);
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
    if (q->commit_ev)
        event_free(q->commit_ev);
    if (q->flush_ev)
        event_free(q->flush_ev);
    qindex_close(q->ix); /* after the messages: nothing more to write */
    free(q->markers);
    if (q->sync_fd > 0)
        close(q->sync_fd);
    table_free(q->controls);
    vg_free(q->vgs);
    free(q->qdir);
    free(q->hostname);
    free(q->bounce_vg);
    free(q);
}
