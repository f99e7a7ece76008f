/* peer.h - one framed IPC connection (ipc_msgs.def messages) over a
 * bufferevent: the building block of every daemon-to-daemon link.
 *
 * Owns its bufferevent (and so the socket). Incoming frames are parsed with
 * the bounded codec of ipc.h and handed to on_msg one by one; a malformed
 * frame, EOF or error calls on_close once, after which the owner must call
 * peer_free(). Output is buffered; peer_send() never blocks. */
#ifndef BW_PEER_H
#define BW_PEER_H

#include <stdbool.h>
#include <stddef.h>

#include "ipc.h"

struct event_base;
struct peer;

/* on_msg - one complete frame; m is freed after return. Return false to
 * close the peer (protocol violation): on_close follows. */
typedef bool (*peer_msg_cb)(struct peer *p, struct ipc_msg *m, void *arg);
typedef void (*peer_close_cb)(struct peer *p, void *arg);

/* peer_new - wrap a connected socket. NULL (fd closed) on ENOMEM. */
struct peer *peer_new(struct event_base *base, int fd, peer_msg_cb on_msg, peer_close_cb on_close, void *arg);

/* peer_connect_unix - connect to a UNIX socket path (non-blocking), then
 * as peer_new. NULL with errno when the connect fails at once. */
struct peer *peer_connect_unix(struct event_base *base, const char *path, peer_msg_cb on_msg,
                               peer_close_cb on_close, void *arg);

/* peer_send - queue a finished message (ipc_finish done); false if the
 * output is over its bound (slow peer) or on ENOMEM. */
bool peer_send(struct peer *p, const struct ipc_msg *m);

/* peer_output_len - bytes waiting to be written. */
size_t peer_output_len(const struct peer *p);

/* peer_set_arg - change the callback argument (after a hand-over). */
void peer_set_arg(struct peer *p, void *arg);

/* peer_free - close and free; safe from inside callbacks (deferred). */
void peer_free(struct peer *p);

#endif
