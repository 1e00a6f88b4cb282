/*
 * scratch - files that are not DSS objects, kept in memory.
 *
 * Editors and tools create files next to the ones they save: vim's swap
 * file (.x.swp) and its "4913" probe, backups (x~), emacs's #x#, the temp
 * files of sed -i, rsync and write-then-rename savers.  dssfs keeps them
 * here, never sends them to DSS, and forgets them at unmount.  The store is
 * bounded: content beyond `max_bytes` in total is refused with ENOSPC.
 *
 * Files are keyed by their full path in the mount ("/SALES/recipes/r/.x.swp").
 * All functions are thread-safe and return 0 or -errno.
 */
#ifndef DSSFS_SCRATCH_H
#define DSSFS_SCRATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dssfs/buf.h"

struct scratch;

struct scratch_attr {
	size_t size;
	mode_t mode; /* permission bits only */
	int64_t mtime_ms;
};

struct scratch *scratch_new(size_t max_bytes);
void scratch_free(struct scratch *s); /* NULL-safe */

/* Creates an empty file; -EEXIST if the path is taken. */
int scratch_create(struct scratch *s, const char *path, mode_t mode, int64_t now_ms);
int scratch_stat(struct scratch *s, const char *path, struct scratch_attr *attr);
/* Appends the content to out. */
int scratch_read(struct scratch *s, const char *path, struct buf *out);
/* Replaces the content; -ENOSPC if the store would exceed its bound. */
int scratch_store(struct scratch *s, const char *path, const char *data, size_t len,
		  int64_t now_ms);
/* Changes the mode (if mode != (mode_t)-1) and mtime (if mtime_ms >= 0). */
int scratch_set(struct scratch *s, const char *path, mode_t mode, int64_t mtime_ms);
int scratch_unlink(struct scratch *s, const char *path);
/* Moves `from` to `to`, replacing a file at `to`. */
int scratch_rename(struct scratch *s, const char *from, const char *to);

/* Calls fn(name, ctx) for each file directly inside directory `dir`, with
 * the store locked: fn must not call back into the store. */
void scratch_list(struct scratch *s, const char *dir, void (*fn)(const char *name, void *ctx),
		  void *ctx);

/* Bytes held. */
size_t scratch_bytes(struct scratch *s);

#endif
