/*
 * stats - the figures of `dssfs stats` (see stats.h).
 */
#include "dssfs/stats.h"

#include "dssfs/buf.h"
#include "dssfs/cache.h"
#include "dssfs/http.h"
#include "dssfs/json.h"
#include "dssfs/ops.h"
#include "dssfs/tree.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

static void num(cJSON *o, const char *name, double v)
{
	cJSON_AddNumberToObject(o, name, v);
}

/* VmRSS and VmHWM of /proc/self/status in bytes, in one read (-1 when
 * missing). */
static void memory_bytes(double *rss, double *peak)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	long long kb;

	*rss = *peak = -1;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmRSS: %lld", &kb) == 1)
			*rss = (double)kb * 1024;
		else if (sscanf(line, "VmHWM: %lld", &kb) == 1)
			*peak = (double)kb * 1024;
	}
	fclose(f);
}

static void add_requests(cJSON *root, struct http *h)
{
	static const char *const kinds[HTTP_KINDS] = {"GET", "PUT", "POST", "DELETE", "other"};
	struct http_stats hs;
	cJSON *r = cJSON_AddObjectToObject(root, "requests");
	cJSON *b = cJSON_AddObjectToObject(root, "bytes");

	http_get_stats(h, &hs);
	num(r, "total", (double)hs.requests);
	for (int k = 0; k < HTTP_KINDS; k++)
		num(r, kinds[k], (double)hs.by_kind[k]);
	num(r, "failed", (double)hs.failures);
	num(r, "overloaded", (double)hs.overloaded);
	num(r, "in_flight", (double)hs.active);
	num(r, "in_flight_bytes", (double)hs.inflight_bytes);
	num(b, "received", (double)hs.bytes_received);
	num(b, "sent", (double)hs.bytes_sent);
}

static void add_cache(cJSON *root, struct cache *c, size_t max)
{
	struct cache_stats cs;
	cJSON *o = cJSON_AddObjectToObject(root, "cache");

	cache_get_stats(c, &cs);
	num(o, "hits", (double)cs.hits);
	num(o, "fetches", (double)cs.fetches);
	num(o, "coalesced", (double)cs.coalesced);
	num(o, "evictions", (double)cs.evictions);
	num(o, "entries", (double)cs.entries);
	num(o, "bytes", (double)cs.bytes);
	num(o, "max_bytes", (double)max);
	num(o, "ahead_bytes", (double)cs.ahead_bytes);
	num(o, "ahead_dropped", (double)cs.ahead_dropped);
}

static void add_errors(cJSON *root, const struct ops_ctx *c)
{
	cJSON *o = cJSON_AddObjectToObject(root, "errors");

	for (int e = 1; e < OPS_ERRNO_MAX; e++) {
		uint64_t n = atomic_load(&c->errors[e]);
		const char *name = strerrorname_np(e);
		char other[16];
		if (!n)
			continue;
		if (!name) {
			snprintf(other, sizeof(other), "errno %d", e);
			name = other;
		}
		num(o, name, (double)n);
	}
	if (atomic_load(&c->errors[0]))
		num(o, "other", (double)atomic_load(&c->errors[0]));
}

static void add_tree(cJSON *root, const struct ops_ctx *c, struct tree *t)
{
	struct tree_stats ts;
	cJSON *o;

	tree_get_stats(t, &ts);
	o = cJSON_AddObjectToObject(root, "saves");
	num(o, "saved", (double)ts.saves);
	num(o, "conflicts", (double)ts.conflicts);
	num(o, "failed", (double)ts.save_failures);
	if (ts.prefetching) {
		o = cJSON_AddObjectToObject(root, "prefetch");
		num(o, "queued", (double)ts.prefetch.queued);
		num(o, "fetched", (double)ts.prefetch.fetched);
		num(o, "limit", ts.prefetch.limit);
		num(o, "lowest_limit", ts.prefetch.lowest_limit);
		num(o, "cuts", (double)ts.prefetch.cuts);
		num(o, "room_waits", (double)ts.prefetch.room_waits);
		num(o, "abandoned", (double)ts.prefetch.abandoned);
		num(o, "forgotten", (double)ts.prefetch.forgotten);
	} else {
		cJSON_AddNullToObject(root, "prefetch");
	}
	o = cJSON_AddObjectToObject(root, "memory");
	double rss, peak;
	memory_bytes(&rss, &peak);
	num(o, "rss_bytes", rss);
	num(o, "peak_rss_bytes", peak);
	num(o, "inodes", (double)ts.inodes);
	num(o, "nodes", (double)ts.nodes);
	num(o, "write_buffers_bytes", (double)atomic_load(&c->buffered));
	num(o, "scratch_bytes", (double)ts.scratch_bytes);
	num(o, "spool_bytes", (double)ts.spool_bytes);
}

/* Adds the numbers of add to those of sum, field by field, recursing into
 * objects; a field sum lacks is copied. */
static void add_up(cJSON *sum, const cJSON *add)
{
	const cJSON *f;

	cJSON_ArrayForEach(f, add)
	{
		cJSON *s = cJSON_GetObjectItemCaseSensitive(sum, f->string);
		if (!s)
			cJSON_AddItemToObject(sum, f->string, cJSON_Duplicate(f, 1));
		else if (cJSON_IsNumber(s) && cJSON_IsNumber(f))
			cJSON_SetNumberValue(s, s->valuedouble + f->valuedouble);
		else if (cJSON_IsObject(s) && cJSON_IsObject(f))
			add_up(s, f);
	}
}

static void set_num(cJSON *o, const char *name, double v)
{
	cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

	if (it)
		cJSON_SetNumberValue(it, v);
}

void stats_render_multi(void *arg, const struct ops_ctx *c, struct buf *out)
{
	static const char *const summed[] = {"requests", "bytes", "cache", "saves", "memory"};
	const struct stats_multi *m = arg;
	cJSON *root = cJSON_CreateObject(), *each;

	cJSON_AddStringToObject(root, "version", DSSFS_VERSION);
	num(root, "uptime_s", (double)(cache_monotonic_ms() - m->started_ms) / 1000.0);
	for (size_t k = 0; k < sizeof(summed) / sizeof(summed[0]); k++)
		cJSON_AddObjectToObject(root, summed[k]);
	add_errors(root, c);
	each = cJSON_AddObjectToObject(root, "instances");
	for (int i = 0; i < m->n; i++) {
		const struct stats_src *s = &m->srcs[i];
		cJSON *o = cJSON_AddObjectToObject(each, m->names[i]);
		add_requests(o, s->http);
		add_cache(o, s->cache, s->cache_max);
		add_tree(o, c, s->tree);
		for (size_t k = 0; k < sizeof(summed) / sizeof(summed[0]); k++)
			add_up(cJSON_GetObjectItemCaseSensitive(root, summed[k]),
			       cJSON_GetObjectItemCaseSensitive(o, summed[k]));
	}
	/* the process's, not the instances': once */
	double rss, peak;
	cJSON *mem = cJSON_GetObjectItemCaseSensitive(root, "memory");
	memory_bytes(&rss, &peak);
	set_num(mem, "rss_bytes", rss);
	set_num(mem, "peak_rss_bytes", peak);
	set_num(mem, "write_buffers_bytes", (double)atomic_load(&c->buffered));
	/* (nodes counts the bindings of all trees already) */
	if (m->n) {
		struct tree_stats ts;
		tree_get_stats(m->srcs[0].tree, &ts);
		set_num(mem, "nodes", (double)ts.nodes);
	}
	json_render(root, out);
	cJSON_Delete(root);
}

void stats_render(void *arg, const struct ops_ctx *c, struct buf *out)
{
	const struct stats_src *s = arg;
	cJSON *root = cJSON_CreateObject();

	cJSON_AddStringToObject(root, "version", DSSFS_VERSION);
	num(root, "uptime_s", (double)(cache_monotonic_ms() - s->started_ms) / 1000.0);
	add_requests(root, s->http);
	add_cache(root, s->cache, s->cache_max);
	add_errors(root, c);
	add_tree(root, c, s->tree);
	json_render(root, out);
	cJSON_Delete(root);
}

int stats_command(const char *mountpoint)
{
	/* The figures are small: one read, no size probe (the figures could
	 * grow between the two). */
	static char value[65536];
	ssize_t n = getxattr(mountpoint, OPS_STATS_XATTR, value, sizeof(value));

	if (n < 0) {
		if (errno == EOPNOTSUPP || errno == ENODATA)
			fprintf(stderr, "dssfs stats: %s is not a dssfs mount\n", mountpoint);
		else
			fprintf(stderr, "dssfs stats: %s: %s\n", mountpoint, strerror(errno));
		return 1;
	}
	fwrite(value, 1, (size_t)n, stdout);
	if (n && value[n - 1] != '\n')
		putchar('\n');
	return fflush(stdout) ? 1 : 0;
}
