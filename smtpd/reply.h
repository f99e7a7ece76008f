/* reply.h - every SMTP reply smtpd sends, in one place, so the wording,
 * codes and enhanced status codes (RFC 3463) cannot drift and tests can rely
 * on them. "%s" fields are filled by session.c. */
#ifndef BW_SMTPD_REPLY_H
#define BW_SMTPD_REPLY_H

#define RPL_GREETING          "220 %s"                      /* smtpd_banner */
#define RPL_OK                "250 2.0.0 Ok"
#define RPL_SENDER_OK         "250 2.1.0 Ok"
#define RPL_RCPT_OK           "250 2.1.5 Ok"
#define RPL_QUEUED            "250 2.0.0 Ok: queued as %s"
#define RPL_HELO              "250 %s"                      /* myhostname */
#define RPL_DATA_GO           "354 End data with <CR><LF>.<CR><LF>"
#define RPL_BYE               "221 2.0.0 Bye"
#define RPL_HELP              "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY"
#define RPL_VRFY              "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"

#define RPL_TIMEOUT           "421 4.4.2 %s Error: timeout exceeded"
#define RPL_TOO_MANY_ERRORS   "421 4.7.0 %s Error: too many errors"
#define RPL_SHUTDOWN          "421 4.3.2 %s Service shutting down, closing transmission channel"
#define RPL_TOO_BUSY          "421 4.7.0 %s Error: too many connections"
#define RPL_SPOOL_ERROR       "451 4.3.0 Error: queue file write error"
#define RPL_NO_MEMORY       "451 4.3.0 Error: out of memory"
#define RPL_NO_MEMORY_RCPT  "452 4.3.0 Error: out of memory"
#define RPL_TOO_MANY_RCPTS    "452 4.5.3 Error: too many recipients"

#define RPL_LINE_TOO_LONG     "500 5.5.2 Error: command line too long"
#define RPL_UNKNOWN_CMD       "502 5.5.2 Error: command not recognized"
#define RPL_SYNTAX            "501 5.5.4 Syntax: %s"        /* usage text */
#define RPL_BAD_SENDER        "501 5.1.7 Bad sender address syntax: %s"
#define RPL_BAD_RCPT          "501 5.1.3 Bad recipient address syntax: %s"
#define RPL_NEED_HELO         "503 5.5.1 Error: send HELO/EHLO first"
#define RPL_NESTED_MAIL       "503 5.5.1 Error: nested MAIL command"
#define RPL_NEED_MAIL         "503 5.5.1 Error: need MAIL command"
#define RPL_NEED_RCPT         "503 5.5.1 Error: need RCPT command"
#define RPL_BAD_PARAM         "555 5.5.4 Unsupported option: %s"
#define RPL_BAD_PARAM_VALUE "501 5.5.4 Bad parameter value: %s"
#define RPL_SIZE_DECLARED     "552 5.3.4 Message size exceeds fixed limit"
#define RPL_SIZE_EXCEEDED     "552 5.3.4 Error: message file too big"
#define RPL_RELAY_DENIED      "554 5.7.1 <%s>: Relay access denied"
#define RPL_BARE_LF           "550 5.5.2 Error: bare <LF> received"
#define RPL_BARE_CR           "550 5.5.2 Error: bare <CR> received"
#define RPL_UTF8_NEEDED       "553 5.6.7 Error: 8-bit address needs SMTPUTF8"
#define RPL_NUL_IN_COMMAND    "500 5.5.2 Error: NUL character in command"

#endif
