/* vg.c - virtual gateway tables and message classification. */
#include "vg.h"
#include "addr.h"
#include "str.h"
#include "table.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

enum rule_kind { RULE_SENDER, RULE_SENDER_DOMAIN, RULE_RECIPIENT_DOMAIN, RULE_CLIENT, RULE_LISTENER, RULE_ANY };

struct rule {
    enum rule_kind kind;
    char value[ADDR_MAX + 1];
    struct inet_net net;
    size_t vg;
};

struct vg_set {
    struct vg *v;
    size_t n;
    struct rule *rules;
    size_t n_rules;
};

void vg_free(struct vg_set *vs)
{
    if (vs == NULL)
        return;
    free(vs->v);
    free(vs->rules);
    free(vs);
}

size_t vg_count(const struct vg_set *vs) { return vs->n; }
const struct vg *vg_at(const struct vg_set *vs, size_t i) { return i < vs->n ? &vs->v[i] : NULL; }

static int vg_index(const struct vg_set *vs, const char *name)
{
    for (size_t i = 0; i < vs->n; i++)
        if (str_case_eq(vs->v[i].name, name))
            return (int)i;
    return -1;
}

const struct vg *vg_find(const struct vg_set *vs, const char *name)
{
    int i = vg_index(vs, name);
    return i >= 0 ? &vs->v[i] : NULL;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= VG_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' ||
              (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return true;
}

/* parse_source - "192.0.2.1", "2001:db8::1" or "[2001:db8::1]", port 0 */
static bool parse_source(const char *tok, struct inet_endpoint *ep)
{
    char b[INET6_ADDRSTRLEN + 8], why[128];
    size_t n = strlen(tok);
    if (n >= 2 && tok[0] == '[' && tok[n - 1] == ']')
        str_fmt(b, sizeof b, "%s:1", tok);
    else if (strchr(tok, ':'))
        str_fmt(b, sizeof b, "[%s]:1", tok);
    else
        str_fmt(b, sizeof b, "%s:1", tok);
    if (!inet_parse_endpoint(b, 0, ep, why, sizeof why) || strcmp(tok, "*") == 0)
        return false;
    struct sockaddr *sa = (struct sockaddr *)&ep->ss; /* the kernel picks the port */
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)sa)->sin6_port = 0;
    return true;
}

/* load_gateways - "name source=IP[,IP...] helo=NAME" */
static bool load_gateways(struct vg_set *vs, const char *path, char *err)
{
    char terr[TABLE_ERR_MAX];
    struct table *t = table_load(path, terr);
    if (t == NULL)
        return str_copy(err, VG_ERR_MAX, terr), false;
    vs->v = calloc(table_size(t) + 1, sizeof *vs->v);
    if (vs->v == NULL) {
        table_free(t);
        return str_copy(err, VG_ERR_MAX, "out of memory"), false;
    }
    str_copy(vs->v[0].name, VG_NAME_MAX, "default");
    vs->n = 1;
    bool ok = true;
    for (size_t i = 0; ok && i < table_size(t); i++) {
        const char *name = table_key(t, i), *val = table_value(t, i);
        int line = table_line(t, i);
        struct vg *g;
        int existing = vg_index(vs, name);
        if (!valid_name(name)) {
            str_fmt(err, VG_ERR_MAX, "%s:%d: bad virtual gateway name '%s'", path, line, name);
            ok = false;
            break;
        }
        if (existing > 0) {
            str_fmt(err, VG_ERR_MAX, "%s:%d: virtual gateway '%s' defined twice", path, line, name);
            ok = false;
            break;
        }
        g = existing == 0 ? &vs->v[0] : &vs->v[vs->n++];
        str_copy(g->name, VG_NAME_MAX, name);
        char sources[1024] = "";
        table_attr(val, "source", sources, sizeof sources);
        table_attr(val, "helo", g->helo, sizeof g->helo);
        if (g->helo[0] && !addr_domain_valid(g->helo, strlen(g->helo), false)) {
            str_fmt(err, VG_ERR_MAX, "%s:%d: %s: helo '%s' is not a host name", path, line, name, g->helo);
            ok = false;
            break;
        }
        char *cur = sources, *tok;
        while (ok && (tok = str_split_next(&cur)) != NULL) {
            if (g->n_sources == VG_SOURCES_MAX) {
                str_fmt(err, VG_ERR_MAX, "%s:%d: %s: more than %d source addresses", path, line, name, VG_SOURCES_MAX);
                ok = false;
            } else if (!parse_source(tok, &g->sources[g->n_sources])) {
                str_fmt(err, VG_ERR_MAX, "%s:%d: %s: bad source address '%s'", path, line, name, tok);
                ok = false;
            } else {
                g->n_sources++;
            }
        }
    }
    table_free(t);
    return ok;
}

/* load_rules - "selector gateway", first match wins */
static bool load_rules(struct vg_set *vs, const char *path, char *err)
{
    char terr[TABLE_ERR_MAX];
    struct table *t = table_load(path, terr);
    if (t == NULL)
        return str_copy(err, VG_ERR_MAX, terr), false;
    vs->rules = calloc(table_size(t) + 1, sizeof *vs->rules);
    if (vs->rules == NULL) {
        table_free(t);
        return str_copy(err, VG_ERR_MAX, "out of memory"), false;
    }
    bool ok = true;
    static const struct {
        const char *prefix;
        enum rule_kind kind;
    } kinds[] = {{"sender:", RULE_SENDER},
                 {"sender_domain:", RULE_SENDER_DOMAIN},
                 {"recipient_domain:", RULE_RECIPIENT_DOMAIN},
                 {"client:", RULE_CLIENT},
                 {"listener:", RULE_LISTENER}};
    for (size_t i = 0; ok && i < table_size(t); i++) {
        const char *key = table_key(t, i), *val = table_value(t, i);
        int line = table_line(t, i);
        struct rule *r = &vs->rules[vs->n_rules];
        int g = vg_index(vs, val);
        if (g < 0) {
            str_fmt(err, VG_ERR_MAX, "%s:%d: unknown virtual gateway '%s' (not in virtual_gateways)", path, line, val);
            ok = false;
            break;
        }
        r->vg = (size_t)g;
        bool found = strcmp(key, "*") == 0;
        r->kind = RULE_ANY;
        for (size_t k = 0; !found && k < sizeof kinds / sizeof kinds[0]; k++) {
            size_t pl = strlen(kinds[k].prefix);
            if (strncmp(key, kinds[k].prefix, pl) == 0) {
                r->kind = kinds[k].kind;
                str_copy(r->value, sizeof r->value, key + pl);
                found = true;
            }
        }
        char why[256];
        if (!found || (r->kind != RULE_ANY && r->value[0] == '\0')) {
            str_fmt(err, VG_ERR_MAX,
                    "%s:%d: bad selector '%s' (sender:, sender_domain:, recipient_domain:, client:, listener: or *)", path,
                    line, key);
            ok = false;
        } else if (r->kind == RULE_CLIENT && !inet_parse_net(r->value, &r->net, why, sizeof why)) {
            str_fmt(err, VG_ERR_MAX, "%s:%d: %s", path, line, why);
            ok = false;
        } else if (r->kind == RULE_LISTENER) {
            struct inet_endpoint ep;
            if (!inet_parse_endpoint(r->value, 0, &ep, why, sizeof why)) {
                str_fmt(err, VG_ERR_MAX, "%s:%d: %s", path, line, why);
                ok = false;
            } else {
                inet_endpoint_str((struct sockaddr *)&ep.ss, r->value, sizeof r->value);
            }
        }
        if (ok)
            vs->n_rules++;
    }
    table_free(t);
    return ok;
}

struct vg_set *vg_load(const struct config *cfg, char err[VG_ERR_MAX])
{
    struct vg_set *vs = calloc(1, sizeof *vs);
    if (vs == NULL)
        return str_copy(err, VG_ERR_MAX, "out of memory"), NULL;
    if (!load_gateways(vs, cfg_str(cfg, P_virtual_gateways), err) ||
        !load_rules(vs, cfg_str(cfg, P_virtual_gateway_classes), err)) {
        vg_free(vs);
        return NULL;
    }
    const char *b = cfg_str(cfg, P_bounce_virtual_gateway);
    if (*b && vg_index(vs, b) < 0) {
        str_fmt(err, VG_ERR_MAX, "%s: bounce_virtual_gateway: unknown virtual gateway '%s'", config_path(cfg), b);
        vg_free(vs);
        return NULL;
    }
    return vs;
}

static bool domain_is(const char *domain, const char *want)
{
    if (want[0] == '.') { /* ".example.com": sub-domains */
        size_t dl = strlen(domain), wl = strlen(want);
        return dl > wl && str_case_eq(domain + dl - wl, want);
    }
    return str_case_eq(domain, want);
}

const char *vg_classify(const struct vg_set *vs, const char *sender, const char *const *rcpts, size_t n_rcpts,
                        const struct sockaddr *client, const char *listener)
{
    for (size_t i = 0; i < vs->n_rules; i++) {
        const struct rule *r = &vs->rules[i];
        bool hit = false;
        switch (r->kind) {
        case RULE_SENDER: hit = str_case_eq(sender, r->value); break;
        case RULE_SENDER_DOMAIN: hit = *sender && domain_is(addr_domain(sender), r->value); break;
        case RULE_RECIPIENT_DOMAIN:
            for (size_t k = 0; !hit && k < n_rcpts; k++)
                hit = domain_is(addr_domain(rcpts[k]), r->value);
            break;
        case RULE_CLIENT: hit = client && inet_net_match(&r->net, client); break;
        case RULE_LISTENER: hit = listener && strcmp(listener, r->value) == 0; break;
        case RULE_ANY: hit = true; break;
        }
        if (hit)
            return vs->v[r->vg].name;
    }
    return "default";
}
