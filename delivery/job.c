/* job.c - delivery jobs: load the message, resolve the route, hand over to
 * the SMTP session, report and log the results. */
#include "job.h"
#include "addr.h"
#include "delivery.h"
#include "dnsc.h"
#include "log.h"
#include "smtp.h"
#include "spool.h"
#include "str.h"
#include "table.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* fmt_delay - seconds the way Postfix logs them: "0", "0.35", "12", never
 * an exponent */
static const char *fmt_delay(double v, char *buf, size_t len)
{
    if (v < 0.005)
        str_copy(buf, len, "0");
    else if (v < 100)
        str_fmt(buf, len, "%.2f", v);
    else
        str_fmt(buf, len, "%.0f", v);
    return buf;
}

static double tv_diff(const struct timeval *a, const struct timeval *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_usec - a->tv_usec) / 1e6;
}

void dsn_from_reply(const char *reply, char dsn[16])
{
    const char *p = reply;
    if (strlen(p) > 4 && (p[0] == '2' || p[0] == '4' || p[0] == '5') && (p[3] == ' ' || p[3] == '-')) {
        const char *q = p + 4;
        int a, b, c, n = 0;
        if (sscanf(q, "%1d.%3d.%3d%n", &a, &b, &c, &n) == 3 && n > 0 && a == p[0] - '0') {
            str_fmt(dsn, 16, "%d.%d.%d", a, b, c);
            return;
        }
        str_fmt(dsn, 16, "%c.0.0", p[0]);
        return;
    }
    str_copy(dsn, 16, "4.0.0");
}

void job_set(struct job *j, size_t i, enum jrcpt_result res, const char *dsn, const char *reply)
{
    struct jrcpt *r = &j->r[i];
    if (r->result != JR_PENDING)
        return;
    r->result = res;
    str_copy(r->dsn, sizeof r->dsn, dsn);
    free(r->reply);
    r->reply = str_dup(reply);
}

void job_set_all(struct job *j, bool only_accepted, enum jrcpt_result res, const char *dsn, const char *reply)
{
    for (size_t i = 0; i < j->n; i++)
        if (!only_accepted || j->r[i].accepted)
            job_set(j, i, res, dsn, reply);
}

static void job_free(struct job *j)
{
    smtp_free(j->session);
    for (int i = 0; i < j->n_mx; i++) {
        if (j->mx[i].req_a)
            dnsc_cancel(j->dl->dns, j->mx[i].req_a);
        if (j->mx[i].req_aaaa)
            dnsc_cancel(j->dl->dns, j->mx[i].req_aaaa);
    }
    if (j->req_mx)
        dnsc_cancel(j->dl->dns, j->req_mx);
    for (size_t i = 0; i < j->n; i++) {
        free(j->r[i].addr);
        free(j->r[i].reply);
    }
    free(j->r);
    if (j->fd >= 0)
        close(j->fd);
    free(j->sender);
    free(j->domain);
    free(j->vg);
    free(j->via);
    free(j);
}

void job_abort(struct job *j)
{
    delivery_job_gone(j->dl, j);
    job_free(j);
}

static const char *status_name(enum jrcpt_result r)
{
    return r == JR_SENT ? "sent" : r == JR_BOUNCED ? "bounced" : "deferred";
}

/* ---- the resolved hosts, for qmgr (DELIVERY_MX) ---- */

#define MX_RECORD_MAX (sizeof ((struct mx_host *)0)->name + 16 + 8 * (INET6_ADDRSTRLEN + 8))

static uint64_t digest_add(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* report_name_ok - a host name qmgr accepts in a report (lib/ipc_msgs.def):
 * a name from DNS with other characters (escapes) is left out of it */
static bool report_name_ok(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '.' || *s == '_' || *s == ':'))
            return false;
    return true;
}

/* report_cmp - preference order; equal preferences by name, so that the
 * random order they are tried in does not look like a new set every time */
static int report_cmp(const void *a, const void *b)
{
    const struct mx_host *x = *(const struct mx_host *const *)a, *y = *(const struct mx_host *const *)b;
    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    return strcasecmp(x->name, y->name);
}

/* mx_report - tell qmgr the first n hosts of the job (n == 0: the domain
 * has none), with their addresses and which of them are avoided now */
static void mx_report(struct job *j, int n)
{
    const struct mx_host *order[JOB_MX_MAX];
    char rec[JOB_MX_MAX][MX_RECORD_MAX];
    const char *recs[JOB_MX_MAX];
    size_t nr = 0;
    uint64_t digest = 14695981039346656037ull;
    for (int i = 0; i < n && i < JOB_MX_MAX; i++)
        order[i] = &j->mx[i];
    if (!j->static_route) /* a route's hosts are tried in the order given */
        qsort(order, (size_t)n, sizeof order[0], report_cmp);
    for (int i = 0; i < n && i < JOB_MX_MAX; i++) {
        const struct mx_host *m = order[i];
        if (!report_name_ok(m->name) || m->pref < 0 || m->pref > 65535)
            continue;
        /* Addresses sorted as text: the answer order means nothing here. */
        char addr[8][INET6_ADDRSTRLEN];
        int left[8], na = 0;
        for (int k = 0; k < m->n_addrs && na < 8; k++) {
            const struct sockaddr *sa = (const struct sockaddr *)&m->addrs[k].ss;
            if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
                continue; /* cannot happen: endpoints are parsed numeric addresses */
            char t[INET6_ADDRSTRLEN];
            inet_addr_str(sa, t, sizeof t);
            int l = delivery_host_avoid_left(j->dl, sa), b = na - 1;
            while (b >= 0 && strcmp(addr[b], t) > 0) {
                memcpy(addr[b + 1], addr[b], sizeof addr[b]);
                left[b + 1] = left[b];
                b--;
            }
            str_copy(addr[b + 1], sizeof addr[b + 1], t);
            left[b + 1] = l;
            na++;
        }
        size_t len = 0;
        bool ok = str_append(rec[nr], sizeof rec[nr], &len, "%d %s", m->pref, m->name);
        digest = digest_add(digest, rec[nr], len + 1);
        for (int k = 0; ok && k < na; k++) {
            ok = str_append(rec[nr], sizeof rec[nr], &len, " %s", addr[k]) &&
                 (left[k] == 0 || str_append(rec[nr], sizeof rec[nr], &len, "/%d", left[k]));
            char flag = left[k] > 0 ? '!' : '-';
            digest = digest_add(digest, addr[k], strlen(addr[k]));
            digest = digest_add(digest, &flag, 1);
        }
        if (ok) { /* cannot be cut: MX_RECORD_MAX holds the longest */
            recs[nr] = rec[nr];
            nr++;
        }
    }
    delivery_mx_report(j->dl, j->domain, recs, nr, digest);
}

void job_finish(struct job *j, const char *reason)
{
    if (j->finished)
        return;
    j->finished = true;
    j->session = NULL; /* the session frees itself after calling us */
    struct timeval now;
    gettimeofday(&now, NULL);
    struct timeval arrival = {(time_t)(j->arrival_us / 1000000), (suseconds_t)(j->arrival_us % 1000000)};
    bool connected = j->t_connected.tv_sec != 0;
    double a = tv_diff(&arrival, &j->t_received), c = connected ? tv_diff(&j->t_received, &j->t_connected) : tv_diff(&j->t_received, &now),
           d = connected ? tv_diff(&j->t_connected, &now) : 0;
    if (a < 0)
        a = 0;
    /* The hosts this job resolved (none when it reused a connection or DNS
     * failed), then the domain state: down only when hosts were tried and
     * none answered. */
    if (j->n_mx > 0 && j->dns_pending == 0)
        mx_report(j, j->n_mx);
    delivery_site(j->dl, j->id, j->site_reached ? 1 : j->site_tried ? 0 : 2, reason ? reason : "");
    for (size_t i = 0; i < j->n; i++) {
        struct jrcpt *r = &j->r[i];
        if (r->result == JR_PENDING)
            job_set(j, i, JR_DEFERRED, "4.4.2", reason ? reason : "delivery was not completed");
        char b1[32], b2[32], b3[32], b4[32];
        log_msg(j->msgid, "to=<%s>, relay=%s, delay=%s, delays=%s/0/%s/%s, dsn=%s, status=%s (%s)", r->addr,
                j->relay[0] ? j->relay : "none", fmt_delay(tv_diff(&arrival, &now), b1, sizeof b1),
                fmt_delay(a, b2, sizeof b2), fmt_delay(c, b3, sizeof b3), fmt_delay(d, b4, sizeof b4), r->dsn,
                status_name(r->result), r->reply ? r->reply : "");
        delivery_report(j->dl, j->id, r->addr, r->result, r->dsn, r->reply ? r->reply : "");
    }
    delivery_job_gone(j->dl, j);
    job_free(j);
}

/* ---- routing ---- */

static void add_target(struct job *j, const char *host, int pref, const struct inet_endpoint *ep)
{
    if (j->n_targets >= JOB_TARGETS_MAX)
        return;
    struct target *t = &j->targets[j->n_targets++];
    str_copy(t->host, sizeof t->host, host);
    t->pref = pref;
    t->ep = *ep;
}

/* endpoint_of - numeric address text with the job's port */
static bool endpoint_of(const char *addr, int port, struct inet_endpoint *ep)
{
    char err[128];
    if (strchr(addr, ':')) {
        char b[INET6_ADDRSTRLEN + 4];
        str_fmt(b, sizeof b, "[%s]", addr);
        return inet_parse_endpoint(b, port, ep, err, sizeof err);
    }
    return inet_parse_endpoint(addr, port, ep, err, sizeof err);
}

static int mx_cmp(const void *a, const void *b)
{
    const struct mx_host *x = a, *y = b;
    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    return x->tiebreak < y->tiebreak ? -1 : x->tiebreak > y->tiebreak;
}

/* targets_ready - every address lookup answered: build the list, go */
static void targets_ready(struct job *j)
{
    bool temp = false;
    for (int i = 0; i < j->n_mx; i++) {
        temp = temp || j->mx[i].temp_fail;
        for (int k = 0; k < j->mx[i].n_addrs; k++)
            add_target(j, j->mx[i].name, j->mx[i].pref, &j->mx[i].addrs[k]);
    }
    /* Hosts that failed lately go last: tried only when the others fail too. */
    struct target fresh[JOB_TARGETS_MAX], stale[JOB_TARGETS_MAX];
    int nf = 0, ns = 0;
    for (int i = 0; i < j->n_targets; i++) {
        if (delivery_host_avoided(j->dl, (struct sockaddr *)&j->targets[i].ep.ss))
            stale[ns++] = j->targets[i];
        else
            fresh[nf++] = j->targets[i];
    }
    /* Among hosts of equal preference, the least loaded first (insertion
     * sort keeps the random order of equals). */
    for (int a = 1; a < nf; a++) {
        struct target t = fresh[a];
        int load = delivery_conn_load((struct sockaddr *)&t.ep.ss), b = a - 1;
        while (b >= 0 && fresh[b].pref == t.pref && delivery_conn_load((struct sockaddr *)&fresh[b].ep.ss) > load) {
            fresh[b + 1] = fresh[b];
            b--;
        }
        fresh[b + 1] = t;
    }
    memcpy(j->targets, fresh, (size_t)nf * sizeof fresh[0]);
    memcpy(j->targets + nf, stale, (size_t)ns * sizeof stale[0]);
    if (j->n_targets == 0) {
        if (temp)
            job_set_all(j, false, JR_DEFERRED, "4.4.3", "Host or domain name lookup failed (temporary)");
        else
            job_set_all(j, false, JR_BOUNCED, "5.1.2", "Host or domain name not found: no address for the mail exchanger");
        job_finish(j, NULL);
        return;
    }
    smtp_start(j);
}

static void on_addr(void *arg, const struct dnsc_answer *ans);

struct addr_req {
    struct job *j;
    int mx;
    bool v6;
};

static void lookup_addresses(struct job *j)
{
    for (int i = 0; i < j->n_mx; i++) {
        struct inet_endpoint ep;
        if (j->mx[i].port == 0)
            j->mx[i].port = j->port;
        if (endpoint_of(j->mx[i].name, j->mx[i].port, &ep)) { /* an IP address: no lookup */
            j->mx[i].addrs[j->mx[i].n_addrs++] = ep;
            continue;
        }
        for (int v6 = 0; v6 < 2; v6++) {
            struct addr_req *ar = malloc(sizeof *ar);
            if (ar == NULL) {
                j->mx[i].temp_fail = true;
                continue;
            }
            ar->j = j;
            ar->mx = i;
            ar->v6 = v6;
            j->mx[i].pending++;
            j->dns_pending++;
            uint64_t id = dnsc_lookup(j->dl->dns, j->mx[i].name, v6 ? "AAAA" : "A", on_addr, ar);
            if (v6)
                j->mx[i].req_aaaa = id;
            else
                j->mx[i].req_a = id;
        }
    }
    if (j->dns_pending == 0)
        targets_ready(j);
}

static void on_addr(void *arg, const struct dnsc_answer *ans)
{
    struct addr_req *ar = arg;
    struct job *j = ar->j;
    struct mx_host *mx = &j->mx[ar->mx];
    if (ar->v6)
        mx->req_aaaa = 0;
    else
        mx->req_a = 0;
    if (ans->rcode == DNSC_SERVFAIL || ans->rcode == DNSC_TIMEOUT)
        mx->temp_fail = true;
    for (size_t i = 0; ans->rcode == DNSC_OK && i < ans->n && mx->n_addrs < 8; i++) {
        struct inet_endpoint ep;
        if (endpoint_of(ans->records[i], mx->port, &ep))
            mx->addrs[mx->n_addrs++] = ep;
    }
    free(ar);
    mx->pending--;
    if (--j->dns_pending == 0)
        targets_ready(j);
}

static void on_mx(void *arg, const struct dnsc_answer *ans)
{
    struct job *j = arg;
    j->req_mx = 0;
    if (ans->rcode == DNSC_NXDOMAIN || ans->rcode == DNSC_BADNAME) {
        mx_report(j, 0);
        job_set_all(j, false, JR_BOUNCED, "5.1.2", "Host or domain name not found (NXDOMAIN)");
        job_finish(j, NULL);
        return;
    }
    if (ans->rcode != DNSC_OK) {
        job_set_all(j, false, JR_DEFERRED, "4.4.3", "Host or domain name lookup failed (temporary DNS error)");
        job_finish(j, NULL);
        return;
    }
    for (size_t i = 0; i < ans->n && j->n_mx < JOB_MX_MAX; i++) {
        int pref;
        char host[256];
        if (sscanf(ans->records[i], "%d %255s", &pref, host) != 2)
            continue;
        if (strcmp(host, ".") == 0 || host[0] == '\0') {
            if (ans->n == 1) { /* RFC 7505 null MX */
                mx_report(j, 0);
                job_set_all(j, false, JR_BOUNCED, "5.1.2", "Domain does not accept mail (null MX, RFC 7505)");
                job_finish(j, NULL);
                return;
            }
            continue;
        }
        struct mx_host *m = &j->mx[j->n_mx++];
        memset(m, 0, sizeof *m);
        str_copy(m->name, sizeof m->name, host);
        m->pref = pref;
        m->tiebreak = (unsigned)random();
    }
    if (j->n_mx == 0) { /* no MX: the domain itself (RFC 5321 5.1 implicit MX) */
        struct mx_host *m = &j->mx[j->n_mx++];
        memset(m, 0, sizeof *m);
        str_copy(m->name, sizeof m->name, j->domain);
    }
    qsort(j->mx, (size_t)j->n_mx, sizeof j->mx[0], mx_cmp);
    lookup_addresses(j);
}

/* route - a cached connection first, then static route, else MX */
static void route(struct job *j)
{
    if (smtp_reuse(j))
        return;
    job_route_fresh(j);
}

void job_route_fresh(struct job *j)
{
    const char *r = j->via ? j->via : j->dl->routes ? table_find_domain(j->dl->routes, j->domain, "*") : NULL;
    if (r) {
        char *copy = str_dup(r), *cur = copy, *tok;
        j->static_route = true;
        while (copy && (tok = str_split_next(&cur)) != NULL && j->n_mx < JOB_MX_MAX) {
            struct mx_host *m = &j->mx[j->n_mx++];
            memset(m, 0, sizeof *m);
            /* host, host:port, [v6]:port or [v6] */
            char host[256];
            int port = j->dl->remote_port;
            const char *colon = tok[0] == '[' ? strstr(tok, "]:") : strrchr(tok, ':');
            if (colon && (tok[0] == '[' || strchr(tok, ':') == colon)) {
                const char *pp = tok[0] == '[' ? colon + 2 : colon + 1;
                port = atoi(pp);
                str_ncopy(host, sizeof host, tok[0] == '[' ? tok + 1 : tok, (size_t)(colon - tok - (tok[0] == '[')));
            } else {
                str_copy(host, sizeof host, tok[0] == '[' ? tok + 1 : tok);
                char *rb = strchr(host, ']');
                if (rb)
                    *rb = '\0';
            }
            str_copy(m->name, sizeof m->name, host);
            m->port = port;
        }
        free(copy);
        lookup_addresses(j);
        return;
    }
    j->req_mx = dnsc_lookup(j->dl->dns, j->domain, "MX", on_mx, j);
}

/* load_message - the envelope and content location from the spool */
static bool load_message(struct job *j, char *err, size_t errlen)
{
    char path[SPOOL_PATH_MAX];
    struct spool_message sm;
    if (!spool_path_queue(j->dl->queue_directory, j->msgid, path, sizeof path))
        return str_copy(err, errlen, "bad queue id"), false;
    if (spool_message_read(path, &sm, err, errlen) != 0)
        return false;
    j->sender = sm.sender;
    sm.sender = NULL;
    j->arrival_us = sm.arrival_us;
    j->content_off = sm.content_offset;
    j->content_len = sm.content_len;
    j->eightbit = sm.body_type && strcmp(sm.body_type, "8BITMIME") == 0;
    spool_message_free(&sm);
    if ((j->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        str_fmt(err, errlen, "%s: %s", path, strerror(errno));
        return false;
    }
    return true;
}

void job_start(struct delivery *dl, uint64_t id, const char *msgid, const char *domain, const char *vg,
                      const char *via, const char *const *rcpts, size_t n)
{
    struct job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        for (size_t i = 0; i < n; i++)
            delivery_report(dl, id, rcpts[i], JR_DEFERRED, "4.3.0", "delivery agent out of memory");
        return;
    }
    j->fd = -1;
    j->dl = dl;
    j->id = id;
    j->port = dl->remote_port;
    gettimeofday(&j->t_received, NULL);
    str_copy(j->msgid, sizeof j->msgid, msgid);
    j->domain = str_dup(domain);
    j->vg = str_dup(vg);
    j->via = via ? str_dup(via) : NULL;
    j->r = calloc(n ? n : 1, sizeof *j->r);
    j->n = n;
    bool ok = j->domain && j->vg && j->r && (via == NULL || j->via);
    for (size_t i = 0; ok && i < n; i++) {
        j->r[i].result = JR_PENDING;
        ok = (j->r[i].addr = str_dup(rcpts[i])) != NULL;
    }
    if (!ok) {
        log_error("%s: out of memory for a delivery job", msgid);
        for (size_t i = 0; i < n; i++)
            delivery_report(dl, id, rcpts[i], JR_DEFERRED, "4.3.0", "delivery agent out of memory");
        j->n = 0;
        job_free(j);
        return;
    }
    delivery_job_add(dl, j);
    char err[512];
    if (!load_message(j, err, sizeof err)) {
        log_error("%s: %s", msgid, err);
        job_set_all(j, false, JR_DEFERRED, "4.3.0", "queue file unreadable");
        job_finish(j, NULL);
        return;
    }
    route(j); /* j may be finished and freed when this returns */
}
