/* queue.h - qmgr's in-memory queue: every queued message's pending
 * recipients, grouped into one queue per (virtual gateway, destination
 * domain), with retry times, jobs in flight to delivery agents, and the
 * durable recipient state updates (spool R-record state bytes).
 *
 * Owns: struct qmsg (one per queued message), struct qentry (the recipients of
 * one message for one domain), struct qdomain, struct qjob, and the timers
 * of the queue. The spool file is the truth: everything here can be rebuilt
 * by qmgr_queue_scan(). Runs in qmgr's event loop. */
#ifndef BW_QMGR_QUEUE_H
#define BW_QMGR_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct event_base;
struct config;
struct peer;
struct qmgr_queue;

enum domain_state { DOM_UP, DOM_DOWN, DOM_STATE_MAX };

/* domain_state_name - "up", "down" */
const char *domain_state_name(enum domain_state st);

/* Result status of one recipient, as in DELIVERY_RESULT. */
enum rcpt_result { RESULT_SENT = 0, RESULT_DEFERRED = 1, RESULT_BOUNCED = 2 };

/* qmgr_queue_new - empty queue for the spool of cfg. NULL on ENOMEM. */
struct qmgr_queue *qmgr_queue_new(struct event_base *base, const struct config *cfg);

/* qmgr_queue_configure - (re)read retry schedule, lifetime, limits. */
void qmgr_queue_configure(struct qmgr_queue *q, const struct config *cfg);

/* qmgr_queue_start - at start: read the per-domain index (rebuilt from the
 * spool first when missing, corrupt or half-built, with progress in the
 * log), then load the committed messages the index does not hold yet (the
 * spool's new/ links). Only the first qmgr_domain_active_limit entries of
 * each (gateway, domain) come into memory; the rest are read in as those go
 * out. Returns the number of messages queued. */
size_t qmgr_queue_start(struct qmgr_queue *q);

/* qmgr_queue_scan - load committed messages qmgr was not told about (the
 * spool's new/ links: cost in proportion to those, not to the queue);
 * returns the number loaded. */
size_t qmgr_queue_scan(struct qmgr_queue *q);

/* qmgr_queue_reindex - `mailctl queue reindex`: rebuild the index from the
 * spool (progress in the log); *secs gets the time it took. Returns the
 * number of messages read. */
size_t qmgr_queue_reindex(struct qmgr_queue *q, double *secs);


/* qmgr_queue_add - a new message was committed (QMGR_NEW_MAIL). */
bool qmgr_queue_add(struct qmgr_queue *q, const char *id);

/* qmgr_queue_agent_add, qmgr_queue_agent_gone - a delivery agent connected
 * (after HELLO) or went away (its jobs in flight are deferred for retry). */
void qmgr_queue_agent_add(struct qmgr_queue *q, struct peer *p, const char *name);
void qmgr_queue_agent_gone(struct qmgr_queue *q, struct peer *p);

/* qmgr_queue_result - one DELIVERY_RESULT. False for an unknown job or
 * recipient (protocol error: the agent is dropped). */
bool qmgr_queue_result(struct qmgr_queue *q, struct peer *p, uint64_t job, const char *rcpt, unsigned status,
                       const char *dsn, const char *reply);

/* qmgr_queue_slot - DELIVERY_SLOT from agent p: held 1 (before the job's
 * results) keeps the job's slot taken after its results, until held 0 (the
 * connection closed) or the agent goes away. False for a malformed report
 * (unknown job, a hold after the results); a release of a slot unknown is
 * also false and the caller may ignore it (it can follow a qmgr restart). */
bool qmgr_queue_slot(struct qmgr_queue *q, struct peer *p, uint64_t job, unsigned held);

/* qmgr_queue_site - DELIVERY_SITE: 0 unreachable (the domain goes down or
 * stays down: parked, one probe per retry interval), 1 reachable (a down
 * domain comes up and its parked mail flows), 2 unknown. False for an
 * unknown job. */
bool qmgr_queue_site(struct qmgr_queue *q, struct peer *p, uint64_t job, unsigned reachable, const char *reason);

/* qmgr_queue_domains - `mailctl domain list|show`: text or JSON of every
 * (gateway, domain) queue, or of one domain's queues (false: unknown). */
bool qmgr_queue_domains(struct qmgr_queue *q, const char *domain, bool json, struct buf *out);

/* qmgr_queue_delete - drop the pending recipients (not those in delivery
 * right now) of one message or of one domain: marked deleted in the queue
 * file, no bounce. Returns how many recipients. */
size_t qmgr_queue_delete(struct qmgr_queue *q, const char *id, const char *domain);

/* qmgr_queue_redirect - deliver the pending recipients of one message or
 * domain to relay (host[:port] list) instead of their route, now. Returns how
 * many recipients. (In memory: a restart forgets the redirection.) */
size_t qmgr_queue_redirect(struct qmgr_queue *q, const char *id, const char *domain, const char *relay);

/* qmgr_queue_has_domain - some gateway has a queue for domain. */
bool qmgr_queue_has_domain(struct qmgr_queue *q, const char *domain);

/* qmgr_queue_known - the id is in the queue. */
bool qmgr_queue_known(struct qmgr_queue *q, const char *id);

/* qmgr_queue_flush - make deferred recipients (of one domain, or all when
 * domain is NULL) due now, and probe down domains now; returns how many
 * entries; *waiting (if not NULL) gets the recipients of those domains that
 * wait in the index (they follow as soon as the domain is up). */
size_t qmgr_queue_flush(struct qmgr_queue *q, const char *domain, size_t *waiting);

/* qmgr_queue_list - text or JSON listing (optionally of one domain and/or
 * one virtual gateway), read from the index in arrival order per queue:
 * messages offset+1 .. offset+limit (limit 0: all). */
bool qmgr_queue_list(struct qmgr_queue *q, const char *domain, const char *vg, bool json, size_t offset, size_t limit,
                     struct buf *out);

/* qmgr_queue_show - one message; false when the id is unknown. */
bool qmgr_queue_show(struct qmgr_queue *q, const char *id, bool json, struct buf *out);

/* qmgr_queue_free - free everything (no I/O). NULL is fine. */
void qmgr_queue_free(struct qmgr_queue *q);

#endif
