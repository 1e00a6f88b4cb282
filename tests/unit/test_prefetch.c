#include "check.h"
#include "dssfs/prefetch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

enum { NK = 20000 };

static atomic_int runs[NK], total_runs, args_freed, gate_running;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open;

/* The job "gate" blocks its worker until open_gate(), so that what is added
 * meanwhile stays queued. */
static int run(void *ctx, const char *key, void *arg)
{
	(void)ctx;
	(void)arg;
	if (!strcmp(key, "gate")) {
		pthread_mutex_lock(&gate_lock);
		atomic_store(&gate_running, 1);
		while (!gate_open)
			pthread_cond_wait(&gate_cond, &gate_lock);
		pthread_mutex_unlock(&gate_lock);
		return 0;
	}
	int i = atoi(key + 2);
	if (i >= 0 && i < NK)
		atomic_fetch_add(&runs[i], 1);
	atomic_fetch_add(&total_runs, 1);
	return 0;
}

static void free_arg(void *arg)
{
	atomic_fetch_add(&args_freed, 1);
	free(arg);
}

static void open_gate(int open)
{
	pthread_mutex_lock(&gate_lock);
	gate_open = open;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

/* Waits (10 s at most: a broken queue fails, it does not hang) until cond. */
#define WAIT_FOR(cond)                                        \
	do {                                                  \
		for (int w_ = 0; w_ < 10000 && !(cond); w_++) \
			usleep(1000);                         \
		CHECK(cond);                                  \
	} while (0)

static void close_gate_and_block(struct prefetch *p)
{
	open_gate(0);
	atomic_store(&gate_running, 0);
	CHECK_INT(prefetch_add(p, "gate", NULL), 1);
	WAIT_FOR(atomic_load(&gate_running));
}

/* Pacing: jobs that "fetch" (return 1); each may press the server (a 429
 * seen meanwhile) or take slow_ms. */
static atomic_int room_ok, pressing, slow_ms, paced_runs, running, most_running;
static atomic_uint_fast64_t pressure;

static int paced_run(void *ctx, const char *key, void *arg)
{
	(void)ctx;
	(void)key;
	(void)arg;
	int now = atomic_fetch_add(&running, 1) + 1;
	int most = atomic_load(&most_running);
	while (now > most && !atomic_compare_exchange_weak(&most_running, &most, now))
		;
	if (atomic_load(&pressing))
		atomic_fetch_add(&pressure, 1);
	usleep(1000 * (unsigned)atomic_load(&slow_ms));
	atomic_fetch_sub(&running, 1);
	atomic_fetch_add(&paced_runs, 1);
	return 1;
}

static int room_fn(void *ctx)
{
	(void)ctx;
	return atomic_load(&room_ok);
}

static uint64_t pressure_fn(void *ctx)
{
	(void)ctx;
	return atomic_load(&pressure);
}

static void add_paced(struct prefetch *p, const char *tag, int n)
{
	char key[32];

	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%s/%d", tag, i);
		CHECK_INT(prefetch_add(p, key, NULL), 1);
	}
}

/* The order jobs ran in, as their keys' last letters. */
static char order[64];
static atomic_int norder, ndone;

static int order_run(void *ctx, const char *key, void *arg)
{
	(void)ctx;
	(void)arg;
	if (!strcmp(key, "gate"))
		return run(ctx, key, arg);
	int i = atomic_fetch_add(&norder, 1);
	if (i < (int)sizeof(order) - 1)
		order[i] = key[strlen(key) - 1];
	atomic_fetch_add(&ndone, 1); /* (after the write: the test reads it then) */
	return 0;
}

/* A batch goes to the head, in its order; a key queued further back moves
 * into it; a key a reader fetched is forgotten. */
static void test_front(void)
{
	struct prefetch *p = prefetch_new(1, 100000, order_run, NULL, NULL);
	const char *first[] = {"k/a", "k/b", "k/c"};
	const char *second[] = {"k/d", "k/c", "k/e", "k/d"};
	void *none[4] = {NULL, NULL, NULL, NULL};

	close_gate_and_block(p);
	prefetch_add_front(p, 3, first, none);
	prefetch_add_front(p, 4, second, none);
	CHECK_INT(prefetch_add(p, "k/f", NULL), 1);
	prefetch_forget(p, "k/e");
	open_gate(1);
	WAIT_FOR(atomic_load(&ndone) == 5);
	CHECK_STR(order, "dcabf");
	prefetch_free(p);
}

static void test_pacing(void)
{
	struct prefetch *p = prefetch_new(8, 100000, paced_run, NULL, NULL);
	struct prefetch_stats st;

	prefetch_set_pacing(p, room_fn, pressure_fn);
	/* No room: nothing runs, however long; room and a kick: all run. */
	atomic_store(&room_ok, 0);
	add_paced(p, "a", 10);
	usleep(300 * 1000);
	CHECK_INT(atomic_load(&paced_runs), 0);
	prefetch_get_stats(p, &st);
	CHECK(st.room_waits > 0);
	CHECK_INT(st.queued, 10);
	atomic_store(&room_ok, 1);
	prefetch_kick(p);
	WAIT_FOR(atomic_load(&paced_runs) == 10);
	/* What was fetched ahead went stale unused (-1): the queue goes. */
	atomic_store(&room_ok, 0);
	add_paced(p, "s", 5);
	atomic_store(&room_ok, -1);
	prefetch_kick(p);
	for (int w = 0; w < 10000; w++) {
		prefetch_get_stats(p, &st);
		if (!st.queued)
			break;
		usleep(1000);
	}
	CHECK_INT(st.queued, 0);
	CHECK_INT(st.abandoned, 5);
	CHECK_INT(atomic_load(&paced_runs), 10);
	atomic_store(&room_ok, 1);

	/* DSS asks to slow down (429/503) during every fetch: the jobs at
	 * once are halved, at most once a second. */
	atomic_store(&pressing, 1);
	add_paced(p, "b", 100);
	WAIT_FOR(atomic_load(&paced_runs) == 110);
	prefetch_get_stats(p, &st);
	CHECK_INT(st.cuts, 1);
	CHECK_INT(st.limit, 4);
	/* ... and come back, one more per `limit` fetches without it */
	atomic_store(&pressing, 0);
	add_paced(p, "c", 100);
	WAIT_FOR(atomic_load(&paced_runs) == 210);
	prefetch_get_stats(p, &st);
	CHECK_INT(st.limit, 8);
	prefetch_free(p);

	/* Fetches becoming far slower than they were (0 ms, then 150 ms):
	 * the jobs at once are halved too, and while halved no more run. */
	p = prefetch_new(2, 100000, paced_run, NULL, NULL);
	prefetch_set_pacing(p, room_fn, pressure_fn);
	add_paced(p, "d", 40);
	WAIT_FOR(atomic_load(&paced_runs) == 250);
	atomic_store(&slow_ms, 150);
	add_paced(p, "e", 12);
	WAIT_FOR(atomic_load(&paced_runs) == 262);
	prefetch_get_stats(p, &st);
	CHECK(st.cuts >= 1);
	CHECK_INT(st.lowest_limit, 1);
	atomic_store(&slow_ms, 0);
	prefetch_free(p);
}

int main(void)
{
	struct prefetch *p = prefetch_new(1, 100000, run, NULL, free_arg);
	char key[32];

	/* Many keys queued while the worker is busy: each queued once, however
	 * the table of queued keys grows, then each run once. */
	close_gate_and_block(p);
	for (int i = 0; i < NK; i++) {
		snprintf(key, sizeof(key), "k/%d", i);
		CHECK_INT(prefetch_add(p, key, malloc(1)), 1);
	}
	for (int i = 0; i < NK; i++) {
		snprintf(key, sizeof(key), "k/%d", i);
		CHECK_INT(prefetch_add(p, key, malloc(1)), 0);
	}
	CHECK_INT(atomic_load(&args_freed), NK); /* the duplicates' */
	open_gate(1);
	WAIT_FOR(atomic_load(&total_runs) == NK);
	WAIT_FOR(atomic_load(&args_freed) == 2 * NK);
	int wrong = 0;
	for (int i = 0; i < NK; i++)
		wrong += atomic_load(&runs[i]) != 1;
	CHECK_INT(wrong, 0);

	/* A key that ran can be queued again. */
	CHECK_INT(prefetch_add(p, "k/5", NULL), 1);
	WAIT_FOR(atomic_load(&runs[5]) == 2);

	/* Clearing drops what is queued (and frees its arguments); the keys
	 * can be queued again afterwards. */
	close_gate_and_block(p);
	atomic_store(&total_runs, 0);
	atomic_store(&args_freed, 0);
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "k/%d", i);
		CHECK_INT(prefetch_add(p, key, malloc(1)), 1);
	}
	prefetch_clear(p);
	CHECK_INT(atomic_load(&args_freed), 1000);
	CHECK_INT(prefetch_add(p, "k/7", NULL), 1);
	open_gate(1);
	WAIT_FOR(atomic_load(&total_runs) == 1);
	prefetch_free(p);

	/* A full queue refuses more and frees their arguments. */
	p = prefetch_new(1, 3, run, NULL, free_arg);
	close_gate_and_block(p);
	atomic_store(&args_freed, 0);
	for (int i = 0; i < 3; i++) {
		snprintf(key, sizeof(key), "k/%d", 100 + i);
		CHECK_INT(prefetch_add(p, key, NULL), 1);
	}
	CHECK_INT(prefetch_add(p, "k/200", malloc(1)), 0);
	CHECK_INT(atomic_load(&args_freed), 1);
	open_gate(1);
	prefetch_free(p);
	prefetch_free(NULL);
	test_pacing();
	test_front();
	CHECK_DONE();
}
