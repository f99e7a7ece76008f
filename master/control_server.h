/* control_server.h - the master's end of $queue_directory/public/control.
 *
 * Owns the listening UNIX socket and each client connection: reads one
 * CTL_REQUEST (bounded, with a timeout), hands it to the handler, and writes
 * the CTL_REPLY the handler gives (now or later), then closes. A malformed
 * request drops only that client (STYLE rule 6). */
#ifndef BW_MASTER_CONTROL_SERVER_H
#define BW_MASTER_CONTROL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct event_base;
struct control_server;
struct control_client;

/* control_handler - one request; must call control_reply() exactly once,
 * now or later. argv strings live until control_reply(). */
typedef void (*control_handler)(void *arg, struct control_client *client, int argc, const char **argv);

/* control_server_new - bind path (a stale socket is replaced: the caller holds
 * the instance lock), mode 0660 with group gid. NULL with err on failure. */
struct control_server *control_server_new(struct event_base *base, const char *path, gid_t gid,
                                          control_handler handler, void *arg, char *err, size_t errlen);

/* control_reply - send status and text, then close and free the client. */
void control_reply(struct control_client *client, int status, const char *text);

/* control_server_free - close the socket, unlink it, drop clients. NULL ok. */
void control_server_free(struct control_server *cs);

#endif
