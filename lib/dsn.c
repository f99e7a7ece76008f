/* dsn.c - RFC 3464 delivery status notifications as RFC 6522
 * multipart/report messages.
 *
 * Everything that comes from outside (addresses, remote replies, host names,
 * the original headers) is treated as hostile: it is reduced to printable
 * US-ASCII (control and 8-bit bytes become '?', CR/LF/TAB become word
 * breaks), and every line is kept within RFC 5322's 998 octets by folding,
 * so no input can end a header, start a new one, or fake a MIME boundary.
 * The boundary is chosen only after the three parts are built, and is
 * varied until it occurs nowhere in them. The whole report is 7-bit. */
#include "dsn.h"
#include "str.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DSN_LINE_MAX 998      /* RFC 5322 2.1.1: octets per line, without CRLF */
#define DSN_LINE_SOFT 78      /* RFC 5322 2.1.1: SHOULD for header lines */
#define DSN_TEXT_SOFT 76      /* width of the human-readable part */
#define DSN_HOST_MAX 253      /* longest DNS name we put into headers */
#define DSN_SEED_MAX 32       /* seed characters kept in the boundary (RFC 2046: boundary <= 70) */
#define DSN_ID_MAX 64         /* id characters kept in the Message-ID */
#define DSN_DATE_LEN 40       /* "Thu, 01 Jan 1970 00:00:00 +0000" and room */
#define DSN_BOUNDARY_LEN 72   /* RFC 2046: at most 70 characters, plus NUL */
#define DSN_MAX_TIME INT64_C(253402300799) /* 9999-12-31 23:59:59: 4-digit years */

#define CRLF "\r\n"

/* is_break - bytes that separate words in free text; folded, never copied */
static bool is_break(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* clean_byte - printable US-ASCII as is, anything else '?' */
static char clean_byte(unsigned char c)
{
    return (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
}

/* put_clean - append s[0..n) with every byte passed through clean_byte;
 * keep_tab leaves TAB alone (header folding whitespace) */
static bool put_clean(struct buf *b, const char *s, size_t n, bool keep_tab)
{
    char chunk[256];
    while (n > 0) {
        size_t k = n < sizeof chunk ? n : sizeof chunk;
        for (size_t i = 0; i < k; i++) {
            unsigned char c = (unsigned char)s[i];
            chunk[i] = (keep_tab && c == '\t') ? '\t' : clean_byte(c);
        }
        if (!buf_append(b, chunk, k))
            return false;
        s += k;
        n -= k;
    }
    return true;
}

/* put_folded - append text[0..len) as one logical line: first, then the
 * words of text (runs of SP/HT/CR/LF are word breaks, collapsed to one
 * space or to a fold), lines broken before a word that would pass soft
 * columns, each new line starting with cont; lead goes before the first word
 * of every line. A word that does not fit in DSN_LINE_MAX is cut. Ends in CRLF.
 * For a header field: first "Name:", cont "", lead " " gives RFC 5322 folding
 * whose unfolding restores the words separated by single spaces. */
static bool put_folded(struct buf *b, const char *first, const char *cont, const char *lead,
                       size_t soft, const char *text, size_t len)
{
    size_t contlen = strlen(cont), leadlen = strlen(lead);
    size_t col = strlen(first);
    bool line_empty = true;   /* no word on the current line yet */
    size_t i = 0;

    if (!buf_puts(b, first))
        return false;
    for (;;) {
        while (i < len && is_break((unsigned char)text[i]))
            i++;
        if (i == len)
            break;
        const char *word = text + i;
        while (i < len && !is_break((unsigned char)text[i]))
            i++;
        size_t wl = (size_t)(text + i - word);

        if (!line_empty) {
            if (col + 1 + wl <= soft) {
                if (!buf_puts(b, " "))
                    return false;
                col++;
            } else {
                if (!buf_puts(b, CRLF) || !buf_puts(b, cont))
                    return false;
                col = contlen;
                line_empty = true;
            }
        }
        if (line_empty) {
            if (!buf_puts(b, lead))
                return false;
            col += leadlen;
        }
        while (wl > 0) {   /* col < DSN_LINE_MAX: prefixes are short */
            size_t room = DSN_LINE_MAX - col;
            size_t k = wl < room ? wl : room;
            if (!put_clean(b, word, k, false))
                return false;
            col += k;
            word += k;
            wl -= k;
            if (wl > 0) {
                if (!buf_puts(b, CRLF) || !buf_puts(b, cont) || !buf_puts(b, lead))
                    return false;
                col = contlen + leadlen;
            }
        }
        line_empty = false;
    }
    return buf_puts(b, CRLF);
}

/* put_field - a folded header (or delivery-status) field "name: value" */
static bool put_field(struct buf *b, const char *name, const char *value, size_t len)
{
    char first[64];
    if (!str_fmt(first, sizeof first, "%s:", name))
        return false;
    return put_folded(b, first, "", " ", DSN_LINE_SOFT, value, len);
}

/* put_field3 - a folded field whose value is prefix, value, suffix */
static bool put_field3(struct buf *b, struct buf *tmp, const char *name, const char *prefix,
                       const char *value, const char *suffix)
{
    buf_reset(tmp);
    if (!buf_puts(tmp, prefix) || !buf_puts(tmp, value) || !buf_puts(tmp, suffix))
        return false;
    return put_field(b, name, tmp->data, tmp->len);
}

/* put_text - a wrapped paragraph line of the human-readable part */
static bool put_text(struct buf *b, const char *indent, const char *text, size_t len)
{
    return put_folded(b, indent, indent, "", DSN_TEXT_SOFT, text, len);
}

/* put_header_line - one line of the original headers (no terminator), made
 * printable (TAB kept) and folded before DSN_LINE_MAX: at the last blank
 * that fits, so that unfolding gives the line back, or by force */
static bool put_header_line(struct buf *b, const char *p, size_t n)
{
    size_t col = 0;
    while (n > 0) {
        size_t room = DSN_LINE_MAX - col;
        if (n <= room)
            return put_clean(b, p, n, true) && buf_puts(b, CRLF);
        size_t k = room;   /* p[room] exists: n > room */
        while (k > 0 && p[k] != ' ' && p[k] != '\t')
            k--;
        if (k > 0) {       /* the rest starts with a blank: a real fold */
            if (!put_clean(b, p, k, true) || !buf_puts(b, CRLF))
                return false;
            col = 0;
        } else {           /* one long word: cut it, continue after a space */
            k = room;
            if (!put_clean(b, p, k, true) || !buf_puts(b, CRLF " "))
                return false;
            col = 1;
        }
        p += k;
        n -= k;
    }
    return buf_puts(b, CRLF);
}

/* put_headers - the original header section: up to the first empty line,
 * every line ended by CRLF (bare LF accepted as a terminator, a CR that does
 * not end a line is a control byte), long lines folded, cut after the last
 * whole line that fits in b's maximum. False only on ENOMEM. */
static bool put_headers(struct buf *b, const char *h, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(h + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - h) : len;
        size_t next = nl ? end + 1 : len;
        size_t n = end - i;
        if (nl && n > 0 && h[end - 1] == '\r')
            n--;
        if (n == 0)
            break;         /* the empty line: end of the header section */
        size_t mark = b->len;
        if (!put_header_line(b, h + i, n)) {
            b->len = mark;
            if (b->data)
                b->data[mark] = '\0';
            return errno == EMSGSIZE;   /* DSN_HEADERS_MAX reached: stop here */
        }
        i = next;
    }
    return true;
}

/* clean_host - a host name reduced to letters, digits, '-', '_' and single
 * inner dots, at most DSN_HOST_MAX long; "localhost" if nothing is left.
 * Safe in an addr-spec domain, a Message-ID right side, and a dns; name. */
static void clean_host(const char *s, char out[DSN_HOST_MAX + 1])
{
    size_t n = 0;
    for (; s != NULL && *s != '\0' && n < DSN_HOST_MAX; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '.') {
            if (n > 0 && out[n - 1] != '.')
                out[n++] = '.';
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                   c == '_') {
            out[n++] = (char)c;
        } else {
            out[n++] = '-';
        }
    }
    while (n > 0 && out[n - 1] == '.')
        n--;
    out[n] = '\0';
    if (n == 0)
        str_copy(out, DSN_HOST_MAX + 1, "localhost");
}

/* clean_token - letters and digits of s, at most max of them, into out[max+1];
 * dflt when none */
static void clean_token(const char *s, size_t max, char *out, const char *dflt)
{
    size_t n = 0;
    for (; s != NULL && *s != '\0' && n < max; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            out[n++] = (char)c;
    }
    out[n] = '\0';
    if (n == 0)
        str_copy(out, max + 1, dflt);
}

/* format_date - RFC 5322 date-time in UTC, without the locale */
static void format_date(int64_t t, char out[DSN_DATE_LEN])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (t < 0 || t > DSN_MAX_TIME)
        t = 0;
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL) {
        tt = 0;
        gmtime_r(&tt, &tm);
    }
    str_fmt(out, DSN_DATE_LEN, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7],
            tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* status_ok - an RFC 3463 code: class 2, 4 or 5, then 1-3 and 1-3 digits */
static bool status_ok(const char *s)
{
    if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    s += 2;
    for (int part = 0; part < 2; part++) {
        size_t d = 0;
        while (d < 4 && s[d] >= '0' && s[d] <= '9')
            d++;
        if (d < 1 || d > 3)
            return false;
        s += d;
        if (part == 0 && *s++ != '.')
            return false;
    }
    return *s == '\0';
}

/* rcpt_status - the recipient's code, or a generic one for its action */
static const char *rcpt_status(const struct dsn_rcpt *r)
{
    if (status_ok(r->status))
        return r->status;
    return r->action == DSN_DELAYED ? "4.0.0" : "5.0.0";
}

/* smtp_reply - the diagnostic looks like an SMTP reply ("550 ...", "451-...") */
static bool smtp_reply(const char *s)
{
    if (s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9')
        return false;
    return s[3] == '\0' || s[3] == ' ' || s[3] == '-' || s[3] == '\r' || s[3] == '\n';
}

static bool nonempty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static const char *str_or(const char *s, const char *dflt)
{
    return s != NULL ? s : dflt;
}

/* put_explanation - part 1: the human-readable text */
static bool put_explanation(struct buf *b, struct buf *tmp, const struct dsn_info *info,
                            const struct dsn_rcpt *rcpts, size_t n_rcpts, const char *mta,
                            bool all_delayed, bool any_delayed)
{
    buf_reset(tmp);
    if (!buf_printf(tmp, "This is the mail system at host %s.", mta) || !put_text(b, "", tmp->data, tmp->len))
        return false;
    if (all_delayed) {
        if (!buf_puts(b, CRLF
                      "####################################################################" CRLF
                      "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #" CRLF
                      "####################################################################" CRLF
                      CRLF
                      "Your message could not be delivered yet to the recipients listed" CRLF
                      "below. The mail system will keep trying to deliver it." CRLF))
            return false;
    } else {
        if (!buf_puts(b, CRLF
                      "I'm sorry to have to inform you that your message could not be" CRLF
                      "delivered to one or more recipients. The reasons are listed below;" CRLF
                      "a delivery report and the headers of your message are attached." CRLF))
            return false;
        if (any_delayed && !buf_puts(b, CRLF
                                     "Delivery to the recipients marked \"delayed\" is still being" CRLF
                                     "retried; you do not need to send the message to them again." CRLF))
            return false;
    }
    buf_reset(tmp);
    if (!buf_printf(tmp, "For further assistance, please contact the postmaster of %s. If you do so, "
                         "please include this report.", mta) ||
        !buf_puts(b, CRLF) || !put_text(b, "", tmp->data, tmp->len))
        return false;
    if (nonempty(info->queue_id)) {
        char date[DSN_DATE_LEN];
        format_date(info->arrival, date);
        buf_reset(tmp);
        if (!buf_puts(tmp, "Queue ID of your message: ") || !buf_puts(tmp, info->queue_id) ||
            !buf_puts(b, CRLF) || !put_text(b, "", tmp->data, tmp->len) ||
            (info->arrival > 0 && !buf_printf(b, "Received by us: %s" CRLF, date)))
            return false;
    }
    for (size_t i = 0; i < n_rcpts; i++) {
        const struct dsn_rcpt *r = &rcpts[i];
        buf_reset(tmp);
        if (!buf_puts(tmp, "<") || !buf_puts(tmp, str_or(r->address, "")) ||
            !buf_printf(tmp, ">: delivery %s, status %s", r->action == DSN_DELAYED ? "delayed" : "failed",
                        rcpt_status(r)) ||
            !buf_puts(b, CRLF) || !put_text(b, "", tmp->data, tmp->len))
            return false;
        if (nonempty(r->diagnostic)) {
            buf_reset(tmp);
            if ((nonempty(r->remote_mta) &&
                 (!buf_puts(tmp, "host ") || !buf_puts(tmp, r->remote_mta) || !buf_puts(tmp, " said: "))) ||
                !buf_puts(tmp, r->diagnostic) || !put_text(b, "    ", tmp->data, tmp->len))
                return false;
        }
    }
    return true;
}

/* put_status - part 2: the message/delivery-status fields (RFC 3464 2.2, 2.3) */
static bool put_status(struct buf *b, struct buf *tmp, const struct dsn_info *info,
                       const struct dsn_rcpt *rcpts, size_t n_rcpts, const char *mta)
{
    char date[DSN_DATE_LEN];
    if (!buf_printf(b, "Reporting-MTA: dns; %s" CRLF, mta))
        return false;
    if (nonempty(info->queue_id) && !put_field(b, "X-Breakwater-Queue-ID", info->queue_id, strlen(info->queue_id)))
        return false;
    if (info->arrival > 0) {
        format_date(info->arrival, date);
        if (!buf_printf(b, "Arrival-Date: %s" CRLF, date))
            return false;
    }
    for (size_t i = 0; i < n_rcpts; i++) {
        const struct dsn_rcpt *r = &rcpts[i];
        if (!buf_puts(b, CRLF) || !put_field3(b, tmp, "Final-Recipient", "rfc822; ", str_or(r->address, ""), "") ||
            !buf_printf(b, "Action: %s" CRLF "Status: %s" CRLF, r->action == DSN_DELAYED ? "delayed" : "failed",
                        rcpt_status(r)))
            return false;
        if (nonempty(r->remote_mta) && !put_field3(b, tmp, "Remote-MTA", "dns; ", r->remote_mta, ""))
            return false;
        if (nonempty(r->diagnostic) &&
            !put_field3(b, tmp, "Diagnostic-Code", smtp_reply(r->diagnostic) ? "smtp; " : "X-Breakwater; ",
                        r->diagnostic, ""))
            return false;
        if (r->last_attempt > 0) {
            format_date(r->last_attempt, date);
            if (!buf_printf(b, "Last-Attempt-Date: %s" CRLF, date))
                return false;
        }
    }
    return true;
}

/* contains - s occurs in b */
static bool contains(const struct buf *b, const char *s, size_t n)
{
    if (b->len < n)
        return false;
    const char *p = b->data, *end = b->data + b->len - n + 1;
    while (p < end && (p = memchr(p, s[0], (size_t)(end - p))) != NULL) {
        if (memcmp(p, s, n) == 0)
            return true;
        p++;
    }
    return false;
}

/* fnv1a - 64-bit FNV-1a over b, continuing from h */
static uint64_t fnv1a(uint64_t h, const struct buf *b)
{
    for (size_t i = 0; i < b->len; i++) {
        h ^= (unsigned char)b->data[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* choose_boundary - "=_bw_" seed "_" 16 hex digits that occurs in no part.
 * Candidate 0 depends on the seed only; later ones also on a hash of the
 * content, so input cannot be written to hit them. All candidates have the
 * same length and differ, so each position of the content rules out at most
 * one of them, and the search ends within (content length + 2) tries. */
static void choose_boundary(const char *seed, struct buf *const *parts, size_t n_parts,
                            char out[DSN_BOUNDARY_LEN])
{
    char s[DSN_SEED_MAX + 1];
    clean_token(seed, DSN_SEED_MAX, s, "dsn");
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n_parts; i++)
        h = fnv1a(h, parts[i]);
    for (uint64_t i = 0;; i++) {
        uint64_t v = i == 0 ? 0 : h ^ (i * UINT64_C(0x9e3779b97f4a7c15));
        str_fmt(out, DSN_BOUNDARY_LEN, "=_bw_%s_%016" PRIx64, s, v);
        size_t n = strlen(out);
        bool used = false;
        for (size_t k = 0; k < n_parts && !used; k++)
            used = contains(parts[k], out, n);
        if (!used)
            return;
    }
}

/* dsn_build - see dsn.h */
bool dsn_build(const struct dsn_info *info, const struct dsn_rcpt *rcpts, size_t n_rcpts,
               const char *original_headers, size_t headers_len, struct buf *out)
{
    size_t start = out->len;
    size_t room = out->max > out->len ? out->max - out->len : 0;
    struct buf text, status, headers, tmp;
    buf_init(&text, room);
    buf_init(&status, room);
    buf_init(&headers, DSN_HEADERS_MAX);
    buf_init(&tmp, room);

    char mta[DSN_HOST_MAX + 1], id[DSN_ID_MAX + 1], date[DSN_DATE_LEN], boundary[DSN_BOUNDARY_LEN];
    clean_host(info->reporting_mta, mta);
    clean_token(nonempty(info->boundary_seed) ? info->boundary_seed : info->queue_id, DSN_ID_MAX, id, "dsn");
    format_date(info->now, date);

    bool all_delayed = n_rcpts > 0, any_delayed = false;
    for (size_t i = 0; i < n_rcpts; i++) {
        if (rcpts[i].action == DSN_DELAYED)
            any_delayed = true;
        else
            all_delayed = false;
    }

    bool ok = put_explanation(&text, &tmp, info, rcpts, n_rcpts, mta, all_delayed, any_delayed) &&
              put_status(&status, &tmp, info, rcpts, n_rcpts, mta) &&
              (original_headers == NULL || put_headers(&headers, original_headers, headers_len));
    if (ok) {
        struct buf *parts[] = {&text, &status, &headers};
        choose_boundary(info->boundary_seed, parts, 3, boundary);
        ok = buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>" CRLF, mta) &&
             (nonempty(info->original_sender)
                  ? put_field3(out, &tmp, "To", "<", info->original_sender, ">")
                  : buf_puts(out, "To: undisclosed-recipients:;" CRLF)) &&
             buf_printf(out, "Subject: %s" CRLF,
                        all_delayed ? "Delayed Mail (still being retried)" : "Undelivered Mail Returned to Sender") &&
             buf_printf(out, "Date: %s" CRLF, date) &&
             buf_printf(out, "Message-ID: <%s.%" PRId64 "@%s>" CRLF, id, info->now, mta) &&
             buf_puts(out, "Auto-Submitted: auto-replied" CRLF "MIME-Version: 1.0" CRLF) &&
             buf_printf(out, "Content-Type: multipart/report; report-type=delivery-status;" CRLF
                             "\tboundary=\"%s\"" CRLF, boundary) &&
             buf_puts(out, CRLF "This is a MIME-encapsulated message." CRLF) &&
             buf_printf(out, CRLF "--%s" CRLF "Content-Description: Notification" CRLF
                             "Content-Type: text/plain; charset=us-ascii" CRLF CRLF, boundary) &&
             buf_append(out, text.data, text.len) &&
             buf_printf(out, CRLF "--%s" CRLF "Content-Description: Delivery report" CRLF
                             "Content-Type: message/delivery-status" CRLF CRLF, boundary) &&
             buf_append(out, status.data, status.len) &&
             buf_printf(out, CRLF "--%s" CRLF "Content-Description: Undelivered Message Headers" CRLF
                             "Content-Type: text/rfc822-headers" CRLF CRLF, boundary) &&
             buf_append(out, headers.data, headers.len) &&
             buf_printf(out, CRLF "--%s--" CRLF, boundary);
    }

    int saved = errno;
    if (!ok) {
        out->len = start;
        if (out->data != NULL)
            out->data[start] = '\0';
    }
    buf_free(&text);
    buf_free(&status);
    buf_free(&headers);
    buf_free(&tmp);
    errno = saved;
    return ok;
}
