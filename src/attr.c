/*
 * attr - the attributes of the tree's nodes: sizes from the rendered
 * documents, modes from the table, and times (see "Times" in tree.h; within
 * a mount a file's time follows its content).
 */
#include "tree_int.h"

#include "dssfs/cache.h"
#include "dssfs/escape.h"
#include "dssfs/json.h"
#include "dssfs/log.h"
#include "dssfs/pathtab.h"
#include "dssfs/scratch.h"
#include "dssfs/strmap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The time of the DSS object a node belongs to: the versionTag of the
 * nearest object folder at or above it, from its parent's listing (read
 * each time, so a refreshed listing moves it); the mount time above the
 * projects.  A listing that cannot be fetched is an error, never a made-up
 * time (tar would report "file changed as we read it"). */
static int object_mtime(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
			int64_t *out)
{
	for (const struct pt_row *r = row; r; r = pathtab_parent(r)) {
		const char *var;
		/* (in a file tree: the time of the object holding it) */
		if (r->content || pathtab_leaf(r, &var, NULL) != PT_SEG_VAR)
			continue;
		const struct pt_row *dir = pathtab_parent(r);
		const char *name = pt_vars_get(vars, var);
		struct cache_ref *ref = NULL;
		const struct listing *l;
		int64_t m = -1;
		if (!name)
			break;
		int ret = listing_get(t, dir, vars, &ref, &l);
		if (ret)
			return ret;
		const struct listing_entry *e = listing_find_id(l, name);
		if (e)
			m = e->mtime_ms;
		listing_put(ref, l);
		if (m >= 0) {
			*out = m;
			return 0;
		}
	}
	*out = t->opt.mount_time_ms;
	return 0;
}

/* The newest time of the items a folder of timed items lists (pathtab.h,
 * `time_at`: runs, jobs, commits), or -1: the time of the folder and of a
 * file showing that list (history/log.json), which then move when an item
 * comes, from one mount to the next too. */
static int newest_item(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
		       int64_t *out)
{
	struct cache_ref *ref = NULL;
	const struct listing *l;
	int ret;

	*out = -1;
	if (!dir || !dir->time_at || !dir->list)
		return 0;
	if ((ret = listing_get(t, dir, vars, &ref, &l)))
		return ret;
	for (size_t i = 0; i < listing_count(l); i++)
		if (listing_at(l, i)->mtime_ms > *out)
			*out = listing_at(l, i)->mtime_ms;
	listing_put(ref, l);
	return 0;
}

/* Times follow content: within a mount a file's st_mtime moves only when
 * its bytes change, so a change elsewhere in its object (which moves the
 * object's time) makes rsync copy only the file that changed.  The first
 * time a file is seen it takes its document's or object's time. */
/* The times of the files seen: an open-addressing table keyed by a 64-bit
 * hash of the path (24 bytes a file, not the path itself: a walk of
 * 100,000 files keeps 4.7 MiB here).  Two paths with one hash (about one
 * chance in 10^9 at 200,000 files) share a time: a time may then move once
 * more than needed, which costs rsync one transfer; nothing else. */
struct file_time {
	uint64_t key; /* hash of the path; 0: a free slot */
	uint64_t hash;
	int64_t mtime_ms;
};

struct file_times {
	struct file_time *slot;
	size_t cap, n; /* cap a power of 2; n at most cap / 2 */
	/* the times file (tree_options.times_file), appended to; -1: none */
	int fd;
};

#define TIMES_MAX 1000000

/* The times file: this magic, then records as struct file_time (native
 * byte order: the file belongs to this machine), the last one of a path
 * winning. */
static const char times_magic[8] = {'D', 'S', 'S', 'F', 'S', 'T', 'M', '1'};

struct file_times *file_times_new(void)
{
	struct file_times *ft = xcalloc(1, sizeof(*ft));

	ft->cap = 1024;
	ft->slot = xcalloc(ft->cap, sizeof(*ft->slot));
	ft->fd = -1;
	return ft;
}

void file_times_free(struct file_times *ft)
{
	if (ft) {
		free(ft->slot);
		if (ft->fd >= 0)
			close(ft->fd);
	}
	free(ft);
}

static void times_clear(struct file_times *ft)
{
	free(ft->slot);
	ft->cap = 1024;
	ft->n = 0;
	ft->slot = xcalloc(ft->cap, sizeof(*ft->slot));
}

static struct file_time *times_find(struct file_times *ft, uint64_t key)
{
	size_t i = key & (ft->cap - 1);

	while (ft->slot[i].key && ft->slot[i].key != key)
		i = (i + 1) & (ft->cap - 1);
	return &ft->slot[i];
}

static void times_grow(struct file_times *ft)
{
	struct file_time *old = ft->slot;
	size_t ocap = ft->cap;

	ft->cap *= 2;
	ft->slot = xcalloc(ft->cap, sizeof(*ft->slot));
	for (size_t i = 0; i < ocap; i++)
		if (old[i].key)
			*times_find(ft, old[i].key) = old[i];
	free(old);
}

/* Sets the time of key (a new entry, or a new content) in the table. */
static struct file_time *times_set(struct file_times *ft, uint64_t key, uint64_t hash,
				   int64_t mtime_ms)
{
	struct file_time *e = times_find(ft, key);

	if (!e->key) {
		if (ft->n >= TIMES_MAX) {
			/* Bounded: forgetting only means a time may move once
			 * more than needed. */
			times_clear(ft);
		} else if (2 * (ft->n + 1) > ft->cap) {
			times_grow(ft);
		}
		e = times_find(ft, key);
		e->key = key;
		ft->n++;
	}
	e->hash = hash;
	e->mtime_ms = mtime_ms;
	return e;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* The table as it is, in a new times file put in place of path's. */
static int times_rewrite(struct file_times *ft, const char *path)
{
	struct buf tmp = BUF_INIT;
	int fd, ret = 0;

	buf_addf(&tmp, "%s.%ld.tmp", path, (long)getpid());
	fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		buf_release(&tmp);
		return -1;
	}
	ret = write_all(fd, times_magic, sizeof(times_magic));
	for (size_t i = 0; i < ft->cap && !ret; i++)
		if (ft->slot[i].key)
			ret = write_all(fd, &ft->slot[i], sizeof(ft->slot[i]));
	if (close(fd) || ret || rename(tmp.data, path)) {
		unlink(tmp.data);
		ret = -1;
	}
	buf_release(&tmp);
	return ret;
}

int file_times_open(struct file_times *ft, const char *path)
{
	struct buf all = BUF_INIT;
	char chunk[65536];
	size_t records = 0;
	int whole = 0; /* the file is ours and ends with a whole record */
	ssize_t got;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	/* What earlier mounts remembered (a file that is not ours, or
	 * beyond the table's bound, is started anew). */
	while (fd >= 0 && all.len <= (size_t)TIMES_MAX * 2 * sizeof(struct file_time) &&
	       ((got = read(fd, chunk, sizeof(chunk))) > 0 || (got < 0 && errno == EINTR)))
		if (got > 0)
			buf_add(&all, chunk, (size_t)got);
	if (fd >= 0)
		close(fd);
	if (all.len >= sizeof(times_magic) && !memcmp(all.data, times_magic, sizeof(times_magic)) &&
	    all.len <= (size_t)TIMES_MAX * 2 * sizeof(struct file_time)) {
		whole = (all.len - sizeof(times_magic)) % sizeof(struct file_time) == 0;
		for (size_t off = sizeof(times_magic); off + sizeof(struct file_time) <= all.len;
		     off += sizeof(struct file_time), records++) {
			struct file_time r;
			memcpy(&r, all.data + off, sizeof(r));
			if (r.key)
				times_set(ft, r.key, r.hash, r.mtime_ms);
		}
	}
	buf_release(&all);
	/* Made anew when absent, not ours, cut in a record (appending after
	 * it would shift every later one), or mostly old records. */
	if ((!whole || records > 2 * ft->n + 1024) && times_rewrite(ft, path))
		return -errno;
	ft->fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	return ft->fd < 0 ? -errno : 0;
}

static int64_t content_mtime(struct tree *t, const char *path, uint64_t hash, int64_t object_ms)
{
	uint64_t key = hash64(path) | 1; /* never 0 */
	/* a time DSS does not give: the mount time's */
	int remember = object_ms == t->opt.mount_time_ms;
	int64_t m;

	pthread_mutex_lock(&t->lock);
	struct file_time *ft = times_find(t->times, key);
	if (!ft->key || ft->hash != hash) {
		/* A new content always gets a later time (rsync compares
		 * whole seconds). */
		if (ft->key && object_ms <= ft->mtime_ms)
			object_ms = ft->mtime_ms + 1000;
		ft = times_set(t->times, key, hash, object_ms);
		/* A time DSS does not give is remembered for the next
		 * mounts, so that a file unchanged keeps it. */
		if (remember && t->times->fd >= 0 && write_all(t->times->fd, ft, sizeof(*ft))) {
			log_warn("cannot write the times file: %s; file times without one "
				 "from DSS will be this mount's",
				 strerror(errno));
			close(t->times->fd);
			t->times->fd = -1;
		}
	}
	m = ft->mtime_ms;
	pthread_mutex_unlock(&t->lock);
	return m;
}

static void fill_common(struct tree *t, struct stat *st, uint64_t ino, int64_t mtime_ms)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = t->opt.uid;
	st->st_gid = t->opt.gid;
	st->st_blksize = 4096;
	st->st_mtim.tv_sec = mtime_ms / 1000;
	st->st_mtim.tv_nsec = (mtime_ms % 1000) * 1000000L;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static void dir_attr(struct tree *t, uint64_t ino, int64_t mtime_ms, struct stat *st)
{
	fill_common(t, st, ino, mtime_ms);
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
}

/* A file is writable if its row has a PUT and its document can be shown
 * faithfully (res may be NULL when unknown). */
/* A regular file's mode, link count, exact size and blocks. */
static void fill_file(struct stat *st, mode_t mode, size_t size)
{
	st->st_mode = mode;
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
}

static mode_t file_mode(struct tree *t, const struct pt_row *row, const struct resource *res)
{
	return S_IFREG | (saves_allowed(t, row) && !(res && res->unfaithful) ? 0644 : 0444);
}

static int64_t version_in(const struct cache_ref *ref, const char *at)
{
	struct buf p = BUF_INIT;
	int64_t v;

	buf_addf(&p, "%s.versionNumber", at);
	v = json_get_int64(((struct resource *)cache_ref_value(ref))->json, p.data, -1);
	buf_release(&p);
	return v;
}

/* The versionNumber of a document that carries its own versionTag (-1 if
 * the row says it has none). */
int64_t doc_version(const struct pt_row *row, const struct cache_ref *ref)
{
	return row->version_at ? version_in(ref, row->version_at) : -1;
}

/* Attributes of the file at path: fetches its document to know its exact
 * size. */
static int file_attr(struct tree *t, uint64_t ino, const char *path, const struct pt_row *row,
		     const struct pt_vars *vars, struct stat *st)
{
	struct cache_ref *ref = NULL;
	const struct buf *bytes = NULL;
	struct resource *res = NULL;
	int64_t mtime = -1, listed_size = -1, listed_mtime = -1;
	uint64_t hash = 0;
	size_t size;
	int ret;

	/* A file of a file tree: its list may say its size and time. */
	if (row->content && (ret = content_stat(t, row, vars, &listed_size, &listed_mtime)))
		return ret;
	if (row->format == PT_SPOOL && listed_size >= 0) {
		size = (size_t)listed_size; /* a managed folder's file: not fetched to be listed */
	} else {
		if ((ret = get_row_resource(t, row, vars, &ref)))
			return ret;
		res = cache_ref_value(ref);
		if (row->format == PT_SPOOL) {
			size = res->spool_size;
		} else {
			ret = render(res, row, &bytes, &hash);
			if (ret)
				goto out;
			size = bytes->len;
		}
	}
	if (row->version_at && res) {
		struct buf p = BUF_INIT;
		buf_addf(&p, "%s.lastModifiedOn", row->version_at);
		mtime = json_get_int64(res->json, p.data, -1);
		buf_release(&p);
	}
	if (mtime < 0)
		mtime = listed_mtime;
	if (mtime < 0 && pathtab_parent(row)->list && row->get &&
	    !strcmp(pathtab_parent(row)->list, row->get) &&
	    (ret = newest_item(t, pathtab_parent(row), vars, &mtime)))
		goto out;
	if (mtime < 0 && (ret = object_mtime(t, row, vars, &mtime)))
		goto out;
	if (hash)
		mtime = content_mtime(t, path, hash, mtime);
	fill_common(t, st, ino, mtime);
	fill_file(st, file_mode(t, row, res), size);
out:
	cache_ref_put(ref);
	return ret;
}

void scratch_fill(struct tree *t, uint64_t ino, const struct scratch_attr *sa, struct stat *st)
{
	fill_common(t, st, ino, sa->mtime_ms);
	fill_file(st, S_IFREG | sa->mode, sa->size);
}

int scratch_attr(struct tree *t, uint64_t ino, const char *path, struct stat *st)
{
	struct scratch_attr sa;
	int ret = scratch_stat(t->scratch, path, &sa);

	if (!ret)
		scratch_fill(t, ino, &sa, st);
	return ret;
}

static int dir_node_attr(struct tree *t, uint64_t ino, const struct pt_row *row,
			 const struct pt_vars *vars, struct stat *st)
{
	int64_t m = -1, size;
	int ret = 0;

	/* A folder of a file tree is there while its list says so. */
	if (row->content && row != pathtab_root() && !row->list)
		ret = content_stat(t, row, vars, &size, &m);
	if (!ret && m < 0)
		ret = newest_item(t, row, vars, &m);
	if (!ret && m < 0)
		ret = object_mtime(t, row, vars, &m);
	if (!ret)
		dir_attr(t, ino, m, st);
	return ret;
}

int link_target(const struct pt_row *row, const char *path, const struct pt_vars *vars,
		struct buf *out)
{
	const char *p = row->link;

	/* up from the link's folder to the mount's root: one ".." for each
	 * name above the link's own */
	for (const char *s = strchr(path + 1, '/'); s; s = strchr(s + 1, '/'))
		buf_addstr(out, "../");
	while (*p) {
		const char *open = strchr(p, '{'), *close = open ? strchr(open, '}') : NULL;
		if (!open || !close) {
			buf_addstr(out, p);
			break;
		}
		buf_add(out, p, (size_t)(open - p));
		char *var = xstrndup(open + 1, (size_t)(close - open - 1));
		const char *v = pt_vars_get(vars, var);
		free(var);
		/* (the name the target's folder takes in its own listing) */
		if (!v || escape_name(v, out))
			return -EIO;
		p = close + 1;
	}
	return 0;
}

static int link_attr(struct tree *t, uint64_t ino, const char *path, const struct pt_row *row,
		     const struct pt_vars *vars, struct stat *st)
{
	struct buf target = BUF_INIT;
	int64_t m = -1;
	int ret = link_target(row, path, vars, &target);

	if (!ret)
		ret = object_mtime(t, pathtab_parent(row), vars, &m);
	if (!ret) {
		fill_common(t, st, ino, m);
		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
		st->st_size = (off_t)target.len;
	}
	buf_release(&target);
	return ret;
}

int row_attr(struct tree *t, uint64_t ino, const char *path, const struct pt_row *row,
	     const struct pt_vars *vars, struct stat *st)
{
	if (row->kind == PT_DIR)
		return dir_node_attr(t, ino, row, vars, st);
	if (row->kind == PT_LINK)
		return link_attr(t, ino, path, row, vars, st);
	return file_attr(t, ino, path, row, vars, st);
}

int node_attr(struct tree *t, const struct node *n, struct stat *st)
{
	if (!n->row)
		return scratch_attr(t, n->ino, n->path, st);
	return row_attr(t, n->ino, n->path, n->row, &n->vars, st);
}
