/*
 * strmap - a map from strings to pointers that grows with its content
 * (chained hashing, doubled when the load passes one entry per bucket).
 *
 * Keys are copied; values are the caller's (the map never frees them).
 * Not thread-safe: the owner locks around it.
 */
#ifndef DSSFS_STRMAP_H
#define DSSFS_STRMAP_H

#include <stddef.h>

struct strmap;

struct strmap *strmap_new(void);
/* NULL-safe.  Calls free_value (if not NULL) on every value. */
void strmap_free(struct strmap *m, void (*free_value)(void *value));

/* The value of key, or NULL. */
void *strmap_get(const struct strmap *m, const char *key);
/* Sets key's value; returns the value it replaces (NULL if none). */
void *strmap_put(struct strmap *m, const char *key, void *value);
/* Removes key; returns its value (NULL if none). */
void *strmap_del(struct strmap *m, const char *key);
size_t strmap_size(const struct strmap *m);
/* The bytes the map takes beyond its keys' characters (its table and
 * entries, with the allocator's overhead, roughly). */
size_t strmap_overhead(const struct strmap *m);

/* Calls fn for every entry; fn returns nonzero to remove the entry (it
 * then owns the value). */
void strmap_filter(struct strmap *m, int (*fn)(const char *key, void *value, void *ctx), void *ctx);

#endif
