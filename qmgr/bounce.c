/* bounce.c - DSN messages for failed recipients. */
#include "bounce.h"
#include "buf.h"
#include "dsn.h"
#include "str.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BOUNCE_MAX (1024 * 1024) /* a DSN never carries more than this */

/* read_headers - the original's header section (bounded) */
static char *read_headers(const char *qdir, const char *id, size_t *len)
{
    char path[SPOOL_PATH_MAX], err[256];
    struct spool_message sm;
    *len = 0;
    if (!spool_path_queue(qdir, id, path, sizeof path) || spool_message_read(path, &sm, err, sizeof err) != 0)
        return NULL;
    size_t want = sm.content_len < DSN_HEADERS_MAX ? sm.content_len : DSN_HEADERS_MAX;
    char *h = malloc(want + 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = (h && fd >= 0) ? pread(fd, h, want, sm.content_offset) : -1;
    if (fd >= 0)
        close(fd);
    spool_message_free(&sm);
    if (n < 0) {
        free(h);
        return NULL;
    }
    h[n] = '\0';
    char *end = strstr(h, "\r\n\r\n");
    *len = end ? (size_t)(end - h) + 2 : (size_t)n;
    return h;
}

int bounce_send(const char *qdir, const char *hostname, const char *vg, const char *orig_id, const char *sender,
                int64_t arrival_us, const struct bounce_rcpt *rcpts, size_t n, char newid[SPOOL_ID_LEN + 1])
{
    size_t hlen;
    char *headers = read_headers(qdir, orig_id, &hlen);
    struct dsn_rcpt *dr = calloc(n ? n : 1, sizeof *dr);
    if (dr == NULL) {
        free(headers);
        return errno = ENOMEM, -1;
    }
    for (size_t i = 0; i < n; i++) {
        dr[i].address = rcpts[i].address;
        dr[i].action = DSN_FAILED;
        dr[i].status = rcpts[i].status;
        dr[i].diagnostic = rcpts[i].diagnostic;
        dr[i].last_attempt = time(NULL);
    }
    char seed[SPOOL_ID_LEN + 1];
    spool_id_new(BOUNCE_SLOT, seed);
    struct dsn_info info = {
        .reporting_mta = hostname,
        .queue_id = orig_id,
        .arrival = arrival_us / 1000000,
        .original_sender = sender,
        .boundary_seed = seed,
        .now = time(NULL),
    };
    struct buf out;
    buf_init(&out, BOUNCE_MAX);
    bool ok = dsn_build(&info, dr, n, headers ? headers : "", hlen, &out);
    free(dr);
    free(headers);
    if (!ok) {
        buf_free(&out);
        return errno = EMSGSIZE, -1;
    }
    const char *to[] = {sender};
    struct spool_envelope env = {
        .arrival_us = (int64_t)time(NULL) * 1000000,
        .sender = "",
        .client_addr = "127.0.0.1",
        .client_name = "localhost",
        .helo = hostname,
        .protocol = "LOCAL",
        .body_type = "7BIT",
        .vg = vg,
        .listener = "",
        .rcpts = to,
        .n_rcpts = 1,
    };
    int rc = spool_write_sync(qdir, BOUNCE_SLOT, &env, out.data, out.len, newid);
    buf_free(&out);
    return rc;
}
