/*
 * contents - folders of real files rather than DSS objects (pathtab.h's
 * PT_TREE and PT_FLAT rows): the project library, a managed folder's files.
 *
 * A file tree is shown from one list resource (the library's tree, the
 * managed folder's flat list), indexed once per fetch (struct content, kept
 * with the resource).  A node in it has the tree's folder or file row and,
 * in the variable of their {path} segment, its path in the tree ("a/b.py").
 * Files are read and saved through their row's endpoints like any file;
 * the changes of the tree itself (new files and folders, removals,
 * renames) are here, each one request (two for a rename across folders
 * that also changes the name), after which the list is fetched again.
 * Names are the files' own: no escaping; a name that cannot be a file name
 * ('/', ".", "..", not UTF-8, too long) is skipped and logged.
 */
#include "tree_int.h"

#include "dssfs/cache.h"
#include "dssfs/escape.h"
#include "dssfs/http.h"
#include "dssfs/json.h"
#include "dssfs/log.h"
#include "dssfs/strmap.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct centry {
	char *path;	  /* in the tree; "" for its top */
	const char *name; /* the last segment of path */
	int dir;
	int64_t size;	  /* -1: not in the list (the library's tree has none) */
	int64_t mtime_ms; /* -1: not in the list */
	struct centry **kids;
	size_t nkids, cap;
};

struct content {
	struct strmap *by_path; /* path -> struct centry */
	struct centry *top;
};

static void entry_free(void *v)
{
	struct centry *e = v;

	free(e->path);
	free(e->kids);
	free(e);
}

void content_free(struct content *c)
{
	if (!c)
		return;
	strmap_free(c->by_path, entry_free);
	free(c);
}

static struct centry *entry_new(struct content *c, struct centry *up, const char *name, int dir)
{
	struct centry *e = xcalloc(1, sizeof(*e));

	e->path = up && *up->path ? xasprintf("%s/%s", up->path, name) : xstrdup(name);
	e->name = strrchr(e->path, '/') ? strrchr(e->path, '/') + 1 : e->path;
	e->dir = dir;
	e->size = e->mtime_ms = -1;
	strmap_put(c->by_path, e->path, e);
	if (up) {
		if (up->nkids == up->cap) {
			up->cap = up->cap ? 2 * up->cap : 8;
			up->kids = xrealloc(up->kids, up->cap * sizeof(*up->kids));
		}
		up->kids[up->nkids++] = e;
	}
	return e;
}

/* Whether DSS's name can be a file name as it is. */
static int name_ok(const char *name, size_t len)
{
	return len > 0 && len <= NAME_MAX_BYTES && !memchr(name, '/', len) &&
	       !(len == 1 && name[0] == '.') && !(len == 2 && !memcmp(name, "..", 2)) &&
	       utf8_valid((const unsigned char *)name, len);
}

/* The child `name` of up, made as a folder or file if new; NULL if a child
 * of the other kind has that name. */
static struct centry *child_of(struct content *c, struct centry *up, const char *name, int dir)
{
	char *path = *up->path ? xasprintf("%s/%s", up->path, name) : xstrdup(name);
	struct centry *e = strmap_get(c->by_path, path);

	free(path);
	if (e)
		return e->dir == dir ? e : NULL;
	return entry_new(c, up, name, dir);
}

static void add_tree(struct content *c, struct centry *up, const cJSON *nodes, const char *where)
{
	const cJSON *n;

	cJSON_ArrayForEach(n, nodes)
	{
		const char *name = json_get_string(n, "name");
		const cJSON *kids = json_get(n, "children");
		struct centry *e;
		if (!name || !name_ok(name, strlen(name)) ||
		    !(e = child_of(c, up, name, cJSON_IsArray(kids)))) {
			log_warn(
			    "%s: skipping an entry that cannot be a file name (or named twice)",
			    where);
			continue;
		}
		e->mtime_ms = json_get_int64(n, "lastModified", -1);
		e->size = json_get_int64(n, "size", -1);
		if (cJSON_IsArray(kids))
			add_tree(c, e, kids, where);
	}
}

static void add_flat(struct content *c, const cJSON *items, const char *where)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, items)
	{
		const char *p = json_get_string(it, "path");
		struct centry *e = c->top;
		while (p && *p == '/')
			p++;
		while (p && e) {
			const char *slash = strchr(p, '/');
			size_t n = slash ? (size_t)(slash - p) : strlen(p);
			char *seg = xstrndup(p, n);
			e = name_ok(seg, n) ? child_of(c, e, seg, slash != NULL) : NULL;
			free(seg);
			p = slash ? slash + 1 : NULL;
		}
		if (!e || e == c->top) {
			log_warn("%s: skipping a file whose path cannot be a file name (or is "
				 "named twice)",
				 where);
			continue;
		}
		e->size = json_get_int64(it, "size", -1);
		e->mtime_ms = json_get_int64(it, "lastModified", -1);
	}
}

/* The root row of the file tree holding row (the one with the list). */
static const struct pt_row *root_of(const struct pt_row *row)
{
	while (row && !(row->content && row->list))
		row = pathtab_parent(row);
	return row;
}

/* The folder and file rows of a tree. */
static void tree_rows(const struct pt_row *root, const struct pt_row **dir,
		      const struct pt_row **file)
{
	const struct pt_row *kids[PT_MAX_CHILDREN];
	size_t nk = pathtab_children(root, kids, PT_MAX_CHILDREN);

	*dir = *file = NULL;
	for (size_t i = 0; i < nk; i++)
		*(kids[i]->kind == PT_DIR ? dir : file) = kids[i];
}

static const char *path_var(const struct pt_row *root)
{
	const struct pt_row *dir, *file;
	const char *var = NULL;

	tree_rows(root, &dir, &file);
	if (file)
		pathtab_leaf(file, &var, NULL);
	return var;
}

/* The tree's index from its list (in *ref, held while *out is used). */
static int content_get(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		       struct cache_ref **ref, const struct content **out)
{
	const struct pt_row *root = root_of(row);
	int ret;

	*out = NULL;
	if (!root)
		return -EIO;
	ret = get_listing(t, root, vars, ref);
	if (ret)
		return ret;
	struct resource *res = cache_ref_value(*ref);
	const cJSON *list = json_get(res->json, root->list_at);
	if (!cJSON_IsArray(list)) {
		log_error("%s: DSS's list of files is not an array", root->pattern);
		cache_ref_put(*ref);
		*ref = NULL;
		return -EIO;
	}
	pthread_mutex_lock(&res->lock);
	if (!res->content) {
		struct content *c = xcalloc(1, sizeof(*c));
		c->by_path = strmap_new();
		c->top = entry_new(c, NULL, "", 1);
		if (root->content == PT_TREE)
			add_tree(c, c->top, list, root->pattern);
		else
			add_flat(c, list, root->pattern);
		res->content = c;
	}
	*out = res->content;
	pthread_mutex_unlock(&res->lock);
	return 0;
}

/* The path in the tree of a node (row, vars): "" at its top. */
static const char *tree_path(const struct pt_row *row, const struct pt_vars *vars)
{
	const struct pt_row *root = root_of(row);
	const char *p;

	if (row == root)
		return "";
	p = pt_vars_get(vars, path_var(root));
	return p ? p : "";
}

/* ---- folders DSS does not keep ------------------------------------------
 *
 * A managed folder has no folders of its own: one is there while a file is
 * in it.  So that mkdir, then cp into it, and rm -r (which removes the
 * files, then the folder) work, a folder made here, or left empty by an
 * unlink here, is kept by the mount ("pending") until rmdir; it is never
 * on DSS.  Keys: the tree's list endpoint, a newline, the folder's path. */

static void pending_key(const struct pt_row *root, const struct pt_vars *vars, const char *path,
			struct buf *key)
{
	buf_reset(key);
	pathtab_expand(root->list, vars, key);
	buf_addch(key, '\n');
	buf_addstr(key, path);
}

struct prefix_scan {
	const char *prefix;
	size_t len;
	int found;
};

static int has_prefix(const char *key, void *value, void *ctx)
{
	struct prefix_scan *ps = ctx;

	(void)value;
	ps->found |= !strncmp(key, ps->prefix, ps->len);
	return 0;
}

/* Whether the folder at path is pending, or holds one. */
static int pending_has(struct tree *t, const struct pt_row *root, const struct pt_vars *vars,
		       const char *path)
{
	struct buf key = BUF_INIT;
	int has;

	pending_key(root, vars, path, &key);
	pthread_mutex_lock(&t->lock);
	has = strmap_get(t->pending, key.data) != NULL;
	if (!has) {
		buf_addch(&key, '/');
		struct prefix_scan ps = {key.data, key.len, 0};
		strmap_filter(t->pending, has_prefix, &ps);
		has = ps.found;
	}
	pthread_mutex_unlock(&t->lock);
	buf_release(&key);
	return has;
}

static void pending_set(struct tree *t, const struct pt_row *root, const struct pt_vars *vars,
			const char *path, int on)
{
	struct buf key = BUF_INIT;

	pending_key(root, vars, path, &key);
	pthread_mutex_lock(&t->lock);
	if (on)
		strmap_put(t->pending, key.data, (void *)1);
	else
		strmap_del(t->pending, key.data);
	pthread_mutex_unlock(&t->lock);
	buf_release(&key);
}

struct pending_scan {
	const char *prefix; /* "<list>\n<folder>/" or "<list>\n" at the top */
	size_t plen;
	char **names; /* the names of the pending folders directly in it */
	size_t n, cap;
	int any; /* some pending folder is below it */
};

static int scan_pending(const char *key, void *value, void *ctx)
{
	struct pending_scan *ps = ctx;

	(void)value;
	if (strncmp(key, ps->prefix, ps->plen) || !key[ps->plen])
		return 0;
	ps->any = 1;
	/* a pending folder deeper down keeps the folders above it */
	const char *rest = key + ps->plen, *slash = strchr(rest, '/');
	size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
	for (size_t i = 0; i < ps->n; i++)
		if (strlen(ps->names[i]) == n && !strncmp(ps->names[i], rest, n))
			return 0;
	if (ps->n == ps->cap) {
		ps->cap = ps->cap ? 2 * ps->cap : 8;
		ps->names = xrealloc(ps->names, ps->cap * sizeof(*ps->names));
	}
	ps->names[ps->n++] = xstrndup(rest, n);
	return 0;
}

/* The pending folders in folder `path` of the tree (free with
 * pending_release). */
static void pending_in(struct tree *t, const struct pt_row *root, const struct pt_vars *vars,
		       const char *path, struct pending_scan *ps, struct buf *prefix)
{
	memset(ps, 0, sizeof(*ps));
	pending_key(root, vars, path, prefix);
	if (*path)
		buf_addch(prefix, '/');
	ps->prefix = prefix->data;
	ps->plen = prefix->len;
	pthread_mutex_lock(&t->lock);
	strmap_filter(t->pending, scan_pending, ps);
	pthread_mutex_unlock(&t->lock);
}

static void pending_release(struct pending_scan *ps)
{
	for (size_t i = 0; i < ps->n; i++)
		free(ps->names[i]);
	free(ps->names);
}

int content_stat(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		 int64_t *size, int64_t *mtime_ms)
{
	const struct content *c;
	struct cache_ref *ref = NULL;
	int ret = content_get(t, row, vars, &ref, &c);

	*size = *mtime_ms = -1;
	if (ret)
		return ret;
	const char *path = tree_path(row, vars);
	const struct centry *e = strmap_get(c->by_path, path);
	if (!e && row->kind == PT_DIR && pending_has(t, root_of(row), vars, path))
		ret = 0; /* a folder made here, not on DSS */
	else if (!e || e->dir != (row->kind == PT_DIR))
		ret = -ENOENT;
	else {
		*size = e->size;
		*mtime_ms = e->mtime_ms;
	}
	cache_ref_put(ref);
	return ret;
}

int content_children(struct tree *t, const struct node *dir, const char *want, child_fn fn,
		     void *ctx)
{
	const struct pt_row *root = root_of(dir->row), *drow, *frow;
	const struct content *c;
	struct cache_ref *ref = NULL;
	int ret;

	if (!root)
		return -EIO;
	tree_rows(root, &drow, &frow);
	if ((ret = content_get(t, dir->row, &dir->vars, &ref, &c)))
		return ret;
	const char *dpath = tree_path(dir->row, &dir->vars);
	const struct centry *d = strmap_get(c->by_path, dpath);
	struct pending_scan ps;
	struct buf prefix = BUF_INIT, p = BUF_INIT;
	pending_in(t, root, &dir->vars, dpath, &ps, &prefix);
	if ((!d && !pending_has(t, root, &dir->vars, dpath)) || (d && !d->dir)) {
		ret = -ENOENT;
		goto out;
	}
	for (size_t i = 0; d && !ret && i < d->nkids; i++) {
		const struct centry *e = d->kids[i];
		if (want && strcmp(want, e->name))
			continue;
		struct child ch = {
		    .row = e->dir ? drow : frow, .vars = dir->vars, .name = BUF_INIT};
		if (pt_vars_set(&ch.vars, path_var(root), e->path))
			continue;
		buf_addstr(&ch.name, e->name);
		ret = fn(&ch, ctx);
		buf_release(&ch.name);
	}
	/* folders made here that DSS does not have (yet) */
	for (size_t i = 0; !ret && i < ps.n; i++) {
		buf_reset(&p);
		buf_addf(&p, "%s%s%s", dpath, *dpath ? "/" : "", ps.names[i]);
		if ((want && strcmp(want, ps.names[i])) || strmap_get(c->by_path, p.data))
			continue;
		struct child ch = {.row = drow, .vars = dir->vars, .name = BUF_INIT};
		if (pt_vars_set(&ch.vars, path_var(root), p.data))
			continue;
		buf_addstr(&ch.name, ps.names[i]);
		ret = fn(&ch, ctx);
		buf_release(&ch.name);
	}
out:
	pending_release(&ps);
	buf_release(&prefix);
	buf_release(&p);
	cache_ref_put(ref);
	return ret;
}

/* ---- changes ------------------------------------------------------------ */

/* The tree's list and the cached file at `path` are no longer what DSS
 * holds. */
/* Appends endpoint template tmpl for the file or folder at `path` in the
 * tree to key. */
static int path_key(const struct pt_row *root, const struct pt_vars *vars, const char *tmpl,
		    const char *path, struct buf *key)
{
	struct pt_vars v = *vars;
	int ret = pt_vars_set(&v, path_var(root), path);

	return ret ? ret : pathtab_expand(tmpl, &v, key);
}

static void forget(struct tree *t, const struct pt_row *root, const struct pt_vars *vars,
		   const char *path)
{
	const struct pt_row *drow, *frow;
	struct buf key = BUF_INIT;

	if (!pathtab_expand(root->list, vars, &key))
		cache_invalidate(t->cache, key.data);
	tree_rows(root, &drow, &frow);
	if (path && *path) {
		buf_reset(&key);
		if (frow->format == PT_SPOOL) /* (resource.c's key of a stream) */
			buf_addstr(&key, "GET ");
		if (!path_key(root, vars, frow->get, path, &key))
			cache_invalidate(t->cache, key.data);
	}
	buf_release(&key);
}

/* The path in the tree of `name` in folder dir (owned). */
static char *child_tree_path(const struct node *dir, const char *name)
{
	const char *up = tree_path(dir->row, &dir->vars);

	return *up ? xasprintf("%s/%s", up, name) : xstrdup(name);
}

/* Sends method to the endpoint template tmpl for the tree path `path`. */
static int send_to(struct tree *t, const struct pt_row *root, const struct pt_vars *vars,
		   const char *method, const char *tmpl, const char *path, const char *body,
		   size_t len)
{
	struct buf key = BUF_INIT, resp = BUF_INIT;
	int ret = path_key(root, vars, tmpl, path, &key);

	if (!ret)
		ret = http_request(t->http, method, key.data, body, len, &resp);
	buf_release(&key);
	buf_release(&resp);
	return ret;
}

/* What is at `name` in dir now, per a fresh list: 1 a file, 2 a folder
 * (*empty says whether it has nothing in it), 0 nothing, or -errno. */
static int what_is(struct tree *t, const struct node *dir, const char *path, int *empty)
{
	const struct pt_row *root = root_of(dir->row);
	const struct content *c;
	struct cache_ref *ref = NULL;
	int ret = content_get(t, root, &dir->vars, &ref, &c);

	if (ret)
		return ret;
	const struct centry *e = strmap_get(c->by_path, path);
	struct pending_scan ps;
	struct buf prefix = BUF_INIT;
	ret = !e ? 0 : e->dir ? 2 : 1;
	if (!e && pending_has(t, root, &dir->vars, path))
		ret = 2;
	if (empty && ret == 2) {
		pending_in(t, root, &dir->vars, path, &ps, &prefix);
		*empty = !(e && e->nkids) && !ps.any;
		pending_release(&ps);
	}
	buf_release(&prefix);
	cache_ref_put(ref);
	return ret;
}

static int writable(struct tree *t, const struct node *dir)
{
	if (t->opt.read_only)
		return -EROFS;
	return root_of(dir->row) ? 0 : -EPERM;
}

/* Takes a lookup reference on the new file or folder at name and fills *st. */
static int new_node(struct tree *t, const struct node *dir, const char *name, const char *path,
		    int is_dir, uint64_t *ino, struct stat *st)
{
	const struct pt_row *root = root_of(dir->row), *drow, *frow;
	struct pt_vars v = dir->vars;
	struct buf fpath = BUF_INIT;
	int ret;

	tree_rows(root, &drow, &frow);
	if ((ret = pt_vars_set(&v, path_var(root), path)))
		return ret;
	child_path(dir, name, &fpath);
	uint64_t n = ino_for_path(t, fpath.data);
	const struct pt_row *row = is_dir ? drow : frow;
	ret = row_attr(t, n, fpath.data, row, &v, st);
	if (!ret) {
		*ino = node_ref(t, fpath.data, row, &v);
		st->st_ino = *ino;
	}
	buf_release(&fpath);
	return ret;
}

/* The path in the tree of a new file or folder `name` in dir (*path, to
 * free), or -errno: -EEXIST if something is there. */
static int new_path(struct tree *t, const struct node *dir, const char *name, char **path)
{
	int ret = writable(t, dir);

	*path = NULL;
	if (ret)
		return ret;
	if (!name_ok(name, strlen(name)))
		return -EINVAL;
	*path = child_tree_path(dir, name);
	ret = what_is(t, dir, *path, NULL);
	if (ret > 0)
		ret = -EEXIST;
	if (ret) {
		free(*path);
		*path = NULL;
	}
	return ret;
}

int content_create(struct tree *t, const struct node *dir, const char *name, uint64_t *ino,
		   struct stat *st)
{
	const struct pt_row *root = root_of(dir->row), *drow, *frow;
	char *path;
	int ret = new_path(t, dir, name, &path);

	if (ret)
		return ret;
	tree_rows(root, &drow, &frow);
	/* An empty file, made at once: it is a file of the tree from now on
	 * (its content is saved at close, as any file's). */
	if (!frow->put)
		ret = -EPERM;
	else if (frow->put_form) {
		struct buf key = BUF_INIT, resp = BUF_INIT;
		if (!(ret = path_key(root, &dir->vars, frow->put, path, &key)))
			ret = http_upload(t->http, key.data, "", -1, 0, 1, &resp);
		buf_release(&key);
		buf_release(&resp);
	} else {
		ret = send_to(t, root, &dir->vars, frow->put_method ? frow->put_method : "PUT",
			      frow->put, path, "", 0);
	}
	forget(t, root, &dir->vars, path);
	if (!ret)
		ret = new_node(t, dir, name, path, 0, ino, st);
	free(path);
	return ret;
}

int content_mkdir(struct tree *t, const struct node *dir, const char *name, uint64_t *ino,
		  struct stat *st)
{
	const struct pt_row *root = root_of(dir->row);
	char *path;
	int ret = new_path(t, dir, name, &path);

	if (ret)
		return ret;
	if (root->mkdir)
		ret = send_to(t, root, &dir->vars, "POST", root->mkdir, path, NULL, 0);
	else /* kept here until a file is put in it */
		pending_set(t, root, &dir->vars, path, 1);
	forget(t, root, &dir->vars, NULL);
	if (!ret)
		ret = new_node(t, dir, name, path, 1, ino, st);
	free(path);
	return ret;
}

static int remove_entry(struct tree *t, const struct node *dir, const char *name, int want_dir)
{
	const struct pt_row *root = root_of(dir->row);
	char *path;
	int empty = 0, ret = writable(t, dir);

	if (ret)
		return ret;
	if (!root->remove)
		return -EPERM;
	path = child_tree_path(dir, name);
	ret = what_is(t, dir, path, &empty);
	if (ret == 0)
		ret = -ENOENT;
	else if (ret > 0 && (ret == 2) != want_dir)
		ret = want_dir ? -ENOTDIR : -EISDIR;
	else if (ret > 0 && want_dir && !empty)
		ret = -ENOTEMPTY;
	else if (ret > 0 && want_dir && !root->mkdir) {
		/* an empty folder of a managed folder: only the mount has it */
		pending_set(t, root, &dir->vars, path, 0);
		ret = 0;
	} else if (ret > 0) {
		ret = send_to(t, root, &dir->vars, "DELETE", root->remove, path, NULL, 0);
		/* its folder stays until rmdir, though DSS drops it with its
		 * last file (rm -r removes the files, then the folders) */
		const char *up = tree_path(dir->row, &dir->vars);
		if (!ret && !want_dir && !root->mkdir && *up)
			pending_set(t, root, &dir->vars, up, 1);
	}
	forget(t, root, &dir->vars, path);
	free(path);
	return ret;
}

int content_unlink(struct tree *t, const struct node *dir, const char *name)
{
	return remove_entry(t, dir, name, 0);
}

int content_rmdir(struct tree *t, const struct node *dir, const char *name)
{
	return remove_entry(t, dir, name, 1);
}

/* A JSON object of two string members. */
static char *two_strings(const char *k1, const char *v1, const char *k2, const char *v2)
{
	struct buf b = BUF_INIT;

	buf_addch(&b, '{');
	json_render_string(k1, &b);
	buf_addch(&b, ':');
	json_render_string(v1, &b);
	buf_addch(&b, ',');
	json_render_string(k2, &b);
	buf_addch(&b, ':');
	json_render_string(v2, &b);
	buf_addch(&b, '}');
	return buf_detach(&b, NULL);
}

/* Posts an action ({oldPath, newName} or {oldPath, newPath}). */
static int act(struct tree *t, const struct pt_vars *vars, const char *tmpl, const char *k2,
	       const char *from, const char *v2)
{
	struct buf key = BUF_INIT, resp = BUF_INIT;
	char *body = two_strings("oldPath", from, k2, v2);
	int ret = pathtab_expand(tmpl, vars, &key);

	if (!ret)
		ret = http_request(t->http, "POST", key.data, body, strlen(body), &resp);
	free(body);
	buf_release(&key);
	buf_release(&resp);
	return ret;
}

int content_rename(struct tree *t, const struct node *from, const char *name, const struct node *to,
		   const char *newname, unsigned flags)
{
	const struct pt_row *root = root_of(from->row);
	char *src = NULL, *dst = NULL, *moved = NULL;
	int kind, target, empty = 0, ret = writable(t, from);

	if (ret)
		return ret;
	/* Another tree (or a managed folder, which DSS cannot rename in):
	 * EXDEV makes mv copy and delete. */
	if (root != root_of(to->row) || !root->rename || !root->move)
		return -EXDEV;
	if (!name_ok(newname, strlen(newname)))
		return -EINVAL;
	src = child_tree_path(from, name);
	dst = child_tree_path(to, newname);
	const char *up = tree_path(to->row, &to->vars);
	if ((kind = what_is(t, from, src, NULL)) <= 0) {
		ret = kind ? kind : -ENOENT;
		goto out;
	}
	if (!strcmp(src, dst))
		goto out;
	/* a folder into itself */
	size_t sl = strlen(src);
	if (kind == 2 && !strncmp(dst, src, sl) && dst[sl] == '/') {
		ret = -EINVAL;
		goto out;
	}
	if ((target = what_is(t, to, dst, &empty)) < 0) {
		ret = target;
		goto out;
	}
	if (target && (flags & RENAME_NOREPLACE)) {
		ret = -EEXIST;
		goto out;
	}
	if (target && (target == 2) != (kind == 2)) {
		ret = kind == 2 ? -ENOTDIR : -EISDIR;
		goto out;
	}
	if (target == 2 && !empty) {
		ret = -ENOTEMPTY;
		goto out;
	}
	/* rename(2) replaces the target: DSS's calls do not, so it goes
	 * first (an editor's save by rename: its content is in the source) */
	if (target && (ret = send_to(t, root, &to->vars, "DELETE", root->remove, dst, NULL, 0)))
		goto out;
	if (strcmp(from->path, to->path)) {
		/* DSS moves into a folder keeping the name; then renames */
		ret = act(t, &from->vars, root->move, "newPath", src, up);
		if (ret)
			goto out;
		moved = *up ? xasprintf("%s/%s", up, name) : xstrdup(name);
		if (strcmp(name, newname))
			ret = act(t, &from->vars, root->rename, "newName", moved, newname);
	} else {
		ret = act(t, &from->vars, root->rename, "newName", src, newname);
	}
out:
	forget(t, root, &from->vars, src);
	if (dst)
		forget(t, root, &to->vars, dst);
	if (moved)
		forget(t, root, &to->vars, moved);
	free(src);
	free(dst);
	free(moved);
	return ret;
}

/* ---- a managed folder's files: through temporary files ------------------ */

int tree_spool_account(struct tree *t, size_t from, size_t to)
{
	if (to <= from) {
		atomic_fetch_sub(&t->spool_used, from - to);
		return 0;
	}
	size_t more = to - from, was = atomic_fetch_add(&t->spool_used, more);
	if (was + more > t->opt.spool_total) {
		atomic_fetch_sub(&t->spool_used, more);
		log_error("the files being held take all of -o spool_total: write refused");
		return -ENOSPC;
	}
	return 0;
}

/* What a save of a managed folder's file is checked against: its time and
 * size in the list (DSS keeps no version of these files). */
static void spooled_base(int64_t size, int64_t mtime_ms, struct tree_base *base)
{
	base->version = mtime_ms;
	base->hash = size >= 0 ? (uint64_t)size + 1 : 0;
}

static int copy_fd(int from, int to, size_t len)
{
	char buf[65536];
	size_t off = 0;

	while (off < len) {
		size_t n = len - off < sizeof(buf) ? len - off : sizeof(buf);
		ssize_t got = pread(from, buf, n, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		for (ssize_t w = 0; w < got;) {
			ssize_t put =
			    pwrite(to, buf + w, (size_t)(got - w), (off_t)(off + (size_t)w));
			if (put < 0 && errno == EINTR)
				continue;
			if (put < 0)
				return -errno;
			w += put;
		}
		off += (size_t)got;
	}
	return 0;
}

int tree_open_spooled(struct tree *t, uint64_t ino, int trunc, int *fd, size_t *len,
		      struct tree_base *base)
{
	struct node *n = node_of(t, ino);
	struct cache_ref *ref = NULL;
	int64_t size, mtime;
	int ret;

	*fd = -1;
	*len = 0;
	base->version = -1;
	base->hash = 0;
	if (!n)
		return -ESTALE;
	if (!n->row || n->row->format != PT_SPOOL || !saves_allowed(t, n->row)) {
		ret = t->opt.read_only ? -EROFS : -EACCES;
		goto out;
	}
	if ((ret = content_stat(t, n->row, &n->vars, &size, &mtime)))
		goto out;
	spooled_base(size, mtime, base);
	if ((*fd = spool_file()) < 0) {
		ret = *fd;
		log_error("%s: cannot make a temporary file: %s", n->path, strerror(-ret));
		goto out;
	}
	if (trunc)
		goto out;
	/* The current bytes, through the stream's own spool file. */
	if ((ret = get_row_resource(t, n->row, &n->vars, &ref)))
		goto out;
	struct resource *res = cache_ref_value(ref);
	if (!(ret = tree_spool_account(t, 0, res->spool_size)) &&
	    (ret = copy_fd(res->spool_fd, *fd, res->spool_size)))
		tree_spool_account(t, res->spool_size, 0);
	if (!ret)
		*len = res->spool_size;
out:
	if (ret && *fd >= 0) {
		close(*fd);
		*fd = -1;
	}
	cache_ref_put(ref);
	node_put(n);
	return ret;
}

int tree_save_spooled(struct tree *t, uint64_t ino, int fd, size_t len,
		      const struct tree_caller *who, struct tree_base *base)
{
	struct node *n = node_of(t, ino);
	const struct pt_row *root;
	struct buf key = BUF_INIT, resp = BUF_INIT;
	int64_t size, mtime;
	int ret;

	(void)who;
	if (!n)
		return -ESTALE;
	if (!n->row || n->row->format != PT_SPOOL || !saves_allowed(t, n->row) ||
	    !(root = root_of(n->row))) {
		ret = -EACCES;
		goto out;
	}
	/* The list as DSS has it now: has the file changed since it was read? */
	forget(t, root, &n->vars, NULL);
	ret = content_stat(t, n->row, &n->vars, &size, &mtime);
	if (ret && ret != -ENOENT)
		goto out;
	if (!t->opt.last_writer_wins && (base->version >= 0 || base->hash) &&
	    (ret == -ENOENT || mtime != base->version || (uint64_t)size + 1 != base->hash)) {
		log_error("%s: not saved: it was changed on DSS since you read it; read it "
			  "again, or mount with -o last_writer_wins",
			  n->path);
		atomic_fetch_add(&t->conflicts, 1);
		ret = -ESTALE;
		goto out;
	}
	if ((ret = pathtab_expand(n->row->put, &n->vars, &key)))
		goto out;
	ret = http_upload(t->http, key.data, NULL, fd, len, n->row->put_form, &resp);
	/* (even a failed upload may have landed) */
	forget(t, root, &n->vars, pt_vars_get(&n->vars, path_var(root)));
	if (ret) {
		atomic_fetch_add(&t->save_failures, 1);
		goto out;
	}
	log_info("%s: saved", n->path);
	atomic_fetch_add(&t->saves, 1);
	spooled_base(-1, -1, base);
	if (!content_stat(t, n->row, &n->vars, &size, &mtime))
		spooled_base(size, mtime, base);
	tree_changed(t, ino);
out:
	buf_release(&key);
	buf_release(&resp);
	node_put(n);
	return ret;
}
