#include "dssfs/http.h"
#include "dssfs/errmap.h"
#include "dssfs/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define API_PREFIX "/public/api/"
#define HTTP_MMAP_THRESHOLD (1 << 20)

/* An easy handle and the multi handle it runs in: the multi keeps its
 * connections between requests, and running the transfer ourselves lets a
 * request notice a cancellation while it waits for the network. */
struct pooled {
	CURL *curl;
	CURLM *multi;
	struct pooled *next;
};

struct http {
	char *base_url;
	char *label; /* NULL, or the log's prefix (http_config) */
	char *api_key;
	int verify_tls;
	char *ca_file, *client_cert, *client_key;
	long connect_timeout_ms, timeout_ms, stream_timeout_ms;
	size_t max_body, max_inflight;
	int retries;

	pthread_mutex_t pool_lock;
	struct pooled *idle;
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	struct curl_slist *headers;
	struct curl_slist *form_headers; /* multipart: libcurl's own Content-Type */
	struct curl_slist *raw_headers;	 /* a file's bytes: application/octet-stream */

	atomic_uint_fast64_t requests, failures, overloaded;
	atomic_uint_fast64_t by_kind[HTTP_KINDS], bytes_received, bytes_sent, active;
	atomic_size_t inflight;	    /* bytes of response buffers charged */
	atomic_int cancelled;	    /* http_cancel_all */
	atomic_int reads_cancelled; /* http_cancel_reads */
};

/* The calling thread's cancel hook (http_set_thread_cancel), and whether
 * it is saving (http_thread_save): then neither the hook nor
 * http_cancel_reads ends its requests. */
static _Thread_local int (*thread_cancelled)(void *arg);
static _Thread_local void *thread_cancel_arg;
static _Thread_local int thread_saving;

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_ok;

static void global_init(void)
{
	/* Large buffers (response bodies) straight from and back to the kernel:
	 * with glibc's adaptive threshold, a freed 16 MiB body stays in its
	 * thread's arena, and RSS grows well past max_inflight. */
	mallopt(M_MMAP_THRESHOLD, HTTP_MMAP_THRESHOLD);
	global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static void share_lock(CURL *c, curl_lock_data data, curl_lock_access access, void *ctx)
{
	struct http *h = ctx;
	(void)c;
	(void)access;
	pthread_mutex_lock(&h->share_locks[data]);
}

static void share_unlock(CURL *c, curl_lock_data data, void *ctx)
{
	struct http *h = ctx;
	(void)c;
	pthread_mutex_unlock(&h->share_locks[data]);
}

static char *dup_or_null(const char *s)
{
	return s && *s ? xstrdup(s) : NULL;
}

struct http *http_new(const struct http_config *cfg)
{
	struct http *h;

	pthread_once(&global_once, global_init);
	if (!global_ok) {
		log_error("cannot initialise libcurl");
		return NULL;
	}
	h = xcalloc(1, sizeof(*h));
	h->base_url = xstrdup(cfg->base_url);
	h->label = dup_or_null(cfg->label);
	h->api_key = xstrdup(cfg->api_key);
	h->verify_tls = cfg->verify_tls;
	h->ca_file = dup_or_null(cfg->ca_file);
	h->client_cert = dup_or_null(cfg->client_cert);
	h->client_key = dup_or_null(cfg->client_key);
	h->connect_timeout_ms = cfg->connect_timeout_ms;
	h->timeout_ms = cfg->timeout_ms;
	h->stream_timeout_ms =
	    cfg->stream_timeout_ms > 0 ? cfg->stream_timeout_ms : cfg->timeout_ms;
	h->max_body = cfg->max_body;
	h->max_inflight = cfg->max_inflight;
	if (!h->max_inflight)
		h->max_inflight =
		    cfg->max_body > HTTP_INFLIGHT_MIN / 2 ? 2 * cfg->max_body : HTTP_INFLIGHT_MIN;
	h->retries = cfg->retries < 0		       ? 0
		     : cfg->retries > HTTP_RETRIES_MAX ? HTTP_RETRIES_MAX
						       : cfg->retries;
	pthread_mutex_init(&h->pool_lock, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&h->share_locks[i], NULL);
	h->share = curl_share_init();
	if (h->share) {
		curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
		curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
		curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
		curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
		curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	}
	h->headers = curl_slist_append(NULL, "Accept: application/json");
	h->headers = curl_slist_append(h->headers, "Content-Type: application/json");
	/* Keep-alive connections must not wait for a 100-continue on PUT. */
	h->headers = curl_slist_append(h->headers, "Expect:");
	h->form_headers = curl_slist_append(NULL, "Accept: application/json");
	h->form_headers = curl_slist_append(h->form_headers, "Expect:");
	h->raw_headers = curl_slist_append(NULL, "Accept: application/json");
	h->raw_headers =
	    curl_slist_append(h->raw_headers, "Content-Type: application/octet-stream");
	h->raw_headers = curl_slist_append(h->raw_headers, "Expect:");
	return h;
}

void http_free(struct http *h)
{
	if (!h)
		return;
	while (h->idle) {
		struct pooled *p = h->idle;
		h->idle = p->next;
		curl_multi_cleanup(p->multi);
		curl_easy_cleanup(p->curl);
		free(p);
	}
	if (h->share)
		curl_share_cleanup(h->share);
	curl_slist_free_all(h->headers);
	curl_slist_free_all(h->form_headers);
	curl_slist_free_all(h->raw_headers);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&h->share_locks[i]);
	pthread_mutex_destroy(&h->pool_lock);
	explicit_bzero(h->api_key, strlen(h->api_key));
	free(h->api_key);
	free(h->base_url);
	free(h->label);
	free(h->ca_file);
	free(h->client_cert);
	free(h->client_key);
	free(h);
}

static struct pooled *pool_take(struct http *h)
{
	struct pooled *p;

	pthread_mutex_lock(&h->pool_lock);
	p = h->idle;
	if (p)
		h->idle = p->next;
	pthread_mutex_unlock(&h->pool_lock);
	if (p)
		return p;
	p = xcalloc(1, sizeof(*p));
	p->curl = curl_easy_init();
	p->multi = curl_multi_init();
	if (!p->curl || !p->multi) {
		curl_multi_cleanup(p->multi);
		curl_easy_cleanup(p->curl);
		free(p);
		return NULL;
	}
	return p;
}

static void pool_give(struct http *h, struct pooled *p)
{
	pthread_mutex_lock(&h->pool_lock);
	p->next = h->idle;
	h->idle = p;
	pthread_mutex_unlock(&h->pool_lock);
}

/* Where a response body goes: a buffer, or a file (then the buffer keeps
 * only the first bytes, enough for an error body). */
struct sink {
	struct http *h;
	struct buf *out;
	int fd;
	size_t total, max;
	size_t charged; /* growth of out's capacity charged to h->inflight */
	int too_big, no_memory, write_failed;
};

#define SINK_ERROR_BYTES 65536

static int inflight_take(struct http *h, size_t n)
{
	size_t cur = atomic_load(&h->inflight);

	do {
		if (n > h->max_inflight - cur)
			return 0;
	} while (!atomic_compare_exchange_weak(&h->inflight, &cur, cur + n));
	return 1;
}

/* Charges the growth of a response buffer before it happens, so that all
 * buffers together stay within max_inflight.  buf_grow doubles the
 * capacity until the bytes fit; what it allocates is what is charged. */
static int sink_reserve(struct sink *s, size_t n)
{
	size_t need = s->out->len + n + 1, cap = s->out->cap, grown;

	if (need <= cap)
		return 1;
	grown = cap ? cap : 64;
	while (grown < need)
		grown *= 2;
	if (!inflight_take(s->h, grown - cap))
		return 0;
	s->charged += grown - cap;
	buf_grow(s->out, n);
	return 1;
}

/* libcurl hands over decoded bytes (it decodes Content-Encoding itself), so
 * the caps hold for what a compressed body expands to. */
static size_t on_data(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct sink *s = ctx;
	size_t n = size * nmemb;

	if (n > s->max - s->total) {
		s->too_big = 1;
		return 0;
	}
	s->total += n;
	if (s->fd < 0) {
		if (!sink_reserve(s, n)) {
			s->no_memory = 1;
			return 0;
		}
		buf_add(s->out, data, n);
		return n;
	}
	if (s->out->len < SINK_ERROR_BYTES)
		buf_add(s->out, data, n < SINK_ERROR_BYTES ? n : SINK_ERROR_BYTES);
	for (size_t off = 0; off < n;) {
		ssize_t w = write(s->fd, data + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			s->write_failed = errno ? errno : EIO;
			return 0;
		}
		off += (size_t)w;
	}
	return n;
}

enum { UPLOAD_FORM = 1, UPLOAD_RAW = 2 };

struct upload {
	const char *data;
	size_t len, off;
	/* UPLOAD_FORM: a multipart form (a managed folder's file) of one part
	 * "file"; UPLOAD_RAW: the bytes as the body (a plugin's file); either
	 * from data, or from fd when fd >= 0 (read in place, never held in
	 * memory); 0: the request's own body */
	int multipart;
	int fd;
	curl_mime *mime;
};

/* The bytes of an upload, from memory or from its file. */
static size_t on_read(char *dst, size_t size, size_t nmemb, void *ctx)
{
	struct upload *u = ctx;
	size_t n = size * nmemb;
	ssize_t got;

	if (n > u->len - u->off)
		n = u->len - u->off;
	if (!n)
		return 0;
	if (u->fd < 0) {
		memcpy(dst, u->data + u->off, n);
		got = (ssize_t)n;
	} else {
		do
			got = pread(u->fd, dst, n, (off_t)u->off);
		while (got < 0 && errno == EINTR);
		if (got <= 0) /* the file shrank or failed: never send less silently */
			return CURL_READFUNC_ABORT;
	}
	u->off += (size_t)got;
	return (size_t)got;
}

/* libcurl resends a request on a new connection when a kept-alive one turns
 * out to be closed before anything was answered; an upload must then be
 * rewound, else it fails ("necessary data rewind wasn't possible"). */
static int on_seek(void *ctx, curl_off_t offset, int origin)
{
	struct upload *u = ctx;

	if (origin != SEEK_SET || offset < 0 || (curl_off_t)u->len < offset)
		return CURL_SEEKFUNC_CANTSEEK;
	u->off = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

/* The request's body is read from up (and rewound there if need be). */
static void body_from(CURL *c, struct upload *up)
{
	curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(c, CURLOPT_READDATA, up);
	curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
	curl_easy_setopt(c, CURLOPT_SEEKDATA, up);
}

static void setup(struct http *h, CURL *c, const char *method, const char *url, struct sink *sink,
		  struct upload *up, char *errbuf)
{
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	/* Paths are already encoded segment by segment: no normalisation. */
	curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "dssfs/" DSSFS_VERSION);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER,
			 up->multipart == UPLOAD_FORM  ? h->form_headers
			 : up->multipart == UPLOAD_RAW ? h->raw_headers
						       : h->headers);
	curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(c, CURLOPT_USERNAME, h->api_key);
	curl_easy_setopt(c, CURLOPT_PASSWORD, "");
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms);
	if (sink->fd < 0 && up->fd < 0) {
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
	} else {
		/* A stream may take long, within its own limit; it must not stall. */
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->stream_timeout_ms);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (h->timeout_ms + 999) / 1000);
	}
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
	/* Refuses a declared Content-Length beyond the cap before any byte. */
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)sink->max);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, h->verify_tls ? 1L : 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, h->verify_tls ? 2L : 0L);
	if (h->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
	if (h->client_cert)
		curl_easy_setopt(c, CURLOPT_SSLCERT, h->client_cert);
	if (h->client_key)
		curl_easy_setopt(c, CURLOPT_SSLKEY, h->client_key);
	if (h->share)
		curl_easy_setopt(c, CURLOPT_SHARE, h->share);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
	if (!strcmp(method, "GET")) {
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	} else if (!strcmp(method, "PUT")) {
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		body_from(c, up);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up->len);
	} else if (up->multipart == UPLOAD_RAW) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		body_from(c, up);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)up->len);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	} else if (up->multipart == UPLOAD_FORM) {
		curl_mimepart *part;
		up->mime = curl_mime_init(c);
		part = curl_mime_addpart(up->mime);
		curl_mime_name(part, "file");
		curl_mime_filename(part, "");
		curl_mime_type(part, "application/octet-stream");
		curl_mime_data_cb(part, (curl_off_t)up->len, on_read, on_seek, NULL, up);
		curl_easy_setopt(c, CURLOPT_MIMEPOST, up->mime);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	} else {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
		if (up->data) {
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, up->data);
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)up->len);
		}
	}
}

/* Failures after which the server cannot have acted on a request. */
static int retryable(CURLcode rc, long status)
{
	if (rc == CURLE_OK)
		return status == 429 || status == 502 || status == 503 || status == 504;
	return rc == CURLE_COULDNT_CONNECT || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
	       rc == CURLE_GOT_NOTHING;
}

/* The wait before retry `attempt` (0-based): DSS's Retry-After on a 429 or
 * 503, else a random time up to the capped exponential backoff ("full
 * jitter", so that clients that failed together do not retry together).
 * -1: do not retry (DSS asks for a longer wait than we allow). */
long http_backoff_ms(long retry_after_s, int attempt)
{
	long cap = HTTP_BACKOFF_MAX_MS;

	if (retry_after_s > 0)
		return retry_after_s > HTTP_RETRY_AFTER_MAX_MS / 1000 ? -1 : retry_after_s * 1000;
	if (attempt >= 0 && attempt < 16 && (HTTP_BACKOFF_FIRST_MS << attempt) < cap)
		cap = HTTP_BACKOFF_FIRST_MS << attempt;
	return (long)arc4random_uniform((uint32_t)cap + 1);
}

static long backoff_ms(CURL *c, long status, int attempt)
{
	curl_off_t after = 0;

	if ((status == 429 || status == 503) &&
	    curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0)
		return http_backoff_ms(after > HTTP_RETRY_AFTER_MAX_MS ? HTTP_RETRY_AFTER_MAX_MS
								       : (long)after,
				       attempt);
	return http_backoff_ms(0, attempt);
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* 0, or -ECANCELED (http_cancel_all; http_cancel_reads outside a save),
 * or -EINTR (the thread's hook, outside a save). */
static int cancel_check(struct http *h)
{
	if (atomic_load(&h->cancelled))
		return -ECANCELED;
	if (thread_saving)
		return 0;
	if (atomic_load(&h->reads_cancelled))
		return -ECANCELED;
	if (thread_cancelled && thread_cancelled(thread_cancel_arg))
		return -EINTR;
	return 0;
}

/* Waits at least `ms` (a Retry-After is honoured, not approached). */
static int wait_cancellable(struct http *h, long ms)
{
	int64_t end = now_us() + (int64_t)ms * 1000;

	for (;;) {
		int ret = cancel_check(h);
		int64_t left = end - now_us();
		if (ret || left <= 0)
			return ret;
		if (left > HTTP_CANCEL_POLL_MS * 1000)
			left = HTTP_CANCEL_POLL_MS * 1000;
		struct timespec ts = {0, (long)left * 1000L};
		nanosleep(&ts, NULL);
	}
}

/* Runs the transfer set up on p->curl in p's multi handle, checking for
 * cancellation whenever it wakes (at least every HTTP_CANCEL_POLL_MS).
 * Returns libcurl's result; if cancelled, aborts the transfer (libcurl
 * closes its connection) and sets *cancel. */
static CURLcode run_transfer(struct http *h, struct pooled *p, int *cancel)
{
	CURLcode rc = CURLE_FAILED_INIT;
	CURLMcode mc;
	CURLMsg *msg;
	int running = 1, left;

	*cancel = 0;
	mc = curl_multi_add_handle(p->multi, p->curl);
	if (mc != CURLM_OK)
		return mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
	for (;;) {
		mc = curl_multi_perform(p->multi, &running);
		if (mc != CURLM_OK)
			break;
		if (!running) {
			while ((msg = curl_multi_info_read(p->multi, &left)))
				if (msg->msg == CURLMSG_DONE && msg->easy_handle == p->curl)
					rc = msg->data.result;
			break;
		}
		*cancel = cancel_check(h);
		if (*cancel)
			break;
		mc = curl_multi_poll(p->multi, NULL, 0, (int)HTTP_CANCEL_POLL_MS, NULL);
		if (mc != CURLM_OK)
			break;
	}
	if (mc == CURLM_OUT_OF_MEMORY)
		rc = CURLE_OUT_OF_MEMORY;
	curl_multi_remove_handle(p->multi, p->curl);
	return rc;
}

/* Maps a finished transfer to 0 or -errno, logging failures once. */
static int outcome(const char *what, CURLcode rc, long status, const struct sink *sink,
		   const char *errbuf, size_t max_inflight)
{
	if (rc == CURLE_OK) {
		if (status >= 200 && status < 300)
			return 0;
		return errmap_response(what, status, sink->out->data, sink->out->len);
	}
	if (sink->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
		/* the second: a Content-Length beyond the cap */
		log_error("%s: response larger than %zu bytes, refused", what, sink->max);
		return -EFBIG;
	}
	if (sink->no_memory) {
		log_error("%s: responses being received would hold more than %zu MiB of memory "
			  "(max_inflight), refused",
			  what, max_inflight >> 20);
		return -ENOMEM;
	}
	if (sink->write_failed) {
		log_error("%s: cannot spool the response: %s", what, strerror(sink->write_failed));
		return -sink->write_failed;
	}
	return errmap_transport(what, rc, errbuf);
}

static enum http_kind method_kind(const char *method)
{
	static const char *const names[] = {"GET", "PUT", "POST", "DELETE"};

	for (int k = 0; k < HTTP_OTHER; k++)
		if (!strcmp(method, names[k]))
			return (enum http_kind)k;
	return HTTP_OTHER;
}

static int do_request(struct http *h, const char *method, const char *path, const char *body,
		      size_t body_len, struct sink *sink, const struct upload *form)
{
	struct buf url = BUF_INIT, what = BUF_INIT;
	char errbuf[CURL_ERROR_SIZE];
	struct pooled *p = NULL;
	CURLcode rc = CURLE_OK;
	long status = 0;
	int ret, idempotent = !strcmp(method, "GET") && sink->fd < 0;
	enum http_kind kind = method_kind(method);

	/* from nothing, so that all the capacity the body takes is charged */
	buf_release(sink->out);
	if (h->label)
		buf_addf(&what, "%s: ", h->label);
	buf_addf(&what, "%s %s", method, path);
	atomic_fetch_add(&h->active, 1);
	ret = cancel_check(h);
	if (ret)
		goto out;
	buf_addf(&url, "%s%s%s", h->base_url, API_PREFIX, path);
	p = pool_take(h);
	if (!p) {
		log_error("%s: cannot create a libcurl handle", what.data);
		ret = -ENOMEM;
		goto out;
	}
	for (int attempt = 0;; attempt++) {
		struct upload up = {body, body_len, 0, 0, -1, NULL};
		long wait;

		if (form)
			up = *form;

		buf_reset(sink->out);
		sink->too_big = sink->no_memory = sink->write_failed = 0;
		sink->total = 0;
		errbuf[0] = '\0';
		setup(h, p->curl, method, url.data, sink, &up, errbuf);
		rc = run_transfer(h, p, &ret);
		curl_mime_free(up.mime);
		atomic_fetch_add(&h->requests, 1);
		atomic_fetch_add(&h->by_kind[kind], 1);
		atomic_fetch_add(&h->bytes_received, sink->total);
		curl_off_t sent = 0;
		if (curl_easy_getinfo(p->curl, CURLINFO_SIZE_UPLOAD_T, &sent) == CURLE_OK &&
		    sent > 0)
			atomic_fetch_add(&h->bytes_sent, (uint64_t)sent);
		if (ret)
			goto out;
		status = 0;
		curl_easy_getinfo(p->curl, CURLINFO_RESPONSE_CODE, &status);
		log_debug("%s -> %ld (%s)", what.data, status, curl_easy_strerror(rc));
		if (status == 429 || status == 503)
			atomic_fetch_add(&h->overloaded, 1);
		if (!idempotent || attempt >= h->retries || !retryable(rc, status))
			break;
		wait = backoff_ms(p->curl, status, attempt);
		if (wait < 0) {
			log_warn("%s: DSS asks to retry in more than %ld s, not retrying",
				 what.data, HTTP_RETRY_AFTER_MAX_MS / 1000);
			break;
		}
		if (rc != CURLE_OK)
			log_warn("%s: %s, retrying in %ld ms", what.data, curl_easy_strerror(rc),
				 wait);
		else
			log_warn("%s: HTTP %ld, retrying in %ld ms", what.data, status, wait);
		ret = wait_cancellable(h, wait);
		if (ret)
			goto out;
	}
	ret = outcome(what.data, rc, status, sink, errbuf, h->max_inflight);
out:
	if (ret == -ECANCELED || ret == -EINTR)
		log_debug("%s: %s", what.data, ret == -ECANCELED ? "cancelled" : "interrupted");
	if (ret) {
		atomic_fetch_add(&h->failures, 1);
		buf_release(sink->out);
	}
	/* The body is the caller's now: no longer in flight. */
	atomic_fetch_sub(&h->inflight, sink->charged);
	sink->charged = 0;
	if (p)
		pool_give(h, p);
	buf_release(&url);
	buf_release(&what);
	atomic_fetch_sub(&h->active, 1);
	return ret;
}

int http_request(struct http *h, const char *method, const char *path, const char *body,
		 size_t body_len, struct buf *resp)
{
	struct sink sink = {.h = h, .out = resp, .fd = -1, .max = h->max_body};

	return do_request(h, method, path, body, body_len, &sink, NULL);
}

int http_request_to_fd(struct http *h, const char *method, const char *path, const char *body,
		       size_t body_len, int fd, size_t max, size_t *size)
{
	struct buf err = BUF_INIT;
	struct sink sink = {.h = h, .out = &err, .fd = fd, .max = max};
	int ret = do_request(h, method, path, body, body_len, &sink, NULL);

	*size = sink.total;
	buf_release(&err);
	return ret;
}

int http_upload(struct http *h, const char *path, const char *data, int fd, size_t len, int form,
		struct buf *resp)
{
	struct sink sink = {.h = h, .out = resp, .fd = -1, .max = h->max_body};
	struct upload up = {data ? data : "", len, 0, form ? UPLOAD_FORM : UPLOAD_RAW, fd, NULL};

	return do_request(h, "POST", path, NULL, 0, &sink, &up);
}

void http_cancel_all(struct http *h)
{
	if (h)
		atomic_store(&h->cancelled, 1);
}

void http_cancel_reads(struct http *h)
{
	if (h)
		atomic_store(&h->reads_cancelled, 1);
}

int http_thread_save(int on)
{
	int was = thread_saving;

	thread_saving = on;
	return was;
}

int http_thread_cancelled(void *h)
{
	return cancel_check(h);
}

void http_set_thread_cancel(int (*cancelled)(void *arg), void *arg)
{
	thread_cancelled = cancelled;
	thread_cancel_arg = cancelled ? arg : NULL;
}

void http_get_stats(struct http *h, struct http_stats *st)
{
	st->requests = atomic_load(&h->requests);
	for (int k = 0; k < HTTP_KINDS; k++)
		st->by_kind[k] = atomic_load(&h->by_kind[k]);
	st->failures = atomic_load(&h->failures);
	st->overloaded = atomic_load(&h->overloaded);
	st->bytes_received = atomic_load(&h->bytes_received);
	st->bytes_sent = atomic_load(&h->bytes_sent);
	st->active = atomic_load(&h->active);
	st->inflight_bytes = atomic_load(&h->inflight);
}

void http_global_cleanup(void)
{
	if (global_ok)
		curl_global_cleanup();
}
