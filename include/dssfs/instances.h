/*
 * instances - the DSS instances a mount shows: one (the credentials come
 * from the options, the environment or config.json, config.h), or with
 * -o instances=A,B several instances of config.json, each a folder of the
 * mount's root (mux.h).  Each has its own credentials, connections (struct
 * http), cache and tree.
 *
 * Set up and probed before the session starts, freed after it ended; not
 * thread-safe.  No message made here contains a key.
 */
#ifndef DSSFS_INSTANCES_H
#define DSSFS_INSTANCES_H

#include "dssfs/buf.h"
#include "dssfs/config.h"

#include <stddef.h>
#include <stdint.h>

struct http_config;
struct tree_options;
struct stats_multi;
struct mux;

struct instance {
	char *name; /* its name in config.json; NULL: the mount's only one */
	struct config cfg;
	struct http *http;
	struct cache *cache;
	struct tree *tree;
};

/* The instances `list' (-o instances=: names separated by ',', or `all':
 * every instance of config.json, by name) names, in its order, with their
 * credentials (config_resolve of each, with common's config_path and
 * no_check_certificate), into out[0 .. *n) (at most MUX_MAX).  Returns 0,
 * or -errno with the message appended to err (an unknown, empty or
 * repeated name, too many); *n counts what needs instance_release. */
int instances_resolve(const char *list, const struct config_sources *common, struct instance *out,
		      int *n, struct buf *err);

/* Makes the instance's connections, cache (cache_max bytes, entries kept
 * ttl_ms) and tree from the settings all share (hc and to: their URL, key,
 * TLS verification and ino_base are the instance's own).  The index-th of
 * several takes mux_ino_base(index).  0, or -1 (logged). */
int instance_open(struct instance *in, int index, const struct http_config *hc,
		  const struct tree_options *to, size_t cache_max, int64_t ttl_ms);

/* Lists the projects and probes whether the key is an admin (tree_probe_admin).
 * The mount's only instance returns -1 when DSS does not answer, with the
 * message on stderr; one of several logs the failure, by name, and
 * returns 0: its folder then answers with the errors of its requests. */
int instance_probe(struct instance *in);

/* The root of the instances in[0 .. n) (opened), and their figures in *fig
 * (which points into static storage: one call per process).  NULL, with
 * the message on stderr, if two names make one folder name. */
struct mux *instances_mux(struct instance *in, int n, int64_t mount_time_ms, size_t cache_max,
			  struct stats_multi *fig);

/* Frees the tree, cache and connections (after the session); then the
 * credentials and name.  Both NULL-safe on what is not there. */
void instance_close(struct instance *in);
void instance_release(struct instance *in);

#endif
