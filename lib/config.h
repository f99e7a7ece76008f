/* config.h - main.cf: parsing, $name expansion, typed values (DESIGN §5).
 *
 * Owns one parsed configuration: every parameter of params.def with its raw
 * text, expanded text, typed value and where it was set, plus the unknown
 * names that were set (kept for $name expansions and warnings).
 *
 * Syntax (Postfix's): "name = value"; lines whose first non-blank character is
 * '#' and blank lines are ignored; a line starting with white space continues
 * the previous one; $name, ${name} and $(name) expand other parameters,
 * ${name?text} gives text when name is non-empty, ${name:text} when empty;
 * "$$" is a literal '$'.
 *
 * Errors: config_load() returns NULL and writes one line into err, shaped
 * "FILE:LINE: PARAMETER: what is wrong" (or "FILE:LINE: what is wrong").
 * An unknown parameter is a warning (config_warning()), not an error. */
#ifndef BW_CONFIG_H
#define BW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum param_type { PT_STR, PT_INT, PT_BOOL, PT_TIME, PT_SIZE, PT_LIST, PT_TIMES, PT_LISTEN, PT_NETS, PT_ADDRS, PT_ENUM };

enum param_id {
#define PARAM(type, name, def, min, max, extra, doc) P_##name,
#include "params.def"
#undef PARAM
    P_COUNT
};

struct param_info {
    enum param_type type;
    const char *name;
    const char *def; /* unexpanded default, before @TOKEN@ substitution */
    int64_t min, max;
    const char *extra;
    const char *doc;
};

/* param_table - the declared parameters, indexed by enum param_id. */
extern const struct param_info param_table[P_COUNT];

/* param_type_name - "string", "integer", ... for documentation. */
const char *param_type_name(enum param_type t);

/* param_find - id of a parameter name, or -1. */
int param_find(const char *name);

struct config;

#define CONFIG_ERR_MAX 512
#define CONFIG_FILE_MAX (1024 * 1024)  /* a main.cf larger than this is refused */
#define CONFIG_LINE_MAX (64 * 1024)    /* longest logical line */

/* config_load - read DIR/main.cf (a missing file means all defaults), apply
 * overrides ("name=value" strings, may be NULL), expand and type-check every
 * parameter. Returns NULL with err filled on the first error or on ENOMEM. */
struct config *config_load(const char *dir, const char *const *overrides, size_t n_overrides,
                           char err[CONFIG_ERR_MAX]);

#define CONFIG_LENIENT 1u /* errors in values become warnings, defaults apply */

/* config_load_flags - config_load with flags: CONFIG_LENIENT is for commands
 * that must work on a broken file (mailctl stop/status): bad lines are
 * skipped and bad values replaced by their defaults, each with a warning. */
struct config *config_load_flags(const char *dir, const char *const *overrides, size_t n_overrides, unsigned flags,
                                 char err[CONFIG_ERR_MAX]);

/* config_free - release everything; NULL is fine. */
void config_free(struct config *cfg);

/* config_dir, config_path - where it came from ("DIR", "DIR/main.cf"). */
const char *config_dir(const struct config *cfg);
const char *config_path(const struct config *cfg);

/* cfg_str - expanded text of a parameter (never NULL). */
const char *cfg_str(const struct config *cfg, enum param_id id);

/* cfg_int - typed value: INT as is, BOOL 0/1, TIME in seconds, SIZE in bytes. */
int64_t cfg_int(const struct config *cfg, enum param_id id);

/* cfg_raw - the text as written (unexpanded) or the default. */
const char *cfg_raw(const struct config *cfg, enum param_id id);

/* cfg_is_set - true when main.cf or an override set the parameter. */
bool cfg_is_set(const struct config *cfg, enum param_id id);

/* cfg_lookup - expanded value of any name that was set, known or unknown
 * (an unknown one may serve $name expansions), else NULL. */
const char *cfg_lookup(const struct config *cfg, const char *name);

/* config_warning - the i-th warning text ("FILE:LINE: unknown parameter x"),
 * or NULL past the last. */
const char *config_warning(const struct config *cfg, size_t i);

/* parse_duration - "30", "30s", "5m", "2h", "1d", "1w" into seconds.
 * False on junk, negative or overflow. */
bool parse_duration(const char *s, int64_t *seconds);

/* parse_bool - yes/no, true/false, on/off, 1/0 (any case). */
bool parse_bool(const char *s, bool *out);

#endif
