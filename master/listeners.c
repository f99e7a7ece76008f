/* listeners.c - bind the smtpd listening sockets. */
#include "listeners.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* listen_backlog - the kernel's somaxconn: glibc's SOMAXCONN (128) is older
 * and smaller than what Linux allows (4096 since 5.4) */
static int listen_backlog(void)
{
    int backlog = SOMAXCONN;
    FILE *fp = fopen("/proc/sys/net/core/somaxconn", "r");
    if (fp) {
        if (fscanf(fp, "%d", &backlog) != 1 || backlog < SOMAXCONN)
            backlog = SOMAXCONN;
        fclose(fp);
    }
    return backlog;
}

/* listeners_open - bind every listener of the list */
int listeners_open(const char *list, struct listeners *l, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    char *copy = str_dup(list), *cur = copy, *tok;
    if (copy == NULL)
        return str_copy(err, errlen, "out of memory"), -1;
    while ((tok = str_split_next(&cur)) != NULL) {
        struct inet_endpoint ep;
        char why[256];
        if (l->n == SERVER_LISTEN_MAX) {
            str_fmt(err, errlen, "smtpd_listen: more than %d listeners", SERVER_LISTEN_MAX);
            goto fail;
        }
        if (!inet_parse_endpoint(tok, 0, &ep, why, sizeof why)) {
            str_fmt(err, errlen, "smtpd_listen: %s", why);
            goto fail;
        }
        int fd = socket(ep.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        if (fd < 0) {
            str_fmt(err, errlen, "socket for %s: %s", tok, strerror(errno));
            goto fail;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ep.ss.ss_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&ep.ss, ep.len) != 0 || listen(fd, listen_backlog()) != 0) {
            str_fmt(err, errlen, "cannot listen on %s: %s", tok, strerror(errno));
            close(fd);
            goto fail;
        }
        /* Not close-on-exec: the master passes these to smtpd explicitly. */
        l->fds[l->n] = fd;
        inet_endpoint_str((struct sockaddr *)&ep.ss, l->names[l->n], sizeof l->names[l->n]);
        l->n++;
    }
    free(copy);
    if (l->n == 0)
        return str_copy(err, errlen, "smtpd_listen: no listener configured"), -1;
    return 0;
fail:
    free(copy);
    listeners_close(l);
    return -1;
}

/* listeners_close - close all */
void listeners_close(struct listeners *l)
{
    for (int i = 0; i < l->n; i++)
        close(l->fds[i]);
    l->n = 0;
}
