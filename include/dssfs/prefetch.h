/*
 * prefetch - a bounded pool of threads that fetch resources ahead of need.
 *
 * Listing a directory tells what `ls -l`, `tar` and `rsync` will ask for
 * next; the tree queues those resources here and `nthreads` workers fetch
 * them in parallel (through the cache, so a resource being fetched for a
 * reader is not fetched twice, and one already cached is skipped by the
 * caller).  Jobs run in the order they were queued, as walks visit them.
 * The queue holds at most `max_queue` keys; more are dropped (the reader
 * then fetches them itself), so memory stays bounded.  A key already queued
 * is not queued twice.
 *
 * Pacing (prefetch_set_pacing): a job starts only while room(ctx) says
 * there is room for what it fetches (the cache's window ahead of the walk,
 * cache_ahead_room; prefetch_kick wakes the workers when room may be free
 * again; -1, what was fetched ahead went stale unused, drops the queue),
 * and the jobs run at once adapt to the server: DSS answering 429
 * or 503 (pressure(ctx), a count, moved during a fetch) or fetches taking
 * more than PREFETCH_SLOW_FACTOR times their best (and PREFETCH_SLOW_MIN_MS
 * more) halve them, at most once per PREFETCH_CUT_INTERVAL_MS; `limit`
 * fetches in a row without either add one back, up to nthreads.
 *
 * Thread-safe.  prefetch_free() stops the workers (waiting for the jobs that
 * run) and drops what is queued.
 */
#ifndef DSSFS_PREFETCH_H
#define DSSFS_PREFETCH_H

#include <stddef.h>

struct prefetch;

#include <stdint.h>

#define PREFETCH_SLOW_FACTOR 3
#define PREFETCH_SLOW_MIN_MS 100
#define PREFETCH_CUT_INTERVAL_MS 1000

struct prefetch_stats {
	uint64_t fetched;    /* jobs that fetched (run returned nonzero) */
	uint64_t cuts;	     /* times the jobs at once were halved */
	uint64_t room_waits; /* times a worker waited for room */
	uint64_t abandoned;  /* jobs dropped: what was fetched ahead went stale */
	uint64_t forgotten;  /* jobs dropped: a reader fetched the key first */
	int lowest_limit;    /* the fewest jobs at once allowed so far */
	int limit;	     /* jobs at once allowed now */
	size_t queued;
};

/* run(ctx, key, arg) fetches one resource; it is called from worker threads
 * and returns nonzero if it made a request (0: there already).  arg is
 * what prefetch_add was given, freed with free_arg afterwards (also when
 * the job is dropped). */
struct prefetch *prefetch_new(int nthreads, size_t max_queue,
			      int (*run)(void *ctx, const char *key, void *arg), void *ctx,
			      void (*free_arg)(void *arg));
/* Sets the pacing hooks (see above; NULL: none). */
void prefetch_set_pacing(struct prefetch *p, int (*room)(void *ctx),
			 uint64_t (*pressure)(void *ctx));
/* Drops the job of key if queued (a reader fetched it itself). */
void prefetch_forget(struct prefetch *p, const char *key);
/* Room may be free again: wakes the workers waiting for it. */
void prefetch_kick(struct prefetch *p);
void prefetch_get_stats(struct prefetch *p, struct prefetch_stats *st);
void prefetch_free(struct prefetch *p); /* NULL-safe */

/* Queues a key (copied) with an argument for run (NULL allowed; owned by
 * the queue from here).  Returns 1 if queued, 0 if already queued or the
 * queue is full (then arg is freed). */
int prefetch_add(struct prefetch *p, const char *key, void *arg);

/* Queues n keys (copied) with their arguments (owned by the queue from
 * here; NULL allowed) at the head of the queue, in this order: what was
 * listed last is where a depth-first walk goes next.  A key already queued
 * moves here (taking the new argument, if any).  Beyond max_queue, the
 * jobs queued longest ago are dropped. */
void prefetch_add_front(struct prefetch *p, size_t n, const char *const *keys, void **args);

/* Drops what is queued and not yet running (SIGHUP). */
void prefetch_clear(struct prefetch *p);

#endif
