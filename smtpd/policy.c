/* policy.c - mynetworks and relay_domains matching. */
#include "policy.h"
#include "inet.h"
#include "str.h"

#include <stdlib.h>
#include <string.h>

struct policy {
    struct inet_net *nets;
    size_t n_nets;
    char **domains; /* lower case; a leading '.' means sub-domains */
    size_t n_domains;
};

static size_t count_tokens(const char *s)
{
    char *copy = str_dup(s), *cur = copy;
    size_t n = 0;
    if (copy == NULL)
        return 0;
    while (str_split_next(&cur))
        n++;
    free(copy);
    return n;
}

struct policy *policy_new(const struct config *cfg)
{
    struct policy *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    const char *nets = cfg_str(cfg, P_mynetworks), *doms = cfg_str(cfg, P_relay_domains);
    size_t nn = count_tokens(nets), nd = count_tokens(doms);
    p->nets = calloc(nn + 1, sizeof *p->nets);
    p->domains = calloc(nd + 1, sizeof *p->domains);
    char *copy = str_dup(nets), *cur = copy, *tok;
    if (p->nets == NULL || p->domains == NULL || copy == NULL)
        goto fail;
    while ((tok = str_split_next(&cur)) != NULL && p->n_nets < nn) {
        char err[128];
        if (inet_parse_net(tok, &p->nets[p->n_nets], err, sizeof err))
            p->n_nets++;
    }
    free(copy);
    copy = str_dup(doms);
    cur = copy;
    if (copy == NULL)
        goto fail;
    while ((tok = str_split_next(&cur)) != NULL && p->n_domains < nd) {
        if ((p->domains[p->n_domains] = str_dup(tok)) == NULL)
            goto fail;
        str_lower(p->domains[p->n_domains++]);
    }
    free(copy);
    return p;
fail:
    free(copy);
    policy_free(p);
    return NULL;
}

void policy_free(struct policy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n_domains; i++)
        free(p->domains[i]);
    free(p->domains);
    free(p->nets);
    free(p);
}

bool policy_client_trusted(const struct policy *p, const struct sockaddr *client)
{
    for (size_t i = 0; i < p->n_nets; i++)
        if (inet_net_match(&p->nets[i], client))
            return true;
    return false;
}

bool policy_relay_domain(const struct policy *p, const char *domain)
{
    size_t dl = strlen(domain);
    for (size_t i = 0; i < p->n_domains; i++) {
        const char *d = p->domains[i];
        size_t l = strlen(d);
        if (d[0] == '.') {
            if (dl > l && str_case_eq(domain + dl - l, d))
                return true;
        } else if (str_case_eq(domain, d)) {
            return true;
        }
    }
    return false;
}
