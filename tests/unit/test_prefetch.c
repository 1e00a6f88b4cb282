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
static void run(void *ctx, const char *key, void *arg)
{
	(void)ctx;
	(void)arg;
	if (!strcmp(key, "gate")) {
		pthread_mutex_lock(&gate_lock);
		atomic_store(&gate_running, 1);
		while (!gate_open)
			pthread_cond_wait(&gate_cond, &gate_lock);
		pthread_mutex_unlock(&gate_lock);
		return;
	}
	int i = atoi(key + 2);
	if (i >= 0 && i < NK)
		atomic_fetch_add(&runs[i], 1);
	atomic_fetch_add(&total_runs, 1);
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
	CHECK_DONE();
}
