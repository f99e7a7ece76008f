/* control.c - mailctl side of the control socket protocol. */
#include "control.h"
#include "ipc.h"
#include "str.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* control_call - one request, one reply */
int control_call(const char *path, int argc, const char *const *argv, int timeout_ms, int *status, char **text)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (!str_copy(sun.sun_path, sizeof sun.sun_path, path))
        return errno = ENAMETOOLONG, -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        int e = errno;
        close(fd);
        return errno = e, -1;
    }
    struct ipc_msg m;
    bool ok = ipc_begin(&m, IPC_CTL_REQUEST) && ipc_put_str(&m, argc > 0 ? argv[0] : "");
    for (int i = 1; ok && i < argc; i++)
        ok = ipc_put_str(&m, argv[i]);
    ok = ok && ipc_finish(&m);
    if (!ok || ipc_send_fd(fd, &m, timeout_ms) != 0) {
        int e = ok ? errno : EINVAL;
        ipc_msg_free(&m);
        close(fd);
        return errno = e, -1;
    }
    ipc_msg_free(&m);
    struct ipc_msg r;
    if (ipc_recv_fd(fd, &r, timeout_ms) != 0) {
        int e = errno;
        close(fd);
        return errno = e, -1;
    }
    close(fd);
    uint64_t st;
    const char *t;
    if (r.type != IPC_CTL_REPLY || !ipc_get_u64(&r, &st) || !ipc_get_str(&r, &t) || !ipc_end(&r)) {
        ipc_msg_free(&r);
        return errno = EPROTO, -1;
    }
    *status = (int)st;
    *text = str_dup(t);
    ipc_msg_free(&r);
    return *text ? 0 : -1;
}
