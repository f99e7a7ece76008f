/* config.c - main.cf parser, $name expander and typed validator. */
#include "config.h"
#include "buf.h"
#include "inet.h"
#include "str.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LIBEXECDIR
#define LIBEXECDIR "/usr/local/libexec"
#endif

#define EXPAND_DEPTH_MAX 32  /* deeper nesting is reported as a loop */
#define WARNINGS_MAX 64

const struct param_info param_table[P_COUNT] = {
#define PARAM(type, name, def, min, max, extra, doc) {PT_##type, #name, def, min, max, extra, doc},
#include "params.def"
#undef PARAM
};

/* One "name = value" as set in main.cf or by an override. */
struct setting {
    char *name;
    char *raw;
    int line;          /* 0 for a command-line override */
    char *expanded;    /* filled on demand */
    int busy;          /* expansion in progress: loop detection */
};

struct config {
    char *dir;
    char *path;
    struct setting *set;  /* every name set, known or not */
    size_t n_set, cap_set;
    int known[P_COUNT];   /* index into set[] or -1 */
    char *defaults[P_COUNT];
    char *def_expanded[P_COUNT];
    int def_busy[P_COUNT];
    int64_t value[P_COUNT];
    char *warnings[WARNINGS_MAX];
    size_t n_warnings;
    bool lenient;         /* CONFIG_LENIENT: errors become warnings */
};

/* param_type_name - type names for docs */
const char *param_type_name(enum param_type t)
{
    static const char *const names[] = {"string", "integer", "boolean", "duration", "size",
                                        "list", "duration list", "listener list", "network list",
                                        "address list", "choice"};
    return (size_t)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* param_find - name lookup */
int param_find(const char *name)
{
    for (int i = 0; i < P_COUNT; i++)
        if (strcmp(param_table[i].name, name) == 0)
            return i;
    return -1;
}

/* parse_duration - number with optional s/m/h/d/w suffix */
bool parse_duration(const char *s, int64_t *seconds)
{
    if (!isdigit((unsigned char)*s))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || v < 0)
        return false;
    int64_t mult = 1;
    if (*end != '\0') {
        switch (*end) {
        case 's': mult = 1; break;
        case 'm': mult = 60; break;
        case 'h': mult = 3600; break;
        case 'd': mult = 86400; break;
        case 'w': mult = 604800; break;
        default: return false;
        }
        if (end[1] != '\0')
            return false;
    }
    if (v > INT64_MAX / mult)
        return false;
    *seconds = (int64_t)v * mult;
    return true;
}

/* parse_bool - boolean words */
bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (str_case_eq(s, yes[i]))
            return *out = true, true;
        if (str_case_eq(s, no[i]))
            return *out = false, true;
    }
    return false;
}

static void add_warning(struct config *cfg, const char *text)
{
    if (cfg->n_warnings < WARNINGS_MAX) {
        char *w = str_dup(text);
        if (w)
            cfg->warnings[cfg->n_warnings++] = w;
    }
}

/* where - "FILE:LINE" or "command line" for a setting */
static void where(const struct config *cfg, int line, char *out, size_t len)
{
    if (line > 0)
        str_fmt(out, len, "%s:%d", cfg->path, line);
    else if (line == 0)
        str_copy(out, len, "command line (-o)");
    else
        str_fmt(out, len, "%s: default", cfg->path);
}

/* set_value - record name=value (later settings replace earlier ones) */
static bool set_value(struct config *cfg, const char *name, size_t nlen, const char *raw, int line)
{
    for (size_t i = 0; i < cfg->n_set; i++) {
        if (strlen(cfg->set[i].name) == nlen && memcmp(cfg->set[i].name, name, nlen) == 0) {
            char *r = str_dup(raw);
            if (r == NULL)
                return false;
            free(cfg->set[i].raw);
            cfg->set[i].raw = r;
            cfg->set[i].line = line;
            return true;
        }
    }
    if (cfg->n_set == cfg->cap_set) {
        size_t cap = cfg->cap_set ? cfg->cap_set * 2 : 32;
        struct setting *p = realloc(cfg->set, cap * sizeof *p);
        if (p == NULL)
            return false;
        cfg->set = p;
        cfg->cap_set = cap;
    }
    struct setting *s = &cfg->set[cfg->n_set];
    memset(s, 0, sizeof *s);
    s->name = str_ndup(name, nlen);
    s->raw = str_dup(raw);
    s->line = line;
    if (s->name == NULL || s->raw == NULL) {
        free(s->name);
        free(s->raw);
        return false;
    }
    cfg->n_set++;
    return true;
}

static bool parse_line_strict(struct config *cfg, char *text, int line, char *err);

/* parse_line - one logical line; in lenient mode a bad line is skipped */
static bool parse_line(struct config *cfg, char *text, int line, char *err)
{
    if (parse_line_strict(cfg, text, line, err))
        return true;
    if (!cfg->lenient)
        return false;
    add_warning(cfg, err);
    err[0] = '\0';
    return true;
}

/* parse_line_strict - "name = value" */
static bool parse_line_strict(struct config *cfg, char *text, int line, char *err)
{
    char *p = text;
    char *name = p;
    while (isalnum((unsigned char)*p) || *p == '_')
        p++;
    size_t nlen = (size_t)(p - name);
    if (nlen == 0) {
        str_fmt(err, CONFIG_ERR_MAX, "%s:%d: expected 'name = value'", cfg->path, line);
        return false;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '=') {
        str_fmt(err, CONFIG_ERR_MAX, "%s:%d: missing '=' after parameter name '%.*s'", cfg->path, line,
                (int)nlen, name);
        return false;
    }
    char *value = str_trim(p + 1);
    if (!set_value(cfg, name, nlen, value, line)) {
        str_fmt(err, CONFIG_ERR_MAX, "%s:%d: out of memory", cfg->path, line);
        return false;
    }
    return true;
}

/* read_file - split main.cf into logical lines and parse them */
static bool read_file(struct config *cfg, char *err)
{
    FILE *fp = fopen(cfg->path, "r");
    if (fp == NULL) {
        if (errno == ENOENT)
            return true; /* all defaults */
        str_fmt(err, CONFIG_ERR_MAX, "%s: cannot open: %s", cfg->path, strerror(errno));
        return false;
    }
    struct buf logical;
    buf_init(&logical, CONFIG_LINE_MAX);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    int lineno = 0, logical_start = 0;
    size_t total = 0;
    bool ok = true;
    while (ok && (got = getline(&line, &line_cap, fp)) >= 0) {
        size_t n = (size_t)got;
        lineno++;
        total += n;
        if (total > CONFIG_FILE_MAX) {
            str_fmt(err, CONFIG_ERR_MAX, "%s:%d: file larger than %d bytes", cfg->path, lineno, CONFIG_FILE_MAX);
            ok = false;
            break;
        }
        if (n > CONFIG_LINE_MAX) {
            str_fmt(err, CONFIG_ERR_MAX, "%s:%d: line longer than %d bytes", cfg->path, lineno, CONFIG_LINE_MAX);
            ok = false;
            break;
        }
        if (memchr(line, '\0', n) != NULL) {
            str_fmt(err, CONFIG_ERR_MAX, "%s:%d: NUL byte in line", cfg->path, lineno);
            ok = false;
            break;
        }
        char *t = str_trim(line);
        if (*t == '\0' || *t == '#')
            continue;
        if (line[0] == ' ' || line[0] == '\t') {
            if (logical.len == 0) {
                str_fmt(err, CONFIG_ERR_MAX, "%s:%d: continuation line without a parameter before it", cfg->path,
                        lineno);
                ok = false;
                break;
            }
            if (!buf_puts(&logical, " ") || !buf_puts(&logical, t)) {
                str_fmt(err, CONFIG_ERR_MAX, "%s:%d: logical line longer than %d bytes", cfg->path, lineno,
                        CONFIG_LINE_MAX);
                ok = false;
            }
            continue;
        }
        if (logical.len > 0) {
            ok = parse_line(cfg, logical.data, logical_start, err);
            buf_reset(&logical);
        }
        logical_start = lineno;
        if (ok && !buf_puts(&logical, t)) {
            str_fmt(err, CONFIG_ERR_MAX, "%s:%d: out of memory", cfg->path, lineno);
            ok = false;
        }
    }
    if (ok && ferror(fp)) {
        str_fmt(err, CONFIG_ERR_MAX, "%s: read error: %s", cfg->path, strerror(errno));
        ok = false;
    }
    if (ok && logical.len > 0)
        ok = parse_line(cfg, logical.data, logical_start, err);
    buf_free(&logical);
    free(line);
    fclose(fp);
    return ok;
}

static bool expand_text(struct config *cfg, const char *text, struct buf *out, const char *owner, int line,
                        int depth, char *err);

/* find_setting - index of a set name, or -1 */
static int find_setting(const struct config *cfg, const char *name, size_t nlen)
{
    for (size_t i = 0; i < cfg->n_set; i++)
        if (strlen(cfg->set[i].name) == nlen && memcmp(cfg->set[i].name, name, nlen) == 0)
            return (int)i;
    return -1;
}

/* resolve - expanded value of a name, computing it on first use */
static const char *resolve(struct config *cfg, const char *name, size_t nlen, const char *owner, int line,
                           int depth, char *err)
{
    char loc[CONFIG_ERR_MAX / 2];
    where(cfg, line, loc, sizeof loc);
    if (depth > EXPAND_DEPTH_MAX) {
        str_fmt(err, CONFIG_ERR_MAX, "%s: %s: expansion nested too deeply (loop?) at $%.*s", loc, owner,
                (int)nlen, name);
        return NULL;
    }
    int si = find_setting(cfg, name, nlen);
    char pname[128];
    str_ncopy(pname, sizeof pname, name, nlen);
    int id = param_find(pname);
    char **slot;
    int *busy;
    const char *raw;
    int where_line;
    if (si >= 0) {
        slot = &cfg->set[si].expanded;
        busy = &cfg->set[si].busy;
        raw = cfg->set[si].raw;
        where_line = cfg->set[si].line;
    } else if (id >= 0) {
        slot = &cfg->def_expanded[id];
        busy = &cfg->def_busy[id];
        raw = cfg->defaults[id];
        where_line = -1;
    } else {
        str_fmt(err, CONFIG_ERR_MAX, "%s: %s: unknown parameter $%.*s in value", loc, owner, (int)nlen, name);
        return NULL;
    }
    if (*slot)
        return *slot;
    if (*busy) {
        str_fmt(err, CONFIG_ERR_MAX, "%s: %s: expansion loop via $%.*s", loc, owner, (int)nlen, name);
        return NULL;
    }
    *busy = 1;
    struct buf out;
    buf_init(&out, CONFIG_LINE_MAX);
    bool ok = expand_text(cfg, raw, &out, pname, where_line, depth + 1, err) && buf_puts(&out, "");
    *busy = 0;
    if (!ok) {
        buf_free(&out);
        return NULL;
    }
    *slot = out.data ? out.data : str_dup("");
    return *slot;
}

/* expand_text - substitute $name, ${name}, $(name), ${name?x}, ${name:x}, $$ */
static bool expand_text(struct config *cfg, const char *text, struct buf *out, const char *owner, int line,
                        int depth, char *err)
{
    char loc[CONFIG_ERR_MAX / 2];
    for (const char *p = text; *p;) {
        if (*p != '$') {
            const char *next = strchr(p, '$');
            size_t n = next ? (size_t)(next - p) : strlen(p);
            if (!buf_append(out, p, n))
                goto too_long;
            p += n;
            continue;
        }
        p++;
        if (*p == '$') {
            if (!buf_append(out, "$", 1))
                goto too_long;
            p++;
            continue;
        }
        char open = 0, close = 0;
        if (*p == '{' || *p == '(') {
            open = *p;
            close = open == '{' ? '}' : ')';
            p++;
        }
        const char *name = p;
        while (isalnum((unsigned char)*p) || *p == '_')
            p++;
        size_t nlen = (size_t)(p - name);
        if (nlen == 0) {
            where(cfg, line, loc, sizeof loc);
            str_fmt(err, CONFIG_ERR_MAX, "%s: %s: '$' not followed by a parameter name", loc, owner);
            return false;
        }
        const char *alt = NULL;
        size_t alt_len = 0;
        char op = 0;
        if (open) {
            if (*p == '?' || *p == ':') {
                op = *p++;
                alt = p;
                int level = 1;
                while (*p && level > 0) {
                    if (*p == open)
                        level++;
                    else if (*p == close)
                        level--;
                    if (level > 0)
                        p++;
                }
                alt_len = (size_t)(p - alt);
            }
            if (*p != close) {
                where(cfg, line, loc, sizeof loc);
                str_fmt(err, CONFIG_ERR_MAX, "%s: %s: unterminated '%c%c'", loc, owner, '$', open);
                return false;
            }
            p++;
        }
        const char *val = resolve(cfg, name, nlen, owner, line, depth, err);
        if (val == NULL)
            return false;
        if (op == 0) {
            if (!buf_puts(out, val))
                goto too_long;
        } else if ((op == '?' && *val) || (op == ':' && !*val)) {
            char *alt_copy = str_ndup(alt, alt_len);
            if (alt_copy == NULL)
                goto too_long;
            bool ok = expand_text(cfg, alt_copy, out, owner, line, depth + 1, err);
            free(alt_copy);
            if (!ok)
                return false;
        }
    }
    return true;
too_long:
    where(cfg, line, loc, sizeof loc);
    str_fmt(err, CONFIG_ERR_MAX, "%s: %s: expanded value too long or out of memory", loc, owner);
    return false;
}

/* make_default - substitute @TOKEN@ placeholders of a default */
static char *make_default(const char *def)
{
    if (strcmp(def, "@HOSTNAME@") == 0) {
        char host[256];
        if (gethostname(host, sizeof host) != 0)
            str_copy(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        return str_dup(host);
    }
    if (strcmp(def, "@NCPU@") == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        char num[32];
        str_fmt(num, sizeof num, "%ld", n > 0 ? (n > 256 ? 256 : n) : 1);
        return str_dup(num);
    }
    if (strncmp(def, "@LIBEXECDIR@", 12) == 0) {
        char path[1024];
        str_fmt(path, sizeof path, "%s%s", LIBEXECDIR, def + 12);
        return str_dup(path);
    }
    return str_dup(def);
}

/* check_list - validate every element of a list-typed value */
static bool check_list(const struct param_info *pi, const char *value, char *why, size_t whylen)
{
    char *copy = str_dup(value), *cur = copy, *tok;
    if (copy == NULL)
        return str_copy(why, whylen, "out of memory"), false;
    bool ok = true;
    while (ok && (tok = str_split_next(&cur)) != NULL) {
        struct inet_endpoint ep;
        struct inet_net net;
        int64_t secs;
        char e[256];
        switch (pi->type) {
        case PT_TIMES:
            if (!parse_duration(tok, &secs) || secs < pi->min || secs > pi->max) {
                str_fmt(why, whylen, "'%s' is not a valid duration (%lld..%lld seconds, suffix s m h d w)", tok,
                        (long long)pi->min, (long long)pi->max);
                ok = false;
            }
            break;
        case PT_LISTEN:
            if (!inet_parse_endpoint(tok, 0, &ep, e, sizeof e))
                ok = str_copy(why, whylen, e) && false;
            break;
        case PT_ADDRS:
            if (!inet_parse_endpoint(tok, 53, &ep, e, sizeof e))
                ok = str_copy(why, whylen, e) && false;
            break;
        case PT_NETS:
            if (!inet_parse_net(tok, &net, e, sizeof e))
                ok = str_copy(why, whylen, e) && false;
            break;
        default:
            break;
        }
    }
    free(copy);
    return ok;
}

/* check_value - type and range check of one expanded value */
static bool check_value(const struct param_info *pi, const char *v, int64_t *out, char *why, size_t whylen)
{
    int64_t n = 0;
    bool b;
    switch (pi->type) {
    case PT_INT:
        if (!str_to_i64(v, pi->min, pi->max, &n))
            return str_fmt(why, whylen, "'%s' is not an integer in %lld..%lld", v, (long long)pi->min,
                           (long long)pi->max),
                   false;
        break;
    case PT_SIZE:
        if (!str_to_i64(v, pi->min, pi->max, &n) || *v == '+')
            return str_fmt(why, whylen, "'%s' is not a size in bytes in %lld..%lld", v, (long long)pi->min,
                           (long long)pi->max),
                   false;
        break;
    case PT_TIME:
        if (!parse_duration(v, &n) || n < pi->min || n > pi->max)
            return str_fmt(why, whylen, "'%s' is not a duration in %lld..%lld seconds (suffix s m h d w)", v,
                           (long long)pi->min, (long long)pi->max),
                   false;
        break;
    case PT_BOOL:
        if (!parse_bool(v, &b))
            return str_fmt(why, whylen, "'%s' is not yes or no", v), false;
        n = b;
        break;
    case PT_ENUM: {
        bool found = false;
        const char *c = pi->extra;
        size_t vl = strlen(v);
        while (*c) {
            const char *bar = strchr(c, '|');
            size_t cl = bar ? (size_t)(bar - c) : strlen(c);
            if (cl == vl && memcmp(c, v, vl) == 0) {
                found = true;
                break;
            }
            c += cl + (bar ? 1 : 0);
            n++;
        }
        if (!found)
            return str_fmt(why, whylen, "'%s' is not one of %s", v, pi->extra), false;
        break;
    }
    case PT_TIMES:
    case PT_LISTEN:
    case PT_ADDRS:
    case PT_NETS:
        if (!check_list(pi, v, why, whylen))
            return false;
        break;
    case PT_STR:
    case PT_LIST:
        break;
    }
    *out = n;
    return true;
}

/* config_load - parse, expand and check */
struct config *config_load(const char *dir, const char *const *overrides, size_t n_overrides,
                           char err[CONFIG_ERR_MAX])
{
    return config_load_flags(dir, overrides, n_overrides, 0, err);
}

/* forget_setting - lenient mode: drop a bad setting so the default applies */
static void forget_setting(struct config *cfg, int id, const char *why)
{
    add_warning(cfg, why);
    int k = cfg->known[id];
    if (k >= 0) {
        free(cfg->set[k].expanded);
        cfg->set[k].expanded = NULL;
        free(cfg->set[k].raw);
        cfg->set[k].raw = str_dup(cfg->defaults[id]);
        cfg->set[k].line = -1;
        cfg->known[id] = -1;
    }
}

/* config_load_flags - config_load with CONFIG_LENIENT */
struct config *config_load_flags(const char *dir, const char *const *overrides, size_t n_overrides, unsigned flags,
                                 char err[CONFIG_ERR_MAX])
{
    struct config *cfg = calloc(1, sizeof *cfg);
    if (cfg)
        cfg->lenient = (flags & CONFIG_LENIENT) != 0;
    char path[4096];
    err[0] = '\0';
    if (cfg == NULL || !str_fmt(path, sizeof path, "%s/main.cf", dir)) {
        str_copy(err, CONFIG_ERR_MAX, cfg ? "configuration directory name too long" : "out of memory");
        free(cfg);
        return NULL;
    }
    cfg->dir = str_dup(dir);
    cfg->path = str_dup(path);
    if (cfg->dir == NULL || cfg->path == NULL)
        goto nomem;
    for (int i = 0; i < P_COUNT; i++) {
        cfg->known[i] = -1;
        if ((cfg->defaults[i] = make_default(param_table[i].def)) == NULL)
            goto nomem;
    }
    if (!read_file(cfg, err))
        goto fail;
    for (size_t i = 0; i < n_overrides; i++) {
        const char *eq = strchr(overrides[i], '=');
        if (eq == NULL || eq == overrides[i]) {
            str_fmt(err, CONFIG_ERR_MAX, "-o %s: expected name=value", overrides[i]);
            goto fail;
        }
        char value[CONFIG_LINE_MAX];
        if (!str_copy(value, sizeof value, eq + 1)) {
            str_fmt(err, CONFIG_ERR_MAX, "-o %.*s: value longer than %d bytes", (int)(eq - overrides[i]), overrides[i], CONFIG_LINE_MAX - 1);
            goto fail;
        }
        size_t nlen = (size_t)(eq - overrides[i]);
        while (nlen > 0 && overrides[i][nlen - 1] == ' ')
            nlen--;
        if (!set_value(cfg, overrides[i], nlen, str_trim(value), 0))
            goto nomem;
    }
    for (size_t i = 0; i < cfg->n_set; i++) {
        int id = param_find(cfg->set[i].name);
        if (id >= 0) {
            cfg->known[id] = (int)i;
        } else {
            /* Set but read by no daemon (a typo, or a name only used in
             * $name expansions): worth a word to the administrator. */
            char w[CONFIG_ERR_MAX], loc[CONFIG_ERR_MAX / 2];
            where(cfg, cfg->set[i].line, loc, sizeof loc);
            str_fmt(w, sizeof w, "%s: unknown parameter %s", loc, cfg->set[i].name);
            add_warning(cfg, w);
        }
    }
    for (int id = 0; id < P_COUNT; id++) {
        const struct param_info *pi = &param_table[id];
        int line = cfg->known[id] >= 0 ? cfg->set[cfg->known[id]].line : -1;
        const char *v = resolve(cfg, pi->name, strlen(pi->name), pi->name, line, 0, err);
        if (v == NULL && cfg->lenient && line != -1) {
            forget_setting(cfg, id, err);
            v = resolve(cfg, pi->name, strlen(pi->name), pi->name, -1, 0, err);
        }
        if (v == NULL)
            goto fail;
        char why[CONFIG_ERR_MAX / 2], loc[CONFIG_ERR_MAX / 2];
        if (!check_value(pi, v, &cfg->value[id], why, sizeof why)) {
            where(cfg, line, loc, sizeof loc);
            str_fmt(err, CONFIG_ERR_MAX, "%s: %s: %s", loc, pi->name, why);
            if (!cfg->lenient || line == -1)
                goto fail;
            forget_setting(cfg, id, err);
            id--; /* check the default instead */
            continue;
        }
    }
    /* Expand the unknown names too, so that their errors surface now. */
    for (size_t i = 0; i < cfg->n_set; i++)
        if (resolve(cfg, cfg->set[i].name, strlen(cfg->set[i].name), cfg->set[i].name, cfg->set[i].line, 0,
                    err) == NULL && !cfg->lenient)
            goto fail;
    err[0] = '\0';
    return cfg;
nomem:
    str_copy(err, CONFIG_ERR_MAX, "out of memory");
fail:
    config_free(cfg);
    return NULL;
}

/* config_free - release a configuration */
void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_set; i++) {
        free(cfg->set[i].name);
        free(cfg->set[i].raw);
        free(cfg->set[i].expanded);
    }
    free(cfg->set);
    for (int i = 0; i < P_COUNT; i++) {
        free(cfg->defaults[i]);
        free(cfg->def_expanded[i]);
    }
    for (size_t i = 0; i < cfg->n_warnings; i++)
        free(cfg->warnings[i]);
    free(cfg->dir);
    free(cfg->path);
    free(cfg);
}

const char *config_dir(const struct config *cfg) { return cfg->dir; }
const char *config_path(const struct config *cfg) { return cfg->path; }

/* cfg_str - expanded value */
const char *cfg_str(const struct config *cfg, enum param_id id)
{
    int k = cfg->known[id];
    const char *v = k >= 0 ? cfg->set[k].expanded : cfg->def_expanded[id];
    return v ? v : "";
}

int64_t cfg_int(const struct config *cfg, enum param_id id) { return cfg->value[id]; }

/* cfg_raw - unexpanded value */
const char *cfg_raw(const struct config *cfg, enum param_id id)
{
    int k = cfg->known[id];
    return k >= 0 ? cfg->set[k].raw : cfg->defaults[id];
}

bool cfg_is_set(const struct config *cfg, enum param_id id) { return cfg->known[id] >= 0; }

/* cfg_lookup - any set name */
const char *cfg_lookup(const struct config *cfg, const char *name)
{
    int i = find_setting(cfg, name, strlen(name));
    if (i >= 0)
        return cfg->set[i].expanded ? cfg->set[i].expanded : "";
    int id = param_find(name);
    return id >= 0 ? cfg_str(cfg, (enum param_id)id) : NULL;
}

/* config_warning - i-th warning */
const char *config_warning(const struct config *cfg, size_t i)
{
    return i < cfg->n_warnings ? cfg->warnings[i] : NULL;
}
