#include "dssfs/cache.h"
#include "dssfs/buf.h"
#include "dssfs/escape.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cache_ref {
	atomic_int refs;
	uint64_t seq;
	void *value;
	size_t cost;
	void (*free_value)(void *);
};

enum { LRU_USED, LRU_KEPT, LRU_AHEAD, LRU_CLASSES };

struct entry {
	char *key;
	uint64_t hash;
	struct entry *hnext;
	struct entry *lprev, *lnext; /* LRU list, only while item != NULL */
	int lclass;		     /* which one (lru_class, when linked) */
	struct cache_ref *item;	     /* the held value, or NULL */
	int64_t fetched_at;
	int fresh_ok;	    /* cleared by invalidation: item must be refetched */
	int fetching;	    /* a thread is fetching this key */
	int waiters;	    /* threads waiting for that fetch */
	unsigned fetch_seq; /* bumped when a fetch finishes */
	int result;	    /* result of the last finished fetch */
	/* fetched ahead (cache_get_ahead) and not used yet: in the LRU list
	 * of those, which stays in the order of their fetches */
	int ahead;
	int keep; /* fetched by cache_get_keep: dropped after the others */
};

struct cache {
	pthread_mutex_t lock;
	pthread_cond_t done; /* broadcast when any fetch finishes */
	struct entry **table;
	size_t nbuckets;
	/* One LRU list per class of value (lru_class), head = most recently
	 * used: eviction takes the tails, class after class, each in O(1). */
	struct entry *lru_head[LRU_CLASSES], *lru_tail[LRU_CLASSES];
	size_t max_bytes;
	int64_t ttl_ms;
	void (*free_value)(void *);
	cache_clock_fn clock;
	cache_cancel_fn cancelled; /* polled by waiters, without the lock */
	void *cancel_arg;
	uint64_t seq;		   /* fetches stored so far */
	void (*room_hook)(void *); /* cache_set_room_hook */
	void (*fetched_hook)(void *, const char *);
	void *room_arg;
	struct cache_stats st;
};

/* The table starts small and doubles whenever it holds more entries than
 * buckets, so chains stay short however many keys a walk touches. */
#define MIN_BUCKETS 64

int64_t cache_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct cache *cache_new(size_t max_bytes, int64_t ttl_ms, void (*free_value)(void *),
			cache_clock_fn clock)
{
	struct cache *c = xcalloc(1, sizeof(*c));
	pthread_condattr_t ca;

	pthread_mutex_init(&c->lock, NULL);
	/* Waits poll the cancel hook: measured on the clock that never jumps. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->done, &ca);
	pthread_condattr_destroy(&ca);
	c->nbuckets = MIN_BUCKETS;
	c->table = xcalloc(c->nbuckets, sizeof(*c->table));
	c->max_bytes = max_bytes;
	c->ttl_ms = ttl_ms;
	c->free_value = free_value;
	c->clock = clock ? clock : cache_monotonic_ms;
	return c;
}

void cache_set_cancel(struct cache *c, cache_cancel_fn cancelled, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->cancelled = cancelled;
	c->cancel_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

static void ref_put(struct cache_ref *r)
{
	if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
		if (r->free_value)
			r->free_value(r->value);
		free(r);
	}
}

void cache_ref_put(struct cache_ref *ref)
{
	ref_put(ref);
}

void *cache_ref_value(const struct cache_ref *ref)
{
	return ref->value;
}

uint64_t cache_ref_seq(const struct cache_ref *ref)
{
	return ref->seq;
}

static struct cache_ref *ref_get(struct cache_ref *r)
{
	atomic_fetch_add(&r->refs, 1);
	return r;
}

/* The order of eviction: values used first, then those kept
 * (cache_get_keep: listings, which every lookup in their folder reads
 * again), then those fetched ahead and not used yet (what a walk is about
 * to read), oldest first. */
static int lru_class(const struct entry *e)
{
	return e->ahead ? LRU_AHEAD : e->keep ? LRU_KEPT : LRU_USED;
}

static void lru_unlink(struct cache *c, struct entry *e)
{
	int k = e->lclass;

	if (e->lprev)
		e->lprev->lnext = e->lnext;
	else if (c->lru_head[k] == e)
		c->lru_head[k] = e->lnext;
	if (e->lnext)
		e->lnext->lprev = e->lprev;
	else if (c->lru_tail[k] == e)
		c->lru_tail[k] = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void lru_push_front(struct cache *c, struct entry *e)
{
	int k = e->lclass = lru_class(e);

	e->lprev = NULL;
	e->lnext = c->lru_head[k];
	if (c->lru_head[k])
		c->lru_head[k]->lprev = e;
	c->lru_head[k] = e;
	if (!c->lru_tail[k])
		c->lru_tail[k] = e;
}

/* e is no longer "fetched ahead, unused" (caller holds the lock). */
static void ahead_unmark(struct cache *c, struct entry *e)
{
	if (!e->ahead)
		return;
	/* (held, so in the LRU lists: into its new class's) */
	lru_unlink(c, e);
	e->ahead = 0;
	c->st.ahead_bytes -= e->item->cost;
	lru_push_front(c, e);
}

static void ahead_mark(struct cache *c, struct entry *e)
{
	e->ahead = 1;
	c->st.ahead_bytes += e->item->cost;
}

/* A value fetched ahead is used: the room it took is free again. */
static int ahead_used(struct cache *c, struct entry *e)
{
	if (!e->ahead)
		return 0;
	ahead_unmark(c, e);
	return 1;
}

/* Drops the held value of e (caller holds the lock). */
static void drop_item(struct cache *c, struct entry *e)
{
	if (!e->item)
		return;
	if (e->ahead) {
		c->st.ahead_dropped++;
		ahead_unmark(c, e);
	}
	lru_unlink(c, e);
	c->st.bytes -= e->item->cost;
	ref_put(e->item);
	e->item = NULL;
}

static struct entry **find_slot(struct cache *c, const char *key, uint64_t h)
{
	struct entry **pp = &c->table[h % c->nbuckets];

	while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key)))
		pp = &(*pp)->hnext;
	return pp;
}

/* Doubles the table once it holds more entries than buckets (caller holds
 * the lock).  Entries are allocated one by one: pointers to them held by
 * waiting threads stay valid. */
static void maybe_grow(struct cache *c)
{
	size_t n = c->nbuckets * 2;
	struct entry **t;

	if (c->st.entries <= c->nbuckets)
		return;
	t = xcalloc(n, sizeof(*t));
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct entry *e = c->table[i], *next;
		for (; e; e = next) {
			next = e->hnext;
			e->hnext = t[e->hash % n];
			t[e->hash % n] = e;
		}
	}
	free(c->table);
	c->table = t;
	c->nbuckets = n;
}

/* Removes e from the table if nothing refers to it any more. */
static void maybe_remove(struct cache *c, struct entry *e)
{
	if (e->item || e->fetching || e->waiters)
		return;
	struct entry **pp = find_slot(c, e->key, e->hash);
	*pp = e->hnext;
	c->st.entries--;
	free(e->key);
	free(e);
}

static void evict(struct cache *c, struct entry *e)
{
	drop_item(c, e);
	c->st.evictions++;
	maybe_remove(c, e);
}

/* Drops the least recently used values beyond max_bytes: first those
 * used, then those kept (cache_get_keep: listings, which every lookup in
 * their folder reads again), then (only if they alone are beyond it) those
 * fetched ahead and not used yet, oldest first: what a walk is about to
 * read. */
static void enforce_cap(struct cache *c)
{
	for (int k = 0; k < LRU_CLASSES; k++)
		while (c->st.bytes > c->max_bytes && c->lru_tail[k])
			evict(c, c->lru_tail[k]);
}

static int is_fresh(struct cache *c, const struct entry *e)
{
	return e->item && e->fresh_ok && c->clock() - e->fetched_at < c->ttl_ms;
}

int cache_peek(struct cache *c, const char *key, struct cache_ref **ref)
{
	uint64_t h = hash64(key);
	int ret = -ENOENT;

	pthread_mutex_lock(&c->lock);
	struct entry *e = *find_slot(c, key, h);
	if (e && is_fresh(c, e)) {
		*ref = ref_get(e->item);
		ret = 0;
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

/* Waits (lock held) for the fetch under way for e to finish.  Returns 0
 * once it has, or the -errno of the cancel hook if that fired first.  The
 * hook runs without the lock: it may take locks of its own (libfuse's). */
static int wait_fetch(struct cache *c, struct entry *e)
{
	unsigned seq = e->fetch_seq;
	struct timespec ts;
	int ret;

	while (e->fetch_seq == seq) {
		if (!c->cancelled) {
			pthread_cond_wait(&c->done, &c->lock);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += CACHE_CANCEL_POLL_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->done, &c->lock, &ts);
		if (e->fetch_seq != seq)
			break;
		pthread_mutex_unlock(&c->lock);
		ret = c->cancelled(c->cancel_arg);
		pthread_mutex_lock(&c->lock);
		/* e cannot go meanwhile: it has a waiter (us) */
		if (ret && e->fetch_seq == seq)
			return ret;
	}
	return 0;
}

/* cache_get; `ahead`: cache_get_ahead; `keep`: the value is kept longer
 * (cache_get_keep). */
static int get(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
	       struct cache_ref **ref, int ahead, int keep)
{
	uint64_t h = hash64(key);
	struct entry *e;
	void *value = NULL;
	size_t cost = 0;
	int used = 0, ret;
	void (*hook)(void *);
	void (*fetched)(void *, const char *);
	void *hook_arg;

	*ref = NULL;
	pthread_mutex_lock(&c->lock);
retry:
	e = *find_slot(c, key, h);
	if (!e) {
		e = xcalloc(1, sizeof(*e));
		e->key = xstrdup(key);
		e->hash = h;
		e->hnext = c->table[h % c->nbuckets];
		c->table[h % c->nbuckets] = e;
		c->st.entries++;
		maybe_grow(c);
	}
	if (is_fresh(c, e)) {
		c->st.hits++;
		/* (values fetched ahead keep the order of their fetches) */
		if (!e->ahead) {
			lru_unlink(c, e);
			lru_push_front(c, e);
		}
		*ref = ref_get(e->item);
		used = !ahead && ahead_used(c, e);
		hook = c->room_hook;
		hook_arg = c->room_arg;
		pthread_mutex_unlock(&c->lock);
		if (used && hook)
			hook(hook_arg);
		return 0;
	}
	if (e->fetching) {
		c->st.coalesced++;
		e->waiters++;
		ret = wait_fetch(c, e);
		if (!ret && (e->result == -EINTR || e->result == -ECANCELED) && c->cancelled) {
			/* The fetching thread was cancelled: is this one too?
			 * (Still counted as a waiter: e stays.) */
			pthread_mutex_unlock(&c->lock);
			ret = c->cancelled(c->cancel_arg);
			pthread_mutex_lock(&c->lock);
		}
		e->waiters--;
		if (ret) {
			/* This waiter is cancelled; a fetch goes on for the others. */
			maybe_remove(c, e);
			pthread_mutex_unlock(&c->lock);
			return ret;
		}
		ret = e->result;
		if ((!ret && !e->item) || ret == -EINTR || ret == -ECANCELED) {
			/* Dropped between the fetch and our wake-up, or the fetching
			 * thread was cancelled (its user's interrupt, not this
			 * one's): ask again. */
			maybe_remove(c, e);
			goto retry;
		}
		if (!ret) {
			*ref = ref_get(e->item);
			used = !ahead && ahead_used(c, e);
		}
		maybe_remove(c, e);
		hook = c->room_hook;
		hook_arg = c->room_arg;
		pthread_mutex_unlock(&c->lock);
		if (used && hook)
			hook(hook_arg);
		return ret;
	}
	e->fetching = 1;
	e->fresh_ok = 1;
	c->st.fetches++;
	pthread_mutex_unlock(&c->lock);

	ret = fetch(ctx, key, &value, &cost);

	pthread_mutex_lock(&c->lock);
	e->fetching = 0;
	e->result = ret;
	e->fetch_seq++;
	drop_item(c, e);
	if (!ret) {
		struct cache_ref *r = xcalloc(1, sizeof(*r));
		atomic_init(&r->refs, 1);
		r->value = value;
		r->seq = ++c->seq;
		r->cost = cost;
		r->free_value = c->free_value;
		e->item = r;
		e->fetched_at = c->clock();
		c->st.bytes += cost;
		e->keep = keep;
		if (ahead)
			ahead_mark(c, e);
		lru_push_front(c, e);
		*ref = ref_get(r);
	}
	pthread_cond_broadcast(&c->done);
	if (e->item && e->waiters == 0)
		enforce_cap(c);
	else if (!e->item)
		maybe_remove(c, e);
	fetched = c->fetched_hook;
	hook_arg = c->room_arg;
	pthread_mutex_unlock(&c->lock);
	if (!ahead && fetched)
		fetched(hook_arg, key);
	return ret;
}

int cache_get(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
	      struct cache_ref **ref)
{
	return get(c, key, fetch, ctx, ref, 0, 0);
}

int cache_get_keep(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
		   struct cache_ref **ref, int ahead)
{
	return get(c, key, fetch, ctx, ref, ahead, 1);
}

int cache_get_ahead(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
		    struct cache_ref **ref)
{
	return get(c, key, fetch, ctx, ref, 1, 0);
}

int cache_ahead_room(struct cache *c)
{
	int room, stale = 0;

	pthread_mutex_lock(&c->lock);
	/* What was fetched ahead and went stale unused will never be used. */
	while (c->lru_tail[LRU_AHEAD] && !is_fresh(c, c->lru_tail[LRU_AHEAD])) {
		struct entry *e = c->lru_tail[LRU_AHEAD];
		drop_item(c, e);
		maybe_remove(c, e);
		stale = 1;
	}
	room = stale ? -1 : c->st.ahead_bytes < c->max_bytes / 4;
	pthread_mutex_unlock(&c->lock);
	return room;
}

void cache_set_room_hook(struct cache *c, void (*hook)(void *arg),
			 void (*fetched)(void *arg, const char *key), void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->room_hook = hook;
	c->fetched_hook = fetched;
	c->room_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

int cache_get_fresh(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
		    struct cache_ref **ref)
{
	struct entry *e;
	int ret = 0;

	*ref = NULL;
	pthread_mutex_lock(&c->lock);
	e = *find_slot(c, key, hash64(key));
	/* A fetch under way began before this call: wait for it to end, not
	 * for its answer.  Any fetch after it begins after this call. */
	if (e && e->fetching) {
		e->waiters++;
		ret = wait_fetch(c, e);
		e->waiters--;
		maybe_remove(c, e);
	}
	pthread_mutex_unlock(&c->lock);
	if (ret)
		return ret;
	cache_invalidate(c, key);
	return cache_get(c, key, fetch, ctx, ref);
}

void cache_invalidate(struct cache *c, const char *key)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = *find_slot(c, key, hash64(key));
	if (e) {
		e->fresh_ok = 0;
		drop_item(c, e);
		maybe_remove(c, e);
	}
	pthread_mutex_unlock(&c->lock);
}

void cache_clear(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct entry *e = c->table[i];
		while (e) {
			struct entry *next = e->hnext;
			e->fresh_ok = 0;
			drop_item(c, e);
			maybe_remove(c, e);
			e = next;
		}
	}
	pthread_mutex_unlock(&c->lock);
}

void cache_get_stats(struct cache *c, struct cache_stats *st)
{
	pthread_mutex_lock(&c->lock);
	*st = c->st;
	st->buckets = c->nbuckets;
	pthread_mutex_unlock(&c->lock);
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	cache_clear(c);
	free(c->table);
	pthread_cond_destroy(&c->done);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
