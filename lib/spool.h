/* spool.h - the on-disk queue: queue ids, every spool path, the message file
 * format, and the group-commit writer (see man/breakwater-spool.5).
 *
 * This module is the only code that builds spool paths. Layout under
 * queue_directory:
 *   incoming/ID      a message being received; never acknowledged; removed at
 *                    restart by the smtpd slot that created it
 *   queue/XX/ID      a committed message (XX = two hex digits of the id)
 *
 * States of one message (each step one atomic filesystem operation):
 *   S0  nothing
 *   S1  incoming/ID exists, incomplete      -> crash: removed (never 250)
 *   S2  incoming/ID complete, data synced
 *   S3  queue/XX/ID (rename), directory synced -> only now 250 is sent
 *   S4  recipients marked done in place (state byte), file removed when all
 *       are done (issue 3).
 *
 * Group commit: spool_commit() hands a finished file to one committer thread
 * per process; the thread takes every file queued so far as one batch, makes
 * their data durable with one flush (syncfs) or one fdatasync per file, renames
 * them into queue/, makes the directory entries durable with one more flush,
 * and hands the results back to the event loop. Nothing is acknowledged
 * before its batch's second flush has returned without error.
 *
 * File format, version 1 (text envelope, binary-safe content):
 *   "BWQ1 " 16 decimal digits (content length) "\n"
 *   envelope records, one per line: T arrival-us, I id, S sender, C client
 *   address, N client name, H helo, P protocol, B body type, U smtputf8 (0|1),
 *   V virtual gateway, L listener, then one "R" STATE " " address per
 *   recipient (STATE '-' pending, 'D' delivered, 'B' bounced, 'N' bounced and the
 *   sender notified (the DSN is queued), 'X' deleted)
 *   "M\n", then exactly content-length bytes of message, then "E\n".
 * A file whose length, header or trailer do not agree is invalid. */
#ifndef BW_SPOOL_H
#define BW_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SPOOL_ID_LEN 18          /* 13 hex digits of microseconds, 2 of slot, 3 of sequence */
#define SPOOL_PATH_MAX 4096
#define SPOOL_HEADER_LEN 22      /* "BWQ1 " + 16 digits + "\n" */
#define SPOOL_RCPT_MAX 100000
#define SPOOL_FIELD_MAX 4096     /* longest envelope field */
#define SPOOL_SLOT_MAX 255

enum spool_sync { SPOOL_SYNC_SYNCFS, SPOOL_SYNC_FSYNC };

/* spool_id_new - a new queue id for producer slot (0..255) into id[SPOOL_ID_LEN+1].
 * Ids of one process strictly increase; slots keep processes apart. */
void spool_id_new(int slot, char id[SPOOL_ID_LEN + 1]);

/* spool_id_valid - true when s is a well-formed queue id. */
bool spool_id_valid(const char *s);

/* spool_id_slot - the producer slot encoded in a valid id. */
int spool_id_slot(const char *id);

/* spool_path_incoming, spool_path_queue - build a path; false if it does not fit. */
bool spool_path_incoming(const char *qdir, const char *id, char *out, size_t len);
bool spool_path_queue(const char *qdir, const char *id, char *out, size_t len);

/* spool_init_dirs - create incoming/, queue/00..FF/ (mode 0700) owned by uid/gid
 * (uid -1: leave owner). Returns -1 with errno and the failing path in err. */
int spool_init_dirs(const char *qdir, uid_t uid, gid_t gid, char *err, size_t errlen);

/* spool_clean_incoming - remove incoming/ files created by slot (after a
 * crash of that producer); returns how many were removed. */
int spool_clean_incoming(const char *qdir, int slot);

struct spool_envelope {
    int64_t arrival_us;
    const char *sender;         /* "" for the null sender */
    const char *client_addr;
    const char *client_name;
    const char *helo;
    const char *protocol;       /* SMTP or ESMTP */
    const char *body_type;      /* 7BIT or 8BITMIME */
    bool smtputf8;
    const char *vg;             /* virtual gateway */
    const char *listener;
    const char *const *rcpts;
    size_t n_rcpts;
};

struct spool_file; /* a message being written; owns its fd */

/* spool_file_create - open incoming/ID exclusively and write the header and
 * envelope. NULL with errno on failure (nothing is left behind). */
struct spool_file *spool_file_create(const char *qdir, const char *id, const struct spool_envelope *env);

/* spool_file_write - append content; -1 with errno on I/O error. */
int spool_file_write(struct spool_file *sf, const void *data, size_t len);

/* spool_file_size - content bytes written so far. */
size_t spool_file_size(const struct spool_file *sf);

/* spool_file_abort - close and unlink; frees sf. */
void spool_file_abort(struct spool_file *sf);

struct event_base;
struct spool_committer;

/* spool_commit_cb - called in the event loop once the batch holding the file
 * is durable (ok true) or failed (ok false: the file was removed). */
typedef void (*spool_commit_cb)(void *arg, bool ok);

/* spool_committer_new - start the committer thread of this process.
 * NULL with errno on failure. */
struct spool_committer *spool_committer_new(struct event_base *base, const char *qdir, enum spool_sync method);

/* spool_commit - finish sf (trailer, header) and queue it for the next batch.
 * Takes ownership of sf whatever the outcome; cb runs exactly once, later,
 * from the event loop (never from inside this call). */
void spool_commit(struct spool_committer *sc, struct spool_file *sf, spool_commit_cb cb, void *arg);

/* spool_committer_pending - commits not yet reported back. */
size_t spool_committer_pending(const struct spool_committer *sc);

/* spool_committer_stats - batches and files committed so far. */
void spool_committer_stats(const struct spool_committer *sc, uint64_t *batches, uint64_t *files);

/* spool_committer_free - wait for the thread to finish what it holds
 * (their callbacks are not called), stop it and free. NULL is fine. */
void spool_committer_free(struct spool_committer *sc);

/* spool_write_sync - write a whole message (envelope + content) and commit
 * it at once: data synced, renamed into queue/, directory synced. For
 * messages made by the queue manager itself (bounces); a new id for slot is
 * put into id. Returns 0, or -1 with errno (nothing left behind). */
int spool_write_sync(const char *qdir, int slot, const struct spool_envelope *env, const void *content, size_t len,
                     char id[SPOOL_ID_LEN + 1]);

/* spool_set_rcpt_state - overwrite the state byte of one R record in place
 * (fd opened O_RDWR); the caller makes it durable with fdatasync. */
int spool_set_rcpt_state(int fd, off_t state_offset, char state);

/* A committed message as read back from queue/XX/ID. */
struct spool_rcpt {
    char state;                 /* '-', 'D', 'B', 'N', 'X' */
    off_t state_offset;         /* file offset of the state byte */
    char *address;
};

struct spool_message {
    char id[SPOOL_ID_LEN + 1];
    int64_t arrival_us;
    char *sender, *client_addr, *client_name, *helo, *protocol, *body_type, *vg, *listener;
    bool smtputf8;
    struct spool_rcpt *rcpts;
    size_t n_rcpts;
    off_t content_offset;
    size_t content_len;
};

/* spool_message_read - parse and validate a message file. Returns 0, or -1
 * with errno (EINVAL for a malformed file, with the reason in err). */
int spool_message_read(const char *path, struct spool_message *msg, char *err, size_t errlen);

/* spool_message_free - release what spool_message_read allocated. */
void spool_message_free(struct spool_message *msg);

#endif
