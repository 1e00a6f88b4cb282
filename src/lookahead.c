/*
 * lookahead - what a walk will need next, queued for the prefetch threads
 * (prefetch.h) after a listing: see "Prefetch" in tree.h.
 */
#include "tree_int.h"

#include "dssfs/cache.h"
#include "dssfs/http.h"
#include "dssfs/log.h"
#include "dssfs/pathtab.h"
#include "dssfs/prefetch.h"

#include <stdlib.h>
#include <string.h>

/* A listing, to expand once fetched: what its objects' folders hold. */
struct expansion {
	const struct pt_row *dir; /* the folder row it lists */
	struct pt_vars vars;	  /* values owned */
	int expand;		  /* 0: only fetched */
	int back;		  /* what it holds goes to the queue's tail */
};

static void expansion_free(void *arg)
{
	struct expansion *e = arg;

	vars_release(&e->vars);
	free(e);
}

static void expand_list(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
			struct resource *res);

/* What one listing queues (lookahead_begin .. lookahead_end, on this
 * thread): put at the head of the queue together, in listing order, so
 * that the prefetch threads follow a depth-first walk into what it listed
 * last.  Each end puts what was queued since the last one there: an inner
 * batch (the optional folders' listings, needed at once) goes first. */
static _Thread_local struct batch {
	int depth;
	int back; /* (lookahead_next) the batch goes to the tail instead */
	size_t n, cap;
	char **keys;
	void **args;
} batch;

void lookahead_begin(void)
{
	batch.depth++;
}

void lookahead_end(struct tree *t)
{
	int depth = --batch.depth, back = batch.back;

	if (batch.n && t->prefetch && back) {
		for (size_t i = 0; i < batch.n; i++)
			prefetch_add(t->prefetch, batch.keys[i], batch.args[i]);
	} else if (batch.n && t->prefetch) {
		prefetch_add_front(t->prefetch, batch.n, (const char *const *)batch.keys,
				   batch.args);
	}
	for (size_t i = 0; i < batch.n; i++)
		free(batch.keys[i]);
	free(batch.keys);
	free(batch.args);
	memset(&batch, 0, sizeof(batch));
	batch.depth = depth;
	batch.back = depth ? back : 0;
}

static void batch_add(struct tree *t, const char *key, void *arg)
{
	if (!batch.depth) {
		prefetch_add_front(t->prefetch, 1, &key, &arg);
		return;
	}
	if (batch.n == batch.cap) {
		batch.cap = batch.cap ? 2 * batch.cap : 64;
		batch.keys = xrealloc(batch.keys, batch.cap * sizeof(*batch.keys));
		batch.args = xrealloc(batch.args, batch.cap * sizeof(*batch.args));
	}
	batch.keys[batch.n] = xstrdup(key);
	batch.args[batch.n++] = arg;
}

/* A prefetch job: fetch into the cache unless it is there already; for a
 * listing queued with an expansion, then queue what its objects hold. */
static int prefetch_run(void *ctx, const char *key, void *arg)
{
	struct tree *t = ctx;
	struct cache_ref *ref = NULL;
	struct expansion *e = arg;
	int fetched = 0;

	log_thread_quiet(1);
	if (cache_peek(t->cache, key, &ref)) {
		struct list_fetch f = {t, e ? e->dir : NULL, e ? &e->vars : NULL,
				       e && e->dir->optional};
		fetched = 1;
		if (!(e ? cache_get_keep(t->cache, key, fetch_listing, &f, &ref, 1)
			: cache_get_ahead(t->cache, key, fetch_resource, t, &ref)))
			log_debug("prefetched %s", key);
	}
	if (ref && e && e->expand) {
		lookahead_begin();
		batch.back = e->back;
		expand_list(t, e->dir, &e->vars, cache_ref_value(ref));
		lookahead_end(t);
	}
	cache_ref_put(ref);
	return fetched;
}

static int prefetch_room(void *ctx)
{
	struct tree *t = ctx;

	return cache_ahead_room(t->cache);
}

static uint64_t server_pressure(void *ctx)
{
	struct tree *t = ctx;
	struct http_stats st;

	http_get_stats(t->http, &st);
	return st.overloaded;
}

static void room_freed(void *arg)
{
	prefetch_kick(arg);
}

static void fetched_by_reader(void *arg, const char *key)
{
	prefetch_forget(arg, key);
}

void tree_start(struct tree *t)
{
	if (t->opt.prefetch_threads > 0 && !t->prefetch) {
		t->prefetch =
		    prefetch_new(t->opt.prefetch_threads, 100000, prefetch_run, t, expansion_free);
		prefetch_set_pacing(t->prefetch, prefetch_room, server_pressure);
		cache_set_room_hook(t->cache, room_freed, fetched_by_reader, t->prefetch);
	}
}

/* Queues a resource unless cached.  With `expand_dir`, a listing: once
 * it is there (now, or when fetched), what its objects hold is queued too. */
static void queue_key(struct tree *t, const char *tmpl, const struct pt_vars *vars,
		      const struct pt_row *list_dir, int expand)
{
	const struct pt_row *expand_dir = expand ? list_dir : NULL;

	struct buf key = BUF_INIT;
	struct cache_ref *ref;

	if (tmpl && !pathtab_expand(tmpl, vars, &key)) {
		if (!cache_peek(t->cache, key.data, &ref)) {
			if (expand_dir)
				expand_list(t, expand_dir, vars, cache_ref_value(ref));
			cache_ref_put(ref);
		} else {
			struct expansion *e = NULL;
			/* (a listing is fetched by fetch_listing) */
			if (list_dir) {
				e = xcalloc(1, sizeof(*e));
				e->dir = list_dir;
				e->expand = expand;
				e->back = batch.back;
				vars_copy(&e->vars, vars);
			}
			batch_add(t, key.data, e);
		}
	}
	buf_release(&key);
}

/* The resources that reading a node of this row takes; a listing is
 * expanded one level if `expand`. */
static void queue_row(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		      int expand)
{
	if (row->format == PT_SPOOL || row->hidden || (row->activity && !t->opt.list_activity))
		return; /* only fetched when asked for by name */
	if ((row->admin && atomic_load(&t->admin) != 1) || row->kind == PT_LINK)
		return; /* not there for this key; a link needs nothing */
	if (row->kind == PT_FILE) {
		queue_key(t, row->cond_get, vars, NULL, 0);
		/* A file that may not exist (script.py) is only fetched once
		 * the walk finds it there. */
		if (!row->cond_equals)
			queue_key(t, row->get, vars, NULL, 0);
	} else if (row->cond_get) {
		/* A folder that may not exist (a plugin's files/) is only
		 * listed once the walk finds it there. */
		queue_key(t, row->cond_get, vars, NULL, 0);
	} else if (row->list || row->recurse) {
		const struct pt_row *src = row->recurse ? pathtab_parent(row) : row;
		queue_key(t, src->list, vars, row, expand);
	}
}

/* For each object of a listing, queues its files or the resources of its
 * folder's files (a dataset's five documents), without going further. */
static void expand_list(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
			struct resource *res)
{
	const struct pt_row *kids[PT_MAX_CHILDREN], *grand[PT_MAX_CHILDREN];
	size_t nk = pathtab_children(dir, kids, PT_MAX_CHILDREN);
	const struct listing *l;

	/* (a file tree's list holds files, not objects with folders) */
	if (dir->content || listing_in(t, res, dir, vars, &l))
		return;
	for (size_t j = 0; j < listing_count(l); j++) {
		for (size_t i = 0; i < nk; i++) {
			struct pt_vars v = *vars;
			const char *var;
			if (pathtab_leaf(kids[i], &var, NULL) != PT_SEG_VAR || kids[i]->list ||
			    kids[i]->recurse || pt_vars_set(&v, var, listing_at(l, j)->id))
				continue;
			if (kids[i]->kind == PT_FILE)
				queue_row(t, kids[i], &v, 0);
			size_t ng = pathtab_children(kids[i], grand, PT_MAX_CHILDREN);
			for (size_t g = 0; g < ng; g++)
				queue_row(t, grand[g], &v, 0);
		}
	}
}

void lookahead_key(struct tree *t, const char *tmpl, const struct pt_vars *vars)
{
	if (t->prefetch)
		queue_key(t, tmpl, vars, NULL, 0);
}

void lookahead_child(struct tree *t, const struct pt_row *row, const struct pt_vars *vars)
{
	if (!t->prefetch)
		return;
	/* A listing among the entries (a project's datasets/) is expanded:
	 * the walk goes there next.  Deeper listings are not, so what is
	 * queued stays within one folder's subtree. */
	queue_row(t, row, vars, 1);
	if (row->kind == PT_DIR && !row->list && !row->recurse) {
		const struct pt_row *kids[PT_MAX_CHILDREN];
		size_t nk = pathtab_children(row, kids, PT_MAX_CHILDREN);
		for (size_t i = 0; i < nk; i++)
			queue_row(t, kids[i], vars, 0);
	}
}

void lookahead_next(struct tree *t, const struct node *dir)
{
	const struct pt_row *row = dir->row, *parent, *kids[PT_MAX_CHILDREN];
	const char *var, *id;
	struct cache_ref *ref;
	const struct listing *l;
	struct buf key = BUF_INIT;
	size_t nk, i;

	if (!t->prefetch || !row || !(parent = pathtab_parent(row)) || !parent->list ||
	    parent->content || parent->over || parent->nest ||
	    pathtab_leaf(row, &var, NULL) != PT_SEG_VAR || !(id = pt_vars_get(&dir->vars, var)))
		return;
	nk = pathtab_children(row, kids, PT_MAX_CHILDREN);
	for (i = 0; i < nk && (!kids[i]->list || (kids[i]->activity && !t->opt.list_activity)); i++)
		;
	if (i == nk)
		return; /* a folder of files: queued with its siblings already */
	/* the parent's listing, only if it is at hand (the walk just read it) */
	if (pathtab_expand(parent->list, &dir->vars, &key) ||
	    cache_peek(t->cache, key.data, &ref)) {
		buf_release(&key);
		return;
	}
	buf_release(&key);
	if (!listing_in(t, cache_ref_value(ref), parent, &dir->vars, &l)) {
		const struct listing_entry *e = listing_find_id(l, id);
		/* (a listing's entries are one array: listing_at) */
		size_t at = e ? (size_t)(e - listing_at(l, 0)) + 1 : listing_count(l);
		struct pt_vars v = dir->vars;
		if (at < listing_count(l) && !pt_vars_set(&v, var, listing_at(l, at)->id)) {
			lookahead_begin();
			batch.back = 1;
			/* (an optional folder's listing is fetched as such:
			 * a 404 only hides it) */
			for (i = 0; i < nk; i++)
				lookahead_child(t, kids[i], &v);
			lookahead_end(t);
		}
	}
	cache_ref_put(ref);
}
