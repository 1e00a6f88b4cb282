#include "check.h"
#include "dssfs/mux.h"
#include "dssfs/tree.h"

#include <errno.h>
#include <stdlib.h>

/* The mux only compares tree pointers and asks a tree for its root's
 * number and attributes: these stand in for the trees. */
struct tree {
	uint64_t base;
};

uint64_t tree_root_ino(const struct tree *t)
{
	return t->base | TREE_ROOT_INO;
}

int tree_getattr(struct tree *t, uint64_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = S_IFDIR | 0755;
	return t->base == mux_ino_base(1) ? -EHOSTUNREACH : 0; /* prod is down */
}

void tree_dir_release(struct tree_dir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->ents[i].name);
	free(d->ents);
}

int main(void)
{
	struct tree design = {mux_ino_base(0)}, prod = {mux_ino_base(1)}, odd = {mux_ino_base(2)};
	struct mux *m = mux_new(1700000000123, 1000, 1000);
	struct stat st;
	struct tree_dir d;
	uint64_t ino = 0;

	CHECK_INT(mux_add(m, "design", &design), 0);
	CHECK_INT(mux_add(m, "prod", &prod), 0);
	CHECK_INT(mux_add(m, "a/..", &odd), 0);
	CHECK_INT(mux_add(m, "design", &odd), -EEXIST);
	CHECK_INT(mux_add(m, "", &odd), -EINVAL);
	CHECK_INT(mux_count(m), 3);
	CHECK_STR(mux_name(m, 2), "a%2F..");

	/* which tree holds an inode: its high bits, nothing else */
	const struct {
		uint64_t ino;
		int index;
	} rows[] = {
	    {TREE_ROOT_INO, -1},
	    {0, -1},
	    {TREE_INO_LOW_MASK, -1},
	    {mux_ino_base(0) | TREE_ROOT_INO, 0},
	    {mux_ino_base(0) | TREE_INO_LOW_MASK, 0},
	    {mux_ino_base(1) | 12345, 1},
	    {mux_ino_base(2) | 2, 2},
	    {mux_ino_base(3) | 2, -1}, /* no fourth instance */
	    {UINT64_MAX, -1},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		CHECK_INT(mux_index(m, rows[i].ino), rows[i].index);
		CHECK(mux_tree(m, rows[i].ino) ==
		      (rows[i].index < 0 ? NULL : mux_tree_at(m, rows[i].index)));
	}

	mux_root_attr(m, &st);
	CHECK_INT(st.st_ino, TREE_ROOT_INO);
	CHECK_INT(st.st_mode, S_IFDIR | 0555);
	CHECK_INT(st.st_uid, 1000);
	CHECK_INT(st.st_mtim.tv_sec, 1700000000);
	CHECK_INT(st.st_mtim.tv_nsec, 123000000);

	CHECK_INT(mux_lookup(m, "design", &ino, &st), 0);
	CHECK_INT(ino, mux_ino_base(0) | TREE_ROOT_INO);
	CHECK_INT(mux_lookup(m, "prod", &ino, &st), -EHOSTUNREACH);
	CHECK_INT(mux_lookup(m, "a%2F..", &ino, &st), 0);
	CHECK_INT(mux_lookup(m, "a/..", &ino, &st), -ENOENT);
	CHECK_INT(mux_lookup(m, "staging", &ino, &st), -ENOENT);

	mux_readdir(m, &d);
	CHECK_INT(d.n, 5);
	CHECK_STR(d.ents[0].name, ".");
	CHECK_STR(d.ents[1].name, "..");
	CHECK_STR(d.ents[2].name, "design");
	CHECK_STR(d.ents[3].name, "prod");
	CHECK_INT(d.ents[3].ino, mux_ino_base(1) | TREE_ROOT_INO);
	CHECK_INT(d.ents[4].mode, S_IFDIR);
	tree_dir_release(&d);
	mux_free(m);
	mux_free(NULL);
	CHECK_DONE();
}
