/* vg.h - virtual gateways (DESIGN §5): the gateways of the
 * virtual_gateways table (source addresses, HELO name; "default" always
 * exists) and the first-match-wins classification rules of
 * virtual_gateway_classes that pick each message's gateway at acceptance.
 *
 * Owns one parsed pair of tables. Errors name the file and line:
 * "FILE:LINE: unknown virtual gateway 'x'". */
#ifndef BW_VG_H
#define BW_VG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "config.h"
#include "inet.h"

#define VG_NAME_MAX 64
#define VG_SOURCES_MAX 8
#define VG_ERR_MAX 512

struct vg {
    char name[VG_NAME_MAX];
    struct inet_endpoint sources[VG_SOURCES_MAX]; /* port 0 */
    int n_sources;
    char helo[256];      /* "" = smtp_helo_name */
};

struct vg_set;

/* vg_load - both tables of cfg. NULL with err on error (or ENOMEM). */
struct vg_set *vg_load(const struct config *cfg, char err[VG_ERR_MAX]);

void vg_free(struct vg_set *vs);

/* vg_count, vg_at - every gateway, "default" first. */
size_t vg_count(const struct vg_set *vs);
const struct vg *vg_at(const struct vg_set *vs, size_t i);

/* vg_find - a gateway by name, or NULL. */
const struct vg *vg_find(const struct vg_set *vs, const char *name);

/* vg_classify - the gateway of a message: the first rule that matches the
 * envelope sender, its domain, any recipient's domain, the client address or
 * the listener ("addr:port"); "default" when none does. */
const char *vg_classify(const struct vg_set *vs, const char *sender, const char *const *rcpts, size_t n_rcpts,
                        const struct sockaddr *client, const char *listener);

#endif
