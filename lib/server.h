/* server.h - the skeleton every Breakwater daemon runs on (STYLE rule 2).
 *
 * Owns the process life cycle of a daemon: command-line options, loading
 * main.cf, opening the log, the privileged pre-init hook, dropping to
 * mail_owner (checked), the event base, SIGTERM/SIGHUP/SIGPIPE handling, the
 * master's liveness pipe, the loop, and exit. A daemon's main() is a table of
 * hooks plus one server_main() call.
 *
 * Fixed descriptors passed by master (postfix master_proto style):
 *   SERVER_MASTER_FD (3)  read end of a pipe; EOF means the master is gone
 *   SERVER_LISTEN_FD (4)  first of -l N inherited listening sockets
 * Options: -c CONFIG_DIR  -o name=value (repeatable)  -n INSTANCE  -i SLOT
 *          -l NLISTEN  -v (verbose)  -S (stand-alone: no master pipe). */
#ifndef BW_SERVER_H
#define BW_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define SERVER_MASTER_FD 3
#define SERVER_LISTEN_FD 4
#define SERVER_LISTEN_MAX 64

struct event_base;

struct server {
    const char *program;       /* "smtpd" */
    const char *instance;      /* -n value, or program */
    int slot;                  /* -i value: producer slot for queue ids */
    struct event_base *base;
    struct config *cfg;        /* current configuration (replaced on reload) */
    int listen_fds[SERVER_LISTEN_MAX];
    int n_listen;
    bool stopping;
    void *app;                 /* the daemon's own state */
};

struct server_hooks {
    /* pre_init - still privileged: open what needs root. Return false to exit 1. */
    bool (*pre_init)(struct server *srv);
    /* post_init - unprivileged, event base ready: create the daemon's events. */
    bool (*post_init)(struct server *srv);
    /* on_reload - a new valid configuration is in srv->cfg (old one passed, freed after). */
    void (*on_reload)(struct server *srv, struct config *old);
    /* on_stop - graceful stop requested (SIGTERM or the master went away):
     * stop accepting, finish what is in flight, then call server_exit_loop(). */
    void (*on_stop)(struct server *srv);
    /* on_exit - after the loop: free the daemon's state. */
    void (*on_exit)(struct server *srv);
};

/* server_main - run a daemon; returns the process exit status. */
int server_main(int argc, char **argv, const char *program, const struct server_hooks *hooks);

/* server_exit_loop - leave the event loop (after a graceful stop). */
void server_exit_loop(struct server *srv);

/* server_drop_privileges - become mail_owner when running as root. Returns
 * false with a message in err. Also used by master's children. */
bool server_drop_privileges(const char *user, char *err, size_t errlen);

/* server_owner_ids - uid/gid of mail_owner (or of the current user when not
 * root). False with a message when the user does not exist. */
bool server_owner_ids(const char *user, unsigned *uid, unsigned *gid, char *err, size_t errlen);

#endif
