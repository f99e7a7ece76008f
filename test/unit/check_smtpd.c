/* check_smtpd.c - unit tests of smtpd's pure parts: the command parser, MAIL
 * parameters, the DATA decoder (end detection, dot-unstuffing, bare CR/LF,
 * chunk boundaries) and the relay policy. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "command.h"
#include "config.h"
#include "data.h"
#include "policy.h"
#include "str.h"

/* ---- command_parse ---- */

static const struct {
    const char *line;
    enum smtp_verb verb;
    const char *arg;
    bool ok;
} command_cases[] = {
    {"EHLO client.example", V_EHLO, "client.example", true},
    {"ehlo   client.example  ", V_EHLO, "client.example", true},
    {"EHLO", V_EHLO, "", false},
    {"HELO x", V_HELO, "x", true},
    {"MAIL FROM:<a@b.c>", V_MAIL, "<a@b.c>", true},
    {"mail from: <a@b.c> SIZE=10", V_MAIL, "<a@b.c> SIZE=10", true},
    {"MAIL TO:<a@b.c>", V_MAIL, "", false},
    {"MAIL", V_MAIL, "", false},
    {"RCPT TO:<x@y.z>", V_RCPT, "<x@y.z>", true},
    {"RCPT FROM:<x@y.z>", V_RCPT, "", false},
    {"DATA", V_DATA, "", true},
    {"DATA now", V_DATA, "now", false},
    {"RSET", V_RSET, "", true},
    {"NOOP anything", V_NOOP, "anything", true},
    {"QUIT", V_QUIT, "", true},
    {"HELP", V_HELP, "", true},
    {"VRFY bob", V_VRFY, "bob", true},
    {"VRFY", V_VRFY, "", false},
    {"EXPN list", V_UNKNOWN, "", true},
    {"MAILX FROM:<a@b>", V_UNKNOWN, "", true},
    {"", V_UNKNOWN, "", true},
};

START_TEST(test_command_parse)
{
    char line[256];
    str_copy(line, sizeof line, command_cases[_i].line);
    struct smtp_command c;
    command_parse(line, &c);
    ck_assert_msg(c.verb == command_cases[_i].verb, "%s: got verb %s, want %s", command_cases[_i].line,
                  command_verb_name(c.verb), command_verb_name(command_cases[_i].verb));
    ck_assert_msg(c.syntax_ok == command_cases[_i].ok, "%s: syntax_ok %d", command_cases[_i].line, c.syntax_ok);
    if (c.syntax_ok && c.verb != V_UNKNOWN)
        ck_assert_str_eq(c.arg, command_cases[_i].arg);
}
END_TEST

/* ---- MAIL parameters ---- */

START_TEST(test_mail_params)
{
    char p[128], bad[64];
    struct mail_params mp;
    str_copy(p, sizeof p, " SIZE=12345 BODY=8BITMIME SMTPUTF8");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_OK);
    ck_assert_int_eq(mp.size, 12345);
    ck_assert_int_eq(mp.body, BODY_8BITMIME);
    ck_assert(mp.smtputf8);
    str_copy(p, sizeof p, "");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_OK);
    ck_assert_int_eq(mp.size, -1);
    str_copy(p, sizeof p, "SIZE=abc");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_BAD_VALUE);
    str_copy(p, sizeof p, "SIZE=-5");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_BAD_VALUE);
    str_copy(p, sizeof p, "SIZE=99999999999999999999999");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_BAD_VALUE);
    str_copy(p, sizeof p, "SIZE=1 SIZE=2");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_BAD_VALUE);
    str_copy(p, sizeof p, "BODY=BINARYMIME");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_BAD_VALUE);
    str_copy(p, sizeof p, "AUTH=<>");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_UNSUPPORTED);
    ck_assert_str_eq(bad, "AUTH=<>");
    str_copy(p, sizeof p, "SMTPUTF8=yes");
    ck_assert_int_eq(command_mail_params(p, &mp, bad, sizeof bad), PARAMS_UNSUPPORTED);
    str_copy(p, sizeof p, "NOTIFY=NEVER");
    ck_assert_int_eq(command_rcpt_params(p, bad, sizeof bad), PARAMS_UNSUPPORTED);
    str_copy(p, sizeof p, "  ");
    ck_assert_int_eq(command_rcpt_params(p, bad, sizeof bad), PARAMS_OK);
}
END_TEST

/* ---- DATA decoder ---- */

struct decoded {
    char out[4096];
    size_t outlen;
    size_t consumed;
    struct data_decoder d;
};

/* decode_in_chunks - feed in chunks of `chunk` bytes, as the network might */
static void decode_in_chunks(const char *in, size_t len, size_t chunk, struct decoded *r)
{
    data_init(&r->d);
    r->outlen = r->consumed = 0;
    while (r->consumed < len && r->d.state != DS_END) {
        size_t take = len - r->consumed < chunk ? len - r->consumed : chunk;
        size_t o;
        size_t used = data_decode(&r->d, in + r->consumed, take, r->out + r->outlen, &o);
        r->outlen += o;
        r->consumed += used;
        if (used < take)
            break;
    }
    r->out[r->outlen] = '\0';
}

static const struct {
    const char *in;
    const char *content;     /* NULL: end never reached */
    const char *rest;        /* bytes left after the end */
    bool bare_lf, bare_cr;
} data_cases[] = {
    {"hello\r\n.\r\n", "hello\r\n", "", false, false},
    {".\r\n", "", "", false, false},
    {"..dot\r\n.\r\n", ".dot\r\n", "", false, false},
    {"a\r\n..\r\n.\r\nMAIL FROM:<x>\r\n", "a\r\n.\r\n", "MAIL FROM:<x>\r\n", false, false},
    {".x\r\n.\r\n", "x\r\n", "", false, false},
    {"a\r\n.b.c\r\n.\r\n", "a\r\nb.c\r\n", "", false, false},
    {"line\nmore\r\n.\r\n", "line\nmore\r\n", "", true, false},
    {"line\rmore\r\n.\r\n", "line\rmore\r\n", "", false, true},
    /* smuggling shapes: none of these ends the data */
    {"a\n.\nMAIL FROM:<evil>\r\n", NULL, NULL, true, false},
    {"a\n.\r\nMAIL FROM:<evil>\r\n", NULL, NULL, true, false},
    {"a\r\n.\nMAIL FROM:<evil>\r\n", NULL, NULL, true, false},
    {"a\r.\r\nMAIL\r\n", NULL, NULL, false, true},
    {"a\r\n.\rx\r\n.\r\n", "a\r\n\rx\r\n", "", false, true},
    {"\xc3\xa9t\xc3\xa9\r\n.\r\n", "\xc3\xa9t\xc3\xa9\r\n", "", false, false},
    {"a\r\n.\r", NULL, NULL, false, false},
};

START_TEST(test_data_decode)
{
    const char *in = data_cases[_i].in;
    size_t len = strlen(in);
    /* Every chunking must give the same result. */
    for (size_t chunk = 1; chunk <= len; chunk++) {
        struct decoded r;
        decode_in_chunks(in, len, chunk, &r);
        if (data_cases[_i].content == NULL) {
            ck_assert_msg(r.d.state != DS_END, "case %d chunk %zu: data ended early", _i, chunk);
        } else {
            ck_assert_msg(r.d.state == DS_END, "case %d chunk %zu: end not found", _i, chunk);
            ck_assert_msg(r.outlen == strlen(data_cases[_i].content) && memcmp(r.out, data_cases[_i].content, r.outlen) == 0,
                          "case %d chunk %zu: content '%s'", _i, chunk, r.out);
            ck_assert_str_eq(in + r.consumed, data_cases[_i].rest);
            ck_assert_uint_eq(r.d.size, r.outlen);
        }
        ck_assert_msg(r.d.bare_lf == data_cases[_i].bare_lf, "case %d chunk %zu: bare_lf", _i, chunk);
        ck_assert_msg(r.d.bare_cr == data_cases[_i].bare_cr, "case %d chunk %zu: bare_cr", _i, chunk);
    }
}
END_TEST

START_TEST(test_data_8bit_flag)
{
    struct decoded r;
    decode_in_chunks("plain\r\n.\r\n", 10, 100, &r);
    ck_assert(!r.d.has_8bit);
    decode_in_chunks("caf\xc3\xa9\r\n.\r\n", 11, 100, &r);
    ck_assert(r.d.has_8bit);
}
END_TEST

/* ---- policy ---- */

START_TEST(test_policy)
{
    char err[CONFIG_ERR_MAX];
    const char *o[] = {"mynetworks = 10.0.0.0/8, [2001:db8::]/32", "relay_domains = example.org .sub.example.net"};
    struct config *cfg = config_load("/nonexistent-bw-dir", o, 2, err);
    ck_assert_msg(cfg != NULL, "%s", err);
    struct policy *p = policy_new(cfg);
    ck_assert_ptr_nonnull(p);
    struct sockaddr_in in4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.1.2.3", &in4.sin_addr);
    ck_assert(policy_client_trusted(p, (struct sockaddr *)&in4));
    inet_pton(AF_INET, "11.1.2.3", &in4.sin_addr);
    ck_assert(!policy_client_trusted(p, (struct sockaddr *)&in4));
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8::5", &in6.sin6_addr);
    ck_assert(policy_client_trusted(p, (struct sockaddr *)&in6));
    inet_pton(AF_INET6, "::ffff:10.9.9.9", &in6.sin6_addr);
    ck_assert(policy_client_trusted(p, (struct sockaddr *)&in6));
    ck_assert(policy_relay_domain(p, "example.org"));
    ck_assert(policy_relay_domain(p, "EXAMPLE.ORG"));
    ck_assert(!policy_relay_domain(p, "a.example.org"));
    ck_assert(!policy_relay_domain(p, "badexample.org"));
    ck_assert(policy_relay_domain(p, "a.sub.example.net"));
    ck_assert(!policy_relay_domain(p, "sub.example.net"));
    ck_assert(!policy_relay_domain(p, "xsub.example.net"));
    policy_free(p);
    config_free(cfg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smtpd");
    TCase *tc = tcase_create("parsers");
    tcase_add_loop_test(tc, test_command_parse, 0, sizeof command_cases / sizeof command_cases[0]);
    tcase_add_test(tc, test_mail_params);
    tcase_add_loop_test(tc, test_data_decode, 0, sizeof data_cases / sizeof data_cases[0]);
    tcase_add_test(tc, test_data_8bit_flag);
    tcase_add_test(tc, test_policy);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
