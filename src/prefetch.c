#include "dssfs/prefetch.h"
#include "dssfs/buf.h"
#include "dssfs/escape.h"
#include "dssfs/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct job {
	char *key;
	void *arg;
	uint64_t hash;
	struct job *next;  /* queue order */
	struct job *hnext; /* hash chain of queued keys */
};

struct prefetch {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct job *head, *tail;
	struct job **table; /* queued keys, for deduplication */
	size_t nbuckets, queued, max_queue;
	int stopping;
	int nthreads;
	pthread_t *threads;
	void (*run)(void *ctx, const char *key, void *arg);
	void *ctx;
	void (*free_arg)(void *arg);
};

/* The table of queued keys starts small and doubles whenever it holds more
 * keys than buckets (a listing may queue tens of thousands). */
#define MIN_BUCKETS 64

static void job_free(struct prefetch *p, struct job *j)
{
	if (j->arg && p->free_arg)
		p->free_arg(j->arg);
	free(j->key);
	free(j);
}

static void unhash(struct prefetch *p, struct job *j)
{
	struct job **pp = &p->table[j->hash % p->nbuckets];

	while (*pp != j)
		pp = &(*pp)->hnext;
	*pp = j->hnext;
}

static void *worker(void *arg)
{
	struct prefetch *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->head && !p->stopping)
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stopping)
			break;
		struct job *j = p->head;
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		unhash(p, j);
		p->queued--;
		pthread_mutex_unlock(&p->lock);
		p->run(p->ctx, j->key, j->arg);
		job_free(p, j);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

struct prefetch *prefetch_new(int nthreads, size_t max_queue,
			      void (*run)(void *ctx, const char *key, void *arg), void *ctx,
			      void (*free_arg)(void *arg))
{
	struct prefetch *p = xcalloc(1, sizeof(*p));

	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	p->nbuckets = MIN_BUCKETS;
	p->table = xcalloc(p->nbuckets, sizeof(*p->table));
	p->max_queue = max_queue;
	p->run = run;
	p->ctx = ctx;
	p->free_arg = free_arg;
	p->threads = xcalloc((size_t)(nthreads > 0 ? nthreads : 1), sizeof(*p->threads));
	for (int i = 0; i < nthreads; i++) {
		if (pthread_create(&p->threads[p->nthreads], NULL, worker, p)) {
			log_warn("prefetch: could only start %d threads", p->nthreads);
			break;
		}
		p->nthreads++;
	}
	return p;
}

/* Caller holds the lock. */
static void maybe_grow(struct prefetch *p)
{
	size_t n = p->nbuckets * 2;
	struct job **t;

	if (p->queued <= p->nbuckets)
		return;
	t = xcalloc(n, sizeof(*t));
	for (size_t i = 0; i < p->nbuckets; i++) {
		struct job *j = p->table[i], *next;
		for (; j; j = next) {
			next = j->hnext;
			j->hnext = t[j->hash % n];
			t[j->hash % n] = j;
		}
	}
	free(p->table);
	p->table = t;
	p->nbuckets = n;
}

int prefetch_add(struct prefetch *p, const char *key, void *arg)
{
	uint64_t h = hash64(key);
	int ret = 0;

	pthread_mutex_lock(&p->lock);
	if (p->stopping || !p->nthreads || p->queued >= p->max_queue)
		goto out;
	for (struct job *j = p->table[h % p->nbuckets]; j; j = j->hnext)
		if (j->hash == h && !strcmp(j->key, key))
			goto out;
	struct job *j = xcalloc(1, sizeof(*j));
	j->key = xstrdup(key);
	j->arg = arg;
	arg = NULL;
	j->hash = h;
	j->hnext = p->table[h % p->nbuckets];
	p->table[h % p->nbuckets] = j;
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	p->queued++;
	maybe_grow(p);
	pthread_cond_signal(&p->wake);
	ret = 1;
out:
	pthread_mutex_unlock(&p->lock);
	if (arg && p->free_arg)
		p->free_arg(arg);
	return ret;
}

/* Caller holds the lock. */
static void drop_queue(struct prefetch *p)
{
	while (p->head) {
		struct job *j = p->head;
		p->head = j->next;
		unhash(p, j);
		job_free(p, j);
	}
	p->tail = NULL;
	p->queued = 0;
}

void prefetch_clear(struct prefetch *p)
{
	pthread_mutex_lock(&p->lock);
	drop_queue(p);
	pthread_mutex_unlock(&p->lock);
}

void prefetch_free(struct prefetch *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	drop_queue(p);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	free(p->threads);
	free(p->table);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
