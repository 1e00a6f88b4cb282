/*
 * fuseio - the session's reads and writes on /dev/fuse, through libfuse's
 * custom I/O hooks, for two things libfuse 3.14 does not do:
 *
 * - It never puts FUSE_PARALLEL_DIROPS in its INIT reply, whatever the
 *   filesystem asks: the kernel then runs the lookups of one folder one at
 *   a time, and a slow one (export.zip streaming from DSS) holds a `stat`
 *   of any sibling.  fuseio adds the flag to the reply when the kernel
 *   offered it (later libfuse versions send it themselves).
 * - When the kernel ends the session (unmount, or an abort through
 *   /sys/fs/fuse/connections), the loop joins every worker, and a worker
 *   waiting on DSS holds the exit for its whole timeout.  fuseio calls
 *   on_end at once, from the worker that reads the end.
 */
#ifndef DSSFS_FUSEIO_H
#define DSSFS_FUSEIO_H

#include <fuse_lowlevel.h>

/* Puts the hooks on a mounted session (after fuse_session_mount, before
 * the loop).  on_end(arg) runs once, in a worker, when the kernel ends
 * the session; it must not block.  One session per process.  0 or
 * -errno. */
int fuseio_attach(struct fuse_session *se, void (*on_end)(void *arg), void *arg);

#endif
