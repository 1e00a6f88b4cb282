/*
 * nodes - the inode table: which inode stands for which path.
 *
 * Two indexes under the tree lock: inode number -> struct inode (the
 * kernel's references), and path -> struct inode (the names in use).  A
 * new inode takes the 64-bit hash of its path as its number (moved on while
 * another inode holds it), so a path keeps its number while the kernel
 * holds it and usually after.  A rename re-keys: the moved inode keeps its
 * number and is bound to the new path, as the kernel believes; the inode
 * that had the new name is no longer found by name (libfuse's
 * rename_node()).  Both indexes grow with their content.
 */
#include "tree_int.h"

#include "dssfs/escape.h"
#include "dssfs/strmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct inode {
	uint64_t ino;
	uint64_t nlookup;
	struct node *cur; /* the binding (one reference held here) */
	struct inode *hnext;
	int named; /* found in t->paths under cur->path */
};

void vars_copy(struct pt_vars *dst, const struct pt_vars *src)
{
	dst->n = src->n;
	for (int i = 0; i < src->n; i++) {
		dst->name[i] = src->name[i];
		dst->value[i] = xstrdup(src->value[i]);
	}
}

void vars_release(struct pt_vars *v)
{
	for (int i = 0; i < v->n; i++)
		free((char *)v->value[i]);
	v->n = 0;
}

/* Bindings allocated and not freed yet, in all trees (tree_get_stats):
 * once the kernel forgot every inode, only the roots' remain. */
static atomic_size_t bindings_alive;

size_t nodes_alive(void)
{
	return atomic_load(&bindings_alive);
}

static struct node *binding_new(uint64_t ino, const char *path, const struct pt_row *row,
				const struct pt_vars *vars)
{
	struct node *n = xcalloc(1, sizeof(*n));

	atomic_fetch_add(&bindings_alive, 1);
	atomic_init(&n->refs, 1);
	atomic_init(&n->shown_size, -1);
	n->ino = ino;
	n->path = xstrdup(path);
	n->row = row;
	vars_copy(&n->vars, vars);
	return n;
}

void node_put(struct node *n)
{
	if (n && atomic_fetch_sub(&n->refs, 1) == 1) {
		atomic_fetch_sub(&bindings_alive, 1);
		vars_release(&n->vars);
		free(n->path);
		free(n);
	}
}

static struct inode *find_ino(struct tree *t, uint64_t ino)
{
	struct inode *i = t->inodes[ino & (t->ninode_buckets - 1)];

	while (i && i->ino != ino)
		i = i->hnext;
	return i;
}

static void inodes_grow(struct tree *t)
{
	size_t nb = t->ninode_buckets * 2;
	struct inode **b = xcalloc(nb, sizeof(*b));

	for (size_t k = 0; k < t->ninode_buckets; k++) {
		for (struct inode *i = t->inodes[k], *next; i; i = next) {
			next = i->hnext;
			i->hnext = b[i->ino & (nb - 1)];
			b[i->ino & (nb - 1)] = i;
		}
	}
	free(t->inodes);
	t->inodes = b;
	t->ninode_buckets = nb;
}

static void inode_insert(struct tree *t, struct inode *i)
{
	struct inode **head = &t->inodes[i->ino & (t->ninode_buckets - 1)];

	i->hnext = *head;
	*head = i;
	if (++t->ninodes > t->ninode_buckets)
		inodes_grow(t);
}

/* The number a new inode for path takes: its hash, moved on while taken. */
static uint64_t free_ino(struct tree *t, const char *path)
{
	uint64_t ino = hash64(path);

	while (ino <= TREE_ROOT_INO || find_ino(t, ino))
		ino++;
	return ino;
}

void nodes_init(struct tree *t)
{
	struct pt_vars none = {0};
	struct inode *root = xcalloc(1, sizeof(*root));

	t->ninode_buckets = 1024;
	t->inodes = xcalloc(t->ninode_buckets, sizeof(*t->inodes));
	t->paths = strmap_new();
	root->ino = TREE_ROOT_INO;
	root->nlookup = 1;
	root->cur = binding_new(TREE_ROOT_INO, "/", pathtab_root(), &none);
	root->named = 1;
	inode_insert(t, root);
	strmap_put(t->paths, "/", root);
}

void nodes_release(struct tree *t)
{
	for (size_t k = 0; k < t->ninode_buckets; k++) {
		for (struct inode *i = t->inodes[k], *next; i; i = next) {
			next = i->hnext;
			node_put(i->cur);
			free(i);
		}
	}
	free(t->inodes);
	strmap_free(t->paths, NULL);
}

struct node *node_of(struct tree *t, uint64_t ino)
{
	struct node *n = NULL;

	pthread_mutex_lock(&t->lock);
	struct inode *i = find_ino(t, ino);
	if (i) {
		n = i->cur;
		atomic_fetch_add(&n->refs, 1);
	}
	pthread_mutex_unlock(&t->lock);
	return n;
}

uint64_t node_ref(struct tree *t, const char *path, const struct pt_row *row,
		  const struct pt_vars *vars)
{
	pthread_mutex_lock(&t->lock);
	struct inode *i = strmap_get(t->paths, path);
	if (!i) {
		i = xcalloc(1, sizeof(*i));
		i->ino = free_ino(t, path);
		i->cur = binding_new(i->ino, path, row, vars);
		i->named = 1;
		inode_insert(t, i);
		strmap_put(t->paths, path, i);
	}
	i->nlookup++;
	uint64_t ino = i->ino;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

uint64_t ino_for_path(struct tree *t, const char *path)
{
	pthread_mutex_lock(&t->lock);
	struct inode *i = strmap_get(t->paths, path);
	uint64_t ino = i ? i->ino : free_ino(t, path);
	pthread_mutex_unlock(&t->lock);
	return ino;
}

uint64_t ino_if_held(struct tree *t, const char *path)
{
	pthread_mutex_lock(&t->lock);
	struct inode *i = strmap_get(t->paths, path);
	uint64_t ino = i ? i->ino : 0;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

void node_rekey(struct tree *t, const char *from, const char *to, const struct pt_row *row,
		const struct pt_vars *vars)
{
	pthread_mutex_lock(&t->lock);
	struct inode *moved = strmap_get(t->paths, from);
	struct inode *old = strmap_get(t->paths, to);
	if (old && old != moved) {
		/* Still reachable by number through the kernel's references,
		 * no longer by name. */
		strmap_del(t->paths, to);
		old->named = 0;
	}
	if (moved) {
		strmap_del(t->paths, from);
		struct node *b = binding_new(moved->ino, to, row, vars);
		node_put(moved->cur);
		moved->cur = b;
		strmap_put(t->paths, to, moved);
	}
	pthread_mutex_unlock(&t->lock);
}

void tree_forget(struct tree *t, uint64_t ino, uint64_t n)
{
	if (ino == TREE_ROOT_INO)
		return;
	pthread_mutex_lock(&t->lock);
	struct inode **pp = &t->inodes[ino & (t->ninode_buckets - 1)];
	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->hnext;
	if (*pp) {
		struct inode *i = *pp;
		i->nlookup = i->nlookup > n ? i->nlookup - n : 0;
		if (!i->nlookup) {
			*pp = i->hnext;
			t->ninodes--;
			if (i->named)
				strmap_del(t->paths, i->cur->path);
			node_put(i->cur);
			free(i);
		}
	}
	pthread_mutex_unlock(&t->lock);
}

void tree_for_each_ino(struct tree *t, void (*fn)(uint64_t ino, void *ctx), void *ctx)
{
	uint64_t *inos;
	size_t n = 0;

	pthread_mutex_lock(&t->lock);
	inos = xmalloc((t->ninodes + 1) * sizeof(*inos));
	for (size_t k = 0; k < t->ninode_buckets; k++)
		for (struct inode *i = t->inodes[k]; i; i = i->hnext)
			inos[n++] = i->ino;
	pthread_mutex_unlock(&t->lock);
	for (size_t k = 0; k < n; k++)
		fn(inos[k], ctx);
	free(inos);
}

int tree_path_of(struct tree *t, uint64_t ino, struct buf *out)
{
	struct node *n = node_of(t, ino);

	if (!n)
		return -ESTALE;
	buf_addstr(out, n->path);
	node_put(n);
	return 0;
}
