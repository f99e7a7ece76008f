/* index.h - qmgr's per-(gateway, domain) index of queued mail, in Berkeley
 * DB (DESIGN §1; format in breakwater-spool(5)): for each (virtual gateway,
 * destination domain) the messages that still have recipients for it, in
 * arrival order, so that paging a domain's mail into memory, listing,
 * counting, deleting and redirecting one domain cost in proportion to that
 * domain's mail, not to the whole queue.
 *
 * It is only an index: the spool is the truth. A record may outlive its
 * message (dropped when it is next read), and a record lost in a crash is
 * found again through the spool's new/ markers (the daemon that commits a
 * message links it into new/; qmgr removes the link once the record is on
 * stable storage, qindex_flush). A missing, corrupt or half-built index is
 * rebuilt from the spool.
 *
 * Storage: $queue_directory/index/, a transactional Berkeley DB environment
 * (private region, write-ahead log, recovery at open) holding one B-tree,
 * domains.db. Key: vg NUL domain NUL arrival_us (8 bytes, big-endian) id
 * (18 characters); data: the number of recipients for that domain (u32,
 * big-endian). One meta record (key "\0meta") says "ok" once a build has
 * finished. All updates go into one running transaction that
 * qindex_commit() ends (qmgr commits once per event-loop turn).
 *
 * Owns: the DB environment and handle, the running transaction. Used only
 * by qmgr's event-loop thread. */
#ifndef BW_QMGR_INDEX_H
#define BW_QMGR_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

#define QINDEX_ERR_MAX 512

struct qindex;

/* One record. */
struct qindex_rec {
    const char *vg, *domain;
    int64_t arrival_us;
    char id[SPOOL_ID_LEN + 1];
    uint32_t n_rcpts;
};

/* qindex_open - open (create, recover) the index under qdir. *sound is set
 * false when the index had to be created afresh or was not completely built
 * (the caller rebuilds it with qindex_rebuild_begin/qindex_put/
 * qindex_rebuild_end). A corrupt index is removed and created afresh (sound
 * false). NULL with err set when even that fails. */
struct qindex *qindex_open(const char *qdir, bool *sound, char *err, size_t errlen);

/* qindex_put - add (or keep) a record. 1 added, 0 already there, -1 error. */
int qindex_put(struct qindex *ix, const struct qindex_rec *r);

/* qindex_del - drop a record; *n_rcpts (if not NULL) gets its recipient
 * count. 1 dropped, 0 was not there, -1 error. */
int qindex_del(struct qindex *ix, const char *vg, const char *domain, int64_t arrival_us, const char *id,
               uint32_t *n_rcpts);

/* qindex_fn - one record of a scan; return false to stop the scan. */
typedef bool (*qindex_fn)(const struct qindex_rec *r, void *arg);

/* qindex_scan - the records of (vg, domain) with keys after (after_us,
 * after_id) (after_id NULL: from the first), in order, up to max (0: all).
 * vg NULL: every gateway's records of domain (each gateway in turn); domain
 * NULL too: every record. Returns how many records were passed to fn, or
 * -1 on error. fn must not update the index. */
long qindex_scan(struct qindex *ix, const char *vg, const char *domain, int64_t after_us, const char *after_id,
                 size_t max, qindex_fn fn, void *arg);

/* qindex_clear - drop every record and mark the index not sound (a rebuild
 * follows). */
int qindex_clear(struct qindex *ix);

/* qindex_set_sound - record that a build finished (true) or started. */
int qindex_set_sound(struct qindex *ix, bool sound);

/* qindex_commit - end the running transaction (written to the OS, not yet
 * to stable storage). 0 or -1. */
int qindex_commit(struct qindex *ix);

/* qindex_flush - commit and force the log to stable storage; every record
 * put before is then durable. 0 or -1. */
int qindex_flush(struct qindex *ix);

/* qindex_checkpoint - checkpoint and drop log files no longer needed. */
void qindex_checkpoint(struct qindex *ix);

/* qindex_close - commit, checkpoint and close. NULL is fine. */
void qindex_close(struct qindex *ix);

#endif
