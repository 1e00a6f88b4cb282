#include "dssfs/ops.h"
#include "dssfs/log.h"
#include "dssfs/tree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

/* An open file.  Writes will buffer here; for now it holds what was read.
 *
 * Reference counted: the kernel may see a READ reply complete, and send the
 * RELEASE that a second thread handles, while the thread that replied is
 * still returning from writev(2) on our buffer. */
struct handle {
	struct open_item item; /* first: registered while open */
	atomic_int refs;
	struct buf data;
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

static void handle_put(struct handle *h)
{
	if (atomic_fetch_sub(&h->refs, 1) == 1) {
		buf_release(&h->data);
		free(h);
	}
}

static void handle_free_item(struct open_item *it)
{
	handle_put((struct handle *)it);
}

static struct handle *handle_new(struct ops_ctx *c)
{
	struct handle *h = xcalloc(1, sizeof(*h));

	atomic_init(&h->refs, 1);
	buf_init(&h->data);
	track(c, &h->item, handle_free_item);
	return h;
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

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Several threads may read one file; lookups of different names in
	 * one directory run in parallel. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ops_ctx *c = ctx_of(req);
	struct fuse_entry_param e;
	uint64_t ino = 0;
	int permanent = 0;
	int ret;

	memset(&e, 0, sizeof(e));
	ret = tree_lookup(c->tree, parent, name, &ino, &e.attr, &permanent);
	if (ret == -ENOENT) {
		/* A negative entry: the kernel will not ask again for a while. */
		e.ino = 0;
		e.entry_timeout = permanent ? c->negative_timeout_permanent : c->attr_timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	e.ino = ino;
	e.generation = 1;
	e.attr_timeout = c->attr_timeout;
	e.entry_timeout = c->attr_timeout;
	if (fuse_reply_entry(req, &e) == -ENOENT)
		tree_forget(c->tree, ino, 1); /* the lookup was interrupted */
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
	int ret;

	(void)fi;
	ret = tree_getattr(c->tree, ino, &st);
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, c->attr_timeout);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	(void)ino;
	(void)attr;
	(void)to_set;
	(void)fi;
	/* Saving files is the next milestone; until then nothing changes. */
	fuse_reply_err(req, EROFS);
}

static void dir_close(struct ops_ctx *c, struct dir_handle *d)
{
	untrack(c, &d->item);
	dir_free_item(&d->item);
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

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct handle *h;
	int ret, size_changed = 0;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		/* Read-only files and read-only mounts refuse writers; saving
		 * writable files arrives with the write path. */
		fuse_reply_err(req,
			       c->read_only || !tree_is_writable(c->tree, ino) ? EACCES : EROFS);
		return;
	}
	h = handle_new(c);
	ret = tree_read_file(c->tree, ino, &h->data, &size_changed);
	if (ret) {
		handle_close(c, h);
		fuse_reply_err(req, -ret);
		return;
	}
	/* The document changed since the kernel last asked for its size:
	 * make it ask again, or reads would stop at the old size.  Safe
	 * before the reply: the kernel holds no lock that this waits for. */
	if (size_changed)
		fuse_lowlevel_notify_inval_inode(c->se, ino, 0, 0);
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->keep_cache = 0;
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_close(c, h);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	(void)ino;
	atomic_fetch_add(&h->refs, 1);
	if (off < 0 || (size_t)off >= h->data.len) {
		fuse_reply_buf(req, NULL, 0);
	} else {
		if (size > h->data.len - (size_t)off)
			size = h->data.len - (size_t)off;
		fuse_reply_buf(req, h->data.data + off, size);
	}
	handle_put(h);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_close(ctx_of(req), (struct handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
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
    .read = op_read,
    .release = op_release,
    .statfs = op_statfs,
};
