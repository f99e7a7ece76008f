/* table.h - the table files of DESIGN §5 (smtp_routes, destination_controls,
 * virtual_gateways, virtual_gateway_classes): '#' comments, one entry per
 * line, a key then a value (the rest of the line); lookups by domain where
 * a key starting with '.' matches sub-domains and "*" (or "default") is the
 * fallback.
 *
 * Owns the parsed entries of one file. Errors: table_load() returns NULL
 * with "FILE:LINE: what is wrong" in err. */
#ifndef BW_TABLE_H
#define BW_TABLE_H

#include <stdbool.h>
#include <stddef.h>

#define TABLE_ERR_MAX 512
#define TABLE_ENTRIES_MAX 100000

struct table;

/* table_load - parse path ("" gives an empty table). NULL on error. */
struct table *table_load(const char *path, char err[TABLE_ERR_MAX]);

void table_free(struct table *t);

/* table_find - exact key (case-insensitive), or NULL. */
const char *table_find(const struct table *t, const char *key);

/* table_find_domain - value for a domain: exact key, then ".parent" keys
 * from the nearest parent up, then the fallback key (e.g. "*" or "default",
 * NULL for none). NULL when nothing matches. */
const char *table_find_domain(const struct table *t, const char *domain, const char *fallback);

/* table_size, table_key, table_value, table_line - iterate in file order. */
size_t table_size(const struct table *t);
const char *table_key(const struct table *t, size_t i);
const char *table_value(const struct table *t, size_t i);
int table_line(const struct table *t, size_t i);

/* table_attr - value of "name=" in an "a=1 b=2" value into out; false if absent. */
bool table_attr(const char *value, const char *name, char *out, size_t outlen);

#endif
