/*
 * test_nodes - the inode table (src/nodes.c): it grows with what the
 * kernel holds, and every reference taken is given back by forget, down to
 * the root (issue 7, 2.3 and 2.5); what an inode costs (issue 9, goal 3:
 * README, "Memory"); a rename re-keys the path index.
 */
#include "check.h"

#include "../../src/tree_int.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 100000

int main(void)
{
	struct tree t = {0};
	static uint64_t inos[N];
	char path[64];

	pthread_mutex_init(&t.lock, NULL);
	nodes_init(&t);
	CHECK_INT(t.ninodes, 1);
	CHECK_INT(nodes_alive(), 1);

	/* 100,000 inodes, each looked up twice: the table grows past its
	 * first 1,024 buckets (it once stayed at 16,384 whatever it held).
	 * Each is bound to a typical file of a walk: a 41-byte path and two
	 * variables. */
	struct pt_vars two = {2, {"K", "D"}, {"PROJECT_01", "dataset_00001"}};
	size_t before = mallinfo2().uordblks;
	for (int i = 0; i < N; i++) {
		snprintf(path, sizeof(path), "/PROJECT_01/datasets/ds_%06d/schema.json", i);
		inos[i] = node_ref(&t, path, NULL, &two);
		CHECK(node_ref(&t, path, NULL, &two) == inos[i]);
	}
	size_t used = mallinfo2().uordblks - before;
	CHECK_INT(t.ninodes, N + 1);
	CHECK(t.ninode_buckets >= t.ninodes);
	CHECK(t.npath_buckets >= t.npaths);
	CHECK_INT(t.npaths, N + 1);
	/* What the inode tables and bindings take an inode: 272 bytes (a
	 * 208-byte binding holding its path and values, a 48-byte inode, two
	 * bucket pointers).  It was 416 with the path copied into a separate
	 * index and the binding in four allocations.  (Under ASan malloc is
	 * not glibc's and mallinfo2 counts nothing.) */
	printf("inode tables and bindings: %zu bytes an inode\n", used / N);
	CHECK(used / N <= 300);
	CHECK_INT(nodes_alive(), N + 1);
	snprintf(path, sizeof(path), "/PROJECT_01/datasets/ds_%06d/schema.json", N / 2);
	CHECK(ino_if_held(&t, path) == inos[N / 2]);

	/* a rename: the moved inode keeps its number and answers for the new
	 * name only; the inode that had the new name is no longer found by
	 * name, but still by number until the kernel forgets it */
	{
		char from[64], to[64];
		snprintf(from, sizeof(from), "/PROJECT_01/datasets/ds_%06d/schema.json", 3);
		snprintf(to, sizeof(to), "/PROJECT_01/datasets/ds_%06d/schema.json", 4);
		node_rekey(&t, from, to, NULL, &two);
		CHECK(ino_if_held(&t, from) == 0);
		CHECK(ino_if_held(&t, to) == inos[3]);
		CHECK_INT(t.npaths, N);
		struct node *b = node_of(&t, inos[3]);
		CHECK(b && !strcmp(b->path, to) && b->vars.n == 2 &&
		      !strcmp(b->vars.value[1], "dataset_00001"));
		node_put(b);
		b = node_of(&t, inos[4]);
		CHECK(b && !strcmp(b->path, to));
		node_put(b);
		/* a rename back to a free name */
		node_rekey(&t, to, from, NULL, &two);
		CHECK(ino_if_held(&t, from) == inos[3]);
		CHECK(ino_if_held(&t, to) == 0);
	}

	/* a binding in use outlives its inode's forget */
	struct node *held = node_of(&t, inos[7]);
	CHECK(held != NULL);

	/* every reference given back: only the root is left */
	for (int i = 0; i < N; i++) {
		tree_forget(&t, inos[i], 1);
		tree_forget(&t, inos[i], 1);
	}
	CHECK_INT(t.ninodes, 1);
	CHECK(ino_if_held(&t, path) == 0);
	CHECK_INT(nodes_alive(), 2);
	CHECK(held && !strcmp(held->path, "/PROJECT_01/datasets/ds_000007/schema.json"));
	node_put(held);
	CHECK_INT(nodes_alive(), 1);
	tree_forget(&t, TREE_ROOT_INO, 1); /* the root is never forgotten */
	CHECK_INT(t.ninodes, 1);

	nodes_release(&t);
	CHECK_INT(nodes_alive(), 0);
	pthread_mutex_destroy(&t.lock);

	/* A tree with an ino_base (one of several instances of a mount): its
	 * root and every inode carry the base in their high bits, whatever
	 * their path's hash, and the root is still never forgotten. */
	struct tree u = {.opt.ino_base = (uint64_t)3 << TREE_INO_BITS};
	pthread_mutex_init(&u.lock, NULL);
	nodes_init(&u);
	CHECK(tree_root_ino(&u) == (u.opt.ino_base | TREE_ROOT_INO));
	CHECK(ino_if_held(&u, "/") == tree_root_ino(&u));
	for (int i = 0; i < 1000; i++) {
		snprintf(path, sizeof(path), "/P/datasets/ds_%04d/schema.json", i);
		uint64_t ino = node_ref(&u, path, NULL, &two);
		CHECK((ino & ~TREE_INO_LOW_MASK) == u.opt.ino_base);
		CHECK((ino & TREE_INO_LOW_MASK) > TREE_ROOT_INO);
	}
	CHECK_INT(u.ninodes, 1001);
	tree_forget(&u, tree_root_ino(&u), 1);
	tree_forget(&u, TREE_ROOT_INO, 1); /* not this tree's: nothing */
	CHECK_INT(u.ninodes, 1001);
	nodes_release(&u);
	pthread_mutex_destroy(&u.lock);
	CHECK_DONE();
}
