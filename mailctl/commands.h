/* commands.h - mailctl's commands, one function each, dispatched from a
 * table in main.c. Each returns the process exit status and prints errors
 * as one line "mailctl: ..." on standard error. */
#ifndef BW_MAILCTL_COMMANDS_H
#define BW_MAILCTL_COMMANDS_H

struct mailctl {
    const char *config_dir;
};

int cmd_start(struct mailctl *mc, int argc, char **argv);
int cmd_stop(struct mailctl *mc, int argc, char **argv);
int cmd_reload(struct mailctl *mc, int argc, char **argv);
int cmd_status(struct mailctl *mc, int argc, char **argv);
int cmd_config(struct mailctl *mc, int argc, char **argv);
int cmd_flush(struct mailctl *mc, int argc, char **argv);
int cmd_queue(struct mailctl *mc, int argc, char **argv);
int cmd_domain(struct mailctl *mc, int argc, char **argv);
int cmd_ipc(struct mailctl *mc, int argc, char **argv);

#endif
