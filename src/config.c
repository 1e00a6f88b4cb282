#include "dssfs/config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONFIG_BYTES (1 << 20)

int config_truthy(const char *s)
{
	return s && (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "yes") ||
		     !strcasecmp(s, "on"));
}

static const char *env(const struct config_sources *src, const char *name)
{
	const char *v = src->get_env ? src->get_env(name) : getenv(name);
	return v && *v ? v : NULL;
}

/* Reads a small file whole.  Returns 0 or -errno. */
static int read_small_file(const char *path, struct buf *out, int *loose_mode)
{
	struct stat st;
	char chunk[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) == 0 && loose_mode)
		*loose_mode = (st.st_mode & 077) != 0;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		if (out->len + (size_t)n > MAX_CONFIG_BYTES) {
			close(fd);
			return -EFBIG;
		}
		buf_add(out, chunk, (size_t)n);
	}
	close(fd);
	return n < 0 ? -errno : 0;
}

static char *trimmed_first_line(const char *s)
{
	while (*s && isspace((unsigned char)*s))
		s++;
	size_t n = strcspn(s, "\r\n");
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	return xstrndup(s, n);
}

static int read_key_file(const char *path, struct config *cfg, struct buf *err)
{
	struct buf raw = BUF_INIT;
	int loose = 0, ret = read_small_file(path, &raw, &loose);

	if (ret) {
		buf_addf(err, "cannot read the API key file %s: %s", path, strerror(-ret));
		goto out;
	}
	cfg->api_key = trimmed_first_line(raw.data);
	if (!*cfg->api_key) {
		buf_addf(err, "the API key file %s is empty", path);
		ret = -EINVAL;
		goto out;
	}
	if (loose)
		fprintf(stderr,
			"dssfs: warning: the API key file %s is readable by other users; "
			"chmod 600 it\n",
			path);
out:
	explicit_bzero(raw.data, raw.len);
	buf_release(&raw);
	return ret;
}

/* Loads config.json (NULL root if it does not exist). */
static int load_config_json(const char *path, cJSON **root, struct buf *err)
{
	struct buf raw = BUF_INIT;
	int ret = read_small_file(path, &raw, NULL);

	*root = NULL;
	if (ret == -ENOENT) {
		ret = 0;
		goto out;
	}
	if (ret) {
		buf_addf(err, "cannot read %s: %s", path, strerror(-ret));
		goto out;
	}
	*root = cJSON_ParseWithLength(raw.data, raw.len);
	if (!cJSON_IsObject(*root)) {
		cJSON_Delete(*root);
		*root = NULL;
		buf_addf(err, "%s is not a JSON object", path);
		ret = -EINVAL;
	}
out:
	explicit_bzero(raw.data, raw.len);
	buf_release(&raw);
	return ret;
}

static const char *str_field(const cJSON *obj, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	return cJSON_IsString(it) && *it->valuestring ? it->valuestring : NULL;
}

/* The length of url without its trailing slashes (a bare "https://" keeps
 * them). */
static size_t url_len(const char *url)
{
	size_t n = strlen(url);

	while (n > 8 && url[n - 1] == '/')
		n--;
	return n;
}

static int same_url(const char *a, const char *b)
{
	size_t n = url_len(a);
	return n == url_len(b) && !strncmp(a, b, n);
}

static int set_url(struct config *cfg, const char *url, struct buf *err)
{
	if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
		buf_addf(err, "the DSS URL must start with http:// or https://");
		return -EINVAL;
	}
	free(cfg->url);
	cfg->url = xstrndup(url, url_len(url));
	return 0;
}

/* -o config=, or $HOME/.dataiku/config.json (*owned: to free), or NULL. */
static const char *config_path(const struct config_sources *src, char **owned)
{
	const char *home = env(src, "HOME");

	*owned = NULL;
	if (src->config_path)
		return src->config_path;
	if (home)
		*owned = xasprintf("%s/.dataiku/config.json", home);
	return *owned;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int config_instance_names(const struct config_sources *src, char ***names, struct buf *err)
{
	char *home_path;
	const char *path = config_path(src, &home_path);
	cJSON *root = NULL;
	const cJSON *all, *it;
	size_t n = 0;
	int ret = path ? load_config_json(path, &root, err) : 0;

	*names = NULL;
	if (ret)
		goto out;
	all = root ? cJSON_GetObjectItemCaseSensitive(root, "dss_instances") : NULL;
	if (!cJSON_IsObject(all) || !all->child) {
		buf_addf(err, "%s defines no instances (dss_instances)",
			 path ? path : "~/.dataiku/config.json");
		ret = -ENOENT;
		goto out;
	}
	*names = xcalloc((size_t)cJSON_GetArraySize(all) + 1, sizeof(**names));
	cJSON_ArrayForEach(it, all)(*names)[n++] = xstrdup(it->string);
	qsort(*names, n, sizeof(**names), by_name);
out:
	cJSON_Delete(root);
	free(home_path);
	return ret;
}

void config_names_free(char **names)
{
	for (size_t i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
}

int config_resolve(const struct config_sources *src, struct config *cfg, struct buf *err)
{
	cJSON *root = NULL;
	const cJSON *inst = NULL;
	const char *inst_name = src->instance, *inst_url = NULL;
	const char *url = NULL, *key = NULL;
	char *home_path;
	const char *cfg_path = config_path(src, &home_path);
	int ret;

	memset(cfg, 0, sizeof(*cfg));
	if (cfg_path) {
		ret = load_config_json(cfg_path, &root, err);
		if (ret)
			goto out;
	}
	if (!inst_name && root && !(env(src, "DKU_DSS_URL") && env(src, "DKU_API_KEY")))
		inst_name = str_field(root, "default_instance");
	if (inst_name) {
		const cJSON *all =
		    root ? cJSON_GetObjectItemCaseSensitive(root, "dss_instances") : NULL;
		inst =
		    cJSON_IsObject(all) ? cJSON_GetObjectItemCaseSensitive(all, inst_name) : NULL;
		if (!cJSON_IsObject(inst) && (src->instance || !src->api_key_file)) {
			buf_addf(err, "instance \"%s\" is not defined in %s (dss_instances)",
				 inst_name, cfg_path ? cfg_path : "~/.dataiku/config.json");
			ret = -ENOENT;
			goto out;
		}
		inst_url = cJSON_IsObject(inst) ? str_field(inst, "url") : NULL;
	}

	/* URL: option, then the instance picked by option, then environment,
	 * then the config file's default instance. */
	if (src->url)
		url = src->url;
	else if (src->instance && inst)
		url = inst_url;
	else if (env(src, "DKU_DSS_URL"))
		url = env(src, "DKU_DSS_URL");
	else if (inst)
		url = inst_url;

	/* An instance's key and settings belong to its server: they go only
	 * with its own URL, never to a URL that came from elsewhere. */
	if (inst && !(url && inst_url && same_url(url, inst_url))) {
		if (src->instance) {
			if (inst_url)
				buf_addf(err,
					 "-o url=%s is not the URL of instance \"%s\" (%s); give "
					 "one or the other",
					 url, inst_name, inst_url);
			else
				buf_addf(err, "instance \"%s\" of %s has no \"url\"", inst_name,
					 cfg_path);
			ret = -EINVAL;
			goto out;
		}
		inst = NULL;
	}

	if (src->api_key_file) {
		ret = read_key_file(src->api_key_file, cfg, err);
		if (ret)
			goto out;
		cfg->origin = xasprintf("key file %s", src->api_key_file);
	} else {
		const char *origin = NULL;
		if (src->instance && inst) {
			key = str_field(inst, "api_key");
			origin = "instance";
		} else if (env(src, "DKU_API_KEY") && env(src, "DKU_DSS_URL")) {
			key = env(src, "DKU_API_KEY");
			origin = "environment";
		} else if (inst) {
			key = str_field(inst, "api_key");
			origin = "instance";
		} else if (env(src, "DKU_API_KEY")) {
			key = env(src, "DKU_API_KEY");
			origin = "environment";
		}
		if (key) {
			cfg->api_key = trimmed_first_line(key);
			if (!strcmp(origin, "instance"))
				cfg->origin =
				    xasprintf("instance \"%s\" of %s", inst_name, cfg_path);
			else
				cfg->origin = xstrdup("DKU_API_KEY");
		}
	}
	if (url) {
		ret = set_url(cfg, url, err);
		if (ret)
			goto out;
	}
	if (!url || !cfg->api_key || !*cfg->api_key) {
		buf_addf(err,
			 "no DSS %s configured.  Set DKU_DSS_URL and DKU_API_KEY, or define "
			 "an instance in ~/.dataiku/config.json "
			 "({\"dss_instances\": {\"NAME\": {\"url\": ..., \"api_key\": ...}}, "
			 "\"default_instance\": \"NAME\"}), or give -o api_key_file=PATH "
			 "with -o url=URL",
			 !url ? (cfg->api_key ? "URL" : "URL or API key") : "API key");
		ret = -EINVAL;
		goto out;
	}
	cfg->no_check_certificate =
	    src->no_check_certificate || config_truthy(env(src, "DKU_NO_CHECK_CERTIFICATE"));
	if (inst && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(inst, "no_check_certificate")))
		cfg->no_check_certificate = 1;
out:
	if (ret)
		config_release(cfg);
	cJSON_Delete(root);
	free(home_path);
	return ret;
}

void config_scrub_environment(void)
{
	static const char name[] = "DKU_API_KEY=";
	const size_t n = sizeof(name) - 1;

	for (char **e = environ; e && *e; e++)
		if (!strncmp(*e, name, n))
			explicit_bzero(*e + n, strlen(*e + n));
	unsetenv("DKU_API_KEY");
}

void config_release(struct config *cfg)
{
	if (cfg->api_key) {
		explicit_bzero(cfg->api_key, strlen(cfg->api_key));
		free(cfg->api_key);
	}
	free(cfg->url);
	free(cfg->origin);
	memset(cfg, 0, sizeof(*cfg));
}
