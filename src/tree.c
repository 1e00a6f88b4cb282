/*
 * tree - lookup, listing, attributes and reading of the tree (see tree.h);
 * documents are in resource.c, inodes in nodes.c, saving in save.c.
 */
#include "tree_int.h"

#include "dssfs/cache.h"
#include "dssfs/errmap.h"
#include "dssfs/escape.h"
#include "dssfs/http.h"
#include "dssfs/json.h"
#include "dssfs/log.h"
#include "dssfs/pathtab.h"
#include "dssfs/prefetch.h"
#include "dssfs/scratch.h"
#include "dssfs/strmap.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

/* malloc arenas the threads share (glibc makes up to 8 per CPU).  With one
 * per thread, what one thread frees (a document evicted, a listing
 * replaced) stays in its arena while the others grow theirs: measured on 2
 * CPUs, a cold tar then find of 1 x 20,000 datasets peaked at 201 MB (its
 * heap: 183 MB holding 125 MB in use) with the default, at 136 MB (109 MB
 * holding 83 MB) with 2, 149 MB with 1; the walk took 56, 61 and 63 s, within
 * this machine's noise.  The fetching threads mostly wait on the network. */
#define TREE_ARENAS 2

/* Sets TREE_ARENAS, before the threads start, unless the user chose
 * (MALLOC_ARENA_MAX, GLIBC_TUNABLES=glibc.malloc.arena_max). */
static void limit_arenas(void)
{
	const char *tun = getenv("GLIBC_TUNABLES");

	if (!getenv("MALLOC_ARENA_MAX") && !(tun && strstr(tun, "arena_max")))
		mallopt(M_ARENA_MAX, TREE_ARENAS);
}

struct tree *tree_new(struct http *h, struct cache *c, const struct tree_options *o)
{
	struct tree *t = xcalloc(1, sizeof(*t));

	limit_arenas();

	t->http = h;
	t->cache = c;
	t->opt = *o;
	if (!t->opt.spool_total)
		t->opt.spool_total = SIZE_MAX;
	if (!t->opt.data_max)
		t->opt.data_max = TREE_DATA_MAX_DEFAULT;
	pthread_mutex_init(&t->lock, NULL);
	nodes_init(t);
	saves_init(t);
	t->times = file_times_new();
	if (o->times_file) {
		int ret = file_times_open(t->times, o->times_file);
		if (ret)
			log_warn("%s: %s; the times of files without one from DSS will be this "
				 "mount's",
				 o->times_file, strerror(-ret));
	}
	t->opt.times_file = NULL; /* (the caller's) */
	t->failures = strmap_new();
	t->spools = strmap_new();
	t->pending = strmap_new();
	t->scratch = scratch_new(o->scratch_max);
	return t;
}

void tree_free(struct tree *t)
{
	if (!t)
		return;
	prefetch_free(t->prefetch);
	/* Spooled resources count their disk use in the tree. */
	cache_clear(t->cache);
	nodes_release(t);
	saves_release(t);
	file_times_free(t->times);
	strmap_free(t->failures, free);
	strmap_free(t->spools, free);
	strmap_free(t->pending, NULL);
	scratch_free(t->scratch);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

void tree_set_changed_cb(struct tree *t, void (*fn)(uint64_t ino, void *ctx), void *ctx)
{
	t->changed = fn;
	t->changed_ctx = ctx;
}

void tree_thread_cancel(int (*cancelled)(void *arg), void *arg)
{
	http_set_thread_cancel(cancelled, arg);
}

void tree_changed(struct tree *t, uint64_t ino)
{
	if (ino && t->changed)
		t->changed(ino, t->changed_ctx);
}

void tree_drop_caches(struct tree *t)
{
	if (t->prefetch)
		prefetch_clear(t->prefetch);
	cache_clear(t->cache);
	forget_failures(t);
}

int tree_probe_admin(struct tree *t)
{
	struct cache_ref *ref = NULL;
	struct pt_vars none = {0};
	/* (a refusal is the answer: not logged as an error) */
	int was = errmap_quiet(1);
	int ret = get_resource(t, "admin/variables/", &none, &ref);

	errmap_quiet(was);
	cache_ref_put(ref);
	if (ret == -EACCES || ret == -EPERM || ret == -ENOENT)
		ret = 0;
	else if (!ret)
		ret = 1;
	else
		return ret;
	atomic_store(&t->admin, ret);
	return ret;
}

void tree_probe_admin_later(struct tree *t)
{
	atomic_store(&t->admin, -1);
}

/* Whether the key is an admin, probed now if it was not at mount: 1, 0 or
 * -errno. */
static int key_is_admin(struct tree *t)
{
	int a = atomic_load(&t->admin);

	return a >= 0 ? a : tree_probe_admin(t);
}

void tree_get_stats(struct tree *t, struct tree_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&t->lock);
	st->inodes = t->ninodes;
	pthread_mutex_unlock(&t->lock);
	st->nodes = nodes_alive();
	st->saves = atomic_load(&t->saves);
	st->conflicts = atomic_load(&t->conflicts);
	st->save_failures = atomic_load(&t->save_failures);
	st->scratch_bytes = scratch_bytes(t->scratch);
	st->spool_bytes = atomic_load(&t->spool_used);
	if (t->prefetch) {
		st->prefetching = 1;
		prefetch_get_stats(t->prefetch, &st->prefetch);
	}
}

/* ---- children ----------------------------------------------------------- */

/* Whether an object row is listed by a list of its own (pathtab.h). */
static int own_list(const struct pt_row *row)
{
	return row->kind != PT_DIR && row->list;
}

/* The children of dir that are objects of the listing of row `src` (dir's
 * own row, or an object row with its own list) under the rows kids. */
static int for_each_in_list(struct tree *t, const struct node *dir, const struct pt_row *src,
			    const struct pt_row **kids, size_t nk, const char *want, child_fn fn,
			    void *ctx)
{
	const struct listing *l;
	struct cache_ref *ref = NULL;
	int ret = listing_get(t, src, &dir->vars, &ref, &l);

	if (ret)
		return ret;
	for (size_t j = 0; !ret && j < (want ? 1 : listing_count(l)); j++) {
		for (size_t i = 0; !ret && i < nk; i++) {
			const char *var, *suffix;
			const struct listing_entry *e = want ? NULL : listing_at(l, j);
			if (pathtab_leaf(kids[i], &var, &suffix) != PT_SEG_VAR ||
			    (kids[i] != src && own_list(kids[i])))
				continue;
			struct child c = {.row = kids[i], .vars = dir->vars, .name = BUF_INIT};
			if (want) {
				size_t wl = strlen(want), sl = strlen(suffix);
				if (wl <= sl || strcmp(want + wl - sl, suffix))
					continue;
				buf_add(&c.name, want, wl - sl);
				e = listing_find(l, c.name.data);
				buf_reset(&c.name);
			}
			if (!e || (kids[i]->recurse && !e->nested) ||
			    pt_vars_set(&c.vars, var, e->id) ||
			    (e->over && pt_vars_set(&c.vars, dir->row->over, e->over))) {
				buf_release(&c.name);
				continue;
			}
			buf_addf(&c.name, "%s%s", e->base, suffix);
			ret = fn(&c, ctx);
			buf_release(&c.name);
		}
	}
	listing_put(ref, l);
	return ret;
}

/* The object children of a listed folder: each object of its listing
 * under each object row (its <name>.md and <name>.json, its folder), then
 * those of the rows listed by their own lists (a project folder's links);
 * only the one named `want` if not NULL (found through the listing's
 * index). */
static int for_each_listed(struct tree *t, const struct node *dir, const char *want, child_fn fn,
			   void *ctx)
{
	const struct pt_row *kids[PT_MAX_CHILDREN];
	size_t nk = pathtab_children(dir->row, kids, PT_MAX_CHILDREN);
	int ret = for_each_in_list(t, dir, dir->row, kids, nk, want, fn, ctx);

	for (size_t i = 0; !ret && i < nk; i++)
		if (own_list(kids[i]) && pathtab_leaf(kids[i], NULL, NULL) == PT_SEG_VAR)
			ret = for_each_in_list(t, dir, kids[i], &kids[i], 1, want, fn, ctx);
	return ret;
}

/* Whether a child of row `row` could ever be called `name`. */
static int row_may_be_named(const struct pt_row *row, const char *name)
{
	const char *text, *suffix;
	enum pt_seg seg = pathtab_leaf(row, &text, &suffix);
	size_t nl = strlen(name), pl = strlen(text), sl = strlen(suffix);

	if (seg == PT_SEG_VAR)
		return nl > sl && !strcmp(name + nl - sl, suffix);
	if (seg == PT_SEG_LITERAL)
		return !strcmp(name, text);
	return seg == PT_SEG_DERIVED && nl > pl + sl && !strncmp(name, text, pl) &&
	       !strcmp(name + nl - sl, suffix) &&
	       pathtab_map_has(row->name_map, name + pl, nl - pl - sl);
}

/* The field cond_field of the item of the list `list` whose cond_key is
 * the variable cond_var (a boolean as "true" or "false"), or NULL. */
static const char *list_item_field(const cJSON *list, const struct pt_row *row,
				   const struct pt_vars *vars)
{
	const char *want = pt_vars_get(vars, row->cond_var);
	const cJSON *item;

	if (!cJSON_IsArray(list))
		return NULL;
	cJSON_ArrayForEach(item, list)
	{
		const char *k = json_get_string(item, row->cond_key);
		if (!want || !k || strcmp(k, want))
			continue;
		const cJSON *f = json_get(item, row->cond_field);
		if (cJSON_IsBool(f))
			return cJSON_IsTrue(f) ? "true" : "false";
		return cJSON_IsString(f) ? f->valuestring : NULL;
	}
	return NULL;
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
		const cJSON *doc = ((struct resource *)cache_ref_value(ref))->json;
		const char *v = row->cond_key ? list_item_field(doc, row, &dir->vars)
					      : json_get_string(doc, row->cond_field);
		if (row->cond_equals && !pathtab_cond_holds(row->cond_equals, v))
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

/* Whether an optional folder (pathtab.h) is there: absent only when DSS
 * answers its listing with "not found".  Any other failure shows it, and
 * entering it reports that error. */
static int optional_present(struct tree *t, const struct node *dir, const struct pt_row *row)
{
	return !listing_absent(t, row, &dir->vars);
}

/* The children of dir that are not objects of its listing. */
static int for_each_fixed(struct tree *t, const struct node *dir, const char *want, child_fn fn,
			  void *ctx)
{
	const struct pt_row *kids[PT_MAX_CHILDREN];
	size_t nk = pathtab_children(dir->row, kids, PT_MAX_CHILDREN);
	int ret = 0, admin = 0;

	if (dir->row->recurse)
		return 0;
	for (size_t i = 0; i < nk && !admin; i++)
		if (kids[i]->admin && (admin = key_is_admin(t)) < 0)
			return admin;

	/* The optional folders' listings are needed at once: ask for them
	 * together (the walk into them would fetch them next anyway). */
	lookahead_begin();
	for (size_t i = 0; i < nk && !want; i++)
		if ((kids[i]->optional || kids[i]->hide_forbidden) && (!kids[i]->admin || admin))
			lookahead_child(t, kids[i], &dir->vars);
	lookahead_end(t);
	for (size_t i = 0; i < nk && !ret; i++) {
		struct child c = {.row = kids[i], .vars = dir->vars, .name = BUF_INIT};
		if ((want && !row_may_be_named(kids[i], want)) ||
		    pathtab_leaf(kids[i], NULL, NULL) == PT_SEG_VAR || (kids[i]->admin && !admin))
			continue;
		if (kids[i]->optional && !optional_present(t, dir, kids[i]))
			continue;
		if (kids[i]->hide_forbidden && document_forbidden(t, kids[i], &dir->vars))
			continue;
		ret = fixed_child_name(t, dir, kids[i], &c.name);
		if (ret == -ENOENT)
			ret = 0;
		else if (!ret)
			ret = fn(&c, ctx);
		buf_release(&c.name);
	}
	return ret;
}

/* Calls fn for each child of dir, or only for the one named `want` (not
 * NULL) if there is one. */
static int for_each_child(struct tree *t, const struct node *dir, const char *want, child_fn fn,
			  void *ctx)
{
	int ret;

	if (dir->row->kind != PT_DIR)
		return -ENOTDIR;
	if (dir->row->content)
		return content_children(t, dir, want, fn, ctx);
	ret = for_each_fixed(t, dir, want, fn, ctx);
	if (!ret && (dir->row->list || dir->row->recurse))
		ret = for_each_listed(t, dir, want, fn, ctx);
	return ret;
}

void child_path(const struct node *dir, const char *name, struct buf *out)
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

/* Records the size the kernel was told for ino. */
static void set_shown_size(struct tree *t, uint64_t ino, int64_t size)
{
	struct node *n = node_of(t, ino);

	if (n)
		atomic_store(&n->shown_size, size);
	node_put(n);
}

static int lookup_cb(struct child *c, void *vctx)
{
	struct lookup_ctx *lc = vctx;
	struct buf path = BUF_INIT;
	int ret;

	if (strcmp(c->name.data, lc->name))
		return 0;
	child_path(lc->dir, lc->name, &path);
	/* Attributes first (this may fetch), then the node. */
	uint64_t ino = ino_for_path(lc->t, path.data);
	ret = row_attr(lc->t, ino, path.data, c->row, &c->vars, lc->st);
	if (!ret) {
		lc->ino = node_ref(lc->t, path.data, c->row, &c->vars);
		lc->st->st_ino = lc->ino;
		if (c->row->kind == PT_FILE)
			set_shown_size(lc->t, lc->ino, lc->st->st_size);
	}
	buf_release(&path);
	lc->err = ret;
	return 1; /* found: stop */
}

/* Whether some child row of dir could ever be called `name`. */
int name_possible(const struct node *dir, const char *name)
{
	const struct pt_row *kids[PT_MAX_CHILDREN];
	size_t nk = pathtab_children(dir->row, kids, PT_MAX_CHILDREN);

	for (size_t i = 0; i < nk; i++)
		if (row_may_be_named(kids[i], name))
			return 1;
	return 0;
}

int name_for_scratch(const struct node *dir, const char *name)
{
	const struct pt_row *kids[PT_MAX_CHILDREN];
	size_t nk = pathtab_children(dir->row, kids, PT_MAX_CHILDREN);

	for (size_t i = 0; i < nk; i++)
		if (!kids[i]->recurse && !kids[i]->repeat && kids[i]->kind != PT_LINK &&
		    row_may_be_named(kids[i], name))
			return 0;
	return 1;
}

void scratch_ref(struct tree *t, const char *path, const struct pt_vars *vars,
		 const struct scratch_attr *sa, uint64_t *ino, struct stat *st)
{
	*ino = node_ref(t, path, NULL, vars);
	scratch_fill(t, *ino, sa, st);
}

static int lookup_scratch(struct tree *t, const struct node *dir, const char *name, uint64_t *ino,
			  struct stat *st)
{
	struct buf path = BUF_INIT;
	struct scratch_attr sa;
	int ret;

	child_path(dir, name, &path);
	ret = scratch_stat(t->scratch, path.data, &sa);
	if (!ret)
		scratch_ref(t, path.data, &dir->vars, &sa, ino, st);
	buf_release(&path);
	return ret;
}

static int lookup_in(struct tree *t, struct node *dir, const char *name, uint64_t *ino,
		     struct stat *st, int *permanent)
{
	struct lookup_ctx lc = {t, dir, name, 0, st, -ENOENT};
	int ret;

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
	ret = for_each_child(t, dir, name, lookup_cb, &lc);
	if (ret < 0)
		return ret;
	if (!lc.err)
		*ino = lc.ino;
	return lc.err;
}

int tree_lookup(struct tree *t, uint64_t parent, const char *name, uint64_t *ino, struct stat *st,
		int *permanent)
{
	struct node *dir = node_of(t, parent);
	int ret;

	*permanent = 0;
	if (!dir)
		return -ESTALE;
	ret = dir->row ? lookup_in(t, dir, name, ino, st, permanent) : -ENOTDIR;
	node_put(dir);
	return ret;
}

int tree_getattr(struct tree *t, uint64_t ino, struct stat *st)
{
	struct node *n = node_of(t, ino);
	int ret = n ? node_attr(t, n, st) : -ESTALE;

	if (!ret && S_ISREG(st->st_mode))
		atomic_store(&n->shown_size, st->st_size);
	node_put(n);
	return ret;
}

/* ---- finding an object by name ----------------------------------------- */

void found_release(struct found *f)
{
	vars_release(&f->vars);
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
int find_api_child(struct tree *t, const struct node *dir, const char *name, struct found *out)
{
	struct find_ctx fc = {name, out};
	int ret;

	memset(out, 0, sizeof(*out));
	if (!name_possible(dir, name))
		return -ENOENT;
	ret = for_each_child(t, dir, name, find_cb, &fc);
	if (ret < 0)
		return ret;
	return out->row ? 0 : -ENOENT;
}

/* ---- readdir ------------------------------------------------------------ */

struct list_ctx {
	struct tree *t;
	const struct node *dir;
	struct tree_dir *out;
	size_t cap;
	struct strmap *seen; /* the names listed: each once */
};

static void dir_add(struct list_ctx *lc, const char *name, uint64_t ino, mode_t mode)
{
	struct tree_dir *d = lc->out;

	if (d->n == lc->cap) {
		lc->cap = lc->cap ? 2 * lc->cap : 16;
		d->ents = xrealloc(d->ents, lc->cap * sizeof(*d->ents));
	}
	strmap_put(lc->seen, name, (void *)1);
	d->ents[d->n].name = xstrdup(name);
	d->ents[d->n].ino = ino;
	d->ents[d->n].mode = mode;
	d->n++;
}

static int list_cb(struct child *c, void *vctx)
{
	struct list_ctx *lc = vctx;
	struct buf path = BUF_INIT;

	/* (Names can meet: an object's file and another's folder, x.json.)
	 * Activity is listed only when the mount asks for it. */
	if (c->row->hidden || (c->row->activity && !lc->t->opt.list_activity) ||
	    strmap_get(lc->seen, c->name.data))
		return 0;
	lookahead_child(lc->t, c->row, &c->vars);
	child_path(lc->dir, c->name.data, &path);
	dir_add(lc, c->name.data, ino_for_path(lc->t, path.data),
		c->row->kind == PT_DIR	  ? S_IFDIR
		: c->row->kind == PT_LINK ? S_IFLNK
					  : S_IFREG);
	buf_release(&path);
	return 0;
}

/* Called with the scratch store locked: must not look anything up in it. */
static void list_scratch_cb(const char *name, void *vctx)
{
	struct list_ctx *lc = vctx;

	struct buf path = BUF_INIT;

	if (strmap_get(lc->seen, name))
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
	struct list_ctx lc = {t, dir, out, 0, NULL};
	int ret = 0;

	out->n = 0;
	out->ents = NULL;
	if (!dir)
		return -ESTALE;
	lc.seen = strmap_new();
	if (!dir->row || dir->row->kind != PT_DIR) {
		ret = -ENOTDIR;
		goto out;
	}
	dir_add(&lc, ".", ino, S_IFDIR);
	dir_add(&lc, "..", ino, S_IFDIR); /* the kernel fills in the real parent */
	lookahead_begin();
	ret = for_each_child(t, dir, NULL, list_cb, &lc);
	lookahead_end(t);
	if (ret < 0) {
		tree_dir_release(out);
		goto out;
	}
	lookahead_next(t, dir);
	ret = 0;
	scratch_list(t->scratch, dir->path, list_scratch_cb, &lc);
out:
	strmap_free(lc.seen, NULL);
	node_put(dir);
	return ret;
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

int64_t now_epoch_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int saves_allowed(struct tree *t, const struct pt_row *row)
{
	return row && row->kind == PT_FILE && row->put && !t->opt.read_only;
}

/* A file's bytes, and the versionNumber of its document (-1: none).  With
 * `for_writing`, a document that cannot be shown faithfully is refused
 * (-EACCES, logged): a save from it would change what DSS holds. */
static int file_bytes_for(struct tree *t, const struct node *n, struct buf *out, int64_t *version,
			  int for_writing)
{
	struct cache_ref *ref = NULL;
	const struct buf *bytes;
	int ret = get_resource(t, n->row->get, &n->vars, &ref);

	if (ret)
		return ret;
	struct resource *res = cache_ref_value(ref);
	if (for_writing && res->unfaithful) {
		log_error("%s: read-only: %s", n->path, res->unfaithful);
		ret = -EACCES;
		goto out;
	}
	ret = render(res, n->row, &bytes, NULL);
	if (!ret)
		buf_add(out, bytes->data, bytes->len);
	if (version)
		*version = doc_version(n->row, ref);
out:
	cache_ref_put(ref);
	return ret;
}

int file_bytes(struct tree *t, const struct node *n, struct buf *out, int64_t *version)
{
	return file_bytes_for(t, n, out, version, 0);
}

static int open_file(struct tree *t, struct node *n, int flags, const struct tree_caller *who,
		     struct buf *content, struct tree_base *base)
{
	int ret;

	if (!n->row)
		return flags & TREE_OPEN_TRUNC
			   ? scratch_stat(t->scratch, n->path, &(struct scratch_attr){0})
			   : scratch_read(t->scratch, n->path, content);
	if (n->row->kind != PT_FILE)
		return n->row->kind == PT_LINK ? -ELOOP : -EISDIR;
	if ((flags & TREE_OPEN_WRITE) && !saves_allowed(t, n->row))
		return t->opt.read_only ? -EROFS : -EACCES;
	if (!saves_allowed(t, n->row))
		return file_bytes(t, n, content, NULL);
	/* Truncated without reading: nothing was read, so nothing is
	 * recorded; the save is checked against what this writer read before
	 * (save.c). */
	if (flags & TREE_OPEN_TRUNC)
		return 0;
	ret = file_bytes_for(t, n, content, &base->version, flags & TREE_OPEN_WRITE);
	if (ret) {
		buf_reset(content);
		return ret;
	}
	/* Remember what this process read, so that its save can tell
	 * whether someone else changed the object since. */
	base->hash = content_hash(content->data, content->len);
	base_record(t, n->path, who, base);
	return 0;
}

int tree_open(struct tree *t, uint64_t ino, int flags, const struct tree_caller *who,
	      struct buf *content, struct tree_base *base, int *size_changed)
{
	struct node *n = node_of(t, ino);
	int ret;

	buf_reset(content);
	base->version = -1;
	base->hash = 0;
	*size_changed = 0;
	if (!n)
		return -ESTALE;
	ret = open_file(t, n, flags, who, content, base);
	if (!ret && !(flags & TREE_OPEN_TRUNC)) {
		int64_t shown = atomic_exchange(&n->shown_size, (int64_t)content->len);
		*size_changed = shown >= 0 && shown != (int64_t)content->len;
	}
	node_put(n);
	return ret;
}

int tree_file_kind(struct tree *t, uint64_t ino)
{
	struct node *n = node_of(t, ino);
	int ret;

	if (!n)
		return -ESTALE;
	if (!n->row)
		ret = TREE_SCRATCH;
	else if (n->row->kind != PT_FILE)
		ret = n->row->kind == PT_LINK ? -ELOOP : -EISDIR;
	else if (n->row->format == PT_SPOOL)
		ret = n->row->content && saves_allowed(t, n->row) ? TREE_SPOOLED : TREE_STREAM;
	else
		ret = saves_allowed(t, n->row) ? TREE_API_RW : TREE_API_RO;
	node_put(n);
	return ret;
}

int tree_readlink(struct tree *t, uint64_t ino, struct buf *out)
{
	struct node *n = node_of(t, ino);
	int ret;

	if (!n)
		return -ESTALE;
	ret = n->row && n->row->kind == PT_LINK ? link_target(n->row, n->path, &n->vars, out)
						: -EINVAL;
	node_put(n);
	return ret;
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
	if (!n->row || n->row->format != PT_SPOOL) {
		ret = -EINVAL;
		goto out;
	}
	ret = get_row_resource(t, n->row, &n->vars, &ref);
	if (ret)
		goto out;
	struct resource *res = cache_ref_value(ref);
	*out = xcalloc(1, sizeof(**out));
	(*out)->ref = ref;
	(*out)->fd = res->spool_fd;
	(*out)->size = res->spool_size;
out:
	node_put(n);
	return ret;
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
