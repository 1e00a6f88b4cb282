#include "dssfs/tree.h"
#include "dssfs/cache.h"
#include "dssfs/escape.h"
#include "dssfs/http.h"
#include "dssfs/json.h"
#include "dssfs/log.h"
#include "dssfs/pathtab.h"
#include "dssfs/prefetch.h"
#include "dssfs/scratch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

/* A fetched REST resource: the parsed document and the renderings of its
 * files, made on first use. */
struct rendering {
	const char *field; /* static: from the table */
	enum pt_format format;
	int err;
	struct buf bytes;
};

struct resource {
	cJSON *json;  /* NULL for a spooled stream */
	int spool_fd; /* PT_SPOOL: the temporary file holding it, else -1 */
	size_t spool_size;
	pthread_mutex_t lock; /* guards the renderings */
	struct rendering *r;
	size_t nr;
};

/* A node's path, row and variables never change, so an operation may read
 * the node the kernel is asking about without the lock: the kernel does not
 * forget an inode while an operation on it runs.  nlookup changes under the
 * tree lock; shown_size is atomic. */
struct node {
	uint64_t ino;
	char *path;		  /* file names (escaped), "/" for the root */
	const struct pt_row *row; /* NULL: a scratch file */
	struct pt_vars vars;	  /* values owned */
	/* what this file was when last read through the mount (under the
	 * tree lock): what a later save is checked against */
	struct tree_base read_base;
	/* st_size last reported to the kernel, -1 if none */
	_Atomic int64_t shown_size;
	uint64_t nlookup;
	struct node *hnext;
	/* Set once, under the lock, when a rename moved this scratch file: the
	 * kernel keeps using this inode under the new name until it looks the
	 * name up again, so the inode answers for what now lives there. */
	struct node *moved;
};

struct tree {
	struct http *http;
	struct cache *cache;
	struct tree_options opt;
	pthread_mutex_t lock;
	struct node **table;
	size_t nbuckets, nnodes;
	struct node *root;
	struct scratch *scratch;
	struct prefetch *prefetch; /* NULL: disabled */
};

/* ---- resources ---------------------------------------------------------- */

static void resource_free(void *v)
{
	struct resource *res = v;

	if (!res)
		return;
	for (size_t i = 0; i < res->nr; i++)
		buf_release(&res->r[i].bytes);
	free(res->r);
	cJSON_Delete(res->json);
	if (res->spool_fd >= 0)
		close(res->spool_fd);
	pthread_mutex_destroy(&res->lock);
	free(res);
}

struct cache *tree_cache_new(size_t max_bytes, int64_t ttl_ms)
{
	return cache_new(max_bytes, ttl_ms, resource_free, NULL);
}

static int fetch_resource(void *ctx, const char *key, void **value, size_t *cost)
{
	struct tree *t = ctx;
	struct buf body = BUF_INIT;
	struct resource *res;
	cJSON *json;
	int ret = http_get(t->http, key, &body);

	if (ret)
		return ret;
	json = cJSON_ParseWithLength(body.data, body.len);
	if (!json) {
		log_error("GET %s: DSS answered with invalid JSON (%zu bytes)", key, body.len);
		buf_release(&body);
		return -EIO;
	}
	res = xcalloc(1, sizeof(*res));
	res->json = json;
	res->spool_fd = -1;
	pthread_mutex_init(&res->lock, NULL);
	/* The parsed tree and the renderings cost a few times the body. */
	*cost = 3 * body.len + sizeof(*res) + 256;
	*value = res;
	buf_release(&body);
	return 0;
}

#define SPOOL_PREFIX "POST "

/* An anonymous temporary file (gone when closed). */
static int spool_file(void)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	if (!dir || !*dir)
		dir = "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		char *tmpl = xasprintf("%s/dssfs-spool-XXXXXX", dir);
		fd = mkostemp(tmpl, O_CLOEXEC);
		if (fd >= 0)
			unlink(tmpl);
		free(tmpl);
	}
	return fd < 0 ? -errno : fd;
}

/* Fetches a stream (key "POST <path>") into a spool file. */
static int fetch_spool(void *ctx, const char *key, void **value, size_t *cost)
{
	struct tree *t = ctx;
	const char *path = key + strlen(SPOOL_PREFIX);
	struct resource *res;
	size_t size = 0;
	int fd = spool_file(), ret;

	if (fd < 0) {
		log_error("POST %s: cannot make a temporary file: %s", path, strerror(-fd));
		return fd;
	}
	ret = http_request_to_fd(t->http, "POST", path, "{}", 2, fd, t->opt.spool_max, &size);
	if (ret) {
		close(fd);
		return ret;
	}
	res = xcalloc(1, sizeof(*res));
	res->spool_fd = fd;
	res->spool_size = size;
	pthread_mutex_init(&res->lock, NULL);
	*cost = sizeof(*res) + 256; /* the bytes are on disk */
	*value = res;
	return 0;
}

/* Gets the resource at endpoint template `tmpl` for these variables. */
static int get_resource(struct tree *t, const char *tmpl, const struct pt_vars *vars,
			struct cache_ref **ref);

/* The resource a file row shows. */
static int get_row_resource(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
			    struct cache_ref **ref)
{
	struct buf key = BUF_INIT;
	int ret;

	if (row->format != PT_SPOOL)
		return get_resource(t, row->get, vars, ref);
	buf_addstr(&key, SPOOL_PREFIX);
	ret = pathtab_expand(row->get, vars, &key);
	if (!ret)
		ret = cache_get(t->cache, key.data, fetch_spool, t, ref);
	buf_release(&key);
	return ret;
}

static int get_resource(struct tree *t, const char *tmpl, const struct pt_vars *vars,
			struct cache_ref **ref)
{
	struct buf key = BUF_INIT;
	int ret = pathtab_expand(tmpl, vars, &key);

	if (!ret)
		ret = cache_get(t->cache, key.data, fetch_resource, t, ref);
	buf_release(&key);
	return ret;
}

/* The bytes of a file row rendered from res; valid while res is held. */
static int render(struct resource *res, const struct pt_row *row, const struct buf **out)
{
	struct rendering *r = NULL;
	int ret;

	pthread_mutex_lock(&res->lock);
	for (size_t i = 0; i < res->nr; i++)
		if (res->r[i].field == row->field && res->r[i].format == row->format)
			r = &res->r[i];
	if (!r && !res->json) {
		pthread_mutex_unlock(&res->lock);
		return -EIO;
	}
	if (!r) {
		const cJSON *part = json_get(res->json, row->field);
		res->r = xrealloc(res->r, (res->nr + 1) * sizeof(*res->r));
		r = &res->r[res->nr++];
		r->field = row->field;
		r->format = row->format;
		r->err = 0;
		buf_init(&r->bytes);
		if (row->format == PT_JSON) {
			if (part)
				json_render(part, &r->bytes);
			else
				r->err = -EIO;
		} else if (cJSON_IsString(part)) {
			buf_addstr(&r->bytes, part->valuestring);
		} else if (!part || cJSON_IsNull(part)) {
			/* DSS omits an empty payload. */
		} else {
			r->err = -EIO;
		}
		if (r->err)
			log_error("%s: the document from DSS has no usable \"%s\" field",
				  row->pattern, row->field ? row->field : "");
	}
	ret = r->err;
	*out = &r->bytes;
	pthread_mutex_unlock(&res->lock);
	return ret;
}

/* ---- nodes -------------------------------------------------------------- */

static void vars_copy(struct pt_vars *dst, const struct pt_vars *src)
{
	dst->n = src->n;
	for (int i = 0; i < src->n; i++) {
		dst->name[i] = src->name[i];
		dst->value[i] = xstrdup(src->value[i]);
	}
}

static void node_free(struct node *n)
{
	if (n->moved)
		node_free(n->moved);
	for (int i = 0; i < n->vars.n; i++)
		free((char *)n->vars.value[i]);
	free(n->path);
	free(n);
}

static struct node *find_ino(struct tree *t, uint64_t ino)
{
	struct node *n = t->table[ino % t->nbuckets];

	while (n && n->ino != ino)
		n = n->hnext;
	return n;
}

/* Finds the node of a path or makes it (caller holds the lock); the ino is
 * the path's hash, moved on while another path holds that number. */
/* The node of a path, or NULL; then *free_ino (if not NULL) gets the
 * number a node for it takes: the path's hash, moved on while other paths
 * hold that number.  Caller holds the lock. */
static struct node *find_path(struct tree *t, const char *path, uint64_t *free_ino)
{
	for (uint64_t ino = hash64(path);; ino++) {
		if (ino <= TREE_ROOT_INO)
			continue;
		struct node *n = find_ino(t, ino);
		if (!n) {
			if (free_ino)
				*free_ino = ino;
			return NULL;
		}
		if (!strcmp(n->path, path))
			return n;
	}
}

static struct node *node_get(struct tree *t, const char *path, const struct pt_row *row,
			     const struct pt_vars *vars)
{
	uint64_t ino;
	struct node *n = find_path(t, path, &ino);

	if (n)
		return n;
	n = xcalloc(1, sizeof(*n));
	n->read_base.version = -1;
	n->shown_size = -1;
	n->ino = ino;
	n->path = xstrdup(path);
	n->row = row;
	vars_copy(&n->vars, vars);
	n->hnext = t->table[ino % t->nbuckets];
	t->table[ino % t->nbuckets] = n;
	t->nnodes++;
	return n;
}

static uint64_t ino_for_path(struct tree *t, const char *path)
{
	uint64_t ino;

	pthread_mutex_lock(&t->lock);
	struct node *n = find_path(t, path, &ino);
	if (n)
		ino = n->ino;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

static struct tree_base base_of(struct tree *t, const struct node *n)
{
	pthread_mutex_lock(&t->lock);
	struct tree_base b = n->read_base;
	pthread_mutex_unlock(&t->lock);
	return b;
}

static void set_base(struct tree *t, struct node *n, const struct tree_base *b)
{
	pthread_mutex_lock(&t->lock);
	n->read_base = *b;
	pthread_mutex_unlock(&t->lock);
}

/* 64-bit FNV-1a of a byte string; 0 is kept for "unknown". */
static uint64_t content_hash(const char *data, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)data[i];
		h *= 0x100000001b3ULL;
	}
	return h ? h : 1;
}

/* The node an operation on ino acts on (following a rename's move). */
static struct node *node_of(struct tree *t, uint64_t ino)
{
	struct node *n;

	pthread_mutex_lock(&t->lock);
	n = find_ino(t, ino);
	if (n && n->moved)
		n = n->moved;
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* Records that the scratch file at `from` now answers as `to` (see
 * struct node's `moved`). */
static void node_moved(struct tree *t, const char *from, const char *to, const struct pt_row *row,
		       const struct pt_vars *vars, const struct tree_base *read_base)
{
	pthread_mutex_lock(&t->lock);
	struct node *n = find_path(t, from, NULL);
	if (n && !n->row && !n->moved) {
		struct node *m = xcalloc(1, sizeof(*m));
		m->ino = n->ino;
		m->path = xstrdup(to);
		m->row = row;
		vars_copy(&m->vars, vars);
		m->read_base = *read_base;
		n->moved = m;
	}
	pthread_mutex_unlock(&t->lock);
}

/* A listing to expand once fetched: what its objects' folders hold. */
struct expansion {
	const struct pt_row *dir;
	struct pt_vars vars; /* values owned */
};

static void expansion_free(void *arg)
{
	struct expansion *e = arg;

	for (int i = 0; i < e->vars.n; i++)
		free((char *)e->vars.value[i]);
	free(e);
}

static void expand_list(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
			const cJSON *list);

/* A prefetch job: fetch into the cache unless it is there already; for a
 * listing queued with an expansion, then queue what its objects hold. */
static void prefetch_run(void *ctx, const char *key, void *arg)
{
	struct tree *t = ctx;
	struct cache_ref *ref = NULL;
	struct expansion *e = arg;

	log_thread_quiet(1);
	if (cache_peek(t->cache, key, &ref) && !cache_get(t->cache, key, fetch_resource, t, &ref))
		log_debug("prefetched %s", key);
	if (ref && e)
		expand_list(t, e->dir, &e->vars, ((struct resource *)cache_ref_value(ref))->json);
	cache_ref_put(ref);
}

struct tree *tree_new(struct http *h, struct cache *c, const struct tree_options *o)
{
	struct tree *t = xcalloc(1, sizeof(*t));
	struct pt_vars none = {0};

	t->http = h;
	t->cache = c;
	t->opt = *o;
	pthread_mutex_init(&t->lock, NULL);
	t->nbuckets = 16384;
	t->table = xcalloc(t->nbuckets, sizeof(*t->table));
	t->root = xcalloc(1, sizeof(*t->root));
	t->root->ino = TREE_ROOT_INO;
	t->root->path = xstrdup("/");
	t->root->row = pathtab_root();
	vars_copy(&t->root->vars, &none);
	t->root->nlookup = 1;
	t->table[TREE_ROOT_INO % t->nbuckets] = t->root;
	t->nnodes = 1;
	t->scratch = scratch_new(o->scratch_max);
	return t;
}

void tree_free(struct tree *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct node *n = t->table[i];
		while (n) {
			struct node *next = n->hnext;
			node_free(n);
			n = next;
		}
	}
	free(t->table);
	prefetch_free(t->prefetch);
	scratch_free(t->scratch);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

void tree_start(struct tree *t)
{
	if (t->opt.prefetch_threads > 0 && !t->prefetch)
		t->prefetch =
		    prefetch_new(t->opt.prefetch_threads, 100000, prefetch_run, t, expansion_free);
}

void tree_for_each_ino(struct tree *t, void (*fn)(uint64_t ino, void *ctx), void *ctx)
{
	uint64_t *inos;
	size_t n = 0;

	pthread_mutex_lock(&t->lock);
	inos = xmalloc((t->nnodes + 1) * sizeof(*inos));
	for (size_t i = 0; i < t->nbuckets; i++)
		for (struct node *nd = t->table[i]; nd; nd = nd->hnext)
			inos[n++] = nd->ino;
	pthread_mutex_unlock(&t->lock);
	for (size_t i = 0; i < n; i++)
		fn(inos[i], ctx);
	free(inos);
}

void tree_drop_caches(struct tree *t)
{
	if (t->prefetch)
		prefetch_clear(t->prefetch);
	cache_clear(t->cache);
}

/* ---- attributes --------------------------------------------------------- */

/* The name of an item of a DSS listing: the `key` field of an array item,
 * or the key of an object's member (listings keyed by name). */
static const char *list_item_name(const cJSON *list, const cJSON *item, const char *key)
{
	return cJSON_IsObject(list) ? item->string : json_get_string(item, key);
}

/* The time of the DSS object a node belongs to: the versionTag of the
 * nearest object folder at or above it, from its parent's listing (read
 * each time, so a refreshed listing moves it); the mount time above the
 * projects.  A file or folder whose own time is unknown takes its object's,
 * so a change to the object moves the time of all its files, and rsync's
 * size-and-time check never misses a change. */
static int64_t object_mtime(struct tree *t, const struct pt_row *row, const struct pt_vars *vars)
{
	for (const struct pt_row *r = row; r; r = pathtab_parent(r)) {
		const char *var;
		if (pathtab_leaf(r, &var, NULL) != PT_SEG_VAR)
			continue;
		const struct pt_row *dir = pathtab_parent(r);
		const char *name = pt_vars_get(vars, var);
		struct cache_ref *ref = NULL;
		int64_t m = -1;
		if (!name || get_resource(t, dir->list, vars, &ref))
			break;
		const cJSON *list = ((struct resource *)cache_ref_value(ref))->json, *item;
		cJSON_ArrayForEach(item, list)
		{
			const char *k = list_item_name(list, item, dir->list_key);
			if (k && !strcmp(k, name)) {
				m = json_get_int64(item, "versionTag.lastModifiedOn", -1);
				break;
			}
		}
		cache_ref_put(ref);
		if (m >= 0)
			return m;
	}
	return t->opt.mount_time_ms;
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

static int saves_allowed(struct tree *t, const struct pt_row *row);

static mode_t file_mode(struct tree *t, const struct pt_row *row)
{
	return S_IFREG | (saves_allowed(t, row) ? 0644 : 0444);
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
static int64_t doc_version(const struct pt_row *row, const struct cache_ref *ref)
{
	return row->version_at ? version_in(ref, row->version_at) : -1;
}

/* Attributes of a file: fetches its document to know its exact size. */
static int file_attr(struct tree *t, uint64_t ino, const struct pt_row *row,
		     const struct pt_vars *vars, struct stat *st)
{
	struct cache_ref *ref = NULL;
	const struct buf *bytes;
	int64_t mtime = -1;
	int ret = get_row_resource(t, row, vars, &ref);
	struct buf spooled = BUF_INIT;

	if (ret)
		return ret;
	struct resource *res = cache_ref_value(ref);
	if (row->format == PT_SPOOL) {
		spooled.len = res->spool_size; /* only the length is used */
		bytes = &spooled;
	} else {
		ret = render(res, row, &bytes);
		if (ret)
			goto out;
	}
	if (row->version_at) {
		struct buf p = BUF_INIT;
		buf_addf(&p, "%s.lastModifiedOn", row->version_at);
		mtime = json_get_int64(res->json, p.data, -1);
		buf_release(&p);
	}
	if (mtime < 0)
		mtime = object_mtime(t, row, vars);
	fill_common(t, st, ino, mtime);
	st->st_mode = file_mode(t, row);
	st->st_nlink = 1;
	st->st_size = (off_t)bytes->len;
	st->st_blocks = (blkcnt_t)((bytes->len + 511) / 512);
out:
	cache_ref_put(ref);
	return ret;
}

static int scratch_attr(struct tree *t, uint64_t ino, const char *path, struct stat *st)
{
	struct scratch_attr sa;
	int ret = scratch_stat(t->scratch, path, &sa);

	if (ret)
		return ret;
	fill_common(t, st, ino, sa.mtime_ms);
	st->st_mode = S_IFREG | sa.mode;
	st->st_nlink = 1;
	st->st_size = (off_t)sa.size;
	st->st_blocks = (blkcnt_t)((sa.size + 511) / 512);
	return 0;
}

static int node_attr(struct tree *t, const struct node *n, struct stat *st)
{
	if (!n->row)
		return scratch_attr(t, n->ino, n->path, st);
	if (n->row->kind == PT_DIR) {
		dir_attr(t, n->ino, object_mtime(t, n->row, &n->vars), st);
		return 0;
	}
	return file_attr(t, n->ino, n->row, &n->vars, st);
}

/* ---- children ----------------------------------------------------------- */

/* One child of a directory, as found by lookup or readdir. */
struct child {
	const struct pt_row *row;
	struct pt_vars vars; /* values borrowed */
	struct buf name;     /* escaped file name */
};

/* Calls fn for each child of directory n, stopping when fn returns nonzero
 * (that value is returned).  Returns -errno if a needed resource cannot be
 * fetched; then no partial result is reported as complete. */
typedef int (*child_fn)(struct child *c, void *ctx);

static int for_each_listed(struct tree *t, const struct node *dir, child_fn fn, void *ctx)
{
	const struct pt_row *kids[1];
	struct cache_ref *ref = NULL;
	const char *var;
	int ret;

	if (pathtab_children(dir->row, kids, 1) != 1 ||
	    pathtab_leaf(kids[0], &var, NULL) != PT_SEG_VAR)
		return -EIO;
	ret = get_resource(t, dir->row->list, &dir->vars, &ref);
	if (ret)
		return ret;
	const cJSON *list = ((struct resource *)cache_ref_value(ref))->json;
	const cJSON *item;
	if (!cJSON_IsArray(list) && !cJSON_IsObject(list)) {
		log_error("%s: DSS's list is not an array", dir->path);
		cache_ref_put(ref);
		return -EIO;
	}
	cJSON_ArrayForEach(item, list)
	{
		const char *name = list_item_name(list, item, dir->row->list_key);
		struct child c = {.row = kids[0], .name = BUF_INIT};

		if (!name || escape_name(name, &c.name)) {
			log_warn("%s: skipping a listed object without a usable \"%s\"", dir->path,
				 dir->row->list_key);
			continue;
		}
		c.vars = dir->vars;
		if (c.vars.n == PT_MAX_VARS) {
			buf_release(&c.name);
			continue;
		}
		c.vars.name[c.vars.n] = var;
		c.vars.value[c.vars.n++] = name;
		ret = fn(&c, ctx);
		buf_release(&c.name);
		if (ret)
			break;
	}
	cache_ref_put(ref);
	return ret;
}

/* Name of a fixed child row, or -ENOENT when the row is absent here. */
static int fixed_child_name(struct tree *t, const struct node *dir, const struct pt_row *row,
			    struct buf *name)
{
	const char *text, *suffix;
	enum pt_seg seg = pathtab_leaf(row, &text, &suffix);
	struct cache_ref *ref = NULL;
	int ret = 0;

	if (row->cond_get) {
		ret = get_resource(t, row->cond_get, &dir->vars, &ref);
		if (ret)
			return ret;
		const char *v = json_get_string(((struct resource *)cache_ref_value(ref))->json,
						row->cond_field);
		if (row->cond_equals && (!v || strcmp(v, row->cond_equals)))
			ret = -ENOENT;
		else if (seg == PT_SEG_DERIVED)
			buf_addf(name, "%s%s%s", text, pathtab_map(row->name_map, v), suffix);
		else
			buf_addstr(name, text);
		cache_ref_put(ref);
		return ret;
	}
	buf_addstr(name, text);
	return 0;
}

static int for_each_fixed(struct tree *t, const struct node *dir, child_fn fn, void *ctx)
{
	const struct pt_row *kids[32];
	size_t nk = pathtab_children(dir->row, kids, 32);
	int ret = 0;

	for (size_t i = 0; i < nk && !ret; i++) {
		struct child c = {.row = kids[i], .vars = dir->vars, .name = BUF_INIT};
		ret = fixed_child_name(t, dir, kids[i], &c.name);
		if (ret == -ENOENT)
			ret = 0;
		else if (!ret)
			ret = fn(&c, ctx);
		buf_release(&c.name);
	}
	return ret;
}

static int for_each_child(struct tree *t, const struct node *dir, child_fn fn, void *ctx)
{
	if (dir->row->kind != PT_DIR)
		return -ENOTDIR;
	return dir->row->list ? for_each_listed(t, dir, fn, ctx) : for_each_fixed(t, dir, fn, ctx);
}

static void child_path(const struct node *dir, const char *name, struct buf *out)
{
	buf_addstr(out, dir->path);
	if (strcmp(dir->path, "/"))
		buf_addch(out, '/');
	buf_addstr(out, name);
}

/* ---- lookup ------------------------------------------------------------- */

struct lookup_ctx {
	struct tree *t;
	const struct node *dir;
	const char *name;
	uint64_t ino;
	struct stat *st;
	int err;
};

static int lookup_cb(struct child *c, void *vctx)
{
	struct lookup_ctx *lc = vctx;
	struct buf path = BUF_INIT;
	struct node *n;
	int ret = 0;

	if (strcmp(c->name.data, lc->name))
		return 0;
	child_path(lc->dir, lc->name, &path);
	/* Attributes first (this may fetch), then the node. */
	uint64_t ino = ino_for_path(lc->t, path.data);
	if (c->row->kind == PT_DIR)
		dir_attr(lc->t, ino, object_mtime(lc->t, c->row, &c->vars), lc->st);
	else
		ret = file_attr(lc->t, ino, c->row, &c->vars, lc->st);
	if (!ret) {
		pthread_mutex_lock(&lc->t->lock);
		n = node_get(lc->t, path.data, c->row, &c->vars);
		n->nlookup++;
		lc->ino = n->ino;
		lc->st->st_ino = n->ino;
		if (c->row->kind == PT_FILE)
			n->shown_size = lc->st->st_size;
		pthread_mutex_unlock(&lc->t->lock);
	}
	buf_release(&path);
	lc->err = ret;
	return 1; /* found: stop */
}

/* Whether some child row of dir could ever be called `name`. */
static int name_possible(const struct node *dir, const char *name)
{
	const struct pt_row *kids[32];
	size_t nk = pathtab_children(dir->row, kids, 32);

	for (size_t i = 0; i < nk; i++) {
		const char *text, *suffix;
		enum pt_seg seg = pathtab_leaf(kids[i], &text, &suffix);
		size_t nl = strlen(name), pl = strlen(text), sl = strlen(suffix);

		if (seg == PT_SEG_VAR)
			return 1;
		if (seg == PT_SEG_LITERAL && !strcmp(name, text))
			return 1;
		if (seg == PT_SEG_DERIVED && nl > pl + sl && !strncmp(name, text, pl) &&
		    !strcmp(name + nl - sl, suffix) &&
		    pathtab_map_has(kids[i]->name_map, name + pl, nl - pl - sl))
			return 1;
	}
	return 0;
}

/* Takes a lookup reference on the node of path (caller holds no lock). */
static uint64_t node_ref(struct tree *t, const char *path, const struct pt_row *row,
			 const struct pt_vars *vars)
{
	pthread_mutex_lock(&t->lock);
	struct node *n = node_get(t, path, row, vars);
	n->nlookup++;
	uint64_t ino = n->ino;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

static int lookup_scratch(struct tree *t, const struct node *dir, const char *name, uint64_t *ino,
			  struct stat *st)
{
	struct buf path = BUF_INIT;
	struct scratch_attr sa;
	int ret;

	child_path(dir, name, &path);
	ret = scratch_stat(t->scratch, path.data, &sa);
	if (!ret) {
		*ino = node_ref(t, path.data, NULL, &dir->vars);
		ret = scratch_attr(t, *ino, path.data, st);
	}
	buf_release(&path);
	return ret;
}

int tree_lookup(struct tree *t, uint64_t parent, const char *name, uint64_t *ino, struct stat *st,
		int *permanent)
{
	struct node *dir = node_of(t, parent);
	struct lookup_ctx lc = {t, dir, name, 0, st, -ENOENT};
	int ret;

	*permanent = 0;
	if (!dir)
		return -ESTALE;
	if (dir->row->kind != PT_DIR)
		return -ENOTDIR;
	if (strlen(name) > NAME_MAX_BYTES)
		return -ENAMETOOLONG;
	ret = lookup_scratch(t, dir, name, ino, st);
	if (ret != -ENOENT)
		return ret;
	if (!name_possible(dir, name)) {
		/* Only a scratch file could have this name: a negative
		 * entry lasts until one is created (which replaces it). */
		*permanent = 1;
		return -ENOENT;
	}
	ret = for_each_child(t, dir, lookup_cb, &lc);
	if (ret < 0)
		return ret;
	if (!lc.err)
		*ino = lc.ino;
	return lc.err;
}

void tree_forget(struct tree *t, uint64_t ino, uint64_t n)
{
	if (ino == TREE_ROOT_INO)
		return;
	pthread_mutex_lock(&t->lock);
	struct node **pp = &t->table[ino % t->nbuckets];
	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->hnext;
	if (*pp) {
		struct node *nd = *pp;
		nd->nlookup = nd->nlookup > n ? nd->nlookup - n : 0;
		if (!nd->nlookup) {
			*pp = nd->hnext;
			t->nnodes--;
			node_free(nd);
		}
	}
	pthread_mutex_unlock(&t->lock);
}

int tree_getattr(struct tree *t, uint64_t ino, struct stat *st)
{
	struct node *n = node_of(t, ino);
	int ret = n ? node_attr(t, n, st) : -ESTALE;

	if (!ret && S_ISREG(st->st_mode))
		n->shown_size = st->st_size;
	return ret;
}

/* ---- readdir ------------------------------------------------------------ */

struct list_ctx {
	struct tree *t;
	const struct node *dir;
	struct tree_dir *out;
	size_t cap;
};

static void dir_add(struct list_ctx *lc, const char *name, uint64_t ino, mode_t mode)
{
	struct tree_dir *d = lc->out;

	if (d->n == lc->cap) {
		lc->cap = lc->cap ? 2 * lc->cap : 16;
		d->ents = xrealloc(d->ents, lc->cap * sizeof(*d->ents));
	}
	d->ents[d->n].name = xstrdup(name);
	d->ents[d->n].ino = ino;
	d->ents[d->n].mode = mode;
	d->n++;
}

/* Queues a resource unless cached.  With `expand_dir`, a listing: once
 * it is there (now, or when fetched), what its objects hold is queued too. */
static void queue_key(struct tree *t, const char *tmpl, const struct pt_vars *vars,
		      const struct pt_row *expand_dir)
{
	struct buf key = BUF_INIT;
	struct cache_ref *ref;

	if (tmpl && !pathtab_expand(tmpl, vars, &key)) {
		if (!cache_peek(t->cache, key.data, &ref)) {
			if (expand_dir)
				expand_list(t, expand_dir, vars,
					    ((struct resource *)cache_ref_value(ref))->json);
			cache_ref_put(ref);
		} else {
			struct expansion *e = NULL;
			if (expand_dir) {
				e = xcalloc(1, sizeof(*e));
				e->dir = expand_dir;
				vars_copy(&e->vars, vars);
			}
			prefetch_add(t->prefetch, key.data, e);
		}
	}
	buf_release(&key);
}

/* The resources that reading a node of this row takes; a listing is
 * expanded one level if `expand`. */
static void queue_row(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		      int expand)
{
	if (row->format == PT_SPOOL || row->hidden)
		return; /* only fetched when asked for by name */
	if (row->kind == PT_FILE) {
		queue_key(t, row->cond_get, vars, NULL);
		/* A file that may not exist (script.py) is only fetched once
		 * the walk finds it there. */
		if (!row->cond_equals)
			queue_key(t, row->get, vars, NULL);
	} else if (row->list) {
		queue_key(t, row->list, vars, expand ? row : NULL);
	}
}

/* For each object of a listing, queues the resources of its folder's files
 * (a dataset's five documents), without going further. */
static void expand_list(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
			const cJSON *list)
{
	const struct pt_row *kids[1], *grand[32];
	const char *var;
	const cJSON *item;
	size_t ng;

	if (pathtab_children(dir, kids, 1) != 1 ||
	    pathtab_leaf(kids[0], &var, NULL) != PT_SEG_VAR || kids[0]->list ||
	    vars->n == PT_MAX_VARS)
		return;
	ng = pathtab_children(kids[0], grand, 32);
	cJSON_ArrayForEach(item, list)
	{
		const char *name = list_item_name(list, item, dir->list_key);
		struct pt_vars v = *vars;
		if (!name)
			continue;
		v.name[v.n] = var;
		v.value[v.n++] = name;
		for (size_t i = 0; i < ng; i++)
			queue_row(t, grand[i], &v, 0);
	}
}

/* What `ls -l`, tar and rsync will need after this listing: each child's
 * resources and, for a folder, those of what it holds that need no further
 * listing (a dataset's files, a project's files and lists). */
static void prefetch_child(struct tree *t, const struct child *c)
{
	if (!t->prefetch)
		return;
	/* A listing among the entries (a project's datasets/) is expanded:
	 * the walk goes there next.  Deeper listings are not, so what is
	 * queued stays within one folder's subtree. */
	queue_row(t, c->row, &c->vars, 1);
	if (c->row->kind == PT_DIR && !c->row->list) {
		const struct pt_row *kids[32];
		size_t nk = pathtab_children(c->row, kids, 32);
		for (size_t i = 0; i < nk; i++)
			queue_row(t, kids[i], &c->vars, 0);
	}
}

static int list_cb(struct child *c, void *vctx)
{
	struct list_ctx *lc = vctx;
	struct buf path = BUF_INIT;

	if (c->row->hidden)
		return 0;
	/* Two objects cannot share a name, but a server might send both. */
	for (size_t i = 2; i < lc->out->n; i++)
		if (!strcmp(lc->out->ents[i].name, c->name.data))
			return 0;
	prefetch_child(lc->t, c);
	child_path(lc->dir, c->name.data, &path);
	dir_add(lc, c->name.data, ino_for_path(lc->t, path.data),
		c->row->kind == PT_DIR ? S_IFDIR : S_IFREG);
	buf_release(&path);
	return 0;
}

/* Called with the scratch store locked: must not look anything up in it. */
static void list_scratch_cb(const char *name, void *vctx)
{
	struct list_ctx *lc = vctx;

	struct buf path = BUF_INIT;

	for (size_t i = 2; i < lc->out->n; i++)
		if (!strcmp(lc->out->ents[i].name, name))
			return;
	child_path(lc->dir, name, &path);
	/* The number lookup will give unless another path holds it; d_ino is
	 * advisory and the tree lock may not be taken here. */
	dir_add(lc, name, hash64(path.data), S_IFREG);
	buf_release(&path);
}

int tree_readdir(struct tree *t, uint64_t ino, struct tree_dir *out)
{
	struct node *dir = node_of(t, ino);
	struct list_ctx lc = {t, dir, out, 0};
	int ret;

	out->n = 0;
	out->ents = NULL;
	if (!dir)
		return -ESTALE;
	if (dir->row->kind != PT_DIR)
		return -ENOTDIR;
	dir_add(&lc, ".", ino, S_IFDIR);
	dir_add(&lc, "..", ino, S_IFDIR); /* the kernel fills in the real parent */
	ret = for_each_child(t, dir, list_cb, &lc);
	if (ret < 0) {
		tree_dir_release(out);
		return ret;
	}
	scratch_list(t->scratch, dir->path, list_scratch_cb, &lc);
	return 0;
}

void tree_dir_release(struct tree_dir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->ents[i].name);
	free(d->ents);
	d->ents = NULL;
	d->n = 0;
}

/* ---- content ------------------------------------------------------------ */

static int64_t now_epoch_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int saves_allowed(struct tree *t, const struct pt_row *row)
{
	return row && row->kind == PT_FILE && row->put && !t->opt.read_only;
}

/* A file's bytes, and the versionNumber of its document (-1: none). */
static int file_bytes(struct tree *t, const struct node *n, struct buf *out, int64_t *version)
{
	struct cache_ref *ref = NULL;
	const struct buf *bytes;
	int ret = get_resource(t, n->row->get, &n->vars, &ref);

	if (ret)
		return ret;
	ret = render(cache_ref_value(ref), n->row, &bytes);
	if (!ret)
		buf_add(out, bytes->data, bytes->len);
	if (version)
		*version = doc_version(n->row, ref);
	cache_ref_put(ref);
	return ret;
}

static int open_file(struct tree *t, struct node *n, int flags, struct buf *content,
		     struct tree_base *base)
{
	int ret;

	if (!n->row)
		return flags & TREE_OPEN_TRUNC
			   ? scratch_stat(t->scratch, n->path, &(struct scratch_attr){0})
			   : scratch_read(t->scratch, n->path, content);
	if (n->row->kind != PT_FILE)
		return -EISDIR;
	if ((flags & TREE_OPEN_WRITE) && !saves_allowed(t, n->row))
		return t->opt.read_only ? -EROFS : -EACCES;
	if (!saves_allowed(t, n->row))
		return file_bytes(t, n, content, NULL);
	if (!(flags & TREE_OPEN_TRUNC)) {
		/* Remember what the user read, so that a save can tell
		 * whether someone else changed the object since. */
		ret = file_bytes(t, n, content, &base->version);
		if (ret) {
			buf_reset(content);
			return ret;
		}
		base->hash = content_hash(content->data, content->len);
		set_base(t, n, base);
		return 0;
	}
	/* Truncated without reading: checked against what was last read
	 * through the mount, if anything. */
	*base = base_of(t, n);
	return 0;
}

int tree_open(struct tree *t, uint64_t ino, int flags, struct buf *content, struct tree_base *base,
	      int *size_changed)
{
	struct node *n = node_of(t, ino);
	int ret;

	buf_reset(content);
	base->version = -1;
	base->hash = 0;
	*size_changed = 0;
	if (!n)
		return -ESTALE;
	ret = open_file(t, n, flags, content, base);
	if (!ret && !(flags & TREE_OPEN_TRUNC)) {
		int64_t shown = atomic_exchange(&n->shown_size, (int64_t)content->len);
		*size_changed = shown >= 0 && shown != (int64_t)content->len;
	}
	return ret;
}

int tree_file_kind(struct tree *t, uint64_t ino)
{
	struct node *n = node_of(t, ino);

	if (!n)
		return -ESTALE;
	if (!n->row)
		return TREE_SCRATCH;
	if (n->row->kind != PT_FILE)
		return -EISDIR;
	if (n->row->format == PT_SPOOL)
		return TREE_STREAM;
	return saves_allowed(t, n->row) ? TREE_API_RW : TREE_API_RO;
}

/* ---- saving ------------------------------------------------------------- */

static int valid_utf8(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n = c < 0x80	    ? 1
			   : (c >> 5) == 6  ? 2
			   : (c >> 4) == 14 ? 3
			   : (c >> 3) == 30 ? 4
					    : 0;
		if (!n || i + n > len)
			return 0;
		for (size_t k = 1; k < n; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
		/* overlong forms and surrogates */
		if ((n == 2 && c < 0xC2) || (n == 3 && c == 0xE0 && s[i + 1] < 0xA0) ||
		    (n == 3 && c == 0xED && s[i + 1] >= 0xA0) ||
		    (n == 4 && c == 0xF0 && s[i + 1] < 0x90) || (n == 4 && c > 0xF4) ||
		    (n == 4 && c == 0xF4 && s[i + 1] >= 0x90))
			return 0;
		i += n;
	}
	return 1;
}

static size_t line_of(const char *data, size_t off)
{
	size_t line = 1;

	for (size_t i = 0; i < off; i++)
		line += data[i] == '\n';
	return line;
}

/* Parses a whole JSON document; logs why it is not one. */
static int parse_json_doc(const char *path, const char *data, size_t len, cJSON **out)
{
	const char *end = NULL;
	cJSON *j;

	*out = NULL;
	if (memchr(data, '\0', len)) {
		log_error("%s: not saved: the file contains a NUL byte", path);
		return -EINVAL;
	}
	j = cJSON_ParseWithLengthOpts(data, len, &end, 0);
	if (!j) {
		size_t off = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
		log_error("%s: not saved: invalid JSON near line %zu", path, line_of(data, off));
		return -EINVAL;
	}
	for (; end < data + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
			log_error("%s: not saved: text after the JSON document, line %zu", path,
				  line_of(data, (size_t)(end - data)));
			cJSON_Delete(j);
			return -EINVAL;
		}
	}
	*out = j;
	return 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t sl = strlen(s), xl = strlen(suffix);
	return sl >= xl && !strcmp(s + sl - xl, suffix);
}

/* Checks the content of a save before anything is sent.  For JSON files
 * *parsed gets the document. */
static int validate(const struct pt_row *row, const char *path, const char *data, size_t len,
		    cJSON **parsed)
{
	int ret;

	*parsed = NULL;
	if (row->format == PT_JSON) {
		ret = parse_json_doc(path, data, len, parsed);
		if (ret)
			return ret;
		if (!cJSON_IsObject(*parsed)) {
			log_error("%s: not saved: the content must be a JSON object", path);
			goto invalid;
		}
		for (const char *k = row->require; k && *k;) {
			size_t n = strcspn(k, ",");
			char key[64];
			snprintf(key, sizeof(key), "%.*s", (int)n, k);
			if (!cJSON_HasObjectItem(*parsed, key)) {
				log_error("%s: not saved: the object must keep its \"%s\" key",
					  path, key);
				goto invalid;
			}
			k += n + (k[n] == ',');
		}
		return 0;
	}
	if (memchr(data, '\0', len) || !valid_utf8((const unsigned char *)data, len)) {
		log_error("%s: not saved: the text is not valid UTF-8", path);
		return -EINVAL;
	}
	/* JSON kept as text (visual recipes' payloads) must stay JSON. */
	if (ends_with(path, ".json") && strspn(data, " \t\r\n") < len) {
		cJSON *j;
		ret = parse_json_doc(path, data, len, &j);
		cJSON_Delete(j);
		return ret;
	}
	return 0;
invalid:
	cJSON_Delete(*parsed);
	*parsed = NULL;
	return -EINVAL;
}

/* After a save: forget what changed, including the listings above it, whose
 * items carry versionTags. */
static void invalidate_after_save(struct tree *t, const struct pt_row *row,
				  const struct pt_vars *vars)
{
	const char *keys[] = {row->get, row->cond_get};
	struct buf key = BUF_INIT;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!keys[i])
			continue;
		buf_reset(&key);
		if (!pathtab_expand(keys[i], vars, &key))
			cache_invalidate(t->cache, key.data);
	}
	for (const struct pt_row *up = pathtab_parent(row); up; up = pathtab_parent(up)) {
		buf_reset(&key);
		if (up->list && !pathtab_expand(up->list, vars, &key))
			cache_invalidate(t->cache, key.data);
	}
	buf_release(&key);
}

/* Saves `data` as the file of `row`.  *base is what the user read (version
 * -1 / hash 0: unknown); on success it becomes what DSS now holds. */
static int save_file(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		     const char *path, const char *data, size_t len, struct tree_base *base)
{
	struct buf get_key = BUF_INIT, put_key = BUF_INIT, resp = BUF_INIT;
	struct cache_ref *ref = NULL;
	cJSON *parsed = NULL, *env = NULL;
	char *body = NULL;
	const struct buf *current;
	int64_t now;
	uint64_t now_hash;
	int ret;

	if (!saves_allowed(t, row))
		return t->opt.read_only ? -EROFS : -EACCES;
	ret = validate(row, path, data, len, &parsed);
	if (ret)
		return ret;
	if ((ret = pathtab_expand(row->get, vars, &get_key)) ||
	    (ret = pathtab_expand(row->put, vars, &put_key)))
		goto out;

	/* The conflict check and the read-modify-write need what DSS holds
	 * now, not what the cache remembers (and a re-read after a refusal
	 * then shows it). */
	cache_invalidate(t->cache, get_key.data);
	ret = cache_get(t->cache, get_key.data, fetch_resource, t, &ref);
	if (ret)
		goto out;
	struct resource *res = cache_ref_value(ref);
	ret = render(res, row, &current);
	if (ret)
		goto out;
	now = doc_version(row, ref);
	now_hash = content_hash(current->data, current->len);
	if (current->len == len && !memcmp(current->data, data, len)) {
		/* Nothing to change: editors rewrite unchanged files. */
		base->version = now;
		base->hash = now_hash;
		goto out;
	}
	if (!t->opt.last_writer_wins && base->version >= 0 && now != base->version) {
		log_error(
		    "%s: not saved: it was changed on DSS since you read it (version %lld, now "
		    "%lld); read it again, or mount with -o last_writer_wins",
		    path, (long long)base->version, (long long)now);
		ret = -ESTALE;
		goto out;
	}
	if (!t->opt.last_writer_wins && base->hash && now_hash != base->hash) {
		log_error("%s: not saved: it was changed on DSS since you read it; read it again, "
			  "or mount with -o last_writer_wins",
			  path);
		ret = -ESTALE;
		goto out;
	}
	if (row->field) {
		/* A projection: send the whole document with the part replaced. */
		cJSON *part = parsed;
		env = cJSON_Duplicate(res->json, 1);
		if (!part) {
			char *text = xstrndup(data, len);
			part = cJSON_CreateString(text);
			free(text);
		}
		parsed = NULL;
		if (!cJSON_IsObject(env) || !part) {
			cJSON_Delete(part);
			log_error("%s: not saved: DSS's document has an unexpected shape", path);
			ret = -EIO;
			goto out;
		}
		if (cJSON_HasObjectItem(env, row->field))
			cJSON_ReplaceItemInObjectCaseSensitive(env, row->field, part);
		else
			cJSON_AddItemToObject(env, row->field, part);
		body = cJSON_PrintUnformatted(env);
		if (!body) {
			ret = -ENOMEM;
			goto out;
		}
		ret = http_request(t->http, "PUT", put_key.data, body, strlen(body), &resp);
	} else {
		ret = http_request(t->http, "PUT", put_key.data, data, len, &resp);
	}
	cache_ref_put(ref);
	ref = NULL;
	if (ret)
		goto out;
	invalidate_after_save(t, row, vars);
	log_info("%s: saved", path);
	/* What DSS now holds, so that the next save of this file is checked
	 * against it; the reads that follow reuse this fetch. */
	base->version = -1;
	base->hash = 0;
	if (!cache_get(t->cache, get_key.data, fetch_resource, t, &ref) &&
	    !render(cache_ref_value(ref), row, &current)) {
		base->version = doc_version(row, ref);
		base->hash = content_hash(current->data, current->len);
	}
out:
	cache_ref_put(ref);
	cJSON_Delete(parsed);
	cJSON_Delete(env);
	free(body);
	buf_release(&resp);
	buf_release(&get_key);
	buf_release(&put_key);
	return ret;
}

int tree_save(struct tree *t, uint64_t ino, const char *data, size_t len, struct tree_base *base)
{
	struct node *n = node_of(t, ino);
	int ret;

	if (!n)
		return -ESTALE;
	if (!n->row)
		return scratch_store(t->scratch, n->path, data, len, now_epoch_ms());
	if (n->row->kind != PT_FILE)
		return -EISDIR;
	ret = save_file(t, n->row, &n->vars, n->path, data, len, base);
	if (!ret)
		set_base(t, n, base);
	return ret;
}

/* ---- scratch files, unlink, rename, setattr ----------------------------- */

/* An API object found by name, with its own copy of the variables. */
struct found {
	const struct pt_row *row;
	struct pt_vars vars;
};

static void found_release(struct found *f)
{
	for (int i = 0; i < f->vars.n; i++)
		free((char *)f->vars.value[i]);
	f->vars.n = 0;
	f->row = NULL;
}

struct find_ctx {
	const char *name;
	struct found *out;
};

static int find_cb(struct child *c, void *vctx)
{
	struct find_ctx *fc = vctx;

	if (strcmp(c->name.data, fc->name))
		return 0;
	fc->out->row = c->row;
	vars_copy(&fc->out->vars, &c->vars);
	return 1;
}

/* Finds the API object `name` in dir: 0 (filled), -ENOENT, or an error. */
static int find_api_child(struct tree *t, const struct node *dir, const char *name,
			  struct found *out)
{
	struct find_ctx fc = {name, out};
	int ret;

	memset(out, 0, sizeof(*out));
	if (!name_possible(dir, name))
		return -ENOENT;
	ret = for_each_child(t, dir, find_cb, &fc);
	if (ret < 0)
		return ret;
	return out->row ? 0 : -ENOENT;
}

static int dir_node(struct tree *t, uint64_t ino, struct node **dir)
{
	*dir = node_of(t, ino);
	if (!*dir)
		return -ESTALE;
	if (!(*dir)->row || (*dir)->row->kind != PT_DIR)
		return -ENOTDIR;
	return 0;
}

int tree_create(struct tree *t, uint64_t parent, const char *name, mode_t mode, uint64_t *ino,
		struct stat *st)
{
	struct node *dir;
	struct buf path = BUF_INIT;
	int ret = dir_node(t, parent, &dir);

	if (ret)
		return ret;
	if (t->opt.read_only)
		return -EROFS;
	if (strlen(name) > NAME_MAX_BYTES)
		return -ENAMETOOLONG;
	/* A name DSS objects can have here is not a scratch name: making a
	 * file there would look like creating a DSS object. */
	if (name_possible(dir, name))
		return -EPERM;
	child_path(dir, name, &path);
	ret = scratch_create(t->scratch, path.data, mode, now_epoch_ms());
	if (!ret) {
		*ino = node_ref(t, path.data, NULL, &dir->vars);
		ret = scratch_attr(t, *ino, path.data, st);
	}
	buf_release(&path);
	return ret;
}

int tree_unlink(struct tree *t, uint64_t parent, const char *name)
{
	struct node *dir;
	struct buf path = BUF_INIT;
	struct found f;
	int ret = dir_node(t, parent, &dir);

	if (ret)
		return ret;
	child_path(dir, name, &path);
	ret = scratch_unlink(t->scratch, path.data);
	buf_release(&path);
	if (ret != -ENOENT)
		return ret;
	ret = find_api_child(t, dir, name, &f);
	found_release(&f);
	/* DSS objects are never deleted through the mount. */
	return ret ? ret : -EPERM;
}

/* The read base of the node at path (unknown if it has none). */
static struct tree_base base_of_path(struct tree *t, const char *path)
{
	struct tree_base b = {-1, 0};

	pthread_mutex_lock(&t->lock);
	struct node *n = find_path(t, path, NULL);
	if (n)
		b = n->read_base;
	pthread_mutex_unlock(&t->lock);
	return b;
}

static void set_base_of_path(struct tree *t, const char *path, const struct tree_base *b)
{
	pthread_mutex_lock(&t->lock);
	struct node *n = find_path(t, path, NULL);
	if (n)
		n->read_base = *b;
	pthread_mutex_unlock(&t->lock);
}

int tree_rename(struct tree *t, uint64_t parent, const char *name, uint64_t newparent,
		const char *newname, unsigned flags, uint64_t *saved_ino)
{
	struct node *from, *to;
	struct buf src = BUF_INIT, dst = BUF_INIT, data = BUF_INIT;
	struct found target = {0}, source = {0};
	int ret;

	*saved_ino = 0;
	if ((ret = dir_node(t, parent, &from)) || (ret = dir_node(t, newparent, &to)))
		return ret;
	if (flags & ~(unsigned)RENAME_NOREPLACE)
		return -EINVAL;
	if (t->opt.read_only)
		return -EROFS;
	child_path(from, name, &src);
	child_path(to, newname, &dst);

	ret = scratch_read(t->scratch, src.data, &data);
	if (!ret) {
		/* scratch -> API file: that is a save. */
		ret = find_api_child(t, to, newname, &target);
		if (!ret) {
			struct tree_base base = base_of_path(t, dst.data);
			if (flags & RENAME_NOREPLACE) {
				ret = -EEXIST;
				goto out;
			}
			ret = save_file(t, target.row, &target.vars, dst.data, data.data, data.len,
					&base);
			if (!ret) {
				set_base_of_path(t, dst.data, &base);
				node_moved(t, src.data, dst.data, target.row, &target.vars, &base);
				scratch_unlink(t->scratch, src.data);
				*saved_ino = ino_for_path(t, dst.data);
			}
			goto out;
		}
		if (ret != -ENOENT)
			goto out;
		/* scratch -> scratch */
		if (name_possible(to, newname)) {
			ret = -EPERM;
			goto out;
		}
		if ((flags & RENAME_NOREPLACE) &&
		    !scratch_stat(t->scratch, dst.data, &(struct scratch_attr){0})) {
			ret = -EEXIST;
			goto out;
		}
		ret = scratch_rename(t->scratch, src.data, dst.data);
		if (!ret)
			node_moved(t, src.data, dst.data, NULL, &to->vars,
				   &(struct tree_base){-1, 0});
		goto out;
	}

	/* API file -> scratch name: a copy; nothing changes on DSS. */
	ret = find_api_child(t, from, name, &source);
	if (ret)
		goto out;
	if (source.row->kind != PT_FILE || name_possible(to, newname)) {
		ret = -EPERM;
		goto out;
	}
	buf_reset(&data);
	struct node tmp = {.row = source.row, .vars = source.vars};
	ret = file_bytes(t, &tmp, &data, NULL);
	if (ret)
		goto out;
	ret = scratch_create(t->scratch, dst.data, 0644, now_epoch_ms());
	if (ret == -EEXIST && !(flags & RENAME_NOREPLACE))
		ret = 0;
	if (!ret)
		ret = scratch_store(t->scratch, dst.data, data.data, data.len, now_epoch_ms());
out:
	found_release(&target);
	found_release(&source);
	buf_release(&src);
	buf_release(&dst);
	buf_release(&data);
	return ret;
}

int tree_setattr(struct tree *t, uint64_t ino, const struct stat *attr, int to_set,
		 struct stat *out)
{
	struct node *n = node_of(t, ino);
	struct buf data = BUF_INIT;
	int ret = 0;

	if (!n)
		return -ESTALE;
	if (t->opt.read_only && (to_set & (TREE_SET_SIZE | TREE_SET_MODE | TREE_SET_MTIME)))
		return -EROFS;
	if (!n->row) {
		int64_t mtime = -1;
		if (to_set & TREE_SET_MTIME)
			mtime =
			    (int64_t)attr->st_mtim.tv_sec * 1000 + attr->st_mtim.tv_nsec / 1000000;
		ret = scratch_set(t->scratch, n->path,
				  to_set & TREE_SET_MODE ? attr->st_mode : (mode_t)-1, mtime);
		if (!ret && (to_set & TREE_SET_SIZE)) {
			ret = scratch_read(t->scratch, n->path, &data);
			if (!ret) {
				buf_resize(&data, (size_t)attr->st_size);
				ret = scratch_store(t->scratch, n->path, data.data, data.len,
						    now_epoch_ms());
			}
		}
	} else if ((to_set & TREE_SET_SIZE) && n->row->kind == PT_FILE) {
		/* truncate(2) without an open file: change and save at once. */
		struct tree_base base = base_of(t, n);
		ret = saves_allowed(t, n->row) ? file_bytes(t, n, &data, NULL) : -EACCES;
		if (!ret) {
			buf_resize(&data, (size_t)attr->st_size);
			ret = save_file(t, n->row, &n->vars, n->path, data.data, data.len, &base);
			if (!ret)
				set_base(t, n, &base);
		}
	}
	/* Modes, owners and times of DSS objects are not stored: accepted and
	 * ignored, as tools like rsync and cp -p expect them to work. */
	buf_release(&data);
	return ret ? ret : node_attr(t, n, out);
}

/* ---- streams ------------------------------------------------------------ */

struct tree_stream {
	struct cache_ref *ref;
	int fd;
	size_t size;
};

int tree_stream_open(struct tree *t, uint64_t ino, struct tree_stream **out)
{
	struct node *n = node_of(t, ino);
	struct cache_ref *ref = NULL;
	int ret;

	*out = NULL;
	if (!n)
		return -ESTALE;
	if (!n->row || n->row->format != PT_SPOOL)
		return -EINVAL;
	ret = get_row_resource(t, n->row, &n->vars, &ref);
	if (ret)
		return ret;
	struct resource *res = cache_ref_value(ref);
	*out = xcalloc(1, sizeof(**out));
	(*out)->ref = ref;
	(*out)->fd = res->spool_fd;
	(*out)->size = res->spool_size;
	return 0;
}

ssize_t tree_stream_read(struct tree_stream *s, char *buf, size_t size, off_t off)
{
	ssize_t n;

	if (off < 0 || (size_t)off >= s->size)
		return 0;
	if (size > s->size - (size_t)off)
		size = s->size - (size_t)off;
	do
		n = pread(s->fd, buf, size, off);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

void tree_stream_close(struct tree_stream *s)
{
	if (!s)
		return;
	cache_ref_put(s->ref);
	free(s);
}
