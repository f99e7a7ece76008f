/* main.c - delivery: the outbound SMTP client process (DESIGN §1). Hooks for
 * the lib/server skeleton: the job channel to qmgr (private/qmgr, re-dialled
 * when qmgr restarts), the dnscache client, the smtp_routes table, reload and
 * graceful stop. The work is in job.c (routing, results) and smtp.c. */
#include "debug.h"
#include "delivery.h"
#include "dnsc.h"
#include "ipc.h"
#include "job.h"
#include "log.h"
#include "paths.h"
#include "peer.h"
#include "server.h"
#include "smtp.h"
#include "str.h"
#include "table.h"
#include "vg.h"

#include <event2/event.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REDIAL_MS 500
#define JOB_RCPTS_MAX 1000

static struct delivery the_delivery;
static struct peer *qmgr_link;
static unsigned qmgr_link_generation; /* a new one for every connection to qmgr */
static struct event *redial_ev, *stop_ev;

static void schedule_redial(void)
{
    struct timeval tv = {0, REDIAL_MS * 1000};
    if (!the_delivery.srv->stopping)
        evtimer_add(redial_ev, &tv);
}

void delivery_report(struct delivery *dl, uint64_t job, const char *rcpt, int status, const char *dsn,
                     const char *reply)
{
    if (qmgr_link == NULL)
        return;
    struct ipc_msg m;
    if (ipc_begin(&m, IPC_DELIVERY_RESULT) && ipc_put_u64(&m, job) && ipc_put_str(&m, rcpt) &&
        ipc_put_u64(&m, (uint64_t)status) && ipc_put_str(&m, dsn) && ipc_put_str(&m, reply) && ipc_finish(&m))
        peer_send(qmgr_link, &m);
    ipc_msg_free(&m);
}

static void send_slot(uint64_t job, bool held)
{
    struct ipc_msg m;
    if (ipc_begin(&m, IPC_DELIVERY_SLOT) && ipc_put_u64(&m, job) && ipc_put_u64(&m, held ? 1 : 0) && ipc_finish(&m))
        peer_send(qmgr_link, &m);
    ipc_msg_free(&m);
}

unsigned delivery_slot_hold(struct delivery *dl, uint64_t job)
{
    (void)dl;
    if (qmgr_link == NULL)
        return 0;
    send_slot(job, true);
    return qmgr_link_generation;
}

void delivery_slot_release(struct delivery *dl, uint64_t job, unsigned generation)
{
    (void)dl;
    /* A qmgr that came after the hold never heard of the job (and may have
     * given its number to another). */
    if (qmgr_link != NULL && generation != 0 && generation == qmgr_link_generation)
        send_slot(job, false);
}

void delivery_site(struct delivery *dl, uint64_t job, int reachable, const char *reason)
{
    if (qmgr_link == NULL)
        return;
    struct ipc_msg m;
    if (ipc_begin(&m, IPC_DELIVERY_SITE) && ipc_put_u64(&m, job) && ipc_put_u64(&m, (uint64_t)reachable) &&
        ipc_put_str(&m, reason) && ipc_finish(&m))
        peer_send(qmgr_link, &m);
    ipc_msg_free(&m);
}

int delivery_messages_per_connection(const struct delivery *dl, const char *domain)
{
    char v[32];
    const char *e = dl->controls ? table_find_domain(dl->controls, domain, "default") : NULL;
    int64_t n;
    if (e && table_attr(e, "max_messages_per_connection", v, sizeof v) && str_to_i64(v, 1, 100000, &n))
        return (int)n;
    return 100;
}

/* A small table of recently failed addresses (oldest entry replaced). */
#define AVOID_MAX 256
static struct {
    struct sockaddr_storage ss;
    time_t until;
} avoid[AVOID_MAX];

static bool same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr, &((const struct sockaddr_in *)b)->sin_addr, 4) == 0 &&
               inet_port(a) == inet_port(b);
    if (a->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
                      16) == 0 &&
               inet_port(a) == inet_port(b);
    return false;
}

void delivery_host_failed(struct delivery *dl, const struct sockaddr *sa)
{
    time_t now = time(NULL);
    int slot = 0;
    for (int i = 0; i < AVOID_MAX; i++) {
        if (avoid[i].until > now && same_addr((struct sockaddr *)&avoid[i].ss, sa)) {
            slot = i;
            break;
        }
        if (avoid[i].until < avoid[slot].until)
            slot = i;
    }
    memcpy(&avoid[slot].ss, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    avoid[slot].until = now + HOST_AVOID_S;
}

bool delivery_host_avoided(const struct delivery *dl, const struct sockaddr *sa)
{
    return delivery_host_avoid_left(dl, sa) > 0;
}

int delivery_host_avoid_left(const struct delivery *dl, const struct sockaddr *sa)
{
    time_t now = time(NULL), until = 0;
    for (int i = 0; i < AVOID_MAX; i++)
        if (avoid[i].until > now && avoid[i].until > until && same_addr((const struct sockaddr *)&avoid[i].ss, sa))
            until = avoid[i].until;
    return until > now ? (int)(until - now < HOST_AVOID_S ? until - now : HOST_AVOID_S) : 0;
}

/* What was last reported to qmgr per domain (DELIVERY_MX), so that an
 * unchanged set is not sent with every job: a small table indexed by a hash
 * of the domain name (a collision only costs an extra report). */
#define MX_REPORT_SLOTS 1024
static struct {
    uint64_t key;      /* hash of the domain; 0: empty slot */
    uint64_t digest;
    time_t sent;
} mx_sent[MX_REPORT_SLOTS];

static uint64_t domain_key(const char *domain)
{
    uint64_t h = 14695981039346656037ull;
    for (; *domain; domain++)
        h = (h ^ (unsigned char)*domain) * 1099511628211ull;
    return h | 1;
}

void delivery_mx_report(struct delivery *dl, const char *domain, const char *const *records, size_t n,
                        uint64_t digest)
{
    if (qmgr_link == NULL)
        return;
    uint64_t key = domain_key(domain);
    size_t slot = (size_t)(key % MX_REPORT_SLOTS);
    time_t now = time(NULL);
    if (mx_sent[slot].key == key && mx_sent[slot].digest == digest && now - mx_sent[slot].sent < MX_REPORT_REFRESH_S)
        return;
    struct ipc_msg m;
    bool ok = ipc_begin(&m, IPC_DELIVERY_MX) && ipc_put_str(&m, dl->vg) && ipc_put_str(&m, domain);
    for (size_t i = 0; ok && i < n; i++)
        ok = ipc_put_str(&m, records[i]);
    if (ok && ipc_finish(&m) && peer_send(qmgr_link, &m)) {
        mx_sent[slot].key = key;
        mx_sent[slot].digest = digest;
        mx_sent[slot].sent = now;
    }
    ipc_msg_free(&m);
}

#define LOAD_MAX 1024
static struct {
    struct sockaddr_storage ss;
    int conns;
} loads[LOAD_MAX];

int delivery_conn_load(const struct sockaddr *sa)
{
    for (int i = 0; i < LOAD_MAX; i++)
        if (loads[i].conns > 0 && same_addr((struct sockaddr *)&loads[i].ss, sa))
            return loads[i].conns;
    return 0;
}

void delivery_conn_change(const struct sockaddr *sa, int delta)
{
    int free_slot = -1;
    for (int i = 0; i < LOAD_MAX; i++) {
        if (loads[i].conns > 0 && same_addr((struct sockaddr *)&loads[i].ss, sa)) {
            loads[i].conns += delta;
            return;
        }
        if (loads[i].conns <= 0 && free_slot < 0)
            free_slot = i;
    }
    if (delta > 0 && free_slot >= 0) {
        memcpy(&loads[free_slot].ss, sa,
               sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
        loads[free_slot].conns = delta;
    }
}

void delivery_job_add(struct delivery *dl, struct job *j)
{
    if (dl->n_jobs == dl->cap_jobs) {
        size_t cap = dl->cap_jobs ? dl->cap_jobs * 2 : 64;
        struct job **p = realloc(dl->jobs, cap * sizeof *p);
        if (p == NULL)
            log_fatal("out of memory for the job table"); /* qmgr requeues */
        dl->jobs = p;
        dl->cap_jobs = cap;
    }
    dl->jobs[dl->n_jobs++] = j;
}

void delivery_job_gone(struct delivery *dl, struct job *j)
{
    for (size_t i = 0; i < dl->n_jobs; i++)
        if (dl->jobs[i] == j) {
            dl->jobs[i] = dl->jobs[--dl->n_jobs];
            break;
        }
    if (dl->srv->stopping && dl->n_jobs == 0)
        server_exit_loop(dl->srv);
}

static bool on_qmgr_msg(struct peer *p, struct ipc_msg *m, void *arg)
{
    struct delivery *dl = arg;
    if (m->type != IPC_QMGR_DELIVER && m->type != IPC_QMGR_DELIVER_VIA) {
        log_warn("unexpected %s message from qmgr", ipc_type_name(m->type));
        return false;
    }
    uint64_t job;
    const char *id, *domain, *vg, *via = NULL, *rcpts[JOB_RCPTS_MAX];
    size_t n = 0;
    if (!ipc_get_u64(m, &job) || !ipc_get_str(m, &id) || !ipc_get_str(m, &domain) || !ipc_get_str(m, &vg) ||
        (m->type == IPC_QMGR_DELIVER_VIA && !ipc_get_str(m, &via)))
        return false;
    while (ipc_more(m) && n < JOB_RCPTS_MAX)
        if (!ipc_get_str(m, &rcpts[n++]))
            return false;
    if (!ipc_end(m) || n == 0)
        return false;
    if (dl->srv->stopping) {
        for (size_t i = 0; i < n; i++)
            delivery_report(dl, job, rcpts[i], JR_DEFERRED, "4.3.2", "delivery agent is stopping");
        return true;
    }
    job_start(dl, job, id, domain, vg, via, rcpts, n);
    return true;
}

static void on_qmgr_close(struct peer *p, void *arg)
{
    struct delivery *dl = arg;
    /* qmgr has requeued every job it gave us: their results would name jobs
     * the next qmgr never heard of, so drop them (in flight: at most once more). */
    log_warn("lost the connection to qmgr; dropping %zu jobs in flight and dialling again", dl->n_jobs);
    peer_free(qmgr_link);
    qmgr_link = NULL;
    memset(mx_sent, 0, sizeof mx_sent); /* the next qmgr knows no mail exchangers */
    while (dl->n_jobs > 0)
        job_abort(dl->jobs[dl->n_jobs - 1]);
    schedule_redial();
}

static void dial_qmgr(evutil_socket_t fd, short what, void *arg)
{
    struct delivery *dl = arg;
    char path[PATHS_MAX];
    if (qmgr_link || !paths_private_socket(dl->queue_directory, "qmgr", path, sizeof path))
        return;
    qmgr_link = peer_connect_unix(dl->base, path, on_qmgr_msg, on_qmgr_close, dl);
    if (qmgr_link == NULL) {
        schedule_redial();
        return;
    }
    if (++qmgr_link_generation == 0)
        qmgr_link_generation = 1;
    struct ipc_msg h;
    char program[96];
    str_fmt(program, sizeof program, "delivery/%s", dl->vg);
    if (ipc_begin(&h, IPC_HELLO) && ipc_put_u64(&h, IPC_VERSION) && ipc_put_str(&h, program) &&
        ipc_put_u64(&h, (uint64_t)getpid()) && ipc_finish(&h))
        peer_send(qmgr_link, &h);
    ipc_msg_free(&h);
}

/* load_settings - values and the routes table from cfg */
static bool load_settings(struct delivery *dl, const struct config *cfg, char *err, size_t errlen)
{
    char terr[TABLE_ERR_MAX];
    struct table *routes = table_load(cfg_str(cfg, P_smtp_routes), terr);
    if (routes == NULL) {
        str_copy(err, errlen, terr);
        return false;
    }
    struct table *controls = table_load(cfg_str(cfg, P_destination_controls), terr);
    if (controls == NULL) {
        table_free(routes);
        str_fmt(err, errlen, "destination_controls: %s", terr);
        return false;
    }
    table_free(dl->controls);
    dl->controls = controls;
    char verr[VG_ERR_MAX];
    struct vg_set *vs = vg_load(cfg, verr);
    if (vs == NULL) {
        table_free(routes);
        str_copy(err, errlen, verr);
        return false;
    }
    const struct vg *g = vg_find(vs, dl->vg);
    if (g == NULL) {
        vg_free(vs);
        table_free(routes);
        str_fmt(err, errlen, "virtual gateway '%s' is not in virtual_gateways", dl->vg);
        return false;
    }
    char *helo = str_dup(g->helo[0] ? g->helo : cfg_str(cfg, P_smtp_helo_name));
    dl->n_sources = g->n_sources;
    memcpy(dl->sources, g->sources, sizeof dl->sources);
    vg_free(vs);
    if (helo == NULL) {
        table_free(routes);
        return str_copy(err, errlen, "out of memory"), false;
    }
    table_free(dl->routes);
    dl->routes = routes;
    free(dl->helo_name);
    dl->helo_name = helo;
    dl->remote_port = (int)cfg_int(cfg, P_smtp_remote_port);
    dl->connect_timeout_s = (int)cfg_int(cfg, P_smtp_connect_timeout);
    dl->timeout_s = (int)cfg_int(cfg, P_smtp_timeout);
    return true;
}

static bool delivery_post_init(struct server *srv)
{
    struct delivery *dl = &the_delivery;
    dl->srv = srv;
    dl->base = srv->base;
    srv->app = dl;
    char err[512], path[PATHS_MAX];
    if ((dl->queue_directory = str_dup(cfg_str(srv->cfg, P_queue_directory))) == NULL)
        log_fatal("out of memory");
    /* -n NAME: the virtual gateway; the plain program name means "default". */
    str_copy(dl->vg, sizeof dl->vg, strcmp(srv->instance, srv->program) == 0 ? "default" : srv->instance);
    if (!load_settings(dl, srv->cfg, err, sizeof err))
        log_fatal("%s", err);
    if (dl->n_sources)
        log_info("virtual gateway %s: %d source address(es), helo %s", dl->vg, dl->n_sources, dl->helo_name);
    if (!paths_private_socket(dl->queue_directory, "dnscache", path, sizeof path) ||
        (dl->dns = dnsc_new(srv->base, path)) == NULL)
        log_fatal("cannot create the dnscache client");
    if (!debug_init(srv->base, dl->queue_directory))
        log_fatal("out of memory");
    redial_ev = evtimer_new(srv->base, dial_qmgr, dl);
    if (redial_ev == NULL)
        log_fatal("out of memory");
    dial_qmgr(-1, 0, dl);
    return true;
}

static void delivery_on_reload(struct server *srv, struct config *old)
{
    char err[512];
    if (!load_settings(&the_delivery, srv->cfg, err, sizeof err))
        log_error("reload: %s; keeping the old settings", err);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct delivery *dl = arg;
    log_warn("stop_timeout: %zu deliveries still running are abandoned (qmgr retries them)", dl->n_jobs);
    server_exit_loop(dl->srv);
}

static void delivery_on_stop(struct server *srv)
{
    struct delivery *dl = srv->app;
    evtimer_del(redial_ev);
    smtp_close_idle();
    if (dl->n_jobs == 0) {
        server_exit_loop(srv);
        return;
    }
    stop_ev = evtimer_new(srv->base, on_stop_timer, dl);
    struct timeval tv = {cfg_int(srv->cfg, P_stop_timeout), 0};
    if (stop_ev == NULL || evtimer_add(stop_ev, &tv) != 0)
        server_exit_loop(srv);
}

static void delivery_on_exit(struct server *srv)
{
    struct delivery *dl = &the_delivery;
    while (dl->n_jobs > 0)
        job_abort(dl->jobs[dl->n_jobs - 1]);
    smtp_close_idle();
    free(dl->jobs);
    peer_free(qmgr_link);
    qmgr_link = NULL;
    dnsc_free(dl->dns);
    debug_shutdown();
    table_free(dl->routes);
    table_free(dl->controls);
    if (redial_ev)
        event_free(redial_ev);
    if (stop_ev)
        event_free(stop_ev);
    free(dl->helo_name);
    free(dl->queue_directory);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .post_init = delivery_post_init,
        .on_reload = delivery_on_reload,
        .on_stop = delivery_on_stop,
        .on_exit = delivery_on_exit,
    };
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    return server_main(argc, argv, "delivery", &hooks);
}
