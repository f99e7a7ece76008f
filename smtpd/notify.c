/* notify.c - new-mail notices from smtpd to qmgr, with retry. */
#include "notify.h"
#include "ipc.h"
#include "log.h"
#include "paths.h"
#include "peer.h"
#include "server.h"
#include "session.h"
#include "str.h"

#include <event2/event.h>
#include <stdlib.h>
#include <unistd.h>

static bool on_qmgr_msg(struct peer *p, struct ipc_msg *m, void *arg)
{
    log_warn("unexpected %s message from qmgr", ipc_type_name(m->type));
    return false;
}

static void on_qmgr_close(struct peer *p, void *arg)
{
    struct smtpd *sd = arg;
    peer_free(sd->qmgr);
    sd->qmgr = NULL;
}

/* connect_qmgr - dial private/qmgr and say HELLO; false when qmgr is down */
static bool connect_qmgr(struct smtpd *sd)
{
    if (sd->qmgr)
        return true;
    char path[PATHS_MAX];
    if (!paths_private_socket(sd->set.queue_directory, "qmgr", path, sizeof path))
        return false;
    sd->qmgr = peer_connect_unix(sd->srv->base, path, on_qmgr_msg, on_qmgr_close, sd);
    if (sd->qmgr == NULL)
        return false;
    struct ipc_msg h;
    if (ipc_begin(&h, IPC_HELLO) && ipc_put_u64(&h, IPC_VERSION) && ipc_put_str(&h, "smtpd") &&
        ipc_put_u64(&h, (uint64_t)getpid()) && ipc_finish(&h))
        peer_send(sd->qmgr, &h);
    ipc_msg_free(&h);
    if (!sd->rescan_sent) {
        /* Our predecessor in this slot may have died between a commit and its
         * notice: have qmgr look for such messages once. */
        struct ipc_msg r;
        if (ipc_begin(&r, IPC_QMGR_RESCAN) && ipc_put_str(&r, "smtpd started") && ipc_finish(&r) &&
            peer_send(sd->qmgr, &r))
            sd->rescan_sent = true;
        ipc_msg_free(&r);
    }
    return true;
}

static bool send_notice(struct smtpd *sd, const char *id)
{
    struct ipc_msg m;
    bool ok = ipc_begin(&m, IPC_QMGR_NEW_MAIL) && ipc_put_str(&m, id) && ipc_finish(&m) && peer_send(sd->qmgr, &m);
    ipc_msg_free(&m);
    return ok;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd *sd = arg;
    if (!connect_qmgr(sd)) {
        struct timeval tv = {0, NOTIFY_RETRY_MS * 1000};
        evtimer_add(sd->notify_retry, &tv);
        return;
    }
    for (size_t i = 0; i < sd->n_notify_pending; i++)
        send_notice(sd, sd->notify_pending[i]);
    sd->n_notify_pending = 0;
}

void smtpd_new_mail(struct smtpd *sd, const char *id)
{
    if (sd->n_notify_pending == 0 && connect_qmgr(sd) && send_notice(sd, id))
        return;
    if (sd->n_notify_pending < NOTIFY_PENDING_MAX)
        str_copy(sd->notify_pending[sd->n_notify_pending++], sizeof sd->notify_pending[0], id);
    if (!evtimer_pending(sd->notify_retry, NULL)) {
        struct timeval tv = {0, NOTIFY_RETRY_MS * 1000};
        evtimer_add(sd->notify_retry, &tv);
    }
}

bool notify_init(struct smtpd *sd)
{
    sd->notify_pending = calloc(NOTIFY_PENDING_MAX, sizeof *sd->notify_pending);
    sd->notify_retry = evtimer_new(sd->srv->base, on_retry, sd);
    if (sd->notify_pending == NULL || sd->notify_retry == NULL)
        return false;
    struct timeval now = {0, 0}; /* connect (and ask for a rescan) right away */
    evtimer_add(sd->notify_retry, &now);
    return true;
}

void notify_free(struct smtpd *sd)
{
    if (sd->notify_retry)
        event_free(sd->notify_retry);
    free(sd->notify_pending);
    peer_free(sd->qmgr);
    sd->qmgr = NULL;
}
