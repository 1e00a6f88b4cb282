/*
 * nodes - the inode table: which inode stands for which path.
 *
 * Two indexes under the tree lock: inode number -> struct inode (the
 * kernel's references), and path -> struct inode (the names in use), both
 * chained through the inodes themselves.  A new inode takes the 64-bit hash
 * of its path as its number (moved on while another inode holds it), so a
 * path keeps its number while the kernel holds it and usually after.  A
 * rename re-keys: the moved inode keeps its number and is bound to the new
 * path, as the kernel believes; the inode that had the new name is no
 * longer found by name (libfuse's rename_node()).  Both indexes grow with
 * their content.
 */
#include "tree_int.h"

#include "dssfs/escape.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* 40 bytes (a 48-byte malloc chunk): with its binding, what one inode the
 * kernel holds costs here (README, "Memory"). */
struct inode {
	uint64_t ino;
	uint64_t nlookup : 63;
	uint64_t named : 1;  /* found by name: in the path index under cur->path */
	struct node *cur;    /* the binding (one reference held here) */
	struct inode *hnext; /* the next in its bucket of the number index */
	struct inode *pnext; /* the next in its bucket of the path index */
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

/* A binding is one allocation: the struct, then its path and its
 * variables' values (one malloc chunk an inode instead of 2 + one per
 * variable). */
static struct node *binding_new(uint64_t ino, const char *path, const struct pt_row *row,
				const struct pt_vars *vars)
{
	size_t plen = strlen(path) + 1, size = sizeof(struct node) + plen;

	for (int i = 0; i < vars->n; i++)
		size += strlen(vars->value[i]) + 1;
	struct node *n = xcalloc(1, size);
	char *p = (char *)(n + 1);

	atomic_fetch_add(&bindings_alive, 1);
	atomic_init(&n->refs, 1);
	atomic_init(&n->shown_size, -1);
	n->ino = ino;
	n->path = memcpy(p, path, plen);
	p += plen;
	n->row = row;
	n->vars.n = vars->n;
	for (int i = 0; i < vars->n; i++) {
		size_t len = strlen(vars->value[i]) + 1;
		n->vars.name[i] = vars->name[i];
		n->vars.value[i] = memcpy(p, vars->value[i], len);
		p += len;
	}
	return n;
}

void node_put(struct node *n)
{
	if (n && atomic_fetch_sub(&n->refs, 1) == 1) {
		atomic_fetch_sub(&bindings_alive, 1);
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

/* The path index: the inodes found by name, chained through pnext in
 * buckets by the hash of their binding's path (intrusive: no copy of the
 * path, no entry to allocate). */
static struct inode **path_slot(struct tree *t, const char *path)
{
	struct inode **pp = &t->paths[hash64(path) & (t->npath_buckets - 1)];

	while (*pp && strcmp((*pp)->cur->path, path) != 0)
		pp = &(*pp)->pnext;
	return pp;
}

static struct inode *path_find(struct tree *t, const char *path)
{
	return *path_slot(t, path);
}

static void path_insert(struct tree *t, struct inode *i)
{
	if (++t->npaths > t->npath_buckets) {
		size_t nb = t->npath_buckets * 2;
		struct inode **b = xcalloc(nb, sizeof(*b));

		for (size_t k = 0; k < t->npath_buckets; k++) {
			for (struct inode *j = t->paths[k], *next; j; j = next) {
				next = j->pnext;
				struct inode **head = &b[hash64(j->cur->path) & (nb - 1)];
				j->pnext = *head;
				*head = j;
			}
		}
		free(t->paths);
		t->paths = b;
		t->npath_buckets = nb;
	}
	struct inode **head = &t->paths[hash64(i->cur->path) & (t->npath_buckets - 1)];
	i->pnext = *head;
	*head = i;
	i->named = 1;
}

/* Takes i out of the path index (it must be named). */
static void path_remove(struct tree *t, struct inode *i)
{
	struct inode **pp = path_slot(t, i->cur->path);

	if (*pp == i)
		*pp = i->pnext;
	i->pnext = NULL;
	i->named = 0;
	t->npaths--;
}

/* The number a new inode for path takes: its hash, moved on while taken;
 * in a tree with an ino_base, within the base's range. */
static uint64_t free_ino(struct tree *t, const char *path)
{
	uint64_t base = t->opt.ino_base, low = base ? TREE_INO_LOW_MASK : UINT64_MAX;
	uint64_t ino = (hash64(path) & low) | base;

	while ((ino & low) <= TREE_ROOT_INO || find_ino(t, ino))
		ino = ((ino + 1) & low) | base;
	return ino;
}

uint64_t tree_root_ino(const struct tree *t)
{
	return t->opt.ino_base | TREE_ROOT_INO;
}

void nodes_init(struct tree *t)
{
	struct pt_vars none = {0};
	struct inode *root = xcalloc(1, sizeof(*root));

	t->ninode_buckets = 1024;
	t->inodes = xcalloc(t->ninode_buckets, sizeof(*t->inodes));
	t->npath_buckets = 1024;
	t->paths = xcalloc(t->npath_buckets, sizeof(*t->paths));
	root->ino = tree_root_ino(t);
	root->nlookup = 1;
	root->cur = binding_new(root->ino, "/", pathtab_root(), &none);
	inode_insert(t, root);
	path_insert(t, root);
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
	free(t->paths);
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
	struct inode *i = path_find(t, path);
	if (!i) {
		i = xcalloc(1, sizeof(*i));
		i->ino = free_ino(t, path);
		i->cur = binding_new(i->ino, path, row, vars);
		inode_insert(t, i);
		path_insert(t, i);
	}
	i->nlookup++;
	uint64_t ino = i->ino;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

uint64_t ino_for_path(struct tree *t, const char *path)
{
	pthread_mutex_lock(&t->lock);
	struct inode *i = path_find(t, path);
	uint64_t ino = i ? i->ino : free_ino(t, path);
	pthread_mutex_unlock(&t->lock);
	return ino;
}

uint64_t ino_if_held(struct tree *t, const char *path)
{
	pthread_mutex_lock(&t->lock);
	struct inode *i = path_find(t, path);
	uint64_t ino = i ? i->ino : 0;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

void node_rekey(struct tree *t, const char *from, const char *to, const struct pt_row *row,
		const struct pt_vars *vars)
{
	pthread_mutex_lock(&t->lock);
	struct inode *moved = path_find(t, from);
	struct inode *old = path_find(t, to);
	if (old && old != moved) {
		/* Still reachable by number through the kernel's references,
		 * no longer by name. */
		path_remove(t, old);
	}
	if (moved) {
		path_remove(t, moved);
		struct node *b = binding_new(moved->ino, to, row, vars);
		node_put(moved->cur);
		moved->cur = b;
		path_insert(t, moved);
	}
	pthread_mutex_unlock(&t->lock);
}

void tree_forget(struct tree *t, uint64_t ino, uint64_t n)
{
	if (ino == tree_root_ino(t))
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
				path_remove(t, i);
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
