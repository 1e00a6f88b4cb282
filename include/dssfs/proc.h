/*
 * proc - what /proc tells about the processes behind FUSE requests: which
 * process (thread group) and session a thread belongs to, and whether a
 * process holds a descriptor of one of our files.
 *
 * All functions read /proc afresh; they are thread-safe.  A process that is
 * gone, or whose /proc entries cannot be read, is answered for as well as
 * possible (see each function), never with an error.
 */
#ifndef DSSFS_PROC_H
#define DSSFS_PROC_H

#include <stdint.h>

#include "dssfs/tree.h"

/* Fills *who for thread `tid` of user uid from /proc/<tid>/status: its
 * thread group and session.  Unreadable: the tid itself and session 0;
 * tid <= 0 (no process): tgid 0, which matches nothing. */
void proc_caller(int64_t tid, uint32_t uid, struct tree_caller *who);

/* The id in /proc/self/mountinfo of the FUSE mount at `mountpoint` (the
 * topmost if several), or -1. */
int proc_mount_id(const char *mountpoint);

/* Whether process tgid holds a descriptor of the file with inode number
 * ino on mount mnt (from /proc/<tgid>/fdinfo).  The kernel removes a
 * descriptor from the table before it flushes it, so a descriptor found
 * while a close is being flushed is another one: that close is not the
 * process's last.  0 when unknown (mnt < 0, /proc unreadable). */
int proc_holds_file(int64_t tgid, int mnt, uint64_t ino);

#endif
