/* check_config.c - unit tests of lib/config (main.cf parsing, $name
 * expansion, typed checks, error shapes) and of the helpers it stands on,
 * lib/str (bounded strings, checked size arithmetic) and lib/buf (the
 * growable buffer with a hard maximum).
 *
 * Every main.cf is written into a fresh directory under the TCase's
 * scratch directory (unit.h), which is removed after the TCase. */
#include "buf.h"
#include "config.h"
#include "str.h"
#include "unit.h"

#include <stdint.h>
#include <wchar.h>

/* ---- helpers ---- */

/* One load: where main.cf was written and what config_load said. */
struct load {
    char dir[PATH_MAX];
    char path[PATH_MAX + 16];
    char err[CONFIG_ERR_MAX];
};

/* load_bytes - write main.cf (text NULL: no file at all) into a fresh dir and load it */
static struct config *load_bytes(struct load *ld, const void *text, size_t len, const char *const *ov, size_t nov)
{
    unit_subdir("cf", ld->dir);
    snprintf(ld->path, sizeof ld->path, "%s/main.cf", ld->dir);
    if (text != NULL)
        unit_write_file(ld->path, text, len);
    memset(ld->err, 'Z', sizeof ld->err); /* config_load must always terminate err */
    ld->err[sizeof ld->err - 1] = '\0';
    return config_load(ld->dir, ov, nov, ld->err);
}

static struct config *load_text(struct load *ld, const char *text)
{
    return load_bytes(ld, text, text ? strlen(text) : 0, NULL, 0);
}

/* must_load - load and fail the test with the error when it does not load */
static struct config *must_load(struct load *ld, const char *text, const char *const *ov, size_t nov)
{
    struct config *cfg = load_bytes(ld, text, text ? strlen(text) : 0, ov, nov);
    ck_assert_msg(cfg != NULL, "config_load failed: got \"%s\", want success; main.cf:\n%s", ld->err,
                  text ? text : "(none)");
    return cfg;
}

/* check_shape - err is exactly one line "FILE:LINE: PARAM: reason" (or
 * "FILE:LINE: reason" when param is NULL) and reason contains needle */
static void check_shape(const char *err, const char *file, int line, const char *param, const char *needle)
{
    char want[PATH_MAX + 256];
    if (param)
        snprintf(want, sizeof want, "%s:%d: %s: ", file, line, param);
    else
        snprintf(want, sizeof want, "%s:%d: ", file, line);
    size_t wl = strlen(want);
    ck_assert_msg(strncmp(err, want, wl) == 0, "got \"%s\", want it to start with \"%s\"", err, want);
    const char *reason = err + wl;
    ck_assert_msg(reason[0] != '\0' && reason[0] != ' ', "got \"%s\": empty reason", err);
    ck_assert_msg(strchr(err, '\n') == NULL, "got \"%s\": more than one line", err);
    if (needle)
        ck_assert_msg(strstr(reason, needle) != NULL, "got \"%s\", want a reason containing \"%s\"", err, needle);
}

/* expect_fail - main.cf text must be refused with the given shape */
static void expect_fail(const char *text, int line, const char *param, const char *needle)
{
    struct load ld;
    struct config *cfg = load_text(&ld, text);
    if (cfg != NULL) {
        config_free(cfg);
        ck_abort_msg("got success, want \"%s:%d: %s: ...%s...\"; main.cf:\n%s", ld.path, line,
                     param ? param : "", needle ? needle : "", text);
    }
    check_shape(ld.err, ld.path, line, param, needle);
}

/* repeat - malloc'd string: prefix, n copies of c, suffix */
static char *repeat(const char *prefix, char c, size_t n, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *s = malloc(pl + n + sl + 1);
    ck_assert_ptr_nonnull(s);
    memcpy(s, prefix, pl);
    memset(s + pl, c, n);
    memcpy(s + pl + n, suffix, sl + 1);
    return s;
}

/* ---- defaults ---- */

/* test_default_each - every declared parameter loads from its default */
START_TEST(test_default_each)
{
    const struct param_info *pi = &param_table[_i];
    struct load ld;
    struct config *cfg = must_load(&ld, NULL, NULL, 0);
    enum param_id id = (enum param_id)_i;

    ck_assert_int_eq(param_find(pi->name), _i);
    ck_assert_msg(pi->doc != NULL && pi->doc[0] != '\0', "%s: no doc line", pi->name);
    ck_assert_str_ne(param_type_name(pi->type), "?");
    ck_assert_msg(!cfg_is_set(cfg, id), "%s: set without main.cf", pi->name);
    ck_assert_ptr_nonnull(cfg_str(cfg, id));
    ck_assert_ptr_nonnull(cfg_raw(cfg, id));
    if (strchr(pi->def, '@') == NULL)
        ck_assert_str_eq(cfg_raw(cfg, id), pi->def);
    else
        ck_assert_msg(strchr(cfg_raw(cfg, id), '@') == NULL, "%s: got raw \"%s\", want @TOKEN@ filled in",
                      pi->name, cfg_raw(cfg, id));
    if (strchr(pi->def, '@') == NULL && strchr(pi->def, '$') == NULL)
        ck_assert_str_eq(cfg_str(cfg, id), pi->def);
    ck_assert_str_eq(cfg_lookup(cfg, pi->name), cfg_str(cfg, id));

    int64_t v = cfg_int(cfg, id), secs;
    bool b;
    switch (pi->type) {
    case PT_INT:
    case PT_SIZE:
        ck_assert_int_le(pi->min, pi->max);
        ck_assert_int_ge(v, pi->min);
        ck_assert_int_le(v, pi->max);
        break;
    case PT_TIME:
        ck_assert_int_le(pi->min, pi->max);
        ck_assert(parse_duration(cfg_str(cfg, id), &secs));
        ck_assert_int_eq(v, secs);
        ck_assert_int_ge(v, pi->min);
        ck_assert_int_le(v, pi->max);
        break;
    case PT_BOOL:
        ck_assert(parse_bool(cfg_str(cfg, id), &b));
        ck_assert_int_eq(v, b);
        break;
    case PT_ENUM:
        ck_assert_msg(pi->extra[0] != '\0', "%s: enum without choices", pi->name);
        ck_assert_int_ge(v, 0);
        break;
    default:
        break;
    }
    config_free(cfg);
}
END_TEST

/* test_default_values - the defaults the rest of the tree relies on */
START_TEST(test_default_values)
{
    struct load ld;
    struct config *cfg = must_load(&ld, NULL, NULL, 0);
    char host[256] = "";
    ck_assert_int_eq(gethostname(host, sizeof host - 1), 0);
    char banner[300];
    snprintf(banner, sizeof banner, "%s ESMTP Breakwater", host);

    ck_assert_str_eq(config_dir(cfg), ld.dir);
    ck_assert_str_eq(config_path(cfg), ld.path);
    ck_assert_str_eq(cfg_str(cfg, P_myhostname), host);
    ck_assert_str_eq(cfg_str(cfg, P_smtpd_banner), banner);
    ck_assert_str_eq(cfg_raw(cfg, P_smtpd_banner), "$myhostname ESMTP Breakwater");
    ck_assert_str_eq(cfg_str(cfg, P_queue_directory), "/var/spool/breakwater");
    ck_assert_str_eq(cfg_str(cfg, P_mynetworks), "127.0.0.0/8 [::1]/128");
    ck_assert_str_eq(cfg_str(cfg, P_log_file), "");
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_timeout), 300);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_data_timeout), 300);
    ck_assert_int_eq(cfg_int(cfg, P_stop_timeout), 30);
    ck_assert_int_eq(cfg_int(cfg, P_max_queue_lifetime), 5 * 86400);
    ck_assert_int_eq(cfg_int(cfg, P_message_size_limit), 20971520);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_recipient_limit), 1000);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_command_length_limit), 2048);
    ck_assert_int_eq(cfg_int(cfg, P_smtp_remote_port), 25);
    ck_assert_int_eq(cfg_int(cfg, P_spool_sync_method), 0); /* syncfs */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_processes), ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
    const char *dd = cfg_str(cfg, P_daemon_directory);
    ck_assert_msg(strlen(dd) > 11 && strcmp(dd + strlen(dd) - 11, "/breakwater") == 0,
                  "got daemon_directory \"%s\", want LIBEXECDIR/breakwater", dd);
#ifdef LIBEXECDIR
    ck_assert_str_eq(dd, LIBEXECDIR "/breakwater");
#endif
    ck_assert_ptr_null(config_warning(cfg, 0));
    ck_assert_ptr_null(cfg_lookup(cfg, "no_such_parameter"));
    config_free(cfg);
    config_free(NULL);
}
END_TEST

/* test_defaults_written_out - every default, written into main.cf, loads */
START_TEST(test_defaults_written_out)
{
    struct buf text;
    buf_init(&text, 1 << 20);
    for (int i = 0; i < P_COUNT; i++)
        if (strchr(param_table[i].def, '@') == NULL)
            ck_assert(buf_printf(&text, "%s = %s\n", param_table[i].name, param_table[i].def));
    struct load ld1, ld2;
    struct config *dflt = must_load(&ld1, NULL, NULL, 0);
    struct config *cfg = must_load(&ld2, text.data, NULL, 0);
    for (int i = 0; i < P_COUNT; i++) {
        if (strchr(param_table[i].def, '@') != NULL)
            continue;
        ck_assert_msg(cfg_is_set(cfg, (enum param_id)i), "%s not set", param_table[i].name);
        ck_assert_str_eq(cfg_str(cfg, (enum param_id)i), cfg_str(dflt, (enum param_id)i));
        ck_assert_int_eq(cfg_int(cfg, (enum param_id)i), cfg_int(dflt, (enum param_id)i));
    }
    ck_assert_ptr_null(config_warning(cfg, 0));
    config_free(cfg);
    config_free(dflt);
    buf_free(&text);
}
END_TEST

/* ---- syntax ---- */

START_TEST(test_syntax_basic)
{
    static const char text[] = "# a comment\n"
                               "   # an indented comment\n"
                               "\n"
                               "   \t \n"
                               "myhostname = mx.example.com\n"
                               "smtpd_banner   =   hello   world  \t\n"
                               "smtpd_timeout=45s\n"
                               "log_file =\n"
                               "smtpd_recipient_limit = 7\r\n"
                               "relay_domains = a.example,\n"
                               "    b.example\n"
                               "# a comment inside does not end it\n"
                               "\tc.example\n"
                               "stop_timeout = 2m";  /* no final newline */
    struct load ld;
    struct config *cfg = must_load(&ld, text, NULL, 0);
    ck_assert_str_eq(cfg_str(cfg, P_myhostname), "mx.example.com");
    ck_assert_str_eq(cfg_str(cfg, P_smtpd_banner), "hello   world");
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_timeout), 45);
    ck_assert_str_eq(cfg_str(cfg, P_smtpd_timeout), "45s");
    ck_assert_str_eq(cfg_str(cfg, P_log_file), "");
    ck_assert(cfg_is_set(cfg, P_log_file));
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_recipient_limit), 7);
    ck_assert_str_eq(cfg_str(cfg, P_relay_domains), "a.example, b.example c.example");
    ck_assert_int_eq(cfg_int(cfg, P_stop_timeout), 120);
    ck_assert(!cfg_is_set(cfg, P_queue_directory));
    ck_assert_ptr_null(config_warning(cfg, 0));
    config_free(cfg);
}
END_TEST

START_TEST(test_later_setting_wins)
{
    static const char text[] = "smtpd_timeout = 10s\n"
                               "myhostname = first.example\n"
                               "smtpd_timeout = 20s\n"
                               "myhostname = second.example\n";
    struct load ld;
    struct config *cfg = must_load(&ld, text, NULL, 0);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_timeout), 20);
    ck_assert_str_eq(cfg_raw(cfg, P_smtpd_timeout), "20s");
    ck_assert_str_eq(cfg_str(cfg, P_myhostname), "second.example");
    ck_assert_str_eq(cfg_str(cfg, P_smtpd_banner), "second.example ESMTP Breakwater");
    config_free(cfg);

    /* A bad value replaced by a later good one is no error. */
    cfg = must_load(&ld, "smtpd_timeout = 5x\nsmtpd_timeout = 5\n", NULL, 0);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_timeout), 5);
    config_free(cfg);
}
END_TEST

/* ---- expansion ---- */

START_TEST(test_expand_forms)
{
    static const char text[] = "smtpd_banner = $myhostname ${myhostname} $(myhostname) [$myhostname.x] $syslog_name\n"
                               "myhostname = mx.example.com\n"  /* after its use: expansion is lazy */
                               "smtp_routes = ${myhostname?set:$myhostname}|${log_file?never}|\n"
                               "destination_controls = ${log_file:empty}|${myhostname:never}|\n"
                               "virtual_gateways = ${log_file:${myhostname}/x}\n"
                               "virtual_gateway_classes = a$$b $${myhostname} $$$myhostname $$\n"
                               "bounce_virtual_gateway = $(log_file?x)$(myhostname?(y))\n"
                               "relay_domains = ${myhostname?${syslog_name:no}${syslog_name?yes}}\n";
    struct load ld;
    struct config *cfg = must_load(&ld, text, NULL, 0);
    ck_assert_str_eq(cfg_str(cfg, P_smtpd_banner),
                     "mx.example.com mx.example.com mx.example.com [mx.example.com.x] breakwater");
    ck_assert_str_eq(cfg_raw(cfg, P_smtpd_banner),
                     "$myhostname ${myhostname} $(myhostname) [$myhostname.x] $syslog_name");
    ck_assert_str_eq(cfg_str(cfg, P_smtp_routes), "set:mx.example.com||");
    ck_assert_str_eq(cfg_str(cfg, P_destination_controls), "empty||");
    ck_assert_str_eq(cfg_str(cfg, P_virtual_gateways), "mx.example.com/x");
    ck_assert_str_eq(cfg_str(cfg, P_virtual_gateway_classes), "a$b ${myhostname} $mx.example.com $");
    ck_assert_str_eq(cfg_str(cfg, P_bounce_virtual_gateway), "(y)");
    ck_assert_str_eq(cfg_str(cfg, P_relay_domains), "yes");
    config_free(cfg);
}
END_TEST

START_TEST(test_expand_typed)
{
    static const char text[] = "short = 2m\n"
                               "smtpd_timeout = $short\n"
                               "smtpd_data_timeout = ${stop_timeout}\n"
                               "smtpd_recipient_limit = ${smtp_remote_port}0\n"
                               "smtpd_listen = 127.0.0.1:${smtp_remote_port} [::1]:$smtp_remote_port\n";
    struct load ld;
    struct config *cfg = must_load(&ld, text, NULL, 0);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_timeout), 120);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_data_timeout), 30);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_recipient_limit), 250);
    ck_assert_str_eq(cfg_str(cfg, P_smtpd_listen), "127.0.0.1:25 [::1]:25");
    ck_assert_str_eq(cfg_lookup(cfg, "short"), "2m");
    config_free(cfg);
}
END_TEST

/* ---- overrides and warnings ---- */

START_TEST(test_overrides)
{
    static const char text[] = "smtpd_timeout = 10s\n"
                               "myhostname = file.example\n"
                               "smtpd_recipient_limit = 3\n";
    const char *const ov[] = {"myhostname=cli.example", "smtpd_recipient_limit = 5 ", "log_file=",
                              "smtpd_data_timeout=$smtpd_timeout", "stop_timeout=1m", "stop_timeout=2m"};
    struct load ld;
    struct config *cfg = must_load(&ld, text, ov, sizeof ov / sizeof ov[0]);
    ck_assert_str_eq(cfg_str(cfg, P_myhostname), "cli.example");
    ck_assert_str_eq(cfg_str(cfg, P_smtpd_banner), "cli.example ESMTP Breakwater");
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_recipient_limit), 5);
    ck_assert(cfg_is_set(cfg, P_log_file));
    ck_assert_str_eq(cfg_str(cfg, P_log_file), "");
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_data_timeout), 10);
    ck_assert_int_eq(cfg_int(cfg, P_stop_timeout), 120);
    ck_assert_ptr_null(config_warning(cfg, 0));
    config_free(cfg);

    /* Overrides work without any main.cf. */
    const char *const ov2[] = {"smtpd_timeout=7"};
    cfg = must_load(&ld, NULL, ov2, 1);
    ck_assert_int_eq(cfg_int(cfg, P_smtpd_timeout), 7);
    config_free(cfg);
}
END_TEST

START_TEST(test_override_errors)
{
    struct load ld;
    const char *const bad_value[] = {"smtpd_timeout=5x"};
    ck_assert_ptr_null(load_bytes(&ld, NULL, 0, bad_value, 1));
    ck_assert_msg(strncmp(ld.err, "command line (-o): smtpd_timeout: ", 34) == 0,
                  "got \"%s\", want \"command line (-o): smtpd_timeout: ...\"", ld.err);
    ck_assert_ptr_nonnull(strstr(ld.err, "'5x'"));

    const char *const no_eq[] = {"smtpd_timeout"};
    ck_assert_ptr_null(load_bytes(&ld, NULL, 0, no_eq, 1));
    ck_assert_str_eq(ld.err, "-o smtpd_timeout: expected name=value");

    const char *const no_name[] = {"=5"};
    ck_assert_ptr_null(load_bytes(&ld, NULL, 0, no_name, 1));
    ck_assert_str_eq(ld.err, "-o =5: expected name=value");

    const char *const bad_ref[] = {"smtpd_banner=$nosuch"};
    ck_assert_ptr_null(load_bytes(&ld, NULL, 0, bad_ref, 1));
    ck_assert_str_eq(ld.err, "command line (-o): smtpd_banner: unknown parameter $nosuch in value");

    const char *const unknown[] = {"nosuchparam=1"};
    struct config *cfg = must_load(&ld, NULL, unknown, 1);
    ck_assert_str_eq(config_warning(cfg, 0), "command line (-o): unknown parameter nosuchparam");
    ck_assert_ptr_null(config_warning(cfg, 1));
    config_free(cfg);
}
END_TEST

/* test_override_too_long - an override too long to keep is refused, not cut short */
START_TEST(test_override_too_long)
{
    struct load ld;
    char *longov = repeat("smtpd_banner=", 'v', CONFIG_LINE_MAX + 10, "");
    const char *const too_long[] = {longov};
    struct config *cut = load_bytes(&ld, NULL, 0, too_long, 1);
    size_t got_len = cut ? strlen(cfg_str(cut, P_smtpd_banner)) : 0;
    config_free(cut);
    free(longov);
    ck_assert_msg(cut == NULL, "got success with smtpd_banner cut to %zu of %d bytes, want an error", got_len,
                  CONFIG_LINE_MAX + 10);
    ck_assert_msg(strncmp(ld.err, "command line (-o): smtpd_banner: ", 33) == 0 || strncmp(ld.err, "-o ", 3) == 0,
                  "got \"%s\", want an error naming the -o setting", ld.err);
}
END_TEST

START_TEST(test_unknown_is_warning)
{
    static const char text[] = "foo = 1\n"
                               "myhostname = x.example\n"
                               "bar=two $myhostname\n"
                               "gw1_smtpd_timeout = 5s\n"
                               "gw1_smtpd_banner = hi $myhostname\n";
    struct load ld;
    struct config *cfg = must_load(&ld, text, NULL, 0);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s:1: unknown parameter foo", ld.path);
    ck_assert_str_eq(config_warning(cfg, 0), want);
    snprintf(want, sizeof want, "%s:3: unknown parameter bar", ld.path);
    ck_assert_str_eq(config_warning(cfg, 1), want);
    /* a known name behind a prefix is no per-instance setting: nothing reads it */
    snprintf(want, sizeof want, "%s:4: unknown parameter gw1_smtpd_timeout", ld.path);
    ck_assert_str_eq(config_warning(cfg, 2), want);
    snprintf(want, sizeof want, "%s:5: unknown parameter gw1_smtpd_banner", ld.path);
    ck_assert_str_eq(config_warning(cfg, 3), want);
    ck_assert_ptr_null(config_warning(cfg, 4));
    ck_assert_str_eq(cfg_lookup(cfg, "foo"), "1");
    ck_assert_str_eq(cfg_lookup(cfg, "bar"), "two x.example");
    ck_assert_str_eq(cfg_lookup(cfg, "gw1_smtpd_timeout"), "5s");
    ck_assert_str_eq(cfg_lookup(cfg, "gw1_smtpd_banner"), "hi x.example");
    ck_assert_str_eq(cfg_lookup(cfg, "myhostname"), "x.example");
    ck_assert_ptr_null(cfg_lookup(cfg, "baz"));
    config_free(cfg);
}
END_TEST

/* ---- errors: "FILE:LINE: PARAM: reason" ---- */

struct err_case {
    const char *text;
    int line;
    const char *param;  /* NULL: "FILE:LINE: reason" */
    const char *needle; /* part of the reason */
};

static const struct err_case err_cases[] = {
    /* expansion */
    {"smtpd_banner = ${myhostname\n", 1, "smtpd_banner", "unterminated"},
    {"smtpd_banner = ${myhostname?x\n", 1, "smtpd_banner", "unterminated"},
    {"smtpd_banner = ${myhostname:${log_file}\n", 1, "smtpd_banner", "unterminated"},
    {"smtpd_banner = $(myhostname\n", 1, "smtpd_banner", "unterminated"},
    {"smtpd_banner = $(myhostname}\n", 1, "smtpd_banner", "unterminated"},
    {"myhostname = $myhostname\n", 1, "myhostname", "loop"},
    {"myhostname = a\nsmtpd_banner = x ${smtpd_banner}\n", 2, "smtpd_banner", "loop"},
    {"myhostname = a\nlog_file = ${log_file:$log_file}\n", 2, "log_file", "loop"},
    {"smtpd_banner = $nosuch\n", 1, "smtpd_banner", "$nosuch"},
    {"smtpd_banner = ${nosuch?x}\n", 1, "smtpd_banner", "nosuch"},
    {"smtpd_banner = $(nosuch)\n", 1, "smtpd_banner", "nosuch"},
    {"foo = $nosuch\n", 1, "foo", "nosuch"},
    {"smtpd_banner = a $ b\n", 1, "smtpd_banner", "$"},
    {"smtpd_banner = ${}\n", 1, "smtpd_banner", "$"},
    {"smtpd_banner = cost $\n", 1, "smtpd_banner", "$"},
    /* durations */
    {"smtpd_timeout = 5x\n", 1, "smtpd_timeout", "'5x'"},
    {"smtpd_timeout = -1\n", 1, "smtpd_timeout", "'-1'"},
    {"smtpd_timeout = m\n", 1, "smtpd_timeout", "'m'"},
    {"smtpd_timeout =\n", 1, "smtpd_timeout", "''"},
    {"smtpd_timeout = 0\n", 1, "smtpd_timeout", "'0'"},       /* below min 1 */
    {"smtpd_timeout = 2h\n", 1, "smtpd_timeout", "'2h'"},     /* above max 3600 */
    {"smtpd_timeout = 1.5m\n", 1, "smtpd_timeout", "'1.5m'"},
    {"smtpd_timeout = 5 m\n", 1, "smtpd_timeout", "'5 m'"},
    {"myhostname = a\n\nsmtpd_timeout = 99999999999999999999\n", 3, "smtpd_timeout", "99999999999999999999"},
    {"retry_schedule = 5m 10x\n", 1, "retry_schedule", "'10x'"},
    {"retry_schedule = 5m, 0\n", 1, "retry_schedule", "'0'"},
    /* sizes */
    {"message_size_limit = 10k\n", 1, "message_size_limit", "'10k'"},
    {"message_size_limit = 1023\n", 1, "message_size_limit", "'1023'"},
    {"message_size_limit = +2048\n", 1, "message_size_limit", "'+2048'"},
    {"message_size_limit = -2048\n", 1, "message_size_limit", "'-2048'"},
    {"message_size_limit = 1099511627777\n", 1, "message_size_limit", "'1099511627777'"},
    {"message_size_limit = 2048 \n  x\n", 1, "message_size_limit", "'2048 x'"}, /* continued */
    /* integers */
    {"smtpd_processes = 0\n", 1, "smtpd_processes", "'0'"},
    {"smtpd_processes = 257\n", 1, "smtpd_processes", "'257'"},
    {"smtpd_processes = abc\n", 1, "smtpd_processes", "'abc'"},
    {"smtpd_processes = 1e2\n", 1, "smtpd_processes", "'1e2'"},
    {"smtpd_processes = 0x10\n", 1, "smtpd_processes", "'0x10'"},
    {"smtpd_command_length_limit = 511\n", 1, "smtpd_command_length_limit", "'511'"},
    {"smtp_remote_port = 65536\n", 1, "smtp_remote_port", "'65536'"},
    {"smtpd_recipient_limit = 99999999999999999999999\n", 1, "smtpd_recipient_limit", "'9999"},
    /* listeners */
    {"smtpd_listen = 1.2.3.4\n", 1, "smtpd_listen", "'1.2.3.4'"},
    {"smtpd_listen = [::1\n", 1, "smtpd_listen", "'[::1'"},
    {"smtpd_listen = 300.1.1.1:25\n", 1, "smtpd_listen", "'300.1.1.1:25'"},
    {"smtpd_listen = 127.0.0.1:25, 1.2.3.4\n", 1, "smtpd_listen", "'1.2.3.4'"},
    {"smtpd_listen = 127.0.0.1:0\n", 1, "smtpd_listen", "'127.0.0.1:0'"},
    {"smtpd_listen = ::1:25\n", 1, "smtpd_listen", "'::1:25'"},
    {"smtpd_listen = [::1]\n", 1, "smtpd_listen", "'[::1]'"},
    {"smtpd_listen = mx.example.com:25\n", 1, "smtpd_listen", "'mx.example.com:25'"},
    {"monitor_listen = 127.0.0.1:http\n", 1, "monitor_listen", "'127.0.0.1:http'"},
    {"dns_servers = 1.2.3.4:99999\n", 1, "dns_servers", "'1.2.3.4:99999'"},
    {"dns_servers = nameserver\n", 1, "dns_servers", "'nameserver'"},
    /* networks */
    {"mynetworks = 10.0.0.0/33\n", 1, "mynetworks", "'10.0.0.0/33'"},
    {"mynetworks = 127.0.0.0/8 localhost\n", 1, "mynetworks", "'localhost'"},
    {"mynetworks = [::1\n", 1, "mynetworks", "'[::1'"},
    {"mynetworks = ::/129\n", 1, "mynetworks", "'::/129'"},
    {"mynetworks = 10.0.0.0/\n", 1, "mynetworks", "'10.0.0.0/'"},
    {"mynetworks = 10.0.0.0/-1\n", 1, "mynetworks", "'10.0.0.0/-1'"},
    /* enums */
    {"spool_sync_method = fdatasync\n", 1, "spool_sync_method", "'fdatasync'"},
    {"spool_sync_method = SYNCFS\n", 1, "spool_sync_method", "'SYNCFS'"},
    {"spool_sync_method = sync\n", 1, "spool_sync_method", "'sync'"},
    {"spool_sync_method =\n", 1, "spool_sync_method", "''"},
    {"spool_sync_method = syncfs fsync\n", 1, "spool_sync_method", "'syncfs fsync'"},
    /* line syntax: "FILE:LINE: reason" */
    {" smtpd_timeout = 5s\n", 1, NULL, "continuation"},
    {"# only a comment\n\n\tx\n", 3, NULL, "continuation"},
    {"smtpd_timeout\n", 1, NULL, "'='"},
    {"smtpd_timeout 5s\n", 1, NULL, "'='"},
    {"myhostname = a\nthis is not a setting\n", 2, NULL, "'='"},
    {"smtpd-timeout = 5s\n", 1, NULL, "'='"},
    {"= 5s\n", 1, NULL, "name"},
    {"myhostname = a\n-x = 1\n", 2, NULL, "name"},
};

START_TEST(test_errors)
{
    const struct err_case *c = &err_cases[_i];
    expect_fail(c->text, c->line, c->param, c->needle);
}
END_TEST

/* test_error_loop_pair - a = $b, b = $a: reported at either end of the loop */
START_TEST(test_error_loop_pair)
{
    static const char *const texts[] = {
        "a = $b\nb = $a\n",
        "myhostname = $smtpd_banner\nsmtpd_banner = $myhostname\n",
        "myhostname = ${smtpd_banner}\nsmtpd_banner = x\nsmtpd_banner = ${myhostname?y}\n",
    };
    static const char *const names[][2] = {{"a", "b"}, {"myhostname", "smtpd_banner"}, {"myhostname", "smtpd_banner"}};
    static const int lines[][2] = {{1, 2}, {1, 2}, {1, 3}};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct load ld;
        struct config *cfg = load_text(&ld, texts[i]);
        ck_assert_msg(cfg == NULL, "got success, want an expansion loop error for:\n%s", texts[i]);
        char w0[PATH_MAX + 64], w1[PATH_MAX + 64];
        snprintf(w0, sizeof w0, "%s:%d: %s: ", ld.path, lines[i][0], names[i][0]);
        snprintf(w1, sizeof w1, "%s:%d: %s: ", ld.path, lines[i][1], names[i][1]);
        ck_assert_msg(strncmp(ld.err, w0, strlen(w0)) == 0 || strncmp(ld.err, w1, strlen(w1)) == 0,
                      "got \"%s\", want \"%s...\" or \"%s...\"", ld.err, w0, w1);
        ck_assert_ptr_nonnull(strstr(ld.err, "loop"));
    }
}
END_TEST

/* test_error_long_physical_line - a line longer than CONFIG_LINE_MAX */
START_TEST(test_error_long_physical_line)
{
    char *text = repeat("myhostname = a\nsmtpd_banner = ", 'x', CONFIG_LINE_MAX + 100, "\nstop_timeout = 1s\n");
    expect_fail(text, 2, NULL, "longer");
    free(text);
}
END_TEST

/* test_long_value_ok - a long, but not over-long, value is kept whole */
START_TEST(test_long_value_ok)
{
    char *text = repeat("smtpd_banner = ", 'x', 8000, "\n");
    struct load ld;
    struct config *cfg = must_load(&ld, text, NULL, 0);
    ck_assert_uint_eq(strlen(cfg_str(cfg, P_smtpd_banner)), 8000);
    config_free(cfg);
    free(text);
}
END_TEST

/* test_error_long_logical_line - continuation lines adding up past CONFIG_LINE_MAX */
START_TEST(test_error_long_logical_line)
{
    struct buf text;
    buf_init(&text, 1 << 20);
    ck_assert(buf_puts(&text, "smtpd_banner = x\n"));  /* 16 bytes in the logical line */
    char *chunk = repeat("  ", 'y', 7000, "\n");     /* each adds 1 + 7000 */
    for (int i = 0; i < 12; i++)
        ck_assert(buf_puts(&text, chunk));
    /* 16 + 9 * 7001 = 63025 fits; the 10th continuation (line 11) does not. */
    expect_fail(text.data, 11, NULL, "longer");
    free(chunk);
    buf_free(&text);
}
END_TEST

/* test_error_expanded_too_long - expansion past CONFIG_LINE_MAX */
START_TEST(test_error_expanded_too_long)
{
    char *text = repeat("log_file = ", 'z', 8000, "\nsmtpd_banner = $log_file$log_file$log_file$log_file$log_file"
                                                   "$log_file$log_file$log_file$log_file\n");
    expect_fail(text, 2, "smtpd_banner", "too long");
    free(text);
}
END_TEST

/* test_error_file_too_large - more than CONFIG_FILE_MAX bytes */
START_TEST(test_error_file_too_large)
{
    /* 60-byte comment lines: line 17477 is the first to end past 1 MiB. */
    char *line = repeat("#", 'c', 58, "\n");
    struct buf text;
    buf_init(&text, 2 << 20);
    for (int i = 0; i < 20000; i++)
        ck_assert(buf_puts(&text, line));
    expect_fail(text.data, 17477, NULL, "larger");
    free(line);
    buf_free(&text);
}
END_TEST

/* test_error_nul_byte - a NUL inside a line is refused, not cut off */
START_TEST(test_error_nul_byte)
{
    static const char text[] = "myhostname = abc\0def\nstop_timeout = 5s\n";
    struct load ld;
    struct config *cfg = load_bytes(&ld, text, sizeof text - 1, NULL, 0);
    if (cfg != NULL) {
        char got[256];
        snprintf(got, sizeof got, "%s", cfg_str(cfg, P_myhostname));
        config_free(cfg);
        ck_abort_msg("got success (myhostname=\"%s\"), want \"%s:1: NUL byte in line\"", got, ld.path);
    }
    check_shape(ld.err, ld.path, 1, NULL, "NUL");
}
END_TEST

/* test_error_nul_byte_last_line - the same on a last line without newline */
START_TEST(test_error_nul_byte_last_line)
{
    static const char text[] = "stop_timeout = 5s\nmyhostname = abc\0def";
    struct load ld;
    struct config *cfg = load_bytes(&ld, text, sizeof text - 1, NULL, 0);
    if (cfg != NULL) {
        char got[256];
        snprintf(got, sizeof got, "%s", cfg_str(cfg, P_myhostname));
        config_free(cfg);
        ck_abort_msg("got success (myhostname=\"%s\"), want \"%s:2: NUL byte in line\"", got, ld.path);
    }
    check_shape(ld.err, ld.path, 2, NULL, "NUL");
}
END_TEST

/* test_error_unreadable - main.cf that cannot be read (a directory) */
START_TEST(test_error_unreadable)
{
    struct load ld;
    unit_subdir("cf", ld.dir);
    snprintf(ld.path, sizeof ld.path, "%s/main.cf", ld.dir);
    ck_assert_int_eq(mkdir(ld.path, 0700), 0);
    ck_assert_ptr_null(config_load(ld.dir, NULL, 0, ld.err));
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "%s: ", ld.path);
    ck_assert_msg(strncmp(ld.err, want, strlen(want)) == 0, "got \"%s\", want \"%s...\"", ld.err, want);
}
END_TEST

/* ---- parse_duration, parse_bool ---- */

static const struct {
    const char *text;
    bool ok;
    int64_t seconds;
} duration_cases[] = {
    {"0", true, 0},
    {"30", true, 30},
    {"30s", true, 30},
    {"5m", true, 300},
    {"2h", true, 7200},
    {"1d", true, 86400},
    {"1w", true, 604800},
    {"007", true, 7},
    {"0w", true, 0},
    {"9223372036854775807", true, INT64_MAX},
    {"9223372036854775807s", true, INT64_MAX},
    {"15250284452471w", true, INT64_C(15250284452471) * 604800},
    {"", false, 0},
    {"5x", false, 0},
    {"-1", false, 0},
    {"-0", false, 0},
    {"+5", false, 0},
    {"m", false, 0},
    {" 5", false, 0},
    {"5 ", false, 0},
    {"5mm", false, 0},
    {"5ms", false, 0},
    {"1.5h", false, 0},
    {"0x10", false, 0},
    {"9223372036854775808", false, 0},
    {"15250284452472w", false, 0},
    {"153722867280912931m", false, 0},
    {"99999999999999999999d", false, 0},
};

START_TEST(test_parse_duration)
{
    int64_t secs = -42;
    bool ok = parse_duration(duration_cases[_i].text, &secs);
    ck_assert_msg(ok == duration_cases[_i].ok, "parse_duration(\"%s\"): got %s, want %s", duration_cases[_i].text,
                  ok ? "true" : "false", duration_cases[_i].ok ? "true" : "false");
    if (ok)
        ck_assert_msg(secs == duration_cases[_i].seconds, "parse_duration(\"%s\"): got %lld, want %lld",
                      duration_cases[_i].text, (long long)secs, (long long)duration_cases[_i].seconds);
}
END_TEST

static const struct {
    const char *text;
    int want; /* 1 true, 0 false, -1 refused */
} bool_cases[] = {
    {"yes", 1},  {"YES", 1},   {"Yes", 1},   {"true", 1},  {"TRUE", 1},  {"on", 1},   {"On", 1},
    {"1", 1},    {"no", 0},    {"NO", 0},    {"false", 0}, {"False", 0}, {"off", 0},  {"OFF", 0},
    {"0", 0},    {"", -1},     {"y", -1},    {"n", -1},    {"2", -1},    {"yes ", -1}, {" yes", -1},
    {"enable", -1}, {"nope", -1}, {"00", -1}, {"truee", -1}, {"o", -1},   {"-1", -1},
};

START_TEST(test_parse_bool)
{
    bool v = false;
    bool ok = parse_bool(bool_cases[_i].text, &v);
    int got = ok ? (int)v : -1;
    ck_assert_msg(got == bool_cases[_i].want, "parse_bool(\"%s\"): got %d, want %d", bool_cases[_i].text, got,
                  bool_cases[_i].want);
}
END_TEST

/* ---- str.h ---- */

START_TEST(test_str_copy)
{
    char d[6];
    ck_assert(str_copy(d, sizeof d, "hello"));  /* 5 + NUL fits exactly */
    ck_assert_str_eq(d, "hello");
    ck_assert(!str_copy(d, sizeof d, "hello!"));
    ck_assert_str_eq(d, "hello");
    ck_assert(!str_copy(d, sizeof d, "a much longer string"));
    ck_assert_str_eq(d, "a muc");
    ck_assert(str_copy(d, sizeof d, ""));
    ck_assert_str_eq(d, "");
    d[0] = 'q';
    ck_assert(!str_copy(d, 0, "x")); /* nothing written */
    ck_assert_int_eq(d[0], 'q');
    ck_assert(!str_copy(d, 1, "x"));
    ck_assert_str_eq(d, "");

    char guard[16];
    memset(guard, '#', sizeof guard);
    ck_assert(!str_copy(guard, 8, "0123456789"));
    ck_assert_str_eq(guard, "0123456");
    ck_assert_int_eq(guard[8], '#'); /* nothing past dstsize */

    ck_assert(str_ncopy(d, sizeof d, "abcdef", 3)); /* no NUL needed in src */
    ck_assert_str_eq(d, "abc");
    ck_assert(!str_ncopy(d, sizeof d, "abcdefgh", 8));
    ck_assert_str_eq(d, "abcde");
}
END_TEST

START_TEST(test_str_fmt_append)
{
    char d[8];
    ck_assert(str_fmt(d, sizeof d, "%d-%s", 42, "ab"));
    ck_assert_str_eq(d, "42-ab");
    ck_assert(!str_fmt(d, sizeof d, "%s", "12345678"));
    ck_assert_str_eq(d, "1234567");
    ck_assert(!str_fmt(d, 0, "%s", "x"));

    size_t len = 0;
    ck_assert(str_append(d, sizeof d, &len, "%s", "abc"));
    ck_assert(str_append(d, sizeof d, &len, "%d", 12));
    ck_assert_uint_eq(len, 5);
    ck_assert_str_eq(d, "abc12");
    ck_assert(!str_append(d, sizeof d, &len, "%s", "xyz"));
    ck_assert_str_eq(d, "abc12xy");
    ck_assert_uint_eq(len, 7);
    ck_assert(!str_append(d, sizeof d, &len, "%s", "z"));
    ck_assert_str_eq(d, "abc12xy");
    len = sizeof d; /* already past the end */
    ck_assert(!str_append(d, sizeof d, &len, "%s", "z"));

    /* an encoding error is reported, and dst stays a string */
    static const wchar_t bad_wide[] = {0xdc80, 0};
    memset(d, '#', sizeof d);
    ck_assert(!str_fmt(d, sizeof d, "ab%ls", bad_wide));
    ck_assert_ptr_nonnull(memchr(d, '\0', sizeof d));
}
END_TEST

START_TEST(test_str_misc)
{
    char *s = str_dup("Hello");
    ck_assert_str_eq(s, "Hello");
    ck_assert_str_eq(str_lower(s), "hello");
    free(s);
    s = str_ndup("abcdef", 2);
    ck_assert_str_eq(s, "ab");
    free(s);

    ck_assert(str_case_eq("PostMaster", "postmaster"));
    ck_assert(!str_case_eq("postmaster", "postmaste"));
    ck_assert(!str_case_eq("a", "b"));
    ck_assert(str_case_eq("", ""));

    char t[] = " \t x y \r\n";
    ck_assert_str_eq(str_trim(t), "x y");
    char e[] = " \t ";
    ck_assert_str_eq(str_trim(e), "");

    ck_assert(!str_has_ctl("abc ~", 5));
    ck_assert(str_has_ctl("a\tb", 3));
    ck_assert(str_has_ctl("a\x7f", 2));
    ck_assert(str_has_ctl("a\0b", 3));
    ck_assert(!str_has_ctl("a\0b", 1));
    ck_assert(!str_has_ctl("\xc3\xa9", 2));

    char list[] = " a, b,,c\t d ,";
    char *cur = list;
    const char *want[] = {"a", "b", "c", "d"};
    for (size_t i = 0; i < 4; i++) {
        char *tok = str_split_next(&cur);
        ck_assert_ptr_nonnull(tok);
        ck_assert_str_eq(tok, want[i]);
    }
    ck_assert_ptr_null(str_split_next(&cur));
    ck_assert_ptr_null(str_split_next(&cur));
}
END_TEST

START_TEST(test_size_arith)
{
    size_t out = 7;
    ck_assert(size_add(1, 2, &out));
    ck_assert_uint_eq(out, 3);
    ck_assert(size_add(SIZE_MAX - 1, 1, &out));
    ck_assert_uint_eq(out, SIZE_MAX);
    out = 7;
    ck_assert(!size_add(SIZE_MAX, 1, &out));
    ck_assert_uint_eq(out, 7); /* untouched on overflow */
    ck_assert(!size_add(1, SIZE_MAX, &out));
    ck_assert(!size_add(SIZE_MAX / 2 + 1, SIZE_MAX / 2 + 1, &out));
    ck_assert_uint_eq(out, 7);

    ck_assert(size_mul(6, 7, &out));
    ck_assert_uint_eq(out, 42);
    ck_assert(size_mul(0, SIZE_MAX, &out));
    ck_assert_uint_eq(out, 0);
    ck_assert(size_mul(SIZE_MAX, 0, &out));
    ck_assert_uint_eq(out, 0);
    ck_assert(size_mul(SIZE_MAX, 1, &out));
    ck_assert_uint_eq(out, SIZE_MAX);
    out = 7;
    ck_assert(!size_mul(SIZE_MAX / 2 + 1, 2, &out));
    ck_assert(!size_mul(2, SIZE_MAX / 2 + 1, &out));
    ck_assert(!size_mul((size_t)1 << (sizeof(size_t) * 4), (size_t)1 << (sizeof(size_t) * 4), &out));
    ck_assert_uint_eq(out, 7);
    ck_assert(size_mul(SIZE_MAX / 3, 3, &out));
    ck_assert_uint_eq(out, SIZE_MAX / 3 * 3);
}
END_TEST

START_TEST(test_str_to_i64)
{
    int64_t v = 0;
    ck_assert(str_to_i64("42", 0, 100, &v));
    ck_assert_int_eq(v, 42);
    ck_assert(str_to_i64("-5", -10, 10, &v));
    ck_assert_int_eq(v, -5);
    ck_assert(str_to_i64("9223372036854775807", 0, INT64_MAX, &v));
    ck_assert_int_eq(v, INT64_MAX);
    ck_assert(str_to_i64("-9223372036854775808", INT64_MIN, 0, &v));
    ck_assert_int_eq(v, INT64_MIN);
    v = 99;
    ck_assert(!str_to_i64("", 0, 100, &v));
    ck_assert(!str_to_i64(NULL, 0, 100, &v));
    ck_assert(!str_to_i64("101", 0, 100, &v));
    ck_assert(!str_to_i64("-1", 0, 100, &v));
    ck_assert(!str_to_i64("12a", 0, 100, &v));
    ck_assert(!str_to_i64(" 1", 0, 100, &v));
    ck_assert(!str_to_i64("1 ", 0, 100, &v));
    ck_assert(!str_to_i64("-", 0, 100, &v));
    ck_assert(!str_to_i64("--1", -10, 100, &v));
    ck_assert(!str_to_i64("9223372036854775808", 0, INT64_MAX, &v));
    ck_assert(!str_to_i64("-9223372036854775809", INT64_MIN, 0, &v));
    ck_assert_int_eq(v, 99);
}
END_TEST

/* ---- buf.h ---- */

START_TEST(test_buf_basic)
{
    struct buf b;
    buf_init(&b, 100);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert(buf_append(&b, "ab\0cd", 5)); /* binary-safe */
    ck_assert_uint_eq(b.len, 5);
    ck_assert_mem_eq(b.data, "ab\0cd", 5);
    ck_assert_int_eq(b.data[5], '\0'); /* safety NUL */
    ck_assert(buf_puts(&b, "ef"));
    ck_assert(buf_printf(&b, "%d/%s", 12, "x"));
    ck_assert_uint_eq(b.len, 11);
    ck_assert_mem_eq(b.data, "ab\0cdef12/x", 12);
    ck_assert(buf_append(&b, NULL, 0));
    ck_assert_uint_eq(b.len, 11);

    buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_ptr_nonnull(b.data);
    ck_assert_str_eq(b.data, "");
    buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.max, 100);
    ck_assert(buf_puts(&b, "again")); /* reusable after free */
    ck_assert_str_eq(b.data, "again");
    buf_free(&b);

    /* Growth over many small appends keeps every byte. */
    buf_init(&b, 1 << 20);
    for (unsigned i = 0; i < 100000; i++) {
        char c = (char)('a' + i % 26);
        ck_assert(buf_append(&b, &c, 1));
    }
    ck_assert_uint_eq(b.len, 100000);
    for (unsigned i = 0; i < 100000; i += 997)
        ck_assert_int_eq(b.data[i], 'a' + i % 26);
    ck_assert_uint_ge(b.cap, b.len + 1);
    buf_free(&b);
}
END_TEST

START_TEST(test_buf_max)
{
    struct buf b;
    buf_init(&b, 10);
    ck_assert(buf_puts(&b, "0123456789")); /* exactly max */
    errno = 0;
    ck_assert(!buf_append(&b, "x", 1));
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_uint_eq(b.len, 10);
    ck_assert_str_eq(b.data, "0123456789"); /* unchanged */
    errno = 0;
    ck_assert(!buf_printf(&b, "%s", "y"));
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_str_eq(b.data, "0123456789");
    buf_reset(&b);
    errno = 0;
    ck_assert(!buf_printf(&b, "%s", "0123456789A"));
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_uint_eq(b.len, 0);
    buf_free(&b);

    /* A huge append is refused up front, whatever the maximum, without
     * trying to allocate it (size_add overflow inside). */
    static const char byte = 'z';
    buf_init(&b, 1 << 20);
    ck_assert(buf_puts(&b, "abc"));
    errno = 0;
    ck_assert(!buf_append(&b, &byte, SIZE_MAX));
    ck_assert_int_eq(errno, EMSGSIZE);
    errno = 0;
    ck_assert(!buf_append(&b, &byte, SIZE_MAX - 2));
    ck_assert_int_eq(errno, EMSGSIZE);
    errno = 0;
    ck_assert(!buf_append(&b, &byte, (1 << 20) - 2)); /* 3 + that > max */
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_str_eq(b.data, "abc");
    buf_free(&b);

    buf_init(&b, SIZE_MAX);
    ck_assert(buf_puts(&b, "abc"));
    errno = 0;
    ck_assert(!buf_append(&b, &byte, SIZE_MAX - 3)); /* len would be SIZE_MAX: no room for the NUL */
    ck_assert_int_eq(errno, EMSGSIZE);
    errno = 0;
    ck_assert(!buf_append(&b, &byte, SIZE_MAX));
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_str_eq(b.data, "abc");
    buf_free(&b);
}
END_TEST

/* ---- suites ---- */

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = unit_tcase("defaults", 30);
    tcase_add_loop_test(tc, test_default_each, 0, P_COUNT);
    tcase_add_test(tc, test_default_values);
    tcase_add_test(tc, test_defaults_written_out);
    suite_add_tcase(s, tc);

    tc = unit_tcase("syntax", 30);
    tcase_add_test(tc, test_syntax_basic);
    tcase_add_test(tc, test_later_setting_wins);
    tcase_add_test(tc, test_expand_forms);
    tcase_add_test(tc, test_expand_typed);
    tcase_add_test(tc, test_overrides);
    tcase_add_test(tc, test_override_errors);
    tcase_add_test(tc, test_override_too_long);
    tcase_add_test(tc, test_unknown_is_warning);
    tcase_add_test(tc, test_long_value_ok);
    suite_add_tcase(s, tc);

    tc = unit_tcase("errors", 30);
    tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof err_cases / sizeof err_cases[0]));
    tcase_add_test(tc, test_error_loop_pair);
    tcase_add_test(tc, test_error_long_physical_line);
    tcase_add_test(tc, test_error_long_logical_line);
    tcase_add_test(tc, test_error_expanded_too_long);
    tcase_add_test(tc, test_error_file_too_large);
    tcase_add_test(tc, test_error_nul_byte);
    tcase_add_test(tc, test_error_nul_byte_last_line);
    tcase_add_test(tc, test_error_unreadable);
    suite_add_tcase(s, tc);

    tc = tcase_create("values");
    tcase_add_loop_test(tc, test_parse_duration, 0, (int)(sizeof duration_cases / sizeof duration_cases[0]));
    tcase_add_loop_test(tc, test_parse_bool, 0, (int)(sizeof bool_cases / sizeof bool_cases[0]));
    suite_add_tcase(s, tc);
    return s;
}

static Suite *str_buf_suite(void)
{
    Suite *s = suite_create("str+buf");
    TCase *tc = tcase_create("str");
    tcase_add_test(tc, test_str_copy);
    tcase_add_test(tc, test_str_fmt_append);
    tcase_add_test(tc, test_str_misc);
    tcase_add_test(tc, test_size_arith);
    tcase_add_test(tc, test_str_to_i64);
    suite_add_tcase(s, tc);
    tc = tcase_create("buf");
    tcase_add_test(tc, test_buf_basic);
    tcase_add_test(tc, test_buf_max);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    Suite *suites[] = {config_suite(), str_buf_suite()};
    return unit_run(suites, sizeof suites / sizeof suites[0]);
}
