/*
 * notify - kernel cache invalidations, sent by a thread of their own (see
 * notify.c for why never by a FUSE worker), in the order they were asked.
 *
 * notifier_inode/notifier_entry are thread-safe and never block on the
 * kernel.  Stop the notifier after unmounting: a notification the kernel
 * keeps waiting then fails instead of blocking it forever.
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
/* Ends the thread and frees what is still queued.  NULL-safe. */
void notifier_stop(struct notifier *n);

#endif
