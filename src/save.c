/*
 * save - saving files (see "Saving" in tree.h).
 *
 * A save of a DSS file runs under its document's lock (one of DOC_LOCKS,
 * by the document's REST path): re-read, conflict check, PUT, cache
 * invalidation and the new base are one step, so two files of one document
 * saved at once (an IDE's "Save All" of recipe.json and payload.py) are
 * saved one after the other, each on top of the other's result.
 *
 * Bases.  What each process read of each file is kept by path (t->bases,
 * bounded), independent of inodes, so the kernel forgetting an inode does
 * not forget it.  A save is checked against what its own process read (or
 * the handle's snapshot, or the last read of its session), never against
 * what another reader read later.
 */
#include "tree_int.h"

#include "dssfs/cache.h"
#include "dssfs/escape.h"
#include "dssfs/http.h"
#include "dssfs/json.h"
#include "dssfs/log.h"
#include "dssfs/pathtab.h"
#include "dssfs/scratch.h"
#include "dssfs/strmap.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- validation --------------------------------------------------------- */

int utf8_valid(const unsigned char *s, size_t len)
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
	const char *why = doc_unfaithful(data, len, j);
	if (why) {
		log_error("%s: not saved: %s", path, why);
		cJSON_Delete(j);
		return -EINVAL;
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
	if (row->put_raw) /* a real file: any bytes */
		return 0;
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
	if (memchr(data, '\0', len) || !utf8_valid((const unsigned char *)data, len)) {
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

/* ---- bases -------------------------------------------------------------- */

#define BASES_PER_FILE 8
#define BASES_MAX 200000 /* files with bases; the oldest half goes beyond */

/* 32 bytes: a list of one entry is a 48-byte malloc chunk.  Process and
 * session ids are pid_t; stamps are compared modulo 2^32 (stamp_after),
 * and an entry 2^31 reads old is long gone (BASES_MAX). */
struct base_entry {
	int32_t tgid, sid;
	uint32_t uid;
	uint32_t stamp;
	struct tree_base b;
};

/* Grown as readers come (most files have one: a walk's): a base costs its
 * path and one entry. */
struct base_list {
	int n, cap;
	struct base_entry e[];
};

_Static_assert(sizeof(struct base_entry) == 32, "a base entry is 32 bytes");

static uint32_t base_clock; /* under t->lock */

static int stamp_after(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

void saves_init(struct tree *t)
{
	t->bases = strmap_new();
	for (int i = 0; i < DOC_LOCKS; i++)
		pthread_mutex_init(&t->doc_locks[i], NULL);
}

void saves_release(struct tree *t)
{
	strmap_free(t->bases, free);
	for (int i = 0; i < DOC_LOCKS; i++)
		pthread_mutex_destroy(&t->doc_locks[i]);
}

static int older_than(const char *key, void *value, void *ctx)
{
	struct base_list *l = value;
	uint32_t cut = *(uint32_t *)ctx;

	(void)key;
	for (int i = 0; i < l->n; i++)
		if (!stamp_after(cut, l->e[i].stamp))
			return 0;
	free(l);
	return 1;
}

void base_record(struct tree *t, const char *path, const struct tree_caller *who,
		 const struct tree_base *b)
{
	if (!who || !who->tgid)
		return;
	pthread_mutex_lock(&t->lock);
	struct base_list *l = strmap_get(t->bases, path);
	if (!l) {
		if (strmap_size(t->bases) >= BASES_MAX) {
			uint32_t cut = base_clock - BASES_MAX / 2;
			strmap_filter(t->bases, older_than, &cut);
		}
		l = xcalloc(1, sizeof(*l) + sizeof(l->e[0]));
		l->cap = 1;
		strmap_put(t->bases, path, l);
	}
	struct base_entry *e = NULL;
	for (int i = 0; i < l->n && !e; i++)
		if (l->e[i].tgid == who->tgid)
			e = &l->e[i];
	if (!e && l->n == l->cap && l->cap < BASES_PER_FILE) {
		l->cap = 2 * l->cap < BASES_PER_FILE ? 2 * l->cap : BASES_PER_FILE;
		l = xrealloc(l, sizeof(*l) + (size_t)l->cap * sizeof(l->e[0]));
		strmap_put(t->bases, path, l);
	}
	if (!e && l->n < l->cap)
		e = &l->e[l->n++];
	if (!e) { /* full: the oldest goes */
		e = &l->e[0];
		for (int i = 1; i < l->n; i++)
			if (stamp_after(e->stamp, l->e[i].stamp))
				e = &l->e[i];
	}
	e->tgid = (int32_t)who->tgid;
	e->sid = (int32_t)who->sid;
	e->uid = who->uid;
	e->b = *b;
	e->stamp = ++base_clock;
	pthread_mutex_unlock(&t->lock);
}

/* What caller's process read of path (1), else the last read of its
 * session (2), else nothing (0). */
static int base_find(struct tree *t, const char *path, const struct tree_caller *who,
		     struct tree_base *out)
{
	int found = 0;

	if (!who || !who->tgid)
		return 0;
	pthread_mutex_lock(&t->lock);
	struct base_list *l = strmap_get(t->bases, path);
	const struct base_entry *best = NULL;
	for (int i = 0; l && i < l->n; i++) {
		const struct base_entry *e = &l->e[i];
		if (e->tgid == who->tgid) {
			best = e;
			found = 1;
			break;
		}
		if (who->sid > 0 && e->sid == who->sid && e->uid == who->uid &&
		    (!best || stamp_after(e->stamp, best->stamp))) {
			best = e;
			found = 2;
		}
	}
	if (best)
		*out = best->b;
	pthread_mutex_unlock(&t->lock);
	return found;
}

/* ---- saving ------------------------------------------------------------- */

static pthread_mutex_t *doc_lock(struct tree *t, const char *key)
{
	return &t->doc_locks[hash64(key) % DOC_LOCKS];
}

/* The object the file of `row` belongs to: the file itself if it is named
 * by an object (a dashboard's <name>.json), else the nearest object folder
 * above it (a dataset's, a recipe's, a project's), or NULL. */
static const struct pt_row *object_row(const struct pt_row *row)
{
	for (const struct pt_row *r = row; r; r = pathtab_parent(r)) {
		const char *var;
		if (pathtab_leaf(r, &var, NULL) == PT_SEG_VAR)
			return r;
	}
	return NULL;
}

/* The folder path of the object folder `obj` holding the file at path. */
static void object_path(const char *path, const struct pt_row *row, const struct pt_row *obj,
			struct buf *out)
{
	size_t cut = strlen(path);

	for (const struct pt_row *r = row; r && r != obj; r = pathtab_parent(r))
		while (cut > 0 && path[--cut] != '/')
			;
	buf_add(out, path, cut);
}

/* Calls fn for every file row directly in object folder obj (through fixed
 * sub-folders, not listed ones), with the file's path if the kernel holds an
 * inode for it. */
static void for_each_object_file(struct tree *t, const struct pt_row *dir, const char *dir_path,
				 void (*fn)(struct tree *t, const struct pt_row *row,
					    const char *path, void *ctx),
				 void *ctx)
{
	const struct pt_row *kids[PT_MAX_CHILDREN];
	size_t nk = pathtab_children(dir, kids, PT_MAX_CHILDREN);
	struct buf p = BUF_INIT;

	for (size_t i = 0; i < nk; i++) {
		const char *text, *suffix;
		enum pt_seg seg = pathtab_leaf(kids[i], &text, &suffix);
		if (seg == PT_SEG_VAR || kids[i]->list)
			continue;
		if (kids[i]->kind == PT_DIR) {
			buf_reset(&p);
			buf_addf(&p, "%s/%s", dir_path, text);
			for_each_object_file(t, kids[i], p.data, fn, ctx);
			continue;
		}
		if (seg == PT_SEG_LITERAL) {
			buf_reset(&p);
			buf_addf(&p, "%s/%s", dir_path, text);
			fn(t, kids[i], p.data, ctx);
			continue;
		}
		/* a derived name: each value it can take */
		for (const struct pt_map *m = kids[i]->name_map; m; m++) {
			buf_reset(&p);
			buf_addf(&p, "%s/%s%s%s", dir_path, text, m->to, suffix);
			fn(t, kids[i], p.data, ctx);
			if (!m->from)
				break;
		}
	}
	buf_release(&p);
}

/* Calls fn for every file of the object whose file (named by the object:
 * <name>.md) is at path: the files of the same name and another suffix
 * beside it (<name>.json), with their paths. */
static void for_each_named_file(struct tree *t, const struct pt_row *row, const char *path,
				void (*fn)(struct tree *t, const struct pt_row *row,
					   const char *path, void *ctx),
				void *ctx)
{
	const struct pt_row *kids[PT_MAX_CHILDREN];
	size_t nk = pathtab_children(pathtab_parent(row), kids, PT_MAX_CHILDREN);
	const char *suffix, *ksuffix;
	size_t pl = strlen(path);
	struct buf p = BUF_INIT;

	pathtab_leaf(row, NULL, &suffix);
	if (pl < strlen(suffix))
		return;
	for (size_t i = 0; i < nk; i++) {
		if (kids[i]->kind != PT_FILE || pathtab_leaf(kids[i], NULL, &ksuffix) != PT_SEG_VAR)
			continue;
		buf_reset(&p);
		buf_add(&p, path, pl - strlen(suffix));
		buf_addstr(&p, ksuffix);
		fn(t, kids[i], p.data, ctx);
	}
	buf_release(&p);
}

struct drop_ctx {
	const struct pt_vars *vars;
	uint64_t inos[64];
	size_t n;
};

static void drop_file(struct tree *t, const struct pt_row *row, const char *path, void *vctx)
{
	struct drop_ctx *dc = vctx;
	const char *keys[] = {row->get, row->cond_get};
	struct buf key = BUF_INIT;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!keys[i] || row->format == PT_SPOOL)
			continue;
		buf_reset(&key);
		if (!pathtab_expand(keys[i], dc->vars, &key))
			cache_invalidate(t->cache, key.data);
	}
	buf_release(&key);
	uint64_t ino = ino_if_held(t, path);
	if (ino && dc->n < sizeof(dc->inos) / sizeof(dc->inos[0]))
		dc->inos[dc->n++] = ino;
}

/* The listings of the folders above path, from their own nodes (those the
 * kernel holds): where a folder repeats its parent (a project folder's
 * sub-folder) the variables of the saved file name only the nearest one,
 * and the listing of the folder above it, which names it, would stay. */
static void drop_held_listings(struct tree *t, const char *path)
{
	struct buf dir = BUF_INIT, key = BUF_INIT;
	char *slash;

	buf_addstr(&dir, path);
	while ((slash = strrchr(dir.data, '/')) && slash != dir.data) {
		buf_setlen(&dir, (size_t)(slash - dir.data));
		struct node *n = node_of(t, ino_if_held(t, dir.data));
		buf_reset(&key);
		if (n && n->row && n->row->list && !pathtab_expand(n->row->list, &n->vars, &key))
			cache_invalidate(t->cache, key.data);
		node_put(n);
	}
	buf_release(&key);
	buf_release(&dir);
}

/* After a save: forget every cached document of the object it touched (a
 * dataset's settings.json and metadata.json show the same custom metadata)
 * and the listings above it, whose items carry versionTags; collect the
 * inodes whose kernel cache must go. */
static void drop_object(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
			const char *path, struct drop_ctx *dc)
{
	const struct pt_row *obj = object_row(row);
	struct buf key = BUF_INIT, dir = BUF_INIT;

	dc->vars = vars;
	dc->n = 0;
	if (obj && obj->kind == PT_DIR) {
		object_path(path, row, obj, &dir);
		for_each_object_file(t, obj, dir.data, drop_file, dc);
	} else if (obj) {
		for_each_named_file(t, row, path, drop_file, dc);
	} else {
		drop_file(t, row, path, dc);
	}
	for (const struct pt_row *up = pathtab_parent(row); up; up = pathtab_parent(up)) {
		buf_reset(&key);
		if (up->list && !pathtab_expand(up->list, vars, &key))
			cache_invalidate(t->cache, key.data);
	}
	drop_held_listings(t, path);
	/* DSS commits each change to a project: its history (history/, and
	 * log.json, one document) has one more commit */
	const struct pt_row *history = pathtab_lister("commit");
	buf_reset(&key);
	if (history && history->list && !pathtab_expand(history->list, vars, &key))
		cache_invalidate(t->cache, key.data);
	buf_release(&key);
	buf_release(&dir);
}

/* The key where the row's versionTag sits inside the file's own JSON (NULL
 * if none). */
static const char *own_version_key(const struct pt_row *row)
{
	const char *v = row->version_at;
	size_t fl;

	if (!v || row->format != PT_JSON)
		return NULL;
	if (!row->field)
		return strchr(v, '.') ? NULL : v;
	fl = strlen(row->field);
	if (strncmp(v, row->field, fl) || v[fl] != '.' || strchr(v + fl + 1, '.'))
		return NULL;
	return v + fl + 1;
}

static void render_without(const cJSON *j, const char *key, struct buf *out)
{
	cJSON *copy = cJSON_Duplicate(j, 1);

	if (key && cJSON_IsObject(copy))
		cJSON_DeleteItemFromObjectCaseSensitive(copy, key);
	json_render(copy, out);
	cJSON_Delete(copy);
}

/* Whether DSS already holds what the writer wants: the same text, or the
 * same JSON value apart from the versionTag DSS stamps on every save (so a
 * save whose answer was lost, retried, is found done). */
static int holds(const struct pt_row *row, const struct resource *res, const struct buf *current,
		 const cJSON *parsed, const char *data, size_t len)
{
	if (current->len == len && !memcmp(current->data, data, len))
		return 1;
	if (row->format != PT_JSON || !parsed)
		return 0;
	const cJSON *part = json_get(res->json, row->field);
	struct buf a = BUF_INIT, b = BUF_INIT;
	int same;
	if (!part)
		return 0;
	render_without(parsed, own_version_key(row), &a);
	render_without(part, own_version_key(row), &b);
	same = a.len == b.len && !memcmp(a.data, b.data, a.len);
	buf_release(&a);
	buf_release(&b);
	return same;
}

/* The request body of a save: the file's JSON as is, or for a projection
 * the fresh document with that part replaced. */
static int save_body(const struct pt_row *row, const struct resource *res, cJSON **parsed,
		     const char *data, size_t len, const char *path, char **body, size_t *body_len);

/* The body as the endpoint takes it: as is, or wrapped ({"insight": ...}). */
static int wrapped_body(const struct pt_row *row, const struct resource *res, cJSON **parsed,
			const char *data, size_t len, const char *path, char **body,
			size_t *body_len)
{
	struct buf b = BUF_INIT;
	int ret;

	if (row->put_raw) {
		*body = xmalloc(len + 1);
		memcpy(*body, data, len);
		*body_len = len;
		return 0;
	}
	ret = save_body(row, res, parsed, data, len, path, body, body_len);

	if (ret || !row->put_wrap)
		return ret;
	/* The key comes from the table: a plain word, no escaping needed. */
	buf_addf(&b, "{\"%s\":", row->put_wrap);
	buf_add(&b, *body, *body_len);
	buf_addch(&b, '}');
	free(*body);
	*body = buf_detach(&b, body_len);
	return 0;
}

static int save_body(const struct pt_row *row, const struct resource *res, cJSON **parsed,
		     const char *data, size_t len, const char *path, char **body, size_t *body_len)
{
	cJSON *part = *parsed, *env;

	*body = NULL;
	if (!row->field) {
		*body = xstrndup(data, len);
		*body_len = len;
		return 0;
	}
	env = cJSON_Duplicate(res->json, 1);
	if (!part) {
		char *text = xstrndup(data, len);
		part = cJSON_CreateString(text);
		free(text);
	}
	*parsed = NULL;
	/* The field may be nested ("params.html"): its parent object is
	 * found by the path before the last dot. */
	const char *dot = strrchr(row->field, '.');
	char *up = dot ? xstrndup(row->field, (size_t)(dot - row->field)) : NULL;
	const char *key = dot ? dot + 1 : row->field;
	cJSON *parent = up ? (cJSON *)json_get(env, up) : env;
	free(up);
	if (!cJSON_IsObject(parent) || !part) {
		cJSON_Delete(part);
		cJSON_Delete(env);
		log_error("%s: not saved: DSS's document has an unexpected shape", path);
		return -EIO;
	}
	if (cJSON_HasObjectItem(parent, key))
		cJSON_ReplaceItemInObjectCaseSensitive(parent, key, part);
	else
		cJSON_AddItemToObject(parent, key, part);
	*body = cJSON_PrintUnformatted(env);
	cJSON_Delete(env);
	if (!*body)
		return -ENOMEM;
	*body_len = strlen(*body);
	return 0;
}

struct sibling_ctx {
	const struct pt_row *saved;
	const struct tree_caller *who;
	struct resource *before, *after;
	const struct cache_ref *after_ref;
};

/* A writer's own save changes the other files of the document it saved
 * (recipe.json's versionTag moves when payload.py is saved): if the writer
 * had read such a file as it was, it now has read it as it is, so saving
 * it next is not a conflict with itself. */
static void rebase_sibling(struct tree *t, const struct pt_row *row, const char *path, void *vctx)
{
	struct sibling_ctx *sc = vctx;
	const struct buf *was, *now;
	uint64_t was_hash, now_hash;
	struct tree_base b;

	if (row == sc->saved || !row->get || !sc->saved->get || strcmp(row->get, sc->saved->get) ||
	    base_find(t, path, sc->who, &b) != 1)
		return;
	if (render(sc->before, row, &was, &was_hash) || render(sc->after, row, &now, &now_hash))
		return;
	if (b.hash != was_hash)
		return;
	b.hash = now_hash;
	b.version = doc_version(row, sc->after_ref);
	base_record(t, path, sc->who, &b);
}

/* What a save is checked against: what the writer's process read, else
 * what the handle read, else the last read of its session. */
static void choose_base(struct tree *t, const char *path, const struct tree_caller *who,
			const struct tree_base *handle, struct tree_base *out)
{
	struct tree_base b = {-1, 0};
	int found = base_find(t, path, who, &b);

	if (found == 1 || (handle->version < 0 && !handle->hash && found))
		*out = b;
	else
		*out = *handle;
}

static int check_conflict(struct tree *t, const char *path, const struct tree_base *base,
			  int64_t now, uint64_t now_hash)
{
	if (t->opt.last_writer_wins)
		return 0;
	if ((base->version >= 0 && now != base->version) || (base->hash && now_hash != base->hash))
		atomic_fetch_add(&t->conflicts, 1);
	if (base->version >= 0 && now != base->version) {
		log_error(
		    "%s: not saved: it was changed on DSS since you read it (version %lld, now "
		    "%lld); read it again, or mount with -o last_writer_wins",
		    path, (long long)base->version, (long long)now);
		return -ESTALE;
	}
	if (base->hash && now_hash != base->hash) {
		log_error("%s: not saved: it was changed on DSS since you read it; read it again, "
			  "or mount with -o last_writer_wins",
			  path);
		return -ESTALE;
	}
	return 0;
}

/* The document part of a save, under the document's lock. */
static int save_locked(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		       const char *path, const char *get_key, const char *put_key, cJSON **parsed,
		       const char *data, size_t len, const struct tree_caller *who,
		       struct tree_base *base, struct drop_ctx *dc)
{
	struct cache_ref *ref = NULL, *after = NULL;
	struct buf resp = BUF_INIT;
	const struct buf *current;
	struct tree_base against;
	char *body = NULL;
	size_t body_len = 0;
	uint64_t now_hash;
	int ret;

	/* The conflict check and the read-modify-write need what DSS holds
	 * now: not what the cache remembers, nor a reader's fetch that began
	 * before this save (it may predate a colleague's change). */
	ret = cache_get_fresh(t->cache, get_key, fetch_resource, t, &ref);
	if (ret)
		goto out;
	struct resource *res = cache_ref_value(ref);
	if (res->unfaithful) {
		log_error("%s: not saved: %s", path, res->unfaithful);
		ret = -EACCES;
		goto out;
	}
	if ((ret = render(res, row, &current, &now_hash)))
		goto out;
	int64_t now = doc_version(row, ref);
	if (holds(row, res, current, *parsed, data, len)) {
		/* Nothing to send: editors rewrite unchanged files, and a save
		 * whose answer was lost is found done. */
		base->version = now;
		base->hash = now_hash;
		base_record(t, path, who, base);
		goto out;
	}
	choose_base(t, path, who, base, &against);
	if ((ret = check_conflict(t, path, &against, now, now_hash)))
		goto out;
	if ((ret = wrapped_body(row, res, parsed, data, len, path, &body, &body_len)))
		goto out;
	ret = http_request(t->http, row->put_method ? row->put_method : "PUT", put_key, body,
			   body_len, &resp);
	/* Even a failed PUT may have been applied (its answer lost): what is
	 * cached of the object is no longer known to be what DSS holds. */
	drop_object(t, row, vars, path, dc);
	if (ret)
		goto out;
	log_info("%s: saved", path);
	atomic_fetch_add(&t->saves, 1);
	/* What DSS now holds: what this writer's next save is checked
	 * against; the reads that follow reuse this fetch. */
	base->version = -1;
	base->hash = 0;
	if (!cache_get_fresh(t->cache, get_key, fetch_resource, t, &after) &&
	    !render(cache_ref_value(after), row, &current, &now_hash)) {
		base->version = doc_version(row, after);
		base->hash = now_hash;
		base_record(t, path, who, base);
		const struct pt_row *obj = object_row(row);
		struct sibling_ctx sc = {row, who, res, cache_ref_value(after), after};
		struct buf dir = BUF_INIT;
		if (obj && obj->kind == PT_DIR) {
			object_path(path, row, obj, &dir);
			for_each_object_file(t, obj, dir.data, rebase_sibling, &sc);
		} else if (obj) {
			for_each_named_file(t, row, path, rebase_sibling, &sc);
		}
		buf_release(&dir);
	}
out:
	cache_ref_put(ref);
	cache_ref_put(after);
	free(body);
	buf_release(&resp);
	return ret;
}

int save_file(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
	      const char *path, const char *data, size_t len, const struct tree_caller *who,
	      struct tree_base *base)
{
	struct buf get_key = BUF_INIT, put_key = BUF_INIT;
	struct drop_ctx dc = {0};
	cJSON *parsed = NULL;
	int ret;

	if (!saves_allowed(t, row))
		return t->opt.read_only ? -EROFS : -EACCES;
	ret = validate(row, path, data, len, &parsed);
	if (ret) {
		atomic_fetch_add(&t->save_failures, 1);
		return ret;
	}
	if ((ret = pathtab_expand(row->get, vars, &get_key)) ||
	    (ret = pathtab_expand(row->put, vars, &put_key)))
		goto out;
	pthread_mutex_t *lock = doc_lock(t, get_key.data);
	pthread_mutex_lock(lock);
	ret = save_locked(t, row, vars, path, get_key.data, put_key.data, &parsed, data, len, who,
			  base, &dc);
	pthread_mutex_unlock(lock);
	for (size_t i = 0; i < dc.n; i++)
		tree_changed(t, dc.inos[i]);
	if (ret && ret != -ESTALE)
		atomic_fetch_add(&t->save_failures, 1);
out:
	cJSON_Delete(parsed);
	buf_release(&get_key);
	buf_release(&put_key);
	return ret;
}

int tree_save(struct tree *t, uint64_t ino, const char *data, size_t len,
	      const struct tree_caller *who, struct tree_base *base)
{
	struct node *n = node_of(t, ino);
	int ret;

	if (!n)
		return -ESTALE;
	if (!n->row)
		ret = scratch_store(t->scratch, n->path, data, len, now_epoch_ms());
	else if (n->row->kind != PT_FILE)
		ret = -EISDIR;
	else
		ret = save_file(t, n->row, &n->vars, n->path, data, len, who, base);
	node_put(n);
	return ret;
}
