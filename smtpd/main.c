/* main.c - smtpd: inbound SMTP, one event loop holding thousands of
 * sessions (DESIGN §1). Hooks for the lib/server skeleton: listeners on the
 * sockets the master passed, the group committer, reload and graceful stop.
 * The SMTP logic is in session.c; parsing in command.c and data.c. */
#include "ipc.h"
#include "log.h"
#include "paths.h"
#include "peer.h"
#include "notify.h"
#include "policy.h"
#include "server.h"
#include "session.h"
#include "spool.h"
#include "vg.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ACCEPT_RESUME_MS 100 /* retry accepting this soon after EMFILE */

static struct smtpd the_smtpd;

static void pause_accept(struct smtpd *sd, bool with_timer)
{
    if (!sd->accept_paused) {
        for (int i = 0; i < sd->n_listeners; i++)
            evconnlistener_disable(sd->listeners[i]);
        sd->accept_paused = true;
    }
    if (with_timer) {
        struct timeval tv = {0, ACCEPT_RESUME_MS * 1000};
        evtimer_add(sd->resume_timer, &tv);
    }
}

static void resume_accept(struct smtpd *sd)
{
    if (!sd->accept_paused || sd->srv->stopping || sd->n_sessions >= (size_t)sd->set.max_connections)
        return;
    for (int i = 0; i < sd->n_listeners; i++)
        evconnlistener_enable(sd->listeners[i]);
    sd->accept_paused = false;
}

static void on_resume_timer(evutil_socket_t fd, short what, void *arg) { resume_accept(arg); }

/* smtpd_session_closed - a slot is free again; finish a stop when empty */
void smtpd_session_closed(struct smtpd *sd)
{
    if (sd->srv->stopping) {
        if (sd->n_sessions == 0)
            server_exit_loop(sd->srv);
        return;
    }
    if (sd->accept_paused && !evtimer_pending(sd->resume_timer, NULL))
        resume_accept(sd);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct smtpd *sd = arg;
    session_new(sd, fd, sa, len);
    if (sd->n_sessions >= (size_t)sd->set.max_connections) {
        log_warn("%zu connections: smtpd_max_connections reached, pausing accept", sd->n_sessions);
        pause_accept(sd, false);
    }
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct smtpd *sd = arg;
    int e = EVUTIL_SOCKET_ERROR();
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        log_warn("accept: %s with %zu sessions: pausing accept for %d ms", strerror(e), sd->n_sessions,
                 ACCEPT_RESUME_MS);
        pause_accept(sd, true);
    } else {
        log_warn("accept: %s", strerror(e));
    }
}

static bool smtpd_pre_init(struct server *srv)
{
    struct smtpd *sd = &the_smtpd;
    sd->srv = srv;
    srv->app = sd;
    if (!smtpd_settings_load(&sd->set, srv->cfg))
        log_fatal("out of memory");
    int removed = spool_clean_incoming(sd->set.queue_directory, srv->slot);
    if (removed > 0)
        log_info("removed %d unfinished incoming files of slot %d", removed, srv->slot);
    return true;
}

static enum spool_sync sync_method(const struct config *cfg)
{
    return strcmp(cfg_str(cfg, P_spool_sync_method), "fsync") == 0 ? SPOOL_SYNC_FSYNC : SPOOL_SYNC_SYNCFS;
}

static bool smtpd_post_init(struct server *srv)
{
    struct smtpd *sd = srv->app;
    if ((sd->policy = policy_new(srv->cfg)) == NULL)
        log_fatal("out of memory");
    char verr[VG_ERR_MAX];
    if ((sd->vgs = vg_load(srv->cfg, verr)) == NULL)
        log_fatal("%s", verr);
    sd->committer = spool_committer_new(srv->base, sd->set.queue_directory, sync_method(srv->cfg));
    if (sd->committer == NULL)
        log_fatal_errno("cannot start the spool committer for %s", sd->set.queue_directory);
    if (!notify_init(sd))
        log_fatal("out of memory");
    sd->resume_timer = evtimer_new(srv->base, on_resume_timer, sd);
    if (sd->resume_timer == NULL)
        log_fatal("out of memory");
    if (srv->n_listen == 0)
        log_fatal("no listening socket was passed (start smtpd through the master)");
    for (int i = 0; i < srv->n_listen; i++) {
        evutil_make_socket_nonblocking(srv->listen_fds[i]);
        struct evconnlistener *l =
            evconnlistener_new(srv->base, on_accept, sd, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
                               srv->listen_fds[i]); /* 0: keep the master's backlog, no second listen() */
        if (l == NULL)
            log_fatal("cannot listen on inherited socket %d", srv->listen_fds[i]);
        evconnlistener_set_error_cb(l, on_accept_error);
        sd->listeners[sd->n_listeners++] = l;
    }
    return true;
}

static void smtpd_on_reload(struct server *srv, struct config *old)
{
    struct smtpd *sd = srv->app;
    struct smtpd_settings set;
    struct policy *p = policy_new(srv->cfg);
    char verr[VG_ERR_MAX];
    struct vg_set *vgs = vg_load(srv->cfg, verr);
    if (vgs == NULL)
        log_error("reload: %s; keeping the old virtual gateways", verr);
    if (p == NULL || !smtpd_settings_load(&set, srv->cfg)) {
        vg_free(vgs);
        policy_free(p);
        log_error("reload: out of memory, keeping the old settings");
        return;
    }
    /* queue_directory cannot move under a running committer. */
    free(set.queue_directory);
    set.queue_directory = sd->set.queue_directory;
    sd->set.queue_directory = NULL;
    smtpd_settings_free(&sd->set);
    sd->set = set;
    policy_free(sd->policy);
    sd->policy = p;
    if (vgs) {
        vg_free(sd->vgs);
        sd->vgs = vgs;
    }
    resume_accept(sd);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd *sd = arg;
    log_warn("stop_timeout: closing %zu sessions still open", sd->n_sessions);
    while (sd->sessions) {
        struct session *s = sd->sessions;
        size_t before = sd->n_sessions;
        session_kill(s);
        if (sd->n_sessions == before)
            break; /* waiting for a commit: it will finish the stop */
    }
    if (sd->n_sessions == 0)
        server_exit_loop(sd->srv);
}

static void smtpd_on_stop(struct server *srv)
{
    struct smtpd *sd = srv->app;
    for (int i = 0; i < sd->n_listeners; i++)
        evconnlistener_free(sd->listeners[i]);
    sd->n_listeners = 0;
    evtimer_del(sd->resume_timer);
    sd->stop_timer = evtimer_new(srv->base, on_stop_timer, sd);
    struct timeval tv = {sd->set.stop_timeout_s, 0};
    if (sd->stop_timer)
        evtimer_add(sd->stop_timer, &tv);
    /* session_stop may free the session: walk a snapshot of the list. */
    size_t n = sd->n_sessions, k = 0;
    struct session **snap = n ? calloc(n, sizeof *snap) : NULL;
    if (n && snap == NULL) {
        on_stop_timer(-1, 0, sd);
        return;
    }
    struct session *s;
    for (s = sd->sessions; s && k < n; s = session_next(s))
        snap[k++] = s;
    for (size_t i = 0; i < k; i++)
        session_stop(snap[i]);
    free(snap);
    if (sd->n_sessions == 0)
        server_exit_loop(srv);
}

static void smtpd_on_exit(struct server *srv)
{
    struct smtpd *sd = srv->app;
    spool_committer_free(sd->committer); /* no commit callback runs after this */
    while (sd->sessions)
        session_discard(sd->sessions);
    for (int i = 0; i < sd->n_listeners; i++)
        evconnlistener_free(sd->listeners[i]);
    if (sd->resume_timer)
        event_free(sd->resume_timer);
    if (sd->stop_timer)
        event_free(sd->stop_timer);
    policy_free(sd->policy);
    vg_free(sd->vgs);
    notify_free(sd);
    smtpd_settings_free(&sd->set);
}

int main(int argc, char **argv)
{
    static const struct server_hooks hooks = {
        .pre_init = smtpd_pre_init,
        .post_init = smtpd_post_init,
        .on_reload = smtpd_on_reload,
        .on_stop = smtpd_on_stop,
        .on_exit = smtpd_on_exit,
    };
    return server_main(argc, argv, "smtpd", &hooks);
}
