/* children.h - the daemons the master runs: spawning with the fixed fds of
 * server.h, reaping, restart with exponential back-off for a daemon that
 * keeps dying early, signalling, and their status for mailctl.
 *
 * Owns one struct child per (service, slot), its restart timer, and nothing
 * else: listeners and the liveness pipe belong to the master and are only
 * passed down. Runs in the master's event loop. */
#ifndef BW_MASTER_CHILDREN_H
#define BW_MASTER_CHILDREN_H

#include <stdbool.h>
#include <sys/types.h>

#include "buf.h"
#include "listeners.h"

struct event_base;
struct children;

struct children_env {
    const char *daemon_directory;
    const char *config_dir;
    int master_pipe;              /* read end, becomes SERVER_MASTER_FD */
    const struct listeners *listeners;
    int throttle_max_ms;          /* longest restart delay */
};

/* children_new - empty set; NULL on ENOMEM. env is copied (strings too). */
struct children *children_new(struct event_base *base, const struct children_env *env);

/* children_set_env - new paths/limits after a reload (strings copied). */
bool children_set_env(struct children *cs, const struct children_env *env);

/* children_ensure - make exactly `count` slots of service `name` exist:
 * start the missing ones, SIGTERM the extra ones. `listeners`: pass the
 * listening sockets. False on ENOMEM. */
bool children_ensure(struct children *cs, const char *name, int count, bool listeners);

/* children_ensure_named - like children_ensure with one instance name per
 * slot (passed as -n NAME); a slot whose name changes is restarted. */
bool children_ensure_named(struct children *cs, const char *name, const char *const *instances, int count);

/* children_reap - collect exited children (call on SIGCHLD): log each exit,
 * schedule restarts unless stopping. */
void children_reap(struct children *cs);

/* children_signal - send sig to every live child. */
void children_signal(struct children *cs, int sig);

/* children_stop - no more restarts; SIGTERM everyone. */
void children_stop(struct children *cs);

/* children_settled - every daemon has said it is initialised (its ready
 * pipe, -R FD) or has already died once (a crash loop is not waited for). */
bool children_settled(const struct children *cs);

/* children_alive - how many children are running. */
int children_alive(const struct children *cs);

/* children_json - append a JSON array of {name, slot, pid, state, restarts}. */
bool children_json(const struct children *cs, struct buf *out);

/* children_text - append one line per child for `mailctl status`. */
bool children_text(const struct children *cs, struct buf *out);

/* children_free - free all (does not signal). NULL is fine. */
void children_free(struct children *cs);

#endif
