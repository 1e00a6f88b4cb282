/*
 * notify - kernel cache invalidations, sent by a thread of their own (see
 * notify.c for why never by a FUSE worker), in the order they were asked.
 *
 * notifier_inode/notifier_entry are thread-safe and never block on the
 * kernel.  Stop the notifier before unmounting: the unmount closes the
 * session's descriptor, which the thread must no longer write to.
 */
#ifndef DSSFS_NOTIFY_H
#define DSSFS_NOTIFY_H

#include <fuse_lowlevel.h>
#include <stdint.h>

struct notifier;

/* Starts the thread (after daemonising).  NULL if it cannot be made. */
struct notifier *notifier_start(struct fuse_session *se);
/* Drops what the kernel caches of inode ino (attributes and pages). */
void notifier_inode(struct notifier *n, uint64_t ino);
/* Drops the kernel's entry `name` in folder parent. */
void notifier_entry(struct notifier *n, uint64_t parent, const char *name);
#define NOTIFIER_STOP_S 2
/* Ends the thread; what is still queued is dropped, unsent.  Returns 0.
 * A notification the kernel keeps waiting (it needs a lock held by a
 * request no worker will answer now) is not waited for beyond
 * NOTIFIER_STOP_S: then returns -ETIMEDOUT (logged), and the thread, n and
 * the session stay in use until the process exits.  No notifier_* call
 * may follow.  NULL-safe. */
int notifier_stop(struct notifier *n);

#endif
