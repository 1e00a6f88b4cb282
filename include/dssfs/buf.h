/*
 * buf - a growable byte buffer that is always NUL-terminated, plus the
 * allocation wrappers every module uses.
 *
 * A struct buf holds `len` bytes in `data` followed by a NUL that is not
 * counted in `len`, so `data` can be used as a C string when the content is
 * text.  A zero-initialised buffer (BUF_INIT) is valid and empty; its data
 * points at a shared empty string until the first append.  Buffers are not
 * thread-safe: one owner at a time.
 *
 * Allocation failure is not recoverable in a filesystem daemon that must keep
 * a consistent state, so xmalloc() and friends abort with a message instead of
 * returning NULL (git's xmalloc, redis's zmalloc).
 */
#ifndef DSSFS_BUF_H
#define DSSFS_BUF_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a newly allocated formatted string. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct buf {
	char *data;
	size_t len;
	size_t cap; /* 0 while data points at the shared empty string */
};

extern char buf_empty[];
#define BUF_INIT                \
	{                       \
		buf_empty, 0, 0 \
	}

void buf_init(struct buf *b);
/* Frees the storage and leaves an empty, reusable buffer. */
void buf_release(struct buf *b);
/* Hands the storage to the caller (free() it) and leaves b empty. */
char *buf_detach(struct buf *b, size_t *len);
/* Makes room for `extra` more bytes without changing len. */
void buf_grow(struct buf *b, size_t extra);
void buf_add(struct buf *b, const void *data, size_t len);
void buf_addstr(struct buf *b, const char *s);
void buf_addch(struct buf *b, char c);
void buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vaddf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void buf_reset(struct buf *b);
void buf_setlen(struct buf *b, size_t len);
/* Sets the length to `len`, filling new bytes with zeros (ftruncate). */
void buf_resize(struct buf *b, size_t len);
/* Writes `len` bytes at offset `off`, zero-filling any gap (pwrite). */
void buf_write_at(struct buf *b, size_t off, const void *data, size_t len);

#endif
