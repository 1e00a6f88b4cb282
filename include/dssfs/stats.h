/*
 * stats - what dssfs is doing, in figures: requests to DSS by method,
 * bytes, the cache, errors answered to the kernel by errno, saves and
 * conflicts, prefetch, inodes, memory.
 *
 * Read by `dssfs stats MOUNTPOINT` from the mount root's extended attribute
 * OPS_STATS_XATTR (ops.h), and logged on SIGUSR1.  One JSON object; the
 * names are in README.md ("Stats").
 */
#ifndef DSSFS_STATS_H
#define DSSFS_STATS_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct cache;
struct http;
struct ops_ctx;
struct tree;

struct stats_src {
	struct http *http;
	struct cache *cache;
	struct tree *tree;
	size_t cache_max;   /* bytes */
	int64_t started_ms; /* cache_monotonic_ms() at mount */
};

/* Appends the figures, a JSON object (indented), to out.  The signature of
 * ops_ctx.stats: arg is a struct stats_src. */
void stats_render(void *arg, const struct ops_ctx *c, struct buf *out);

/* A mount of several instances (mux.h): the figures of each, by name. */
struct stats_multi {
	int n;
	const char *const *names;     /* the instances' folder names */
	const struct stats_src *srcs; /* theirs, in the same order */
	int64_t started_ms;
};

/* The figures of a mount of several instances (arg: a struct
 * stats_multi): `instances' holds each instance's own requests, bytes,
 * cache, saves, prefetch and memory, as stats_render shows them; at the
 * top, `requests', `bytes', `cache', `saves' and `memory' are their sums
 * (the process's RSS and write buffers counted once), `errors' are the
 * mount's. */
void stats_render_multi(void *arg, const struct ops_ctx *c, struct buf *out);

/* `dssfs stats MOUNTPOINT`: prints the figures of the dssfs mounted there
 * on stdout.  Returns the exit status (messages on stderr). */
int stats_command(const char *mountpoint);

#endif
