/* ipc.c - frame and field codec for ipc_msgs.def messages. */
#include "ipc.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const struct {
    const char *name;
    const char *fields;
} ipc_types[IPC_TYPE_MAX] = {
    [IPC_NONE] = {"NONE", ""},
#define MSG(name, from, to, fields, doc) [IPC_##name] = {#name, fields},
#include "ipc_msgs.def"
#undef MSG
};

const char *ipc_type_name(unsigned type)
{
    return type > IPC_NONE && type < IPC_TYPE_MAX ? ipc_types[type].name : "unknown";
}

const char *ipc_type_fields(unsigned type)
{
    return type > IPC_NONE && type < IPC_TYPE_MAX ? ipc_types[type].fields : NULL;
}

/* next_field - the type of the field the schema expects next ("u64", "str"),
 * advancing the schema unless the field repeats. 0 when none is left. */
static char next_field(struct ipc_msg *m)
{
    const char *s = m->schema;
    if (s == NULL || *s == '\0')
        return 0;
    const char *colon = strchr(s, ':');
    if (colon == NULL)
        return 0;
    char kind = colon[1] == 'u' ? 'u' : 's';
    const char *end = strchr(colon, ' ');
    bool repeat = end ? end[-1] == '*' : s[strlen(s) - 1] == '*';
    if (!repeat)
        m->schema = end ? end + 1 : s + strlen(s);
    return kind;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

bool ipc_begin(struct ipc_msg *m, unsigned type)
{
    memset(m, 0, sizeof *m);
    buf_init(&m->data, IPC_FRAME_MAX);
    if (type <= IPC_NONE || type >= IPC_TYPE_MAX)
        return m->bad = true, false;
    m->type = type;
    m->schema = ipc_types[type].fields;
    uint8_t head[6] = {0};
    put_be(head + 4, type, 2);
    return buf_append(&m->data, head, sizeof head) || (m->bad = true, false);
}

bool ipc_put_u64(struct ipc_msg *m, uint64_t v)
{
    uint8_t f[9] = {'u'};
    put_be(f + 1, v, 8);
    if (m->bad || next_field(m) != 'u' || !buf_append(&m->data, f, sizeof f))
        return m->bad = true, false;
    return true;
}

bool ipc_put_str(struct ipc_msg *m, const char *s)
{
    size_t n = strlen(s);
    uint8_t f[5] = {'s'};
    put_be(f + 1, n, 4);
    if (m->bad || n > IPC_STR_MAX || next_field(m) != 's' || !buf_append(&m->data, f, sizeof f) ||
        !buf_append(&m->data, s, n))
        return m->bad = true, false;
    return true;
}

/* schema_done - no mandatory field left */
static bool schema_done(const struct ipc_msg *m)
{
    const char *s = m->schema;
    return s == NULL || *s == '\0' || (strchr(s, ' ') == NULL && s[strlen(s) - 1] == '*');
}

bool ipc_finish(struct ipc_msg *m)
{
    if (m->bad || !schema_done(m))
        return m->bad = true, false;
    put_be((uint8_t *)m->data.data, m->data.len - 4, 4);
    return true;
}

int ipc_parse(const void *in, size_t len, size_t *used, struct ipc_msg *m)
{
    const uint8_t *p = in;
    if (len < 6)
        return 0;
    uint64_t flen = get_be(p, 4);
    if (flen < 2 || flen > IPC_FRAME_MAX)
        return -1;
    if (len < 4 + flen)
        return 0;
    unsigned type = (unsigned)get_be(p + 4, 2);
    if (type <= IPC_NONE || type >= IPC_TYPE_MAX)
        return -1;
    memset(m, 0, sizeof *m);
    buf_init(&m->data, IPC_FRAME_MAX);
    if (!buf_append(&m->data, p + 6, (size_t)flen - 2))
        return -1;
    m->type = type;
    m->schema = ipc_types[type].fields;
    *used = 4 + (size_t)flen;
    return 1;
}

bool ipc_get_u64(struct ipc_msg *m, uint64_t *v)
{
    const uint8_t *p = (const uint8_t *)m->data.data + m->pos;
    if (m->bad || next_field(m) != 'u' || m->data.len - m->pos < 9 || p[0] != 'u')
        return m->bad = true, false;
    *v = get_be(p + 1, 8);
    m->pos += 9;
    return true;
}

bool ipc_get_str(struct ipc_msg *m, const char **s)
{
    const uint8_t *p = (const uint8_t *)m->data.data + m->pos;
    if (m->bad || next_field(m) != 's' || m->data.len - m->pos < 5 || p[0] != 's')
        return m->bad = true, false;
    uint64_t n = get_be(p + 1, 4);
    if (n > m->data.len - m->pos - 5 || memchr(p + 5, '\0', (size_t)n) != NULL)
        return m->bad = true, false;
    /* Terminate in place: move the text over its own 5-byte field header, so
     * the NUL lands inside this field and the next field stays intact. */
    char *dst = (char *)p;
    memmove(dst, p + 5, (size_t)n);
    dst[n] = '\0';
    m->pos += 5 + (size_t)n;
    *s = dst;
    return true;
}

bool ipc_more(const struct ipc_msg *m) { return !m->bad && m->pos < m->data.len; }

bool ipc_end(struct ipc_msg *m) { return !m->bad && m->pos == m->data.len && schema_done(m); }

void ipc_msg_free(struct ipc_msg *m) { buf_free(&m->data); }

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* wait_fd - poll until fd is ready or the deadline passes */
static int wait_fd(int fd, short events, long deadline)
{
    for (;;) {
        long left = deadline - now_ms();
        if (left <= 0)
            return errno = ETIMEDOUT, -1;
        struct pollfd pfd = {fd, events, 0};
        int r = poll(&pfd, 1, (int)left);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

int ipc_send_fd(int fd, struct ipc_msg *m, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    size_t off = 0;
    while (off < m->data.len) {
        if (wait_fd(fd, POLLOUT, deadline) != 0)
            return -1;
        ssize_t w = write(fd, m->data.data + off, m->data.len - off);
        if (w < 0 && errno != EINTR && errno != EAGAIN)
            return -1;
        if (w > 0)
            off += (size_t)w;
    }
    return 0;
}

int ipc_recv_fd(int fd, struct ipc_msg *m, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    struct buf in;
    buf_init(&in, IPC_FRAME_MAX + 6);
    for (;;) {
        size_t used;
        int r = ipc_parse(in.data ? in.data : "", in.len, &used, m);
        if (r == 1) {
            buf_free(&in);
            return 0;
        }
        if (r < 0) {
            buf_free(&in);
            return errno = EPROTO, -1;
        }
        char chunk[65536];
        if (wait_fd(fd, POLLIN, deadline) != 0) {
            buf_free(&in);
            return -1;
        }
        /* Read no further than this frame: what follows belongs to the next call. */
        size_t want = 6;
        if (in.len >= 4) {
            const uint8_t *h = (const uint8_t *)in.data;
            want = 4 + ((size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]);
        }
        size_t need = want > in.len ? want - in.len : 1;
        ssize_t n = read(fd, chunk, need < sizeof chunk ? need : sizeof chunk);
        if (n == 0) {
            buf_free(&in);
            return errno = ECONNRESET, -1;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            buf_free(&in);
            return -1;
        }
        if (!buf_append(&in, chunk, (size_t)n)) {
            buf_free(&in);
            return errno = EPROTO, -1;
        }
    }
}
