/* dnsc.c - client of the dnscache daemon (see dnsc.h): the connection,
 * the table of requests in flight, their timers, and the deferred queue of
 * answers made without the daemon.
 *
 * The connection is opened on the first lookup and again, with back-off,
 * after dnscache went away while requests were waiting; on every new
 * connection HELLO goes first, then every request not yet answered is sent
 * (again), so a dnscache restart costs latency, not answers. A request ends
 * exactly once: its DNS_ANSWER, its timer (DNSC_TIMEOUT), a protocol error
 * of the daemon (DNSC_SERVFAIL), a local answer (DNSC_BADNAME for a name
 * longer than DNSC_NAME_MAX), or dnsc_cancel / dnsc_free (no callback).
 *
 * Callbacks run from the event loop only. A callback may call dnsc_lookup,
 * dnsc_cancel and even dnsc_free: c is then released when the callback
 * returns. The one exception to "never from inside dnsc_lookup": when memory
 * is so short that not even the request can be allocated and the fixed
 * queue of DNSC_FAILQ_MAX pending failures is full, the SERVFAIL callback is
 * made at once (exactly-once wins over later). */
#include "dnsc.h"
#include "ipc.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DNSC_BUCKETS 1024          /* hash buckets of the request table (chained) */
#define DNSC_INFLIGHT_MAX 65536    /* requests in flight; more fail with SERVFAIL */
#define DNSC_NAME_MAX 255          /* a longer name is answered DNSC_BADNAME without asking */
#define DNSC_TYPE_MAX 15
#define DNSC_RETRY_MIN_MS 50       /* reconnect back-off: first delay, doubled up to the max */
#define DNSC_RETRY_MAX_MS 1000
#define DNSC_FAILQ_MAX 64          /* failures queued when a request cannot be allocated */

struct dnsc_req {
    struct dnsc_req *prev, *next;  /* in-flight list, oldest first; next also links the done queue */
    struct dnsc_req *hnext;        /* hash chain */
    struct dnsc *c;
    uint64_t id;
    dnsc_cb cb;
    void *arg;
    struct event *timer;           /* NULL for a local answer */
    enum dnsc_rcode local;         /* the rcode of a local answer */
    char type[DNSC_TYPE_MAX + 1];
    char name[];
};

struct dnsc_fail {
    dnsc_cb cb;
    void *arg;
};

struct dnsc {
    struct event_base *base;
    struct sockaddr_un sun;
    struct bufferevent *bev;       /* NULL while not connected */
    bool hello;                    /* the daemon's HELLO was seen on bev */
    struct event *retry;           /* reconnect timer */
    int backoff_ms;
    struct event *deferred;        /* runs the done queue and the fail queue */
    struct dnsc_req *buckets[DNSC_BUCKETS];
    struct dnsc_req *head, *tail;  /* in flight */
    size_t n;
    struct dnsc_req *done_head, *done_tail;
    struct dnsc_fail failq[DNSC_FAILQ_MAX];
    size_t nfail;
    uint64_t next_id;
    int in_cb;                     /* callbacks running (nesting depth) */
    bool dead;                     /* dnsc_free was called inside a callback */
};

static void dnsc_connect(struct dnsc *c);

/* deliver - call one callback; false when c was freed meanwhile */
static bool deliver(struct dnsc *c, dnsc_cb cb, void *arg, const struct dnsc_answer *a)
{
    c->in_cb++;
    cb(arg, a);
    c->in_cb--;
    if (c->dead) {
        if (c->in_cb == 0)
            free(c);
        return false;
    }
    return true;
}

/* deliver_rcode - a callback with an answer of no records */
static bool deliver_rcode(struct dnsc *c, dnsc_cb cb, void *arg, enum dnsc_rcode rcode)
{
    struct dnsc_answer a = {.rcode = rcode};
    return deliver(c, cb, arg, &a);
}

/* ---- the request table ---- */

static struct dnsc_req *req_find(struct dnsc *c, uint64_t id)
{
    for (struct dnsc_req *r = c->buckets[id % DNSC_BUCKETS]; r; r = r->hnext)
        if (r->id == id)
            return r;
    return NULL;
}

/* req_unlink - out of the table and the in-flight list */
static void req_unlink(struct dnsc *c, struct dnsc_req *r)
{
    struct dnsc_req **pp = &c->buckets[r->id % DNSC_BUCKETS];
    while (*pp && *pp != r)
        pp = &(*pp)->hnext;
    if (*pp == r)
        *pp = r->hnext;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        c->tail = r->prev;
    c->n--;
}

static void req_free(struct dnsc_req *r)
{
    if (r->timer)
        event_free(r->timer);
    free(r);
}

/* req_end - take r out and call it back; false when c was freed */
static bool req_end(struct dnsc *c, struct dnsc_req *r, const struct dnsc_answer *a)
{
    req_unlink(c, r);
    dnsc_cb cb = r->cb;
    void *arg = r->arg;
    req_free(r);
    return deliver(c, cb, arg, a);
}

/* fail_all - every request in flight now ends with rcode (not those that
 * callbacks add meanwhile: ids grow along the list); false when c was freed */
static bool fail_all(struct dnsc *c, enum dnsc_rcode rcode)
{
    struct dnsc_answer a = {.rcode = rcode};
    uint64_t last = c->next_id;
    while (c->head && c->head->id <= last)
        if (!req_end(c, c->head, &a))
            return false;
    return true;
}

/* ---- the connection ---- */

/* send_frame - queue one built message on the connection */
static bool send_frame(struct dnsc *c, struct ipc_msg *m, bool built)
{
    bool ok = built && ipc_finish(m) && c->bev && bufferevent_write(c->bev, m->data.data, m->data.len) == 0;
    ipc_msg_free(m);
    return ok;
}

/* send_req - one DNS_QUERY */
static bool send_req(struct dnsc *c, const struct dnsc_req *r)
{
    struct ipc_msg m;
    return send_frame(c, &m,
                      ipc_begin(&m, IPC_DNS_QUERY) && ipc_put_u64(&m, r->id) && ipc_put_str(&m, r->name) &&
                          ipc_put_str(&m, r->type));
}

/* schedule_retry - reconnect later, with back-off */
static void schedule_retry(struct dnsc *c)
{
    if (evtimer_pending(c->retry, NULL))
        return;
    struct timeval tv = {c->backoff_ms / 1000, (c->backoff_ms % 1000) * 1000};
    evtimer_add(c->retry, &tv);
    c->backoff_ms = c->backoff_ms * 2 > DNSC_RETRY_MAX_MS ? DNSC_RETRY_MAX_MS : c->backoff_ms * 2;
}

/* disconnect - close; the requests stay and are sent again on reconnect */
static void disconnect(struct dnsc *c)
{
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->hello = false;
    if (c->n > 0)
        schedule_retry(c);
}

/* protocol_error - the daemon broke the protocol: log, close, and fail what
 * is in flight (sending it again would only repeat the error). False when c
 * was freed by a callback. */
static bool protocol_error(struct dnsc *c, const char *why)
{
    log_error("dnscache %s: %s: closing the connection", c->sun.sun_path, why);
    disconnect(c);
    return fail_all(c, DNSC_SERVFAIL);
}

/* handle_answer - one DNS_ANSWER; false when c is gone or the frame was bad */
static bool handle_answer(struct dnsc *c, struct ipc_msg *m)
{
    uint64_t id, rcode, ttl;
    struct dnsc_answer a = {0};
    if (!ipc_get_u64(m, &id) || !ipc_get_u64(m, &rcode) || !ipc_get_u64(m, &ttl))
        return protocol_error(c, "malformed DNS_ANSWER") && false;
    while (ipc_more(m)) {
        const char *s;
        if (!ipc_get_str(m, &s))
            break;
        if (a.n < DNSC_RECORDS_MAX)
            a.records[a.n++] = s;
    }
    bool known = rcode == DNSC_OK || rcode == DNSC_SERVFAIL || rcode == DNSC_NXDOMAIN || rcode == DNSC_BADNAME ||
                 rcode == DNSC_TIMEOUT;
    if (!ipc_end(m) || !known || ttl > UINT32_MAX)
        return protocol_error(c, "malformed DNS_ANSWER") && false;
    a.rcode = (enum dnsc_rcode)rcode;
    a.ttl = (uint32_t)ttl;
    struct dnsc_req *r = req_find(c, id);
    if (r == NULL)
        return true; /* timed out or cancelled meanwhile */
    return req_end(c, r, &a);
}

/* on_read - whole frames from the daemon */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct dnsc *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        uint8_t head[4];
        if (evbuffer_copyout(in, head, sizeof head) != (ev_ssize_t)sizeof head)
            return;
        size_t flen = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
        if (flen > IPC_FRAME_MAX) {
            protocol_error(c, "frame too long");
            return;
        }
        if (evbuffer_get_length(in) < 4 + flen)
            return;
        const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)(4 + flen));
        struct ipc_msg m;
        size_t used = 0;
        if (p == NULL || ipc_parse(p, 4 + flen, &used, &m) != 1) {
            protocol_error(c, p ? "malformed frame" : "out of memory");
            return;
        }
        evbuffer_drain(in, used);
        bool go_on;
        if (!c->hello) {
            uint64_t version = 0, pid;
            const char *program;
            bool ok = m.type == IPC_HELLO && ipc_get_u64(&m, &version) && ipc_get_str(&m, &program) &&
                      ipc_get_u64(&m, &pid) && ipc_end(&m);
            if (ok && version == IPC_VERSION) {
                c->hello = true;
                c->backoff_ms = DNSC_RETRY_MIN_MS;
                go_on = true;
            } else {
                char why[80];
                str_fmt(why, sizeof why, ok ? "IPC version %llu, we speak %d" : "no HELLO first",
                        (unsigned long long)version, IPC_VERSION);
                go_on = protocol_error(c, why) && false;
            }
        } else if (m.type == IPC_DNS_ANSWER) {
            go_on = handle_answer(c, &m);
        } else {
            char why[64];
            str_fmt(why, sizeof why, "unexpected %s message", ipc_type_name(m.type));
            go_on = protocol_error(c, why) && false;
        }
        ipc_msg_free(&m);
        if (!go_on || c->bev != bev)
            return; /* c freed, or a callback's lookup closed this connection */
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct dnsc *c = arg;
    log_debug("dnscache %s: connection %s", c->sun.sun_path, what & BEV_EVENT_EOF ? "closed" : "failed");
    disconnect(c);
}

/* dnsc_connect - open the socket, say HELLO, send everything in flight */
static void dnsc_connect(struct dnsc *c)
{
    if (c->bev)
        return;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)&c->sun, sizeof c->sun) != 0) {
        log_debug("dnscache %s: connect: %s", c->sun.sun_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        schedule_retry(c);
        return;
    }
    c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        close(fd);
        schedule_retry(c);
        return;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    struct ipc_msg m;
    bool ok = bufferevent_enable(c->bev, EV_READ | EV_WRITE) == 0 &&
              send_frame(c, &m,
                         ipc_begin(&m, IPC_HELLO) && ipc_put_u64(&m, IPC_VERSION) &&
                             ipc_put_str(&m, program_invocation_short_name) && ipc_put_u64(&m, (uint64_t)getpid()));
    for (struct dnsc_req *r = c->head; ok && r; r = r->next)
        ok = send_req(c, r);
    if (!ok)
        disconnect(c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct dnsc *c = arg;
    if (c->n > 0)
        dnsc_connect(c);
}

/* on_timeout - no answer in DNSC_TIMEOUT_MS */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct dnsc_req *r = arg;
    struct dnsc_answer a = {.rcode = DNSC_TIMEOUT};
    req_end(r->c, r, &a);
}

/* ---- deferred answers ---- */

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct dnsc *c = arg;
    /* Failures have no id (nothing can cancel them): take the queue as it is. */
    size_t nfail = c->nfail;
    struct dnsc_fail fails[DNSC_FAILQ_MAX];
    memcpy(fails, c->failq, nfail * sizeof fails[0]);
    c->nfail = 0;
    for (size_t i = 0; i < nfail; i++)
        if (!deliver_rcode(c, fails[i].cb, fails[i].arg, DNSC_SERVFAIL))
            return;
    /* Local answers one at a time from the queue itself, so that a callback
     * can still cancel the ones behind it. */
    while (c->done_head) {
        struct dnsc_req *r = c->done_head;
        c->done_head = r->next;
        if (c->done_head == NULL)
            c->done_tail = NULL;
        dnsc_cb cb = r->cb;
        void *cb_arg = r->arg;
        enum dnsc_rcode rc = r->local;
        free(r);
        if (!deliver_rcode(c, cb, cb_arg, rc))
            return;
    }
}

/* defer - a local answer for r, called back from the loop */
static void defer(struct dnsc *c, struct dnsc_req *r, enum dnsc_rcode rcode)
{
    r->local = rcode;
    r->next = NULL;
    if (c->done_tail)
        c->done_tail->next = r;
    else
        c->done_head = r;
    c->done_tail = r;
    event_active(c->deferred, EV_TIMEOUT, 1);
}

/* defer_failure - no request could be allocated: queue (cb, arg) for a
 * SERVFAIL, or, with the queue full, call back now */
static void defer_failure(struct dnsc *c, dnsc_cb cb, void *arg)
{
    if (c->nfail < DNSC_FAILQ_MAX) {
        c->failq[c->nfail].cb = cb;
        c->failq[c->nfail].arg = arg;
        c->nfail++;
        event_active(c->deferred, EV_TIMEOUT, 1);
        return;
    }
    log_error("dnsc: out of memory and %d failures queued: answering SERVFAIL at once", DNSC_FAILQ_MAX);
    deliver_rcode(c, cb, arg, DNSC_SERVFAIL);
}

/* ---- the interface ---- */

/* dnsc_new - client with its timers; connects on first use */
struct dnsc *dnsc_new(struct event_base *base, const char *socket_path)
{
    struct dnsc *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->base = base;
    c->sun.sun_family = AF_UNIX;
    c->backoff_ms = DNSC_RETRY_MIN_MS;
    if (!str_copy(c->sun.sun_path, sizeof c->sun.sun_path, socket_path)) {
        free(c);
        errno = ENAMETOOLONG;
        return NULL;
    }
    c->retry = evtimer_new(base, on_retry, c);
    c->deferred = event_new(base, -1, 0, on_deferred, c);
    if (c->retry == NULL || c->deferred == NULL) {
        if (c->retry)
            event_free(c->retry);
        if (c->deferred)
            event_free(c->deferred);
        free(c);
        errno = ENOMEM;
        return NULL;
    }
    return c;
}

/* dnsc_lookup - queue a request (or a local answer) */
uint64_t dnsc_lookup(struct dnsc *c, const char *name, const char *type, dnsc_cb cb, void *arg)
{
    size_t nlen = strnlen(name, DNSC_NAME_MAX + 1), tlen = strnlen(type, DNSC_TYPE_MAX + 1);
    struct dnsc_req *r = calloc(1, sizeof *r + (nlen > DNSC_NAME_MAX ? 0 : nlen) + 1);
    if (r == NULL) {
        defer_failure(c, cb, arg);
        return 0;
    }
    r->c = c;
    r->cb = cb;
    r->arg = arg;
    if (c->n >= DNSC_INFLIGHT_MAX) {
        log_warn("dnsc: %zu requests in flight: failing another one", c->n);
        defer(c, r, DNSC_SERVFAIL);
        return 0;
    }
    r->id = ++c->next_id;
    if (nlen > DNSC_NAME_MAX || tlen > DNSC_TYPE_MAX) {
        defer(c, r, DNSC_BADNAME);
        return r->id;
    }
    memcpy(r->name, name, nlen + 1);
    memcpy(r->type, type, tlen + 1);
    struct timeval tv = {DNSC_TIMEOUT_MS / 1000, (DNSC_TIMEOUT_MS % 1000) * 1000};
    r->timer = evtimer_new(c->base, on_timeout, r);
    if (r->timer == NULL || evtimer_add(r->timer, &tv) != 0) {
        if (r->timer)
            event_free(r->timer);
        free(r);
        defer_failure(c, cb, arg);
        return 0;
    }
    r->hnext = c->buckets[r->id % DNSC_BUCKETS];
    c->buckets[r->id % DNSC_BUCKETS] = r;
    r->prev = c->tail;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->n++;
    if (c->bev) {
        if (!send_req(c, r))
            disconnect(c); /* sent again on reconnect */
    } else if (!evtimer_pending(c->retry, NULL)) {
        dnsc_connect(c);
    }
    return r->id;
}

/* dnsc_cancel - forget a request, in flight or answered locally */
void dnsc_cancel(struct dnsc *c, uint64_t reqid)
{
    if (c == NULL || reqid == 0)
        return;
    struct dnsc_req *r = req_find(c, reqid);
    if (r != NULL) {
        req_unlink(c, r);
        req_free(r);
        return;
    }
    for (struct dnsc_req **pp = &c->done_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if ((*pp)->id != reqid)
            continue;
        r = *pp;
        *pp = r->next;
        if (c->done_tail == r)
            c->done_tail = prev;
        free(r);
        return;
    }
}

/* dnsc_free - everything, without callbacks */
void dnsc_free(struct dnsc *c)
{
    if (c == NULL || c->dead)
        return;
    while (c->head) {
        struct dnsc_req *r = c->head;
        req_unlink(c, r);
        req_free(r);
    }
    while (c->done_head) {
        struct dnsc_req *r = c->done_head;
        c->done_head = r->next;
        free(r);
    }
    c->done_tail = NULL;
    c->nfail = 0;
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    event_free(c->retry);
    event_free(c->deferred);
    if (c->in_cb > 0)
        c->dead = true; /* freed by deliver() when the callback returns */
    else
        free(c);
}
