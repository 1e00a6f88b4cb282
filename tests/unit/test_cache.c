#include "check.h"
#include "dssfs/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

static int64_t fake_now;
static int64_t fake_clock(void)
{
	return fake_now;
}

static atomic_int fetches, frees;
static int fail_next;

/* While set, a fetch returns only once this many other threads wait for it
 * (the cache's `coalesced` count has grown by that much since
 * waited_base), so that a test knows every thread waited for that fetch. */
static struct cache *waited_cache;
static int waited_want;
static uint64_t waited_base;

static void wait_for_waiters(void)
{
	struct cache_stats st;

	/* 10 s at most: a broken cache fails the checks, it does not hang. */
	for (int i = 0; i < 10000; i++) {
		cache_get_stats(waited_cache, &st);
		if (st.coalesced - waited_base >= (uint64_t)waited_want)
			return;
		usleep(1000);
	}
	fprintf(stderr, "only %d of %d threads waited for the fetch\n",
		(int)(st.coalesced - waited_base), waited_want);
}

struct val {
	char key[64];
	int serial;
};

static void free_val(void *v)
{
	atomic_fetch_add(&frees, 1);
	free(v);
}

static int fetch(void *ctx, const char *key, void **value, size_t *cost)
{
	(void)ctx;
	int n = atomic_fetch_add(&fetches, 1) + 1;
	if (waited_cache)
		wait_for_waiters();
	if (fail_next) {
		fail_next--;
		return -EIO;
	}
	struct val *v = calloc(1, sizeof(*v));
	snprintf(v->key, sizeof(v->key), "%s", key);
	v->serial = n;
	*value = v;
	*cost = 100;
	return 0;
}

static int get_serial(struct cache *c, const char *key)
{
	struct cache_ref *r;
	int ret = cache_get(c, key, fetch, NULL, &r);
	if (ret)
		return ret;
	int s = ((struct val *)cache_ref_value(r))->serial;
	cache_ref_put(r);
	return s;
}

struct thread_arg {
	struct cache *c;
	int serial;
};

static void *reader(void *p)
{
	struct thread_arg *a = p;
	a->serial = get_serial(a->c, "same");
	return NULL;
}

/* Cancelling a waiter (cache_set_cancel).  The fetch of "slow" holds until
 * slow_release is set (10 s at most); the hook cancels only the threads
 * that set their own `cancel_me`, from cancel_after_ms on. */
static atomic_int slow_release, slow_started, slow_done, cancel_everyone;
static atomic_int slow_result; /* what a slow fetch that starts now returns */
static _Thread_local int cancel_me;
static _Thread_local int64_t cancel_after_ms;

static int slow_fetch(void *ctx, const char *key, void **value, size_t *cost)
{
	(void)ctx;
	int n = atomic_fetch_add(&fetches, 1) + 1, result = atomic_load(&slow_result);
	atomic_store(&slow_started, 1);
	for (int i = 0; i < 10000 && !atomic_load(&slow_release); i++)
		usleep(1000);
	atomic_store(&slow_done, 1);
	if (result)
		return result;
	struct val *v = calloc(1, sizeof(*v));
	snprintf(v->key, sizeof(v->key), "%s", key);
	v->serial = n;
	*value = v;
	*cost = 100;
	return 0;
}

static int test_cancel_hook(void *arg)
{
	(void)arg;
	if (atomic_load(&cancel_everyone))
		return -ECANCELED;
	return cancel_me && cache_monotonic_ms() >= cancel_after_ms ? -EINTR : 0;
}

struct slow_arg {
	struct cache *c;
	int cancelled;	 /* this thread's hook fires 100 ms after it starts */
	int serial;	 /* or -errno */
	int64_t took_ms; /* how long cache_get took */
	int fetch_done;	 /* whether the slow fetch had finished on return */
};

static void *slow_reader(void *p)
{
	struct slow_arg *a = p;
	struct cache_ref *r;
	int64_t t0 = cache_monotonic_ms();

	cancel_me = a->cancelled;
	cancel_after_ms = t0 + 100;
	int ret = cache_get(a->c, "slow", slow_fetch, NULL, &r);
	a->took_ms = cache_monotonic_ms() - t0;
	a->fetch_done = atomic_load(&slow_done);
	a->serial = ret ? ret : ((struct val *)cache_ref_value(r))->serial;
	if (!ret)
		cache_ref_put(r);
	return NULL;
}

/* Starts a reader of "slow" that fetches (not cancelled), and waits until
 * its fetch runs. */
static void start_fetcher(struct cache *c, pthread_t *th, struct slow_arg *a)
{
	atomic_store(&slow_release, 0);
	atomic_store(&slow_started, 0);
	atomic_store(&slow_done, 0);
	*a = (struct slow_arg){.c = c};
	pthread_create(th, NULL, slow_reader, a);
	for (int i = 0; i < 10000 && !atomic_load(&slow_started); i++)
		usleep(1000);
}

static void *release_later(void *p)
{
	(void)p;
	usleep(200 * 1000);
	atomic_store(&slow_release, 1);
	return NULL;
}

static void test_cancelled_waiters(void)
{
	struct cache *c = cache_new(1000, 5000, free_val, fake_clock);
	struct cache_ref *r;
	struct cache_stats st;
	pthread_t fth, wth;
	struct slow_arg fa, wa;

	cache_set_cancel(c, test_cancel_hook, NULL);
	atomic_store(&fetches, 0);

	/* A waiter whose hook fires returns its -EINTR promptly, while the
	 * fetch goes on; the fetch then completes and is cached for all. */
	start_fetcher(c, &fth, &fa);
	wa = (struct slow_arg){.c = c, .cancelled = 1};
	pthread_create(&wth, NULL, slow_reader, &wa);
	pthread_join(wth, NULL);
	CHECK_INT(wa.serial, -EINTR);
	CHECK(wa.took_ms >= 100 && wa.took_ms < 2000);
	CHECK_INT(wa.fetch_done, 0);
	atomic_store(&slow_release, 1);
	pthread_join(fth, NULL);
	CHECK_INT(fa.serial, 1);
	CHECK_INT(cache_peek(c, "slow", &r), 0);
	CHECK_INT(((struct val *)cache_ref_value(r))->serial, 1);
	cache_ref_put(r);
	CHECK_INT(fetches, 1);
	cache_get_stats(c, &st);
	CHECK_INT(st.coalesced, 1);

	/* The fetching thread is interrupted (its own user's signal): a
	 * waiter that is not does not take its EINTR, it fetches again. */
	cache_clear(c);
	atomic_store(&slow_result, -EINTR);
	start_fetcher(c, &fth, &fa);
	wa = (struct slow_arg){.c = c};
	pthread_create(&wth, NULL, slow_reader, &wa);
	for (int i = 0; i < 10000; i++) { /* until it waits */
		cache_get_stats(c, &st);
		if (st.coalesced == 2)
			break;
		usleep(1000);
	}
	atomic_store(&slow_result, 0);
	atomic_store(&slow_release, 1);
	pthread_join(fth, NULL);
	pthread_join(wth, NULL);
	CHECK_INT(fa.serial, -EINTR);
	CHECK_INT(wa.serial, 3);
	CHECK_INT(fetches, 3);

	/* Everything is cancelled (shutdown): waiters see it too. */
	cache_clear(c);
	start_fetcher(c, &fth, &fa);
	wa = (struct slow_arg){.c = c};
	pthread_create(&wth, NULL, slow_reader, &wa);
	for (int i = 0; i < 10000; i++) {
		cache_get_stats(c, &st);
		if (st.coalesced == 3)
			break;
		usleep(1000);
	}
	atomic_store(&cancel_everyone, 1);
	pthread_join(wth, NULL);
	CHECK_INT(wa.serial, -ECANCELED);
	CHECK(wa.took_ms < 2000);
	CHECK_INT(wa.fetch_done, 0);
	atomic_store(&slow_release, 1);
	pthread_join(fth, NULL);
	CHECK_INT(fa.serial, 4);
	atomic_store(&cancel_everyone, 0);
	cache_free(c);
}

/* A fresh read never takes the answer of a fetch that began before it: it
 * waits for that one to end and fetches again. */
static void test_fresh_read_does_not_join_an_older_fetch(void)
{
	struct cache *c = cache_new(1000, 5000, free_val, fake_clock);
	struct cache_ref *r;
	pthread_t fth;
	struct slow_arg fa;

	atomic_store(&fetches, 0);
	start_fetcher(c, &fth, &fa); /* fetch 1, under way */
	/* released a little later, while cache_get_fresh waits */
	atomic_store(&slow_release, 0);
	pthread_t rel;
	pthread_create(&rel, NULL, release_later, NULL);
	CHECK_INT(cache_get_fresh(c, "slow", slow_fetch, NULL, &r), 0);
	CHECK_INT(((struct val *)cache_ref_value(r))->serial, 2);
	cache_ref_put(r);
	pthread_join(fth, NULL);
	pthread_join(rel, NULL);
	CHECK_INT(fa.serial, 1);
	CHECK_INT(fetches, 2);
	/* a value held is not taken either */
	CHECK_INT(cache_get_fresh(c, "slow", slow_fetch, NULL, &r), 0);
	CHECK_INT(((struct val *)cache_ref_value(r))->serial, 3);
	cache_ref_put(r);
	cache_free(c);
}

static atomic_int room_hooks;
static void count_hook(void *arg)
{
	(void)arg;
	atomic_fetch_add(&room_hooks, 1);
}

/* Values fetched ahead take room until used; the room is a quarter of the
 * cap;
 * stale or evicted ones stop taking it, counted as fetched in vain. */
static void test_ahead(void)
{
	struct cache *c = cache_new(1000, 5000, free_val, fake_clock);
	struct cache_ref *r;
	struct cache_stats st;
	char key[16];

	cache_set_room_hook(c, count_hook, NULL, NULL);
	atomic_store(&fetches, 0);
	for (int i = 0; i < 4; i++) { /* room while under 250 */
		snprintf(key, sizeof(key), "ahead%d", i);
		CHECK_INT(cache_get_ahead(c, key, fetch, NULL, &r), 0);
		cache_ref_put(r);
		CHECK_INT(cache_ahead_room(c), i < 2);
	}
	CHECK_INT(cache_get_ahead(c, "ahead4", fetch, NULL, &r), 0);
	cache_ref_put(r);
	CHECK_INT(cache_ahead_room(c), 0);
	cache_get_stats(c, &st);
	CHECK_INT(st.ahead_bytes, 500);
	/* a prefetcher finding it, or a peek, does not use it */
	CHECK_INT(cache_get_ahead(c, "ahead4", fetch, NULL, &r), 0);
	cache_ref_put(r);
	CHECK_INT(cache_peek(c, "ahead4", &r), 0);
	cache_ref_put(r);
	CHECK_INT(cache_ahead_room(c), 0);
	CHECK_INT(room_hooks, 0);
	/* a reader uses it: room again, and the hook says so, once */
	CHECK_INT(get_serial(c, "ahead0"), 1);
	CHECK_INT(get_serial(c, "ahead0"), 1);
	CHECK_INT(room_hooks, 1);
	CHECK_INT(cache_ahead_room(c), 0); /* 400: still beyond */
	cache_get_stats(c, &st);
	CHECK_INT(st.ahead_bytes, 400);
	CHECK_INT(fetches, 5);
	/* Beyond the cap, the values used go first (ahead0 was used, then
	 * other0..3), those ahead stay ... */
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "other%d", i);
		get_serial(c, key);
	}
	cache_get_stats(c, &st);
	CHECK_INT(st.ahead_dropped, 0);
	CHECK_INT(st.ahead_bytes, 400);
	CHECK_INT(cache_peek(c, "ahead0", &r), -ENOENT);
	CHECK_INT(cache_peek(c, "ahead1", &r), 0);
	cache_ref_put(r);
	/* ... unless they alone are beyond it: then the oldest of them,
	 * fetched in vain (8 more ahead: other4..9 go, then ahead1, ahead2) */
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "more%d", i);
		CHECK_INT(cache_get_ahead(c, key, fetch, NULL, &r), 0);
		cache_ref_put(r);
	}
	cache_get_stats(c, &st);
	CHECK_INT(st.ahead_dropped, 2);
	CHECK_INT(st.ahead_bytes, 1000);
	CHECK_INT(cache_peek(c, "ahead2", &r), -ENOENT);
	CHECK_INT(cache_peek(c, "ahead3", &r), 0);
	cache_ref_put(r);
	/* gone stale unused: all dropped by the next room check, which says
	 * so (-1) */
	fake_now += 5000;
	CHECK_INT(cache_ahead_room(c), -1);
	CHECK_INT(cache_ahead_room(c), 1);
	cache_get_stats(c, &st);
	CHECK_INT(st.ahead_bytes, 0);
	CHECK_INT(st.ahead_dropped, 12);
	CHECK_INT(cache_peek(c, "more7", &r), -ENOENT);
	cache_free(c);
}

int main(void)
{
	struct cache *c = cache_new(1000, 5000, free_val, fake_clock);
	struct cache_ref *r;
	struct cache_stats st;

	/* Fresh within the TTL, refetched after it. */
	CHECK_INT(get_serial(c, "a"), 1);
	CHECK_INT(get_serial(c, "a"), 1);
	fake_now += 4999;
	CHECK_INT(get_serial(c, "a"), 1);
	fake_now += 1;
	CHECK_INT(get_serial(c, "a"), 2);
	CHECK_INT(fetches, 2);

	/* Errors are not cached. */
	fail_next = 1;
	CHECK_INT(get_serial(c, "b"), -EIO);
	CHECK_INT(get_serial(c, "b"), 4);
	CHECK_INT(get_serial(c, "b"), 4);

	/* Peek never fetches. */
	CHECK_INT(cache_peek(c, "zzz", &r), -ENOENT);
	CHECK_INT(cache_peek(c, "b", &r), 0);
	cache_ref_put(r);
	CHECK_INT(fetches, 4);

	/* Invalidate one key; clear all. */
	cache_invalidate(c, "b");
	CHECK_INT(cache_peek(c, "b", &r), -ENOENT);
	CHECK_INT(get_serial(c, "b"), 5);
	cache_clear(c);
	CHECK_INT(get_serial(c, "a"), 6);
	CHECK_INT(get_serial(c, "b"), 7);

	/* References outlive invalidation. */
	CHECK_INT(cache_get(c, "a", fetch, NULL, &r), 0);
	cache_invalidate(c, "a");
	CHECK_STR(((struct val *)cache_ref_value(r))->key, "a");
	int before = frees;
	cache_ref_put(r);
	CHECK_INT(frees, before + 1);

	/* The cap: 1000 bytes = 10 values of 100; the least recently used go. */
	cache_clear(c);
	atomic_store(&fetches, 0);
	char key[16];
	for (int i = 0; i < 12; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		get_serial(c, key);
		if (i == 5) /* touch k0 so that it stays */
			get_serial(c, "k0");
	}
	cache_get_stats(c, &st);
	CHECK(st.bytes <= 1000);
	CHECK_INT(st.evictions, 2);
	CHECK_INT(cache_peek(c, "k0", &r), 0);
	cache_ref_put(r);
	CHECK_INT(cache_peek(c, "k1", &r), -ENOENT);
	CHECK_INT(cache_peek(c, "k11", &r), 0);
	cache_ref_put(r);

	/* 20 concurrent first gets of one key: one fetch, same value. */
	enum { NT = 20 };
	pthread_t th[NT];
	struct thread_arg args[NT];
	atomic_store(&fetches, 0);
	cache_get_stats(c, &st);
	waited_cache = c;
	waited_base = st.coalesced;
	waited_want = NT - 1;
	for (int i = 0; i < NT; i++) {
		args[i].c = c;
		pthread_create(&th[i], NULL, reader, &args[i]);
	}
	for (int i = 0; i < NT; i++)
		pthread_join(th[i], NULL);
	CHECK_INT(fetches, 1);
	for (int i = 0; i < NT; i++)
		CHECK_INT(args[i].serial, 1);
	cache_get_stats(c, &st);
	CHECK_INT(st.coalesced - waited_base, NT - 1);

	/* A failed fetch answers its waiters with the error too: the NT - 1
	 * threads that waited for it do not fetch again. */
	cache_clear(c);
	atomic_store(&fetches, 0);
	fail_next = 1;
	cache_get_stats(c, &st);
	waited_base = st.coalesced;
	for (int i = 0; i < NT; i++)
		pthread_create(&th[i], NULL, reader, &args[i]);
	for (int i = 0; i < NT; i++)
		pthread_join(th[i], NULL);
	int errs = 0;
	for (int i = 0; i < NT; i++)
		errs += args[i].serial == -EIO;
	CHECK_INT(errs, NT);
	CHECK_INT(fetches, 1);
	cache_get_stats(c, &st);
	CHECK_INT(st.coalesced - waited_base, NT - 1);
	waited_cache = NULL;

	/* Many keys: each fetched once and found again; the key table grows
	 * with them. */
	struct cache *big = cache_new((size_t)1 << 30, 5000, free_val, fake_clock);
	enum { NK = 20000 };
	atomic_store(&fetches, 0);
	for (int i = 0; i < NK; i++) {
		snprintf(key, sizeof(key), "key/%d", i);
		CHECK_INT(get_serial(big, key), i + 1);
	}
	cache_get_stats(big, &st);
	CHECK_INT(st.entries, NK);
	CHECK(st.buckets >= st.entries);
	for (int i = 0; i < NK; i++) {
		snprintf(key, sizeof(key), "key/%d", i);
		if (cache_peek(big, key, &r)) {
			CHECK_INT(cache_peek(big, key, &r), 0);
			continue;
		}
		CHECK_STR(((struct val *)cache_ref_value(r))->key, key);
		cache_ref_put(r);
	}
	for (int i = 0; i < NK; i += 2) {
		snprintf(key, sizeof(key), "key/%d", i);
		cache_invalidate(big, key);
	}
	cache_get_stats(big, &st);
	CHECK_INT(st.entries, NK / 2);
	CHECK_INT(cache_peek(big, "key/0", &r), -ENOENT);
	CHECK_INT(get_serial(big, "key/1"), 2);
	CHECK_INT(fetches, NK);
	cache_clear(big);
	cache_get_stats(big, &st);
	CHECK_INT(st.entries, 0);
	cache_free(big);

	/* TTL 0: nothing is fresh, every get fetches. */
	struct cache *z = cache_new(1000, 0, free_val, fake_clock);
	atomic_store(&fetches, 0);
	get_serial(z, "x");
	get_serial(z, "x");
	CHECK_INT(fetches, 2);
	cache_free(z);

	cache_free(c);
	cache_free(NULL);
	test_cancelled_waiters();
	test_fresh_read_does_not_join_an_older_fetch();
	test_ahead();
	CHECK_DONE();
}
