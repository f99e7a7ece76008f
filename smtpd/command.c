/* command.c - SMTP command line parsing. */
#include "command.h"
#include "str.h"

#include <string.h>
#include <strings.h>

static const char *const verb_names[V_MAX] = {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET",
                                              "NOOP", "QUIT", "HELP", "VRFY", "UNKNOWN"};

const char *command_verb_name(enum smtp_verb v) { return v < V_MAX ? verb_names[v] : "UNKNOWN"; }

static char *skip_spaces(char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* command_parse - verb, then the argument */
void command_parse(char *line, struct smtp_command *cmd)
{
    cmd->verb = V_UNKNOWN;
    cmd->arg = "";
    cmd->syntax_ok = true;
    size_t vlen = strcspn(line, " \t");
    for (int v = 0; v < V_UNKNOWN; v++)
        if (vlen == 4 && strncasecmp(line, verb_names[v], 4) == 0)
            cmd->verb = (enum smtp_verb)v;
    if (cmd->verb == V_UNKNOWN)
        return;
    char *rest = skip_spaces(line + vlen);
    /* Trailing white space is not part of any argument. */
    size_t n = strlen(rest);
    while (n > 0 && (rest[n - 1] == ' ' || rest[n - 1] == '\t'))
        rest[--n] = '\0';
    const char *prefix = cmd->verb == V_MAIL ? "FROM:" : cmd->verb == V_RCPT ? "TO:" : NULL;
    if (prefix) {
        size_t pl = strlen(prefix);
        if (strncasecmp(rest, prefix, pl) != 0) {
            cmd->syntax_ok = false;
            return;
        }
        rest = skip_spaces(rest + pl);
    }
    switch (cmd->verb) {
    case V_DATA:
    case V_RSET:
    case V_QUIT:
        cmd->syntax_ok = *rest == '\0';
        break;
    case V_EHLO:
    case V_HELO:
    case V_VRFY:
    case V_MAIL:
    case V_RCPT:
        cmd->syntax_ok = *rest != '\0';
        break;
    default:
        break;
    }
    cmd->arg = rest;
}

/* command_mail_params - ESMTP MAIL parameters */
enum params_status command_mail_params(char *params, struct mail_params *mp, char *bad, size_t badlen)
{
    mp->size = -1;
    mp->body = BODY_NONE;
    mp->smtputf8 = false;
    char *cur = params, *tok;
    while ((tok = str_split_next(&cur)) != NULL) {
        char *eq = strchr(tok, '=');
        str_copy(bad, badlen, tok);
        if (eq)
            *eq = '\0';
        const char *val = eq ? eq + 1 : NULL;
        if (strcasecmp(tok, "SIZE") == 0) {
            int64_t v;
            if (val == NULL || *val < '0' || *val > '9' || !str_to_i64(val, 0, INT64_MAX, &v) || mp->size >= 0)
                return PARAMS_BAD_VALUE;
            mp->size = v;
        } else if (strcasecmp(tok, "BODY") == 0) {
            if (val && strcasecmp(val, "7BIT") == 0)
                mp->body = BODY_7BIT;
            else if (val && strcasecmp(val, "8BITMIME") == 0)
                mp->body = BODY_8BITMIME;
            else
                return PARAMS_BAD_VALUE;
        } else if (strcasecmp(tok, "SMTPUTF8") == 0 && val == NULL) {
            mp->smtputf8 = true;
        } else {
            return PARAMS_UNSUPPORTED;
        }
    }
    return PARAMS_OK;
}

/* command_rcpt_params - none supported yet */
enum params_status command_rcpt_params(char *params, char *bad, size_t badlen)
{
    char *cur = params, *tok = str_split_next(&cur);
    if (tok == NULL)
        return PARAMS_OK;
    str_copy(bad, badlen, tok);
    return PARAMS_UNSUPPORTED;
}
