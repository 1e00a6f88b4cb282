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

/* config.json files.  dev is the one that skips TLS verification. */
#define INSTANCES                                                                \
	"\"dss_instances\": {"                                                   \
	"\"prod\": {\"url\": \"https://prod:11200\", \"api_key\": \"prodkey\"}," \
	"\"dev\": {\"url\": \"https://dev/\", \"api_key\": \" devkey\\n\","      \
	"          \"no_check_certificate\": true},"                             \
	"\"nourl\": {\"api_key\": \"nourlkey\"}}"
#define PROD_DEFAULT "{" INSTANCES ", \"default_instance\": \"prod\"}"
#define DEV_DEFAULT "{" INSTANCES ", \"default_instance\": \"dev\"}"

#define KEY_FILE "  filekey  \nsecond line\n"
#define ENV_PAIR .env_url = "http://env:1", .env_key = "envkey"

struct row {
	const char *what;
	/* given */
	const char *config;   /* ~/.dataiku/config.json, NULL: none */
	const char *other;    /* another config file, named by -o config= */
	const char *key_file; /* its text; "-": a file that does not exist */
	const char *env_url, *env_key, *env_nocheck;
	const char *instance, *url;
	int no_check_option;
	/* expected */
	int ret;
	const char *want_url, *want_key;
	int want_nocheck;
	const char *want_err; /* a part of the message */
};

static const struct row rows[] = {
    {"nothing configured: say where to put things", .ret = -EINVAL, .want_err = "DKU_DSS_URL"},
    {"the environment pair, URL without its trailing slash", .env_url = "http://127.0.0.1:1234/",
     .env_key = "envkey", .want_url = "http://127.0.0.1:1234", .want_key = "envkey"},
    {"DKU_NO_CHECK_CERTIFICATE", ENV_PAIR, .env_nocheck = "TRUE", .want_url = "http://env:1",
     .want_key = "envkey", .want_nocheck = 1},
    {"-o no_check_certificate", ENV_PAIR, .no_check_option = 1, .want_url = "http://env:1",
     .want_key = "envkey", .want_nocheck = 1},
    {"config.json's default instance", .config = PROD_DEFAULT, .want_url = "https://prod:11200",
     .want_key = "prodkey"},
    {"the instance the option names, with its settings", .config = PROD_DEFAULT, .instance = "dev",
     .want_url = "https://dev", .want_key = "devkey", .want_nocheck = 1},
    {"the option beats the environment", .config = PROD_DEFAULT, ENV_PAIR, .instance = "dev",
     .want_url = "https://dev", .want_key = "devkey", .want_nocheck = 1},
    {"the environment beats the default instance", .config = DEV_DEFAULT, ENV_PAIR,
     .want_url = "http://env:1", .want_key = "envkey"},
    {"DKU_NO_CHECK_CERTIFICATE applies to an instance too", .config = PROD_DEFAULT,
     .env_nocheck = "yes", .want_url = "https://prod:11200", .want_key = "prodkey",
     .want_nocheck = 1},
    {"an unknown instance", .config = PROD_DEFAULT, .instance = "nope", .ret = -ENOENT,
     .want_err = "\"nope\""},
    {"an instance without a URL", .config = PROD_DEFAULT, .instance = "nourl", .ret = -EINVAL,
     .want_err = "no \"url\""},
    {"-o config= instead of ~/.dataiku/config.json", .config = PROD_DEFAULT, .other = DEV_DEFAULT,
     .want_url = "https://dev", .want_key = "devkey", .want_nocheck = 1},
    {"a broken config file", .other = "{not json", .ret = -EINVAL, .want_err = "other.json"},
    {"a key file: first line, trimmed", .key_file = KEY_FILE, .url = "http://opt:9",
     .want_url = "http://opt:9", .want_key = "filekey"},
    {"an empty key file", .key_file = "\n", .url = "http://opt:9", .ret = -EINVAL,
     .want_err = "empty"},
    {"a missing key file", .key_file = "-", .url = "http://opt:9", .ret = -ENOENT,
     .want_err = "cannot read"},
    {"a URL that is not http(s)", .url = "ftp://x", .env_key = "envkey", .ret = -EINVAL,
     .want_err = "http://"},

    /* An instance's key and settings go only with its own URL. */
    {"url= elsewhere + key file: not the default instance's TLS setting", .config = DEV_DEFAULT,
     .key_file = KEY_FILE, .url = "http://other:1", .want_url = "http://other:1",
     .want_key = "filekey"},
    {"url= elsewhere + DKU_API_KEY: that key, not the default instance's", .config = DEV_DEFAULT,
     .env_key = "envkey", .url = "http://other:1", .want_url = "http://other:1",
     .want_key = "envkey"},
    {"url= elsewhere, no key: the default instance's key is not sent there", .config = DEV_DEFAULT,
     .url = "http://other:1", .ret = -EINVAL, .want_err = "API key"},
    {"url= elsewhere and an instance named: refused", .config = PROD_DEFAULT, .instance = "dev",
     .url = "http://other:1", .ret = -EINVAL, .want_err = "not the URL of instance \"dev\""},
    {"url= the named instance's own URL", .config = PROD_DEFAULT, .instance = "dev",
     .url = "https://dev", .want_url = "https://dev", .want_key = "devkey", .want_nocheck = 1},
    {"url= the default instance's URL + key file: its settings apply", .config = DEV_DEFAULT,
     .key_file = KEY_FILE, .url = "https://dev///", .want_url = "https://dev",
     .want_key = "filekey", .want_nocheck = 1},
    {"key file, URL of the default instance", .config = DEV_DEFAULT, .key_file = KEY_FILE,
     .want_url = "https://dev", .want_key = "filekey", .want_nocheck = 1},
    {"DKU_API_KEY alone, URL of the default instance: the instance's key", .config = DEV_DEFAULT,
     .env_key = "envkey", .want_url = "https://dev", .want_key = "devkey", .want_nocheck = 1},
};

static const char *const all_keys[] = {"prodkey", "devkey", "nourlkey", "filekey", "envkey"};

int main(void)
{
	char dir[] = "/tmp/dssfs-test-config-XXXXXX";
	char cfgdir[64], cfgfile[128], keyfile[128], otherfile[128];
	struct buf err = BUF_INIT;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(cfgdir, sizeof(cfgdir), "%s/.dataiku", dir);
	mkdir(cfgdir, 0700);
	snprintf(cfgfile, sizeof(cfgfile), "%s/config.json", cfgdir);
	snprintf(keyfile, sizeof(keyfile), "%s/key", dir);
	snprintf(otherfile, sizeof(otherfile), "%s/other.json", dir);
	env_home = dir;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct config_sources src = {.get_env = fake_env,
					     .instance = r->instance,
					     .url = r->url,
					     .no_check_certificate = r->no_check_option};
		struct config cfg;
		int ret, failures = check_failures;

		unlink(cfgfile);
		unlink(keyfile);
		unlink(otherfile);
		if (r->config)
			write_file(cfgfile, r->config, 0600);
		if (r->other) {
			write_file(otherfile, r->other, 0600);
			src.config_path = otherfile;
		}
		if (r->key_file) {
			if (strcmp(r->key_file, "-"))
				write_file(keyfile, r->key_file, 0600);
			src.api_key_file = keyfile;
		}
		env_url = r->env_url;
		env_key = r->env_key;
		env_nocheck = r->env_nocheck;
		buf_reset(&err);

		ret = config_resolve(&src, &cfg, &err);
		CHECK_INT(ret, r->ret);
		if (!ret && !r->ret) {
			CHECK_STR(cfg.url, r->want_url);
			CHECK_STR(cfg.api_key, r->want_key);
			CHECK_INT(cfg.no_check_certificate, r->want_nocheck);
			CHECK(cfg.origin != NULL);
			config_release(&cfg);
		}
		if (r->want_err)
			CHECK(err.data && strstr(err.data, r->want_err) != NULL);
		/* No message ever contains a key. */
		for (size_t k = 0; err.data && k < sizeof(all_keys) / sizeof(all_keys[0]); k++)
			CHECK(strstr(err.data, all_keys[k]) == NULL);
		if (check_failures != failures)
			fprintf(stderr, "  in: %s (message: %s)\n", r->what,
				err.data ? err.data : "");
	}

	/* config_instance_names: every instance, by name (bytes), for
	 * -o instances=all */
	static const struct {
		const char *config; /* NULL: none */
		int ret;
		const char *want; /* the names, joined by ' ' */
	} name_rows[] = {
	    {PROD_DEFAULT, 0, "dev nourl prod"},
	    {"{\"dss_instances\": {\"b\": {}, \"B\": {}, \"a/x\": {}}}", 0, "B a/x b"},
	    {"{\"dss_instances\": {}}", -ENOENT, NULL},
	    {"{\"default_instance\": \"prod\"}", -ENOENT, NULL},
	    {NULL, -ENOENT, NULL},
	    {"[1]", -EINVAL, NULL},
	};
	for (size_t i = 0; i < sizeof(name_rows) / sizeof(name_rows[0]); i++) {
		struct config_sources src = {.get_env = fake_env};
		struct buf joined = BUF_INIT;
		char **names = NULL;
		int ret;

		unlink(cfgfile);
		if (name_rows[i].config)
			write_file(cfgfile, name_rows[i].config, 0600);
		buf_reset(&err);
		ret = config_instance_names(&src, &names, &err);
		CHECK_INT(ret, name_rows[i].ret);
		for (size_t k = 0; names && names[k]; k++)
			buf_addf(&joined, "%s%s", k ? " " : "", names[k]);
		if (!ret)
			CHECK_STR(joined.data, name_rows[i].want);
		else
			CHECK(names == NULL && err.len > 0);
		for (size_t k = 0; err.data && k < sizeof(all_keys) / sizeof(all_keys[0]); k++)
			CHECK(strstr(err.data, all_keys[k]) == NULL);
		config_names_free(names);
		buf_release(&joined);
	}

	CHECK(config_truthy("yes") && config_truthy("1") && config_truthy("True") &&
	      config_truthy("ON"));
	CHECK(!config_truthy("0") && !config_truthy("false") && !config_truthy(NULL));

	unlink(cfgfile);
	unlink(keyfile);
	unlink(otherfile);
	rmdir(cfgdir);
	rmdir(dir);
	buf_release(&err);
	CHECK_DONE();
}
