#include "dssfs/ops.h"
#include "dssfs/cache.h"
#include "dssfs/log.h"
#include "dssfs/tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

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
	uint64_t ino;
	pthread_mutex_t lock; /* guards everything below */
	struct buf data;
	int dirty;		      /* differs from what DSS (or the scratch store) holds */
	int attempted;		      /* a flush tried to save the current content */
	int append;		      /* opened with O_APPEND: writes go to the end */
	size_t accounted;	      /* bytes counted in ops_ctx.buffered */
	struct tree_base base;	      /* what was read, for the conflict check */
	struct tree_stream *stream;   /* a spooled stream: read from there */
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
	h->ctx = c;
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
		if (h->accounted)
			atomic_fetch_sub(&h->ctx->buffered, h->accounted);
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

enum save_when { SAVE_FLUSH, SAVE_FSYNC, SAVE_RELEASE, SAVE_UNMOUNT };

static int handle_save(struct ops_ctx *c, struct handle *h, enum save_when when,
		       const struct tree_caller *who, int *saved);
static void log_unsaved(struct ops_ctx *c, uint64_t ino, const char *when, int err);

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

static struct ops_ctx *ctx_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ---- who asks ---------------------------------------------------------- */

/* The process behind a request: FUSE gives the thread id; saves are keyed by
 * the thread group (and session) read from /proc/<tid>/status. */
static void caller_of_tid(int64_t tid, uint32_t uid, struct tree_caller *who)
{
	char path[64], line[256];
	FILE *f;

	who->tgid = tid;
	who->sid = 0;
	who->uid = uid;
	if (tid <= 0) {
		who->tgid = 0;
		return;
	}
	snprintf(path, sizeof(path), "/proc/%lld/status", (long long)tid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		long long v;
		if (sscanf(line, "Tgid: %lld", &v) == 1)
			who->tgid = v;
		else if (sscanf(line, "NSsid: %lld", &v) == 1)
			who->sid = v;
	}
	fclose(f);
}

static void caller_of(fuse_req_t req, struct tree_caller *who)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);

	caller_of_tid(fc->pid, fc->uid, who);
}

/* The mount's id in /proc/self/mountinfo (-1: unknown), to recognise our
 * files among a process's descriptors. */
static int find_mnt_id(const char *mountpoint)
{
	char line[4096];
	int id = -1;
	FILE *f;

	if (!mountpoint || !(f = fopen("/proc/self/mountinfo", "re")))
		return -1;
	while (fgets(line, sizeof(line), f)) {
		int mid;
		char mp[2048], rest[1024];
		/* id parent major:minor root mountpoint ... - fstype source */
		if (sscanf(line, "%d %*d %*s %*s %2047s", &mid, mp) != 2)
			continue;
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(dash, " - %1023s", rest) != 1 || strncmp(rest, "fuse", 4))
			continue;
		/* mountinfo escapes spaces and the like as \ooo */
		char un[2048];
		size_t k = 0;
		for (const char *q = mp; *q && k + 1 < sizeof(un); q++) {
			unsigned o;
			if (q[0] == '\\' && sscanf(q + 1, "%3o", &o) == 1) {
				un[k++] = (char)o;
				q += 3;
			} else {
				un[k++] = *q;
			}
		}
		un[k] = '\0';
		if (!strcmp(un, mountpoint))
			id = mid; /* the last one is on top */
	}
	fclose(f);
	return id;
}

/* Whether process tgid holds a descriptor of our file ino: the kernel
 * removes a descriptor from the table before it flushes it, so any left
 * is another one, and the closing of this one is not the last. */
static int holds_descriptor(struct ops_ctx *c, int64_t tgid, uint64_t ino)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int found = 0, mnt = atomic_load(&c->mnt_id);

	if (mnt == -2) {
		mnt = find_mnt_id(c->mountpoint);
		atomic_store(&c->mnt_id, mnt);
	}
	if (mnt < 0 || tgid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%lld/fdinfo", (long long)tgid);
	if (!(d = opendir(path)))
		return 0;
	while (!found && (de = readdir(d))) {
		char info[384], line[128];
		if (de->d_name[0] == '.')
			continue;
		snprintf(info, sizeof(info), "%s/%s", path, de->d_name);
		FILE *f = fopen(info, "re");
		if (!f)
			continue;
		int m = -1;
		unsigned long long i = 0;
		while (fgets(line, sizeof(line), f)) {
			if (sscanf(line, "mnt_id: %d", &m) == 1)
				continue;
			sscanf(line, "ino: %llu", &i);
		}
		fclose(f);
		found = m == mnt && i == ino;
	}
	closedir(d);
	return found;
}

/* Called with h->lock held. */
static int is_writer(const struct handle *h, int64_t tgid)
{
	for (int i = 0; i < h->nwriters; i++)
		if (h->writers[i] == tgid)
			return 1;
	return 0;
}

static void add_writer(struct handle *h, int64_t tgid)
{
	if (tgid <= 0 || is_writer(h, tgid))
		return;
	if (h->nwriters == MAX_WRITERS) /* the oldest goes */
		memmove(h->writers, h->writers + 1, (MAX_WRITERS - 1) * sizeof(h->writers[0]));
	else
		h->nwriters++;
	h->writers[h->nwriters - 1] = tgid;
}

/* Grows the bytes a writable handle holds to len, within the total bound
 * (-ENOSPC beyond it).  Called with h->lock held. */
static int account(struct ops_ctx *c, struct handle *h, size_t len)
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

static void notify_changed(uint64_t ino, void *ctx)
{
	notify_later(ctx, ino, NULL);
}

int ops_start(struct ops_ctx *c)
{
	tree_set_changed_cb(c->tree, notify_changed, c);
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

/* Saves a changed handle when `when` calls for it (see struct handle).
 * Returns 0 or -errno; *saved says whether a save of a DSS file was
 * attempted: then the kernel's cache (the user's bytes, size and time) is
 * not what DSS holds, whether it accepted the save or not, and must be
 * dropped. */
static int handle_save(struct ops_ctx *c, struct handle *h, enum save_when when,
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
		ret = tree_save(c->tree, h->ino, h->data.data, h->data.len, who, &h->base);
		if (!ret)
			h->dirty = 0;
		*saved = tree_file_kind(c->tree, h->ino) == TREE_API_RW;
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

/* A FUSE interrupt (the process waiting on the operation got a signal)
 * ends the HTTP request the operation is waiting for, with EINTR.  Only
 * for reads: a save is never cut in the middle. */
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

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	interruptible(req);
	op_lookup_body(req, parent, name);
	interruptible(NULL);
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

/* An open handle's unsaved changes are what its writer sees, and only it.
 * The kernel shares one inode's attributes between processes (and fstat
 * does not say which handle asks), so while a handle of ino holds unsaved
 * changes its attributes are not cached (timeout 0) and each process is
 * answered for itself: a writer of that handle gets its buffer's size,
 * everybody else DSS's.  Returns the attribute timeout to use. */
static double writer_view(struct ops_ctx *c, fuse_req_t req, uint64_t ino,
			  struct fuse_file_info *fi, struct stat *st)
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
		if (h->ino != ino)
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
				st->st_size = (off_t)h->data.len;
				st->st_blocks = (blkcnt_t)((h->data.len + 511) / 512);
			}
		}
		pthread_mutex_unlock(&h->lock);
	}
	pthread_mutex_unlock(&c->open_lock);
	return timeout;
}

static void op_getattr_body(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	struct stat st;
	int ret = tree_getattr(c->tree, ino, &st);

	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, writer_view(c, req, ino, fi, &st));
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	interruptible(req);
	op_getattr_body(req, ino, fi);
	interruptible(NULL);
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
		struct tree_caller who;
		caller_of(req, &who);
		pthread_mutex_lock(&h->lock);
		ret = account(c, h, (size_t)attr->st_size);
		if (!ret) {
			buf_resize(&h->data, (size_t)attr->st_size);
			h->dirty = 1;
			h->attempted = 0;
			add_writer(h, who.tgid);
		}
		pthread_mutex_unlock(&h->lock);
		handle_put(h);
		if (ret) {
			fuse_reply_err(req, -ret);
			return;
		}
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
	struct tree_caller who;
	caller_of(req, &who);
	ret = tree_setattr(c->tree, ino, attr, set, &who, &st);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	fuse_reply_attr(req, &st, writer_view(c, req, ino, fi, &st));
	if (set & TREE_SET_SIZE && tree_file_kind(c->tree, ino) == TREE_API_RW)
		invalidate_kernel(c, ino);
}

static void op_opendir_body(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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
static int open_handle(struct ops_ctx *c, fuse_req_t req, uint64_t ino, struct fuse_file_info *fi)
{
	struct handle *h;
	struct tree_caller who;
	int flags = open_flags(fi), size_changed, ret;

	if (tree_file_kind(c->tree, ino) == TREE_STREAM) {
		if (flags & TREE_OPEN_WRITE)
			return c->read_only ? -EROFS : -EACCES;
		h = handle_new(c);
		h->ino = ino;
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
	caller_of(req, &who);
	h = handle_new(c);
	h->ino = ino;
	ret = tree_open(c->tree, ino, flags, &who, &h->data, &h->base, &size_changed);
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
	return 0;
}

static void op_open_body(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *c = ctx_of(req);
	int ret;

	if (c->read_only && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ret = open_handle(c, req, ino, fi);
	if (ret) {
		fuse_reply_err(req, -ret);
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
	int ret = tree_create(c->tree, parent, name, mode, &ino, &e.attr);

	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	ret = open_handle(c, req, ino, fi);
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
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	int ret = 0;

	(void)ino;
	pthread_mutex_lock(&h->lock);
	if (h->append)
		off = (off_t)h->data.len; /* the kernel's idea of the end may be stale */
	if (off < 0 || (uint64_t)off + size > c->max_file)
		ret = -EFBIG;
	else
		ret = account(c, h,
			      (size_t)off + size > h->data.len ? (size_t)off + size : h->data.len);
	if (!ret) {
		buf_write_at(&h->data, (size_t)off, data, size);
		h->dirty = 1;
		h->attempted = 0;
		if (fc->pid != h->last_tid) {
			struct tree_caller who;
			caller_of_tid(fc->pid, fc->uid, &who);
			h->last_tid = fc->pid;
			h->last_tgid = who.tgid;
		}
		add_writer(h, h->last_tgid);
	}
	pthread_mutex_unlock(&h->lock);
	handle_put(h);
	if (ret)
		fuse_reply_err(req, -ret);
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

/* Logs that a file was left unsaved, by path. */
static void log_unsaved(struct ops_ctx *c, uint64_t ino, const char *when, int err)
{
	struct buf path = BUF_INIT;

	if (tree_path_of(c->tree, ino, &path))
		buf_addf(&path, "inode %llu", (unsigned long long)ino);
	log_error("%s: not saved (%s): %s", path.data, when, strerror(err));
	buf_release(&path);
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
	struct tree_caller who;
	caller_of(req, &who);
	int ret = tree_rename(c->tree, parent, name, newparent, newname, flags, &who, &saved_ino);

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
