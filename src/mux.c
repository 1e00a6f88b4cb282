/*
 * mux - several DSS instances in one mount (see mux.h).
 */
#include "dssfs/mux.h"

#include "dssfs/buf.h"
#include "dssfs/escape.h"
#include "dssfs/tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct mux_instance {
	char *name; /* the folder's name, escaped */
	struct tree *tree;
};

struct mux {
	struct mux_instance inst[MUX_MAX];
	int n;
	int64_t mount_time_ms;
	uid_t uid;
	gid_t gid;
};

struct mux *mux_new(int64_t mount_time_ms, uid_t uid, gid_t gid)
{
	struct mux *m = xcalloc(1, sizeof(*m));

	m->mount_time_ms = mount_time_ms;
	m->uid = uid;
	m->gid = gid;
	return m;
}

void mux_free(struct mux *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n; i++)
		free(m->inst[i].name);
	free(m);
}

uint64_t mux_ino_base(int index)
{
	return (uint64_t)(index + 1) << TREE_INO_BITS;
}

int mux_add(struct mux *m, const char *name, struct tree *t)
{
	struct buf esc = BUF_INIT;

	if (m->n == MUX_MAX)
		return -E2BIG;
	if (escape_name(name, &esc)) {
		buf_release(&esc);
		return -EINVAL;
	}
	for (int i = 0; i < m->n; i++) {
		if (!strcmp(m->inst[i].name, esc.data)) {
			buf_release(&esc);
			return -EEXIST;
		}
	}
	m->inst[m->n].name = xstrdup(esc.data);
	m->inst[m->n].tree = t;
	m->n++;
	buf_release(&esc);
	return 0;
}

int mux_count(const struct mux *m)
{
	return m->n;
}

const char *mux_name(const struct mux *m, int index)
{
	return m->inst[index].name;
}

struct tree *mux_tree_at(const struct mux *m, int index)
{
	return m->inst[index].tree;
}

int mux_index(const struct mux *m, uint64_t ino)
{
	uint64_t i = ino >> TREE_INO_BITS;

	return i >= 1 && i <= (uint64_t)m->n ? (int)i - 1 : -1;
}

struct tree *mux_tree(const struct mux *m, uint64_t ino)
{
	int i = mux_index(m, ino);

	return i < 0 ? NULL : m->inst[i].tree;
}

void mux_root_attr(const struct mux *m, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = TREE_ROOT_INO;
	st->st_mode = S_IFDIR | 0555;
	st->st_nlink = 2 + (nlink_t)m->n;
	st->st_uid = m->uid;
	st->st_gid = m->gid;
	st->st_blksize = 4096;
	st->st_mtim.tv_sec = m->mount_time_ms / 1000;
	st->st_mtim.tv_nsec = (long)(m->mount_time_ms % 1000) * 1000000;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

int mux_lookup(const struct mux *m, const char *name, uint64_t *ino, struct stat *st)
{
	for (int i = 0; i < m->n; i++) {
		if (strcmp(m->inst[i].name, name))
			continue;
		/* The tree's root is never forgotten (tree_forget): no
		 * lookup reference to take. */
		*ino = tree_root_ino(m->inst[i].tree);
		return tree_getattr(m->inst[i].tree, *ino, st);
	}
	return -ENOENT;
}

static void add_ent(struct tree_dir *d, const char *name, uint64_t ino)
{
	d->ents[d->n].name = xstrdup(name);
	d->ents[d->n].ino = ino;
	d->ents[d->n].mode = S_IFDIR;
	d->n++;
}

void mux_readdir(const struct mux *m, struct tree_dir *out)
{
	out->n = 0;
	out->ents = xcalloc((size_t)m->n + 2, sizeof(*out->ents));
	add_ent(out, ".", TREE_ROOT_INO);
	add_ent(out, "..", TREE_ROOT_INO);
	for (int i = 0; i < m->n; i++)
		add_ent(out, m->inst[i].name, tree_root_ino(m->inst[i].tree));
}
