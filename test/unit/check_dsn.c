/* check_dsn.c - unit tests of dsn_build: the multipart/report structure,
 * CRLF-only output, hostile input (CR, LF, NUL, 8-bit, fake boundaries and
 * header injection), folding of long lines, the cut of the original headers,
 * delayed versus failed reports, dates, and failure at the buffer limit. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "dsn.h"

#define BIG_MAX (8u * 1024 * 1024)
#define SEED "FEDCBA9876543210AB"
#define CANDIDATE0 "=_bw_" SEED "_0000000000000000"   /* first boundary tried for SEED */

/* ---- helpers ---- */

static struct dsn_info base_info(void)
{
    return (struct dsn_info){
        .reporting_mta = "mx.example.org",
        .queue_id = "0123456789ABCDEF01",
        .arrival = 1700000000,
        .original_sender = "alice@example.com",
        .boundary_seed = SEED,
        .now = 1700003600,
    };
}

static const char plain_headers[] = "Received: from client.example.com\r\n"
                                    "\tby mx.example.org with ESMTP\r\n"
                                    "From: Alice <alice@example.com>\r\n"
                                    "To: bob@example.net\r\n"
                                    "Subject: lunch\r\n"
                                    "Message-ID: <1@example.com>\r\n";

/* build - dsn_build into a fresh buffer that must succeed */
static struct buf build(const struct dsn_info *info, const struct dsn_rcpt *r, size_t n, const char *h,
                        size_t hlen)
{
    struct buf b;
    buf_init(&b, BIG_MAX);
    ck_assert_msg(dsn_build(info, r, n, h, hlen, &b), "dsn_build failed: %s", strerror(errno));
    ck_assert_ptr_nonnull(b.data);
    return b;
}

/* find - first occurrence of s in p[0..n), or NULL */
static const char *find(const char *p, size_t n, const char *s)
{
    size_t sl = strlen(s);
    for (size_t i = 0; sl <= n && i <= n - sl; i++)
        if (memcmp(p + i, s, sl) == 0)
            return p + i;
    return NULL;
}

/* count - occurrences of s in p[0..n) */
static size_t count(const char *p, size_t n, const char *s)
{
    size_t c = 0, sl = strlen(s);
    const char *q;
    while ((q = find(p, n, s)) != NULL) {
        c++;
        n -= (size_t)(q - p) + sl;
        p = q + sl;
    }
    return c;
}

/* count_lines - lines of p[0..n) (CRLF separated) that begin with prefix */
static size_t count_lines(const char *p, size_t n, const char *prefix)
{
    size_t c = 0, pl = strlen(prefix);
    const char *end = p + n;
    while (p < end) {
        const char *e = find(p, (size_t)(end - p), "\r\n");
        size_t ll = e ? (size_t)(e - p) : (size_t)(end - p);
        if (ll + (e ? 2 : 0) >= pl && memcmp(p, prefix, pl) == 0)   /* prefix may include the CR */
            c++;
        p += ll + (e ? 2 : 0);
    }
    return c;
}

/* unfold - the value of the first field "name:" in p[0..n), unfolded
 * (CRLF before a blank removed), into out[outsz]; false if absent */
static bool unfold(const char *p, size_t n, const char *name, char *out, size_t outsz)
{
    char pat[80];
    snprintf(pat, sizeof pat, "\r\n%s:", name);
    const char *q = NULL;
    size_t nl = strlen(name);
    if (n > nl && memcmp(p, pat + 2, nl + 1) == 0)
        q = p;
    else if ((q = find(p, n, pat)) != NULL)
        q += 2;
    if (q == NULL)
        return false;
    q += nl + 1;
    while (q < p + n && (*q == ' ' || *q == '\t'))
        q++;
    size_t o = 0;
    const char *end = p + n;
    while (q < end) {
        if (q + 1 < end && q[0] == '\r' && q[1] == '\n') {
            if (q + 2 < end && (q[2] == ' ' || q[2] == '\t')) {
                q += 2;
                continue;
            }
            break;
        }
        ck_assert_uint_lt(o, outsz - 1);
        out[o++] = *q++;
    }
    out[o] = '\0';
    return true;
}

struct report {
    const char *hdr;        /* top-level header section, through its last CRLF */
    size_t hdr_len;
    const char *part[3];    /* bodies of the three parts (after their headers) */
    size_t part_len[3];
    const char *part_hdr[3];
    size_t part_hdr_len[3];
    char boundary[80];
};

/* check_report - assert everything every report must satisfy and split it:
 * CRLF only, 7-bit, no NUL, lines <= 998, required headers once each, the
 * boundary only on its four delimiter lines, three parts of the right types,
 * n_rcpts blocks in the delivery-status part */
static struct report check_report(const struct buf *b, size_t n_rcpts)
{
    struct report r;
    memset(&r, 0, sizeof r);
    const char *d = b->data;
    size_t n = b->len;

    /* bytes and lines */
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        ck_assert_msg(c != 0, "NUL at %zu", i);
        ck_assert_msg(c < 0x80, "8-bit byte at %zu", i);
        if (c == '\r') {
            ck_assert_msg(i + 1 < n && d[i + 1] == '\n', "bare CR at %zu", i);
            continue;
        }
        if (c == '\n') {
            ck_assert_msg(i > 0 && d[i - 1] == '\r', "bare LF at %zu", i);
            col = 0;
            continue;
        }
        col++;
        ck_assert_msg(col <= 998, "line longer than 998 at %zu", i);
    }
    ck_assert_msg(n >= 2 && d[n - 2] == '\r' && d[n - 1] == '\n', "does not end in CRLF");

    /* top-level headers */
    const char *sep = find(d, n, "\r\n\r\n");
    ck_assert_ptr_nonnull(sep);
    r.hdr = d;
    r.hdr_len = (size_t)(sep - d) + 2;
    static const char *const once[] = {"From: ", "To: ", "Subject: ", "Date: ", "Message-ID: <",
                                       "Auto-Submitted: auto-replied\r", "MIME-Version: 1.0\r",
                                       "Content-Type: multipart/report; report-type=delivery-status;"};
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++)
        ck_assert_msg(count_lines(r.hdr, r.hdr_len, once[i]) == 1, "header %s not exactly once", once[i]);
    for (const char *p = r.hdr; p < r.hdr + r.hdr_len;) {   /* every line a field or a continuation */
        const char *e = find(p, r.hdr_len - (size_t)(p - r.hdr), "\r\n");
        ck_assert_ptr_nonnull(e);
        ck_assert_msg(*p == ' ' || *p == '\t' || memchr(p, ':', (size_t)(e - p)) != NULL, "bad header line");
        p = e + 2;
    }
    const char *bq = find(r.hdr, r.hdr_len, "boundary=\"");
    ck_assert_ptr_nonnull(bq);
    bq += strlen("boundary=\"");
    const char *bend = memchr(bq, '"', r.hdr_len - (size_t)(bq - r.hdr));
    ck_assert_ptr_nonnull(bend);
    size_t bl = (size_t)(bend - bq);
    ck_assert_uint_ge(bl, 1);
    ck_assert_uint_le(bl, 70);
    memcpy(r.boundary, bq, bl);
    r.boundary[bl] = '\0';

    /* the boundary: 3 delimiters, 1 close delimiter, nowhere else in the body */
    const char *body = sep + 4;
    size_t body_len = n - (size_t)(body - d);
    char delim[96], close[96];
    snprintf(delim, sizeof delim, "\r\n--%s\r\n", r.boundary);
    snprintf(close, sizeof close, "\r\n--%s--\r\n", r.boundary);
    ck_assert_uint_eq(count(body, body_len, r.boundary), 4);
    ck_assert_uint_eq(count(body, body_len, delim), 3);
    ck_assert_uint_eq(count(body, body_len, close), 1);
    ck_assert_msg(find(body, body_len, close) + strlen(close) == d + n, "close delimiter is not last");

    const char *p = find(body, body_len, delim);
    static const char *const types[3] = {"Content-Type: text/plain; charset=us-ascii\r\n",
                                         "Content-Type: message/delivery-status\r\n",
                                         "Content-Type: text/rfc822-headers\r\n"};
    for (int k = 0; k < 3; k++) {
        const char *ph = p + strlen(delim);
        const char *next = find(ph, n - (size_t)(ph - d), k < 2 ? delim : close);
        ck_assert_ptr_nonnull(next);
        const char *hsep = find(ph, (size_t)(next - ph) + 2, "\r\n\r\n");
        ck_assert_ptr_nonnull(hsep);
        r.part_hdr[k] = ph;
        r.part_hdr_len[k] = (size_t)(hsep - ph) + 2;
        ck_assert_msg(find(r.part_hdr[k], r.part_hdr_len[k], types[k]) != NULL, "part %d type", k + 1);
        ck_assert_msg(hsep + 4 <= next, "part %d: no empty line after its headers", k + 1);
        r.part[k] = hsep + 4;
        r.part_len[k] = (size_t)(next - r.part[k]);   /* the CRLF before "--" belongs to the delimiter */
        p = next;
    }

    /* delivery-status: per-message block, then one block per recipient */
    const char *ds = r.part[1];
    size_t ds_len = r.part_len[1];
    ck_assert_uint_eq(count_lines(ds, ds_len, "Reporting-MTA: dns; "), 1);
    ck_assert_uint_eq(count_lines(ds, ds_len, "Final-Recipient: rfc822;"), n_rcpts);
    ck_assert_uint_eq(count_lines(ds, ds_len, "Action: "), n_rcpts);
    ck_assert_uint_eq(count_lines(ds, ds_len, "Status: "), n_rcpts);
    ck_assert_uint_eq(count(ds, ds_len, "\r\n\r\nFinal-Recipient: rfc822;"), n_rcpts);
    ck_assert_uint_eq(count(ds, ds_len, "\r\n\r\n"), n_rcpts);
    ck_assert_msg(ds_len >= 2 && memcmp(ds + ds_len - 2, "\r\n", 2) == 0, "delivery-status does not end in CRLF");
    return r;
}

/* ---- structure ---- */

START_TEST(test_structure)
{
    struct dsn_info info = base_info();
    struct dsn_rcpt r[2] = {
        {"bob@example.net", DSN_FAILED, "5.1.1", "mx.example.net", "550 5.1.1 <bob@example.net>: user unknown",
         1700003500},
        {"carol@example.net", DSN_FAILED, "5.4.7", NULL, NULL, 0},
    };
    struct buf b = build(&info, r, 2, plain_headers, strlen(plain_headers));
    struct report rep = check_report(&b, 2);
    char v[4096];

    ck_assert(unfold(rep.hdr, rep.hdr_len, "From", v, sizeof v));
    ck_assert_str_eq(v, "Mail Delivery System <MAILER-DAEMON@mx.example.org>");
    ck_assert(unfold(rep.hdr, rep.hdr_len, "To", v, sizeof v));
    ck_assert_str_eq(v, "<alice@example.com>");
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Subject", v, sizeof v));
    ck_assert_str_eq(v, "Undelivered Mail Returned to Sender");
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Date", v, sizeof v));
    ck_assert_str_eq(v, "Tue, 14 Nov 2023 23:13:20 +0000");
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Message-ID", v, sizeof v));
    ck_assert_str_eq(v, "<" SEED ".1700003600@mx.example.org>");
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Content-Type", v, sizeof v));
    ck_assert_str_eq(v, "multipart/report; report-type=delivery-status;\tboundary=\"" CANDIDATE0 "\"");
    ck_assert_str_eq(rep.boundary, CANDIDATE0);

    /* part 1 names every recipient with its diagnostic */
    ck_assert_ptr_nonnull(find(rep.part[0], rep.part_len[0], "<bob@example.net>: delivery failed, status 5.1.1"));
    ck_assert_ptr_nonnull(find(rep.part[0], rep.part_len[0], "host mx.example.net said: 550 5.1.1"));
    ck_assert_ptr_nonnull(find(rep.part[0], rep.part_len[0], "<carol@example.net>: delivery failed, status 5.4.7"));
    ck_assert_ptr_null(find(rep.part[0], rep.part_len[0], "WARNING"));

    /* part 2: exact fields */
    static const char want[] = "Reporting-MTA: dns; mx.example.org\r\n"
                               "X-Breakwater-Queue-ID: 0123456789ABCDEF01\r\n"
                               "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                               "\r\n"
                               "Final-Recipient: rfc822; bob@example.net\r\n"
                               "Action: failed\r\n"
                               "Status: 5.1.1\r\n"
                               "Remote-MTA: dns; mx.example.net\r\n"
                               "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: user unknown\r\n"
                               "Last-Attempt-Date: Tue, 14 Nov 2023 23:11:40 +0000\r\n"
                               "\r\n"
                               "Final-Recipient: rfc822; carol@example.net\r\n"
                               "Action: failed\r\n"
                               "Status: 5.4.7\r\n";
    ck_assert_uint_eq(rep.part_len[1], strlen(want));
    ck_assert(memcmp(rep.part[1], want, strlen(want)) == 0);

    /* part 3: the original headers, unchanged */
    ck_assert_uint_eq(rep.part_len[2], strlen(plain_headers));
    ck_assert(memcmp(rep.part[2], plain_headers, strlen(plain_headers)) == 0);
    buf_free(&b);
}
END_TEST

START_TEST(test_many_rcpts)
{
    struct dsn_info info = base_info();
    enum { N = 300 };
    static struct dsn_rcpt r[N];
    static char addr[N][40];
    for (int i = 0; i < N; i++) {
        snprintf(addr[i], sizeof addr[i], "user%03d@example.net", i);
        r[i] = (struct dsn_rcpt){addr[i], DSN_FAILED, "5.1.1", "mx.example.net", "550 no", 1700003000 + i};
    }
    struct buf b = build(&info, r, N, plain_headers, strlen(plain_headers));
    struct report rep = check_report(&b, N);
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "Remote-MTA: dns; mx.example.net\r"), N);
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "Last-Attempt-Date: "), N);
    ck_assert_uint_eq(count_lines(rep.part[0], rep.part_len[0], "<user"), N);
    ck_assert_ptr_nonnull(find(rep.part[1], rep.part_len[1], "Final-Recipient: rfc822; user299@example.net\r\n"));
    buf_free(&b);
}
END_TEST

/* ---- CRLF only, whatever the input's line ends ---- */

START_TEST(test_crlf_only)
{
    struct dsn_info info = base_info();
    static const char h[] = "Received: from a\n\tby b\nSubject: bare LF\nX-CR: one\rtwo\r\nX-CRCR: x\r\r\nTo: t\n";
    struct dsn_rcpt r[1] = {{"bob@example.net", DSN_FAILED, "5.0.0", "mx\r.example.net",
                             "550-first line\r\n550-second\nline\r550 third", 0}};
    struct buf b = build(&info, r, 1, h, sizeof h - 1);
    struct report rep = check_report(&b, 1);
    static const char want_h[] = "Received: from a\r\n\tby b\r\nSubject: bare LF\r\nX-CR: one?two\r\n"
                                 "X-CRCR: x?\r\nTo: t\r\n";
    ck_assert_uint_eq(rep.part_len[2], strlen(want_h));
    ck_assert(memcmp(rep.part[2], want_h, strlen(want_h)) == 0);
    char v[1024];
    ck_assert(unfold(rep.part[1], rep.part_len[1], "Diagnostic-Code", v, sizeof v));
    ck_assert_str_eq(v, "smtp; 550-first line 550-second line 550 third");
    ck_assert(unfold(rep.part[1], rep.part_len[1], "Remote-MTA", v, sizeof v));
    ck_assert_str_eq(v, "dns; mx .example.net");
    buf_free(&b);
}
END_TEST

/* ---- hostile input cannot add headers or parts ---- */

static const struct {
    const char *what;
    const char *sender, *mta, *qid, *addr, *remote, *diag;
} inject_cases[] = {
    {"diag boundary", NULL, NULL, NULL, NULL, NULL,
     "550 no\r\n--" CANDIDATE0 "\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--" CANDIDATE0 "--\r\n"},
    {"diag subject", NULL, NULL, NULL, NULL, NULL, "550 no\r\nSubject: x"},
    {"diag blank line", NULL, NULL, NULL, NULL, NULL, "550 no\r\n\r\nSubject: x\r\n"},
    {"diag bare LF", NULL, NULL, NULL, NULL, NULL, "550 no\nSubject: x\n\n--" CANDIDATE0 "\n"},
    {"address", NULL, NULL, NULL, "bob@example.net\r\nSubject: x", NULL, NULL},
    {"remote mta", NULL, NULL, NULL, NULL, "mx.example.net\r\nSubject: x", NULL},
    {"sender", "alice@example.com>\r\nSubject: x\r\nBcc: <victim@example.com", NULL, NULL, NULL, NULL, NULL},
    {"reporting mta", NULL, "mx.example.org\r\nSubject: x", NULL, NULL, NULL, NULL},
    {"queue id", NULL, NULL, "0123\r\nSubject: x", NULL, NULL, NULL},
};

START_TEST(test_injection)
{
    struct dsn_info info = base_info();
    if (inject_cases[_i].sender)
        info.original_sender = inject_cases[_i].sender;
    if (inject_cases[_i].mta)
        info.reporting_mta = inject_cases[_i].mta;
    if (inject_cases[_i].qid)
        info.queue_id = inject_cases[_i].qid;
    struct dsn_rcpt r[2] = {
        {inject_cases[_i].addr ? inject_cases[_i].addr : "bob@example.net", DSN_FAILED, "5.1.1",
         inject_cases[_i].remote ? inject_cases[_i].remote : "mx.example.net",
         inject_cases[_i].diag ? inject_cases[_i].diag : "550 5.1.1 unknown", 1700003500},
        {"carol@example.net", DSN_FAILED, "5.1.1", NULL, "550 also unknown", 0},
    };
    struct buf b = build(&info, r, 2, plain_headers, strlen(plain_headers));
    struct report rep = check_report(&b, 2);
    ck_assert_msg(count_lines(b.data, b.len, "Subject: x") == 0, "%s: injected Subject", inject_cases[_i].what);
    ck_assert_msg(count_lines(b.data, b.len, "Bcc:") == 0, "%s: injected Bcc", inject_cases[_i].what);
    ck_assert_msg(count_lines(b.data, b.len, "Content-Type: text/html") == 0, "%s: injected part",
                  inject_cases[_i].what);
    ck_assert_msg(count_lines(b.data, b.len, "Subject:") == 2, "%s: Subject lines", inject_cases[_i].what);
    if (inject_cases[_i].diag && strstr(inject_cases[_i].diag, CANDIDATE0))   /* the boundary avoided it */
        ck_assert_str_ne(rep.boundary, CANDIDATE0);
    buf_free(&b);
}
END_TEST

START_TEST(test_boundary_collision)
{
    struct dsn_info info = base_info();
    static const char h[] = "Subject: --" CANDIDATE0 "\r\n"
                            "X-Fake: =_bw_" SEED "_\r\n";
    struct dsn_rcpt r[1] = {{"bob@example.net", DSN_FAILED, "5.1.1", NULL, "550 no", 0}};
    struct buf b = build(&info, r, 1, h, sizeof h - 1);
    struct report rep = check_report(&b, 1);
    ck_assert_str_ne(rep.boundary, CANDIDATE0);
    ck_assert_msg(strncmp(rep.boundary, "=_bw_" SEED "_", strlen("=_bw_" SEED "_")) == 0, "boundary %s",
                  rep.boundary);
    ck_assert_uint_eq(rep.part_len[2], sizeof h - 1);   /* the headers are still there, intact */
    ck_assert(memcmp(rep.part[2], h, sizeof h - 1) == 0);
    buf_free(&b);

    /* no seed: still a boundary, still avoided */
    info.boundary_seed = NULL;
    b = build(&info, r, 1, h, sizeof h - 1);
    rep = check_report(&b, 1);
    ck_assert_str_eq(rep.boundary, "=_bw_dsn_0000000000000000");
    buf_free(&b);
}
END_TEST

/* ---- folding ---- */

START_TEST(test_long_diagnostic_folded)
{
    struct dsn_info info = base_info();
    static char diag[8000], spaced[4000];
    size_t o = 0;
    o += (size_t)snprintf(spaced, sizeof spaced, "550 5.7.1");
    for (int i = 0; i < 300; i++)
        o += (size_t)snprintf(spaced + o, sizeof spaced - o, " word%03d", i);
    ck_assert_uint_lt(o, sizeof spaced);
    struct dsn_rcpt r[2] = {{"bob@example.net", DSN_FAILED, "5.7.1", "mx.example.net", spaced, 0},
                            {"carol@example.net", DSN_FAILED, "5.7.1", "mx.example.net", diag, 0}};
    snprintf(diag, sizeof diag, "550 ");
    memset(diag + 4, '%', 3000);
    diag[3004] = '\0';

    struct buf b = build(&info, r, 2, plain_headers, strlen(plain_headers));
    struct report rep = check_report(&b, 2);   /* checks <= 998 per line */

    /* the spaced one folds at blanks within 78 columns and unfolds back */
    static char v[8000];
    ck_assert(unfold(rep.part[1], rep.part_len[1], "Diagnostic-Code", v, sizeof v));
    ck_assert_uint_eq(strncmp(v, "smtp; ", 6), 0);
    ck_assert_str_eq(v + 6, spaced);
    const char *f = find(rep.part[1], rep.part_len[1], "Diagnostic-Code:");
    const char *g = find(f, rep.part_len[1] - (size_t)(f - rep.part[1]), "Final-Recipient:");
    ck_assert_uint_gt(count(f, (size_t)(g - f), "\r\n "), 20);
    for (const char *p = f; p < g;) {
        const char *e = find(p, (size_t)(g - p), "\r\n");
        ck_assert_uint_le((size_t)(e - p), 78);
        p = e + 2;
    }

    /* the unbreakable word is cut, every % kept */
    const char *f2 = find(g, rep.part_len[1] - (size_t)(g - rep.part[1]), "Diagnostic-Code:");
    ck_assert_ptr_nonnull(f2);
    ck_assert(unfold(f2, rep.part_len[1] - (size_t)(f2 - rep.part[1]), "Diagnostic-Code", v, sizeof v));
    ck_assert_uint_eq(count(v, strlen(v), "%"), 3000);
    ck_assert_uint_eq(strncmp(v, "smtp; 550 %%%", 13), 0);

    /* and the text part wraps it too */
    ck_assert_uint_eq(count(rep.part[0], rep.part_len[0], "%"), 3000);
    buf_free(&b);
}
END_TEST

START_TEST(test_long_header_line)
{
    struct dsn_info info = base_info();
    static char h[20000], line1[6000];
    size_t o = (size_t)snprintf(line1, sizeof line1, "X-Long:");
    for (int i = 0; i < 500; i++)
        o += (size_t)snprintf(line1 + o, sizeof line1 - o, "%sv%04d", i % 7 ? " " : "\t", i);
    size_t hl = (size_t)snprintf(h, sizeof h, "Subject: s\r\n%s\r\nX-Word: ", line1);
    memset(h + hl, 'y', 2500);
    hl += 2500;
    hl += (size_t)snprintf(h + hl, sizeof h - hl, "\r\nTo: t\r\n");

    struct dsn_rcpt r[1] = {{"bob@example.net", DSN_FAILED, "5.1.1", NULL, "550 no", 0}};
    struct buf b = build(&info, r, 1, h, hl);
    struct report rep = check_report(&b, 1);
    static char v[8000];
    ck_assert(unfold(rep.part[2], rep.part_len[2], "X-Long", v, sizeof v));
    ck_assert_str_eq(v, line1 + strlen("X-Long:") + 1);   /* folded at blanks: unfolds exactly */
    ck_assert(unfold(rep.part[2], rep.part_len[2], "X-Word", v, sizeof v));
    ck_assert_uint_eq(count(v, strlen(v), "y"), 2500);
    ck_assert_uint_eq(count_lines(rep.part[2], rep.part_len[2], "To: t\r"), 1);
    ck_assert_uint_eq(count_lines(rep.part[2], rep.part_len[2], "Subject: s\r"), 1);
    buf_free(&b);
}
END_TEST

/* ---- the original headers ---- */

START_TEST(test_headers_cut)
{
    struct dsn_info info = base_info();
    enum { LINES = 2000, LL = 100 };   /* 200,000 bytes, well over DSN_HEADERS_MAX */
    static char h[LINES * LL + 1];
    for (int i = 0; i < LINES; i++) {
        int n = snprintf(h + i * LL, LL + 1, "X-Hdr-%04d: ", i);
        memset(h + i * LL + n, 'a' + i % 26, (size_t)(LL - n - 2));
        memcpy(h + i * LL + LL - 2, "\r\n", 2);
    }
    struct dsn_rcpt r[1] = {{"bob@example.net", DSN_FAILED, "5.1.1", NULL, "550 no", 0}};
    struct buf b = build(&info, r, 1, h, (size_t)LINES * LL);
    struct report rep = check_report(&b, 1);
    ck_assert_uint_le(rep.part_len[2], DSN_HEADERS_MAX);
    ck_assert_uint_gt(rep.part_len[2], DSN_HEADERS_MAX - LL);
    ck_assert_uint_eq(rep.part_len[2] % LL, 0);   /* whole lines only */
    ck_assert(memcmp(rep.part[2], h, rep.part_len[2]) == 0);
    buf_free(&b);
}
END_TEST

START_TEST(test_headers_stop_at_empty_line)
{
    struct dsn_info info = base_info();
    static const char crlf[] = "Subject: s\r\nTo: t\r\n\r\nBody-Secret: yes\r\n";
    static const char lf[] = "Subject: s\nTo: t\n\nBody-Secret: yes\n";
    struct dsn_rcpt r[1] = {{"bob@example.net", DSN_FAILED, "5.1.1", NULL, "550 no", 0}};
    const char *const hs[2] = {crlf, lf};
    for (int k = 0; k < 2; k++) {
        struct buf b = build(&info, r, 1, hs[k], strlen(hs[k]));
        struct report rep = check_report(&b, 1);
        ck_assert_ptr_null(find(b.data, b.len, "Body-Secret"));
        ck_assert_uint_eq(rep.part_len[2], strlen("Subject: s\r\nTo: t\r\n"));
        ck_assert(memcmp(rep.part[2], "Subject: s\r\nTo: t\r\n", rep.part_len[2]) == 0);
        buf_free(&b);
    }
    /* no terminator on the last line; no headers at all */
    struct buf b = build(&info, r, 1, "Subject: s", 10);
    struct report rep = check_report(&b, 1);
    ck_assert_uint_eq(rep.part_len[2], 12);
    ck_assert(memcmp(rep.part[2], "Subject: s\r\n", 12) == 0);
    buf_free(&b);
    b = build(&info, r, 1, NULL, 0);
    rep = check_report(&b, 1);
    ck_assert_uint_eq(rep.part_len[2], 0);
    buf_free(&b);
}
END_TEST

START_TEST(test_8bit_and_nul)
{
    struct dsn_info info = base_info();
    static const char h[] = "Subject: caf\xc3\xa9\r\nX-Nul: a\0b\r\nX-Esc: \x1b[31m\x7f\r\nX-Tab:\tok\r\n";
    struct dsn_rcpt r[1] = {{"b\xc3\xb6" "b@example.net", DSN_FAILED, "5.1.1", "mx\x01.example.net",
                             "550 \xff\xfe no \x1b[0m user", 0}};
    struct buf b = build(&info, r, 1, h, sizeof h - 1);   /* includes the NUL in X-Nul */
    struct report rep = check_report(&b, 1);              /* checks 7-bit, no NUL */
    static const char want_h[] = "Subject: caf??\r\nX-Nul: a?b\r\nX-Esc: ?[31m?\r\nX-Tab:\tok\r\n";
    ck_assert_uint_eq(rep.part_len[2], strlen(want_h));
    ck_assert(memcmp(rep.part[2], want_h, strlen(want_h)) == 0);
    ck_assert_ptr_nonnull(find(rep.part[1], rep.part_len[1], "Final-Recipient: rfc822; b??b@example.net\r\n"));
    ck_assert_ptr_nonnull(find(rep.part[1], rep.part_len[1], "Diagnostic-Code: smtp; 550 ?? no ?[0m user\r\n"));
    ck_assert_ptr_nonnull(find(rep.part[1], rep.part_len[1], "Remote-MTA: dns; mx?.example.net\r\n"));
    buf_free(&b);
}
END_TEST

/* ---- delayed versus failed ---- */

START_TEST(test_delayed_subject)
{
    struct dsn_info info = base_info();
    struct dsn_rcpt r[2] = {{"bob@example.net", DSN_DELAYED, "4.4.1", NULL, "connect timed out", 0},
                            {"carol@example.net", DSN_DELAYED, "4.7.0", "mx.example.net", "421 try later", 0}};
    char v[256];

    struct buf b = build(&info, r, 2, plain_headers, strlen(plain_headers));
    struct report rep = check_report(&b, 2);
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Subject", v, sizeof v));
    ck_assert_str_eq(v, "Delayed Mail (still being retried)");
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "Action: delayed\r"), 2);
    ck_assert_ptr_nonnull(find(rep.part[0], rep.part_len[0], "THIS IS A WARNING ONLY"));
    ck_assert_ptr_nonnull(find(rep.part[1], rep.part_len[1], "Diagnostic-Code: X-Breakwater; connect timed out\r\n"));
    ck_assert_ptr_nonnull(find(rep.part[1], rep.part_len[1], "Diagnostic-Code: smtp; 421 try later\r\n"));
    buf_free(&b);

    r[1].action = DSN_FAILED;   /* mixed: it is a bounce */
    b = build(&info, r, 2, plain_headers, strlen(plain_headers));
    rep = check_report(&b, 2);
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Subject", v, sizeof v));
    ck_assert_str_eq(v, "Undelivered Mail Returned to Sender");
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "Action: delayed\r"), 1);
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "Action: failed\r"), 1);
    ck_assert_ptr_null(find(rep.part[0], rep.part_len[0], "THIS IS A WARNING ONLY"));
    ck_assert_ptr_nonnull(find(rep.part[0], rep.part_len[0], "<bob@example.net>: delivery delayed, status 4.4.1"));
    ck_assert_ptr_nonnull(find(rep.part[0], rep.part_len[0], "<carol@example.net>: delivery failed, status 4.7.0"));
    buf_free(&b);
}
END_TEST

/* ---- codes and dates ---- */

static const struct {
    const char *status;
    enum dsn_action action;
    const char *want;
} status_cases[] = {
    {"5.1.1", DSN_FAILED, "5.1.1"},   {"4.7.1", DSN_DELAYED, "4.7.1"}, {"5.123.456", DSN_FAILED, "5.123.456"},
    {"4.4.7", DSN_FAILED, "4.4.7"},   {NULL, DSN_FAILED, "5.0.0"},     {NULL, DSN_DELAYED, "4.0.0"},
    {"", DSN_FAILED, "5.0.0"},        {"5.1", DSN_FAILED, "5.0.0"},    {"9.1.1", DSN_FAILED, "5.0.0"},
    {"5.1.1x", DSN_FAILED, "5.0.0"},  {"5.1.1\r\nX: y", DSN_DELAYED, "4.0.0"},
    {"5.1234.1", DSN_FAILED, "5.0.0"}, {"5..1", DSN_FAILED, "5.0.0"},
};

START_TEST(test_status)
{
    struct dsn_info info = base_info();
    struct dsn_rcpt r[1] = {{"bob@example.net", status_cases[_i].action, status_cases[_i].status, NULL, NULL, 0}};
    struct buf b = build(&info, r, 1, NULL, 0);
    struct report rep = check_report(&b, 1);
    char want[64];
    snprintf(want, sizeof want, "\r\nStatus: %s\r\n", status_cases[_i].want);
    ck_assert_msg(find(rep.part[1], rep.part_len[1], want) != NULL, "status %s: want %s",
                  status_cases[_i].status ? status_cases[_i].status : "(null)", status_cases[_i].want);
    buf_free(&b);
}
END_TEST

START_TEST(test_dates)
{
    struct dsn_info info = base_info();
    info.now = 951782400;   /* leap day */
    info.arrival = 0;       /* unknown: no Arrival-Date */
    struct dsn_rcpt r[1] = {{"bob@example.net", DSN_FAILED, "5.1.1", NULL, NULL, 253402300799}};
    struct buf b = build(&info, r, 1, NULL, 0);
    struct report rep = check_report(&b, 1);
    char v[128];
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Date", v, sizeof v));
    ck_assert_str_eq(v, "Tue, 29 Feb 2000 00:00:00 +0000");
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "Arrival-Date:"), 0);
    ck_assert(unfold(rep.part[1], rep.part_len[1], "Last-Attempt-Date", v, sizeof v));
    ck_assert_str_eq(v, "Fri, 31 Dec 9999 23:59:59 +0000");
    buf_free(&b);

    info.now = 0;
    r[0].last_attempt = INT64_MAX;   /* out of range: falls back, no overflow */
    b = build(&info, r, 1, NULL, 0);
    rep = check_report(&b, 1);
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Date", v, sizeof v));
    ck_assert_str_eq(v, "Thu, 01 Jan 1970 00:00:00 +0000");
    buf_free(&b);
}
END_TEST

/* ---- odd but possible arguments ---- */

START_TEST(test_ids_and_nulls)
{
    struct dsn_info info = base_info();
    info.boundary_seed = "";   /* Message-ID falls back to the queue id */
    info.original_sender = "";
    info.reporting_mta = "..Mx..Example..Org.";
    struct dsn_rcpt r[1] = {{NULL, DSN_FAILED, NULL, "", "", 0}};
    struct buf b = build(&info, r, 1, NULL, 0);
    struct report rep = check_report(&b, 1);
    char v[256];
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Message-ID", v, sizeof v));
    ck_assert_str_eq(v, "<0123456789ABCDEF01.1700003600@Mx.Example.Org>");
    ck_assert(unfold(rep.hdr, rep.hdr_len, "To", v, sizeof v));
    ck_assert_str_eq(v, "undisclosed-recipients:;");
    ck_assert(unfold(rep.hdr, rep.hdr_len, "From", v, sizeof v));
    ck_assert_str_eq(v, "Mail Delivery System <MAILER-DAEMON@Mx.Example.Org>");
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "Remote-MTA:"), 0);
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "Diagnostic-Code:"), 0);
    buf_free(&b);

    info.reporting_mta = NULL;
    info.queue_id = NULL;
    info.boundary_seed = NULL;
    b = build(&info, r, 1, NULL, 0);
    rep = check_report(&b, 1);
    ck_assert(unfold(rep.hdr, rep.hdr_len, "Message-ID", v, sizeof v));
    ck_assert_str_eq(v, "<dsn.1700003600@localhost>");
    ck_assert_uint_eq(count_lines(rep.part[1], rep.part_len[1], "X-Breakwater-Queue-ID:"), 0);
    buf_free(&b);
}
END_TEST

/* ---- the buffer limit ---- */

START_TEST(test_small_max)
{
    struct dsn_info info = base_info();
    struct dsn_rcpt r[2] = {{"bob@example.net", DSN_FAILED, "5.1.1", "mx.example.net", "550 5.1.1 unknown", 1},
                            {"carol@example.net", DSN_DELAYED, "4.4.1", NULL, "timed out", 0}};
    struct buf full = build(&info, r, 2, plain_headers, strlen(plain_headers));
    size_t len = full.len;

    const size_t tries[] = {0, 1, 50, 300, len / 2, len - 100, len - 1};
    for (size_t t = 0; t < sizeof tries / sizeof tries[0]; t++) {
        struct buf b;
        buf_init(&b, 3 + tries[t]);
        ck_assert(buf_puts(&b, "abc"));
        errno = 0;
        ck_assert_msg(!dsn_build(&info, r, 2, plain_headers, strlen(plain_headers), &b), "max %zu", tries[t]);
        ck_assert_int_eq(errno, EMSGSIZE);
        ck_assert_uint_eq(b.len, 3);   /* left as it was */
        ck_assert_str_eq(b.data, "abc");
        buf_free(&b);
    }

    /* exactly enough room, after what the buffer already held */
    struct buf b;
    buf_init(&b, 3 + len);
    ck_assert(buf_puts(&b, "abc"));
    ck_assert(dsn_build(&info, r, 2, plain_headers, strlen(plain_headers), &b));
    ck_assert_uint_eq(b.len, 3 + len);
    ck_assert(memcmp(b.data, "abc", 3) == 0);
    ck_assert(memcmp(b.data + 3, full.data, len) == 0);
    buf_free(&b);
    buf_free(&full);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dsn");
    TCase *tc = tcase_create("build");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_structure);
    tcase_add_test(tc, test_many_rcpts);
    tcase_add_test(tc, test_crlf_only);
    tcase_add_loop_test(tc, test_injection, 0, sizeof inject_cases / sizeof inject_cases[0]);
    tcase_add_test(tc, test_boundary_collision);
    tcase_add_test(tc, test_long_diagnostic_folded);
    tcase_add_test(tc, test_long_header_line);
    tcase_add_test(tc, test_headers_cut);
    tcase_add_test(tc, test_headers_stop_at_empty_line);
    tcase_add_test(tc, test_8bit_and_nul);
    tcase_add_test(tc, test_delayed_subject);
    tcase_add_loop_test(tc, test_status, 0, sizeof status_cases / sizeof status_cases[0]);
    tcase_add_test(tc, test_dates);
    tcase_add_test(tc, test_ids_and_nulls);
    tcase_add_test(tc, test_small_max);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
