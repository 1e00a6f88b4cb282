/*
 * cache - a TTL cache of server resources, bounded in memory, that turns
 * concurrent requests for one key into one fetch.
 *
 * Keys are strings (dssfs uses the REST path of a resource).  Values are
 * opaque to the cache: the caller's fetch function makes them and says what
 * they cost in bytes; the cache frees them with the function given to
 * cache_new() once neither the cache nor any reference holds them.
 *
 *  - A value is fresh for `ttl_ms` after its fetch finished.  cache_get()
 *    returns a fresh value without fetching; otherwise the calling thread
 *    fetches, and every other thread asking for the same key meanwhile waits
 *    for that one fetch and gets its result (value or error).
 *  - Errors are never cached: the next call after a failed fetch fetches.
 *  - When the values held exceed `max_bytes`, the least recently used ones
 *    are dropped.  References stay valid after their value is dropped.
 *  - cache_invalidate() and cache_clear() drop values; a fetch under way at
 *    that moment still answers its waiters but is not kept as fresh.
 *  - A thread waiting for another thread's fetch can be cancelled (a FUSE
 *    interrupt, shutdown): with a hook set by cache_set_cancel(), each waiter
 *    polls it at least every CACHE_CANCEL_POLL_MS and returns its -errno at
 *    once, while the fetch goes on and still answers the others and fills
 *    the cache.  A fetch that ended with -EINTR or -ECANCELED (the fetching
 *    thread was itself cancelled) is not taken as the answer by a waiter
 *    whose own hook says go on: that waiter fetches again itself.
 *
 *  - Prefetching without evicting what was prefetched before it is used:
 *    a value fetched by cache_get_ahead() is "ahead" until a cache_get()
 *    uses it (or it is dropped: then it was fetched in vain, counted in
 *    ahead_dropped).  cache_ahead_room() says whether what is ahead takes
 *    less than half of max_bytes: a prefetcher fetches only then, so that
 *    it runs a window ahead of the walk instead of filling the cache with
 *    values it then evicts before they are used.
 *
 * All functions are thread-safe.  The fetch function runs without any cache
 * lock held and may call the cache for other keys.
 */
#ifndef DSSFS_CACHE_H
#define DSSFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct cache;
struct cache_ref;

/* Monotonic milliseconds.  Tests pass a fake clock. */
typedef int64_t (*cache_clock_fn)(void);
int64_t cache_monotonic_ms(void);

/* Makes a value for `key`.  Returns 0 with *value and *cost set, or -errno. */
typedef int (*cache_fetch_fn)(void *ctx, const char *key, void **value, size_t *cost);

struct cache *cache_new(size_t max_bytes, int64_t ttl_ms, void (*free_value)(void *value),
			cache_clock_fn clock);

#define CACHE_CANCEL_POLL_MS 100
/* Returns 0 to go on waiting, or the -errno (-EINTR, -ECANCELED) a waiting
 * thread returns.  Called by that thread, without the cache lock held. */
typedef int (*cache_cancel_fn)(void *arg);
/* Sets the hook that threads waiting for another thread's fetch poll (NULL:
 * they wait until it ends).  Call before any cache_get. */
void cache_set_cancel(struct cache *c, cache_cancel_fn cancelled, void *arg);
/* NULL-safe.  No reference may be outstanding. */
void cache_free(struct cache *c);

/* Returns 0 and a reference in *ref (release with cache_ref_put), or the
 * -errno of the fetch, or the -errno of the cancel hook while waiting for
 * another thread's fetch. */
int cache_get(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
	      struct cache_ref **ref);

/* Like cache_get, but the value comes from a fetch that began after this
 * call: what the server holds now (a save's re-read), never a value held or
 * a fetch already under way (it may have begun before the change the
 * caller must see). */
int cache_get_fresh(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
		    struct cache_ref **ref);

/* cache_get for a prefetcher: a value it fetches is "ahead" (see above);
 * a value it finds is not taken as used. */
int cache_get_ahead(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
		    struct cache_ref **ref);
/* cache_get (cache_get_ahead if `ahead`) of a value that is dropped only
 * after every other value used: a folder's listing, read again by each
 * lookup in it while a walk reads thousands of documents. */
int cache_get_keep(struct cache *c, const char *key, cache_fetch_fn fetch, void *ctx,
		   struct cache_ref **ref, int ahead);
/* Whether values ahead take less than half of max_bytes (1) or not (0).
 * Values ahead that went stale unused are dropped first, and then it
 * returns -1: whoever would have used them is not coming. */
int cache_ahead_room(struct cache *c);
/* hook(arg) is called, without any cache lock held, each time a value
 * ahead is used (room may be free again); fetched(arg, key) each time a
 * cache_get (not _ahead) fetched a key itself: a prefetcher that still
 * has it queued is behind the walk, and need not fetch it again once it is
 * dropped.  Call before any cache_get. */
void cache_set_room_hook(struct cache *c, void (*hook)(void *arg),
			 void (*fetched)(void *arg, const char *key), void *arg);

/* Returns 0 and a reference if a fresh value is held, else -ENOENT.  Never
 * fetches or waits, nor takes a value ahead as used. */
int cache_peek(struct cache *c, const char *key, struct cache_ref **ref);

void *cache_ref_value(const struct cache_ref *ref);
/* Order of the fetch that made this value: a value with a higher number
 * was fetched later (within one cache). */
uint64_t cache_ref_seq(const struct cache_ref *ref);
/* NULL-safe. */
void cache_ref_put(struct cache_ref *ref);

void cache_invalidate(struct cache *c, const char *key);
void cache_clear(struct cache *c);

struct cache_stats {
	uint64_t hits;		/* answered from a fresh value */
	uint64_t fetches;	/* fetch functions called */
	uint64_t coalesced;	/* calls that waited for another thread's fetch */
	uint64_t evictions;	/* values dropped to respect max_bytes */
	size_t bytes;		/* cost of the values held */
	size_t ahead_bytes;	/* cost of the values fetched ahead, not used yet */
	uint64_t ahead_dropped; /* values fetched ahead, dropped unused */
	size_t entries;
	size_t buckets; /* of the key table: it grows to keep entries <= buckets */
};
void cache_get_stats(struct cache *c, struct cache_stats *st);

#endif
