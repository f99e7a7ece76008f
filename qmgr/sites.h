/* sites.h - what qmgr knows of the mail exchangers of each (virtual gateway,
 * destination domain): the hosts a delivery agent last resolved for it, in
 * the order it tries them, with their preference, addresses, and which of
 * those addresses it avoids for a while after a failure (DELIVERY_MX,
 * lib/ipc_msgs.def). Shown as the "mx" list of `mailctl domain show|list`.
 *
 * Owns one process-wide table of sites (at most SITES_MAX; the site updated
 * longest ago is forgotten first). It is derived data, like qmgr's whole
 * memory: lost on restart and filled again by the next deliveries. Runs in
 * qmgr's event loop only (not thread-safe). */
#ifndef BW_QMGR_SITES_H
#define BW_QMGR_SITES_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "ipc.h"

#define SITES_MAX 20000       /* sites remembered; each is a few hundred bytes */
#define SITES_HOSTS_MAX 32    /* hosts in one report (a delivery job uses at most 16) */
#define SITES_ADDRS_MAX 16    /* addresses of one host (a job keeps at most 8) */

/* qmgr_sites_update - one DELIVERY_MX message (type already checked by the
 * caller): decode "vg domain record..." and replace what is known of that
 * site. Each record is "PREF HOST [ADDR[/S]]...", PREF 0..65535, ADDR a
 * numeric IPv4 or IPv6 address, /S: avoided for S (1..86400) more seconds.
 * Returns false, storing nothing, on a malformed message (protocol error: the
 * caller drops the agent, STYLE rule 6). Out of memory keeps the old record,
 * logs, and returns true (the report is only informative). */
bool qmgr_sites_update(struct ipc_msg *m);

/* qmgr_sites_json - append the JSON list of the site's hosts to out:
 * [{"host": "mx1.example", "preference": 10, "addresses": ["192.0.2.5"],
 *   "avoided": []}, ...]; "avoided" lists those addresses still avoided now.
 * "[]" when nothing is known. False when out is full or on ENOMEM. */
bool qmgr_sites_json(const char *vg, const char *domain, struct buf *out);

/* qmgr_sites_text - append " mx=PREF:HOST[ADDR,ADDR(avoided)],..." (one
 * field without spaces, for the one-line domain text), or nothing when
 * nothing is known. False when out is full or on ENOMEM. */
bool qmgr_sites_text(const char *vg, const char *domain, struct buf *out);

/* qmgr_sites_free - forget every site (exit, tests). */
void qmgr_sites_free(void);

#endif
