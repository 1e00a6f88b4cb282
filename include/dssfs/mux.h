/*
 * mux - several DSS instances in one mount (-o instances=): the mount's
 * root is a read-only folder of one folder per instance, and each of those
 * is the root of that instance's tree.
 *
 * Inode numbers: the mount's root is TREE_ROOT_INO (FUSE's root); the tree
 * of instance i is made with ino_base mux_ino_base(i) (tree_options), so
 * every number it hands out carries i + 1 in its high bits and says which
 * tree holds it.  The FUSE operations only pick the tree (mux_tree) and
 * pass numbers through unchanged, kernel invalidations included.
 *
 * Built before the session starts, read-only afterwards: the lookups are
 * thread-safe.
 */
#ifndef DSSFS_MUX_H
#define DSSFS_MUX_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct tree;
struct tree_dir;

#define MUX_MAX 64 /* instances in one mount, at most */

struct mux;

/* The root's attributes: a folder of mode 0555 owned by uid:gid, of time
 * mount_time_ms (epoch ms). */
struct mux *mux_new(int64_t mount_time_ms, uid_t uid, gid_t gid);
void mux_free(struct mux *m); /* NULL-safe; does not free the trees */

/* The ino_base of the tree of the index-th instance (from 0). */
uint64_t mux_ino_base(int index);
/* Adds the next instance (index mux_count(m)): its folder is `name`,
 * escaped as DSS names are (escape.h); t (not owned) must have been made
 * with that index's ino_base.  Returns 0, -EEXIST if two names escape to
 * one folder name, -EINVAL for an empty name, -E2BIG beyond MUX_MAX. */
int mux_add(struct mux *m, const char *name, struct tree *t);
int mux_count(const struct mux *m);
/* The folder name and the tree of the index-th instance. */
const char *mux_name(const struct mux *m, int index);
struct tree *mux_tree_at(const struct mux *m, int index);

/* The index of the instance whose tree holds ino, or -1: the mount's root
 * (or a number no tree hands out).  mux_tree: that tree, or NULL. */
int mux_index(const struct mux *m, uint64_t ino);
struct tree *mux_tree(const struct mux *m, uint64_t ino);

/* The root: its attributes; the instance folder `name` (its tree's root,
 * attributes from the tree: 0, -ENOENT, or the tree's error); its listing
 * (".", "..", then the folders in the order they were added). */
void mux_root_attr(const struct mux *m, struct stat *st);
int mux_lookup(const struct mux *m, const char *name, uint64_t *ino, struct stat *st);
void mux_readdir(const struct mux *m, struct tree_dir *out);

#endif
