/*
 * ops - the FUSE low-level operations: translate kernel requests into tree
 * calls and tree results into replies.  Nothing here knows DSS.
 *
 * Open files: open() takes a snapshot of the file's bytes into a handle, so
 * a reader sees one consistent version however the server changes while it
 * reads (tar, rsync).  Writes change only that buffer; flush() and fsync()
 * save it (tree_save) and return DSS's verdict to close()/fsync().
 * Directory handles likewise snapshot the whole listing at opendir().
 *
 * Kernel caching: attributes and entries are valid `attr_timeout` seconds;
 * a name no table row can match gets a negative entry of
 * `negative_timeout_permanent` seconds, any other missing name one of
 * `attr_timeout` seconds.
 */
#ifndef DSSFS_OPS_H
#define DSSFS_OPS_H

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct tree;
struct buf;
struct mux;

#define OPS_ERRNO_MAX 134 /* past EHWPOISON */
/* The extended attribute of the mount root that holds the figures of
 * `dssfs stats`; the only one dssfs has, and not listed (listxattr), so
 * that rsync -X and tar --xattrs copy nothing of it. */
#define OPS_STATS_XATTR "user.dssfs.stats"

/* An open file or directory, registered in the context while open. */
struct open_item {
	struct open_item *prev, *next;
	void (*free_fn)(struct open_item *it);
};

struct ops_ctx {
	struct tree *tree;
	/* NULL, or a mount of several instances (mux.h): then tree is NULL
	 * and each inode's number says which instance's tree holds it */
	struct mux *mux;
	struct fuse_session *se; /* for kernel cache invalidation */
	size_t max_file;	 /* largest file a handle buffers */
	pthread_mutex_t open_lock;
	struct open_item *open_items;
	struct notifier *notifier; /* kernel cache invalidations (notify.h) */
	double attr_timeout;
	double negative_timeout_permanent;
	int read_only;
	const char *mountpoint; /* absolute, to find our files in /proc */
	atomic_int mnt_id;	/* the mount's id; -2: not looked up yet */
	/* bytes held by handles open for writing, at most buffered_max */
	atomic_size_t buffered;
	size_t buffered_max;
	/* errors answered to the kernel, by errno (a negative entry counts as
	 * ENOENT); [0]: errnos beyond the table */
	atomic_uint_fast64_t errors[OPS_ERRNO_MAX];
	/* Appends the figures `dssfs stats` shows (a JSON object) to out, or
	 * NULL: the mount root's OPS_STATS_XATTR then does not exist. */
	void (*stats)(void *arg, const struct ops_ctx *c, struct buf *out);
	void *stats_arg;
};

/* The operation table; the session's userdata must be a struct ops_ctx. */
extern const struct fuse_lowlevel_ops dssfs_ops;

/* Starts the thread that sends kernel cache invalidations (after
 * daemonising); ops_stop() ends it (after the session loop, before the
 * unmount): 0, or -ETIMEDOUT if it is blocked in the kernel and was left
 * running (see notifier_stop; the session must then not be freed). */
int ops_start(struct ops_ctx *c);
int ops_stop(struct ops_ctx *c);

/* Saves what open handles hold unsaved (the session ended while files were
 * open: unmount, SIGTERM), giving up on those left at deadline_ms
 * (cache_monotonic_ms()).  Logs every file not saved, by path; returns how
 * many.  Call after the session loop has returned, before
 * ops_release_all(). */
int ops_save_all(struct ops_ctx *c, int64_t deadline_ms);

/* Frees the handles the kernel never released (the session ended while
 * files were open).  Call after the session loop has returned. */
void ops_release_all(struct ops_ctx *c);

#endif
