/*
 * test_nodes - the inode table (src/nodes.c): it grows with what the
 * kernel holds, and every reference taken is given back by forget, down to
 * the root (issue 7, 2.3 and 2.5).
 */
#include "check.h"

#include "../../src/tree_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 100000

int main(void)
{
	struct tree t = {0};
	struct pt_vars none = {0};
	static uint64_t inos[N];
	char path[64];

	pthread_mutex_init(&t.lock, NULL);
	nodes_init(&t);
	CHECK_INT(t.ninodes, 1);
	CHECK_INT(nodes_alive(), 1);

	/* 100,000 inodes, each looked up twice: the table grows past its
	 * first 1,024 buckets (it once stayed at 16,384 whatever it held). */
	for (int i = 0; i < N; i++) {
		snprintf(path, sizeof(path), "/P/datasets/ds_%d", i);
		inos[i] = node_ref(&t, path, NULL, &none);
		CHECK(node_ref(&t, path, NULL, &none) == inos[i]);
	}
	CHECK_INT(t.ninodes, N + 1);
	CHECK(t.ninode_buckets >= t.ninodes);
	CHECK_INT(nodes_alive(), N + 1);
	snprintf(path, sizeof(path), "/P/datasets/ds_%d", N / 2);
	CHECK(ino_if_held(&t, path) == inos[N / 2]);

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
	CHECK(held && !strcmp(held->path, "/P/datasets/ds_7"));
	node_put(held);
	CHECK_INT(nodes_alive(), 1);
	tree_forget(&t, TREE_ROOT_INO, 1); /* the root is never forgotten */
	CHECK_INT(t.ninodes, 1);

	nodes_release(&t);
	CHECK_INT(nodes_alive(), 0);
	pthread_mutex_destroy(&t.lock);
	CHECK_DONE();
}
