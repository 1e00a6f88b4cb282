/*
 * listing - the children of a listed folder: which file name each object of
 * a DSS listing takes, built once per fetched listing (see tree_int.h).
 */
#include "tree_int.h"

#include "dssfs/cache.h"
#include "dssfs/escape.h"
#include "dssfs/json.h"
#include "dssfs/log.h"
#include "dssfs/strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct listing {
	struct listing *next;
	const struct pt_row *src; /* the row whose list it is */
	char *under;		  /* the item whose sub-items it holds, or NULL */
	/* a union of lists (`over`): made for one use, holding the lists it
	 * borrows from */
	struct cache_ref *outer;
	struct cache_ref **refs;
	size_t nrefs;
	size_t n;
	struct listing_entry *e;
	struct strmap *by_base; /* escaped name -> entry */
	struct strmap *by_id;	/* id -> entry */
};

void listings_free(struct listing *l)
{
	while (l) {
		struct listing *next = l->next;
		for (size_t i = 0; i < l->n; i++) {
			free((char *)l->e[i].base);
			free((char *)l->e[i].id);
		}
		free(l->e);
		free(l->under);
		for (size_t i = 0; i < l->nrefs; i++)
			cache_ref_put(l->refs[i]);
		free(l->refs);
		cache_ref_put(l->outer);
		strmap_free(l->by_base, NULL);
		strmap_free(l->by_id, NULL);
		free(l);
		l = next;
	}
}

const char *list_item_name(const cJSON *list, const cJSON *item, const char *key)
{
	return cJSON_IsObject(list) ? item->string : json_get_string(item, key);
}

static int usable(const char *s)
{
	return s && *s && utf8_valid((const unsigned char *)s, strlen(s));
}

/* The row whose list a folder of row `dir` shows, and the item whose
 * sub-items it shows (a nested folder: a wiki article's children). */
static const struct pt_row *list_source(const struct pt_row *dir, const struct pt_vars *vars,
					const char **under)
{
	const char *var;

	*under = NULL;
	if (!dir->recurse)
		return dir;
	pathtab_leaf(dir, &var, NULL);
	*under = pt_vars_get(vars, var);
	return pathtab_parent(dir);
}

/* The sub-items of the item `id` anywhere in the nested list `items`. */
static const cJSON *sub_items(const struct pt_row *src, const cJSON *items, const char *id)
{
	const cJSON *item;

	cJSON_ArrayForEach(item, items)
	{
		const cJSON *kids = json_get(item, src->nest);
		const char *k = json_get_string(item, src->list_key);
		if (k && !strcmp(k, id))
			return kids;
		if (cJSON_IsArray(kids) && (kids = sub_items(src, kids, id)))
			return kids;
	}
	return NULL;
}

/* The items a listing shows. */
static const cJSON *items_of(const struct pt_row *src, const char *under, const cJSON *doc)
{
	const cJSON *list = json_get(doc, src->list_at);

	if (under)
		list = cJSON_IsArray(list) ? sub_items(src, list, under) : NULL;
	return list;
}

/* Names taken from each item's own document (name_get): fetched before the
 * listing is built, all at once when prefetch is on. */
struct names {
	size_t n;
	char **id, **name;
};

static void names_release(struct names *nm)
{
	for (size_t i = 0; i < nm->n; i++) {
		free(nm->id[i]);
		free(nm->name[i]);
	}
	free(nm->id);
	free(nm->name);
}

static int fetch_names(struct tree *t, const struct pt_row *src, const struct pt_vars *vars,
		       const cJSON *items, struct names *nm)
{
	const struct pt_row *kids[PT_MAX_CHILDREN];
	const char *var = NULL;
	const cJSON *item;
	size_t cap = 0;
	int ret = 0;

	memset(nm, 0, sizeof(*nm));
	if (!src->name_get)
		return 0;
	size_t nk = pathtab_children(src, kids, PT_MAX_CHILDREN);
	for (size_t i = 0; i < nk && !var; i++)
		if (pathtab_leaf(kids[i], &var, NULL) != PT_SEG_VAR)
			var = NULL;
	if (!var)
		return -EIO;
	for (int pass = 0; pass < 2 && !ret; pass++) {
		if (pass == 1)
			lookahead_end(t);
		else
			lookahead_begin();
		cJSON_ArrayForEach(item, items)
		{
			const char *id = list_item_name(items, item, src->list_key);
			struct pt_vars v = *vars;
			if (!usable(id) || pt_vars_set(&v, var, id))
				continue;
			if (pass == 0) { /* ask for them together */
				lookahead_key(t, src->name_get, &v);
				continue;
			}
			struct cache_ref *ref = NULL;
			ret = get_resource(t, src->name_get, &v, &ref);
			if (ret)
				break;
			const char *name = json_get_string(
			    ((struct resource *)cache_ref_value(ref))->json, src->name_field);
			if (nm->n == cap) {
				cap = cap ? 2 * cap : 16;
				nm->id = xrealloc(nm->id, cap * sizeof(*nm->id));
				nm->name = xrealloc(nm->name, cap * sizeof(*nm->name));
			}
			nm->id[nm->n] = xstrdup(id);
			nm->name[nm->n++] = name ? xstrdup(name) : NULL;
			cache_ref_put(ref);
		}
	}
	if (ret)
		names_release(nm);
	return ret;
}

/* The name an item shows: its name_key field, or the name fetched for it,
 * else its id. */
static const char *item_name(const struct pt_row *src, const cJSON *item, const char *id,
			     const struct names *nm)
{
	const char *name = src->name_key ? json_get_string(item, src->name_key) : NULL;

	for (size_t i = 0; !name && i < nm->n; i++)
		if (!strcmp(nm->id[i], id))
			name = nm->name[i];
	return usable(name) ? name : id;
}

/* A listing of the items of n lists; overs[k] (if overs) is the value of
 * the `over` variable for the items of lists[k]. */
static struct listing *build(const struct pt_row *src, const char *under, const cJSON **lists,
			     const char **overs, size_t n, const struct names *nm)
{
	struct listing *l = xcalloc(1, sizeof(*l));
	struct strmap *seen = strmap_new(); /* name -> how many items take it */
	struct buf base = BUF_INIT, raw = BUF_INIT;
	const cJSON *item, *list;
	size_t cap = 0;

	l->src = src;
	l->under = under ? xstrdup(under) : NULL;
	l->by_base = strmap_new();
	l->by_id = strmap_new();
	for (size_t k = 0; k < n; k++)
		cJSON_ArrayForEach(item, lists[k])
		{
			list = lists[k];
			const char *id = list_item_name(list, item, src->list_key);
			if (!usable(id))
				continue;
			const char *name = item_name(src, item, id, nm);
			strmap_put(seen, name, (void *)((uintptr_t)strmap_get(seen, name) + 1));
		}
	for (size_t k = 0; k < n; k++)
		cJSON_ArrayForEach(item, lists[k])
		{
			list = lists[k];
			const char *id = list_item_name(list, item, src->list_key);
			if (!usable(id)) {
				log_warn(
				    "%s: skipping a listed object without a usable \"%s\" (not a "
				    "valid name)",
				    src->pattern, src->list_key);
				continue;
			}
			const char *name = item_name(src, item, id, nm);
			buf_reset(&raw);
			buf_reset(&base);
			buf_addstr(&raw, name);
			/* Objects sharing a name (dashboards are named freely) are
			 * told apart by their ids. */
			if ((uintptr_t)strmap_get(seen, name) > 1)
				buf_addf(&raw, "~%s", id);
			if (escape_name(raw.data, &base))
				continue;
			if (strmap_get(l->by_base, base.data) || strmap_get(l->by_id, id)) {
				log_warn("%s: skipping the listed object \"%s\": its name is taken",
					 src->pattern, id);
				continue;
			}
			if (l->n == cap) {
				cap = cap ? 2 * cap : 16;
				l->e = xrealloc(l->e, cap * sizeof(*l->e));
			}
			struct listing_entry *e = &l->e[l->n++];
			const cJSON *kids = src->nest ? json_get(item, src->nest) : NULL;
			e->base = xstrdup(base.data);
			e->id = xstrdup(id); /* (the document may go: listing_compact) */
			e->over = overs ? overs[k] : NULL;
			e->mtime_ms = json_get_int64(item, "versionTag.lastModifiedOn", -1);
			e->nested = cJSON_GetArraySize(kids) > 0;
			/* (taken; the values are set below, once l->e no longer moves) */
			strmap_put(l->by_base, e->base, e);
			strmap_put(l->by_id, e->id, e);
		}
	for (size_t i = 0; i < l->n; i++) {
		strmap_put(l->by_base, l->e[i].base, &l->e[i]);
		strmap_put(l->by_id, l->e[i].id, &l->e[i]);
	}
	strmap_free(seen, NULL);
	buf_release(&raw);
	buf_release(&base);
	return l;
}

static struct listing *find_built(struct resource *res, const struct pt_row *src, const char *under)
{
	struct listing *l;

	for (l = res->listings; l; l = l->next)
		if (l->src == src && (under ? l->under && !strcmp(l->under, under) : !l->under))
			break;
	return l;
}

int listing_in(struct tree *t, struct resource *res, const struct pt_row *dir,
	       const struct pt_vars *vars, const struct listing **out)
{
	const char *under;
	const struct pt_row *src = list_source(dir, vars, &under);
	struct listing *l, *made = NULL;
	struct names nm;
	int ret;

	*out = NULL;
	if (!src->list || src->over)
		return -EIO;
	pthread_mutex_lock(&res->lock);
	l = find_built(res, src, under);
	pthread_mutex_unlock(&res->lock);
	if ((*out = l))
		return 0;
	if (!res->json) /* (compacted for another folder: never, see listing_compact) */
		return -EIO;
	const cJSON *items = items_of(src, under, res->json);
	if (!cJSON_IsArray(items) && !cJSON_IsObject(items)) {
		/* (a nested folder whose item is gone from the list) */
		if (under)
			return -ENOENT;
		log_error("%s: DSS's list is not an array", src->pattern);
		return -EIO;
	}
	/* Names from other documents are fetched without the lock. */
	if ((ret = fetch_names(t, src, vars, items, &nm)))
		return ret;
	made = build(src, under, &items, NULL, 1, &nm);
	names_release(&nm);
	pthread_mutex_lock(&res->lock);
	l = find_built(res, src, under);
	if (!l) {
		made->next = res->listings;
		res->listings = l = made;
		made = NULL;
	}
	pthread_mutex_unlock(&res->lock);
	listings_free(made);
	*out = l;
	return 0;
}

/* What a built listing takes in memory, roughly: its entries, their
 * strings and its two indexes. */
static size_t listing_bytes(const struct listing *l)
{
	size_t bytes = sizeof(*l) + l->n * sizeof(*l->e) + strmap_overhead(l->by_base) +
		       strmap_overhead(l->by_id);

	/* each string twice: the entry's copy and the index's key */
	for (size_t i = 0; i < l->n; i++)
		bytes += 2 * (strlen(l->e[i].base) + strlen(l->e[i].id) + 2 + 16);
	return bytes;
}

void listing_compact(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
		     struct resource *res, size_t *cost)
{
	const struct listing *l;

	if (dir->recurse || !pathtab_list_only(dir) || !res->json ||
	    listing_in(t, res, dir, vars, &l))
		return;
	cJSON_Delete(res->json);
	res->json = NULL;
	*cost = sizeof(*res) + 256 + listing_bytes(l);
}

/* The union of the lists of every object of the folder that lists the
 * `over` variable (every dataset's statistics worksheets): one list each,
 * asked for together; a list DSS does not have (404: the object went, or
 * this DSS has no such type) holds nothing. */
static int union_get(struct tree *t, const struct pt_row *src, const struct pt_vars *vars,
		     const struct listing **out)
{
	const struct pt_row *lister = pathtab_lister(src->over);
	const struct listing *ol;
	struct cache_ref *oref = NULL;
	struct listing *u;
	int ret;

	if (!lister)
		return -EIO;
	if ((ret = listing_get(t, lister, vars, &oref, &ol)))
		return ret;
	size_t n = listing_count(ol), nl = 0;
	const cJSON **lists = xcalloc(n + 1, sizeof(*lists));
	const char **overs = xcalloc(n + 1, sizeof(*overs));
	struct cache_ref **refs = xcalloc(n + 1, sizeof(*refs));
	for (int pass = 0; pass < 2 && !ret; pass++) {
		if (pass == 1)
			lookahead_end(t);
		else
			lookahead_begin();
		for (size_t j = 0; j < n && !ret; j++) {
			struct pt_vars v = *vars;
			struct cache_ref *r = NULL;
			if (pt_vars_set(&v, src->over, listing_at(ol, j)->id))
				continue;
			if (pass == 0) { /* ask for them together */
				lookahead_key(t, src->list, &v);
				continue;
			}
			ret = get_listing(t, src, &v, &r);
			if (ret == -ENOENT) {
				ret = 0;
				continue;
			}
			if (ret)
				break;
			refs[nl] = r;
			lists[nl] =
			    items_of(src, NULL, ((struct resource *)cache_ref_value(r))->json);
			overs[nl] = listing_at(ol, j)->id;
			if (!cJSON_IsArray(lists[nl]) && !cJSON_IsObject(lists[nl])) {
				log_error("%s: DSS's list is not an array", src->pattern);
				ret = -EIO;
			}
			nl++;
		}
	}
	if (ret) {
		for (size_t i = 0; i < nl; i++)
			cache_ref_put(refs[i]);
		free(refs);
		cache_ref_put(oref);
	} else {
		struct names none = {0};
		u = build(src, NULL, lists, overs, nl, &none);
		u->outer = oref;
		u->refs = refs;
		u->nrefs = nl;
		*out = u;
	}
	free(lists);
	free(overs);
	return ret;
}

void listing_put(struct cache_ref *ref, const struct listing *l)
{
	if (l && l->outer)
		listings_free((struct listing *)l);
	cache_ref_put(ref);
}

int listing_get(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
		struct cache_ref **ref, const struct listing **out)
{
	const char *under;
	const struct pt_row *src = list_source(dir, vars, &under);
	int ret;

	*out = NULL;
	*ref = NULL;
	if (!src->list)
		return -ENOTDIR;
	if (src->over)
		return union_get(t, src, vars, out);
	ret = get_listing(t, src, vars, ref);
	if (!ret && (ret = listing_in(t, cache_ref_value(*ref), dir, vars, out))) {
		cache_ref_put(*ref);
		*ref = NULL;
	}
	return ret;
}

size_t listing_count(const struct listing *l)
{
	return l->n;
}

const struct listing_entry *listing_at(const struct listing *l, size_t i)
{
	return &l->e[i];
}

const struct listing_entry *listing_find(const struct listing *l, const char *base)
{
	return strmap_get(l->by_base, base);
}

const struct listing_entry *listing_find_id(const struct listing *l, const char *id)
{
	return strmap_get(l->by_id, id);
}
