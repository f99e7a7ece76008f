/* table.c - table file parsing and domain lookups. */
#include "table.h"
#include "str.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char *key;
    char *value;
    int line;
};

struct table {
    struct entry *e;
    size_t n, cap;
};

static void set_err(char *err, const char *path, int line, const char *what)
{
    str_fmt(err, TABLE_ERR_MAX, "%s:%d: %s", path, line, what);
}

struct table *table_load(const char *path, char err[TABLE_ERR_MAX])
{
    struct table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return str_copy(err, TABLE_ERR_MAX, "out of memory"), NULL;
    if (path == NULL || *path == '\0')
        return t;
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        str_fmt(err, TABLE_ERR_MAX, "%s: cannot open: %s", path, strerror(errno));
        free(t);
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    bool ok = true;
    while (ok && (n = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)n)) {
            set_err(err, path, lineno, "NUL byte in line");
            ok = false;
            break;
        }
        if (n > 65536) {
            set_err(err, path, lineno, "line too long");
            ok = false;
            break;
        }
        char *p = str_trim(line);
        if (*p == '\0' || *p == '#')
            continue;
        char *sp = p + strcspn(p, " \t");
        char *value = *sp ? str_trim(sp + 1) : sp;
        *sp = '\0';
        if (*value == '\0') {
            set_err(err, path, lineno, "key without a value");
            ok = false;
            break;
        }
        if (t->n == TABLE_ENTRIES_MAX) {
            set_err(err, path, lineno, "too many entries");
            ok = false;
            break;
        }
        if (t->n == t->cap) {
            size_t nc = t->cap ? t->cap * 2 : 16;
            struct entry *ne = realloc(t->e, nc * sizeof *ne);
            if (ne == NULL) {
                set_err(err, path, lineno, "out of memory");
                ok = false;
                break;
            }
            t->e = ne;
            t->cap = nc;
        }
        struct entry *e = &t->e[t->n];
        e->key = str_dup(p);
        e->value = str_dup(value);
        e->line = lineno;
        if (e->key == NULL || e->value == NULL) {
            free(e->key);
            free(e->value);
            set_err(err, path, lineno, "out of memory");
            ok = false;
            break;
        }
        str_lower(e->key);
        t->n++;
    }
    free(line);
    fclose(fp);
    if (!ok) {
        table_free(t);
        return NULL;
    }
    return t;
}

void table_free(struct table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->e[i].key);
        free(t->e[i].value);
    }
    free(t->e);
    free(t);
}

const char *table_find(const struct table *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (str_case_eq(t->e[i].key, key))
            return t->e[i].value;
    return NULL;
}

const char *table_find_domain(const struct table *t, const char *domain, const char *fallback)
{
    const char *v = table_find(t, domain);
    if (v)
        return v;
    for (const char *p = strchr(domain, '.'); p; p = strchr(p + 1, '.'))
        if ((v = table_find(t, p)) != NULL)
            return v;
    return fallback ? table_find(t, fallback) : NULL;
}

size_t table_size(const struct table *t) { return t->n; }
const char *table_key(const struct table *t, size_t i) { return t->e[i].key; }
const char *table_value(const struct table *t, size_t i) { return t->e[i].value; }
int table_line(const struct table *t, size_t i) { return t->e[i].line; }

bool table_attr(const char *value, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t tl = strcspn(p, " \t");
        if (tl > nl && strncmp(p, name, nl) == 0 && p[nl] == '=')
            return str_ncopy(out, outlen, p + nl + 1, tl - nl - 1);
        p += tl;
    }
    return false;
}
