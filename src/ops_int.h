/*
 * ops_int - what the FUSE operations (ops.c) and their open handles
 * (handles.c) share; private to src/.
 */
#ifndef DSSFS_OPS_INT_H
#define DSSFS_OPS_INT_H

#include "dssfs/buf.h"
#include "dssfs/ops.h"
#include "dssfs/tree.h"

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* An open file: the whole content, buffered.  Writes and truncation change
 * only the buffer; a flush by one of the handle's writers (the process that
 * opened it for writing or wrote to it), when that process holds no other
 * descriptor of the file, saves a changed buffer; fsync saves it at once.
 * So neither a child that inherited the descriptor (its exit flushes) nor
 * the shell closing the original of a redirected descriptor saves a
 * half-written file, while `: > file` is saved, and reported, at its last
 * close.  Release saves what no flush tried to save (logged).  After a
 * failed save the buffer stays changed, so a later flush or fsync tries
 * again.
 *
 * Reference counted: the kernel may see a READ reply complete, and send the
 * RELEASE that a second thread handles, while the thread that replied is
 * still returning from writev(2) on our buffer. */
#define MAX_WRITERS 8

struct handle {
	struct open_item item; /* first: registered while open */
	atomic_int refs;
	uint64_t ino; /* set before the handle is registered */
	/* set once open() has filled it in: until then the threads that walk
	 * the open handles (writer_view, ops_save_all) pass it by */
	atomic_int ready;
	pthread_mutex_t lock; /* guards everything below */
	struct buf data;
	int dirty;		    /* differs from what DSS (or the scratch store) holds */
	int attempted;		    /* a flush tried to save the current content */
	int append;		    /* opened with O_APPEND: writes go to the end */
	size_t accounted;	    /* bytes counted in ops_ctx.buffered */
	struct tree_base base;	    /* what was read, for the conflict check */
	struct tree_stream *stream; /* a spooled stream: read from there */
	/* a managed folder's file open for writing: its content is in this
	 * temporary file (fd_len bytes, disk bytes counted in the tree's
	 * spool_total), not in data */
	int fd;
	size_t fd_len, disk;
	int64_t writers[MAX_WRITERS]; /* thread group ids */
	int nwriters;
	int64_t last_tid, last_tgid; /* the last writer seen, to spare /proc */
	struct tree_caller last_who;
	struct ops_ctx *ctx;
};

struct dir_handle {
	struct open_item item;
	struct tree_dir dir;
};

/* Open handles are registered so that those the kernel never releases
 * (the session ends while files are open) are freed at exit. */
enum save_when { SAVE_FLUSH, SAVE_FSYNC, SAVE_RELEASE, SAVE_UNMOUNT };

/* Open handles are registered in the context while open, so that those the
 * kernel never releases are saved and freed at exit (ops_save_all,
 * ops_release_all). */
void track(struct ops_ctx *c, struct open_item *it, void (*free_fn)(struct open_item *));
struct handle *handle_new(struct ops_ctx *c, uint64_t ino);
/* A reference to fi's handle (handle_put it). */
struct handle *handle_get(struct fuse_file_info *fi);
void handle_put(struct handle *h);
/* Unregisters and drops the handle's first reference (release). */
void handle_close(struct ops_ctx *c, struct handle *h);
void dir_free_item(struct open_item *it);
void dir_close(struct ops_ctx *c, struct dir_handle *d);

/* The tree that holds ino: the one tree, or in a mount of several
 * instances the one its number names; NULL for that mount's root, which no
 * tree holds (mux.h). */
struct tree *ops_tree(struct ops_ctx *c, uint64_t ino);

/* Who sends req (proc_caller). */
void caller_of(fuse_req_t req, struct tree_caller *who);
/* Called with h->lock held: tgid becomes one of the handle's writers. */
void add_writer(struct handle *h, int64_t tgid);
/* Grows the bytes a writable handle holds to len, within the total bound
 * (-ENOSPC beyond it).  Called with h->lock held. */
int account(struct ops_ctx *c, struct handle *h, size_t len);

/* The handle's content: its length, a write at off (growing it), a new
 * length; within the bounds (dirty_max in memory, spool_total on disk:
 * -ENOSPC).  Called with h->lock held. */
size_t handle_len(const struct handle *h);
int handle_write(struct ops_ctx *c, struct handle *h, size_t off, const char *data, size_t size);
int handle_truncate(struct ops_ctx *c, struct handle *h, size_t len);
/* Reads up to size bytes at off into *out (a pointer into the handle or
 * into buf, which the caller frees); returns the count or -errno. */
ssize_t handle_read(struct handle *h, size_t off, size_t size, const char **out, char **buf);

/* Saves a changed handle when `when` calls for it (see struct handle).
 * Returns 0 or -errno; *saved says whether a save of a DSS file was
 * attempted: then the kernel's cache (the user's bytes, size and time) is
 * not what DSS holds, whether it accepted the save or not, and must be
 * dropped. */
int handle_save(struct ops_ctx *c, struct handle *h, enum save_when when,
		const struct tree_caller *who, int *saved);
/* Logs that the file ino was left unsaved, by path. */
void log_unsaved(struct ops_ctx *c, uint64_t ino, const char *when, int err);
/* The attributes a process sees of ino while handles hold unsaved changes
 * (adjusts *st); returns the attribute timeout to use. */
double writer_view(struct ops_ctx *c, fuse_req_t req, uint64_t ino, struct fuse_file_info *fi,
		   struct stat *st);

#endif
