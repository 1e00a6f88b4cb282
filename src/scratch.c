#include "dssfs/scratch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct sfile {
	char *path;
	struct buf data;
	mode_t mode;
	int64_t mtime_ms;
	struct sfile *next;
};

/* Editors keep a handful of these at a time: a list is enough. */
struct scratch {
	pthread_mutex_t lock;
	struct sfile *files;
	size_t bytes, max_bytes;
};

struct scratch *scratch_new(size_t max_bytes)
{
	struct scratch *s = xcalloc(1, sizeof(*s));

	pthread_mutex_init(&s->lock, NULL);
	s->max_bytes = max_bytes;
	return s;
}

static void sfile_free(struct sfile *f)
{
	buf_release(&f->data);
	free(f->path);
	free(f);
}

void scratch_free(struct scratch *s)
{
	if (!s)
		return;
	while (s->files) {
		struct sfile *f = s->files;
		s->files = f->next;
		sfile_free(f);
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static struct sfile **find(struct scratch *s, const char *path)
{
	struct sfile **pp = &s->files;

	while (*pp && strcmp((*pp)->path, path))
		pp = &(*pp)->next;
	return pp;
}

int scratch_create(struct scratch *s, const char *path, mode_t mode, int64_t now_ms)
{
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	if (*find(s, path)) {
		ret = -EEXIST;
	} else {
		struct sfile *f = xcalloc(1, sizeof(*f));
		f->path = xstrdup(path);
		buf_init(&f->data);
		f->mode = mode & 07777;
		f->mtime_ms = now_ms;
		f->next = s->files;
		s->files = f;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int scratch_stat(struct scratch *s, const char *path, struct scratch_attr *attr)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&s->lock);
	struct sfile *f = *find(s, path);
	if (f) {
		attr->size = f->data.len;
		attr->mode = f->mode;
		attr->mtime_ms = f->mtime_ms;
		ret = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int scratch_read(struct scratch *s, const char *path, struct buf *out)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&s->lock);
	struct sfile *f = *find(s, path);
	if (f) {
		buf_add(out, f->data.data, f->data.len);
		ret = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int scratch_store(struct scratch *s, const char *path, const char *data, size_t len, int64_t now_ms)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&s->lock);
	struct sfile *f = *find(s, path);
	if (f) {
		if (s->bytes - f->data.len + len > s->max_bytes) {
			ret = -ENOSPC;
		} else {
			s->bytes = s->bytes - f->data.len + len;
			buf_reset(&f->data);
			buf_add(&f->data, data, len);
			f->mtime_ms = now_ms;
			ret = 0;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int scratch_set(struct scratch *s, const char *path, mode_t mode, int64_t mtime_ms)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&s->lock);
	struct sfile *f = *find(s, path);
	if (f) {
		if (mode != (mode_t)-1)
			f->mode = mode & 07777;
		if (mtime_ms >= 0)
			f->mtime_ms = mtime_ms;
		ret = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int scratch_unlink(struct scratch *s, const char *path)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&s->lock);
	struct sfile **pp = find(s, path);
	if (*pp) {
		struct sfile *f = *pp;
		*pp = f->next;
		s->bytes -= f->data.len;
		sfile_free(f);
		ret = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int scratch_rename(struct scratch *s, const char *from, const char *to)
{
	int ret = -ENOENT;

	if (!strcmp(from, to))
		return scratch_stat(s, from, &(struct scratch_attr){0});
	pthread_mutex_lock(&s->lock);
	struct sfile *f = *find(s, from);
	if (f) {
		struct sfile **old = find(s, to);
		if (*old) {
			struct sfile *o = *old;
			*old = o->next;
			s->bytes -= o->data.len;
			sfile_free(o);
		}
		free(f->path);
		f->path = xstrdup(to);
		ret = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

void scratch_list(struct scratch *s, const char *dir, void (*fn)(const char *name, void *ctx),
		  void *ctx)
{
	size_t dl = strlen(dir);

	/* "/" is the root: its children are "/name". */
	if (dl == 1 && dir[0] == '/')
		dl = 0;
	pthread_mutex_lock(&s->lock);
	for (struct sfile *f = s->files; f; f = f->next) {
		if (strncmp(f->path, dir, dl) || f->path[dl] != '/')
			continue;
		const char *name = f->path + dl + 1;
		if (*name && !strchr(name, '/'))
			fn(name, ctx);
	}
	pthread_mutex_unlock(&s->lock);
}

size_t scratch_bytes(struct scratch *s)
{
	pthread_mutex_lock(&s->lock);
	size_t b = s->bytes;
	pthread_mutex_unlock(&s->lock);
	return b;
}
