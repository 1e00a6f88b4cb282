/*
 * notify - the thread that sends the kernel its cache invalidations.
 *
 * They are sent by this one thread, never by a FUSE worker: the kernel may
 * have to wait for a lock (a folder's, a page's) held by an operation that
 * itself waits for a worker, and with every worker waiting on the kernel
 * nothing would move (seen with vim and -s).
 */
#include "dssfs/notify.h"
#include "dssfs/buf.h"
#include "dssfs/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct notice {
	uint64_t ino;
	char *name; /* NULL: the inode; else the entry `name` in folder ino */
	struct notice *next;
};

struct notifier {
	struct fuse_session *se;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct notice *queue, *tail;
	int stop;
	pthread_t thread;
};

static void *run(void *arg)
{
	struct notifier *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->queue && !c->stop)
			pthread_cond_wait(&c->cond, &c->lock);
		/* Stopping: what is queued is dropped with the mount's caches. */
		if (c->stop)
			break;
		struct notice *n = c->queue;
		c->queue = n->next;
		if (!c->queue)
			c->tail = NULL;
		pthread_mutex_unlock(&c->lock);
		int ret = n->name ? fuse_lowlevel_notify_inval_entry(c->se, n->ino, n->name,
								     strlen(n->name))
				  : fuse_lowlevel_notify_inval_inode(c->se, n->ino, 0, 0);
		if (ret && ret != -ENOENT)
			log_debug("cannot invalidate the kernel's cache of inode %llu: %s",
				  (unsigned long long)n->ino, strerror(-ret));
		free(n->name);
		free(n);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static void queue(struct notifier *c, uint64_t ino, const char *name)
{
	struct notice *n = xcalloc(1, sizeof(*n));

	n->ino = ino;
	n->name = name ? xstrdup(name) : NULL;
	pthread_mutex_lock(&c->lock);
	if (c->tail)
		c->tail->next = n;
	else
		c->queue = n;
	c->tail = n;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

struct notifier *notifier_start(struct fuse_session *se)
{
	struct notifier *c = xcalloc(1, sizeof(*c));

	c->se = se;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	if (pthread_create(&c->thread, NULL, run, c)) {
		pthread_cond_destroy(&c->cond);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return NULL;
	}
	return c;
}

void notifier_inode(struct notifier *c, uint64_t ino)
{
	queue(c, ino, NULL);
}

void notifier_entry(struct notifier *c, uint64_t parent, const char *name)
{
	queue(c, parent, name);
}

int notifier_stop(struct notifier *c)
{
	struct timespec until;

	if (!c)
		return 0;
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += NOTIFIER_STOP_S;
	if (pthread_timedjoin_np(c->thread, NULL, &until)) {
		/* Blocked in the kernel: only closing /dev/fuse (at exit) ends
		 * that.  The thread keeps c; the process is about to end. */
		log_warn("the kernel does not take a cache invalidation; not waiting for it");
		return -ETIMEDOUT;
	}
	while (c->queue) {
		struct notice *n = c->queue;
		c->queue = n->next;
		free(n->name);
		free(n);
	}
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return 0;
}
