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
#include <time.h>

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
	/* (key NULL: the item is a string, its own id) */
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

/* One item of a list as build() reads it: the strings borrowed from the
 * parsed list, or owned (a scanned list: raw_items_release frees them). */
struct raw_item {
	const char *id;	  /* the child variable's value; NULL or unusable: skipped */
	const char *name; /* the name it shows, NULL: its id */
	int64_t mtime_ms;
	int nested;
	const char *over; /* a union's (borrowed) */
};

struct raw_items {
	struct raw_item *v;
	size_t n, cap;
	int owned;
};

static void raw_items_release(struct raw_items *r)
{
	for (size_t i = 0; r->owned && i < r->n; i++) {
		free((char *)r->v[i].id);
		free((char *)r->v[i].name);
	}
	free(r->v);
	memset(r, 0, sizeof(*r));
}

/* The digits of s[0..n) as a number, or -1 if one is not a digit. */
static int digits(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* An ISO 8601 UTC time as DSS writes it, "2024-10-01T16:46:00.118Z" (the
 * milliseconds optional), in epoch ms; -1 for anything else. */
static int64_t iso_ms(const char *s)
{
	struct tm tm = {0};
	int ms = 0;

	if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':')
		return -1;
	tm.tm_year = digits(s, 4) - 1900;
	tm.tm_mon = digits(s + 5, 2) - 1;
	tm.tm_mday = digits(s + 8, 2);
	tm.tm_hour = digits(s + 11, 2);
	tm.tm_min = digits(s + 14, 2);
	tm.tm_sec = digits(s + 17, 2);
	s += 19;
	if (*s == '.') {
		/* (digits stops at the first non-digit: never past the end) */
		if ((ms = digits(s + 1, 3)) < 0)
			return -1;
		s += 4;
	}
	if (strcmp(s, "Z") || tm.tm_year < 70 || tm.tm_mon < 0 || tm.tm_mon > 11 ||
	    tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 ||
	    tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 || tm.tm_sec > 60 || ms < 0)
		return -1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

/* The time of an item (pathtab.h, `time_at`), or -1. */
static int64_t item_time(const struct pt_row *src, const cJSON *item)
{
	const char *at = src->time_at ? src->time_at : "versionTag.lastModifiedOn";
	const cJSON *v = json_get(item, at);

	return cJSON_IsString(v) ? iso_ms(v->valuestring) : json_get_int64(item, at, -1);
}

/* Adds an item of src's list whose id (list_item_name) is `id`. */
static void raw_add(struct raw_items *r, const struct pt_row *src, const cJSON *item,
		    const char *id, const struct names *nm, const char *over)
{
	const char *name, *cond;
	struct raw_item *ri;

	if (src->list_if && (!(cond = json_get_string(item, src->list_if)) ||
			     strcmp(cond, src->list_if_equals) != 0))
		return; /* not an item of this folder */
	name = usable(id) ? item_name(src, item, id, nm) : NULL;
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 16;
		r->v = xrealloc(r->v, r->cap * sizeof(*r->v));
	}
	ri = &r->v[r->n++];
	if (name == id)
		name = NULL;
	ri->id = id && r->owned ? xstrdup(id) : id;
	ri->name = name && r->owned ? xstrdup(name) : name;
	ri->mtime_ms = item_time(src, item);
	ri->nested = src->nest && cJSON_GetArraySize(json_get(item, src->nest)) > 0;
	ri->over = over;
}

/* Adds the items of a parsed list (borrowed: r->owned is 0). */
static void raw_add_list(struct raw_items *r, const struct pt_row *src, const cJSON *list,
			 const struct names *nm, const char *over)
{
	const cJSON *item;

	cJSON_ArrayForEach(item, list)
	{
		raw_add(r, src, item, list_item_name(list, item, src->list_key), nm, over);
	}
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct listing_entry *)a)->base,
		      ((const struct listing_entry *)b)->base);
}

/* A listing of the items in r. */
static struct listing *build(const struct pt_row *src, const char *under, const struct raw_items *r)
{
	struct listing *l = xcalloc(1, sizeof(*l));
	struct strmap *seen = strmap_new(); /* name -> how many items take it */
	struct buf base = BUF_INIT, raw = BUF_INIT;
	size_t cap = 0;

	l->src = src;
	l->under = under ? xstrdup(under) : NULL;
	l->by_base = strmap_new();
	l->by_id = strmap_new();
	for (size_t i = 0; i < r->n; i++) {
		const struct raw_item *ri = &r->v[i];
		if (!usable(ri->id))
			continue;
		const char *name = ri->name ? ri->name : ri->id;
		strmap_put(seen, name, (void *)((uintptr_t)strmap_get(seen, name) + 1));
	}
	for (size_t i = 0; i < r->n && !(src->list_max && l->n == src->list_max); i++) {
		const struct raw_item *ri = &r->v[i];
		const char *id = ri->id;
		if (!usable(id)) {
			log_warn("%s: skipping a listed object without a usable \"%s\" (not a "
				 "valid name)",
				 src->pattern, src->list_key ? src->list_key : "id");
			continue;
		}
		const char *name = ri->name ? ri->name : id;
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
		e->base = xstrdup(base.data);
		e->id = xstrdup(id); /* (the document may go: listing_compact) */
		e->over = ri->over;
		e->mtime_ms = ri->mtime_ms;
		e->nested = ri->nested;
		/* (taken; the values are set below, once l->e no longer moves) */
		strmap_put(l->by_base, e->base, e);
		strmap_put(l->by_id, e->id, e);
	}
	/* In name order (bytes): the order `ls`, `rsync` and tar's readdir
	 * then read them in, which the prefetch follows too (expand_list, in
	 * listing order); in DSS's order, `ls -lR` of 2,000 datasets named
	 * ds_0..ds_1999 read ds_10, ds_100, ds_1000 while the prefetch had
	 * filled its room with ds_2 onwards, and waited for each file. */
	if (l->n > 1)
		qsort(l->e, l->n, sizeof(*l->e), entry_cmp);
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
	struct raw_items r = {0};
	raw_add_list(&r, src, items, &nm, NULL);
	made = build(src, under, &r);
	raw_items_release(&r);
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

/* json_scan_list's fn for listing_scan: each item's fields, copied. */
struct scan_ctx {
	const struct pt_row *src;
	struct raw_items items;
};

static int scan_item(const char *key, const cJSON *item, void *ctx)
{
	struct scan_ctx *c = ctx;
	struct names none = {0};

	/* (list_item_name: an object's members are named by their keys) */
	raw_add(&c->items, c->src, item, key ? key : json_get_string(item, c->src->list_key), &none,
		NULL);
	return 0;
}

struct listing *listing_scan(const struct pt_row *dir, const char *text, size_t len, size_t *bytes)
{
	struct scan_ctx c = {dir, {.owned = 1}};
	struct listing *l = NULL;

	if (dir->recurse || !pathtab_list_only(dir) || !dir->list)
		return NULL;
	if (!json_scan_list(text, len, dir->list_at, scan_item, &c)) {
		l = build(dir, NULL, &c.items);
		*bytes = listing_bytes(l);
	}
	raw_items_release(&c.items);
	return l;
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
	struct raw_items items = {0};
	struct names none = {0};
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
			refs[nl++] = r;
			const cJSON *list =
			    items_of(src, NULL, ((struct resource *)cache_ref_value(r))->json);
			if (!cJSON_IsArray(list) && !cJSON_IsObject(list)) {
				log_error("%s: DSS's list is not an array", src->pattern);
				ret = -EIO;
			} else {
				raw_add_list(&items, src, list, &none, listing_at(ol, j)->id);
			}
		}
	}
	if (ret) {
		for (size_t i = 0; i < nl; i++)
			cache_ref_put(refs[i]);
		free(refs);
		cache_ref_put(oref);
	} else {
		u = build(src, NULL, &items);
		u->outer = oref;
		u->refs = refs;
		u->nrefs = nl;
		*out = u;
	}
	raw_items_release(&items);
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
