/* listeners.h - the inbound listening sockets the master binds once and
 * hands to every smtpd process (SERVER_SHARED_LISTEN). Owns their fds. */
#ifndef BW_MASTER_LISTENERS_H
#define BW_MASTER_LISTENERS_H

#include <stddef.h>

#include "inet.h"
#include "server.h"

struct listeners {
    int fds[SERVER_LISTEN_MAX];
    char names[SERVER_LISTEN_MAX][INET_STR_MAX];
    int n;
};

/* listeners_open - bind and listen (backlog: the kernel somaxconn, SO_REUSEADDR,
 * IPV6_V6ONLY, non-blocking) on every addr:port of list. On failure nothing
 * stays open, -1 and err says which address and why. */
int listeners_open(const char *list, struct listeners *l, char *err, size_t errlen);

/* listeners_close - close every socket; l is empty afterwards. */
void listeners_close(struct listeners *l);

#endif
