/* reaper.h - removes finished queue files in a thread of their own, so that
 * slow unlink(2)s (a file system mounted with discard trims synchronously)
 * never stall qmgr's event loop; or keeps them in free/ (up to
 * spool_free_pool files) for smtpd to write new messages into, which spares
 * the file system an inode allocation and removal per message. Owns the
 * thread and its list of paths.
 * A path not yet removed when qmgr dies is found again at the next start:
 * its recipients' states say it is done, and it is removed then. */
#ifndef BW_QMGR_REAPER_H
#define BW_QMGR_REAPER_H

#include <stdbool.h>
#include <stddef.h>

/* reaper_start - the thread, recycling into qdir/free up to free_pool files
 * (0: none); false with errno. */
bool reaper_start(const char *qdir, size_t free_pool);

/* reaper_unlink - remove path soon (now, in the caller, when the list is
 * full or the thread is not running). */
void reaper_unlink(const char *path);

/* reaper_recycle - a finished queue file: into free/ if it has room, else
 * removed; in the same order as reaper_unlink requests. */
void reaper_recycle(const char *path);

/* reaper_stop - remove what is queued, then stop the thread. */
void reaper_stop(void);

#endif
