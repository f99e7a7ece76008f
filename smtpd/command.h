/* command.h - SMTP command line parsing (RFC 5321 4.1, RFC 1870 SIZE,
 * RFC 6152 8BITMIME, RFC 6531 SMTPUTF8). Pure functions, no I/O.
 *
 * Owns nothing: results point into the caller's line buffer. */
#ifndef BW_SMTPD_COMMAND_H
#define BW_SMTPD_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_verb { V_EHLO, V_HELO, V_MAIL, V_RCPT, V_DATA, V_RSET, V_NOOP, V_QUIT, V_HELP, V_VRFY, V_UNKNOWN, V_MAX };

/* command_verb_name - "EHLO", ..., "UNKNOWN": also the key of the
 * disconnect line's counters ("ehlo=1"). */
const char *command_verb_name(enum smtp_verb v);

struct smtp_command {
    enum smtp_verb verb;
    char *arg;  /* after the verb (MAIL/RCPT: after "FROM:"/"TO:"), spaces skipped; "" if none */
    bool syntax_ok; /* MAIL without "FROM:", RCPT without "TO:", args where none belong: false */
};

/* command_parse - split one command line (CRLF already removed, NUL-
 * terminated, no NUL inside) into verb and argument. */
void command_parse(char *line, struct smtp_command *cmd);

enum body_type { BODY_NONE, BODY_7BIT, BODY_8BITMIME };

struct mail_params {
    int64_t size;        /* -1 when SIZE= was not given */
    enum body_type body;
    bool smtputf8;
};

enum params_status { PARAMS_OK, PARAMS_UNSUPPORTED, PARAMS_BAD_VALUE };

/* command_mail_params - parse "SIZE=n BODY=8BITMIME SMTPUTF8" after the path
 * of MAIL FROM. On failure the offending keyword is copied into bad. */
enum params_status command_mail_params(char *params, struct mail_params *mp, char *bad, size_t badlen);

/* command_rcpt_params - RCPT TO parameters: none are supported yet (DSN
 * NOTIFY/ORCPT come with the DSN issue), anything given is unsupported. */
enum params_status command_rcpt_params(char *params, char *bad, size_t badlen);

#endif
