#include "dssfs/ops.h"
#include "dssfs/log.h"
#include "dssfs/tree.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

/* An open file: the whole content, buffered.  Writes and truncation change
 * only the buffer; flush/fsync save a changed buffer.  A flush before any
 * write (the shell closing the original of a redirected descriptor) sends
 * nothing, so a handle that was only opened with O_TRUNC is saved at release;
 * release also saves what no flush tried to save.  After a failed save the
 * buffer stays changed, so a later flush or fsync tries again.
 *
 * Reference counted: the kernel may see a READ reply complete, and send the
 * RELEASE that a second thread handles, while the thread that replied is
 * still returning from writev(2) on our buffer. */
struct handle {
	struct open_item item; /* first: registered while open */
	atomic_int refs;
	pthread_mutex_t lock; /* guards everything below */
	struct buf data;
	int dirty;		    /* differs from what DSS (or the scratch store) holds */
	int written;		    /* write() or ftruncate() since open */
	int attempted;		    /* a flush tried to save the current content */
	struct tree_base base;	    /* what was read, for the conflict check */
	struct tree_stream *stream; /* a spooled stream: read from there */
};

struct dir_handle {
	struct open_item item;
	struct tree_dir dir;
};

/* Open handles are registered so that those the kernel never releases
 * (the session ends while files are open) are freed at exit. */
static void track(struct ops_ctx *c, struct open_item *it, void (*free_fn)(struct open_item *))
{
	it->free_fn = free_fn;
	pthread_mutex_lock(&c->open_lock);
	it->prev = NULL;
	it->next = c->open_items;
	if (it->next)
		it->next->prev = it;
	c->open_items = it;
	pthread_mutex_unlock(&c->open_lock);
}

static void untrack(struct ops_ctx *c, struct open_item *it)
{
	pthread_mutex_lock(&c->open_lock);
	if (it->prev)
		it->prev->next = it->next;
	else
		c->open_items = it->next;
	if (it->next)
		it->next->prev = it->prev;
	pthread_mutex_unlock(&c->open_lock);
}

static void handle_put(struct handle *h);

static void handle_free_item(struct open_item *it)
{
	handle_put((struct handle *)it);
}

static struct handle *handle_new(struct ops_ctx *c)
{
	struct handle *h = xcalloc(1, sizeof(*h));

	atomic_init(&h->refs, 1);
	pthread_mutex_init(&h->lock, NULL);
	buf_init(&h->data);
	h->base.version = -1;
	track(c, &h->item, handle_free_item);
	return h;
}

static struct handle *handle_get(struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	atomic_fetch_add(&h->refs, 1);
	return h;
}

static void handle_put(struct handle *h)
{
	if (atomic_fetch_sub(&h->refs, 1) == 1) {
		tree_stream_close(h->stream);
		buf_release(&h->data);
		pthread_mutex_destroy(&h->lock);
		free(h);
	}
}

static void handle_close(struct ops_ctx *c, struct handle *h)
{
	untrack(c, &h->item);
	handle_put(h);
}

static void dir_free_item(struct open_item *it)
{
	struct dir_handle *d = (struct dir_handle *)it;

	tree_dir_release(&d->dir);
	free(d);
}

static void dir_close(struct ops_ctx *c, struct dir_handle *d)
{
	untrack(c, &d->item);
	dir_free_item(&d->item);
}

void ops_release_all(struct ops_ctx *c)
{
	pthread_mutex_lock(&c->open_lock);
	while (c->open_items) {
		struct open_item *it = c->open_items;
		c->open_items = it->next;
		it->free_fn(it);
	}
	pthread_mutex_unlock(&c->open_lock);
}

static struct ops_ctx *ctx_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Kernel cache invalidations are sent by one notifier thread, never by a
 * worker: the kernel may have to wait for a lock (a folder's, a page's)
 * held by an operation that itself waits for a worker, and with every
 * worker waiting on the kernel nothing would move (seen with vim and -s). */
struct notice {
	uint64_t ino;
	char *name; /* NULL: the inode; else the entry `name` in folder ino */
	struct notice *next;
};

static void *notifier(void *arg)
{
	struct ops_ctx *c = arg;

	pthread_mutex_lock(&c->notice_lock);
	for (;;) {
		while (!c->notices && !c->notice_stop)
			pthread_cond_wait(&c->notice_cond, &c->notice_lock);
		if (!c->notices)
			break;
		struct notice *n = c->notices;
		c->notices = n->next;
		if (!c->notices)
			c->notices_tail = NULL;
		pthread_mutex_unlock(&c->notice_lock);
		int ret = n->name ? fuse_lowlevel_notify_inval_entry(c->se, n->ino, n->name,
								     strlen(n->name))
				  : fuse_lowlevel_notify_inval_inode(c->se, n->ino, 0, 0);
		if (ret && ret != -ENOENT)
			log_debug("cannot invalidate the kernel's cache of inode %llu: %s",
				  (unsigned long long)n->ino, strerror(-ret));
		free(n->name);
		free(n);
		pthread_mutex_lock(&c->notice_lock);
	}
	pthread_mutex_unlock(&c->notice_lock);
	return NULL;
}

static void notify_later(struct ops_ctx *c, uint64_t ino, const char *name)
{
	struct notice *n = xcalloc(1, sizeof(*n));

	n->ino = ino;
	n->name = name ? xstrdup(name) : NULL;
	pthread_mutex_lock(&c->notice_lock);
	if (c->notices_tail)
		c->notices_tail->next = n;
	else
		c->notices = n;
	c->notices_tail = n;
	pthread_cond_signal(&c->notice_cond);
	pthread_mutex_unlock(&c->notice_lock);
}

int ops_start(struct ops_ctx *c)
{
	if (pthread_create(&c->notice_thread, NULL, notifier, c))
		return -1;
	c->notice_started = 1;
	return 0;
}

void ops_stop(struct ops_ctx *c)
{
	if (c->notice_started) {
		pthread_mutex_lock(&c->notice_lock);
		c->notice_stop = 1;
		pthread_cond_signal(&c->notice_cond);
		pthread_mutex_unlock(&c->notice_lock);
		pthread_join(c->notice_thread, NULL);
		c->notice_started = 0;
	}
	while (c->notices) {
		struct notice *n = c->notices;
		c->notices = n->next;
		free(n->name);
		free(n);
	}
	c->notices_tail = NULL;
}

/* After a save, what the kernel cached (pages written by the user, size,
 * mtime) is not what DSS holds: drop it. */
static void invalidate_kernel(struct ops_ctx *c, uint64_t ino)
{
	notify_later(c, ino, NULL);
}

enum save_when { SAVE_FLUSH, SAVE_FSYNC, SAVE_RELEASE };

/* Saves a changed handle when `when` calls for it.  Returns 0 or -errno;
 * *saved says whether a save of a DSS file was attempted: then the kernel's
 * cache (the user's bytes, size and time) is not what DSS holds, whether it
 * accepted the save or not, and must be dropped. */
static int handle_save(struct ops_ctx *c, uint64_t ino, struct handle *h, enum save_when when,
		       int *saved)
{
	int ret = 0, go;

	*saved = 0;
	pthread_mutex_lock(&h->lock);
	go = h->dirty && (when == SAVE_FSYNC || (when == SAVE_FLUSH && h->written) ||
			  (when == SAVE_RELEASE && !h->attempted));
	if (when == SAVE_FLUSH && go)
		h->attempted = 1;
	if (go) {
		ret = tree_save(c->tree, ino, h->data.data, h->data.len, &h->base);
		if (!ret)
			h->dirty = 0;
		*saved = tree_file_kind(c->tree, ino) == TREE_API_RW;
	}
	pthread_mutex_unlock(&h->lock);
	return ret;
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
		tree_forget(c->tree, ino, 1); /* the request was interrupted */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ops_ctx *c = ctx_of(req);
	struct stat st;
	uint64_t ino = 0;
	int permanent = 0;
	int ret = tree_lookup(c->tree, parent, name, &ino, &st, &permanent);

	if (ret == -ENOENT) {
		/* A negative entry: the kernel will not ask again for a while. */
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e));
		e.entry_timeout = permanent ? c->negative_timeout_permanent : c->attr_timeout;
		fuse_reply_entry(req, &e);
	} else if (ret) {
		fuse_reply_err(req, -ret);
	} else {
		reply_entry(c, req, ino, &st);
	}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	tree_forget(ctx_of(req)->tree, ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		tree_forget(ctx_of(req)->tree, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct stat st;
	int ret = tree_getattr(c->tree, ino, &st);

	/* An open handle's unsaved changes are what its writer sees. */
	if (!ret && fi && fi->fh) {
		struct handle *h = handle_get(fi);
		pthread_mutex_lock(&h->lock);
		if (h->dirty) {
			st.st_size = (off_t)h->data.len;
			st.st_blocks = (blkcnt_t)((h->data.len + 511) / 512);
		}
		pthread_mutex_unlock(&h->lock);
		handle_put(h);
	}
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, c->attr_timeout);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct stat st;
	int set = 0, ret;

	if (c->read_only && (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE))) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE && fi && fi->fh) {
		/* ftruncate on an open file: only its buffer changes. */
		struct handle *h = handle_get(fi);
		if ((uint64_t)attr->st_size > c->max_file) {
			handle_put(h);
			fuse_reply_err(req, EFBIG);
			return;
		}
		pthread_mutex_lock(&h->lock);
		buf_resize(&h->data, (size_t)attr->st_size);
		h->dirty = h->written = 1;
		h->attempted = 0;
		pthread_mutex_unlock(&h->lock);
		handle_put(h);
		to_set &= ~FUSE_SET_ATTR_SIZE;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if ((uint64_t)attr->st_size > c->max_file) {
			fuse_reply_err(req, EFBIG);
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
	ret = tree_setattr(c->tree, ino, attr, set, &st);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (fi && fi->fh) {
		struct handle *h = handle_get(fi);
		pthread_mutex_lock(&h->lock);
		if (h->dirty)
			st.st_size = (off_t)h->data.len;
		pthread_mutex_unlock(&h->lock);
		handle_put(h);
	}
	fuse_reply_attr(req, &st, c->attr_timeout);
	if (set & TREE_SET_SIZE && tree_file_kind(c->tree, ino) == TREE_API_RW)
		invalidate_kernel(c, ino);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct dir_handle *d = xcalloc(1, sizeof(*d));
	int ret = tree_readdir(c->tree, ino, &d->dir);

	if (ret) {
		free(d);
		fuse_reply_err(req, -ret);
		return;
	}
	track(c, &d->item, dir_free_item);
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) == -ENOENT)
		dir_close(c, d);
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
	fuse_reply_err(req, 0);
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
static int open_handle(struct ops_ctx *c, uint64_t ino, struct fuse_file_info *fi)
{
	struct handle *h;
	int flags = open_flags(fi), size_changed, ret;

	if (tree_file_kind(c->tree, ino) == TREE_STREAM) {
		if (flags & TREE_OPEN_WRITE)
			return c->read_only ? -EROFS : -EACCES;
		h = handle_new(c);
		ret = tree_stream_open(c->tree, ino, &h->stream);
		if (ret) {
			handle_close(c, h);
			return ret;
		}
		fi->fh = (uint64_t)(uintptr_t)h;
		fi->keep_cache = 0;
		fi->noflush = 1;
		return 0;
	}
	h = handle_new(c);
	ret = tree_open(c->tree, ino, flags, &h->data, &h->base, &size_changed);

	if (ret) {
		handle_close(c, h);
		return ret;
	}
	/* The document changed since the kernel last asked for its size:
	 * make it ask again before the first read, or reads would stop at the
	 * old size.  Attributes only (offset -1): that waits for no lock,
	 * and open() drops the pages anyway (keep_cache is off). */
	if (size_changed)
		fuse_lowlevel_notify_inval_inode(c->se, ino, -1, 0);
	/* Truncating is a change even if nothing is written after it. */
	h->dirty = (flags & TREE_OPEN_TRUNC) != 0;
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->keep_cache = 0;
	/* A reader's close() has nothing to save: spare the FLUSH round trip. */
	fi->noflush = !(flags & TREE_OPEN_WRITE);
	return 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	int ret;

	if (c->read_only && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ret = open_handle(c, ino, fi);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_close(c, (struct handle *)(uintptr_t)fi->fh);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct fuse_entry_param e;
	uint64_t ino;
	int ret = tree_create(c->tree, parent, name, mode, &ino, &e.attr);

	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	ret = open_handle(c, ino, fi);
	if (ret) {
		tree_forget(c->tree, ino, 1);
		fuse_reply_err(req, -ret);
		return;
	}
	e.ino = ino;
	e.generation = 1;
	e.attr_timeout = c->attr_timeout;
	e.entry_timeout = c->attr_timeout;
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		handle_close(c, (struct handle *)(uintptr_t)fi->fh);
		tree_forget(c->tree, ino, 1);
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
			fuse_reply_err(req, (int)-n);
		else
			fuse_reply_buf(req, buf, (size_t)n);
		free(buf);
		handle_put(h);
		return;
	}
	pthread_mutex_lock(&h->lock);
	if (off < 0 || (size_t)off >= h->data.len) {
		fuse_reply_buf(req, NULL, 0);
	} else {
		if (size > h->data.len - (size_t)off)
			size = h->data.len - (size_t)off;
		fuse_reply_buf(req, h->data.data + off, size);
	}
	pthread_mutex_unlock(&h->lock);
	handle_put(h);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct handle *h = handle_get(fi);

	(void)ino;
	if (off < 0 || (uint64_t)off + size > c->max_file) {
		handle_put(h);
		fuse_reply_err(req, EFBIG);
		return;
	}
	pthread_mutex_lock(&h->lock);
	buf_write_at(&h->data, (size_t)off, data, size);
	h->dirty = h->written = 1;
	h->attempted = 0;
	pthread_mutex_unlock(&h->lock);
	handle_put(h);
	fuse_reply_write(req, size);
}

static void save_and_reply(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
			   enum save_when when)
{
	struct ops_ctx *c = ctx_of(req);
	struct handle *h = handle_get(fi);
	int saved, ret = handle_save(c, ino, h, when, &saved);

	handle_put(h);
	fuse_reply_err(req, -ret);
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
	int saved = 0;

	/* Only saves anything if the last writer did not flush; nobody is
	 * left to see an error, so it is logged. */
	int ret = handle_save(c, ino, h, SAVE_RELEASE, &saved);
	if (ret)
		log_error("a file closed without flush could not be saved: %s", strerror(-ret));
	handle_close(c, h);
	fuse_reply_err(req, 0);
	if (saved)
		invalidate_kernel(c, ino);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -tree_unlink(ctx_of(req)->tree, parent, name));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct ops_ctx *c = ctx_of(req);
	uint64_t saved_ino = 0;
	int ret = tree_rename(c->tree, parent, name, newparent, newname, flags, &saved_ino);

	fuse_reply_err(req, -ret);
	if (saved_ino)
		invalidate_kernel(c, saved_ino);
	if (ret)
		return;
	/* The kernel now believes the source's inode sits at the new name.
	 * Not so here: a save leaves the scratch file's inode behind for the
	 * DSS file's, a copy leaves the source in place, and inodes follow
	 * paths.  Make it look both names up again. */
	notify_later(c, parent, name);
	notify_later(c, newparent, newname);
}

/* DSS objects are made and removed in DSS, not through the mount. */
static void reply_refused(fuse_req_t req)
{
	fuse_reply_err(req, ctx_of(req)->read_only ? EROFS : EPERM);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent;
	(void)name;
	(void)mode;
	reply_refused(req);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent;
	(void)name;
	reply_refused(req);
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

const struct fuse_lowlevel_ops dssfs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
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
};
