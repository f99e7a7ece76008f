/* peer.c - framed IPC over a bufferevent. */
#include "peer.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PEER_OUTPUT_MAX (64 * 1024 * 1024) /* a peer this far behind is broken */

struct peer {
    struct bufferevent *bev;
    peer_msg_cb on_msg;
    peer_close_cb on_close;
    void *arg;
    bool in_callback;
    bool dead;        /* on_close was called */
    bool free_later;  /* peer_free from inside a callback */
};

static void peer_closed(struct peer *p)
{
    if (p->dead)
        return;
    p->dead = true;
    bufferevent_disable(p->bev, EV_READ | EV_WRITE);
    p->on_close(p, p->arg);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct peer *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    p->in_callback = true;
    while (!p->dead && !p->free_later) {
        size_t len = evbuffer_get_length(in), used;
        if (len < 6)
            break;
        unsigned char head[4];
        evbuffer_copyout(in, head, 4);
        size_t flen = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
        if (flen > IPC_FRAME_MAX) {
            log_warn("ipc: frame of %zu bytes from a peer refused", flen);
            peer_closed(p);
            break;
        }
        if (len < 4 + flen)
            break;
        struct ipc_msg m;
        int r = ipc_parse(evbuffer_pullup(in, (ssize_t)(4 + flen)), 4 + flen, &used, &m);
        if (r != 1) {
            log_warn("ipc: malformed frame from a peer");
            peer_closed(p);
            break;
        }
        evbuffer_drain(in, used);
        bool keep = p->on_msg(p, &m, p->arg);
        ipc_msg_free(&m);
        if (!keep)
            peer_closed(p);
    }
    p->in_callback = false;
    if (p->free_later)
        peer_free(p);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct peer *p = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        p->in_callback = true;
        peer_closed(p);
        p->in_callback = false;
        if (p->free_later)
            peer_free(p);
    }
}

struct peer *peer_new(struct event_base *base, int fd, peer_msg_cb on_msg, peer_close_cb on_close, void *arg)
{
    struct peer *p = calloc(1, sizeof *p);
    evutil_make_socket_nonblocking(fd);
    struct bufferevent *bev = p ? bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (bev == NULL) {
        free(p);
        close(fd);
        return NULL;
    }
    p->bev = bev;
    p->on_msg = on_msg;
    p->on_close = on_close;
    p->arg = arg;
    bufferevent_setcb(bev, on_read, NULL, on_event, p);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    return p;
}

struct peer *peer_connect_unix(struct event_base *base, const char *path, peer_msg_cb on_msg,
                               peer_close_cb on_close, void *arg)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (!str_copy(sun.sun_path, sizeof sun.sun_path, path))
        return errno = ENAMETOOLONG, NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        int e = errno;
        close(fd);
        return errno = e, NULL;
    }
    return peer_new(base, fd, on_msg, on_close, arg);
}

bool peer_send(struct peer *p, const struct ipc_msg *m)
{
    struct evbuffer *out = bufferevent_get_output(p->bev);
    if (p->dead || evbuffer_get_length(out) + m->data.len > PEER_OUTPUT_MAX)
        return false;
    return evbuffer_add(out, m->data.data, m->data.len) == 0;
}

size_t peer_output_len(const struct peer *p) { return evbuffer_get_length(bufferevent_get_output(p->bev)); }

void peer_set_arg(struct peer *p, void *arg) { p->arg = arg; }

void peer_free(struct peer *p)
{
    if (p == NULL)
        return;
    if (p->in_callback) {
        p->free_later = true;
        return;
    }
    bufferevent_free(p->bev);
    free(p);
}
