/*
 * handles - the open files of the FUSE layer: buffered handles, who writes
 * them, when they are saved (see struct handle in ops_int.h), the memory
 * they hold, and what each process sees of them.
 */
#include "ops_int.h"

#include "dssfs/cache.h"
#include "dssfs/http.h"
#include "dssfs/log.h"
#include "dssfs/mux.h"
#include "dssfs/proc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void track(struct ops_ctx *c, struct open_item *it, void (*free_fn)(struct open_item *))
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

static void handle_free_item(struct open_item *it)
{
	handle_put((struct handle *)it);
}

struct handle *handle_new(struct ops_ctx *c, uint64_t ino)
{
	struct handle *h = xcalloc(1, sizeof(*h));

	atomic_init(&h->refs, 1);
	atomic_init(&h->ready, 0);
	h->ino = ino;
	h->ctx = c;
	pthread_mutex_init(&h->lock, NULL);
	buf_init(&h->data);
	h->fd = -1;
	h->base.version = -1;
	track(c, &h->item, handle_free_item);
	return h;
}

struct handle *handle_get(struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	atomic_fetch_add(&h->refs, 1);
	return h;
}

void handle_put(struct handle *h)
{
	if (atomic_fetch_sub(&h->refs, 1) == 1) {
		if (h->accounted)
			atomic_fetch_sub(&h->ctx->buffered, h->accounted);
		if (h->fd >= 0) {
			close(h->fd);
			tree_spool_account(ops_tree(h->ctx, h->ino), h->disk, 0);
		}
		tree_stream_close(h->stream);
		buf_release(&h->data);
		pthread_mutex_destroy(&h->lock);
		free(h);
	}
}

void handle_close(struct ops_ctx *c, struct handle *h)
{
	untrack(c, &h->item);
	handle_put(h);
}

void dir_free_item(struct open_item *it)
{
	struct dir_handle *d = (struct dir_handle *)it;

	tree_dir_release(&d->dir);
	free(d);
}

void dir_close(struct ops_ctx *c, struct dir_handle *d)
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

int ops_save_all(struct ops_ctx *c, int64_t deadline_ms)
{
	int unsaved = 0;

	pthread_mutex_lock(&c->open_lock);
	for (struct open_item *it = c->open_items; it; it = it->next) {
		if (it->free_fn != handle_free_item)
			continue;
		struct handle *h = (struct handle *)it;
		struct tree_caller nobody = {0};
		int saved, ret, dirty;
		if (!atomic_load(&h->ready))
			continue; /* (its open() has not returned: nothing written) */
		pthread_mutex_lock(&h->lock);
		dirty = h->dirty;
		pthread_mutex_unlock(&h->lock);
		if (!dirty)
			continue;
		if (cache_monotonic_ms() > deadline_ms) {
			log_unsaved(c, h->ino, "unmounted before there was time to save it",
				    ETIMEDOUT);
			unsaved++;
			continue;
		}
		ret = handle_save(c, h, SAVE_UNMOUNT, &nobody, &saved);
		if (ret) {
			log_unsaved(c, h->ino, "at unmount", -ret);
			unsaved++;
		}
	}
	pthread_mutex_unlock(&c->open_lock);
	return unsaved;
}

void caller_of(fuse_req_t req, struct tree_caller *who)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);

	proc_caller(fc->pid, fc->uid, who);
}

/* Whether process tgid holds another descriptor of our file ino, so that
 * the close being flushed is not its last (proc_holds_file). */
static int holds_descriptor(struct ops_ctx *c, int64_t tgid, uint64_t ino)
{
	int mnt = atomic_load(&c->mnt_id);

	if (mnt == -2) {
		mnt = proc_mount_id(c->mountpoint);
		atomic_store(&c->mnt_id, mnt);
	}
	return proc_holds_file(tgid, mnt, ino);
}

/* Called with h->lock held. */
static int is_writer(const struct handle *h, int64_t tgid)
{
	for (int i = 0; i < h->nwriters; i++)
		if (h->writers[i] == tgid)
			return 1;
	return 0;
}

void add_writer(struct handle *h, int64_t tgid)
{
	if (tgid <= 0 || is_writer(h, tgid))
		return;
	if (h->nwriters == MAX_WRITERS) /* the oldest goes */
		memmove(h->writers, h->writers + 1, (MAX_WRITERS - 1) * sizeof(h->writers[0]));
	else
		h->nwriters++;
	h->writers[h->nwriters - 1] = tgid;
}

int account(struct ops_ctx *c, struct handle *h, size_t len)
{
	if (len <= h->accounted)
		return 0;
	size_t more = len - h->accounted;
	size_t was = atomic_fetch_add(&c->buffered, more);
	if (was + more > c->buffered_max) {
		atomic_fetch_sub(&c->buffered, more);
		log_error("open files hold %zu MiB of unsaved changes, the most allowed "
			  "(-o dirty_max): write refused",
			  c->buffered_max >> 20);
		return -ENOSPC;
	}
	h->accounted = len;
	return 0;
}

size_t handle_len(const struct handle *h)
{
	return h->fd >= 0 ? h->fd_len : h->data.len;
}

/* Counts the disk a spooled handle's file takes (it never shrinks below
 * what was written: a sparse hole still may be filled). */
static int disk_grow(struct ops_ctx *c, struct handle *h, size_t len)
{
	int ret = 0;

	if (len > h->disk && !(ret = tree_spool_account(ops_tree(c, h->ino), h->disk, len)))
		h->disk = len;
	return ret;
}

int handle_write(struct ops_ctx *c, struct handle *h, size_t off, const char *data, size_t size)
{
	size_t end = off + size;
	int ret;

	if (h->fd < 0) {
		ret = account(c, h, end > h->data.len ? end : h->data.len);
		if (!ret)
			buf_write_at(&h->data, off, data, size);
		return ret;
	}
	if ((ret = disk_grow(c, h, end)))
		return ret;
	for (size_t w = 0; w < size;) {
		ssize_t n = pwrite(h->fd, data + w, size - w, (off_t)(off + w));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		w += (size_t)n;
	}
	if (end > h->fd_len)
		h->fd_len = end;
	return 0;
}

int handle_truncate(struct ops_ctx *c, struct handle *h, size_t len)
{
	int ret;

	if (h->fd < 0) {
		ret = account(c, h, len);
		if (!ret)
			buf_resize(&h->data, len);
		return ret;
	}
	if ((ret = disk_grow(c, h, len)))
		return ret;
	if (ftruncate(h->fd, (off_t)len))
		return -errno;
	h->fd_len = len;
	return 0;
}

ssize_t handle_read(struct handle *h, size_t off, size_t size, const char **out, char **buf)
{
	size_t len = handle_len(h);
	ssize_t n;

	*out = NULL;
	*buf = NULL;
	if (off >= len)
		return 0;
	if (size > len - off)
		size = len - off;
	if (h->fd < 0) {
		*out = h->data.data + off;
		return (ssize_t)size;
	}
	*buf = xmalloc(size ? size : 1);
	do
		n = pread(h->fd, *buf, size, (off_t)off);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	*out = *buf;
	return n;
}

int handle_save(struct ops_ctx *c, struct handle *h, enum save_when when,
		const struct tree_caller *who, int *saved)
{
	int ret = 0, go;

	*saved = 0;
	pthread_mutex_lock(&h->lock);
	switch (when) {
	case SAVE_FLUSH:
		go = h->dirty && who->tgid && is_writer(h, who->tgid) &&
		     !holds_descriptor(c, who->tgid, h->ino);
		break;
	case SAVE_RELEASE:
		go = h->dirty && !h->attempted;
		break;
	default:
		go = h->dirty;
	}
	if (go) {
		h->attempted = 1;
		/* Never cut by an interrupt nor by the session's end. */
		int was = http_thread_save(1);
		struct tree *t = ops_tree(c, h->ino);
		if (h->fd >= 0)
			ret = tree_save_spooled(t, h->ino, h->fd, h->fd_len, who, &h->base);
		else
			ret = tree_save(t, h->ino, h->data.data, h->data.len, who, &h->base);
		http_thread_save(was);
		if (!ret)
			h->dirty = 0;
		*saved = tree_file_kind(t, h->ino) == TREE_API_RW;
	}
	pthread_mutex_unlock(&h->lock);
	return ret;
}

/* An open handle's unsaved changes are what its writer sees, and only it.
 * The kernel shares one inode's attributes between processes (and fstat
 * does not say which handle asks), so while a handle of ino holds unsaved
 * changes its attributes are not cached (timeout 0) and each process is
 * answered for itself: a writer of that handle gets its buffer's size,
 * everybody else DSS's.  Returns the attribute timeout to use. */
double writer_view(struct ops_ctx *c, fuse_req_t req, uint64_t ino, struct fuse_file_info *fi,
		   struct stat *st)
{
	double timeout = c->attr_timeout;
	struct tree_caller who = {0};
	int known = 0;

	if (!atomic_load(&c->buffered))
		return timeout; /* no handle open for writing */
	pthread_mutex_lock(&c->open_lock);
	for (struct open_item *it = c->open_items; it; it = it->next) {
		if (it->free_fn != handle_free_item)
			continue;
		struct handle *h = (struct handle *)it;
		if (h->ino != ino || !atomic_load(&h->ready))
			continue;
		pthread_mutex_lock(&h->lock);
		if (h->dirty) {
			timeout = 0;
			if (!known && !(fi && fi->fh)) {
				caller_of(req, &who);
				known = 1;
			}
			if ((fi && fi->fh == (uint64_t)(uintptr_t)h) ||
			    (!(fi && fi->fh) && is_writer(h, who.tgid))) {
				st->st_size = (off_t)handle_len(h);
				st->st_blocks = (blkcnt_t)((handle_len(h) + 511) / 512);
			}
		}
		pthread_mutex_unlock(&h->lock);
	}
	pthread_mutex_unlock(&c->open_lock);
	return timeout;
}

struct tree *ops_tree(struct ops_ctx *c, uint64_t ino)
{
	return c->mux ? mux_tree(c->mux, ino) : c->tree;
}

void log_unsaved(struct ops_ctx *c, uint64_t ino, const char *when, int err)
{
	struct buf path = BUF_INIT;
	struct tree *t = ops_tree(c, ino);

	/* (in a mount of several instances, from the mount's root) */
	if (t && c->mux)
		buf_addf(&path, "/%s", mux_name(c->mux, mux_index(c->mux, ino)));
	if (!t || tree_path_of(t, ino, &path)) {
		buf_reset(&path);
		buf_addf(&path, "inode %llu", (unsigned long long)ino);
	}
	log_error("%s: not saved (%s): %s", path.data, when, strerror(err));
	buf_release(&path);
}
