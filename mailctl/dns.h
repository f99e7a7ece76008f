/* dns.h - `mailctl dns lookup NAME [TYPE]`: asks the running dnscache over
 * $queue_directory/private/dnscache and prints what it sees. */
#ifndef BW_MAILCTL_DNS_H
#define BW_MAILCTL_DNS_H

struct mailctl;

/* cmd_dns - argv[0] is "dns". Prints "rcode=R ttl=T records=N" and then one
 * record per line (lib/dnsc.h text) on standard output. Exit status: 0 for an
 * answer (OK, including no records, or NXDOMAIN); 1 with one line on
 * standard error for SERVFAIL, TIMEOUT, BADNAME, or when dnscache cannot be
 * reached; 2 for a usage error. */
int cmd_dns(struct mailctl *mc, int argc, char **argv);

#endif
