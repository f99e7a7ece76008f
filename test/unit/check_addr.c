/* check_addr.c - unit tests of lib/addr (RFC 5321 paths, RFC 6531 UTF-8)
 * and lib/inet (endpoints, CIDR networks, matching, printing).
 *
 * Both are pure parsers: the tests are case tables run with
 * tcase_add_loop_test, one check per row, "got ..., want ..." messages. */
#include "addr.h"
#include "inet.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

/* ---- helpers ---- */

/* str_of - malloc'd prefix + n copies of c + suffix */
static char *str_of(const char *prefix, char c, size_t n, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *s = malloc(pl + n + sl + 1);
    ck_assert_ptr_nonnull(s);
    memcpy(s, prefix, pl);
    memset(s + pl, c, n);
    memcpy(s + pl + n, suffix, sl + 1);
    return s;
}

/* domain_of_len - malloc'd valid domain of exactly n octets (n >= 1):
 * labels of at most 62 letters separated by dots */
static char *domain_of_len(size_t n)
{
    char *d = malloc(n + 1);
    ck_assert_ptr_nonnull(d);
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        if (label == 60 && i + 2 < n) {
            d[i] = '.';
            label = 0;
        } else {
            d[i] = (char)('a' + label % 26);
            label++;
        }
    }
    d[n] = '\0';
    ck_assert_uint_le(label, 63);
    ck_assert(addr_domain_valid(d, n > ADDR_DOMAIN_MAX ? ADDR_DOMAIN_MAX - 1 : n, false));
    return d;
}

static const char *status_name(enum addr_status st)
{
    static const char *const names[] = {"ADDR_OK",      "ADDR_ERR_SYNTAX", "ADDR_ERR_LOCAL", "ADDR_ERR_DOMAIN",
                                        "ADDR_ERR_TOO_LONG", "ADDR_ERR_NULL", "ADDR_ERR_UTF8"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

#define ANY_ERROR (-1) /* expected status: any refusal */

/* esc - printable copy of s for messages: bytes outside 0x20..0x7e as \xHH */
static const char *esc(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    for (; *s && o + 5 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f)
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
    }
    buf[o] = '\0';
    return buf;
}

/* check_path - parse s and compare with the expected status and mailbox;
 * on ADDR_OK also check that *end points just past the '>' at s[close] */
static void check_path(const char *s, unsigned flags, int want, const char *want_box, size_t close)
{
    char out[ADDR_MAX + 1], e1[1024], e2[1024];
    const char *end = NULL;
    enum addr_status st = addr_parse_path(s, flags, out, &end);
    if (want == ANY_ERROR) {
        ck_assert_msg(st != ADDR_OK, "addr_parse_path(\"%s\", %#x): got ADDR_OK (\"%s\"), want an error",
                      esc(s, e1, sizeof e1), flags, esc(out, e2, sizeof e2));
        return;
    }
    ck_assert_msg((int)st == want, "addr_parse_path(\"%s\", %#x): got %s, want %s", esc(s, e1, sizeof e1), flags,
                  status_name(st), status_name((enum addr_status)want));
    if (st != ADDR_OK)
        return;
    if (want_box)
        ck_assert_msg(strcmp(out, want_box) == 0, "addr_parse_path(\"%s\"): got mailbox \"%s\", want \"%s\"",
                      esc(s, e1, sizeof e1), esc(out, e2, sizeof e2), want_box);
    ck_assert_msg(end == s + close + 1, "addr_parse_path(\"%s\"): end at offset %td, want %zu",
                  esc(s, e1, sizeof e1), end ? end - s : -1, close + 1);
}

/* ---- addr: path tables ---- */

struct path_case {
    const char *s;
    unsigned flags;
    int want;             /* enum addr_status, or ANY_ERROR */
    const char *mailbox;  /* expected out on ADDR_OK (NULL: same as between the brackets) */
};

#define N ADDR_ALLOW_NULL
#define P ADDR_ALLOW_POSTMASTER
#define U ADDR_ALLOW_UTF8

static const struct path_case path_cases[] = {
    /* null path */
    {"<>", N, ADDR_OK, ""},
    {"<>", N | P | U, ADDR_OK, ""},
    {"<>", 0, ADDR_ERR_NULL, NULL},
    {"<>", P | U, ADDR_ERR_NULL, NULL},
    /* simple */
    {"<user@example.com>", 0, ADDR_OK, NULL},
    {"<user@example.com>", N | P | U, ADDR_OK, NULL},
    {"<User.Name+tag@Sub.Example.COM>", 0, ADDR_OK, NULL},
    {"<a@b>", 0, ADDR_OK, NULL},
    {"<a@x.y>", 0, ADDR_OK, NULL},
    {"<!#$%&'*+-/=?^_`{|}~@example.com>", 0, ADDR_OK, NULL},
    {"<a.b.c@example.com>", 0, ADDR_OK, NULL},
    {"<1234@123.example>", 0, ADDR_OK, NULL},
    /* hyphens in labels */
    {"<a@b-c.example>", 0, ADDR_OK, NULL},
    {"<a@b--c.example>", 0, ADDR_OK, NULL},
    {"<a@1-2.example-x.com>", 0, ADDR_OK, NULL},
    {"<a@-example.com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@example-.com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@example.com->", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@example.-com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@->", 0, ADDR_ERR_DOMAIN, NULL},
    /* dots */
    {"<a..b@example.com>", 0, ADDR_ERR_LOCAL, NULL},
    {"<.a@example.com>", 0, ADDR_ERR_LOCAL, NULL},
    {"<a.@example.com>", 0, ADDR_ERR_LOCAL, NULL},
    {"<a@example..com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@.example.com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@example.com.>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@.>", 0, ADDR_ERR_DOMAIN, NULL},
    /* other bad domains */
    {"<user>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<user@>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@exa_mple.com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@exa mple.com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@example.com >", 0, ADDR_ERR_DOMAIN, NULL},
    {"<a@b@example.com>", 0, ADDR_ERR_DOMAIN, NULL},
    /* quoted local parts */
    {"<\"john doe\"@example.com>", 0, ADDR_OK, NULL},
    {"<\"a\\\"b\"@example.com>", 0, ADDR_OK, NULL},        /* escaped quote */
    {"<\"a\\\\b\"@example.com>", 0, ADDR_OK, NULL},        /* escaped backslash */
    {"<\"a>b\"@example.com>", 0, ADDR_OK, NULL},           /* '>' inside quotes */
    {"<\"a@b\"@example.com>", 0, ADDR_OK, NULL},
    {"<\"\"@example.com>", 0, ADDR_OK, NULL},
    {"<\"a b\\ c\"@example.com>", 0, ADDR_OK, NULL},
    {"<\"unterminated@example.com>", 0, ADDR_ERR_SYNTAX, NULL},
    {"<\"a\x01z\"@example.com>", 0, ADDR_ERR_LOCAL, NULL}, /* control byte */
    {"<\"a\tb\"@example.com>", 0, ADDR_ERR_LOCAL, NULL},
    {"<\"a\\\x01\"@example.com>", 0, ADDR_ERR_LOCAL, NULL}, /* quoted-pair of a control byte */
    {"<\"ab\"c@example.com>", 0, ADDR_ERR_LOCAL, NULL},
    {"<a\"b\"@example.com>", 0, ANY_ERROR, NULL},
    {"<a b@example.com>", 0, ADDR_ERR_LOCAL, NULL},
    {"<a(b)@example.com>", 0, ADDR_ERR_LOCAL, NULL},
    {"<@example.com>", 0, ANY_ERROR, NULL},
    /* source routes are accepted and dropped */
    {"<@relay.example:user@example.com>", 0, ADDR_OK, "user@example.com"},
    {"<@a.example,@b.example:user@example.com>", 0, ADDR_OK, "user@example.com"},
    {"<@a.example,@b.example,@c.example:\"q u\"@example.com>", 0, ADDR_OK, "\"q u\"@example.com"},
    {"<@bad_domain:user@example.com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<@:user@example.com>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<@a.example,b.example:user@example.com>", 0, ADDR_ERR_SYNTAX, NULL},
    {"<@a.example user@example.com>", 0, ANY_ERROR, NULL},
    {"<@a.example:>", 0, ANY_ERROR, NULL},
    /* address literals */
    {"<user@[1.2.3.4]>", 0, ADDR_OK, NULL},
    {"<user@[IPv6:::1]>", 0, ADDR_OK, NULL},
    {"<user@[IPv6:2001:db8::1]>", 0, ADDR_OK, NULL},
    {"<user@[IPv6:::ffff:1.2.3.4]>", 0, ADDR_OK, NULL},
    {"<user@[300.1.1.1]>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<user@[1.2.3]>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<user@[IPv6:1.2.3.4]>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<user@[::1]>", 0, ADDR_ERR_DOMAIN, NULL},            /* IPv6 needs the tag */
    {"<user@[IPv6:::1>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<user@[]>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<user@[1.2.3.4].example>", 0, ADDR_ERR_DOMAIN, NULL},
    /* postmaster */
    {"<postmaster>", P, ADDR_OK, "postmaster"},
    {"<Postmaster>", P, ADDR_OK, "Postmaster"},
    {"<POSTMASTER>", P | N | U, ADDR_OK, "POSTMASTER"},
    {"<postmaster>", 0, ADDR_ERR_DOMAIN, NULL},
    {"<postmaster>", N | U, ADDR_ERR_DOMAIN, NULL},
    {"<postmasters>", P, ADDR_ERR_DOMAIN, NULL},
    {"<postmaster@example.com>", 0, ADDR_OK, NULL},
    /* missing brackets */
    {"", 0, ADDR_ERR_SYNTAX, NULL},
    {"user@example.com", 0, ADDR_ERR_SYNTAX, NULL},
    {" <user@example.com>", 0, ADDR_ERR_SYNTAX, NULL},
    {"<user@example.com", 0, ADDR_ERR_SYNTAX, NULL},
    {"<user@example.com\r\n", 0, ADDR_ERR_SYNTAX, NULL},
    {"<", N, ADDR_ERR_SYNTAX, NULL},
    {"<\"a>\"", 0, ADDR_ERR_SYNTAX, NULL},
    /* UTF-8 (RFC 6531) */
    {"<j\xc3\xb6hn@example.com>", U, ADDR_OK, NULL},
    {"<user@ex\xc3\xa4mple.com>", U, ADDR_OK, NULL},
    {"<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>", U, ADDR_OK, NULL},
    {"<\"j\xc3\xb6 hn\"@example.com>", U, ADDR_OK, NULL},
    {"<\xf0\x9f\x93\xa7@example.com>", U, ADDR_OK, NULL},
    {"<j\xc3\xb6hn@example.com>", 0, ADDR_ERR_UTF8, NULL},
    {"<j\xc3\xb6hn@example.com>", N | P, ADDR_ERR_UTF8, NULL},
    {"<\"j\xc3\xb6hn\"@example.com>", 0, ADDR_ERR_UTF8, NULL},
    {"<user@ex\xc3\xa4mple.com>", 0, ADDR_ERR_UTF8, NULL},
    {"<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>", 0, ADDR_ERR_UTF8, NULL},
    /* ... and only well-formed UTF-8 (RFC 6532 UTF8-non-ascii) */
    {"<\xff\xfe@example.com>", U, ANY_ERROR, NULL},
    {"<a\xc3@example.com>", U, ANY_ERROR, NULL},           /* truncated sequence */
    {"<a\xc0\xaf@example.com>", U, ANY_ERROR, NULL},       /* overlong */
    {"<a\xed\xa0\x80@example.com>", U, ANY_ERROR, NULL},   /* UTF-16 surrogate */
    {"<user@ex\x80mple.com>", U, ANY_ERROR, NULL},         /* lone continuation byte */
};

START_TEST(test_path_table)
{
    const struct path_case *c = &path_cases[_i];
    const char *close = strrchr(c->s, '>');
    char box[ADDR_MAX + 1] = "";
    const char *want_box = c->mailbox;
    if (want_box == NULL && close != NULL && c->want == ADDR_OK) {
        size_t n = (size_t)(close - c->s) - 1;
        ck_assert_uint_le(n, ADDR_MAX);
        memcpy(box, c->s + 1, n);
        box[n] = '\0';
        want_box = box;
    }
    check_path(c->s, c->flags, c->want, want_box, close ? (size_t)(close - c->s) : 0);
}
END_TEST

/* test_path_end - *end points past '>' and parameters follow */
START_TEST(test_path_end)
{
    const char *s = "<user@example.com> SIZE=100 BODY=8BITMIME";
    char out[ADDR_MAX + 1];
    const char *end = NULL;
    ck_assert_int_eq(addr_parse_path(s, 0, out, &end), ADDR_OK);
    ck_assert_str_eq(out, "user@example.com");
    ck_assert_str_eq(end, " SIZE=100 BODY=8BITMIME");
    ck_assert_int_eq(addr_parse_path("<> SIZE=1", N, out, &end), ADDR_OK);
    ck_assert_str_eq(out, "");
    ck_assert_str_eq(end, " SIZE=1");
    s = "<\"a>b\"@example.com>X";
    ck_assert_int_eq(addr_parse_path(s, 0, out, &end), ADDR_OK);
    ck_assert_str_eq(end, "X");
}
END_TEST

/* test_local_limit - 64 octets of local part fit, 65 do not */
START_TEST(test_local_limit)
{
    char *ok = str_of("<", 'l', ADDR_LOCAL_MAX, "@example.com>");
    char *bad = str_of("<", 'l', ADDR_LOCAL_MAX + 1, "@example.com>");
    check_path(ok, 0, ADDR_OK, NULL, strlen(ok) - 1);
    check_path(bad, 0, ADDR_ERR_TOO_LONG, NULL, 0);
    free(ok);
    free(bad);
    /* quoted: the quotes count (the local part as written) */
    ok = str_of("<\"", 'q', ADDR_LOCAL_MAX - 2, "\"@example.com>");
    bad = str_of("<\"", 'q', ADDR_LOCAL_MAX - 1, "\"@example.com>");
    check_path(ok, 0, ADDR_OK, NULL, strlen(ok) - 1);
    check_path(bad, 0, ADDR_ERR_TOO_LONG, NULL, 0);
    free(ok);
    free(bad);
}
END_TEST

/* test_domain_limit - 255 octets of domain, 63 octets per label */
START_TEST(test_domain_limit)
{
    char *d255 = domain_of_len(ADDR_DOMAIN_MAX), *d256 = domain_of_len(ADDR_DOMAIN_MAX + 1);
    ck_assert(addr_domain_valid(d255, strlen(d255), false));
    ck_assert(!addr_domain_valid(d256, strlen(d256), false));
    ck_assert(!addr_domain_valid(d256, strlen(d256), true));
    free(d255);
    free(d256);

    char *l63 = str_of("", 'x', 63, ".example"), *l64 = str_of("", 'x', 64, ".example");
    ck_assert(addr_domain_valid(l63, strlen(l63), false));
    ck_assert(!addr_domain_valid(l64, strlen(l64), false));
    char *p63 = str_of("<u@", 'x', 63, ".example>"), *p64 = str_of("<u@", 'x', 64, ".example>");
    check_path(p63, 0, ADDR_OK, NULL, strlen(p63) - 1);
    check_path(p64, 0, ADDR_ERR_DOMAIN, NULL, 0);
    free(l63);
    free(l64);
    free(p63);
    free(p64);

    ck_assert(addr_domain_valid("example.com", 11, false));
    ck_assert(addr_domain_valid("example.com.junk", 11, false)); /* only n bytes are looked at */
    ck_assert(!addr_domain_valid("", 0, false));
    ck_assert(addr_domain_valid("[1.2.3.4]", 9, false));
    ck_assert(addr_domain_valid("[IPv6:::1]", 10, false));
    ck_assert(!addr_domain_valid("[1.2.3.4", 8, false));
    ck_assert(!addr_domain_valid("[]", 2, false));
    ck_assert(!addr_domain_valid("ex\xc3\xa4mple.com", 12, false));
    ck_assert(addr_domain_valid("ex\xc3\xa4mple.com", 12, true));
}
END_TEST

/* test_path_limit - the whole path, brackets included, is at most 256 octets */
START_TEST(test_path_limit)
{
    /* "<a@" + domain + ">" = 4 + domain octets */
    char *d252 = domain_of_len(ADDR_PATH_MAX - 4), *d253 = domain_of_len(ADDR_PATH_MAX - 3);
    char p256[ADDR_PATH_MAX + 8], p257[ADDR_PATH_MAX + 8];
    snprintf(p256, sizeof p256, "<a@%s>", d252);
    snprintf(p257, sizeof p257, "<a@%s>", d253);
    ck_assert_uint_eq(strlen(p256), ADDR_PATH_MAX);
    ck_assert_uint_eq(strlen(p257), ADDR_PATH_MAX + 1);
    check_path(p256, 0, ADDR_OK, NULL, ADDR_PATH_MAX - 1);
    check_path(p257, 0, ADDR_ERR_TOO_LONG, NULL, 0);
    free(d252);
    free(d253);

    /* a source route counts too, though it is dropped */
    char *route = domain_of_len(240); /* "<@" 240 ":user@example.com>" = 260 */
    char buf[512];
    snprintf(buf, sizeof buf, "<@%s:user@%s>", route, "example.com");
    check_path(buf, 0, ADDR_ERR_TOO_LONG, NULL, 0);
    free(route);

    /* very long input without '>' is a syntax error, not an overrun */
    char *huge = str_of("<", 'a', 100000, "");
    check_path(huge, 0, ADDR_ERR_SYNTAX, NULL, 0);
    free(huge);
    huge = str_of("<", 'a', 100000, "@example.com>");
    check_path(huge, 0, ADDR_ERR_TOO_LONG, NULL, 0);
    free(huge);
}
END_TEST

/* test_addr_domain - the domain of a parsed mailbox */
START_TEST(test_addr_domain)
{
    ck_assert_str_eq(addr_domain("user@example.com"), "example.com");
    ck_assert_str_eq(addr_domain("\"a@b\"@example.com"), "example.com");
    ck_assert_str_eq(addr_domain("user@[IPv6:::1]"), "[IPv6:::1]");
    ck_assert_str_eq(addr_domain("postmaster"), "");
    ck_assert_str_eq(addr_domain(""), "");

    /* and on what addr_parse_path produced */
    char out[ADDR_MAX + 1];
    const char *end;
    ck_assert_int_eq(addr_parse_path("<@r.example:\"x@y\"@Dest.Example>", 0, out, &end), ADDR_OK);
    ck_assert_str_eq(addr_domain(out), "Dest.Example");
    ck_assert_int_eq(addr_parse_path("<postmaster>", P, out, &end), ADDR_OK);
    ck_assert_str_eq(addr_domain(out), "");
    ck_assert_int_eq(addr_parse_path("<>", N, out, &end), ADDR_OK);
    ck_assert_str_eq(addr_domain(out), "");
}
END_TEST

/* test_status_text - every status has its own short text */
START_TEST(test_status_text)
{
    const char *seen[ADDR_ERR_UTF8 + 1];
    for (int st = ADDR_OK; st <= ADDR_ERR_UTF8; st++) {
        seen[st] = addr_status_text((enum addr_status)st);
        ck_assert_ptr_nonnull(seen[st]);
        ck_assert_uint_gt(strlen(seen[st]), 0);
        for (int j = 0; j < st; j++)
            ck_assert_str_ne(seen[j], seen[st]);
    }
    ck_assert_str_eq(addr_status_text(ADDR_OK), "ok");
}
END_TEST

/* ---- inet: endpoints ---- */

struct ep_case {
    const char *s;
    int default_port;
    bool ok;
    int family;
    const char *printed; /* inet_endpoint_str on success */
};

static const struct ep_case ep_cases[] = {
    {"1.2.3.4:25", 0, true, AF_INET, "1.2.3.4:25"},
    {"127.0.0.1:8025", 0, true, AF_INET, "127.0.0.1:8025"},
    {"0.0.0.0:25", 0, true, AF_INET, "0.0.0.0:25"},
    {"*:2525", 0, true, AF_INET, "0.0.0.0:2525"},
    {"[::1]:25", 0, true, AF_INET6, "[::1]:25"},
    {"[2001:db8::1]:65535", 0, true, AF_INET6, "[2001:db8::1]:65535"},
    {"[::ffff:1.2.3.4]:1", 0, true, AF_INET6, "[::ffff:1.2.3.4]:1"},
    {"1.2.3.4", 53, true, AF_INET, "1.2.3.4:53"},
    {"1.2.3.4:5353", 53, true, AF_INET, "1.2.3.4:5353"},
    {"[::1]", 53, true, AF_INET6, "[::1]:53"},
    {"1.2.3.4", 0, false, 0, NULL},
    {"[::1]", 0, false, 0, NULL},
    {"[::1", 0, false, 0, NULL},
    {"[::1", 53, false, 0, NULL},
    {"300.1.1.1:25", 0, false, 0, NULL},
    {"1.2.3:25", 0, false, 0, NULL},
    {"1.2.3.4:0", 0, false, 0, NULL},
    {"1.2.3.4:65536", 0, false, 0, NULL},
    {"1.2.3.4:", 0, false, 0, NULL},
    {"1.2.3.4:+25", 0, false, 0, NULL},
    {"1.2.3.4:-25", 0, false, 0, NULL},
    {"1.2.3.4: 25", 0, false, 0, NULL},
    {"1.2.3.4:25x", 0, false, 0, NULL},
    {"::1:25", 0, false, 0, NULL},
    {"[::1]x", 0, false, 0, NULL},
    {"[::1]:", 0, false, 0, NULL},
    {"[1.2.3.4]:25", 0, false, 0, NULL},
    {"[]:25", 0, false, 0, NULL},
    {":25", 0, false, 0, NULL},
    {"", 0, false, 0, NULL},
    {"", 53, false, 0, NULL},
    {"localhost:25", 0, false, 0, NULL},
    {"[::1]:99999999999999999999", 0, false, 0, NULL},
    {"[0123456789abcdef0123456789abcdef0123456789abcdef0123]:25", 0, false, 0, NULL},
};

START_TEST(test_endpoint_table)
{
    const struct ep_case *c = &ep_cases[_i];
    struct inet_endpoint ep;
    char err[256] = "";
    bool ok = inet_parse_endpoint(c->s, c->default_port, &ep, err, sizeof err);
    ck_assert_msg(ok == c->ok, "inet_parse_endpoint(\"%s\", %d): got %s (%s), want %s", c->s, c->default_port,
                  ok ? "ok" : "refused", err, c->ok ? "ok" : "refused");
    if (!ok) {
        ck_assert_msg(err[0] != '\0', "inet_parse_endpoint(\"%s\"): no reason given", c->s);
        return;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&ep.ss;
    ck_assert_int_eq(sa->sa_family, c->family);
    ck_assert_uint_eq(ep.len, c->family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    char text[INET_STR_MAX];
    ck_assert_str_eq(inet_endpoint_str(sa, text, sizeof text), c->printed);
}
END_TEST

START_TEST(test_endpoint_print)
{
    struct inet_endpoint ep;
    char err[128], text[INET_STR_MAX];
    ck_assert(inet_parse_endpoint("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", 0, &ep, err, sizeof err));
    const struct sockaddr *sa = (const struct sockaddr *)&ep.ss;
    ck_assert_str_eq(inet_endpoint_str(sa, text, sizeof text), "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    ck_assert_str_eq(inet_addr_str(sa, text, sizeof text), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    ck_assert_int_eq(inet_port(sa), 65535);
    ck_assert(inet_parse_endpoint("10.1.2.3:587", 0, &ep, err, sizeof err));
    ck_assert_str_eq(inet_addr_str(sa, text, sizeof text), "10.1.2.3");
    ck_assert_int_eq(inet_port(sa), 587);

    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    ck_assert_str_eq(inet_addr_str((struct sockaddr *)&un, text, sizeof text), "unknown");
    ck_assert_int_eq(inet_port((struct sockaddr *)&un), 0);

    char small[8];
    ck_assert(inet_parse_endpoint("[2001:db8::1]:25", 0, &ep, err, sizeof err));
    inet_endpoint_str(sa, small, sizeof small); /* cut, but terminated */
    ck_assert_uint_lt(strlen(small), sizeof small);
}
END_TEST

/* ---- inet: networks ---- */

struct net_case {
    const char *s;
    bool ok;
    int family;
    int prefix;
    const char *addr; /* the network address, host bits cleared */
};

static const struct net_case net_cases[] = {
    {"10.0.0.0/8", true, AF_INET, 8, "10.0.0.0"},
    {"10.1.2.3/8", true, AF_INET, 8, "10.0.0.0"},
    {"192.168.1.255/23", true, AF_INET, 23, "192.168.0.0"},
    {"1.2.3.4", true, AF_INET, 32, "1.2.3.4"},
    {"1.2.3.4/32", true, AF_INET, 32, "1.2.3.4"},
    {"0.0.0.0/0", true, AF_INET, 0, "0.0.0.0"},
    {"255.255.255.255/1", true, AF_INET, 1, "128.0.0.0"},
    {"[::1]/128", true, AF_INET6, 128, "::1"},
    {"::1/128", true, AF_INET6, 128, "::1"},
    {"[::1]", true, AF_INET6, 128, "::1"},
    {"::1", true, AF_INET6, 128, "::1"},
    {"2001:db8:ffff::1/32", true, AF_INET6, 32, "2001:db8::"},
    {"[2001:db8::]/33", true, AF_INET6, 33, "2001:db8::"},
    {"::/0", true, AF_INET6, 0, "::"},
    {"fe80::1/10", true, AF_INET6, 10, "fe80::"},
    {"10.0.0.0/33", false, 0, 0, NULL},
    {"::/129", false, 0, 0, NULL},
    {"10.0.0.0/", false, 0, 0, NULL},
    {"10.0.0.0/x", false, 0, 0, NULL},
    {"10.0.0.0/-1", false, 0, 0, NULL},
    {"10.0.0.0/+8", false, 0, 0, NULL},
    {"10.0.0.0/8/8", false, 0, 0, NULL},
    {"10.0.0/8", false, 0, 0, NULL},
    {"300.0.0.0/8", false, 0, 0, NULL},
    {"[::1", false, 0, 0, NULL},
    {"[::1]/", false, 0, 0, NULL},
    {"localhost", false, 0, 0, NULL},
    {"", false, 0, 0, NULL},
    {"/8", false, 0, 0, NULL},
};

START_TEST(test_net_table)
{
    const struct net_case *c = &net_cases[_i];
    struct inet_net net;
    char err[256] = "";
    bool ok = inet_parse_net(c->s, &net, err, sizeof err);
    ck_assert_msg(ok == c->ok, "inet_parse_net(\"%s\"): got %s (%s), want %s", c->s, ok ? "ok" : "refused", err,
                  c->ok ? "ok" : "refused");
    if (!ok) {
        ck_assert_msg(err[0] != '\0', "inet_parse_net(\"%s\"): no reason given", c->s);
        return;
    }
    ck_assert_int_eq(net.family, c->family);
    ck_assert_int_eq(net.prefix, c->prefix);
    char text[INET6_ADDRSTRLEN];
    ck_assert_ptr_nonnull(inet_ntop(net.family, net.addr, text, sizeof text));
    ck_assert_str_eq(text, c->addr);
}
END_TEST

/* client_sa - a sockaddr for a numeric address (v4 or v6) */
static const struct sockaddr *client_sa(const char *addr, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(12345);
    } else {
        ck_assert_msg(inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1, "bad test address %s", addr);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(12345);
    }
    return (const struct sockaddr *)ss;
}

struct match_case {
    const char *net;
    const char *client;
    bool match;
};

static const struct match_case match_cases[] = {
    {"10.0.0.0/8", "10.0.0.0", true},
    {"10.0.0.0/8", "10.255.255.255", true},
    {"10.0.0.0/8", "11.0.0.1", false},
    {"10.0.0.0/8", "9.255.255.255", false},
    {"192.168.0.0/23", "192.168.1.255", true},
    {"192.168.0.0/23", "192.168.2.0", false},
    {"1.2.3.4", "1.2.3.4", true},
    {"1.2.3.4", "1.2.3.5", false},
    {"0.0.0.0/0", "203.0.113.9", true},
    {"127.0.0.0/8", "127.0.0.1", true},
    /* v4-mapped IPv6 clients match IPv4 networks */
    {"10.0.0.0/8", "::ffff:10.1.2.3", true},
    {"10.0.0.0/8", "::ffff:11.1.2.3", false},
    {"127.0.0.0/8", "::ffff:127.0.0.1", true},
    {"0.0.0.0/0", "::ffff:1.1.1.1", true},
    {"0.0.0.0/0", "::1", false},
    {"0.0.0.0/0", "::", false},
    /* ... and so do networks written in the v4-mapped form */
    {"::ffff:10.0.0.0/104", "::ffff:10.1.2.3", true},
    {"::ffff:10.0.0.0/104", "10.1.2.3", true},
    {"::ffff:10.0.0.0/104", "11.1.2.3", false},
    /* IPv6 */
    {"[::1]/128", "::1", true},
    {"[::1]/128", "::2", false},
    {"2001:db8::/32", "2001:db8:ffff::1", true},
    {"2001:db8::/32", "2001:db9::1", false},
    {"2001:db8::/33", "2001:db8:8000::1", false},
    {"2001:db8::/33", "2001:db8:7fff::1", true},
    {"::/0", "2001:db8::1", true},
    {"::/0", "10.0.0.1", false},
    {"fe80::/10", "febf::1", true},
    {"fe80::/10", "fec0::1", false},
    /* families do not mix */
    {"10.0.0.0/8", "2001:db8::1", false},
    {"2001:db8::/32", "10.0.0.1", false},
};

START_TEST(test_match_table)
{
    const struct match_case *c = &match_cases[_i];
    struct inet_net net;
    char err[256];
    ck_assert_msg(inet_parse_net(c->net, &net, err, sizeof err), "inet_parse_net(\"%s\"): %s", c->net, err);
    struct sockaddr_storage ss;
    bool m = inet_net_match(&net, client_sa(c->client, &ss));
    ck_assert_msg(m == c->match, "inet_net_match(%s, %s): got %s, want %s", c->net, c->client, m ? "match" : "no match",
                  c->match ? "match" : "no match");
}
END_TEST

START_TEST(test_match_other_family)
{
    struct inet_net net;
    char err[128];
    ck_assert(inet_parse_net("0.0.0.0/0", &net, err, sizeof err));
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    ck_assert(!inet_net_match(&net, (const struct sockaddr *)&un));
    ck_assert(inet_parse_net("::/0", &net, err, sizeof err));
    ck_assert(!inet_net_match(&net, (const struct sockaddr *)&un));
}
END_TEST

/* ---- suites ---- */

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *addr_suite(void)
{
    Suite *s = suite_create("addr");
    TCase *tc = tcase_create("paths");
    tcase_add_loop_test(tc, test_path_table, 0, COUNT(path_cases));
    tcase_add_test(tc, test_path_end);
    tcase_add_test(tc, test_local_limit);
    tcase_add_test(tc, test_domain_limit);
    tcase_add_test(tc, test_path_limit);
    tcase_add_test(tc, test_addr_domain);
    tcase_add_test(tc, test_status_text);
    suite_add_tcase(s, tc);
    return s;
}

static Suite *inet_suite(void)
{
    Suite *s = suite_create("inet");
    TCase *tc = tcase_create("endpoints");
    tcase_add_loop_test(tc, test_endpoint_table, 0, COUNT(ep_cases));
    tcase_add_test(tc, test_endpoint_print);
    suite_add_tcase(s, tc);
    tc = tcase_create("networks");
    tcase_add_loop_test(tc, test_net_table, 0, COUNT(net_cases));
    tcase_add_loop_test(tc, test_match_table, 0, COUNT(match_cases));
    tcase_add_test(tc, test_match_other_family);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    Suite *suites[] = {addr_suite(), inet_suite()};
    return unit_run(suites, sizeof suites / sizeof suites[0]);
}
