/* control_server.c - control socket server in the master's event loop. */
#include "control_server.h"
#include "ipc.h"
#include "log.h"
#include "str.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_ARGS_MAX 64
#define CONTROL_CLIENT_TIMEOUT_S 30

struct control_client {
    struct control_server *server;
    struct bufferevent *bev;
    struct ipc_msg req;
    bool have_req;
    bool replied;
    bool gone; /* peer closed before the reply */
    struct control_client *next, *prev;
};

struct control_server {
    struct evconnlistener *listener;
    char path[108];
    control_handler handler;
    void *arg;
    struct control_client *clients;
};

static void client_free(struct control_client *c)
{
    struct control_server *s = c->server;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);
    if (c->have_req)
        ipc_msg_free(&c->req);
    free(c);
}

static void on_client_written(struct bufferevent *bev, void *arg)
{
    struct control_client *c = arg;
    if (c->replied && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        client_free(c);
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
    struct control_client *c = arg;
    if (c->have_req && !c->replied) { /* the handler still owes a reply: free it then */
        c->gone = true;
        bufferevent_disable(bev, EV_READ | EV_WRITE);
        return;
    }
    client_free(c);
}

static void on_client_read(struct bufferevent *bev, void *arg)
{
    struct control_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->have_req)
        return; /* one request per connection */
    size_t len = evbuffer_get_length(in), used;
    if (len > IPC_FRAME_MAX + 6) {
        client_free(c);
        return;
    }
    int r = ipc_parse(evbuffer_pullup(in, -1), len, &used, &c->req);
    if (r == 0)
        return;
    const char *argv[CONTROL_ARGS_MAX];
    int argc = 0;
    bool ok = r == 1 && c->req.type == IPC_CTL_REQUEST;
    if (r == 1)
        c->have_req = true;
    while (ok && ipc_more(&c->req)) {
        if (argc == CONTROL_ARGS_MAX || !ipc_get_str(&c->req, &argv[argc])) {
            ok = false;
            break;
        }
        argc++;
    }
    ok = ok && argc > 0 && ipc_end(&c->req);
    if (!ok) {
        log_warn("control: malformed request dropped");
        client_free(c);
        return;
    }
    evbuffer_drain(in, used);
    bufferevent_disable(bev, EV_READ);
    c->server->handler(c->server->arg, c, argc, argv);
}

void control_reply(struct control_client *c, int status, const char *text)
{
    if (c->gone) {
        client_free(c);
        return;
    }
    struct ipc_msg m;
    if (ipc_begin(&m, IPC_CTL_REPLY) && ipc_put_u64(&m, (uint64_t)status) && ipc_put_str(&m, text) &&
        ipc_finish(&m))
        bufferevent_write(c->bev, m.data.data, m.data.len);
    ipc_msg_free(&m);
    c->replied = true;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        client_free(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct control_server *s = arg;
    struct control_client *c = calloc(1, sizeof *c);
    struct bufferevent *bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    if (c == NULL || bev == NULL) {
        free(c);
        if (bev)
            bufferevent_free(bev);
        else
            close(fd);
        return;
    }
    c->server = s;
    c->bev = bev;
    c->next = s->clients;
    if (s->clients)
        s->clients->prev = c;
    s->clients = c;
    struct timeval tv = {CONTROL_CLIENT_TIMEOUT_S, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setcb(bev, on_client_read, on_client_written, on_client_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

struct control_server *control_server_new(struct event_base *base, const char *path, gid_t gid,
                                          control_handler handler, void *arg, char *err, size_t errlen)
{
    struct control_server *s = calloc(1, sizeof *s);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (s == NULL)
        return str_copy(err, errlen, "out of memory"), NULL;
    if (!str_copy(sun.sun_path, sizeof sun.sun_path, path) || !str_copy(s->path, sizeof s->path, path)) {
        free(s);
        return str_fmt(err, errlen, "control socket path too long: %s", path), NULL;
    }
    unlink(path);
    mode_t old = umask(0117);
    s->listener = evconnlistener_new_bind(base, on_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
                                          (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (s->listener == NULL) {
        str_fmt(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
        free(s);
        return NULL;
    }
    if (geteuid() == 0 && chown(path, 0, gid) != 0)
        log_warn_errno("chown %s", path);
    s->handler = handler;
    s->arg = arg;
    return s;
}

/* flush_client - at exit: push out a reply still buffered (bounded wait) */
static void flush_client(struct control_client *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    for (int tries = 0; tries < 20 && evbuffer_get_length(out) > 0; tries++) {
        if (evbuffer_write(out, fd) < 0 && errno != EAGAIN && errno != EINTR)
            break;
        if (evbuffer_get_length(out) > 0) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            poll(&pfd, 1, 50);
        }
    }
}

void control_server_free(struct control_server *s)
{
    if (s == NULL)
        return;
    for (struct control_client *c = s->clients; c; c = c->next)
        if (c->replied && !c->gone)
            flush_client(c);
    while (s->clients)
        client_free(s->clients);
    evconnlistener_free(s->listener);
    unlink(s->path);
    free(s);
}
