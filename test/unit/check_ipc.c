/* check_ipc.c - unit tests of lib/ipc: the frame and field codec of the
 * ipc_msgs.def messages, schema enforcement on both sides, ipc_parse on
 * partial and malformed frames, and the blocking fd helpers.
 *
 * Round trips are driven by the schema text of every declared type, so a
 * new line in ipc_msgs.def is covered without touching this file. Malformed
 * input is built byte by byte with the raw_* helpers below, independently of
 * the encoder under test. */
#include "ipc.h"
#include "unit.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The declared table, expanded here independently of ipc.c. */
static const struct {
    const char *name, *fields;
} declared[] = {
#define MSG(name, from, to, fields, doc) {#name, fields},
#include "ipc_msgs.def"
#undef MSG
};

/* ---- raw frames, built by hand ---- */

static void raw_be(struct buf *r, uint64_t v, int n)
{
    uint8_t b[8];
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
    ck_assert(buf_append(r, b, (size_t)n));
}

/* raw_begin - u32 length placeholder + u16 type */
static void raw_begin(struct buf *r, unsigned type)
{
    buf_init(r, 4 * IPC_FRAME_MAX);
    raw_be(r, 0, 4);
    raw_be(r, type, 2);
}

static void raw_u(struct buf *r, uint64_t v)
{
    ck_assert(buf_append(r, "u", 1));
    raw_be(r, v, 8);
}

static void raw_s(struct buf *r, const void *s, size_t n)
{
    ck_assert(buf_append(r, "s", 1));
    raw_be(r, n, 4);
    ck_assert(buf_append(r, s, n));
}

/* raw_end - fill in the length of what follows it */
static void raw_end(struct buf *r)
{
    uint64_t v = r->len - 4;
    for (int i = 3; i >= 0; i--, v >>= 8)
        ((uint8_t *)r->data)[i] = (uint8_t)v;
}

/* parse_raw - ipc_parse a whole raw frame; fails the test unless it is taken */
static void parse_raw(const struct buf *r, struct ipc_msg *m)
{
    size_t used = 0;
    ck_assert_int_eq(ipc_parse(r->data, r->len, &used, m), 1);
    ck_assert_uint_eq(used, r->len);
}

/* ---- schema-driven values ---- */

struct field {
    char kind; /* 'u' or 's' */
    bool repeat;
};

/* schema_fields - split "a:u64 b:str c:str*" */
static size_t schema_fields(const char *schema, struct field *f, size_t max)
{
    size_t n = 0;
    const char *p = schema;
    while (*p) {
        const char *colon = strchr(p, ':');
        ck_assert_ptr_nonnull(colon);
        const char *end = strchr(colon, ' ');
        if (end == NULL)
            end = colon + strlen(colon);
        size_t tl = (size_t)(end - colon - 1);
        ck_assert_uint_lt(n, max);
        f[n].repeat = colon[tl] == '*';
        size_t base = f[n].repeat ? tl - 1 : tl;
        if (base == 3 && strncmp(colon + 1, "u64", 3) == 0)
            f[n].kind = 'u';
        else if (base == 3 && strncmp(colon + 1, "str", 3) == 0)
            f[n].kind = 's';
        else
            ck_abort_msg("unknown field type in schema \"%s\"", schema);
        n++;
        p = *end ? end + 1 : end;
    }
    return n;
}

static uint64_t u_value(size_t k)
{
    static const uint64_t v[] = {0, 1, UINT64_MAX, 0x0102030405060708ULL, 25, 1ULL << 63, 0xff};
    return v[k % (sizeof v / sizeof v[0])];
}

static char long_text[1001];

static const char *s_value(size_t k)
{
    static const char *const v[] = {"", "x", "hello world", "utf8 \xc3\xa9\xe2\x82\xac", "\xff\x01\x7f\t\r\n", NULL};
    if (long_text[0] == '\0') {
        for (size_t i = 0; i < sizeof long_text - 1; i++)
            long_text[i] = (char)('a' + i % 26);
        long_text[sizeof long_text - 1] = '\0';
    }
    const char *s = v[k % (sizeof v / sizeof v[0])];
    return s ? s : long_text;
}

/* ---- round trips ---- */

static const int rep_counts[] = {0, 1, 7};

/* test_roundtrip - every declared type, repeated fields 0, 1 and 7 times */
START_TEST(test_roundtrip)
{
    unsigned type = (unsigned)(1 + _i / COUNT(rep_counts));
    int reps = rep_counts[_i % COUNT(rep_counts)];
    const char *schema = ipc_type_fields(type);
    ck_assert_ptr_nonnull(schema);
    struct field f[16];
    size_t nf = schema_fields(schema, f, 16);

    struct ipc_msg m;
    ck_assert(ipc_begin(&m, type));
    size_t k = 0;
    for (size_t i = 0; i < nf; i++) {
        int times = f[i].repeat ? reps : 1;
        for (int t = 0; t < times; t++, k++) {
            if (f[i].kind == 'u')
                ck_assert_msg(ipc_put_u64(&m, u_value(k)), "%s: put_u64 field %zu refused", ipc_type_name(type), i);
            else
                ck_assert_msg(ipc_put_str(&m, s_value(k)), "%s: put_str field %zu refused", ipc_type_name(type), i);
        }
    }
    ck_assert_msg(ipc_finish(&m), "%s: finish refused", ipc_type_name(type));
    const uint8_t *fr = (const uint8_t *)m.data.data;
    size_t len = m.data.len;
    ck_assert_uint_ge(len, 6);
    ck_assert_uint_le(len, IPC_FRAME_MAX);
    uint32_t flen = (uint32_t)fr[0] << 24 | (uint32_t)fr[1] << 16 | (uint32_t)fr[2] << 8 | fr[3];
    ck_assert_uint_eq(flen, len - 4);
    ck_assert_uint_eq((unsigned)fr[4] << 8 | fr[5], type);

    /* every strict prefix is "need more" */
    struct ipc_msg r;
    size_t used = 12345;
    for (size_t n = 0; n < len; n++)
        ck_assert_msg(ipc_parse(fr, n, &used, &r) == 0, "%s: prefix of %zu/%zu bytes not reported as partial",
                      ipc_type_name(type), n, len);
    ck_assert_uint_eq(used, 12345);

    /* the whole frame, followed by the start of another */
    struct buf two;
    buf_init(&two, 2 * IPC_FRAME_MAX);
    ck_assert(buf_append(&two, fr, len));
    ck_assert(buf_append(&two, fr, 3));
    ck_assert_int_eq(ipc_parse(two.data, two.len, &used, &r), 1);
    ck_assert_uint_eq(used, len);
    ck_assert_uint_eq(r.type, type);
    buf_free(&two);

    const char *got_s[64];
    size_t ns = 0;
    k = 0;
    for (size_t i = 0; i < nf; i++) {
        int times = f[i].repeat ? reps : 1;
        for (int t = 0; t < times; t++, k++) {
            if (f[i].kind == 'u') {
                uint64_t v = 0;
                ck_assert_msg(ipc_get_u64(&r, &v), "%s: get_u64 field %zu", ipc_type_name(type), i);
                ck_assert_msg(v == u_value(k), "%s field %zu: got %llu, want %llu", ipc_type_name(type), i,
                              (unsigned long long)v, (unsigned long long)u_value(k));
            } else {
                const char *s = NULL;
                ck_assert_msg(ipc_get_str(&r, &s), "%s: get_str field %zu", ipc_type_name(type), i);
                ck_assert_str_eq(s, s_value(k));
                ck_assert_uint_lt(ns, 64);
                got_s[ns++] = s;
            }
        }
        if (f[i].repeat)
            ck_assert(!ipc_more(&r));
    }
    ck_assert(!ipc_more(&r));
    ck_assert_msg(ipc_end(&r), "%s: ipc_end refused a complete message", ipc_type_name(type));
    /* strings handed out earlier are still intact after the later fields were read */
    k = 0;
    size_t si = 0;
    for (size_t i = 0; i < nf; i++) {
        int times = f[i].repeat ? reps : 1;
        for (int t = 0; t < times; t++, k++)
            if (f[i].kind == 's')
                ck_assert_str_eq(got_s[si++], s_value(k));
    }
    ipc_msg_free(&r);
    ipc_msg_free(&m);
}
END_TEST

/* test_repeated_read_loop - reading a str* field with ipc_more, as handlers do */
START_TEST(test_repeated_read_loop)
{
    struct ipc_msg m, r;
    ck_assert(ipc_begin(&m, IPC_DNS_ANSWER));
    ck_assert(ipc_put_u64(&m, 77));
    ck_assert(ipc_put_u64(&m, 0));
    ck_assert(ipc_put_u64(&m, 3600));
    const char *recs[] = {"10 mx1.example.com", "20 mx2.example.com", "30 mx3.example.com"};
    for (int i = 0; i < 3; i++)
        ck_assert(ipc_put_str(&m, recs[i]));
    ck_assert(ipc_finish(&m));
    size_t used;
    ck_assert_int_eq(ipc_parse(m.data.data, m.data.len, &used, &r), 1);
    uint64_t reqid, rcode, ttl;
    ck_assert(ipc_get_u64(&r, &reqid) && ipc_get_u64(&r, &rcode) && ipc_get_u64(&r, &ttl));
    ck_assert_uint_eq(reqid, 77);
    ck_assert_uint_eq(ttl, 3600);
    int n = 0;
    while (ipc_more(&r)) {
        const char *s;
        ck_assert(ipc_get_str(&r, &s));
        ck_assert_int_lt(n, 3);
        ck_assert_str_eq(s, recs[n]);
        n++;
    }
    ck_assert_int_eq(n, 3);
    ck_assert(ipc_end(&r));
    ipc_msg_free(&r);
    ipc_msg_free(&m);
}
END_TEST

/* test_wire_format - the exact bytes of a HELLO, as ipc.h documents them */
START_TEST(test_wire_format)
{
    struct ipc_msg m;
    ck_assert(ipc_begin(&m, IPC_HELLO));
    ck_assert(ipc_put_u64(&m, IPC_VERSION));
    ck_assert(ipc_put_str(&m, "mailctl"));
    ck_assert(ipc_put_u64(&m, 1234));
    ck_assert(ipc_finish(&m));
    static const uint8_t want[] = {0,   0,   0,   32,  0,   IPC_HELLO, 'u', 0,   0,   0,   0,   0,
                                   0,   0,   IPC_VERSION, 's', 0, 0,   0,   7,   'm', 'a', 'i', 'l',
                                   'c', 't', 'l', 'u', 0,   0,   0,   0,   0,   0,   0x04, 0xd2};
    ck_assert_uint_eq(m.data.len, sizeof want);
    ck_assert_mem_eq(m.data.data, want, sizeof want);
    ipc_msg_free(&m);
}
END_TEST

/* test_type_table - names and fields come from ipc_msgs.def, in order */
START_TEST(test_type_table)
{
    ck_assert_int_eq(IPC_TYPE_MAX - 1, COUNT(declared));
    for (unsigned t = 1; t < IPC_TYPE_MAX; t++) {
        ck_assert_str_eq(ipc_type_name(t), declared[t - 1].name);
        ck_assert_str_eq(ipc_type_fields(t), declared[t - 1].fields);
    }
    ck_assert_str_eq(ipc_type_name(IPC_HELLO), "HELLO");
    ck_assert_str_eq(ipc_type_name(IPC_CTL_REQUEST), "CTL_REQUEST");
    ck_assert_str_eq(ipc_type_name(IPC_NONE), "unknown");
    ck_assert_str_eq(ipc_type_name(IPC_TYPE_MAX), "unknown");
    ck_assert_str_eq(ipc_type_name(0xffffffffu), "unknown");
    ck_assert_ptr_null(ipc_type_fields(IPC_NONE));
    ck_assert_ptr_null(ipc_type_fields(IPC_TYPE_MAX));
    ck_assert_int_ge(IPC_VERSION, 1);
}
END_TEST

/* ---- encoder refusals ---- */

START_TEST(test_put_schema_violations)
{
    struct ipc_msg m;
    /* unknown types */
    ck_assert(!ipc_begin(&m, IPC_NONE));
    ck_assert(m.bad);
    ipc_msg_free(&m);
    ck_assert(!ipc_begin(&m, IPC_TYPE_MAX));
    ck_assert(!ipc_finish(&m));
    ipc_msg_free(&m);
    ck_assert(!ipc_begin(&m, 0xffff));
    ipc_msg_free(&m);

    /* wrong field type; the message stays bad */
    ck_assert(ipc_begin(&m, IPC_HELLO));
    ck_assert(!ipc_put_str(&m, "1"));
    ck_assert(m.bad);
    ck_assert(!ipc_put_u64(&m, 1));
    ck_assert(!ipc_finish(&m));
    ipc_msg_free(&m);

    ck_assert(ipc_begin(&m, IPC_QMGR_NEW_MAIL));
    ck_assert(!ipc_put_u64(&m, 1));
    ipc_msg_free(&m);

    ck_assert(ipc_begin(&m, IPC_CTL_REQUEST));
    ck_assert(ipc_put_str(&m, "status"));
    ck_assert(ipc_put_str(&m, "--json"));
    ck_assert(!ipc_put_u64(&m, 1)); /* args are str* */
    ipc_msg_free(&m);

    /* missing fields */
    ck_assert(ipc_begin(&m, IPC_HELLO));
    ck_assert(ipc_put_u64(&m, IPC_VERSION));
    ck_assert(ipc_put_str(&m, "smtpd"));
    ck_assert(!ipc_finish(&m));
    ipc_msg_free(&m);
    ck_assert(ipc_begin(&m, IPC_QMGR_NEW_MAIL));
    ck_assert(!ipc_finish(&m));
    ipc_msg_free(&m);
    ck_assert(ipc_begin(&m, IPC_CTL_REQUEST));
    ck_assert(!ipc_finish(&m)); /* command is mandatory, args may be empty */
    ipc_msg_free(&m);

    /* a field too many */
    ck_assert(ipc_begin(&m, IPC_HELLO));
    ck_assert(ipc_put_u64(&m, IPC_VERSION));
    ck_assert(ipc_put_str(&m, "smtpd"));
    ck_assert(ipc_put_u64(&m, 42));
    ck_assert(!ipc_put_u64(&m, 43));
    ck_assert(!ipc_finish(&m));
    ipc_msg_free(&m);
}
END_TEST

START_TEST(test_put_size_limits)
{
    struct ipc_msg m;
    char *big = malloc(IPC_STR_MAX + 2);
    ck_assert_ptr_nonnull(big);
    memset(big, 'b', IPC_STR_MAX + 1);
    big[IPC_STR_MAX + 1] = '\0';
    ck_assert(ipc_begin(&m, IPC_QMGR_NEW_MAIL));
    ck_assert(!ipc_put_str(&m, big)); /* IPC_STR_MAX + 1 */
    ipc_msg_free(&m);
    big[IPC_STR_MAX] = '\0';
    ck_assert(ipc_begin(&m, IPC_QMGR_NEW_MAIL));
    ck_assert(ipc_put_str(&m, big)); /* exactly IPC_STR_MAX fits a one-field frame */
    ck_assert(ipc_finish(&m));
    ck_assert_uint_le(m.data.len, IPC_FRAME_MAX);
    ipc_msg_free(&m);
    free(big);

    /* many fields: refused before the frame passes IPC_FRAME_MAX */
    char *chunk = malloc(65537);
    ck_assert_ptr_nonnull(chunk);
    memset(chunk, 'c', 65536);
    chunk[65536] = '\0';
    ck_assert(ipc_begin(&m, IPC_CTL_REQUEST));
    ck_assert(ipc_put_str(&m, "cmd"));
    int ok = 0;
    while (ok < 100 && ipc_put_str(&m, chunk))
        ok++;
    ck_assert_int_lt(ok, 100);
    ck_assert_int_ge(ok, 15);
    ck_assert_uint_le(m.data.len, IPC_FRAME_MAX);
    ck_assert(!ipc_finish(&m));
    ipc_msg_free(&m);
    free(chunk);
}
END_TEST

/* ---- decoder refusals ---- */

/* hello_raw - a valid HELLO frame, optionally without its last field */
static void hello_raw(struct buf *r, bool with_pid)
{
    raw_begin(r, IPC_HELLO);
    raw_u(r, IPC_VERSION);
    raw_s(r, "smtpd", 5);
    if (with_pid)
        raw_u(r, 4242);
}

START_TEST(test_get_valid_raw)
{
    struct buf r;
    struct ipc_msg m;
    uint64_t v, pid;
    const char *s;
    hello_raw(&r, true);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert_uint_eq(m.type, IPC_HELLO);
    ck_assert(ipc_get_u64(&m, &v));
    ck_assert_uint_eq(v, IPC_VERSION);
    ck_assert(ipc_get_str(&m, &s));
    ck_assert_str_eq(s, "smtpd");
    ck_assert(ipc_get_u64(&m, &pid));
    ck_assert_uint_eq(pid, 4242);
    ck_assert(ipc_end(&m));
    ipc_msg_free(&m);
    buf_free(&r);
}
END_TEST

START_TEST(test_get_wrong_type)
{
    struct buf r;
    struct ipc_msg m;
    uint64_t v;
    const char *s;
    /* HELLO whose first field is a string */
    raw_begin(&r, IPC_HELLO);
    raw_s(&r, "1", 1);
    raw_s(&r, "smtpd", 5);
    raw_u(&r, 1);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(!ipc_get_u64(&m, &v));
    ck_assert(m.bad);
    ck_assert(!ipc_get_str(&m, &s)); /* stays bad */
    ck_assert(!ipc_more(&m));
    ck_assert(!ipc_end(&m));
    ipc_msg_free(&m);
    buf_free(&r);

    /* a valid HELLO read with the wrong getter */
    hello_raw(&r, true);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(!ipc_get_str(&m, &s));
    ck_assert(!ipc_end(&m));
    ipc_msg_free(&m);
    buf_free(&r);

    /* an unknown field marker */
    raw_begin(&r, IPC_QMGR_NEW_MAIL);
    ck_assert(buf_append(&r, "x\0\0\0\1a", 6));
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(!ipc_get_str(&m, &s));
    ipc_msg_free(&m);
    buf_free(&r);
}
END_TEST

START_TEST(test_get_missing_field)
{
    struct buf r;
    struct ipc_msg m;
    uint64_t v;
    const char *s;
    hello_raw(&r, false);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(ipc_get_u64(&m, &v));
    ck_assert(ipc_get_str(&m, &s));
    ck_assert(!ipc_more(&m));
    ck_assert(!ipc_end(&m)); /* pid was declared but never came */
    ck_assert(!ipc_get_u64(&m, &v));
    ck_assert(!ipc_end(&m));
    ipc_msg_free(&m);
    buf_free(&r);

    /* empty payloads */
    raw_begin(&r, IPC_QMGR_NEW_MAIL);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(!ipc_end(&m));
    ck_assert(!ipc_get_str(&m, &s));
    ipc_msg_free(&m);
    buf_free(&r);

    /* a CTL_REQUEST with only its command is complete */
    raw_begin(&r, IPC_CTL_REQUEST);
    raw_s(&r, "status", 6);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(ipc_get_str(&m, &s));
    ck_assert(!ipc_more(&m));
    ck_assert(ipc_end(&m));
    ipc_msg_free(&m);
    buf_free(&r);
}
END_TEST

START_TEST(test_get_trailing_bytes)
{
    struct buf r;
    struct ipc_msg m;
    uint64_t v;
    const char *s;
    hello_raw(&r, true);
    ck_assert(buf_append(&r, "\0", 1));
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(ipc_get_u64(&m, &v) && ipc_get_str(&m, &s) && ipc_get_u64(&m, &v));
    ck_assert(!ipc_end(&m));
    ipc_msg_free(&m);
    buf_free(&r);

    /* a whole extra field */
    hello_raw(&r, true);
    raw_u(&r, 99);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(ipc_get_u64(&m, &v) && ipc_get_str(&m, &s) && ipc_get_u64(&m, &v));
    ck_assert(ipc_more(&m));
    ck_assert(!ipc_end(&m));
    ck_assert(!ipc_get_u64(&m, &v)); /* not in the schema */
    ipc_msg_free(&m);
    buf_free(&r);
}
END_TEST

START_TEST(test_get_bad_lengths)
{
    struct buf r;
    struct ipc_msg m;
    uint64_t v;
    const char *s;
    /* string with a NUL inside */
    raw_begin(&r, IPC_QMGR_NEW_MAIL);
    raw_s(&r, "a\0b", 3);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(!ipc_get_str(&m, &s));
    ck_assert(!ipc_end(&m));
    ipc_msg_free(&m);
    buf_free(&r);

    /* a NUL as the last byte of the string */
    raw_begin(&r, IPC_QMGR_NEW_MAIL);
    raw_s(&r, "ab\0", 3);
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(!ipc_get_str(&m, &s));
    ipc_msg_free(&m);
    buf_free(&r);

    /* string length past the end of the frame */
    static const uint32_t lens[] = {4, 100, 0x7fffffff, 0xffffffff};
    for (int i = 0; i < COUNT(lens); i++) {
        raw_begin(&r, IPC_QMGR_NEW_MAIL);
        ck_assert(buf_append(&r, "s", 1));
        raw_be(&r, lens[i], 4);
        ck_assert(buf_append(&r, "abc", 3));
        raw_end(&r);
        parse_raw(&r, &m);
        ck_assert_msg(!ipc_get_str(&m, &s), "string length %u with 3 bytes accepted", lens[i]);
        ipc_msg_free(&m);
        buf_free(&r);
    }

    /* a short u64 and a short string header */
    raw_begin(&r, IPC_HELLO);
    ck_assert(buf_append(&r, "u\0\0\0\1", 5));
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(!ipc_get_u64(&m, &v));
    ipc_msg_free(&m);
    buf_free(&r);
    raw_begin(&r, IPC_QMGR_NEW_MAIL);
    ck_assert(buf_append(&r, "s\0\0", 3));
    raw_end(&r);
    parse_raw(&r, &m);
    ck_assert(!ipc_get_str(&m, &s));
    ipc_msg_free(&m);
    buf_free(&r);
}
END_TEST

START_TEST(test_parse_bad_frames)
{
    struct ipc_msg m;
    size_t used;
    struct buf r;
    static const unsigned bad_types[] = {IPC_NONE, IPC_TYPE_MAX, IPC_TYPE_MAX + 1, 0xffff};
    for (int i = 0; i < COUNT(bad_types); i++) {
        raw_begin(&r, bad_types[i]);
        raw_s(&r, "x", 1);
        raw_end(&r);
        ck_assert_msg(ipc_parse(r.data, r.len, &used, &m) == -1, "type %u accepted", bad_types[i]);
        buf_free(&r);
    }
    /* lengths that cannot be: shorter than the type, longer than a frame */
    static const uint32_t bad_lens[] = {0, 1, IPC_FRAME_MAX + 1, 0x7fffffff, 0xffffffff};
    for (int i = 0; i < COUNT(bad_lens); i++) {
        uint8_t h[8] = {(uint8_t)(bad_lens[i] >> 24), (uint8_t)(bad_lens[i] >> 16), (uint8_t)(bad_lens[i] >> 8),
                        (uint8_t)bad_lens[i], 0, IPC_HELLO, 'u', 0};
        ck_assert_msg(ipc_parse(h, sizeof h, &used, &m) == -1, "frame length %u accepted", bad_lens[i]);
        ck_assert_msg(ipc_parse(h, 6, &used, &m) == -1, "frame length %u not refused from its header", bad_lens[i]);
    }
}
END_TEST

START_TEST(test_parse_partial)
{
    struct ipc_msg m;
    size_t used = 7;
    ck_assert_int_eq(ipc_parse("", 0, &used, &m), 0);
    ck_assert_int_eq(ipc_parse("\0\0\0", 3, &used, &m), 0);
    ck_assert_int_eq(ipc_parse("\0\0\0\x10\0", 5, &used, &m), 0);
    ck_assert_int_eq(ipc_parse("\0\0\0\x10\0\1", 6, &used, &m), 0); /* 16 announced, 2 there */
    ck_assert_uint_eq(used, 7);

    /* a frame of exactly IPC_FRAME_MAX after the length is accepted */
    struct buf r;
    raw_begin(&r, IPC_CTL_REQUEST);
    raw_s(&r, "c", 1);
    size_t n = IPC_FRAME_MAX - 2 - 6 - 5;
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    memset(big, 'B', n);
    raw_s(&r, big, n);
    raw_end(&r);
    ck_assert_uint_eq(r.len, 4 + (size_t)IPC_FRAME_MAX);
    ck_assert_int_eq(ipc_parse(r.data, r.len - 1, &used, &m), 0);
    ck_assert_int_eq(ipc_parse(r.data, r.len, &used, &m), 1);
    ck_assert_uint_eq(used, r.len);
    const char *s;
    ck_assert(ipc_get_str(&m, &s));
    ck_assert_str_eq(s, "c");
    ck_assert(ipc_get_str(&m, &s));
    ck_assert_uint_eq(strlen(s), n);
    ck_assert(ipc_end(&m));
    ipc_msg_free(&m);
    /* ... one byte more is not */
    ck_assert(buf_append(&r, "B", 1));
    raw_end(&r);
    ck_assert_int_eq(ipc_parse(r.data, r.len, &used, &m), -1);
    buf_free(&r);
    free(big);
}
END_TEST

START_TEST(test_parse_stream)
{
    /* several frames back to back are taken one at a time */
    struct buf stream;
    buf_init(&stream, 1 << 20);
    for (int i = 0; i < 5; i++) {
        struct ipc_msg m;
        ck_assert(ipc_begin(&m, IPC_REP_CHECK));
        ck_assert(ipc_put_u64(&m, (uint64_t)i));
        ck_assert(ipc_put_str(&m, "192.0.2.1"));
        ck_assert(ipc_finish(&m));
        ck_assert(buf_append(&stream, m.data.data, m.data.len));
        ipc_msg_free(&m);
    }
    size_t off = 0;
    for (uint64_t i = 0; i < 5; i++) {
        struct ipc_msg r;
        size_t used;
        ck_assert_int_eq(ipc_parse(stream.data + off, stream.len - off, &used, &r), 1);
        off += used;
        uint64_t id;
        const char *c;
        ck_assert(ipc_get_u64(&r, &id));
        ck_assert_uint_eq(id, i);
        ck_assert(ipc_get_str(&r, &c));
        ck_assert_str_eq(c, "192.0.2.1");
        ck_assert(ipc_end(&r));
        ipc_msg_free(&r);
    }
    ck_assert_uint_eq(off, stream.len);
    buf_free(&stream);
}
END_TEST

/* ---- blocking fd helpers ---- */

struct pair {
    int fd[2];
};

static void pair_open(struct pair *p)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->fd), 0);
}

static void pair_close(struct pair *p)
{
    for (int i = 0; i < 2; i++)
        if (p->fd[i] >= 0)
            close(p->fd[i]);
}

static void build_ctl(struct ipc_msg *m, const char *cmd, int nargs, const char *arg)
{
    ck_assert(ipc_begin(m, IPC_CTL_REQUEST));
    ck_assert(ipc_put_str(m, cmd));
    for (int i = 0; i < nargs; i++)
        ck_assert(ipc_put_str(m, arg));
    ck_assert(ipc_finish(m));
}

START_TEST(test_fd_roundtrip)
{
    struct pair p;
    pair_open(&p);
    struct ipc_msg m, r;
    build_ctl(&m, "status", 1, "--json");
    ck_assert_int_eq(ipc_send_fd(p.fd[0], &m, 1000), 0);
    ck_assert_int_eq(ipc_recv_fd(p.fd[1], &r, 1000), 0);
    ck_assert_uint_eq(r.type, IPC_CTL_REQUEST);
    const char *s;
    ck_assert(ipc_get_str(&r, &s));
    ck_assert_str_eq(s, "status");
    ck_assert(ipc_get_str(&r, &s));
    ck_assert_str_eq(s, "--json");
    ck_assert(ipc_end(&r));
    ipc_msg_free(&r);
    ipc_msg_free(&m);
    pair_close(&p);
}
END_TEST

struct sender {
    int fd;
    struct ipc_msg *m;
    int rc;
};

static void *send_thread(void *arg)
{
    struct sender *s = arg;
    s->rc = ipc_send_fd(s->fd, s->m, 10000);
    return NULL;
}

/* test_fd_large - a frame much larger than the socket buffer */
START_TEST(test_fd_large)
{
    struct pair p;
    pair_open(&p);
    char *arg = malloc(100001);
    ck_assert_ptr_nonnull(arg);
    memset(arg, 'L', 100000);
    arg[100000] = '\0';
    struct ipc_msg m, r;
    build_ctl(&m, "big", 9, arg);
    struct sender snd = {p.fd[0], &m, -2};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, send_thread, &snd), 0);
    int rc = ipc_recv_fd(p.fd[1], &r, 10000);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(snd.rc, 0);
    ck_assert_int_eq(rc, 0);
    const char *s;
    ck_assert(ipc_get_str(&r, &s));
    ck_assert_str_eq(s, "big");
    int n = 0;
    while (ipc_more(&r)) {
        ck_assert(ipc_get_str(&r, &s));
        ck_assert_str_eq(s, arg);
        n++;
    }
    ck_assert_int_eq(n, 9);
    ck_assert(ipc_end(&r));
    ipc_msg_free(&r);
    ipc_msg_free(&m);
    free(arg);
    pair_close(&p);
}
END_TEST

START_TEST(test_fd_errors)
{
    struct pair p;
    struct ipc_msg r;
    /* nothing comes: a timeout */
    pair_open(&p);
    errno = 0;
    ck_assert_int_eq(ipc_recv_fd(p.fd[1], &r, 100), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    pair_close(&p);

    /* the peer goes away, before or in the middle of a frame */
    pair_open(&p);
    close(p.fd[0]);
    p.fd[0] = -1;
    errno = 0;
    ck_assert_int_eq(ipc_recv_fd(p.fd[1], &r, 1000), -1);
    ck_assert_int_eq(errno, ECONNRESET);
    pair_close(&p);
    pair_open(&p);
    ck_assert_int_eq(write(p.fd[0], "\0\0\0\x10\0\1u", 7), 7);
    close(p.fd[0]);
    p.fd[0] = -1;
    errno = 0;
    ck_assert_int_eq(ipc_recv_fd(p.fd[1], &r, 1000), -1);
    ck_assert_int_eq(errno, ECONNRESET);
    pair_close(&p);

    /* malformed frames: a protocol error */
    pair_open(&p);
    ck_assert_int_eq(write(p.fd[0], "\0\0\0\3\0\0x", 7), 7); /* type 0 */
    errno = 0;
    ck_assert_int_eq(ipc_recv_fd(p.fd[1], &r, 1000), -1);
    ck_assert_int_eq(errno, EPROTO);
    pair_close(&p);
    pair_open(&p);
    ck_assert_int_eq(write(p.fd[0], "\xff\xff\xff\xff\0\1", 6), 6); /* oversized */
    errno = 0;
    ck_assert_int_eq(ipc_recv_fd(p.fd[1], &r, 1000), -1);
    ck_assert_int_eq(errno, EPROTO);
    pair_close(&p);
}
END_TEST

/* test_fd_two_frames - two frames that arrive in one read are both delivered */
START_TEST(test_fd_two_frames)
{
    struct pair p;
    pair_open(&p);
    struct ipc_msg a, b, r;
    build_ctl(&a, "first", 0, NULL);
    build_ctl(&b, "second", 0, NULL);
    struct buf both;
    buf_init(&both, 1 << 16);
    ck_assert(buf_append(&both, a.data.data, a.data.len));
    ck_assert(buf_append(&both, b.data.data, b.data.len));
    ck_assert_int_eq(write(p.fd[0], both.data, both.len), (ssize_t)both.len);
    buf_free(&both);
    ipc_msg_free(&a);
    ipc_msg_free(&b);

    const char *s;
    ck_assert_int_eq(ipc_recv_fd(p.fd[1], &r, 1000), 0);
    ck_assert(ipc_get_str(&r, &s));
    ck_assert_str_eq(s, "first");
    ipc_msg_free(&r);
    int rc = ipc_recv_fd(p.fd[1], &r, 500);
    int e = errno;
    pair_close(&p);
    ck_assert_msg(rc == 0, "second frame of one read lost: ipc_recv_fd got -1 (%s), want the frame", strerror(e));
    ck_assert(ipc_get_str(&r, &s));
    ck_assert_str_eq(s, "second");
    ipc_msg_free(&r);
}
END_TEST

/* ---- suite ---- */

int main(void)
{
    Suite *s = suite_create("ipc");
    TCase *tc = tcase_create("codec");
    tcase_add_loop_test(tc, test_roundtrip, 0, (IPC_TYPE_MAX - 1) * COUNT(rep_counts));
    tcase_add_test(tc, test_repeated_read_loop);
    tcase_add_test(tc, test_wire_format);
    tcase_add_test(tc, test_type_table);
    suite_add_tcase(s, tc);

    tc = tcase_create("refusals");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_put_schema_violations);
    tcase_add_test(tc, test_put_size_limits);
    tcase_add_test(tc, test_get_valid_raw);
    tcase_add_test(tc, test_get_wrong_type);
    tcase_add_test(tc, test_get_missing_field);
    tcase_add_test(tc, test_get_trailing_bytes);
    tcase_add_test(tc, test_get_bad_lengths);
    tcase_add_test(tc, test_parse_bad_frames);
    tcase_add_test(tc, test_parse_partial);
    tcase_add_test(tc, test_parse_stream);
    suite_add_tcase(s, tc);

    tc = tcase_create("fd");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_fd_roundtrip);
    tcase_add_test(tc, test_fd_large);
    tcase_add_test(tc, test_fd_errors);
    tcase_add_test(tc, test_fd_two_frames);
    suite_add_tcase(s, tc);

    Suite *suites[] = {s};
    return unit_run(suites, 1);
}
