/*
 * http - requests to the DSS public REST API.
 *
 * One struct http per mount.  It keeps a pool of libcurl handles, each
 * holding its keep-alive connections, so requests from any number of
 * threads reuse connections; DNS and TLS sessions are shared between
 * handles.  Every request has a connect timeout and a total timeout, and a
 * response body larger than `max_body` is refused (EFBIG) instead of filling
 * memory.  Idempotent requests (GET) are retried a bounded number of times
 * after failures that leave the server unchanged (connection refused or
 * reset, 502/503/504), with a short backoff.
 *
 * Paths are relative to the API root ("projects/SALES/datasets/"); the base
 * URL and the "/public/api/" prefix are added here.  The API key is sent as
 * the Basic-auth user name with an empty password, as the official clients
 * do; it is never logged, and libcurl's verbose mode is never enabled.
 *
 * Failures are mapped and logged by errmap (once); callers get -errno.
 * All functions are thread-safe.
 */
#ifndef DSSFS_HTTP_H
#define DSSFS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "dssfs/buf.h"

struct http_config {
	const char *base_url; /* "https://dss.example.com:11200", no trailing '/' */
	const char *api_key;
	int verify_tls;		 /* 1 unless the user opted out */
	const char *ca_file;	 /* NULL: system CAs */
	const char *client_cert; /* PEM client certificate, or NULL */
	const char *client_key;	 /* its key, or NULL */
	long connect_timeout_ms;
	long timeout_ms;
	size_t max_body;
	int retries;
};

struct http_stats {
	uint64_t requests; /* HTTP requests sent, retries included */
	uint64_t failures;
};

struct http;

/* Copies what it needs from cfg.  Returns NULL (logged) if libcurl cannot
 * be set up. */
struct http *http_new(const struct http_config *cfg);
/* NULL-safe; wipes the key from memory. */
void http_free(struct http *h);

/* Sends `method` on `path` with an optional JSON body (NULL for none).  On a
 * 2xx answer returns 0 with the body in *resp; otherwise returns -errno
 * (mapped and logged) and *resp is left empty. */
int http_request(struct http *h, const char *method, const char *path, const char *body,
		 size_t body_len, struct buf *resp);

/* Like http_request, but a 2xx body is written to fd (at most `max` bytes,
 * else -EFBIG), never held in memory; *size gets its length.  A stream
 * has no total timeout, only a stall limit (no byte for `timeout_ms`), and
 * is not retried.  Error bodies are read for the log as usual. */
int http_request_to_fd(struct http *h, const char *method, const char *path, const char *body,
		       size_t body_len, int fd, size_t max, size_t *size);

static inline int http_get(struct http *h, const char *path, struct buf *resp)
{
	return http_request(h, "GET", path, NULL, 0, resp);
}

void http_get_stats(struct http *h, struct http_stats *st);

/* Releases libcurl's global state; call once at exit, after http_free. */
void http_global_cleanup(void);

#endif
