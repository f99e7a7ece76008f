/* session.h - one inbound SMTP connection: its state machine, bufferevent,
 * timers, transaction (envelope, spool file) and counters.
 *
 * A struct session owns its bufferevent (and so the socket), its recipient
 * list and its spool file until the file is handed to the group committer.
 * Sessions live in the event loop of one smtpd process; struct smtpd (the
 * process) owns the list of all sessions. */
#ifndef BW_SMTPD_SESSION_H
#define BW_SMTPD_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct evconnlistener;
struct spool_committer;
struct policy;
struct server;
struct session;

/* Values a session needs from main.cf; copied so that a reload can swap them. */
struct smtpd_settings {
    char *hostname;
    char *banner;
    char *queue_directory;
    uint64_t size_limit;
    int rcpt_limit;
    int line_limit;
    int timeout_s;
    int data_timeout_s;
    int hard_error_limit;
    int max_connections;
    int stop_timeout_s;
};

/* The smtpd process. */
struct smtpd {
    struct server *srv;
    struct smtpd_settings set;
    struct policy *policy;
    struct vg_set *vgs;         /* virtual gateways and their classification rules */
    struct spool_committer *committer;
    struct evconnlistener *listeners[64];
    int n_listeners;
    bool accept_paused;
    struct event *resume_timer;
    struct event *stop_timer;
    struct session *sessions;   /* doubly linked list */
    size_t n_sessions;
    uint64_t accepted_total;
    struct peer *qmgr;          /* notice channel, connected on demand (notify.c) */
    struct event *notify_retry;
    char (*notify_pending)[20]; /* ids waiting for qmgr to come (back) */
    size_t n_notify_pending;
    bool rescan_sent;           /* QMGR_RESCAN after start-up */
};

/* session_new - take over an accepted socket: greet, then serve. On
 * failure the socket is closed. */
void session_new(struct smtpd *sd, int fd, const struct sockaddr *peer, int peerlen);

/* session_stop - graceful stop: idle sessions get 421 and close now; one in
 * a transaction closes with 421 when the transaction ends. */
void session_stop(struct session *s);

/* session_kill - close at once (stop timeout); frees s unless a commit is
 * still pending, in which case it is freed when the commit reports back. */
void session_kill(struct session *s);

/* session_next - the next session of the process list, or NULL. */
struct session *session_next(struct session *s);

/* session_discard - free at once even while a commit is pending (process
 * exit, after the committer was stopped). */
void session_discard(struct session *s);

/* smtpd_settings_load, smtpd_settings_free - copy the values of cfg. */
bool smtpd_settings_load(struct smtpd_settings *set, const void *cfg);
void smtpd_settings_free(struct smtpd_settings *set);

/* smtpd_session_closed - called by session.c when a session is gone: lets
 * the process resume accepting or finish a stop. */
void smtpd_session_closed(struct smtpd *sd);

#endif
