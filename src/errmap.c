#include "dssfs/errmap.h"
#include "dssfs/buf.h"
#include "dssfs/log.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <string.h>

static const struct {
	const char *suffix; /* matched against the end of errorType */
	int err;
} type_map[] = {
    {"NotFoundException", ENOENT},	  {"SecurityException", EACCES},
    {"UnauthorizedException", EACCES},	  {"NotAuthenticatedException", EACCES},
    {"IllegalArgumentException", EINVAL},
};

static const struct {
	long lo, hi;
	int err;
} status_map[] = {
    {400, 400, EINVAL},	   {401, 401, EACCES},	  {403, 403, EACCES}, {404, 404, ENOENT},
    {408, 408, ETIMEDOUT}, {409, 409, EBUSY},	  {410, 410, ENOENT}, {413, 413, EFBIG},
    {429, 429, EAGAIN},	   {504, 504, ETIMEDOUT}, {400, 599, EIO},
};

static const struct {
	int code;
	int err;
} curl_map[] = {
    {CURLE_OPERATION_TIMEDOUT, ETIMEDOUT},
    {CURLE_COULDNT_CONNECT, ECONNREFUSED},
    {CURLE_COULDNT_RESOLVE_HOST, EHOSTUNREACH},
    {CURLE_COULDNT_RESOLVE_PROXY, EHOSTUNREACH},
    {CURLE_WRITE_ERROR, EFBIG}, /* our size cap aborts the transfer */
    {CURLE_FILESIZE_EXCEEDED, EFBIG},
    {CURLE_OUT_OF_MEMORY, ENOMEM},
    {CURLE_UNSUPPORTED_PROTOCOL, EPROTONOSUPPORT},
    {CURLE_URL_MALFORMAT, EINVAL},
};

int errmap_status(long status, const char *error_type)
{
	if (status >= 200 && status < 300)
		return 0;
	if (error_type) {
		size_t tl = strlen(error_type);
		for (size_t i = 0; i < sizeof(type_map) / sizeof(type_map[0]); i++) {
			size_t sl = strlen(type_map[i].suffix);
			if (tl >= sl && !strcmp(error_type + tl - sl, type_map[i].suffix))
				return -type_map[i].err;
		}
	}
	for (size_t i = 0; i < sizeof(status_map) / sizeof(status_map[0]); i++)
		if (status >= status_map[i].lo && status <= status_map[i].hi)
			return -status_map[i].err;
	return -EIO;
}

int errmap_curl(int curl_code)
{
	if (curl_code == CURLE_OK)
		return 0;
	for (size_t i = 0; i < sizeof(curl_map) / sizeof(curl_map[0]); i++)
		if (curl_map[i].code == curl_code)
			return -curl_map[i].err;
	return -EIO;
}

/* Copies at most `max` bytes of untrusted text for a log line, replacing
 * control characters so a hostile body cannot forge log lines. */
static void add_clean(struct buf *b, const char *s, size_t len, size_t max)
{
	size_t i;

	for (i = 0; i < len && i < max; i++) {
		unsigned char c = (unsigned char)s[i];
		buf_addch(b, c < 0x20 || c == 0x7f ? ' ' : (char)c);
	}
	if (len > max)
		buf_addstr(b, "...");
}

static _Thread_local int quiet;

int errmap_quiet(int on)
{
	int was = quiet;

	quiet = on;
	return was;
}

int errmap_response(const char *what, long status, const char *body, size_t len)
{
	cJSON *root = body && len ? cJSON_ParseWithLength(body, len) : NULL;
	const char *type = NULL, *msg = NULL;
	struct buf line = BUF_INIT;
	int err;

	if (cJSON_IsObject(root)) {
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "errorType");
		const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "detailedMessage");
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");
		type = cJSON_IsString(t) ? t->valuestring : NULL;
		msg = cJSON_IsString(d) && *d->valuestring ? d->valuestring
		      : cJSON_IsString(m)		   ? m->valuestring
							   : NULL;
	}
	err = errmap_status(status, type);
	buf_addf(&line, "%s: HTTP %ld", what, status);
	if (type) {
		buf_addstr(&line, " ");
		add_clean(&line, type, strlen(type), 200);
	}
	if (msg) {
		buf_addstr(&line, ": ");
		add_clean(&line, msg, strlen(msg), 500);
	} else if (!cJSON_IsObject(root) && len) {
		buf_addstr(&line, ": ");
		add_clean(&line, body, len, 200);
	}
	buf_addf(&line, " (%s)", strerror(-err));
	if (quiet)
		log_debug("%s", line.data);
	else
		log_error("%s", line.data);
	buf_release(&line);
	cJSON_Delete(root);
	return err;
}

int errmap_transport(const char *what, int curl_code, const char *detail)
{
	int err = errmap_curl(curl_code);
	struct buf d = BUF_INIT;

	if (detail && *detail)
		add_clean(&d, detail, strlen(detail), 300);
	else
		buf_addstr(&d, curl_easy_strerror((CURLcode)curl_code));
	if (quiet)
		log_debug("%s: %s (%s)", what, d.data, strerror(-err));
	else
		log_error("%s: %s (%s)", what, d.data, strerror(-err));
	buf_release(&d);
	return err;
}
