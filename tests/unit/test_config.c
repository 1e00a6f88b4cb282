#include "check.h"
#include "dssfs/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *env_url, *env_key, *env_nocheck, *env_home;

static const char *fake_env(const char *name)
{
	if (!strcmp(name, "DKU_DSS_URL"))
		return env_url;
	if (!strcmp(name, "DKU_API_KEY"))
		return env_key;
	if (!strcmp(name, "DKU_NO_CHECK_CERTIFICATE"))
		return env_nocheck;
	if (!strcmp(name, "HOME"))
		return env_home;
	return NULL;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void reset_env(void)
{
	env_url = env_key = env_nocheck = NULL;
}

int main(void)
{
	char dir[] = "/tmp/dssfs-test-config-XXXXXX";
	char cfgdir[64], cfgfile[128], keyfile[128], badjson[128];
	struct config_sources src = {.get_env = fake_env};
	struct config cfg;
	struct buf err = BUF_INIT;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(cfgdir, sizeof(cfgdir), "%s/.dataiku", dir);
	mkdir(cfgdir, 0700);
	snprintf(cfgfile, sizeof(cfgfile), "%s/config.json", cfgdir);
	snprintf(keyfile, sizeof(keyfile), "%s/key", dir);
	snprintf(badjson, sizeof(badjson), "%s/bad.json", dir);
	env_home = dir;

	/* Nothing configured: a message that says where to put things. */
	CHECK_INT(config_resolve(&src, &cfg, &err), -EINVAL);
	CHECK(strstr(err.data, "DKU_DSS_URL") != NULL);
	buf_reset(&err);

	/* The environment pair; the URL loses its trailing slashes. */
	env_url = "http://127.0.0.1:1234/";
	env_key = "envkey";
	CHECK_INT(config_resolve(&src, &cfg, &err), 0);
	CHECK_STR(cfg.url, "http://127.0.0.1:1234");
	CHECK_STR(cfg.api_key, "envkey");
	CHECK_INT(cfg.no_check_certificate, 0);
	config_release(&cfg);
	env_nocheck = "TRUE";
	CHECK_INT(config_resolve(&src, &cfg, &err), 0);
	CHECK_INT(cfg.no_check_certificate, 1);
	config_release(&cfg);
	reset_env();

	/* config.json: default instance, or the one the option names. */
	write_file(cfgfile,
		   "{\"dss_instances\": {"
		   "\"prod\": {\"url\": \"https://prod:11200\", \"api_key\": \"prodkey\"},"
		   "\"dev\": {\"url\": \"https://dev/\", \"api_key\": \" devkey\\n\","
		   "          \"no_check_certificate\": true}},"
		   "\"default_instance\": \"prod\"}",
		   0600);
	CHECK_INT(config_resolve(&src, &cfg, &err), 0);
	CHECK_STR(cfg.url, "https://prod:11200");
	CHECK_STR(cfg.api_key, "prodkey");
	CHECK_INT(cfg.no_check_certificate, 0);
	config_release(&cfg);
	src.instance = "dev";
	CHECK_INT(config_resolve(&src, &cfg, &err), 0);
	CHECK_STR(cfg.url, "https://dev");
	CHECK_STR(cfg.api_key, "devkey");
	CHECK_INT(cfg.no_check_certificate, 1);
	config_release(&cfg);

	/* The option beats the environment; the environment beats the file's
	 * default instance. */
	env_url = "http://env:1";
	env_key = "envkey";
	CHECK_INT(config_resolve(&src, &cfg, &err), 0);
	CHECK_STR(cfg.api_key, "devkey");
	config_release(&cfg);
	src.instance = NULL;
	CHECK_INT(config_resolve(&src, &cfg, &err), 0);
	CHECK_STR(cfg.api_key, "envkey");
	CHECK_STR(cfg.url, "http://env:1");
	config_release(&cfg);
	reset_env();

	src.instance = "nope";
	CHECK_INT(config_resolve(&src, &cfg, &err), -ENOENT);
	CHECK(strstr(err.data, "nope") != NULL);
	buf_reset(&err);
	src.instance = NULL;

	/* A key file: first line, trimmed; the URL from elsewhere. */
	write_file(keyfile, "  filekey  \nsecond line\n", 0600);
	src.api_key_file = keyfile;
	src.url = "http://opt:9";
	CHECK_INT(config_resolve(&src, &cfg, &err), 0);
	CHECK_STR(cfg.api_key, "filekey");
	CHECK_STR(cfg.url, "http://opt:9");
	config_release(&cfg);
	write_file(keyfile, "\n", 0600);
	CHECK_INT(config_resolve(&src, &cfg, &err), -EINVAL);
	buf_reset(&err);
	src.api_key_file = "/nonexistent/key";
	CHECK_INT(config_resolve(&src, &cfg, &err), -ENOENT);
	buf_reset(&err);
	src.api_key_file = NULL;

	/* A bad URL and a broken config file are reported. */
	src.url = "ftp://x";
	CHECK_INT(config_resolve(&src, &cfg, &err), -EINVAL);
	CHECK(strstr(err.data, "http") != NULL);
	buf_reset(&err);
	src.url = NULL;
	write_file(badjson, "{not json", 0600);
	src.config_path = badjson;
	CHECK_INT(config_resolve(&src, &cfg, &err), -EINVAL);
	CHECK(strstr(err.data, "bad.json") != NULL);
	/* No message ever contains a key. */
	CHECK(strstr(err.data, "prodkey") == NULL && strstr(err.data, "filekey") == NULL);
	buf_reset(&err);

	CHECK(config_truthy("yes") && config_truthy("1") && config_truthy("True"));
	CHECK(!config_truthy("0") && !config_truthy("false") && !config_truthy(NULL));

	unlink(cfgfile);
	unlink(keyfile);
	unlink(badjson);
	rmdir(cfgdir);
	rmdir(dir);
	buf_release(&err);
	CHECK_DONE();
}
