/*
 * lookahead - what a walk will need next, queued for the prefetch threads
 * (prefetch.h) after a listing: see "Prefetch" in tree.h.
 */
#include "tree_int.h"

#include "dssfs/cache.h"
#include "dssfs/log.h"
#include "dssfs/pathtab.h"
#include "dssfs/prefetch.h"

#include <stdlib.h>

/* A listing to expand once fetched: what its objects' folders hold. */
struct expansion {
	const struct pt_row *dir;
	struct pt_vars vars; /* values owned */
	int expand;	     /* 0: only fetched (an optional folder's listing) */
};

static void expansion_free(void *arg)
{
	struct expansion *e = arg;

	vars_release(&e->vars);
	free(e);
}

static void expand_list(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
			struct resource *res);

/* A prefetch job: fetch into the cache unless it is there already; for a
 * listing queued with an expansion, then queue what its objects hold. */
static void prefetch_run(void *ctx, const char *key, void *arg)
{
	struct tree *t = ctx;
	struct cache_ref *ref = NULL;
	struct expansion *e = arg;

	log_thread_quiet(1);
	if (cache_peek(t->cache, key, &ref) &&
	    !cache_get(t->cache, key, e && e->dir->optional ? fetch_optional : fetch_resource, t,
		       &ref))
		log_debug("prefetched %s", key);
	if (ref && e && e->expand)
		expand_list(t, e->dir, &e->vars, cache_ref_value(ref));
	cache_ref_put(ref);
}

void tree_start(struct tree *t)
{
	if (t->opt.prefetch_threads > 0 && !t->prefetch)
		t->prefetch =
		    prefetch_new(t->opt.prefetch_threads, 100000, prefetch_run, t, expansion_free);
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
			/* (an optional listing is fetched by fetch_optional) */
			if (expand_dir || (list_dir && list_dir->optional)) {
				e = xcalloc(1, sizeof(*e));
				e->dir = list_dir;
				e->expand = expand;
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
		queue_key(t, row->cond_get, vars, NULL, 0);
		/* A file that may not exist (script.py) is only fetched once
		 * the walk finds it there. */
		if (!row->cond_equals)
			queue_key(t, row->get, vars, NULL, 0);
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

	if (listing_in(t, res, dir, vars, &l))
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
