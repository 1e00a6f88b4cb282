/*
 * instances - the DSS instances of a mount (see instances.h).
 */
#include "dssfs/instances.h"

#include "dssfs/cache.h"
#include "dssfs/escape.h"
#include "dssfs/http.h"
#include "dssfs/log.h"
#include "dssfs/mux.h"
#include "dssfs/stats.h"
#include "dssfs/tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int add_instance(const char *name, struct instance *out, int *n, struct buf *err)
{
	if (!*name) {
		buf_addf(err, "-o instances=: an empty instance name");
		return -EINVAL;
	}
	for (int i = 0; i < *n; i++) {
		if (!strcmp(out[i].name, name)) {
			buf_addf(err, "-o instances=: instance \"%s\" is named twice", name);
			return -EINVAL;
		}
	}
	if (*n == MUX_MAX) {
		buf_addf(err, "-o instances=: more than %d instances", MUX_MAX);
		return -E2BIG;
	}
	memset(&out[*n], 0, sizeof(out[*n]));
	out[(*n)++].name = xstrdup(name);
	return 0;
}

/* config_resolve for one instance of several; its message names it. */
static int resolve_one(struct instance *in, const struct config_sources *common, struct buf *err)
{
	struct config_sources src = *common;
	struct buf why = BUF_INIT, quoted = BUF_INIT;
	int ret;

	src.instance = in->name;
	ret = config_resolve(&src, &in->cfg, &why);
	if (ret) {
		buf_addf(&quoted, "\"%s\"", in->name);
		if (!strstr(why.data, quoted.data))
			buf_addf(err, "instance %s: ", quoted.data);
		buf_addstr(err, why.data);
	}
	buf_release(&quoted);
	buf_release(&why);
	return ret;
}

int instances_resolve(const char *list, const struct config_sources *common, struct instance *out,
		      int *n, struct buf *err)
{
	char **names = NULL;
	int ret = 0;

	*n = 0;
	if (!strcmp(list, "all")) {
		ret = config_instance_names(common, &names, err);
		for (size_t i = 0; !ret && names[i]; i++)
			ret = add_instance(names[i], out, n, err);
		config_names_free(names);
	} else {
		for (const char *p = list;; p += strcspn(p, ",") + 1) {
			char *name = xstrndup(p, strcspn(p, ","));
			ret = add_instance(name, out, n, err);
			free(name);
			if (ret || !p[strcspn(p, ",")])
				break;
		}
	}
	for (int i = 0; !ret && i < *n; i++)
		ret = resolve_one(&out[i], common, err);
	return ret;
}

/* Where the times of files that DSS gives no time are kept across mounts
 * (README, "What you read"): -o times_file (PATH-<name> for each of
 * several instances), else a file per DSS URL in systemd's cache directory
 * for the unit, $XDG_CACHE_HOME/dssfs or ~/.cache/dssfs (made 0700); NULL
 * for "none" or when there is no such place. */
static char *times_file_for(const char *opt, const struct instance *in)
{
	const char *dir = getenv("CACHE_DIRECTORY"), *up;
	struct buf p = BUF_INIT;

	if (opt && !strcmp(opt, "none"))
		return NULL;
	if (opt)
		return in->name ? xasprintf("%s-%s", opt, in->name) : xstrdup(opt);
	if (dir && *dir && !strchr(dir, ':')) {
		buf_addstr(&p, dir);
	} else if ((up = getenv("XDG_CACHE_HOME")) && *up == '/') {
		buf_addf(&p, "%s/dssfs", up);
	} else if ((up = getenv("HOME")) && *up == '/') {
		buf_addf(&p, "%s/.cache", up);
		mkdir(p.data, 0700);
		buf_addstr(&p, "/dssfs");
	} else {
		return NULL;
	}
	if (mkdir(p.data, 0700) && errno != EEXIST) {
		log_warn("%s: %s; the times of files without one from DSS will be each mount's",
			 p.data, strerror(errno));
		buf_release(&p);
		return NULL;
	}
	buf_addf(&p, "/times-%016llx", (unsigned long long)hash64(in->cfg.url));
	return buf_detach(&p, NULL);
}

int instance_open(struct instance *in, int index, const struct http_config *hc,
		  const struct tree_options *to, size_t cache_max, int64_t ttl_ms)
{
	struct http_config h = *hc;
	struct tree_options t = *to;

	if (in->cfg.no_check_certificate) {
		if (in->name)
			log_warn("instance %s: TLS certificate verification is disabled", in->name);
		else
			log_warn("TLS certificate verification is disabled");
	}
	h.base_url = in->cfg.url;
	h.api_key = in->cfg.api_key;
	h.verify_tls = !in->cfg.no_check_certificate;
	/* which instance a failed request's log line is about */
	char *label = in->name ? xasprintf("instance %s", in->name) : NULL;
	h.label = label;
	in->http = http_new(&h);
	free(label);
	if (!in->http)
		return -1;
	in->cache = tree_cache_new(cache_max, ttl_ms);
	/* A thread waiting for another's fetch is cancelled as a request of
	 * its own would be (interrupt, shutdown). */
	cache_set_cancel(in->cache, http_thread_cancelled, in->http);
	t.ino_base = in->name ? mux_ino_base(index) : 0;
	char *times = times_file_for(to->times_file, in);
	t.times_file = times;
	in->tree = tree_new(in->http, in->cache, &t);
	free(times);
	return 0;
}

/* The mount of one instance fails now, with a clear message, rather than
 * mount something that answers every request with an error.  Of several,
 * an instance that does not answer is logged, by name, and mounted: its
 * folder answers with its errors (README, "Several instances in one
 * mount").  The listing stays cached.  Returns 0 or -1. */
int instance_probe(struct instance *in)
{
	struct tree_dir probe;
	int pr = tree_readdir(in->tree, tree_root_ino(in->tree), &probe);

	if (pr && !in->name) {
		fprintf(stderr, "dssfs: cannot list the projects of %s (key from %s): %s\n",
			in->cfg.url, in->cfg.origin, strerror(-pr));
		return -1;
	}
	if (pr) {
		log_error("instance %s: cannot list the projects of %s (key from %s): %s; "
			  "its folder fails likewise until it answers",
			  in->name, in->cfg.url, in->cfg.origin, strerror(-pr));
		tree_probe_admin_later(in->tree);
		return 0;
	}
	tree_dir_release(&probe);
	/* Which of instance/ this key sees: decided once (README, "The
	 * instance"). */
	pr = tree_probe_admin(in->tree);
	if (pr < 0 && !in->name) {
		fprintf(stderr, "dssfs: cannot tell whether the key is an admin of %s: %s\n",
			in->cfg.url, strerror(-pr));
		return -1;
	}
	if (pr < 0) {
		log_error("instance %s: cannot tell whether the key is an admin of %s: %s; "
			  "asked again when %s/instance/ is read",
			  in->name, in->cfg.url, strerror(-pr), in->name);
		tree_probe_admin_later(in->tree);
	} else if (!pr && !in->name)
		log_info("the key is not an instance admin: instance/ shows what it may read "
			 "(info.json, project-folders/)");
	else if (!pr)
		log_info("instance %s: the key is not an instance admin: %s/instance/ shows "
			 "what it may read (info.json, project-folders/)",
			 in->name, in->name);
	return 0;
}

struct mux *instances_mux(struct instance *in, int n, int64_t mount_time_ms, size_t cache_max,
			  struct stats_multi *fig)
{
	static struct stats_src srcs[MUX_MAX];
	static const char *names[MUX_MAX];
	struct mux *m = mux_new(mount_time_ms, getuid(), getgid());

	for (int i = 0; i < n; i++) {
		int ret = mux_add(m, in[i].name, in[i].tree);
		if (ret) {
			fprintf(stderr, "dssfs: instance \"%s\" cannot be a folder: %s\n",
				in[i].name, strerror(-ret));
			mux_free(m);
			return NULL;
		}
		srcs[i] = (struct stats_src){in[i].http, in[i].cache, in[i].tree, cache_max,
					     cache_monotonic_ms()};
		names[i] = mux_name(m, i);
	}
	*fig = (struct stats_multi){n, names, srcs, cache_monotonic_ms()};
	return m;
}

void instance_close(struct instance *in)
{
	tree_free(in->tree);
	cache_free(in->cache);
	http_free(in->http);
	in->tree = NULL;
	in->cache = NULL;
	in->http = NULL;
}

void instance_release(struct instance *in)
{
	config_release(&in->cfg);
	free(in->name);
	in->name = NULL;
}
