/*
 * tree_int - what the parts of the tree engine share (private to src/):
 * resource.c (documents: fetch, parse, render), nodes.c (the inode table),
 * tree.c (lookup, listing, attributes, reading), save.c (saving, scratch
 * files, rename, setattr).
 */
#ifndef DSSFS_TREE_INT_H
#define DSSFS_TREE_INT_H

#include "dssfs/buf.h"
#include "dssfs/pathtab.h"
#include "dssfs/scratch.h"
#include "dssfs/tree.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct cache_ref;
struct strmap;

/* A fetched REST resource: the parsed document and the renderings of its
 * files, made on first use.  Each rendering is allocated on its own and
 * never moved or freed before the resource, so a pointer to its bytes stays
 * valid while the resource is held (another thread may add renderings). */
struct rendering {
	struct rendering *next;
	const char *field; /* static: from the table */
	enum pt_format format;
	int err;
	uint64_t hash; /* content_hash of bytes */
	struct buf bytes;
};

struct resource {
	cJSON *json;  /* NULL for a spooled stream */
	int spool_fd; /* PT_SPOOL: the temporary file holding it, else -1 */
	size_t spool_size;
	/* Why the document cannot be shown faithfully (a string holding
	 * \u0000 or a lone surrogate, a number a double cannot hold), or NULL.
	 * Its files are shown read-only and never saved. */
	const char *unfaithful;
	pthread_mutex_t lock; /* guards the renderings and listings */
	struct rendering *r;
	struct listing *listings; /* listing.c: the children it lists, per row */
	struct content *content;  /* contents.c: the file tree it lists */
	struct tree *owner;	  /* a spooled stream's, for its disk accounting */
};

/* What an inode stands for: a path, its table row and variables.
 * Immutable once made and reference counted, so an operation keeps using
 * the one it started with while a rename binds the inode to another
 * (node_of / node_put). */
struct node {
	atomic_int refs;
	uint64_t ino;
	char *path;		  /* file names (escaped), "/" for the root */
	const struct pt_row *row; /* NULL: a scratch file */
	struct pt_vars vars;	  /* values owned */
	/* st_size last reported to the kernel for this binding, -1 if none */
	_Atomic int64_t shown_size;
};

#define DOC_LOCKS 64

struct tree {
	struct http *http;
	struct cache *cache;
	struct tree_options opt;
	pthread_mutex_t lock; /* guards the tables below */
	struct inode **inodes;
	size_t ninode_buckets, ninodes;
	struct inode **paths; /* the names in use: the path index (nodes.c) */
	size_t npath_buckets, npaths;
	struct strmap *bases;	  /* path -> struct base_list (save.c) */
	struct file_times *times; /* the times of the files seen (attr.c) */
	struct strmap *failures;  /* key -> struct failure (resource.c) */
	struct strmap *spools;	  /* spool key -> fetch time, ms (resource.c) */
	struct strmap *pending;	  /* empty folders made in a managed folder (contents.c) */
	atomic_size_t spool_used; /* bytes of spooled streams on disk */
	/* saves that sent their document; refused as conflicts; failed
	 * otherwise (tree_get_stats) */
	atomic_uint_fast64_t saves, conflicts, save_failures;
	/* the key is an instance admin (tree_probe_admin): 1, 0, or -1 not
	 * known yet (tree_probe_admin_later) */
	atomic_int admin;
	struct scratch *scratch;
	struct prefetch *prefetch; /* NULL: disabled */
	/* saves of one document run one at a time (save.c) */
	pthread_mutex_t doc_locks[DOC_LOCKS];
	void (*changed)(uint64_t ino, void *ctx);
	void *changed_ctx;
};

/* resource.c */
/* An anonymous temporary file in $TMPDIR (gone when closed), or -errno. */
int spool_file(void);
int fetch_resource(void *ctx, const char *key, void **value, size_t *cost);
int get_resource(struct tree *t, const char *tmpl, const struct pt_vars *vars,
		 struct cache_ref **ref);
/* get_resource for the listing of folder row `dir` (its `list`): a listing
 * that just failed (see FAILURE_WINDOW_MS) fails again at once. */
int get_listing(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
		struct cache_ref **ref);
/* Whether DSS answers the listing of folder row `dir` with "not found"
 * (remembered for the cache's TTL: an object type this DSS version lacks). */
int listing_absent(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars);
/* Whether DSS refuses this key the document of file row `row` (403),
 * remembered as long as a document is cached (hide_forbidden). */
int document_forbidden(struct tree *t, const struct pt_row *row, const struct pt_vars *vars);
/* The cache's fetch function for the listing of a folder row: with
 * ctx a struct list_fetch. */
struct list_fetch {
	struct tree *t;
	const struct pt_row *dir;
	const struct pt_vars *vars;
	int optional; /* fetch_optional, else fetch_resource */
};
int fetch_listing(void *ctx, const char *key, void **value, size_t *cost);
/* fetch_resource for the listing of an optional folder (pathtab.h): a
 * "not found" is remembered (listing_absent). */
int fetch_optional(void *ctx, const char *key, void **value, size_t *cost);
/* Forgets the remembered listing failures (with the caches: SIGHUP). */
void forget_failures(struct tree *t);
int get_row_resource(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		     struct cache_ref **ref);
/* The bytes of a file row rendered from res (valid while res is held) and
 * their content_hash. */
int render(struct resource *res, const struct pt_row *row, const struct buf **out, uint64_t *hash);
/* Why a JSON text (parsed as j) cannot be held faithfully by cJSON (see
 * struct resource's `unfaithful`), or NULL. */
const char *doc_unfaithful(const char *data, size_t len, const cJSON *j);
/* Whether s is valid UTF-8 (no overlong forms, no surrogates). */
int utf8_valid(const unsigned char *s, size_t len);
/* 64-bit FNV-1a of a byte string, never 0 (0 is kept for "unknown"). */
uint64_t content_hash(const char *data, size_t len);

/* nodes.c */
void nodes_init(struct tree *t);
void nodes_release(struct tree *t);
/* Bindings not freed yet, in all trees. */
size_t nodes_alive(void);
void vars_copy(struct pt_vars *dst, const struct pt_vars *src);
void vars_release(struct pt_vars *v);
/* The binding inode `ino` has now (a reference: node_put it), or NULL. */
struct node *node_of(struct tree *t, uint64_t ino);
void node_put(struct node *n); /* NULL-safe */
/* Takes one lookup reference on the inode of path, making it if needed. */
uint64_t node_ref(struct tree *t, const char *path, const struct pt_row *row,
		  const struct pt_vars *vars);
/* The inode of path, or the number it would take. */
uint64_t ino_for_path(struct tree *t, const char *path);
/* The inode of path, or 0 if the kernel holds none. */
uint64_t ino_if_held(struct tree *t, const char *path);
/* A rename moved the inode at `from` to `to`, now bound to (row, vars): the
 * inode keeps its number (the kernel moved its entry) and answers for `to`;
 * whatever inode `to` had is no longer found by name (libfuse's
 * rename_node()). */
void node_rekey(struct tree *t, const char *from, const char *to, const struct pt_row *row,
		const struct pt_vars *vars);

/* listing.c: the children of a listed folder, made once per fetched
 * listing and kept with it (immutable once made). */
struct listing;
struct listing_entry {
	const char *base; /* its escaped name: its file names add the rows' suffixes */
	const char *id;	  /* the child variable's value (list_key) */
	int64_t mtime_ms; /* the item's versionTag.lastModifiedOn, or -1 */
	int nested;	  /* it has sub-items (a recursive folder shows them) */
	const char *over; /* a union's: the value of the row's `over` variable */
};
/* The listing shown by a folder of row `dir` (with `list`, or `recurse`)
 * for vars; *ref and *out hold it until listing_put.  May fetch the
 * documents that name its items (name_get), or the lists it unites
 * (`over`). */
int listing_get(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
		struct cache_ref **ref, const struct listing **out);
void listing_put(struct cache_ref *ref, const struct listing *l);
/* The same from a held listing resource. */
int listing_in(struct tree *t, struct resource *res, const struct pt_row *dir,
	       const struct pt_vars *vars, const struct listing **out);
size_t listing_count(const struct listing *l);
const struct listing_entry *listing_at(const struct listing *l, size_t i);
const struct listing_entry *listing_find(const struct listing *l, const char *base);
const struct listing_entry *listing_find_id(const struct listing *l, const char *id);
void listings_free(struct listing *l);
/* A listing only its own folder reads (pathtab_list_only) is kept as its
 * index alone: its folder's listing is built from res at once, the parsed
 * document dropped and *cost set to what is left.  A listing of 20,000
 * datasets is then a few MB in the cache instead of the ~70 MB of its
 * parsed document, which no cache_max held (it was fetched again on each
 * lookup). */
void listing_compact(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
		     struct resource *res, size_t *cost);
/* The listing of a list-only folder row `dir` (see listing_compact) read
 * from the text of its list (after mark_escapes) item by item
 * (json_scan_list), never holding more than one item's parsed tree: what it
 * takes in memory is set in *bytes.  NULL if dir is not list-only, or the
 * text is not one JSON document holding a list (an array or an object) at
 * dir's list_at: then the caller parses the whole text, which reports the
 * error as for any document.  Logs what listing_in logs of its items. */
struct listing *listing_scan(const struct pt_row *dir, const char *text, size_t len, size_t *bytes);
/* The name of an item of a DSS listing: the `key` field of an array item,
 * or the key of an object's member (listings keyed by name). */
const char *list_item_name(const cJSON *list, const cJSON *item, const char *key);

/* attr.c */
/* Attributes of the node of `row` at path: a file's (fetches its
 * document, to know its exact size), a folder's, or a link's (S_IFLNK
 * 0777, st_size the target's length, the time of its folder). */
int row_attr(struct tree *t, uint64_t ino, const char *path, const struct pt_row *row,
	     const struct pt_vars *vars, struct stat *st);
int node_attr(struct tree *t, const struct node *n, struct stat *st);
/* A link's target (pathtab.h, `link`) from the link at path, appended to
 * out: 0, or -EIO when a name cannot be a file name. */
int link_target(const struct pt_row *row, const char *path, const struct pt_vars *vars,
		struct buf *out);
int scratch_attr(struct tree *t, uint64_t ino, const char *path, struct stat *st);
struct file_times *file_times_new(void);
void file_times_free(struct file_times *ft); /* NULL-safe */
/* Loads the times earlier mounts remembered in the file at path (made if
 * absent, compacted when mostly stale) and appends to it from then on the
 * times that DSS does not give (tree_options.times_file).  -errno if the
 * file cannot be made or opened: the times are then this mount's only. */
int file_times_open(struct file_times *ft, const char *path);
/* The attributes of scratch file ino, from what scratch_stat gave. */
void scratch_fill(struct tree *t, uint64_t ino, const struct scratch_attr *sa, struct stat *st);
int64_t doc_version(const struct pt_row *row, const struct cache_ref *ref);

/* lookahead.c */
/* What `ls -l`, tar and rsync will need after a listing that holds a child
 * of this row: its resources and, for a folder, those of what it holds that
 * need no further listing (a dataset's files, a project's files and
 * lists).  Nothing when prefetch is off. */
void lookahead_child(struct tree *t, const struct pt_row *row, const struct pt_vars *vars);
/* Queues one resource for the prefetch threads (nothing if prefetch is
 * off or it is cached). */
void lookahead_key(struct tree *t, const char *tmpl, const struct pt_vars *vars);
/* What is queued between these goes to the head of the prefetch queue
 * together, in the order queued, at the end (nested: at each end, what
 * was queued since the last one). */
void lookahead_begin(void);
void lookahead_end(struct tree *t);
/* After a walk entered folder dir, an object of its parent's listing
 * whose folder holds listings (a project): what the next object's folder
 * holds is queued at the tail, behind what the walk needs now, so that the
 * walk finds it fetched when it gets there.  Without it the queue ran dry
 * at each project's end, and tar waited there for the next project's first
 * listings (issue 9, goal 4).  A folder of files only (a dataset's) is
 * not concerned: its parent's listing queued all of them. */
void lookahead_next(struct tree *t, const struct node *dir);

/* One child of a directory, as found by lookup or readdir. */
struct child {
	const struct pt_row *row;
	struct pt_vars vars; /* values borrowed */
	struct buf name;     /* escaped file name */
};

/* Called for each child of a directory, stopping when it returns nonzero
 * (that value is returned).  The walks return -errno if a needed resource
 * cannot be fetched; then no partial result is reported as complete. */
typedef int (*child_fn)(struct child *c, void *ctx);

/* contents.c: folders of real files (PT_TREE, PT_FLAT rows) */
struct content;
void content_free(struct content *c); /* NULL-safe */
/* The children of a folder in a file tree (only `want` if not NULL). */
int content_children(struct tree *t, const struct node *dir, const char *want, child_fn fn,
		     void *ctx);
/* What the tree's list says of the file or folder of (row, vars): its size
 * (-1: not said) and time (-1: not said); -ENOENT if it is not there. */
int content_stat(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		 int64_t *size, int64_t *mtime_ms);
int content_create(struct tree *t, const struct node *dir, const char *name, uint64_t *ino,
		   struct stat *st);
int content_unlink(struct tree *t, const struct node *dir, const char *name);
int content_mkdir(struct tree *t, const struct node *dir, const char *name, uint64_t *ino,
		  struct stat *st);
int content_rmdir(struct tree *t, const struct node *dir, const char *name);
int content_rename(struct tree *t, const struct node *from, const char *name, const struct node *to,
		   const char *newname, unsigned flags);

/* tree.c */
int saves_allowed(struct tree *t, const struct pt_row *row);
int64_t now_epoch_ms(void);
void child_path(const struct node *dir, const char *name, struct buf *out);
int name_possible(const struct node *dir, const char *name);
/* Whether a scratch file may take `name` in dir: no DSS file could be
 * called so (a nested folder of a wiki article, which exists only where the
 * article has children, does not reserve its name: editors' temporary
 * files in the wiki take any name; nor do a project folder's sub-folders
 * and links, beside its settings.json). */
int name_for_scratch(const struct node *dir, const char *name);
/* The file's bytes and its document's versionNumber (-1: none). */
int file_bytes(struct tree *t, const struct node *n, struct buf *out, int64_t *version);
/* An API object found by name, with its own copy of the variables. */
struct found {
	const struct pt_row *row;
	struct pt_vars vars;
};
int find_api_child(struct tree *t, const struct node *dir, const char *name, struct found *out);
void found_release(struct found *f);
/* Takes a lookup reference on the scratch file at path, whose attributes
 * scratch_stat gave as *sa, and fills *st.  Nothing can fail once the
 * reference is taken, so every reference reaches the kernel (which
 * forgets it) or is never taken. */
void scratch_ref(struct tree *t, const char *path, const struct pt_vars *vars,
		 const struct scratch_attr *sa, uint64_t *ino, struct stat *st);
/* Tells the FUSE layer that what the kernel caches of ino is stale. */
void tree_changed(struct tree *t, uint64_t ino);

/* save.c */
void saves_init(struct tree *t);
void saves_release(struct tree *t);
/* Saves `data` as the file of `row` at path, for caller who.  *base is what
 * the handle read (version -1 / hash 0: unknown); on success it becomes
 * what DSS now holds. */
int save_file(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
	      const char *path, const char *data, size_t len, const struct tree_caller *who,
	      struct tree_base *base);
/* Records what caller read of the file at path (see tree_base). */
void base_record(struct tree *t, const char *path, const struct tree_caller *who,
		 const struct tree_base *b);

#endif
