/* main.c - mailctl: the operator's command line (DESIGN §4). Global option
 * -c CONFIG_DIR (or $BREAKWATER_CONFIG), then a command from the table. */
#include "commands.h"
#include "dns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    int (*run)(struct mailctl *, int, char **);
    const char *usage;
} commands[] = {
    {"start", cmd_start, "start"},
    {"stop", cmd_stop, "stop"},
    {"reload", cmd_reload, "reload"},
    {"status", cmd_status, "status [--json]"},
    {"config", cmd_config, "config [-n] | config check"},
    {"flush", cmd_flush, "flush [DOMAIN]"},
    {"queue", cmd_queue, "queue list [--domain D] [--json] | queue show ID [--json]"},
    {"domain", cmd_domain, "domain list [--json] | domain show DOMAIN [--json] | domain debug DOMAIN on|off"},
    {"dns", cmd_dns, "dns lookup NAME [MX|A|AAAA|PTR|TXT]"},
    {"ipc", cmd_ipc, "ipc --man"},
};

static int usage(void)
{
    fprintf(stderr, "usage: mailctl [-c CONFIG_DIR] COMMAND\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(stderr, "  %s\n", commands[i].usage);
    return 2;
}

int main(int argc, char **argv)
{
    struct mailctl mc = {.config_dir = getenv("BREAKWATER_CONFIG")};
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            mc.config_dir = argv[i + 1];
            i += 2;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        } else {
            fprintf(stderr, "mailctl: unknown option %s\n", argv[i]);
            return usage();
        }
    }
    if (mc.config_dir == NULL)
        mc.config_dir = SYSCONFDIR "/breakwater";
    if (i >= argc)
        return usage();
    /* The master and daemons run from another directory: pass an absolute path. */
    static char absdir[4096];
    if (realpath(mc.config_dir, absdir) != NULL)
        mc.config_dir = absdir;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (strcmp(argv[i], commands[k].name) == 0)
            return commands[k].run(&mc, argc - i, argv + i);
    fprintf(stderr, "mailctl: unknown command '%s' (see mailctl --help)\n", argv[i]);
    return 2;
}
