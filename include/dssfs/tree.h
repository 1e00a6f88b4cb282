/*
 * tree - the DSS instance as a tree of inodes: what exists, its attributes
 * and its content.  This is the engine under the FUSE operations; it walks
 * the rows of pathtab and never tests which kind of DSS object it holds.
 *
 * Inodes.  The root is inode 1.  Every other node is numbered from a 64-bit
 * hash of its path, so a path keeps its number for as long as the mount
 * lives (also after the kernel forgets it and looks it up again).  A node
 * exists from its first lookup until the kernel forgets it (nlookup 0).
 *
 * Resources.  Every document comes from the cache (one entry per REST
 * resource, e.g. "projects/SALES/datasets/orders"), fetched at most once
 * per TTL however many files and threads ask for it.  A file's bytes are the
 * deterministic rendering of its projection of the resource, so st_size is
 * exact and equal to what read() returns.  Renderings are kept with the
 * resource.
 *
 * Times.  A directory of an object takes the object's
 * versionTag.lastModifiedOn from its parent's list; a fixed directory its
 * parent's time; the root the mount time.  A file takes the versionTag of
 * its own document when the table says where it is, else its directory's
 * time.
 *
 * Errors.  Every function returns 0 or -errno.  A listing that cannot be
 * fetched is an error, never an empty directory.
 *
 * Thread-safe: any number of FUSE worker threads may call in at once.
 */
#ifndef DSSFS_TREE_H
#define DSSFS_TREE_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "dssfs/buf.h"

struct http;
struct cache;
struct tree;

struct tree_options {
	int64_t mount_time_ms; /* epoch ms, the root's time */
	uid_t uid;
	gid_t gid;
	int read_only; /* shows every file without write permission */
};

/* Uses (does not own) h and c; c must be made with tree_cache_new(). */
struct tree *tree_new(struct http *h, struct cache *c, const struct tree_options *o);
void tree_free(struct tree *t); /* NULL-safe */

/* A cache suitable for tree_new (its values are the tree's resources). */
struct cache *tree_cache_new(size_t max_bytes, int64_t ttl_ms);

#define TREE_ROOT_INO 1

/* Resolves `name` in directory `parent`.  On success takes one lookup
 * reference on the child and fills *ino and *st.  On -ENOENT, *permanent
 * says whether the name can never exist there (no table row can match it),
 * so a negative entry may be cached longer. */
int tree_lookup(struct tree *t, uint64_t parent, const char *name, uint64_t *ino, struct stat *st,
		int *permanent);

/* Drops n lookup references. */
void tree_forget(struct tree *t, uint64_t ino, uint64_t n);

int tree_getattr(struct tree *t, uint64_t ino, struct stat *st);

struct tree_dirent {
	char *name;
	uint64_t ino;
	mode_t mode; /* S_IFDIR or S_IFREG */
};

struct tree_dir {
	size_t n;
	struct tree_dirent *ents; /* ".", ".." first */
};

/* Lists a directory completely, or fails. */
int tree_readdir(struct tree *t, uint64_t ino, struct tree_dir *out);
void tree_dir_release(struct tree_dir *d);

/* Copies a file's current bytes into *out (which it resets first).
 * *size_changed is set when their length differs from the st_size last
 * reported for ino: the kernel's cached size must then be dropped, or it
 * would cut reads at the old size. */
int tree_read_file(struct tree *t, uint64_t ino, struct buf *out, int *size_changed);

/* Whether ino is a file that can be saved (table row with a PUT endpoint). */
int tree_is_writable(struct tree *t, uint64_t ino);

/* Forgets every cached resource (SIGHUP). */
void tree_drop_caches(struct tree *t);

#endif
