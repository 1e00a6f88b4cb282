/*
 * change - what else changes a tree through the mount: scratch files
 * (create, unlink), rename (a save, a copy or a scratch move, see "Scratch
 * files" in tree.h) and setattr.  Saves go through save_file() (save.c).
 */
#include "tree_int.h"

#include "dssfs/escape.h"
#include "dssfs/scratch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The folder ino (a reference: node_put it). */
static int dir_node(struct tree *t, uint64_t ino, struct node **dir)
{
	*dir = node_of(t, ino);
	if (!*dir)
		return -ESTALE;
	if (!(*dir)->row || (*dir)->row->kind != PT_DIR) {
		node_put(*dir);
		*dir = NULL;
		return -ENOTDIR;
	}
	return 0;
}

static int create_in(struct tree *t, struct node *dir, const char *name, mode_t mode, uint64_t *ino,
		     struct stat *st)
{
	struct buf path = BUF_INIT;
	int ret;

	if (t->opt.read_only)
		return -EROFS;
	if (strlen(name) > NAME_MAX_BYTES)
		return -ENAMETOOLONG;
	if (dir->row->content) /* a real file there */
		return content_create(t, dir, name, ino, st);
	/* A name DSS objects can have here is not a scratch name: making a
	 * file there would look like creating a DSS object. */
	if (!name_for_scratch(dir, name))
		return -EPERM;
	child_path(dir, name, &path);
	/* what scratch_create makes: empty, with these bits and time */
	struct scratch_attr sa = {0, mode & 07777, now_epoch_ms()};
	ret = scratch_create(t->scratch, path.data, sa.mode, sa.mtime_ms);
	if (!ret)
		scratch_ref(t, path.data, &dir->vars, &sa, ino, st);
	buf_release(&path);
	return ret;
}

int tree_create(struct tree *t, uint64_t parent, const char *name, mode_t mode, uint64_t *ino,
		struct stat *st)
{
	struct node *dir;
	int ret = dir_node(t, parent, &dir);

	if (ret)
		return ret;
	ret = create_in(t, dir, name, mode, ino, st);
	node_put(dir);
	return ret;
}

int tree_unlink(struct tree *t, uint64_t parent, const char *name)
{
	struct node *dir;
	struct buf path = BUF_INIT;
	struct found f;
	int ret = dir_node(t, parent, &dir);

	if (ret)
		return ret;
	child_path(dir, name, &path);
	ret = dir->row->content ? content_unlink(t, dir, name)
				: scratch_unlink(t->scratch, path.data);
	if (ret == -ENOENT && !dir->row->content) {
		ret = find_api_child(t, dir, name, &f);
		found_release(&f);
		/* DSS objects are never deleted through the mount. */
		if (!ret)
			ret = -EPERM;
	}
	buf_release(&path);
	node_put(dir);
	return ret;
}

struct rename_req {
	struct node *from, *to;
	const char *name, *newname;
	unsigned flags;
	const struct tree_caller *who;
	struct buf src, dst;
};

/* scratch -> DSS file: a save; the scratch file's inode then is the DSS
 * file's (the kernel moved it there). */
static int rename_saves(struct tree *t, struct rename_req *r, const struct found *target,
			const struct buf *data, uint64_t *saved_ino)
{
	struct tree_base base = {-1, 0};
	int ret;

	if (r->flags & RENAME_NOREPLACE)
		return -EEXIST;
	ret = save_file(t, target->row, &target->vars, r->dst.data, data->data, data->len, r->who,
			&base);
	if (ret)
		return ret;
	scratch_unlink(t->scratch, r->src.data);
	node_rekey(t, r->src.data, r->dst.data, target->row, &target->vars);
	*saved_ino = ino_if_held(t, r->dst.data);
	return 0;
}

static int rename_scratch(struct tree *t, struct rename_req *r, uint64_t *saved_ino)
{
	struct buf data = BUF_INIT;
	struct found target = {0};
	int ret = scratch_read(t->scratch, r->src.data, &data);

	if (ret)
		goto out;
	ret = find_api_child(t, r->to, r->newname, &target);
	if (!ret) {
		ret = rename_saves(t, r, &target, &data, saved_ino);
		goto out;
	}
	if (ret != -ENOENT)
		goto out;
	/* scratch -> scratch */
	if (!name_for_scratch(r->to, r->newname)) {
		ret = -EPERM;
		goto out;
	}
	if ((r->flags & RENAME_NOREPLACE) &&
	    !scratch_stat(t->scratch, r->dst.data, &(struct scratch_attr){0})) {
		ret = -EEXIST;
		goto out;
	}
	ret = scratch_rename(t->scratch, r->src.data, r->dst.data);
	if (!ret)
		node_rekey(t, r->src.data, r->dst.data, NULL, &r->to->vars);
out:
	found_release(&target);
	buf_release(&data);
	return ret;
}

/* DSS file -> scratch name: a copy, nothing changes on DSS.  The moved
 * inode becomes the copy (the kernel believes it moved); the DSS file gets
 * an inode of its own at its next lookup. */
static int rename_copies(struct tree *t, struct rename_req *r)
{
	struct buf data = BUF_INIT;
	struct found source = {0};
	int ret = find_api_child(t, r->from, r->name, &source);

	if (ret)
		goto out;
	if (source.row->kind != PT_FILE || !name_for_scratch(r->to, r->newname)) {
		ret = -EPERM;
		goto out;
	}
	struct node tmp = {.row = source.row, .vars = source.vars, .path = r->src.data};
	ret = file_bytes(t, &tmp, &data, NULL);
	if (ret)
		goto out;
	ret = scratch_create(t->scratch, r->dst.data, 0644, now_epoch_ms());
	if (ret == -EEXIST && !(r->flags & RENAME_NOREPLACE))
		ret = 0;
	if (!ret)
		ret = scratch_store(t->scratch, r->dst.data, data.data, data.len, now_epoch_ms());
	if (!ret)
		node_rekey(t, r->src.data, r->dst.data, NULL, &r->to->vars);
out:
	found_release(&source);
	buf_release(&data);
	return ret;
}

int tree_rename(struct tree *t, uint64_t parent, const char *name, uint64_t newparent,
		const char *newname, unsigned flags, const struct tree_caller *who,
		uint64_t *saved_ino)
{
	struct rename_req r = {.name = name,
			       .newname = newname,
			       .flags = flags,
			       .who = who,
			       .src = BUF_INIT,
			       .dst = BUF_INIT};
	int ret;

	*saved_ino = 0;
	if ((ret = dir_node(t, parent, &r.from)) || (ret = dir_node(t, newparent, &r.to)))
		goto out;
	if (flags & ~(unsigned)RENAME_NOREPLACE) {
		ret = -EINVAL;
		goto out;
	}
	if (t->opt.read_only) {
		ret = -EROFS;
		goto out;
	}
	child_path(r.from, name, &r.src);
	child_path(r.to, newname, &r.dst);
	if (r.from->row->content || r.to->row->content) {
		/* within a file tree, or EXDEV: mv copies and deletes */
		ret = r.from->row->content && r.to->row->content
			  ? content_rename(t, r.from, name, r.to, newname, flags)
			  : -EXDEV;
		if (!ret)
			node_rekey(t, r.src.data, r.dst.data, NULL, &r.to->vars);
	} else if (!scratch_stat(t->scratch, r.src.data, &(struct scratch_attr){0}))
		ret = rename_scratch(t, &r, saved_ino);
	else
		ret = rename_copies(t, &r);
out:
	node_put(r.from);
	node_put(r.to);
	buf_release(&r.src);
	buf_release(&r.dst);
	return ret;
}

static int setattr_scratch(struct tree *t, const struct node *n, const struct stat *attr,
			   int to_set)
{
	struct buf data = BUF_INIT;
	int64_t mtime = -1;
	int ret;

	if (to_set & TREE_SET_MTIME)
		mtime = (int64_t)attr->st_mtim.tv_sec * 1000 + attr->st_mtim.tv_nsec / 1000000;
	ret = scratch_set(t->scratch, n->path, to_set & TREE_SET_MODE ? attr->st_mode : (mode_t)-1,
			  mtime);
	if (!ret && (to_set & TREE_SET_SIZE)) {
		ret = scratch_read(t->scratch, n->path, &data);
		if (!ret) {
			buf_resize(&data, (size_t)attr->st_size);
			ret =
			    scratch_store(t->scratch, n->path, data.data, data.len, now_epoch_ms());
		}
	}
	buf_release(&data);
	return ret;
}

/* truncate(2) of a managed folder's file: through a temporary file, as a
 * write would (never the file in memory). */
static int setattr_spooled(struct tree *t, const struct node *n, size_t size,
			   const struct tree_caller *who)
{
	struct tree_base base;
	size_t len, held;
	int fd, ret = tree_open_spooled(t, n->ino, size == 0, &fd, &len, &base);

	if (ret)
		return ret;
	held = len;
	if (size > len && !(ret = tree_spool_account(t, len, size)))
		held = size;
	if (!ret && ftruncate(fd, (off_t)size))
		ret = -errno;
	if (!ret)
		ret = tree_save_spooled(t, n->ino, fd, size, who, &base);
	close(fd);
	tree_spool_account(t, held, 0);
	return ret;
}

int tree_setattr(struct tree *t, uint64_t ino, const struct stat *attr, int to_set,
		 const struct tree_caller *who, struct stat *out)
{
	struct node *n = node_of(t, ino);
	struct buf data = BUF_INIT;
	int ret = 0;

	if (!n)
		return -ESTALE;
	if (t->opt.read_only && (to_set & (TREE_SET_SIZE | TREE_SET_MODE | TREE_SET_MTIME))) {
		ret = -EROFS;
		goto out;
	}
	if (!n->row) {
		ret = setattr_scratch(t, n, attr, to_set);
	} else if ((to_set & TREE_SET_SIZE) && n->row->kind == PT_FILE &&
		   n->row->format == PT_SPOOL) {
		ret = setattr_spooled(t, n, (size_t)attr->st_size, who);
	} else if ((to_set & TREE_SET_SIZE) && n->row->kind == PT_FILE) {
		/* truncate(2) without an open file: change and save at once,
		 * checked against what this process read. */
		struct tree_base base = {-1, 0};
		ret = saves_allowed(t, n->row) ? file_bytes(t, n, &data, NULL) : -EACCES;
		if (!ret) {
			buf_resize(&data, (size_t)attr->st_size);
			ret = save_file(t, n->row, &n->vars, n->path, data.data, data.len, who,
					&base);
		}
	}
	/* Modes, owners and times of DSS objects are not stored: accepted and
	 * ignored, as tools like rsync and cp -p expect them to work. */
	if (!ret)
		ret = node_attr(t, n, out);
out:
	buf_release(&data);
	node_put(n);
	return ret;
}

/* The folder `parent` if it is a writable folder of a file tree (the
 * library, a managed folder's files); elsewhere -EPERM: DSS objects are
 * made and removed in DSS. */
static int file_tree_dir(struct tree *t, uint64_t parent, struct node **dir)
{
	int ret = dir_node(t, parent, dir);

	if (ret)
		return ret;
	ret = t->opt.read_only ? -EROFS : !(*dir)->row->content ? -EPERM : 0;
	if (ret) {
		node_put(*dir);
		*dir = NULL;
	}
	return ret;
}

int tree_mkdir(struct tree *t, uint64_t parent, const char *name, uint64_t *ino, struct stat *st)
{
	struct node *dir;
	int ret = file_tree_dir(t, parent, &dir);

	if (ret)
		return ret;
	ret = strlen(name) > NAME_MAX_BYTES ? -ENAMETOOLONG : content_mkdir(t, dir, name, ino, st);
	node_put(dir);
	return ret;
}

int tree_rmdir(struct tree *t, uint64_t parent, const char *name)
{
	struct node *dir;
	int ret = file_tree_dir(t, parent, &dir);

	if (ret)
		return ret;
	ret = content_rmdir(t, dir, name);
	node_put(dir);
	return ret;
}
