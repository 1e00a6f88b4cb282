/*
 * http - requests to the DSS public REST API.
 *
 * One struct http per mount.  It keeps a pool of libcurl handles, each
 * holding its keep-alive connections, so requests from any number of
 * threads reuse connections; DNS and TLS sessions are shared between
 * handles.
 *
 * Limits.  Every attempt of a request has a connect timeout and a total
 * timeout (`timeout_ms`, connection included); a stream has a total limit of
 * its own (`stream_timeout_ms`) and a stall limit (no byte for
 * `timeout_ms`).  A response body larger than `max_body` (counted after
 * gzip/deflate decoding) is refused with EFBIG, and the buffers of all
 * responses being received at once are bounded together by `max_inflight`
 * (their allocated capacity, which is up to twice their length): a response
 * that would pass it is refused with ENOMEM rather than filling memory.
 * The first http_new() sets glibc's mmap threshold to 1 MiB for the whole
 * process, so that freed bodies return to the system instead of staying in
 * per-thread arenas (RSS then follows what is held).
 *
 * Retries.  Idempotent requests (GET into memory) are retried at most
 * `retries` times (0..HTTP_RETRIES_MAX) after failures that leave the
 * server unchanged: connection refused or reset, no answer, HTTP 429, 502,
 * 503, 504.  Before retry n (0-based) dssfs waits a random time between 0
 * and min(HTTP_BACKOFF_FIRST_MS << n, HTTP_BACKOFF_MAX_MS) ("full jitter"),
 * or, when a 429 or 503 carries a Retry-After, exactly that long; a
 * Retry-After beyond HTTP_RETRY_AFTER_MAX_MS ends the retries at once (the
 * server asked for more than a file operation may wait).  So one request
 * takes at most
 *
 *     (retries + 1) * timeout + retries * HTTP_RETRY_AFTER_MAX_MS
 *
 * and, from a server that sends no Retry-After, at most
 * (retries + 1) * timeout + sum over n < retries of the capped waits.
 * A PUT or POST is never resent by dssfs; libcurl itself resends a request
 * once on a new connection when a kept-alive connection turns out to be
 * closed before anything was answered, rewinding an upload to do so.
 *
 * Cancellation.  http_cancel_all() ends every request of the struct http;
 * http_cancel_reads() ends every request but those of saves (the session
 * is ending: reads are answered at once, a save in flight completes); and
 * a thread may install a hook that interrupts its own requests
 * (http_set_thread_cancel: a FUSE interrupt).  A thread marks itself as
 * saving with http_thread_save(): a save must complete or fail as a whole,
 * so neither its hook nor http_cancel_reads() cuts it, only
 * http_cancel_all().  All are checked at least every HTTP_CANCEL_POLL_MS
 * while a request waits for the network and during backoff waits.
 *
 * Paths are relative to the API root ("projects/SALES/datasets/"); the base
 * URL and the "/public/api/" prefix are added here.  The API key is sent as
 * the Basic-auth user name with an empty password, as the official clients
 * do; it is never logged, and libcurl's verbose mode is never enabled.
 *
 * Failures are mapped and logged by errmap (once); callers get -errno.
 * Cancellations (ECANCELED, EINTR) are logged at debug level only.
 * All functions are thread-safe.
 */
#ifndef DSSFS_HTTP_H
#define DSSFS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "dssfs/buf.h"

#define HTTP_RETRIES_MAX 10
#define HTTP_BACKOFF_FIRST_MS 100L
#define HTTP_BACKOFF_MAX_MS 2000L
#define HTTP_RETRY_AFTER_MAX_MS 10000L

/* The wait before retry `attempt` (0: the first) in ms: DSS's Retry-After
 * (retry_after_s > 0, sent with a 429 or 503), or -1 when it is beyond
 * HTTP_RETRY_AFTER_MAX_MS (no retry then); else a wait drawn uniformly
 * between 0 and min(HTTP_BACKOFF_FIRST_MS << attempt, HTTP_BACKOFF_MAX_MS),
 * so that clients failing together do not retry together. */
long http_backoff_ms(long retry_after_s, int attempt);
#define HTTP_CANCEL_POLL_MS 100L
/* max_inflight when the config leaves it 0: max(2 * max_body, this). */
#define HTTP_INFLIGHT_MIN ((size_t)64 << 20)

struct http_config {
	const char *base_url; /* "https://dss.example.com:11200", no trailing '/' */
	const char *api_key;
	int verify_tls;		 /* 1 unless the user opted out */
	const char *ca_file;	 /* NULL: system CAs */
	const char *client_cert; /* PEM client certificate, or NULL */
	const char *client_key;	 /* its key, or NULL */
	long connect_timeout_ms;
	long timeout_ms;	/* one attempt of a request, connection included */
	long stream_timeout_ms; /* a whole stream (http_request_to_fd); 0: timeout_ms */
	size_t max_body;
	size_t max_inflight; /* response buffers of all requests together; 0: default */
	int retries;	     /* clamped to 0..HTTP_RETRIES_MAX */
	/* NULL, or what the log calls this server: "LABEL: GET path: ..."
	 * (one of several instances of a mount) */
	const char *label;
};

enum http_kind { HTTP_GET, HTTP_PUT, HTTP_POST, HTTP_DELETE, HTTP_OTHER, HTTP_KINDS };

struct http_stats {
	uint64_t requests;	      /* HTTP requests sent, retries included */
	uint64_t by_kind[HTTP_KINDS]; /* the same, by method */
	uint64_t failures;	      /* calls that ended in an error (once each) */
	uint64_t overloaded;	      /* answers 429 or 503: DSS asks to slow down */
	uint64_t bytes_received;      /* response bodies, as decoded */
	uint64_t bytes_sent;	      /* request bodies */
	uint64_t active;	      /* calls in progress now */
	size_t inflight_bytes;	      /* response buffers of the calls in progress */
};

struct http;

/* Copies what it needs from cfg.  Returns NULL (logged) if libcurl cannot
 * be set up. */
struct http *http_new(const struct http_config *cfg);
/* NULL-safe; wipes the key from memory.  No request may be in progress. */
void http_free(struct http *h);

/* Sends `method` on `path` with an optional JSON body (NULL for none).  On a
 * 2xx answer returns 0 with the body in *resp; otherwise returns -errno
 * (mapped and logged) and *resp is left empty.  -ECANCELED after
 * http_cancel_all(), -EINTR when the thread's cancel hook fired, -ENOMEM
 * when the response would pass max_inflight, -EFBIG beyond max_body. */
int http_request(struct http *h, const char *method, const char *path, const char *body,
		 size_t body_len, struct buf *resp);

/* POSTs a file: with `form`, as a multipart form of one part, "file" (what
 * DSS's managed-folder upload takes), else as the body itself
 * (application/octet-stream: a plugin's file); its len bytes from fd if
 * fd >= 0 (read in place with pread: a file of any size, never in memory),
 * else from data.  The answer as http_request's; a stream's time limits
 * apply. */
int http_upload(struct http *h, const char *path, const char *data, int fd, size_t len, int form,
		struct buf *resp);

/* Like http_request, but a 2xx body is written to fd (at most `max` bytes,
 * else -EFBIG), never held in memory; *size gets its length.  A stream is
 * limited to stream_timeout_ms in all and must not stall for timeout_ms
 * (-ETIMEDOUT); it is not retried.  Error bodies are read for the log as
 * usual. */
int http_request_to_fd(struct http *h, const char *method, const char *path, const char *body,
		       size_t body_len, int fd, size_t max, size_t *size);

static inline int http_get(struct http *h, const char *path, struct buf *resp)
{
	return http_request(h, "GET", path, NULL, 0, resp);
}

/* Ends every request of h, for good (call it at shutdown, before joining
 * threads that may be in a request): requests in progress, and their
 * backoff waits, return -ECANCELED within about HTTP_CANCEL_POLL_MS, and
 * every later request returns -ECANCELED at once without sending anything.
 * Only stores a flag: async-signal-safe, so a SIGTERM/SIGINT handler may
 * call it.  NULL-safe. */
void http_cancel_all(struct http *h);

/* Ends every request of h except those of threads inside a save
 * (http_thread_save), for good: like http_cancel_all for them.  Call it
 * when the session is told to exit.  Only stores a flag:
 * async-signal-safe.  NULL-safe. */
void http_cancel_reads(struct http *h);

/* Marks (on nonzero) or unmarks the calling thread as saving: its requests
 * are then ended by http_cancel_all only, never by its cancel hook nor by
 * http_cancel_reads.  Returns the previous mark (restore it after: saves
 * may nest).  Thread-local. */
int http_thread_save(int on);

/* What a request of the calling thread on h (a struct http *) would end
 * with if it were waiting now: 0, -ECANCELED or -EINTR, as above.  Its
 * signature is cache_cancel_fn's, so that threads waiting in the cache for
 * another thread's request are cancelled alike (cache_set_cancel). */
int http_thread_cancelled(void *h);

/* Installs, for the calling thread only, a hook that its requests poll (at
 * least every HTTP_CANCEL_POLL_MS while waiting for the network, and during
 * backoff waits; also before a request starts): when cancelled(arg) returns
 * nonzero, the request is aborted (its connection closed) and returns
 * -EINTR, unless the thread is saving (http_thread_save).
 * cancelled must be cheap and thread-safe with respect to whoever makes it
 * return nonzero.  Pass NULL to remove the hook; the hook stays installed
 * until then (install it around one operation, e.g. with
 * fuse_req_interrupted). */
void http_set_thread_cancel(int (*cancelled)(void *arg), void *arg);

void http_get_stats(struct http *h, struct http_stats *st);

/* Releases libcurl's global state; call once at exit, after http_free. */
void http_global_cleanup(void);

#endif
