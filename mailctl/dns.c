/* dns.c - mailctl dns lookup: one synchronous DNS_QUERY to dnscache (HELLO
 * first, as on every connection), the DNS_ANSWER printed. Owns nothing past
 * the call: the socket and the messages are closed and freed before return. */
#include "dns.h"
#include "commands.h"
#include "config.h"
#include "dnsc.h"
#include "ipc.h"
#include "paths.h"
#include "str.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DNS_CMD_REQID 1
#define DNS_CMD_TIMEOUT_MS (DNSC_TIMEOUT_MS + 2000) /* dnscache gives its verdict before DNSC_TIMEOUT_MS */

static const char *rcode_name(uint64_t rcode)
{
    switch (rcode) {
    case DNSC_OK: return "OK";
    case DNSC_NXDOMAIN: return "NXDOMAIN";
    case DNSC_SERVFAIL: return "SERVFAIL";
    case DNSC_TIMEOUT: return "TIMEOUT";
    case DNSC_BADNAME: return "BADNAME";
    }
    return "unknown";
}

static int usage(void)
{
    fprintf(stderr, "usage: mailctl dns lookup NAME [MX|A|AAAA|PTR|TXT]\n");
    return 2;
}

/* connect_dnscache - a connected socket to private/dnscache, or -1 */
static int connect_dnscache(const char *qdir, char *path, size_t pathlen)
{
    if (!paths_private_socket(qdir, "dnscache", path, pathlen))
        return errno = ENAMETOOLONG, -1;
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
    return fd;
}

/* send_query - HELLO then DNS_QUERY */
static int send_query(int fd, const char *name, const char *type)
{
    struct ipc_msg m;
    int r = -1;
    if (ipc_begin(&m, IPC_HELLO) && ipc_put_u64(&m, IPC_VERSION) && ipc_put_str(&m, "mailctl") &&
        ipc_put_u64(&m, (uint64_t)getpid()) && ipc_finish(&m))
        r = ipc_send_fd(fd, &m, DNS_CMD_TIMEOUT_MS);
    ipc_msg_free(&m);
    if (r != 0)
        return -1;
    r = -1;
    if (ipc_begin(&m, IPC_DNS_QUERY) && ipc_put_u64(&m, DNS_CMD_REQID) && ipc_put_str(&m, name) &&
        ipc_put_str(&m, type) && ipc_finish(&m))
        r = ipc_send_fd(fd, &m, DNS_CMD_TIMEOUT_MS);
    else
        errno = EINVAL;
    ipc_msg_free(&m);
    return r;
}

/* print_answer - the DNS_ANSWER m; the exit status, or -1 when malformed */
static int print_answer(struct ipc_msg *m, const char *name, const char *type)
{
    uint64_t reqid, rcode, ttl;
    if (!ipc_get_u64(m, &reqid) || !ipc_get_u64(m, &rcode) || !ipc_get_u64(m, &ttl) || reqid != DNS_CMD_REQID)
        return -1;
    const char *records[DNSC_RECORDS_MAX];
    size_t n = 0;
    while (ipc_more(m) && n < DNSC_RECORDS_MAX && ipc_get_str(m, &records[n]))
        n++;
    if (!ipc_end(m))
        return -1;
    printf("rcode=%s ttl=%llu records=%zu\n", rcode_name(rcode), (unsigned long long)ttl, n);
    for (size_t i = 0; i < n; i++)
        printf("%s\n", records[i]);
    if (rcode == DNSC_OK || rcode == DNSC_NXDOMAIN)
        return 0;
    fprintf(stderr, "mailctl: dns lookup %s %s: %s\n", name, type, rcode_name(rcode));
    return 1;
}

int cmd_dns(struct mailctl *mc, int argc, char **argv)
{
    if (argc < 3 || argc > 4 || strcmp(argv[1], "lookup") != 0)
        return usage();
    const char *name = argv[2], *type = argc == 4 ? argv[3] : "MX";
    char err[CONFIG_ERR_MAX];
    struct config *cfg = config_load(mc->config_dir, NULL, 0, err);
    if (cfg == NULL) {
        fprintf(stderr, "mailctl: %s\n", err);
        return 1;
    }
    char path[PATHS_MAX];
    int fd = connect_dnscache(cfg_str(cfg, P_queue_directory), path, sizeof path);
    config_free(cfg);
    if (fd < 0) {
        fprintf(stderr, "mailctl: dnscache is not reachable at %s: %s (is breakwater running?)\n", path,
                strerror(errno));
        return 1;
    }
    int status = 1;
    struct ipc_msg m;
    if (send_query(fd, name, type) != 0) {
        fprintf(stderr, "mailctl: dns lookup %s %s: cannot send the query: %s\n", name, type, strerror(errno));
    } else if (ipc_recv_fd(fd, &m, DNS_CMD_TIMEOUT_MS) != 0) {
        fprintf(stderr, "mailctl: dns lookup %s %s: no HELLO from dnscache: %s\n", name, type, strerror(errno));
    } else {
        uint64_t version = 0, pid;
        const char *program;
        bool hello = m.type == IPC_HELLO && ipc_get_u64(&m, &version) && ipc_get_str(&m, &program) &&
                     ipc_get_u64(&m, &pid) && ipc_end(&m);
        ipc_msg_free(&m);
        if (!hello || version != IPC_VERSION) {
            fprintf(stderr, "mailctl: dns lookup %s %s: dnscache speaks IPC version %llu, mailctl %d\n", name, type,
                    (unsigned long long)version, IPC_VERSION);
        } else if (ipc_recv_fd(fd, &m, DNS_CMD_TIMEOUT_MS) != 0) {
            fprintf(stderr, "mailctl: dns lookup %s %s: no answer from dnscache: %s\n", name, type,
                    strerror(errno));
        } else {
            int r = m.type == IPC_DNS_ANSWER ? print_answer(&m, name, type) : -1;
            ipc_msg_free(&m);
            if (r < 0)
                fprintf(stderr, "mailctl: dns lookup %s %s: malformed answer from dnscache\n", name, type);
            else
                status = r;
        }
    }
    close(fd);
    return status;
}
