/* check_vg.c - unit tests of lib/vg (virtual gateway tables and message
 * classification) and lib/table (domain lookups, attributes). */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "config.h"
#include "str.h"
#include "table.h"
#include "vg.h"

/* load_with - a vg_set from table texts written into the scratch dir */
static struct vg_set *load_with(const char *gateways, const char *classes, const char *bounce_vg, char err[VG_ERR_MAX])
{
    char dir[PATH_MAX], gpath[PATH_MAX + 16], cpath[PATH_MAX + 16], o1[PATH_MAX + 32], o2[PATH_MAX + 32],
        o3[128];
    unit_subdir("vg", dir);
    str_fmt(gpath, sizeof gpath, "%s/gw", dir);
    str_fmt(cpath, sizeof cpath, "%s/cl", dir);
    unit_write_file(gpath, gateways, strlen(gateways));
    unit_write_file(cpath, classes, strlen(classes));
    str_fmt(o1, sizeof o1, "virtual_gateways = %s", gpath);
    str_fmt(o2, sizeof o2, "virtual_gateway_classes = %s", cpath);
    str_fmt(o3, sizeof o3, "bounce_virtual_gateway = %s", bounce_vg);
    const char *o[] = {o1, o2, o3};
    char cerr[CONFIG_ERR_MAX];
    struct config *cfg = config_load(dir, o, 3, cerr);
    ck_assert_msg(cfg != NULL, "%s", cerr);
    struct vg_set *vs = vg_load(cfg, err);
    config_free(cfg);
    return vs;
}

static struct sockaddr_in v4(const char *a)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, a, &in.sin_addr);
    return in;
}

START_TEST(test_gateways_and_default)
{
    char err[VG_ERR_MAX];
    struct vg_set *vs = load_with("# gateways\ngw1 source=127.0.0.5,127.0.0.6 helo=gw1.example\n"
                                  "gw2 source=[::1] helo=gw2.example\n",
                                  "", "", err);
    ck_assert_msg(vs != NULL, "%s", err);
    ck_assert_uint_eq(vg_count(vs), 3);
    ck_assert_str_eq(vg_at(vs, 0)->name, "default");
    const struct vg *g = vg_find(vs, "gw1");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(g->n_sources, 2);
    ck_assert_str_eq(g->helo, "gw1.example");
    ck_assert_int_eq(((struct sockaddr *)&g->sources[0].ss)->sa_family, AF_INET);
    ck_assert_int_eq(inet_port((struct sockaddr *)&g->sources[1].ss), 0);
    g = vg_find(vs, "GW2");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(((struct sockaddr *)&g->sources[0].ss)->sa_family, AF_INET6);
    ck_assert_ptr_null(vg_find(vs, "gw3"));
    vg_free(vs);
}
END_TEST

START_TEST(test_classification_first_match_wins)
{
    char err[VG_ERR_MAX];
    struct vg_set *vs = load_with("gw1 source=127.0.0.5\ngw2 source=127.0.0.6\ngw3 source=127.0.0.7\n",
                                  "sender:boss@corp.example gw3\n"
                                  "sender_domain:corp.example gw1\n"
                                  "recipient_domain:.partner.example gw2\n"
                                  "client:10.0.0.0/8 gw2\n"
                                  "listener:127.0.0.1:2526 gw3\n"
                                  "* default\n",
                                  "gw1", err);
    ck_assert_msg(vs != NULL, "%s", err);
    struct sockaddr_in c = v4("192.0.2.1"), c10 = v4("10.1.2.3");
    const char *r1[] = {"x@other.example"}, *r2[] = {"x@other.example", "y@mx.partner.example"};
    ck_assert_str_eq(vg_classify(vs, "boss@corp.example", r1, 1, (struct sockaddr *)&c, NULL), "gw3");
    ck_assert_str_eq(vg_classify(vs, "BOSS@Corp.Example", r1, 1, (struct sockaddr *)&c, NULL), "gw3");
    ck_assert_str_eq(vg_classify(vs, "staff@corp.example", r2, 2, (struct sockaddr *)&c, NULL), "gw1");
    ck_assert_str_eq(vg_classify(vs, "a@b.example", r2, 2, (struct sockaddr *)&c, NULL), "gw2");
    ck_assert_str_eq(vg_classify(vs, "a@b.example", r1, 1, (struct sockaddr *)&c10, NULL), "gw2");
    ck_assert_str_eq(vg_classify(vs, "a@b.example", r1, 1, (struct sockaddr *)&c, "127.0.0.1:2526"), "gw3");
    ck_assert_str_eq(vg_classify(vs, "a@b.example", r1, 1, (struct sockaddr *)&c, "127.0.0.1:2525"), "default");
    ck_assert_str_eq(vg_classify(vs, "", r1, 1, (struct sockaddr *)&c, NULL), "default");
    /* ".partner.example" matches sub-domains only */
    const char *r3[] = {"x@partner.example"};
    ck_assert_str_eq(vg_classify(vs, "a@b.example", r3, 1, (struct sockaddr *)&c, NULL), "default");
    vg_free(vs);
}
END_TEST

static const struct {
    const char *gateways, *classes, *bounce, *want;
} bad_cases[] = {
    {"gw1 source=127.0.0.5\n", "sender_domain:x.example gw9\n", "", "cl:1: unknown virtual gateway 'gw9'"},
    {"gw1 source=127.0.0.5\n", "\n\nbogus:x gw1\n", "", "cl:3: bad selector 'bogus:x'"},
    {"gw1 source=127.0.0.5\n", "client:10.0.0.0/99 gw1\n", "", "cl:1: '10.0.0.0/99': bad prefix length"},
    {"gw1 source=127.0.0.5\n", "listener:127.0.0.1 gw1\n", "", "cl:1: '127.0.0.1': missing :port"},
    {"gw1 source=not-an-ip\n", "", "", "gw:1: gw1: bad source address 'not-an-ip'"},
    {"gw1 source=127.0.0.5\ngw1 source=127.0.0.6\n", "", "", "gw:2: virtual gateway 'gw1' defined twice"},
    {"g/1 source=127.0.0.5\n", "", "", "gw:1: bad virtual gateway name 'g/1'"},
    {"gw1 helo=bad..name\n", "", "", "gw:1: gw1: helo 'bad..name' is not a host name"},
    {"gw1\n", "", "", "gw:1: key without a value"},
    {"gw1 source=127.0.0.5\n", "", "gw7", "bounce_virtual_gateway: unknown virtual gateway 'gw7'"},
};

START_TEST(test_bad_tables)
{
    char err[VG_ERR_MAX];
    struct vg_set *vs = load_with(bad_cases[_i].gateways, bad_cases[_i].classes, bad_cases[_i].bounce, err);
    ck_assert_msg(vs == NULL, "case %d loaded", _i);
    ck_assert_msg(strstr(err, bad_cases[_i].want) != NULL, "case %d: got '%s', want '%s'", _i, err, bad_cases[_i].want);
}
END_TEST

START_TEST(test_table_domain_lookup)
{
    char dir[PATH_MAX], path[PATH_MAX + 8], err[TABLE_ERR_MAX];
    unit_subdir("tbl", dir);
    str_fmt(path, sizeof path, "%s/t", dir);
    const char *text = "example.com host1:25\n.example.com host2\n* fallback:2525\n"
                       "default max_connections=5 retry_schedule=1m,5m\n";
    unit_write_file(path, text, strlen(text));
    struct table *t = table_load(path, err);
    ck_assert_msg(t != NULL, "%s", err);
    ck_assert_str_eq(table_find_domain(t, "example.com", "*"), "host1:25");
    ck_assert_str_eq(table_find_domain(t, "a.b.EXAMPLE.com", "*"), "host2");
    ck_assert_str_eq(table_find_domain(t, "other.org", "*"), "fallback:2525");
    ck_assert_ptr_null(table_find_domain(t, "other.org", NULL));
    char v[64];
    const char *d = table_find(t, "default");
    ck_assert(table_attr(d, "max_connections", v, sizeof v));
    ck_assert_str_eq(v, "5");
    ck_assert(table_attr(d, "retry_schedule", v, sizeof v));
    ck_assert_str_eq(v, "1m,5m");
    ck_assert(!table_attr(d, "retry", v, sizeof v));
    table_free(t);
    ck_assert_ptr_null(table_load("/nonexistent/bw-table", err));
    ck_assert_msg(strstr(err, "/nonexistent/bw-table: cannot open") != NULL, "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vg");
    TCase *tc = unit_tcase("vg", 10);
    tcase_add_test(tc, test_gateways_and_default);
    tcase_add_test(tc, test_classification_first_match_wins);
    tcase_add_loop_test(tc, test_bad_tables, 0, sizeof bad_cases / sizeof bad_cases[0]);
    tcase_add_test(tc, test_table_domain_lookup);
    suite_add_tcase(s, tc);
    return unit_run(&s, 1);
}
