/* main.c - dnscache: DNS on behalf of every other daemon (DESIGN §1).
 * Hooks for the lib/server skeleton. Owns the UNIX listening socket
 * $queue_directory/private/dnscache, the connected clients (one bufferevent
 * each, with their requests in flight), the cache sweep timer, and the one
 * cache and resolver of the process (cache.c, resolver.c).
 *
 * Protocol per connection (ipc_msgs.def): each side first sends HELLO
 * (IPC_VERSION; a mismatch drops the client), then the client sends
 * DNS_QUERY frames and gets one DNS_ANSWER per query, in any order, matched
 * by reqid. A malformed or unexpected frame drops that client only (STYLE
 * rule 6: clients are not trusted to be bug-free). A name that is not a valid
 * domain name, or a type other than MX A AAAA PTR TXT, is answered
 * DNSC_BADNAME. */
#include "cache.h"
#include "ipc.h"
#include "log.h"
#include "paths.h"
#include "resolver.h"
#include "server.h"
#include "str.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DNSCACHE_CLIENTS_MAX 1024          /* connected clients; more are refused at accept */
#define DNSCACHE_CLIENT_INFLIGHT_MAX 1024  /* requests in flight per client before we stop reading it */
#define DNSCACHE_FRAME_MAX 4096            /* a DNS_QUERY is tiny: a bigger frame is malformed */
#define DNSCACHE_OUTPUT_HIGH (1024 * 1024) /* stop reading a client whose answers pile up past this */
#define DNSCACHE_FRAMES_PER_READ 256       /* fairness: frames handled per read callback */
#define DNSCACHE_IDLE_S 600                /* an idle client (nothing in flight) is closed */
#define DNSCACHE_WRITE_S 30                /* a client that does not read its answers is dropped */
#define DNSCACHE_CACHE_ENTRIES 20000
#define DNSCACHE_CACHE_BYTES (32 * 1024 * 1024)
#define DNSCACHE_SWEEP_S 60                /* expired entries are swept this often */
#define DNSCACHE_STOP_MS 2000              /* graceful stop: answers get this long to drain */

struct client;

struct request {
    struct request *prev, *next;
    struct client *cl;
    uint64_t reqid;
    struct dns_waiter *w;
};

struct client {
    struct client *prev, *next;
    struct dnscache *dc;
    struct bufferevent *bev;
    struct request *reqs;
    size_t n_reqs;
    bool hello;                  /* the client's HELLO was seen */
    bool closing;                /* free once the output is flushed */
    unsigned long serial;        /* for log lines */
};

struct dnscache {
    struct server *srv;
    struct dns_server_list servers;
    struct dns_cache *cache;
    struct dns_resolver *resolver;
    struct evconnlistener *listener;
    char sock_path[PATHS_MAX];
    struct stat sock_st;         /* to unlink only our own socket at exit */
    struct client *clients;
    size_t n_clients;
    unsigned long serials;
    struct event *sweep_timer, *stop_timer;
};

static struct dnscache the_dnscache;

static void client_read(struct bufferevent *bev, void *arg);

/* now_ms - the cache's clock */
static uint64_t now_ms(void *arg)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* load_servers - dns_servers, or resolv.conf when empty */
static bool load_servers(const struct config *cfg, struct dns_server_list *out, char *err, size_t errlen)
{
    const char *list = cfg_str(cfg, P_dns_servers);
    if (!dns_servers_parse(list, out, err, errlen))
        return false;
    if (out->n > 0)
        return true;
    if (dns_servers_resolv_conf(DNS_RESOLV_CONF, out, err, errlen))
        return true;
    /* What the C library does without resolv.conf. */
    log_warn("%s; using 127.0.0.1:53", err);
    return dns_servers_parse("127.0.0.1", out, err, errlen);
}

/* log_servers - one line naming the servers in use */
static void log_servers(const char *what, const struct dns_server_list *sl)
{
    char text[DNS_SERVERS_MAX * (INET_STR_MAX + 1) + 1];
    size_t len = 0;
    text[0] = '\0';
    for (size_t i = 0; i < sl->n; i++) {
        char one[INET_STR_MAX];
        str_append(text, sizeof text, &len, "%s%s", i ? " " : "",
                   inet_endpoint_str((const struct sockaddr *)&sl->ep[i].ss, one, sizeof one));
    }
    log_info("%s: dns servers %s", what, text);
}

/* ---- clients ---- */

/* client_free - cancel the requests in flight, close, unlink */
static void client_free(struct client *cl)
{
    struct dnscache *dc = cl->dc;
    while (cl->reqs) {
        struct request *rq = cl->reqs;
        cl->reqs = rq->next;
        dns_resolver_cancel(dc->resolver, rq->w);
        free(rq);
    }
    bufferevent_free(cl->bev);
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        dc->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    dc->n_clients--;
    free(cl);
    if (dc->srv->stopping && dc->n_clients == 0)
        server_exit_loop(dc->srv);
}

/* client_drop - a client that broke the protocol */
static void client_drop(struct client *cl, const char *why)
{
    log_warn("client %lu: %s: dropping it", cl->serial, why);
    client_free(cl);
}

/* client_readable - may we take more frames from this client? */
static bool client_readable(const struct client *cl)
{
    return !cl->closing && cl->n_reqs < DNSCACHE_CLIENT_INFLIGHT_MAX &&
           evbuffer_get_length(bufferevent_get_output(cl->bev)) < DNSCACHE_OUTPUT_HIGH;
}

/* client_resume - reading was paused for back-pressure: go on, and handle
 * the frames already buffered */
static void client_resume(struct client *cl)
{
    if (!client_readable(cl) || (bufferevent_get_enabled(cl->bev) & EV_READ))
        return;
    bufferevent_enable(cl->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(cl->bev)) > 0)
        bufferevent_trigger(cl->bev, EV_READ, BEV_OPT_DEFER_CALLBACKS);
}

/* client_send - queue one built frame; false (client dropped) on failure */
static bool client_send(struct client *cl, struct ipc_msg *m)
{
    bool ok = bufferevent_write(cl->bev, m->data.data, m->data.len) == 0;
    ipc_msg_free(m);
    if (!ok)
        client_drop(cl, "out of memory for its output");
    return ok;
}

/* client_answer - one DNS_ANSWER; a too-large answer becomes SERVFAIL */
static bool client_answer(struct client *cl, uint64_t reqid, const struct dnsc_answer *a)
{
    struct ipc_msg m;
    bool ok = ipc_begin(&m, IPC_DNS_ANSWER) && ipc_put_u64(&m, reqid) && ipc_put_u64(&m, (uint64_t)a->rcode) &&
              ipc_put_u64(&m, a->ttl);
    for (size_t i = 0; ok && i < a->n; i++)
        ok = ipc_put_str(&m, a->records[i]);
    if (ok && ipc_finish(&m))
        return client_send(cl, &m);
    ipc_msg_free(&m);
    log_error("client %lu: cannot encode an answer of %zu records: sending SERVFAIL", cl->serial, a->n);
    if (!(ipc_begin(&m, IPC_DNS_ANSWER) && ipc_put_u64(&m, reqid) && ipc_put_u64(&m, DNSC_SERVFAIL) &&
          ipc_put_u64(&m, 0) && ipc_finish(&m))) {
        ipc_msg_free(&m);
        client_drop(cl, "out of memory for an answer");
        return false;
    }
    return client_send(cl, &m);
}

/* client_hello - our HELLO, first on every connection */
static bool client_hello(struct client *cl)
{
    struct ipc_msg m;
    if (!(ipc_begin(&m, IPC_HELLO) && ipc_put_u64(&m, IPC_VERSION) && ipc_put_str(&m, "dnscache") &&
          ipc_put_u64(&m, (uint64_t)getpid()) && ipc_finish(&m))) {
        ipc_msg_free(&m);
        client_drop(cl, "out of memory for HELLO");
        return false;
    }
    return client_send(cl, &m);
}

/* on_resolved - the resolver's answer to one request */
static void on_resolved(void *arg, const struct dnsc_answer *a)
{
    struct request *rq = arg;
    struct client *cl = rq->cl;
    if (rq->prev)
        rq->prev->next = rq->next;
    else
        cl->reqs = rq->next;
    if (rq->next)
        rq->next->prev = rq->prev;
    cl->n_reqs--;
    uint64_t reqid = rq->reqid;
    free(rq);
    if (client_answer(cl, reqid, a))
        client_resume(cl);
}

/* handle_query - one DNS_QUERY: bad name, cache hit, or park on the resolver;
 * false when the client was dropped */
static bool handle_query(struct client *cl, uint64_t reqid, const char *name_in, const char *type_in)
{
    struct dnscache *dc = cl->dc;
    char name[DNS_NAME_MAX + 1];
    uint16_t qtype = dns_type_parse(type_in);
    struct dnsc_answer a = {.rcode = DNSC_BADNAME};
    if (qtype == 0 || !dns_name_normalize(name_in, name)) {
        log_debug("client %lu: bad query %.300s %.20s", cl->serial, name_in, type_in);
        return client_answer(cl, reqid, &a);
    }
    if (dns_cache_get(dc->cache, name, qtype, &a)) {
        log_debug("%s %s: from cache: rcode=%s ttl=%u records=%zu", name, dns_type_name(qtype),
                  dns_rcode_name(a.rcode), (unsigned)a.ttl, a.n);
        return client_answer(cl, reqid, &a);
    }
    struct request *rq = calloc(1, sizeof *rq);
    if (rq != NULL) {
        rq->cl = cl;
        rq->reqid = reqid;
        rq->w = dns_resolver_lookup(dc->resolver, name, qtype, on_resolved, rq);
    }
    if (rq == NULL || rq->w == NULL) {
        free(rq);
        a.rcode = DNSC_SERVFAIL;
        return client_answer(cl, reqid, &a);
    }
    rq->next = cl->reqs;
    if (cl->reqs)
        cl->reqs->prev = rq;
    cl->reqs = rq;
    cl->n_reqs++;
    return true;
}

/* handle_frame - one parsed frame; false when the client was dropped */
static bool handle_frame(struct client *cl, struct ipc_msg *m)
{
    uint64_t version, pid, reqid;
    const char *program, *name, *type;
    if (!cl->hello) {
        if (m->type != IPC_HELLO || !ipc_get_u64(m, &version) || !ipc_get_str(m, &program) ||
            !ipc_get_u64(m, &pid) || !ipc_end(m)) {
            client_drop(cl, "first message is not a valid HELLO");
            return false;
        }
        if (version != IPC_VERSION) {
            log_warn("client %lu: %.64s[%llu] speaks IPC version %llu, we speak %d: dropping it", cl->serial,
                     program, (unsigned long long)pid, (unsigned long long)version, IPC_VERSION);
            client_free(cl);
            return false;
        }
        cl->hello = true;
        return true;
    }
    switch (m->type) {
    case IPC_DNS_QUERY:
        if (!ipc_get_u64(m, &reqid) || !ipc_get_str(m, &name) || !ipc_get_str(m, &type) || !ipc_end(m)) {
            client_drop(cl, "malformed DNS_QUERY");
            return false;
        }
        return handle_query(cl, reqid, name, type);
    default:
        break;
    }
    char why[64];
    str_fmt(why, sizeof why, "unexpected %s message", ipc_type_name(m->type));
    client_drop(cl, why);
    return false;
}

/* client_read - take whole frames while the client may send more */
static void client_read(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (int k = 0; k < DNSCACHE_FRAMES_PER_READ; k++) {
        if (!client_readable(cl)) {
            bufferevent_disable(bev, EV_READ);
            return;
        }
        uint8_t head[4];
        if (evbuffer_copyout(in, head, sizeof head) != (ev_ssize_t)sizeof head)
            return;
        size_t flen = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
        if (flen > DNSCACHE_FRAME_MAX) {
            client_drop(cl, "frame too long");
            return;
        }
        if (evbuffer_get_length(in) < 4 + flen)
            return;
        const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)(4 + flen));
        struct ipc_msg m;
        size_t used = 0;
        int r = p ? ipc_parse(p, 4 + flen, &used, &m) : -1;
        if (r != 1) {
            client_drop(cl, p ? "malformed frame" : "out of memory for its input");
            return;
        }
        evbuffer_drain(in, used);
        bool alive = handle_frame(cl, &m);
        ipc_msg_free(&m);
        if (!alive)
            return;
    }
    /* More may be buffered: come back after the others had their turn. */
    if (evbuffer_get_length(in) > 0)
        bufferevent_trigger(bev, EV_READ, BEV_OPT_DEFER_CALLBACKS);
}

/* client_written - output drained below the low mark */
static void client_written(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;
    if (cl->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            client_free(cl);
        return;
    }
    client_resume(cl);
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
    struct client *cl = arg;
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && !cl->closing) {
        if (cl->n_reqs > 0) {
            bufferevent_enable(bev, EV_READ); /* busy, not idle: keep it */
            return;
        }
        log_debug("client %lu: idle for %d s: closing", cl->serial, DNSCACHE_IDLE_S);
    } else if (what & BEV_EVENT_TIMEOUT) {
        log_warn("client %lu: does not read its answers: dropping it", cl->serial);
    } else if (what & BEV_EVENT_ERROR) {
        log_debug("client %lu: %s", cl->serial, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
    client_free(cl);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct dnscache *dc = arg;
    if (dc->n_clients >= DNSCACHE_CLIENTS_MAX || dc->srv->stopping) {
        log_warn("%zu clients: refusing another one", dc->n_clients);
        evutil_closesocket(fd);
        return;
    }
    struct client *cl = calloc(1, sizeof *cl);
    struct bufferevent *bev = cl ? bufferevent_socket_new(dc->srv->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (bev == NULL) {
        log_error("out of memory for a client");
        free(cl);
        evutil_closesocket(fd);
        return;
    }
    cl->dc = dc;
    cl->bev = bev;
    cl->serial = ++dc->serials;
    cl->next = dc->clients;
    if (dc->clients)
        dc->clients->prev = cl;
    dc->clients = cl;
    dc->n_clients++;
    struct timeval rt = {DNSCACHE_IDLE_S, 0}, wt = {DNSCACHE_WRITE_S, 0};
    bufferevent_setcb(bev, client_read, client_written, client_event, cl);
    bufferevent_setwatermark(bev, EV_WRITE, DNSCACHE_OUTPUT_HIGH / 2, 0);
    bufferevent_set_timeouts(bev, &rt, &wt);
    if (bufferevent_enable(bev, EV_READ | EV_WRITE) != 0) {
        client_drop(cl, "cannot enable its events");
        return;
    }
    if (client_hello(cl))
        log_debug("client %lu: connected", cl->serial);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    log_warn("accept on %s: %s", ((struct dnscache *)arg)->sock_path,
             evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/* ---- the listening socket ---- */

/* listen_socket - bind private/dnscache, replacing a stale socket */
static void listen_socket(struct dnscache *dc)
{
    const char *qdir = cfg_str(dc->srv->cfg, P_queue_directory);
    if (!paths_private_socket(qdir, "dnscache", dc->sock_path, sizeof dc->sock_path))
        log_fatal("%s/private/dnscache: path too long for a UNIX socket", qdir);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (!str_copy(sun.sun_path, sizeof sun.sun_path, dc->sock_path))
        log_fatal("%s: path too long for a UNIX socket", dc->sock_path);
    struct stat st;
    if (lstat(dc->sock_path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            log_fatal("%s exists and is not a socket: not removing it", dc->sock_path);
        /* A socket left by a dead dnscache refuses connections; one that
         * accepts belongs to a live one, which we must not cut off. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool alive = probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0;
        if (probe >= 0)
            close(probe);
        if (alive)
            log_fatal("another dnscache is answering on %s", dc->sock_path);
        if (unlink(dc->sock_path) != 0)
            log_fatal_errno("cannot remove the stale socket %s", dc->sock_path);
    }
    mode_t old = umask(077);
    dc->listener = evconnlistener_new_bind(dc->srv->base, on_accept, dc,
                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 128,
                                           (struct sockaddr *)&sun, (int)sizeof sun);
    umask(old);
    if (dc->listener == NULL)
        log_fatal_errno("cannot listen on %s", dc->sock_path);
    evconnlistener_set_error_cb(dc->listener, on_accept_error);
    if (stat(dc->sock_path, &dc->sock_st) != 0)
        log_fatal_errno("stat %s", dc->sock_path);
}

/* unlink_socket - remove our socket file (not a successor's) */
static void unlink_socket(struct dnscache *dc)
{
    struct stat st;
    if (dc->sock_path[0] && stat(dc->sock_path, &st) == 0 && st.st_ino == dc->sock_st.st_ino &&
        st.st_dev == dc->sock_st.st_dev)
        unlink(dc->sock_path);
}

/* ---- hooks ---- */

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct dnscache *dc = arg;
    size_t n = dns_cache_sweep(dc->cache);
    struct dns_cache_stats cs;
    struct dns_resolver_stats rs;
    dns_cache_get_stats(dc->cache, &cs);
    dns_resolver_get_stats(dc->resolver, &rs);
    log_debug("cache: entries=%zu bytes=%zu swept=%zu hits=%llu misses=%llu; upstream=%llu collapsed=%llu "
              "tcp=%llu timeouts=%llu servfails=%llu; clients=%zu",
              cs.entries, cs.bytes, n, (unsigned long long)cs.hits, (unsigned long long)cs.misses,
              (unsigned long long)rs.upstream, (unsigned long long)rs.collapsed, (unsigned long long)rs.tcp_retries,
              (unsigned long long)rs.timeouts, (unsigned long long)rs.servfails, dc->n_clients);
}

static bool dnscache_pre_init(struct server *srv)
{
    struct dnscache *dc = &the_dnscache;
    dc->srv = srv;
    srv->app = dc;
    char err[512];
    /* resolv.conf is read here, while we may still read everything. */
    if (!load_servers(srv->cfg, &dc->servers, err, sizeof err))
        log_fatal("%s", err);
    return true;
}

static bool dnscache_post_init(struct server *srv)
{
    struct dnscache *dc = srv->app;
    dc->cache = dns_cache_new(DNSCACHE_CACHE_ENTRIES, DNSCACHE_CACHE_BYTES, now_ms, NULL);
    dc->resolver = dc->cache ? dns_resolver_new(srv->base, &dc->servers, dc->cache, NULL) : NULL;
    dc->sweep_timer = event_new(srv->base, -1, EV_PERSIST, on_sweep, dc);
    struct timeval tv = {DNSCACHE_SWEEP_S, 0};
    if (dc->resolver == NULL || dc->sweep_timer == NULL || evtimer_add(dc->sweep_timer, &tv) != 0)
        log_fatal("out of memory");
    listen_socket(dc);
    log_servers("started", &dc->servers);
    return true;
}

static void dnscache_on_reload(struct server *srv, struct config *old)
{
    struct dnscache *dc = srv->app;
    struct dns_server_list sl;
    char err[512];
    if (!load_servers(srv->cfg, &sl, err, sizeof err)) {
        log_error("reload: %s: keeping the old dns servers", err);
        return;
    }
    bool same = sl.n == dc->servers.n;
    for (size_t i = 0; same && i < sl.n; i++)
        same = sl.ep[i].len == dc->servers.ep[i].len && memcmp(&sl.ep[i].ss, &dc->servers.ep[i].ss, sl.ep[i].len) == 0;
    if (same)
        return;
    /* Other servers may see other data: start from an empty cache. */
    dns_cache_flush(dc->cache);
    dc->servers = sl;
    dns_resolver_set_servers(dc->resolver, &sl);
    log_servers("reloaded, cache flushed", &sl);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct dnscache *dc = arg;
    log_warn("stop: %zu clients did not take their answers in time", dc->n_clients);
    server_exit_loop(dc->srv);
}

/* dnscache_on_stop - stop accepting, answer everything in flight with
 * SERVFAIL, and leave once the answers are written */
static void dnscache_on_stop(struct server *srv)
{
    struct dnscache *dc = srv->app;
    if (dc->listener) {
        evconnlistener_free(dc->listener);
        dc->listener = NULL;
    }
    unlink_socket(dc);
    dc->sock_path[0] = '\0';
    dns_resolver_fail_all(dc->resolver, DNSC_SERVFAIL);
    dc->stop_timer = evtimer_new(srv->base, on_stop_timer, dc);
    struct timeval tv = {DNSCACHE_STOP_MS / 1000, (DNSCACHE_STOP_MS % 1000) * 1000};
    if (dc->stop_timer == NULL || evtimer_add(dc->stop_timer, &tv) != 0) {
        server_exit_loop(srv);
        return;
    }
    for (struct client *cl = dc->clients, *next; cl; cl = next) {
        next = cl->next;
        cl->closing = true;
        bufferevent_disable(cl->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(cl->bev)) == 0)
            client_free(cl); /* the last one ends the loop */
        else
            bufferevent_setwatermark(cl->bev, EV_WRITE, 0, 0);
    }
    if (dc->n_clients == 0)
        server_exit_loop(srv);
}

static void dnscache_on_exit(struct server *srv)
{
    struct dnscache *dc = srv->app;
    while (dc->clients)
        client_free(dc->clients);
    if (dc->listener)
        evconnlistener_free(dc->listener);
    unlink_socket(dc);
    dns_resolver_free(dc->resolver);
    dns_cache_free(dc->cache);
    if (dc->sweep_timer)
        event_free(dc->sweep_timer);
    if (dc->stop_timer)
        event_free(dc->stop_timer);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .pre_init = dnscache_pre_init,
        .post_init = dnscache_post_init,
        .on_reload = dnscache_on_reload,
        .on_stop = dnscache_on_stop,
        .on_exit = dnscache_on_exit,
    };
    return server_main(argc, argv, "dnscache", &hooks);
}
