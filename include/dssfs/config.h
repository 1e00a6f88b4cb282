/*
 * config - where the DSS URL and API key come from.
 *
 * The sources, in order (design.md §6, as the official clients do):
 *   1. mount options: `instance=NAME` picks an entry of config.json's
 *      dss_instances; `api_key_file=PATH` reads the key from a file (first
 *      line, surrounding white space removed); `url=URL` sets the URL;
 *   2. the environment: DKU_DSS_URL and DKU_API_KEY (both needed),
 *      DKU_NO_CHECK_CERTIFICATE;
 *   3. ~/.dataiku/config.json: {"dss_instances": {NAME: {url, api_key,
 *      no_check_certificate}}, "default_instance": NAME}.
 * The URL and the key are taken from the first source that provides them.
 * A config.json instance (named by the option, or the default one) lends
 * its key and settings only when its own URL is the URL used: with
 * `url=` naming another server, the default instance is ignored, and an
 * instance named by the option is an error.  TLS verification is disabled
 * if the option, DKU_NO_CHECK_CERTIFICATE=true/1/yes/on, or the instance in
 * use asks for it.
 *
 * No message produced here contains the key.  Thread-safety: call once at
 * start-up.
 */
#ifndef DSSFS_CONFIG_H
#define DSSFS_CONFIG_H

#include "dssfs/buf.h"

struct config_sources {
	const char *instance;	  /* -o instance= */
	const char *api_key_file; /* -o api_key_file= */
	const char *url;	  /* -o url= */
	const char *config_path;  /* -o config=, default $HOME/.dataiku/config.json */
	int no_check_certificate; /* -o no_check_certificate */
	/* getenv replacement for tests; NULL means getenv */
	const char *(*get_env)(const char *name);
};

struct config {
	char *url;     /* normalised: no trailing '/' */
	char *api_key; /* wiped by config_release */
	int no_check_certificate;
	char *origin; /* human-readable: where the key came from */
};

/* Fills cfg.  Returns 0, or -errno with a one-paragraph explanation for the
 * user appended to err. */
int config_resolve(const struct config_sources *src, struct config *cfg, struct buf *err);
void config_release(struct config *cfg);

/* The names of config.json's dss_instances (src->config_path, or
 * $HOME/.dataiku/config.json), sorted by strcmp, into a NULL-terminated
 * array *names (free it with config_names_free).  Returns 0, or -errno
 * with a message appended to err: -ENOENT when the file or its
 * dss_instances is missing or empty. */
int config_instance_names(const struct config_sources *src, char ***names, struct buf *err);
void config_names_free(char **names); /* NULL-safe */

/* Removes DKU_API_KEY from the environment, and first overwrites its value
 * in place: the strings of the initial environment are what
 * /proc/PID/environ shows, and unsetenv() alone leaves them there.  Call
 * once config_resolve() has copied the key, before starting threads (the
 * environment is not thread-safe). */
void config_scrub_environment(void);

/* True for "true", "1", "yes", "on" (any case). */
int config_truthy(const char *s);

#endif
