#include "dssfs/prefetch.h"
#include "dssfs/buf.h"
#include "dssfs/escape.h"
#include "dssfs/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job {
	char *key;
	void *arg;
	uint64_t hash;
	struct job *next; /* queue order */
	struct job *prev;
	unsigned batch;	   /* the prefetch_add_front call that queued it last */
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
	int (*run)(void *ctx, const char *key, void *arg);
	void *ctx;
	void (*free_arg)(void *arg);
	/* pacing (prefetch_set_pacing) */
	int (*room)(void *ctx);
	uint64_t (*pressure)(void *ctx);
	unsigned kicks;	  /* prefetch_kick calls */
	unsigned batches; /* prefetch_add_front calls */
	int roomless;	  /* a worker waits for room */
	int limit;	  /* jobs allowed to run at once */
	int active;	  /* jobs running */
	int ok_streak;	  /* fetches without a sign of overload since the last change */
	int64_t ewma_us;  /* fetch times: moving average, and its best */
	int64_t best_us;
	int64_t last_cut_us;
	struct prefetch_stats st;
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

/* Takes j out of the queue order (caller holds the lock). */
static void unlink_job(struct prefetch *p, struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		p->head = j->next;
	if (j->next)
		j->next->prev = j->prev;
	else
		p->tail = j->prev;
	j->next = j->prev = NULL;
}

static struct job *find_job(struct prefetch *p, const char *key, uint64_t h)
{
	for (struct job *j = p->table[h % p->nbuckets]; j; j = j->hnext)
		if (j->hash == h && !strcmp(j->key, key))
			return j;
	return NULL;
}

static void unhash(struct prefetch *p, struct job *j)
{
	struct job **pp = &p->table[j->hash % p->nbuckets];

	while (*pp != j)
		pp = &(*pp)->hnext;
	*pp = j->hnext;
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* How the server took a fetch (caller holds the lock): DSS answered 429 or
 * 503 meanwhile (the pressure count moved), or fetches take far longer than
 * they did at best: halve the jobs run at once (at most once per
 * PREFETCH_CUT_INTERVAL_MS); otherwise one more once `limit` fetches in a
 * row went well, up to the thread count. */
static void feedback(struct prefetch *p, int64_t took_us, int pressed)
{
	int64_t now = now_us();
	int slow;

	p->ewma_us = p->ewma_us ? (7 * p->ewma_us + took_us) / 8 : took_us;
	/* The best drifts up slowly (x2 in ~350 fetches), so that a lasting
	 * change of the network becomes the new normal. */
	if (!p->best_us || p->ewma_us < p->best_us)
		p->best_us = p->ewma_us;
	else
		p->best_us += p->best_us / 512 + 1;
	slow = p->ewma_us > PREFETCH_SLOW_FACTOR * p->best_us &&
	       p->ewma_us - p->best_us > PREFETCH_SLOW_MIN_MS * 1000;
	if (pressed || slow) {
		p->ok_streak = 0;
		if (now - p->last_cut_us >= PREFETCH_CUT_INTERVAL_MS * 1000 && p->limit > 1) {
			p->limit /= 2;
			p->last_cut_us = now;
			p->st.cuts++;
			log_info("prefetch: DSS %s: now at most %d requests at once",
				 pressed ? "asked to slow down (429/503)" : "answers slower",
				 p->limit);
		}
	} else if (++p->ok_streak >= p->limit && p->limit < p->nthreads) {
		p->ok_streak = 0;
		p->limit++;
		pthread_cond_broadcast(&p->wake);
	}
	if (p->limit < p->st.lowest_limit)
		p->st.lowest_limit = p->limit;
}

static void drop_queue(struct prefetch *p);

/* Whether a job may start: there is room for what it fetches (see
 * cache_ahead_room).  Called with the lock, returns with it; checks the
 * room without it. */
static int has_room(struct prefetch *p)
{
	unsigned kicks = p->kicks;
	int room;

	if (!p->room)
		return 1;
	pthread_mutex_unlock(&p->lock);
	room = p->room(p->ctx);
	pthread_mutex_lock(&p->lock);
	if (room < 0) {
		/* What was fetched ahead went stale unused: the walk it was
		 * for is gone (or slower than the cache's TTL, for which
		 * fetching ahead is in vain).  So is what it queued. */
		p->st.abandoned += p->queued;
		drop_queue(p);
		return 0;
	}
	if (room || p->stopping)
		return 1;
	if (kicks == p->kicks) {
		/* (bounded: a kick between the check and the wait is
		 * caught by the next check) */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		p->roomless++;
		p->st.room_waits++;
		pthread_cond_timedwait(&p->wake, &p->lock, &ts);
		p->roomless--;
	}
	return 0;
}

static void *worker(void *arg)
{
	struct prefetch *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->stopping && (!p->head || p->active >= p->limit))
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stopping)
			break;
		if (!has_room(p) || !p->head || p->active >= p->limit)
			continue;
		struct job *j = p->head;
		unlink_job(p, j);
		unhash(p, j);
		p->queued--;
		p->active++;
		uint64_t before = p->pressure ? p->pressure(p->ctx) : 0;
		pthread_mutex_unlock(&p->lock);
		int64_t t0 = now_us();
		int fetched = p->run(p->ctx, j->key, j->arg);
		int64_t took = now_us() - t0;
		job_free(p, j);
		pthread_mutex_lock(&p->lock);
		p->active--;
		if (fetched) {
			p->st.fetched++;
			feedback(p, took, p->pressure && p->pressure(p->ctx) != before);
		}
		if (p->head)
			pthread_cond_signal(&p->wake);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

struct prefetch *prefetch_new(int nthreads, size_t max_queue,
			      int (*run)(void *ctx, const char *key, void *arg), void *ctx,
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
	p->limit = nthreads > 0 ? nthreads : 1;
	p->st.lowest_limit = p->limit;
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
	if (find_job(p, key, h))
		goto out;
	struct job *j = xcalloc(1, sizeof(*j));
	j->key = xstrdup(key);
	j->arg = arg;
	arg = NULL;
	j->hash = h;
	j->hnext = p->table[h % p->nbuckets];
	p->table[h % p->nbuckets] = j;
	j->prev = p->tail;
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

void prefetch_set_pacing(struct prefetch *p, int (*room)(void *ctx),
			 uint64_t (*pressure)(void *ctx))
{
	pthread_mutex_lock(&p->lock);
	p->room = room;
	p->pressure = pressure;
	pthread_mutex_unlock(&p->lock);
}

void prefetch_forget(struct prefetch *p, const char *key)
{
	pthread_mutex_lock(&p->lock);
	struct job *j = find_job(p, key, hash64(key));
	if (j) {
		unlink_job(p, j);
		unhash(p, j);
		job_free(p, j);
		p->queued--;
		p->st.forgotten++;
	}
	pthread_mutex_unlock(&p->lock);
}

void prefetch_kick(struct prefetch *p)
{
	pthread_mutex_lock(&p->lock);
	p->kicks++;
	if (p->roomless)
		pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
}

void prefetch_get_stats(struct prefetch *p, struct prefetch_stats *st)
{
	pthread_mutex_lock(&p->lock);
	*st = p->st;
	st->limit = p->limit;
	st->queued = p->queued;
	pthread_mutex_unlock(&p->lock);
}

void prefetch_add_front(struct prefetch *p, size_t n, const char *const *keys, void **args)
{
	struct job *first = NULL, *last = NULL;
	size_t added = 0;

	pthread_mutex_lock(&p->lock);
	unsigned batch = ++p->batches;
	for (size_t i = 0; i < n; i++) {
		uint64_t h = hash64(keys[i]);
		struct job *j = p->stopping || !p->nthreads ? NULL : find_job(p, keys[i], h);
		if (p->stopping || !p->nthreads || (j && j->batch == batch)) {
			/* (stopping; or already in this batch) */
			if (args[i] && p->free_arg)
				p->free_arg(args[i]);
			continue;
		}
		if (j) { /* queued further back: moved here */
			unlink_job(p, j);
			if (args[i]) {
				if (j->arg && p->free_arg)
					p->free_arg(j->arg);
				j->arg = args[i];
			}
		} else {
			j = xcalloc(1, sizeof(*j));
			j->key = xstrdup(keys[i]);
			j->arg = args[i];
			j->hash = h;
			j->hnext = p->table[h % p->nbuckets];
			p->table[h % p->nbuckets] = j;
			p->queued++;
			added++;
			maybe_grow(p);
		}
		j->batch = batch;
		j->prev = last;
		j->next = NULL;
		if (last)
			last->next = j;
		else
			first = j;
		last = j;
	}
	if (first) {
		last->next = p->head;
		if (p->head)
			p->head->prev = last;
		else
			p->tail = last;
		p->head = first;
	}
	/* Beyond max_queue, what was queued longest ago goes: it is the
	 * farthest from where the walk is. */
	while (p->queued > p->max_queue && p->tail) {
		struct job *j = p->tail;
		unlink_job(p, j);
		unhash(p, j);
		job_free(p, j);
		p->queued--;
	}
	if (added)
		pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
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
