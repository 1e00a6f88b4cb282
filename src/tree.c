#include "dssfs/tree.h"
#include "dssfs/cache.h"
#include "dssfs/escape.h"
#include "dssfs/http.h"
#include "dssfs/json.h"
#include "dssfs/log.h"
#include "dssfs/pathtab.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A fetched REST resource: the parsed document and the renderings of its
 * files, made on first use. */
struct rendering {
	const char *field; /* static: from the table */
	enum pt_format format;
	int err;
	struct buf bytes;
};

struct resource {
	cJSON *json;
	pthread_mutex_t lock; /* guards the renderings */
	struct rendering *r;
	size_t nr;
};

/* Nodes are immutable after creation except nlookup (under the tree lock)
 * and shown_size (atomic),
 * so an operation may read the node the kernel is asking about without the
 * lock: the kernel does not forget an inode while an operation on it runs. */
struct node {
	uint64_t ino;
	char *path; /* file names (escaped), "/" for the root */
	const struct pt_row *row;
	struct pt_vars vars; /* values owned */
	int64_t mtime_ms;    /* see tree.h: inherited time */
	/* st_size last reported to the kernel, -1 if none */
	_Atomic int64_t shown_size;
	uint64_t nlookup;
	struct node *hnext;
};

struct tree {
	struct http *http;
	struct cache *cache;
	struct tree_options opt;
	pthread_mutex_t lock;
	struct node **table;
	size_t nbuckets, nnodes;
	struct node *root;
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
	pthread_mutex_init(&res->lock, NULL);
	/* The parsed tree and the renderings cost a few times the body. */
	*cost = 3 * body.len + sizeof(*res) + 256;
	*value = res;
	buf_release(&body);
	return 0;
}

/* Gets the resource at endpoint template `tmpl` for these variables. */
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
static struct node *node_get(struct tree *t, const char *path, const struct pt_row *row,
			     const struct pt_vars *vars, int64_t mtime_ms)
{
	uint64_t ino = hash64(path);
	struct node *n;

	for (;; ino++) {
		if (ino <= TREE_ROOT_INO)
			continue;
		n = find_ino(t, ino);
		if (!n)
			break;
		if (!strcmp(n->path, path))
			return n;
	}
	n = xcalloc(1, sizeof(*n));
	n->shown_size = -1;
	n->ino = ino;
	n->path = xstrdup(path);
	n->row = row;
	vars_copy(&n->vars, vars);
	n->mtime_ms = mtime_ms;
	n->hnext = t->table[ino % t->nbuckets];
	t->table[ino % t->nbuckets] = n;
	t->nnodes++;
	return n;
}

static uint64_t ino_for_path(struct tree *t, const char *path)
{
	uint64_t ino = hash64(path);
	struct node *n;

	pthread_mutex_lock(&t->lock);
	for (;; ino++) {
		if (ino <= TREE_ROOT_INO)
			continue;
		n = find_ino(t, ino);
		if (!n || !strcmp(n->path, path))
			break;
	}
	pthread_mutex_unlock(&t->lock);
	return ino;
}

static struct node *node_of(struct tree *t, uint64_t ino)
{
	struct node *n;

	pthread_mutex_lock(&t->lock);
	n = find_ino(t, ino);
	pthread_mutex_unlock(&t->lock);
	return n;
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
	t->root->mtime_ms = o->mount_time_ms;
	t->root->nlookup = 1;
	t->table[TREE_ROOT_INO % t->nbuckets] = t->root;
	t->nnodes = 1;
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
	pthread_mutex_destroy(&t->lock);
	free(t);
}

void tree_drop_caches(struct tree *t)
{
	cache_clear(t->cache);
}

/* ---- attributes --------------------------------------------------------- */

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

static mode_t file_mode(struct tree *t, const struct pt_row *row)
{
	return S_IFREG | (row->put && !t->opt.read_only ? 0644 : 0444);
}

/* Attributes of a file: fetches its document to know its exact size. */
static int file_attr(struct tree *t, uint64_t ino, const struct pt_row *row,
		     const struct pt_vars *vars, int64_t dir_mtime, struct stat *st)
{
	struct cache_ref *ref = NULL;
	const struct buf *bytes;
	int64_t mtime = dir_mtime;
	int ret = get_resource(t, row->get, vars, &ref);

	if (ret)
		return ret;
	struct resource *res = cache_ref_value(ref);
	ret = render(res, row, &bytes);
	if (ret)
		goto out;
	if (row->version_at) {
		struct buf p = BUF_INIT;
		buf_addf(&p, "%s.lastModifiedOn", row->version_at);
		mtime = json_get_int64(res->json, p.data, dir_mtime);
		buf_release(&p);
	}
	fill_common(t, st, ino, mtime);
	st->st_mode = file_mode(t, row);
	st->st_nlink = 1;
	st->st_size = (off_t)bytes->len;
	st->st_blocks = (blkcnt_t)((bytes->len + 511) / 512);
out:
	cache_ref_put(ref);
	return ret;
}

static int node_attr(struct tree *t, const struct node *n, struct stat *st)
{
	if (n->row->kind == PT_DIR) {
		dir_attr(t, n->ino, n->mtime_ms, st);
		return 0;
	}
	return file_attr(t, n->ino, n->row, &n->vars, n->mtime_ms, st);
}

/* ---- children ----------------------------------------------------------- */

/* One child of a directory, as found by lookup or readdir. */
struct child {
	const struct pt_row *row;
	struct pt_vars vars; /* values borrowed */
	int64_t mtime_ms;
	struct buf name; /* escaped file name */
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
		const char *name =
		    cJSON_IsObject(list) ? item->string : json_get_string(item, dir->row->list_key);
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
		c.mtime_ms = json_get_int64(item, "versionTag.lastModifiedOn", dir->mtime_ms);
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
		struct child c = {
		    .row = kids[i], .vars = dir->vars, .mtime_ms = dir->mtime_ms, .name = BUF_INIT};
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
		dir_attr(lc->t, ino, c->mtime_ms, lc->st);
	else
		ret = file_attr(lc->t, ino, c->row, &c->vars, c->mtime_ms, lc->st);
	if (!ret) {
		pthread_mutex_lock(&lc->t->lock);
		n = node_get(lc->t, path.data, c->row, &c->vars, c->mtime_ms);
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
		    !strcmp(name + nl - sl, suffix))
			return 1;
	}
	return 0;
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
	if (!name_possible(dir, name)) {
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

	if (!ret && n->row->kind == PT_FILE)
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

static int list_cb(struct child *c, void *vctx)
{
	struct list_ctx *lc = vctx;
	struct buf path = BUF_INIT;

	/* Two objects cannot share a name, but a server might send both. */
	for (size_t i = 2; i < lc->out->n; i++)
		if (!strcmp(lc->out->ents[i].name, c->name.data))
			return 0;
	child_path(lc->dir, c->name.data, &path);
	dir_add(lc, c->name.data, ino_for_path(lc->t, path.data),
		c->row->kind == PT_DIR ? S_IFDIR : S_IFREG);
	buf_release(&path);
	return 0;
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
	if (ret < 0)
		tree_dir_release(out);
	return ret < 0 ? ret : 0;
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

int tree_read_file(struct tree *t, uint64_t ino, struct buf *out, int *size_changed)
{
	struct node *n = node_of(t, ino);
	struct cache_ref *ref = NULL;
	const struct buf *bytes;
	int ret;

	buf_reset(out);
	if (!n)
		return -ESTALE;
	if (n->row->kind != PT_FILE)
		return -EISDIR;
	ret = get_resource(t, n->row->get, &n->vars, &ref);
	if (ret)
		return ret;
	ret = render(cache_ref_value(ref), n->row, &bytes);
	if (!ret) {
		buf_add(out, bytes->data, bytes->len);
		int64_t shown = atomic_exchange(&n->shown_size, (int64_t)bytes->len);
		*size_changed = shown >= 0 && shown != (int64_t)bytes->len;
	}
	cache_ref_put(ref);
	return ret;
}

int tree_is_writable(struct tree *t, uint64_t ino)
{
	struct node *n = node_of(t, ino);

	return n && n->row->kind == PT_FILE && n->row->put && !t->opt.read_only;
}
