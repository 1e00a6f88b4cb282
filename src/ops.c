/*
 * ops - the FUSE low-level operations (see ops.h); the open handles they
 * use are in handles.c.
 */
#include "ops_int.h"

#include "dssfs/http.h"
#include "dssfs/log.h"
#include "dssfs/mux.h"
#include "dssfs/notify.h"
#include "dssfs/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

static struct ops_ctx *ctx_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void count_error(struct ops_ctx *c, int err)
{
	if (err > 0)
		atomic_fetch_add(&c->errors[err < OPS_ERRNO_MAX ? err : 0], 1);
}

/* Every error the kernel gets is counted, by errno (`dssfs stats`). */
static void reply_err(fuse_req_t req, int err)
{
	count_error(ctx_of(req), err);
	fuse_reply_err(req, err);
}

static void notify_changed(uint64_t ino, void *ctx)
{
	notifier_inode(ctx, ino);
}

/* fn(tree, arg) for the mount's tree, or each instance's. */
static void each_tree(struct ops_ctx *c, void (*fn)(struct tree *t, void *arg), void *arg)
{
	if (!c->mux) {
		if (c->tree)
			fn(c->tree, arg);
		return;
	}
	for (int i = 0; i < mux_count(c->mux); i++)
		fn(mux_tree_at(c->mux, i), arg);
}

/* (The inode numbers a tree reports are the kernel's: see mux.h.) */
static void set_changed_cb(struct tree *t, void *notifier)
{
	tree_set_changed_cb(t, notifier ? notify_changed : NULL, notifier);
}

int ops_start(struct ops_ctx *c)
{
	c->notifier = notifier_start(c->se);
	if (!c->notifier)
		return -1;
	each_tree(c, set_changed_cb, c->notifier);
	return 0;
}

int ops_stop(struct ops_ctx *c)
{
	int ret;

	each_tree(c, set_changed_cb, NULL);
	ret = notifier_stop(c->notifier);
	c->notifier = NULL;
	return ret;
}

/* After a save, what the kernel cached (pages written by the user, size,
 * mtime) is not what DSS holds: drop it. */
static void invalidate_kernel(struct ops_ctx *c, uint64_t ino)
{
	notifier_inode(c->notifier, ino);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Several threads may read one file; lookups of different names in
	 * one directory run in parallel; open() sees O_TRUNC itself. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* Every write must reach the handle's buffer in order. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

/* tree_forget in the tree that holds ino (the mount's root of several
 * instances is never forgotten). */
static void forget_at(struct ops_ctx *c, uint64_t ino, uint64_t n)
{
	struct tree *t = ops_tree(c, ino);

	if (t)
		tree_forget(t, ino, n);
}

/* DSS objects are made and removed in DSS, not through the mount. */
static void reply_refused(fuse_req_t req)
{
	reply_err(req, ctx_of(req)->read_only ? EROFS : EPERM);
}

/* The tree that holds ino, for an operation that changes something; the
 * root of a mount of several instances (no tree) refuses it: NULL, and
 * the reply is sent. */
static struct tree *tree_to_change(fuse_req_t req, uint64_t ino)
{
	struct tree *t = ops_tree(ctx_of(req), ino);

	if (!t)
		reply_refused(req);
	return t;
}

static void reply_entry(struct ops_ctx *c, fuse_req_t req, uint64_t ino, const struct stat *st)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = ino;
	e.generation = 1;
	e.attr = *st;
	e.attr_timeout = c->attr_timeout;
	e.entry_timeout = c->attr_timeout;
	if (fuse_reply_entry(req, &e) == -ENOENT)
		forget_at(c, ino, 1); /* the request was interrupted */
}

/* A FUSE interrupt (the process waiting on the operation got a signal)
 * ends the HTTP request the operation is waiting for, or its wait for
 * another thread's request of the same document, with EINTR.  Every
 * operation that may wait for DSS is interruptible but for what saves
 * (flush, fsync, release, rename, truncate): a save must complete or fail
 * as a whole, so it runs marked as one (http_thread_save), which neither
 * an interrupt nor the session's end cuts.  read and readdir never wait
 * for DSS (open and opendir fetched what they serve). */
static int req_interrupted(void *req)
{
	return fuse_req_interrupted(req);
}

static void interruptible(fuse_req_t req)
{
	tree_thread_cancel(req ? req_interrupted : NULL, req);
}

static void op_lookup_body(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ops_ctx *c = ctx_of(req);
	struct stat st;
	uint64_t ino = 0;
	int permanent = 0;
	struct tree *t = ops_tree(c, parent);
	int ret = t ? tree_lookup(t, parent, name, &ino, &st, &permanent)
		    : mux_lookup(c->mux, name, &ino, &st);

	if (ret == -ENOENT) {
		/* A negative entry: the kernel will not ask again for a while. */
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e));
		e.entry_timeout = permanent ? c->negative_timeout_permanent : c->attr_timeout;
		count_error(c, ENOENT);
		fuse_reply_entry(req, &e);
	} else if (ret) {
		reply_err(req, -ret);
	} else {
		reply_entry(c, req, ino, &st);
	}
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	interruptible(req);
	op_lookup_body(req, parent, name);
	interruptible(NULL);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_at(ctx_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget_at(ctx_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr_body(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct stat st;
	struct tree *t = ops_tree(c, ino);
	int ret = 0;

	if (t)
		ret = tree_getattr(t, ino, &st);
	else
		mux_root_attr(c->mux, &st);
	if (ret)
		reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, writer_view(c, req, ino, fi, &st));
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	interruptible(req);
	op_getattr_body(req, ino, fi);
	interruptible(NULL);
}

/* The project folders' links to their projects (read-only: op_symlink
 * makes none). */
static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct tree *t = ops_tree(ctx_of(req), ino);
	struct buf target = BUF_INIT;
	int ret = t ? tree_readlink(t, ino, &target) : -EINVAL; /* (the mux's root) */

	if (ret)
		reply_err(req, -ret);
	else
		fuse_reply_readlink(req, target.data);
	buf_release(&target);
}

static void op_setattr_body(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			    struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct tree *t = tree_to_change(req, ino);
	struct stat st;
	int set = 0, ret;

	if (!t)
		return;
	if (c->read_only && (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE))) {
		reply_err(req, EROFS);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE && fi && fi->fh) {
		/* ftruncate on an open file: only its buffer changes. */
		struct handle *h = handle_get(fi);
		if (h->fd < 0 && (uint64_t)attr->st_size > c->max_file) {
			handle_put(h);
			reply_err(req, EFBIG);
			return;
		}
		struct tree_caller who;
		caller_of(req, &who);
		pthread_mutex_lock(&h->lock);
		ret = handle_truncate(c, h, (size_t)attr->st_size);
		if (!ret) {
			h->dirty = 1;
			h->attempted = 0;
			add_writer(h, who.tgid);
		}
		pthread_mutex_unlock(&h->lock);
		handle_put(h);
		if (ret) {
			reply_err(req, -ret);
			return;
		}
		to_set &= ~FUSE_SET_ATTR_SIZE;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if ((uint64_t)attr->st_size > c->max_file) {
			reply_err(req, EFBIG);
			return;
		}
		set |= TREE_SET_SIZE;
	}
	if (to_set & FUSE_SET_ATTR_MODE)
		set |= TREE_SET_MODE;
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
		set |= TREE_SET_MTIME;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			clock_gettime(CLOCK_REALTIME, &attr->st_mtim);
	}
	struct tree_caller who;
	caller_of(req, &who);
	ret = tree_setattr(t, ino, attr, set, &who, &st);
	if (ret) {
		reply_err(req, -ret);
		return;
	}
	fuse_reply_attr(req, &st, writer_view(c, req, ino, fi, &st));
	if (set & TREE_SET_SIZE && tree_file_kind(t, ino) == TREE_API_RW)
		invalidate_kernel(c, ino);
}

/* truncate(2) of a file without an open handle saves at once (with the
 * read before it); anything else only reads. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	int saves = (to_set & FUSE_SET_ATTR_SIZE) && !(fi && fi->fh);
	int was = http_thread_save(saves);

	interruptible(req);
	op_setattr_body(req, ino, attr, to_set, fi);
	interruptible(NULL);
	http_thread_save(was);
}

static void op_opendir_body(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct dir_handle *d = xcalloc(1, sizeof(*d));
	struct tree *t = ops_tree(c, ino);
	int ret = 0;

	if (t)
		ret = tree_readdir(t, ino, &d->dir);
	else
		mux_readdir(c->mux, &d->dir);

	if (ret) {
		free(d);
		reply_err(req, -ret);
		return;
	}
	track(c, &d->item, dir_free_item);
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) == -ENOENT)
		dir_close(c, d);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	interruptible(req);
	op_opendir_body(req, ino, fi);
	interruptible(NULL);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct tree_dir *d = &((struct dir_handle *)(uintptr_t)fi->fh)->dir;
	char *buf = xmalloc(size);
	size_t used = 0;

	(void)ino;
	for (size_t i = (size_t)off; i < d->n; i++) {
		struct stat st;
		memset(&st, 0, sizeof(st));
		st.st_ino = d->ents[i].ino;
		st.st_mode = d->ents[i].mode;
		size_t n = fuse_add_direntry(req, buf + used, size - used, d->ents[i].name, &st,
					     (off_t)(i + 1));
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	dir_close(ctx_of(req), (struct dir_handle *)(uintptr_t)fi->fh);
	reply_err(req, 0);
}

static int open_flags(const struct fuse_file_info *fi)
{
	int f = 0;

	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		f |= TREE_OPEN_WRITE;
	if ((f & TREE_OPEN_WRITE) && (fi->flags & O_TRUNC))
		f |= TREE_OPEN_TRUNC;
	return f;
}

/* Makes the handle of an open() or create(). */
static int open_handle(struct ops_ctx *c, fuse_req_t req, uint64_t ino, struct fuse_file_info *fi)
{
	struct handle *h;
	struct tree_caller who;
	int flags = open_flags(fi), size_changed, ret;

	struct tree *t = ops_tree(c, ino);
	if (!t)
		return -EISDIR; /* (the root of a mount of several instances) */
	int kind = tree_file_kind(t, ino);

	if (kind == TREE_SPOOLED && (flags & TREE_OPEN_WRITE)) {
		/* a managed folder's file: written through a temporary file */
		caller_of(req, &who);
		h = handle_new(c, ino);
		ret = tree_open_spooled(t, ino, flags & TREE_OPEN_TRUNC, &h->fd, &h->fd_len,
					&h->base);
		h->disk = h->fd_len;
		if (ret) {
			handle_close(c, h);
			return ret;
		}
		add_writer(h, who.tgid);
		h->dirty = (flags & TREE_OPEN_TRUNC) != 0;
		h->append = (fi->flags & O_APPEND) != 0;
		fi->fh = (uint64_t)(uintptr_t)h;
		fi->keep_cache = 0;
		fi->direct_io = 1;
		atomic_store(&h->ready, 1);
		return 0;
	}
	if (kind == TREE_STREAM || kind == TREE_SPOOLED) {
		if (flags & TREE_OPEN_WRITE)
			return c->read_only ? -EROFS : -EACCES;
		h = handle_new(c, ino);
		ret = tree_stream_open(t, ino, &h->stream);
		if (ret) {
			handle_close(c, h);
			return ret;
		}
		fi->fh = (uint64_t)(uintptr_t)h;
		fi->keep_cache = 0;
		fi->noflush = 1;
		atomic_store(&h->ready, 1);
		return 0;
	}
	caller_of(req, &who);
	h = handle_new(c, ino);
	ret = tree_open(t, ino, flags, &who, &h->data, &h->base, &size_changed);
	if (!ret && (flags & TREE_OPEN_WRITE)) {
		ret = account(c, h, h->data.len);
		add_writer(h, who.tgid);
	}
	if (ret) {
		handle_close(c, h);
		return ret;
	}
	/* The document changed since the kernel last asked for its size:
	 * make it ask again.  Attributes only (offset -1): that waits for no
	 * lock, and open() drops the pages anyway (keep_cache is off). */
	if (size_changed)
		fuse_lowlevel_notify_inval_inode(c->se, ino, -1, 0);
	/* Truncating is a change even if nothing is written after it. */
	h->dirty = (flags & TREE_OPEN_TRUNC) != 0;
	h->append = (fi->flags & O_APPEND) != 0;
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->keep_cache = 0;
	/* Reads come from this handle's buffer, never cut at a size the
	 * kernel cached from another handle (a writer's unsaved truncation
	 * must not show to readers). */
	fi->direct_io = 1;
	/* A reader's close() has nothing to save: spare the FLUSH round trip. */
	fi->noflush = !(flags & TREE_OPEN_WRITE);
	/* Filled in: from now on the walks of the open handles see it. */
	atomic_store(&h->ready, 1);
	return 0;
}

static void op_open_body(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	int ret;

	if (c->read_only && (fi->flags & O_ACCMODE) != O_RDONLY) {
		reply_err(req, EROFS);
		return;
	}
	ret = open_handle(c, req, ino, fi);
	if (ret) {
		reply_err(req, -ret);
		return;
	}
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_close(c, (struct handle *)(uintptr_t)fi->fh);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	interruptible(req);
	op_open_body(req, ino, fi);
	interruptible(NULL);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct fuse_entry_param e;
	uint64_t ino;
	struct tree *t = tree_to_change(req, parent);

	if (!t)
		return;
	/* In a file tree it makes the file on DSS: a change is never cut. */
	int was = http_thread_save(1);
	int ret = tree_create(t, parent, name, mode, &ino, &e.attr);

	http_thread_save(was);

	if (ret) {
		reply_err(req, -ret);
		return;
	}
	ret = open_handle(c, req, ino, fi);
	if (ret) {
		tree_forget(t, ino, 1);
		reply_err(req, -ret);
		return;
	}
	e.ino = ino;
	e.generation = 1;
	e.attr_timeout = c->attr_timeout;
	e.entry_timeout = c->attr_timeout;
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		handle_close(c, (struct handle *)(uintptr_t)fi->fh);
		tree_forget(t, ino, 1);
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fi);

	(void)ino;
	if (h->stream) {
		char *buf = xmalloc(size ? size : 1);
		ssize_t n = tree_stream_read(h->stream, buf, size, off);
		if (n < 0)
			reply_err(req, (int)-n);
		else
			fuse_reply_buf(req, buf, (size_t)n);
		free(buf);
		handle_put(h);
		return;
	}
	pthread_mutex_lock(&h->lock);
	const char *bytes = NULL;
	char *tmp = NULL;
	ssize_t n = off < 0 ? 0 : handle_read(h, (size_t)off, size, &bytes, &tmp);
	if (n < 0)
		reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, bytes, (size_t)n);
	free(tmp);
	pthread_mutex_unlock(&h->lock);
	handle_put(h);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct handle *h = handle_get(fi);
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	int ret = 0;

	(void)ino;
	pthread_mutex_lock(&h->lock);
	if (h->append)
		off = (off_t)handle_len(h); /* the kernel's idea of the end may be stale */
	/* (a spooled file's bound is the disk's, spool_total) */
	if (off < 0 || (h->fd < 0 && (uint64_t)off + size > c->max_file))
		ret = -EFBIG;
	else
		ret = handle_write(c, h, (size_t)off, data, size);
	if (!ret) {
		h->dirty = 1;
		h->attempted = 0;
		if (fc->pid != h->last_tid) {
			struct tree_caller who;
			proc_caller(fc->pid, fc->uid, &who);
			h->last_tid = fc->pid;
			h->last_tgid = who.tgid;
		}
		add_writer(h, h->last_tgid);
	}
	pthread_mutex_unlock(&h->lock);
	handle_put(h);
	if (ret)
		reply_err(req, -ret);
	else
		fuse_reply_write(req, size);
}

static void save_and_reply(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
			   enum save_when when)
{
	struct ops_ctx *c = ctx_of(req);
	struct handle *h = handle_get(fi);
	struct tree_caller who;
	int saved, ret;

	caller_of(req, &who);
	ret = handle_save(c, h, when, &who, &saved);
	handle_put(h);
	reply_err(req, -ret);
	if (saved)
		invalidate_kernel(c, ino);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	save_and_reply(req, ino, fi, SAVE_FLUSH);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	save_and_reply(req, ino, fi, SAVE_FSYNC);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct tree_caller who = {0};
	int saved = 0;

	/* Only saves anything if no writer's flush tried; nobody is left to
	 * see an error, so it is logged. */
	int ret = handle_save(c, h, SAVE_RELEASE, &who, &saved);
	if (ret)
		log_unsaved(c, ino, "closed without a flush that could save it", -ret);
	handle_close(c, h);
	reply_err(req, 0);
	if (saved)
		invalidate_kernel(c, ino);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tree *t = tree_to_change(req, parent);

	if (!t)
		return;
	int was = http_thread_save(1); /* (in a file tree: a DELETE) */
	int ret = tree_unlink(t, parent, name);

	http_thread_save(was);
	reply_err(req, -ret);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct ops_ctx *c = ctx_of(req);
	uint64_t saved_ino = 0;
	struct tree_caller who;
	struct tree *t = tree_to_change(req, parent), *to;

	if (!t || !(to = tree_to_change(req, newparent)))
		return;
	if (to != t) { /* between two instances: mv copies and deletes */
		reply_err(req, EXDEV);
		return;
	}
	caller_of(req, &who);
	/* It may save (scratch -> DSS file): a save is never cut. */
	int was = http_thread_save(1);
	int ret = tree_rename(t, parent, name, newparent, newname, flags, &who, &saved_ino);
	http_thread_save(was);

	reply_err(req, -ret);
	if (saved_ino)
		invalidate_kernel(c, saved_ino);
	if (ret)
		return;
	/* The kernel now believes the source's inode sits at the new name.
	 * Not so here: a save leaves the scratch file's inode behind for the
	 * DSS file's, a copy leaves the source in place, and inodes follow
	 * paths.  Make it look both names up again. */
	notifier_entry(c->notifier, parent, name);
	notifier_entry(c->notifier, newparent, newname);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct ops_ctx *c = ctx_of(req);
	struct stat st;
	uint64_t ino = 0;
	struct tree *t = tree_to_change(req, parent);
	int ret;

	(void)mode;
	if (!t)
		return;
	int was = http_thread_save(1);
	ret = tree_mkdir(t, parent, name, &ino, &st);
	http_thread_save(was);
	if (ret)
		reply_err(req, -ret);
	else
		reply_entry(c, req, ino, &st);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tree *t = tree_to_change(req, parent);

	if (!t)
		return;
	int was = http_thread_save(1);
	int ret = tree_rmdir(t, parent, name);

	http_thread_save(was);
	reply_err(req, -ret);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link;
	(void)parent;
	(void)name;
	reply_refused(req);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	reply_refused(req);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* The figures of `dssfs stats`, as the mount root's OPS_STATS_XATTR.  No
 * other extended attribute exists, and "not supported" (rather than "no
 * such attribute") tells ls, cp and the kernel not to ask again for the
 * other files of the mount: each question is a round trip here. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ops_ctx *c = ctx_of(req);
	struct buf out = BUF_INIT;

	if (ino != TREE_ROOT_INO || strcmp(name, OPS_STATS_XATTR) || !c->stats) {
		fuse_reply_err(req, EOPNOTSUPP); /* (not counted: no failure) */
		return;
	}
	c->stats(c->stats_arg, c, &out);
	if (!size)
		fuse_reply_xattr(req, out.len);
	else if (size < out.len)
		reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, out.data, out.len);
	buf_release(&out);
}

const struct fuse_lowlevel_ops dssfs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .setattr = op_setattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .release = op_release,
    .unlink = op_unlink,
    .rename = op_rename,
    .mkdir = op_mkdir,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .link = op_link,
    .statfs = op_statfs,
    .getxattr = op_getxattr,
};
