/* main.c - qmgr: the scheduler (DESIGN §1). Hooks for the lib/server
 * skeleton: the private/qmgr socket where smtpd announces new mail, delivery
 * agents take jobs and report results, and mailctl asks for flush and queue
 * listings; a spool scan at start and, as a safety net, every minute. */
#include "ipc.h"
#include "log.h"
#include "paths.h"
#include "peer.h"
#include "queue.h"
#include "reaper.h"
#include "server.h"
#include "sites.h"
#include "spool.h"
#include "str.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RESCAN_MIN_GAP_S 2
#define RESCAN_S 300 /* safety net only: smtpd retries its notices */
#define CLIENTS_MAX 4096

struct client {
    struct peer *p;
    bool agent;
    struct client *next, *prev;
};

struct qmgr {
    struct server *srv;
    struct qmgr_queue *queue;
    struct evconnlistener *listener;
    char sock[PATHS_MAX];
    struct client *clients;
    size_t n_clients;
    struct event *rescan;
    struct event *rescan_soon;
    time_t last_rescan;
};

static struct qmgr the_qmgr;

static void client_drop(struct client *c)
{
    struct qmgr *q = &the_qmgr;
    if (c->agent)
        qmgr_queue_agent_gone(q->queue, c->p);
    if (c->prev)
        c->prev->next = c->next;
    else
        q->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    q->n_clients--;
    peer_free(c->p);
    free(c);
}

static void on_close(struct peer *p, void *arg) { client_drop(arg); }

static void ctl_reply(struct peer *p, int status, const char *text)
{
    struct ipc_msg m;
    if (ipc_begin(&m, IPC_CTL_REPLY) && ipc_put_u64(&m, (uint64_t)status) && ipc_put_str(&m, text) && ipc_finish(&m))
        peer_send(p, &m);
    ipc_msg_free(&m);
}

/* on_ctl - mailctl flush / queue list / queue show */
static void on_ctl(struct qmgr *q, struct peer *p, int argc, const char **argv)
{
    struct buf out;
    buf_init(&out, 256 * 1024 * 1024);
    bool json = false;
    const char *domain = NULL, *id = NULL, *vg = NULL;
    int64_t offset = 0, limit = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--offset") == 0 && i + 1 < argc)
            str_to_i64(argv[++i], 0, INT64_MAX, &offset);
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
            str_to_i64(argv[++i], 0, INT64_MAX, &limit);
        else if (strcmp(argv[i], "--domain") == 0 && i + 1 < argc)
            domain = argv[++i];
        else if (strcmp(argv[i], "--vg") == 0 && i + 1 < argc)
            vg = argv[++i];
        else if (i >= 1 && argv[i][0] != '-')
            id = argv[i];
    }
    if (strcmp(argv[0], "flush") == 0) {
        size_t waiting = 0;
        size_t n = qmgr_queue_flush(q->queue, id, &waiting);
        buf_printf(&out, "flushed %zu deferred queue entr%s%s%s", n, n == 1 ? "y" : "ies", id ? " for " : "",
                   id ? id : "");
        if (waiting)
            buf_printf(&out, "; %zu more recipient(s) waiting in the index follow as their domain takes them",
                       waiting);
        ctl_reply(p, 0, out.data);
    } else if (strcmp(argv[0], "list") == 0) {
        if (qmgr_queue_list(q->queue, domain, vg, json, (size_t)offset, (size_t)limit, &out))
            ctl_reply(p, 0, out.data ? out.data : "");
        else
            ctl_reply(p, 1, "queue listing too large or out of memory");
    } else if (strcmp(argv[0], "delete") == 0 || strcmp(argv[0], "redirect") == 0) {
        bool redirect = argv[0][0] == 'r';
        int last = argc - (redirect ? 1 : 0); /* redirect: the final argument is HOST[:PORT] */
        const char *relay = redirect && argc > 1 ? argv[argc - 1] : NULL;
        size_t n = 0;
        int ids = 0;
        bool bad = false;
        if (redirect && (relay == NULL || relay[0] == '-' || strlen(relay) > 255 || strchr(relay, ' '))) {
            ctl_reply(p, 2, "usage: mailctl queue redirect (ID... | --domain D) HOST[:PORT]");
            buf_free(&out);
            return;
        }
        /* Check every argument first: a failed command changes nothing. */
        for (int i = 1; i < last && !bad; i++) {
            if (strcmp(argv[i], "--domain") == 0) {
                i++;
                continue;
            }
            if (strcmp(argv[i], "--json") != 0 && (!spool_id_valid(argv[i]) || !qmgr_queue_known(q->queue, argv[i]))) {
                buf_printf(&out, "unknown queue id '%s'", argv[i]);
                bad = true;
            }
        }
        for (int i = 1; i < last && !bad; i++) {
            if (strcmp(argv[i], "--domain") == 0 && i + 1 >= last) {
                ctl_reply(p, 2, redirect ? "usage: mailctl queue redirect (ID... | --domain D) HOST[:PORT]"
                                         : "usage: mailctl queue delete ID... | --domain D");
                buf_free(&out);
                return;
            }
            if (strcmp(argv[i], "--domain") == 0) {
                const char *d = argv[++i];
                if (!qmgr_queue_has_domain(q->queue, d)) {
                    buf_printf(&out, "no queue for domain '%s'", d);
                    bad = true;
                    break;
                }
                n += redirect ? qmgr_queue_redirect(q->queue, NULL, d, relay) : qmgr_queue_delete(q->queue, NULL, d);
                ids++;
            } else if (strcmp(argv[i], "--json") == 0) {
                continue;
            } else if (!spool_id_valid(argv[i]) || !qmgr_queue_known(q->queue, argv[i])) {
                buf_printf(&out, "unknown queue id '%s'", argv[i]);
                bad = true;
            } else {
                n += redirect ? qmgr_queue_redirect(q->queue, argv[i], NULL, relay)
                              : qmgr_queue_delete(q->queue, argv[i], NULL);
                ids++;
            }
        }
        if (bad)
            ctl_reply(p, 1, out.data);
        else if (ids == 0)
            ctl_reply(p, 2, redirect ? "usage: mailctl queue redirect (ID... | --domain D) HOST[:PORT]"
                                     : "usage: mailctl queue delete ID... | --domain D");
        else {
            buf_printf(&out, "%s %zu recipient(s)%s%s", redirect ? "redirected" : "deleted", n,
                       redirect ? " to " : "", redirect ? relay : "");
            ctl_reply(p, 0, out.data);
        }
    } else if (strcmp(argv[0], "reindex") == 0) {
        double secs = 0;
        size_t n = qmgr_queue_reindex(q->queue, &secs);
        buf_printf(&out, "index rebuilt from the spool: %zu message(s) in %.1f s", n, secs);
        ctl_reply(p, 0, out.data);
    } else if (strcmp(argv[0], "domain") == 0) {
        /* domain list | domain show D */
        const char *sub = argc > 1 ? argv[1] : "";
        const char *d = NULL;
        for (int i = 2; i < argc; i++)
            if (argv[i][0] != '-')
                d = argv[i];
        if (strcmp(sub, "show") == 0 && d == NULL)
            ctl_reply(p, 2, "usage: mailctl domain show DOMAIN [--json]");
        else if (strcmp(sub, "show") != 0 && strcmp(sub, "list") != 0)
            ctl_reply(p, 2, "usage: mailctl domain list|show DOMAIN [--json]");
        else if (qmgr_queue_domains(q->queue, strcmp(sub, "show") == 0 ? d : NULL, json, &out))
            ctl_reply(p, 0, out.data ? out.data : "");
        else if (strcmp(sub, "show") == 0)
            ctl_reply(p, 1, "no queue for that domain");
        else
            ctl_reply(p, 1, "listing too large or out of memory");
    } else if (strcmp(argv[0], "show") == 0) {
        if (id == NULL)
            ctl_reply(p, 2, "usage: mailctl queue show ID");
        else if (!spool_id_valid(id))
            ctl_reply(p, 1, "not a queue id");
        else if (qmgr_queue_show(q->queue, id, json, &out))
            ctl_reply(p, 0, out.data ? out.data : "");
        else
            ctl_reply(p, 1, "no such message in the queue");
    } else {
        ctl_reply(p, 2, "unknown qmgr command");
    }
    buf_free(&out);
}

/* rescan_now - look for committed messages that qmgr was never told about
 * (the spool's new/ links, not a scan of the whole queue) */
static void rescan_now(struct qmgr *q, const char *why)
{
    q->last_rescan = time(NULL);
    size_t found = qmgr_queue_scan(q->queue);
    if (found)
        log_info("spool rescan (%s): %zu message(s) found without a notice", why, found);
}

static void on_rescan_soon(evutil_socket_t fd, short what, void *arg) { rescan_now(arg, "smtpd restarted"); }

static bool on_msg(struct peer *p, struct ipc_msg *m, void *arg)
{
    struct client *c = arg;
    struct qmgr *q = &the_qmgr;
    uint64_t u, status;
    const char *s, *rcpt, *dsn, *reply;
    switch (m->type) {
    case IPC_HELLO: {
        const char *program;
        if (!ipc_get_u64(m, &u) || !ipc_get_str(m, &program) || !ipc_get_u64(m, &status) || !ipc_end(m))
            return false;
        if (u != IPC_VERSION) {
            log_error("peer %s speaks IPC version %llu, not %d: refused", program, (unsigned long long)u, IPC_VERSION);
            return false;
        }
        if ((strcmp(program, "delivery") == 0 || strncmp(program, "delivery/", 9) == 0) && !c->agent) {
            c->agent = true;
            qmgr_queue_agent_add(q->queue, p, program);
        }
        return true;
    }
    case IPC_QMGR_NEW_MAIL:
        if (!ipc_get_str(m, &s) || !ipc_end(m))
            return false;
        if (!qmgr_queue_add(q->queue, s))
            log_warn("new mail notice for %s: not loaded", s);
        return true;
    case IPC_QMGR_RESCAN: {
        if (!ipc_get_str(m, &s) || !ipc_end(m))
            return false;
        /* Several smtpds starting together share one scan; one asking too
         * soon after the last scan gets a scan a moment later, never none. */
        time_t now = time(NULL);
        if (now - q->last_rescan >= RESCAN_MIN_GAP_S) {
            rescan_now(q, s);
        } else if (!evtimer_pending(q->rescan_soon, NULL)) {
            struct timeval tv = {RESCAN_MIN_GAP_S, 0};
            evtimer_add(q->rescan_soon, &tv);
        }
        return true;
    }
    case IPC_DELIVERY_RESULT:
        if (!ipc_get_u64(m, &u) || !ipc_get_str(m, &rcpt) || !ipc_get_u64(m, &status) || !ipc_get_str(m, &dsn) ||
            !ipc_get_str(m, &reply) || !ipc_end(m) || !c->agent)
            return false;
        if (!qmgr_queue_result(q->queue, p, u, rcpt, (unsigned)status, dsn, reply)) {
            log_error("delivery agent reported an unknown job %llu or recipient <%s>", (unsigned long long)u, rcpt);
            return false;
        }
        return true;
    case IPC_DELIVERY_SITE:
        if (!ipc_get_u64(m, &u) || !ipc_get_u64(m, &status) || !ipc_get_str(m, &reply) || !ipc_end(m) || !c->agent)
            return false;
        if (!qmgr_queue_site(q->queue, p, u, (unsigned)status, reply)) {
            log_error("delivery agent reported the site of an unknown job %llu", (unsigned long long)u);
            return false;
        }
        return true;
    case IPC_DELIVERY_SLOT: /* a closing connection keeps its slot (queue.c) */
        if (!ipc_get_u64(m, &u) || !ipc_get_u64(m, &status) || !ipc_end(m) || !c->agent || status > 1)
            return false;
        if (!qmgr_queue_slot(q->queue, p, u, (unsigned)status) && status == 1)
            log_warn("delivery agent held the slot of job %llu after its results", (unsigned long long)u);
        return true;
    case IPC_DELIVERY_MX: /* a domain's mail exchangers, for domain show (sites.c) */
        if (!c->agent || !qmgr_sites_update(m)) {
            log_error("malformed DELIVERY_MX from a delivery agent");
            return false;
        }
        return true;
    case IPC_CTL_REQUEST: {
        const char *argv[16];
        int argc = 0;
        while (ipc_more(m) && argc < 16)
            if (!ipc_get_str(m, &argv[argc++]))
                return false;
        if (argc == 0 || !ipc_end(m))
            return false;
        on_ctl(q, p, argc, argv);
        return true;
    }
    default:
        log_warn("unexpected %s message on the qmgr socket", ipc_type_name(m->type));
        return false;
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct qmgr *q = arg;
    struct client *c = calloc(1, sizeof *c);
    if (c == NULL || q->n_clients >= CLIENTS_MAX) {
        free(c);
        close(fd);
        return;
    }
    if ((c->p = peer_new(q->srv->base, fd, on_msg, on_close, c)) == NULL) {
        free(c);
        return;
    }
    c->next = q->clients;
    if (q->clients)
        q->clients->prev = c;
    q->clients = c;
    q->n_clients++;
}

static void on_rescan(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    qmgr_queue_scan(q->queue); /* picks up mail whose notice was lost */
}

static bool qmgr_post_init(struct server *srv)
{
    struct qmgr *q = &the_qmgr;
    q->srv = srv;
    srv->app = q;
    if ((q->queue = qmgr_queue_new(srv->base, srv->cfg)) == NULL)
        log_fatal("out of memory");
    if (!reaper_start(cfg_str(srv->cfg, P_queue_directory), (size_t)cfg_int(srv->cfg, P_spool_free_pool)))
        log_fatal_errno("cannot start the queue file reaper");
    size_t n = qmgr_queue_start(q->queue);
    q->last_rescan = time(NULL);
    log_info("queue loaded: %zu messages", n);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (!paths_private_socket(cfg_str(srv->cfg, P_queue_directory), "qmgr", q->sock, sizeof q->sock) ||
        !str_copy(sun.sun_path, sizeof sun.sun_path, q->sock))
        log_fatal("private/qmgr socket path too long");
    unlink(q->sock);
    mode_t old = umask(0077);
    q->listener = evconnlistener_new_bind(srv->base, on_accept, q, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 256,
                                          (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (q->listener == NULL)
        log_fatal_errno("cannot listen on %s", q->sock);
    q->rescan_soon = evtimer_new(srv->base, on_rescan_soon, q);
    q->rescan = event_new(srv->base, -1, EV_PERSIST, on_rescan, q);
    struct timeval tv = {RESCAN_S, 0};
    if (q->rescan == NULL || q->rescan_soon == NULL || event_add(q->rescan, &tv) != 0)
        log_fatal("out of memory");
    return true;
}

static void qmgr_on_reload(struct server *srv, struct config *old)
{
    qmgr_queue_configure(the_qmgr.queue, srv->cfg);
}

static void qmgr_on_exit(struct server *srv)
{
    struct qmgr *q = &the_qmgr;
    while (q->clients) {
        struct client *c = q->clients;
        c->agent = false; /* no requeueing on the way out */
        client_drop(c);
    }
    if (q->listener)
        evconnlistener_free(q->listener);
    if (q->rescan)
        event_free(q->rescan);
    if (q->rescan_soon)
        event_free(q->rescan_soon);
    qmgr_queue_free(q->queue);
    reaper_stop();
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .post_init = qmgr_post_init,
        .on_reload = qmgr_on_reload,
        .on_exit = qmgr_on_exit,
    };
    return server_main(argc, argv, "qmgr", &hooks);
}
