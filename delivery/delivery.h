/* delivery.h - the delivery process as jobs see it: settings, the DNS
 * client, the routes table and the channel that reports results to qmgr.
 * Owned by delivery/main.c. */
#ifndef BW_DELIVERY_DELIVERY_H
#define BW_DELIVERY_DELIVERY_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "inet.h"

struct event_base;
struct dnsc;
struct table;
struct server;

struct delivery {
    struct server *srv;
    struct event_base *base;
    char *queue_directory;
    char *helo_name;
    int remote_port;
    int connect_timeout_s;
    int timeout_s;
    struct table *routes;
    struct table *controls;     /* destination_controls (max_messages_per_connection) */
    char vg[64];                /* the virtual gateway this process serves */
    struct inet_endpoint sources[8]; /* its source addresses (none: the system's choice) */
    int n_sources;
    unsigned next_source;
    struct dnsc *dns;
    struct job **jobs;
    size_t n_jobs, cap_jobs;
};

/* delivery_report - one DELIVERY_RESULT to qmgr (dropped if qmgr is gone: it
 * requeues the job's recipients itself). */
void delivery_report(struct delivery *dl, uint64_t job, const char *rcpt, int status, const char *dsn,
                     const char *reply);

/* delivery_site - DELIVERY_SITE for a job (0 down, 1 up, 2 unknown). */
void delivery_site(struct delivery *dl, uint64_t job, int reachable, const char *reason);

/* delivery_slot_hold, delivery_slot_release - DELIVERY_SLOT: a job's
 * connection stays open after its results (it says QUIT and waits for the
 * receiver to close), and qmgr counts it against the destination's
 * concurrency until the release, so a replacement connection does not meet
 * a receiver that still counts the old one. Call hold before the job's
 * results; it returns the token to give release (0: qmgr is away, release
 * does nothing). A release after qmgr reconnected is not sent. */
unsigned delivery_slot_hold(struct delivery *dl, uint64_t job);
void delivery_slot_release(struct delivery *dl, uint64_t job, unsigned token);

/* delivery_messages_per_connection - destination_controls
 * max_messages_per_connection for a domain (default 100). */
int delivery_messages_per_connection(const struct delivery *dl, const char *domain);

/* delivery_host_failed, delivery_host_avoided - an address that failed is
 * tried after the others for HOST_AVOID_S seconds (the domain is not marked
 * down for one bad host). */
#define HOST_AVOID_S 60
void delivery_host_failed(struct delivery *dl, const struct sockaddr *sa);
bool delivery_host_avoided(const struct delivery *dl, const struct sockaddr *sa);

/* delivery_host_avoid_left - seconds (1..HOST_AVOID_S) an address is still
 * avoided, 0 when it is not. */
int delivery_host_avoid_left(const struct delivery *dl, const struct sockaddr *sa);

/* delivery_mx_report - DELIVERY_MX to qmgr: the hosts resolved for domain,
 * records "PREF HOST [ADDR[/S]]..." in the order they are tried (the format
 * of lib/ipc_msgs.def; the caller keeps to its bounds: at most JOB_MX_MAX
 * hosts of at most 8 addresses, host names of [A-Za-z0-9._:-] only, since
 * qmgr drops an agent that sends a malformed report). digest identifies the
 * set (hosts, addresses, which are avoided, not for how long): the report
 * goes out when it differs from the last one sent for the domain, else at
 * most every MX_REPORT_REFRESH_S. Nothing is sent while qmgr is away. */
#define MX_REPORT_REFRESH_S 30
void delivery_mx_report(struct delivery *dl, const char *domain, const char *const *records, size_t n,
                        uint64_t digest);

/* delivery_conn_load, delivery_conn_change - open connections per remote
 * address, so new connections go to the least-loaded of equal MX hosts. */
int delivery_conn_load(const struct sockaddr *sa);
void delivery_conn_change(const struct sockaddr *sa, int delta);

/* delivery_job_add - a job started: keep it (for shutdown). */
void delivery_job_add(struct delivery *dl, struct job *j);

/* delivery_job_gone - a job finished: forget it. */
void delivery_job_gone(struct delivery *dl, struct job *j);

#endif
