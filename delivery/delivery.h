/* delivery.h - the delivery process as jobs see it: settings, the DNS
 * client, the routes table and the channel that reports results to qmgr.
 * Owned by delivery/main.c. */
#ifndef BW_DELIVERY_DELIVERY_H
#define BW_DELIVERY_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

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

/* delivery_job_add - a job started: keep it (for shutdown). */
void delivery_job_add(struct delivery *dl, struct job *j);

/* delivery_job_gone - a job finished: forget it. */
void delivery_job_gone(struct delivery *dl, struct job *j);

#endif
