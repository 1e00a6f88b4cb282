/*
 * pathtab - the one table that knows how DSS objects map to the tree.
 *
 * Each row describes one kind of node by its path pattern, e.g.
 * "/{project}/datasets/{dataset}/schema.json", and says what it is:
 *
 *  - a directory whose children are the objects of a list endpoint
 *    (`list` + `list_key`: the field of each item that names a child);
 *  - a fixed directory, whose children are the rows one level below it;
 *  - a file, the projection `field` of the document at endpoint `get`,
 *    rendered as JSON or as raw text; `put` is where a save goes (NULL for a
 *    read-only file);
 *  - a symbolic link (PT_LINK) to another node of the tree, `link`.
 *
 * A pattern segment is a literal ("schema.json"), an object variable
 * ("{dataset}": any name listed by the parent), or a literal with a derived
 * part ("payload.{ext}"), whose value `name_map` computes from the field
 * `cond_field` of the document at `cond_get`.  An object variable may be
 * followed by a literal suffix ("{notebook}.ipynb": the object's file is
 * its name plus the suffix).  `cond_equals`, when set, makes the row exist
 * only where that field has that value, or one of its '|'-separated values
 * (a scenario's script.py exists only for custom Python scenarios).
 *
 * A save of a file that is a projection (`field` set) re-reads the whole
 * `get` document, replaces the field and sends the whole document back.
 * `require` lists keys (comma-separated) a saved JSON object must have.
 *
 * Endpoint templates use the same {variables}; pathtab_expand() fills them
 * with URL-encoded object names.  The FUSE layer and the tree engine read
 * rows; they never test which object type they hold.  Adding a DSS object
 * type is adding rows here.
 *
 * The table is static and immutable: every function is thread-safe.
 */
#ifndef DSSFS_PATHTAB_H
#define DSSFS_PATHTAB_H

#include <stddef.h>

#include "dssfs/buf.h"

/* PT_LINK: a symbolic link (read-only) to another place of the tree, `link`
 * (see there). */
enum pt_kind { PT_DIR, PT_FILE, PT_LINK };
/* PT_JSON: the projection rendered as JSON; PT_TEXT: a string field as is;
 * PT_SPOOL: the raw response of `get` (a stream: a project export, a
 * managed folder's file, a log), spooled to a temporary file, never held in
 * memory; PT_BASE64: the bytes a base64 string field holds (a library
 * file); PT_CONCAT: the string member `join` of each item of the array
 * `field`, one after the other, each ending with a newline (a commit's
 * diff: the parts of its files make one patch). */
enum pt_format { PT_JSON, PT_TEXT, PT_SPOOL, PT_BASE64, PT_CONCAT };

/* A folder whose content is a tree of real files (the project library, a
 * managed folder's files) rather than DSS objects: PT_TREE, the list is a
 * nested tree of {name, children?} nodes (folders have children);
 * PT_FLAT, the list (at list_at) holds every file as {path, size,
 * lastModified}, folders implied by the paths. */
enum pt_content { PT_OBJECTS, PT_TREE, PT_FLAT };
enum pt_seg { PT_SEG_ROOT, PT_SEG_LITERAL, PT_SEG_VAR, PT_SEG_DERIVED };

/* Limits of the table, checked for every row by tests/unit/test_pathtab.c
 * (CTest), so a row that exceeds one fails the build's tests instead of
 * being cut silently: the variables along one pattern (struct pt_vars
 * holds them by value), and the child rows of one row (callers size their
 * arrays for pathtab_children() with it).  Literals and variable names have
 * no length limit. */
#define PT_MAX_VARS 6
#define PT_MAX_CHILDREN 32

struct pt_map {
	const char *from; /* NULL: default entry, last in the array */
	const char *to;
};

struct pt_row {
	const char *pattern;
	enum pt_kind kind;
	/* directories listing objects: `list` is the endpoint, `list_at` the
	 * field of its document holding the items (NULL: the document itself),
	 * `list_key` the field of an item that is the child variable's value
	 * (its id; NULL: the items are strings, each its own id), `name_key`
	 * the field naming its file (NULL: the id; an item without a usable
	 * one is named by its id).  Items sharing a name are each named
	 * "<name>~<id>".  An object row (a child named by a variable) that is
	 * not a folder and has a `list` of its own is listed by it instead of
	 * by its folder's: a folder of two lists of one document (a project
	 * folder's sub-folders and its projects). */
	const char *list;
	const char *list_at;
	const char *list_key;
	const char *name_key;
	/* the field of an item holding its time (epoch ms, or an ISO 8601
	 * text): its folder's and files' st_mtime; NULL:
	 * versionTag.lastModifiedOn */
	const char *time_at;
	/* at most this many items are shown, the first ones of DSS's list
	 * (newest first: the recent jobs); 0: all of them */
	size_t list_max;
	/* only the items whose string field `list_if` is `list_if_equals`
	 * are shown (a code env's language: one list, two folders); NULL:
	 * all of them */
	const char *list_if;
	const char *list_if_equals;
	/* a union of lists: `list` is asked for each object of the folder
	 * that lists the variable `over` (each dataset's statistics
	 * worksheets), which its children then have bound too */
	const char *over;
	/* names from each item's own document instead: the field name_field
	 * of name_get (with the item's id as the child variable) */
	const char *name_get;
	const char *name_field;
	/* the field of an item holding its sub-items (a nested list: the wiki
	 * taxonomy); a child folder row with `recurse` shows them */
	const char *nest;
	/* PT_CONCAT: the member of each item that is joined */
	const char *join;
	/* a folder (a child of a listed folder) whose children are its
	 * parent's object rows, listing the sub-items (`nest`) of its object:
	 * a tree of any depth */
	int recurse;
	/* a folder that is its parent folder again, one level down (a project
	 * folder's sub-folder): the same child rows as its parent, itself
	 * among them, and its own `list` (its parent's, with the variable
	 * rebound): a tree of any depth whose every folder is a document */
	int repeat;
	/* PT_LINK: the target, a path from the mount's root whose {var} are
	 * the variables' values as file names (escaped); the link holds it
	 * relative to the link's folder ("../../SALES"), so that it resolves
	 * in the mount and in a copy of it */
	const char *link;
	/* files */
	const char *get;
	const char *put;
	const char *field;
	enum pt_format format;
	/* where the object's versionTag sits in the `get` document; NULL if
	 * the document has none (the file then takes its directory's mtime) */
	const char *version_at;
	/* a file tree (enum pt_content), on its root folder row, with the
	 * endpoints of its changes (templates over {path*}, the path of a
	 * file or folder in it; NULL: DSS has no such call): `mkdir` (POST),
	 * `remove` (DELETE), `rename` and `move` (POST {oldPath, newName} /
	 * {oldPath, newPath: the folder}); the root's two child rows are a
	 * folder (`recurse`) and a file, both named by {path*} */
	enum pt_content content;
	const char *mkdir;
	const char *remove;
	const char *rename;
	const char *move;
	/* GET when NULL ("POST": the export) */
	const char *get_method;
	/* saving: the file's bytes as the body, as they are (no JSON);
	 * `put_form`: as the one part of a multipart form (managed folders) */
	int put_raw;
	int put_form;
	/* saving: `put_method` NULL means PUT; `put_wrap`, when set, sends
	 * the document as the only member of an object under that key
	 * ({"insight": ...}) */
	const char *put_method;
	const char *put_wrap;
	const char *require;
	/* reachable by name but not listed (e.g. streams whose size is only
	 * known once fetched: listing them would fetch them) */
	int hidden;
	/* a folder or file of activity (runs, jobs, history, a scenario's
	 * last-runs.json: it changes all the time): reachable by name, listed
	 * in its parent only when the mount asks for it
	 * (tree_options.list_activity), so that a backup of the mount stays
	 * the configuration; inside such a folder, everything is listed */
	int activity;
	/* PT_SPOOL: DSS sends a dataset's rows as TSV (Excel dialect, a
	 * header line); the file is that converted to CSV (Excel quoting),
	 * and bounded by tree_options.data_max (-EFBIG beyond it) */
	int tsv_to_csv;
	/* a file DSS may refuse this key (403: a project's permissions to a
	 * key that may only read the project): then not shown, so that a
	 * backup of what the key can read is clean */
	int hide_forbidden;
	/* shown only when the key is an instance admin (one probe at mount:
	 * tree_probe_admin); for any other key the row does not exist */
	int admin;
	/* a listed folder that exists only where DSS serves its listing: a
	 * 404 for it (a DSS version without this object type) hides the
	 * folder instead of failing its parent's walk */
	int optional;
	/* derived name / conditional presence */
	const char *cond_get;
	const char *cond_field;
	const char *cond_equals;
	/* when set, `cond_get` is a list, and cond_field is read in its item
	 * whose field `cond_key` holds the value of the variable `cond_var`
	 * (a plugin's files/ exists where DSS's list of plugins says isDev);
	 * a boolean field reads "true" or "false" */
	const char *cond_key;
	const char *cond_var;
	const struct pt_map *name_map;
};

/* Captured variables, name -> object name (not escaped). */
struct pt_vars {
	int n;
	const char *name[PT_MAX_VARS];
	const char *value[PT_MAX_VARS];
};

/* The root row "/"; every other row is reached from it through
 * pathtab_children(). */
const struct pt_row *pathtab_root(void);

/* The row one level up (NULL for the root). */
const struct pt_row *pathtab_parent(const struct pt_row *row);

/* Kind of the row's last segment.  For PT_SEG_LITERAL *text is the literal;
 * for PT_SEG_VAR the variable name and *suffix what follows it; for
 * PT_SEG_DERIVED the literal prefix and *suffix the literal after the
 * {derived} part ("" for literals).
 * The strings live as long as the process. */
enum pt_seg pathtab_leaf(const struct pt_row *row, const char **text, const char **suffix);

/* The rows whose parent is `row`, in table order; returns how many (at most
 * `max`; no row has more than PT_MAX_CHILDREN). */
size_t pathtab_children(const struct pt_row *row, const struct pt_row **out, size_t max);

/* The row of the folder whose children are named by variable `var` (the
 * listing of the objects it stands for), or NULL. */
const struct pt_row *pathtab_lister(const char *var);
/* Whether the listing document of folder row `dir` is read only as that
 * folder's listing: no other row lists it, no file shows it or is named
 * or conditioned by it, and its items are named by their own fields
 * (no nest, name_get, over or file tree). */
int pathtab_list_only(const struct pt_row *dir);

/* Applies a row's name_map to a field value: returns the mapped string, or
 * the default entry's. */
const char *pathtab_map(const struct pt_map *map, const char *value);

/* Whether the `len` bytes at `value` are one of the map's results (the
 * names a derived segment can take). */
int pathtab_map_has(const struct pt_map *map, const char *value, size_t len);

/* Appends `tmpl` with each {var} replaced by the value from vars encoded
 * by url_encode_segment(), so that a value is always exactly one path
 * segment whatever it holds ('/', '.', "..", '?', '%' ...); {var*} is a
 * path in a file tree: each of its '/'-separated segments is encoded so.
 * Returns 0, or -EINVAL if a variable is not in vars or is empty, or a '{'
 * is not closed. */
int pathtab_expand(const char *tmpl, const struct pt_vars *vars, struct buf *out);

/* Whether `value` satisfies a cond_equals: equal to it or to one of its
 * '|'-separated alternatives. */
int pathtab_cond_holds(const char *cond_equals, const char *value);

/* Sets variable `name` to value (replacing it if set: a nested folder
 * rebinds its variable).  Returns 0, or -E2BIG when vars is full.  The
 * strings are borrowed. */
int pt_vars_set(struct pt_vars *vars, const char *name, const char *value);

/* Returns the value of variable `name`, or NULL. */
const char *pt_vars_get(const struct pt_vars *vars, const char *name);

#endif
