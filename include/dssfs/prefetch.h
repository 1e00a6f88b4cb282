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
 * Thread-safe.  prefetch_free() stops the workers (waiting for the jobs that
 * run) and drops what is queued.
 */
#ifndef DSSFS_PREFETCH_H
#define DSSFS_PREFETCH_H

#include <stddef.h>

struct prefetch;

/* run(ctx, key, arg) fetches one resource; it is called from worker threads.
 * arg is what prefetch_add was given, freed with free_arg afterwards (also
 * when the job is dropped). */
struct prefetch *prefetch_new(int nthreads, size_t max_queue,
			      void (*run)(void *ctx, const char *key, void *arg), void *ctx,
			      void (*free_arg)(void *arg));
void prefetch_free(struct prefetch *p); /* NULL-safe */

/* Queues a key (copied) with an argument for run (NULL allowed; owned by
 * the queue from here).  Returns 1 if queued, 0 if already queued or the
 * queue is full (then arg is freed). */
int prefetch_add(struct prefetch *p, const char *key, void *arg);

/* Drops what is queued and not yet running (SIGHUP). */
void prefetch_clear(struct prefetch *p);

#endif
