/* job.h - one delivery job: the recipients of one message for one
 * destination domain, from route resolution (static route, MX, implicit MX
 * through dnscache) over the SMTP transaction (smtp.c) to the per-recipient
 * results reported to qmgr and logged (DESIGN §6 delivery line).
 *
 * A struct job owns its recipient list, the message's file descriptor, the
 * target list, its DNS requests and its connection (struct smtp_session).
 * Everything runs in the delivery process's event loop. */
#ifndef BW_DELIVERY_JOB_H
#define BW_DELIVERY_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include <sys/types.h>

#include "inet.h"

#define JOB_TARGETS_MAX 32
#define JOB_MX_MAX 16

struct delivery;
struct smtp_session;

enum jrcpt_result { JR_PENDING = -1, JR_SENT = 0, JR_DEFERRED = 1, JR_BOUNCED = 2 };

struct jrcpt {
    char *addr;
    enum jrcpt_result result;
    bool accepted;       /* RCPT got 2xx in the current transaction */
    char dsn[16];
    char *reply;
};

struct target {
    char host[256];
    int pref;            /* MX preference (0 for static routes) */
    struct inet_endpoint ep;
};

struct mx_host {
    char name[256];
    int port;            /* a static route may give each host its own */
    int pref;
    unsigned tiebreak;
    uint64_t req_a, req_aaaa;
    int pending;
    struct inet_endpoint addrs[8];
    int n_addrs;
    bool temp_fail;
};

struct job {
    struct delivery *dl;
    uint64_t id;
    char msgid[24];
    char *domain;
    char *vg;
    char *via;           /* mailctl queue redirect: this host[:port] list, not the route */
    struct jrcpt *r;
    size_t n;
    /* the message */
    int fd;
    char *sender;
    int64_t arrival_us;
    off_t content_off;
    size_t content_len;
    bool eightbit;
    /* routing */
    struct mx_host mx[JOB_MX_MAX];
    int n_mx;
    int dns_pending;
    uint64_t req_mx;
    int port;
    bool static_route;
    struct target targets[JOB_TARGETS_MAX];
    int n_targets;
    /* timing for delays=a/b/c/d */
    struct timeval t_received, t_connected;
    char relay[INET_STR_MAX + 300];  /* host[ip]:port of the last attempt, for logs */
    struct smtp_session *session;
    bool finished;
    bool site_reached;   /* a host of the destination got as far as MAIL */
    bool site_tried;     /* at least one host was tried */
};

/* job_start - begin a job (QMGR_DELIVER): it registers itself with the
 * process and always ends in reported results, even when it cannot start
 * (out of memory, unreadable queue file). via: NULL, or a host[:port] list
 * that replaces the route (redirect). */
void job_start(struct delivery *dl, uint64_t id, const char *msgid, const char *domain, const char *vg, const char *via,
                      const char *const *rcpts, size_t n);

/* job_set - final result of one recipient (first result wins). */
void job_set(struct job *j, size_t i, enum jrcpt_result res, const char *dsn, const char *reply);

/* job_set_all - result for every recipient still pending (only_accepted:
 * just those whose RCPT was accepted in the current transaction). */
void job_set_all(struct job *j, bool only_accepted, enum jrcpt_result res, const char *dsn, const char *reply);

/* job_finish - report every result to qmgr, log them, free the job. Pending
 * recipients are reported deferred with reason. */
void job_finish(struct job *j, const char *reason);

/* job_route_fresh - resolve the route and connect anew (a cached
 * connection failed its RSET probe). */
void job_route_fresh(struct job *j);

/* job_abort - free at once without reporting (shutdown). */
void job_abort(struct job *j);

/* dsn_from_reply - enhanced status code of an SMTP reply ("250 2.0.0 Ok"),
 * or one derived from the reply class. */
void dsn_from_reply(const char *reply, char dsn[16]);

#endif
