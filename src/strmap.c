#include "dssfs/strmap.h"
#include "dssfs/buf.h"
#include "dssfs/escape.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 16 bytes and the key: the key's hash is not kept (a growth hashes the
 * keys again), so for one key length in two an entry takes a 16-byte
 * smaller malloc chunk. */
struct entry {
	struct entry *next;
	void *value;
	char key[]; /* NUL-terminated */
};

struct strmap {
	struct entry **b;
	size_t nb, n;
};

#define MIN_BUCKETS 64

struct strmap *strmap_new(void)
{
	struct strmap *m = xcalloc(1, sizeof(*m));

	m->nb = MIN_BUCKETS;
	m->b = xcalloc(m->nb, sizeof(*m->b));
	return m;
}

void strmap_free(struct strmap *m, void (*free_value)(void *value))
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nb; i++) {
		for (struct entry *e = m->b[i], *next; e; e = next) {
			next = e->next;
			if (free_value)
				free_value(e->value);
			free(e);
		}
	}
	free(m->b);
	free(m);
}

static struct entry **slot(const struct strmap *m, const char *key, uint64_t h)
{
	struct entry **pp = &m->b[h & (m->nb - 1)];

	while (*pp && strcmp((*pp)->key, key))
		pp = &(*pp)->next;
	return pp;
}

void *strmap_get(const struct strmap *m, const char *key)
{
	struct entry *e = *slot(m, key, hash64(key));

	return e ? e->value : NULL;
}

static void grow(struct strmap *m)
{
	size_t nb = m->nb * 2;
	struct entry **b = xcalloc(nb, sizeof(*b));

	for (size_t i = 0; i < m->nb; i++) {
		for (struct entry *e = m->b[i], *next; e; e = next) {
			next = e->next;
			uint64_t h = hash64(e->key);
			e->next = b[h & (nb - 1)];
			b[h & (nb - 1)] = e;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
}

void *strmap_put(struct strmap *m, const char *key, void *value)
{
	uint64_t h = hash64(key);
	struct entry **pp = slot(m, key, h);
	size_t kl;

	if (*pp) {
		void *old = (*pp)->value;
		(*pp)->value = value;
		return old;
	}
	kl = strlen(key);
	struct entry *e = xmalloc(sizeof(*e) + kl + 1);
	e->next = NULL;
	e->value = value;
	memcpy(e->key, key, kl + 1);
	*pp = e;
	if (++m->n > m->nb)
		grow(m);
	return NULL;
}

void *strmap_del(struct strmap *m, const char *key)
{
	struct entry **pp = slot(m, key, hash64(key));
	struct entry *e = *pp;
	void *v;

	if (!e)
		return NULL;
	*pp = e->next;
	v = e->value;
	free(e);
	m->n--;
	return v;
}

size_t strmap_size(const struct strmap *m)
{
	return m->n;
}

size_t strmap_overhead(const struct strmap *m)
{
	/* (16: what malloc adds to each block) */
	return sizeof(*m) + m->nb * sizeof(*m->b) + m->n * (sizeof(struct entry) + 1 + 16);
}

void strmap_filter(struct strmap *m, int (*fn)(const char *key, void *value, void *ctx), void *ctx)
{
	for (size_t i = 0; i < m->nb; i++) {
		struct entry **pp = &m->b[i];
		while (*pp) {
			struct entry *e = *pp;
			if (fn(e->key, e->value, ctx)) {
				*pp = e->next;
				free(e);
				m->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}
