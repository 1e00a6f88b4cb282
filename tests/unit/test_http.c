/*
 * http against a tiny HTTP/1.1 server on 127.0.0.1 run by a thread of this
 * test: retries and their waits, Retry-After, timeouts, the stream deadline,
 * cancellation (http_cancel_all, http_cancel_reads, saves, the thread hook), the memory bound, and
 * the resend of a PUT whose kept-alive connection was dropped.
 *
 * The server answers by path (after /public/api/):
 *   ok                 200 {"ok":true}
 *   stall              reads the request, never answers
 *   status/S/R         status S, with "Retry-After: R" if R >= 0
 *   big/N              200 with N bytes
 *   drip               200 with a Content-Length of 100000, 2 bytes every 200 ms
 *   put-drop           the first PUT that arrives on a connection that already
 *                      served a request: read, then the connection is closed
 *                      without an answer; otherwise 200
 * Timings are only checked as generous upper bounds, and as lower bounds
 * where dssfs must wait (Retry-After).
 */
#include "check.h"
#include "dssfs/http.h"
#include "dssfs/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 32
#define MAX_LOG 256

struct conn {
	int fd;
	char buf[8192];
	size_t len;
	int served;	   /* requests answered on this connection */
	int64_t drip_next; /* > 0: dripping a body */
};

struct logged {
	char method[8];
	char path[128];
	int64_t ms;
};

static struct {
	int lfd, port;
	pthread_t tid;
	atomic_int stop;
	pthread_mutex_t lock;
	struct conn conns[MAX_CONNS];
	struct logged log[MAX_LOG];
	int nlog, dropped_put;
} srv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void send_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		data += n;
		len -= (size_t)n;
	}
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	c->fd = -1;
	c->len = 0;
	c->served = 0;
	c->drip_next = 0;
}

static void answer(struct conn *c, const char *method, const char *path)
{
	char head[256];
	int status, after;
	size_t n;

	pthread_mutex_lock(&srv.lock);
	if (srv.nlog < MAX_LOG) {
		struct logged *l = &srv.log[srv.nlog++];
		snprintf(l->method, sizeof(l->method), "%s", method);
		snprintf(l->path, sizeof(l->path), "%s", path);
		l->ms = now_ms();
	}
	pthread_mutex_unlock(&srv.lock);
	if (!strcmp(path, "stall"))
		return;
	if (!strcmp(path, "drip")) {
		const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
		send_all(c->fd, h, strlen(h));
		c->drip_next = now_ms();
		return;
	}
	if (!strcmp(path, "put-drop") && !strcmp(method, "PUT") && c->served && !srv.dropped_put) {
		srv.dropped_put = 1;
		conn_close(c);
		return;
	}
	if (sscanf(path, "status/%d/%d", &status, &after) == 2) {
		int len =
		    snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: 0\r\n", status);
		if (after >= 0)
			len += snprintf(head + len, sizeof(head) - (size_t)len,
					"Retry-After: %d\r\n", after);
		snprintf(head + len, sizeof(head) - (size_t)len, "\r\n");
		send_all(c->fd, head, strlen(head));
	} else if (sscanf(path, "big/%zu", &n) == 1) {
		static char chunk[65536];
		memset(chunk, 'x', sizeof(chunk));
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
		send_all(c->fd, head, strlen(head));
		for (size_t off = 0; off < n; off += sizeof(chunk))
			send_all(c->fd, chunk, n - off < sizeof(chunk) ? n - off : sizeof(chunk));
	} else {
		const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
		send_all(c->fd, ok, strlen(ok));
	}
	c->served++;
}

/* Answers every complete request in c's buffer. */
static void serve_buffer(struct conn *c)
{
	for (;;) {
		char method[8], path[128];
		const char *end, *cl;
		size_t body = 0, total;

		c->buf[c->len] = '\0';
		end = strstr(c->buf, "\r\n\r\n");
		if (!end)
			return;
		cl = strcasestr(c->buf, "\r\ncontent-length:");
		if (cl && cl < end)
			body = strtoul(cl + 17, NULL, 10);
		total = (size_t)(end - c->buf) + 4 + body;
		if (total > c->len)
			return;
		if (sscanf(c->buf, "%7s /public/api/%127s", method, path) != 2)
			snprintf(path, sizeof(path), "?");
		memmove(c->buf, c->buf + total, c->len - total);
		c->len -= total;
		answer(c, method, path);
		if (c->fd < 0)
			return;
	}
}

static void *server_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&srv.stop)) {
		struct pollfd pf[MAX_CONNS + 1];
		int64_t now = now_ms();

		pf[0] = (struct pollfd){.fd = srv.lfd, .events = POLLIN};
		for (int i = 0; i < MAX_CONNS; i++)
			pf[i + 1] = (struct pollfd){.fd = srv.conns[i].fd, .events = POLLIN};
		if (poll(pf, MAX_CONNS + 1, 20) < 0)
			continue;
		if (pf[0].revents & POLLIN) {
			int fd = accept(srv.lfd, NULL, NULL);
			for (int i = 0; fd >= 0 && i < MAX_CONNS; i++)
				if (srv.conns[i].fd < 0) {
					srv.conns[i].fd = fd;
					fd = -1;
				}
			if (fd >= 0)
				close(fd);
		}
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *c = &srv.conns[i];
			if (c->fd < 0 || pf[i + 1].fd != c->fd)
				continue;
			if (pf[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n =
				    recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
				if (n <= 0) {
					conn_close(c);
					continue;
				}
				c->len += (size_t)n;
				serve_buffer(c);
			}
			if (c->fd >= 0 && c->drip_next && now >= c->drip_next) {
				send_all(c->fd, "xx", 2);
				c->drip_next = now + 200;
			}
		}
	}
	for (int i = 0; i < MAX_CONNS; i++)
		if (srv.conns[i].fd >= 0)
			conn_close(&srv.conns[i]);
	return NULL;
}

static void server_start(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	for (int i = 0; i < MAX_CONNS; i++)
		srv.conns[i].fd = -1;
	srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&a, sizeof(a)) || listen(srv.lfd, 64) ||
	    getsockname(srv.lfd, (struct sockaddr *)&a, &alen)) {
		perror("test server");
		exit(1);
	}
	srv.port = ntohs(a.sin_port);
	pthread_create(&srv.tid, NULL, server_main, NULL);
}

static void server_stop(void)
{
	atomic_store(&srv.stop, 1);
	pthread_join(srv.tid, NULL);
	close(srv.lfd);
}

static void log_reset(void)
{
	pthread_mutex_lock(&srv.lock);
	srv.nlog = 0;
	pthread_mutex_unlock(&srv.lock);
}

/* Requests the server received since log_reset() with this method and
 * path; *first and *last get the times of the first and last. */
static int log_count(const char *method, const char *path, int64_t *first, int64_t *last)
{
	int n = 0;

	pthread_mutex_lock(&srv.lock);
	for (int i = 0; i < srv.nlog; i++) {
		if (strcmp(srv.log[i].method, method) || strcmp(srv.log[i].path, path))
			continue;
		if (first && !n)
			*first = srv.log[i].ms;
		if (last)
			*last = srv.log[i].ms;
		n++;
	}
	pthread_mutex_unlock(&srv.lock);
	return n;
}

static struct http *client(long timeout_ms, long stream_timeout_ms, int retries, size_t max_body,
			   size_t max_inflight)
{
	char url[64];
	struct http_config cfg = {
	    .base_url = url,
	    .api_key = "unit-test-key",
	    .verify_tls = 1,
	    .connect_timeout_ms = 2000,
	    .timeout_ms = timeout_ms,
	    .stream_timeout_ms = stream_timeout_ms,
	    .max_body = max_body,
	    .max_inflight = max_inflight,
	    .retries = retries,
	};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv.port);
	return http_new(&cfg);
}

/* Runs `fn` in a thread after `delay_ms`. */
struct later {
	pthread_t tid;
	long delay_ms;
	void (*fn)(void *arg);
	void *arg;
};

static void *later_main(void *arg)
{
	struct later *l = arg;

	sleep_ms(l->delay_ms);
	l->fn(l->arg);
	return NULL;
}

static void later_start(struct later *l, long delay_ms, void (*fn)(void *), void *arg)
{
	l->delay_ms = delay_ms;
	l->fn = fn;
	l->arg = arg;
	pthread_create(&l->tid, NULL, later_main, l);
}

static void set_flag(void *arg)
{
	atomic_store((atomic_int *)arg, 1);
}

static int flag_hook(void *arg)
{
	return atomic_load((atomic_int *)arg);
}

static void cancel_all(void *arg)
{
	http_cancel_all(arg);
}

static const size_t MiB = (size_t)1 << 20;

/* Waits between retries are drawn at random up to their cap ("full
 * jitter"), so that clients failing together do not retry together, and
 * Retry-After is taken as it is, up to its bound (issue 7, 3.2). */
static void test_backoff_is_jittered(void)
{
	for (int attempt = 0; attempt < 12; attempt++) {
		long cap = HTTP_BACKOFF_FIRST_MS << attempt;
		long lo = cap, hi = -1, distinct = 0;
		static char seen[HTTP_BACKOFF_MAX_MS + 1];

		if (cap > HTTP_BACKOFF_MAX_MS)
			cap = HTTP_BACKOFF_MAX_MS;
		memset(seen, 0, sizeof(seen));
		for (int i = 0; i < 4000; i++) {
			long w = http_backoff_ms(0, attempt);
			CHECK(w >= 0 && w <= cap);
			if (w < 0 || w > cap)
				break;
			lo = w < lo ? w : lo;
			hi = w > hi ? w : hi;
			distinct += !seen[w];
			seen[w] = 1;
		}
		/* spread over the whole range, not one fixed wait */
		CHECK(lo <= cap / 10 && hi >= cap - cap / 10);
		CHECK(distinct >= cap / 2);
	}
	CHECK_INT(http_backoff_ms(3, 0), 3000);
	CHECK_INT(http_backoff_ms(HTTP_RETRY_AFTER_MAX_MS / 1000, 5), HTTP_RETRY_AFTER_MAX_MS);
	CHECK_INT(http_backoff_ms(HTTP_RETRY_AFTER_MAX_MS / 1000 + 1, 0), -1);
}

static void test_retries(void)
{
	static const struct {
		const char *method, *path;
		int retries, err, sent;
	} cases[] = {
	    /* 502/503/504 and 429: retried; 429 maps to EAGAIN */
	    {"GET", "status/503/-1", 3, -EIO, 4},
	    {"GET", "status/502/-1", 1, -EIO, 2},
	    {"GET", "status/504/-1", 2, -ETIMEDOUT, 3},
	    {"GET", "status/429/-1", 2, -EAGAIN, 3},
	    {"GET", "status/503/-1", 0, -EIO, 1},
	    /* not retried: other errors, and any PUT or POST */
	    {"GET", "status/500/-1", 3, -EIO, 1},
	    {"GET", "status/404/-1", 3, -ENOENT, 1},
	    {"PUT", "status/503/-1", 3, -EIO, 1},
	    {"POST", "status/503/-1", 3, -EIO, 1},
	    /* Retry-After beyond HTTP_RETRY_AFTER_MAX_MS: no retry at all */
	    {"GET", "status/503/30", 3, -EIO, 1},
	    {"GET", "status/429/11", 3, -EAGAIN, 1},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http *h = client(5000, 0, cases[i].retries, MiB, 0);
		struct buf resp = BUF_INIT;
		const char *body = strcmp(cases[i].method, "GET") ? "{}" : NULL;
		int64_t t0 = now_ms();

		log_reset();
		CHECK_INT(
		    http_request(h, cases[i].method, cases[i].path, body, body ? 2 : 0, &resp),
		    cases[i].err);
		CHECK_INT(log_count(cases[i].method, cases[i].path, NULL, NULL), cases[i].sent);
		/* waits of at most 0.1, 0.2, 0.4 s: far below this */
		CHECK(now_ms() - t0 < 5000);
		http_free(h);
	}
}

static void test_retry_after_is_honoured(void)
{
	struct http *h = client(5000, 0, 2, MiB, 0);
	struct buf resp = BUF_INIT;
	int64_t first = 0, last = 0;

	log_reset();
	CHECK_INT(http_get(h, "status/503/1", &resp), -EIO);
	CHECK_INT(log_count("GET", "status/503/1", &first, &last), 3);
	/* two waits of exactly 1 s */
	CHECK(last - first >= 2000);
	CHECK(last - first < 6000);
	http_free(h);
}

static void test_stall_times_out(void)
{
	struct http *h = client(1000, 0, 2, MiB, 0);
	struct buf resp = BUF_INIT;
	int64_t t0 = now_ms();

	log_reset();
	CHECK_INT(http_get(h, "stall", &resp), -ETIMEDOUT);
	CHECK(now_ms() - t0 < 4000);
	CHECK_INT(log_count("GET", "stall", NULL, NULL), 1); /* a timeout is not retried */
	http_free(h);
}

static void test_stream_has_a_total_deadline(void)
{
	/* 2 bytes every 200 ms never stall for 1 s, but the stream must end
	 * after 1.5 s in all */
	struct http *h = client(1000, 1500, 2, MiB, 0);
	FILE *f = tmpfile();
	size_t size = 0;
	int64_t t0 = now_ms();

	CHECK_INT(http_request_to_fd(h, "POST", "drip", "{}", 2, fileno(f), MiB, &size),
		  -ETIMEDOUT);
	CHECK(size > 0);
	CHECK(now_ms() - t0 < 6000);
	fclose(f);
	http_free(h);
}

static void test_thread_hook_interrupts(void)
{
	struct http *h = client(30000, 0, 2, MiB, 0);
	struct buf resp = BUF_INIT;
	atomic_int flag = 0;
	struct later l;
	int64_t t0;

	/* a request waiting for an answer */
	http_set_thread_cancel(flag_hook, &flag);
	later_start(&l, 300, set_flag, &flag);
	t0 = now_ms();
	CHECK_INT(http_get(h, "stall", &resp), -EINTR);
	CHECK(now_ms() - t0 < 2000);
	pthread_join(l.tid, NULL);

	/* a request that is already interrupted sends nothing */
	log_reset();
	CHECK_INT(http_get(h, "ok", &resp), -EINTR);
	CHECK_INT(log_count("GET", "ok", NULL, NULL), 0);

	/* a request in a Retry-After wait */
	atomic_store(&flag, 0);
	log_reset();
	later_start(&l, 300, set_flag, &flag);
	t0 = now_ms();
	CHECK_INT(http_get(h, "status/503/8", &resp), -EINTR);
	CHECK(now_ms() - t0 < 2000);
	CHECK_INT(log_count("GET", "status/503/8", NULL, NULL), 1);
	pthread_join(l.tid, NULL);

	/* the hook is per thread, and removed with NULL */
	http_set_thread_cancel(NULL, NULL);
	CHECK_INT(http_get(h, "ok", &resp), 0);
	CHECK_STR(resp.data, "{\"ok\":true}");
	buf_release(&resp);
	http_free(h);
}

struct getter {
	struct http *h;
	const char *path;
	int ret;
	int64_t ms;
};

static void *getter_main(void *arg)
{
	struct getter *g = arg;
	struct buf resp = BUF_INIT;
	int64_t t0 = now_ms();

	g->ret = http_get(g->h, g->path, &resp);
	g->ms = now_ms() - t0;
	buf_release(&resp);
	return NULL;
}

static void test_cancel_all(void)
{
	struct http *h = client(30000, 0, 3, MiB, 0);
	struct getter g[2] = {{h, "stall", 1, 0}, {h, "status/503/8", 1, 0}};
	pthread_t tid[2];
	struct buf resp = BUF_INIT;
	struct later l;

	log_reset();
	for (int i = 0; i < 2; i++)
		pthread_create(&tid[i], NULL, getter_main, &g[i]);
	later_start(&l, 300, cancel_all, h);
	for (int i = 0; i < 2; i++) {
		pthread_join(tid[i], NULL);
		CHECK_INT(g[i].ret, -ECANCELED);
		CHECK(g[i].ms < 2000);
	}
	pthread_join(l.tid, NULL);
	CHECK_INT(log_count("GET", "status/503/8", NULL, NULL), 1);
	/* for good: nothing is sent any more */
	CHECK_INT(http_get(h, "ok", &resp), -ECANCELED);
	CHECK_INT(log_count("GET", "ok", NULL, NULL), 0);
	http_free(h);
}

static void cancel_reads(void *arg)
{
	http_cancel_reads(arg);
}

static void *saver_main(void *arg)
{
	struct getter *g = arg;

	http_thread_save(1);
	getter_main(g);
	http_thread_save(0);
	return NULL;
}

/* http_cancel_reads ends reads, in flight and later ones, but neither a
 * save in flight nor a later one; a saving thread's hook does not cut it. */
static void test_cancel_reads_spares_saves(void)
{
	struct http *h = client(1500, 0, 0, MiB, 0);
	struct getter rd = {h, "stall", 1, 0}, sv = {h, "stall", 1, 0};
	pthread_t rtid, stid;
	struct buf resp = BUF_INIT;
	struct later l;
	atomic_int flag = 1;

	CHECK_INT(http_thread_cancelled(h), 0);
	log_reset();
	pthread_create(&rtid, NULL, getter_main, &rd);
	pthread_create(&stid, NULL, saver_main, &sv);
	later_start(&l, 300, cancel_reads, h);
	pthread_join(rtid, NULL);
	pthread_join(stid, NULL);
	pthread_join(l.tid, NULL);
	CHECK_INT(rd.ret, -ECANCELED);
	CHECK(rd.ms < 1200);
	CHECK_INT(sv.ret, -ETIMEDOUT); /* went on to its own end */
	CHECK(sv.ms >= 1400);
	CHECK_INT(log_count("GET", "stall", NULL, NULL), 2);

	/* later: a read sends nothing; a save is sent, also with its hook fired */
	CHECK_INT(http_thread_cancelled(h), -ECANCELED);
	CHECK_INT(http_get(h, "ok", &resp), -ECANCELED);
	CHECK_INT(log_count("GET", "ok", NULL, NULL), 0);
	http_set_thread_cancel(flag_hook, &flag);
	CHECK_INT(http_thread_save(1), 0);
	CHECK_INT(http_thread_cancelled(h), 0);
	CHECK_INT(http_request(h, "PUT", "ok", "{}", 2, &resp), 0);
	CHECK_INT(log_count("PUT", "ok", NULL, NULL), 1);
	/* saves nest */
	CHECK_INT(http_thread_save(1), 1);
	CHECK_INT(http_thread_save(1), 1);
	CHECK_INT(http_thread_save(0), 1);
	/* only http_cancel_all ends a save */
	http_cancel_all(h);
	CHECK_INT(http_thread_cancelled(h), -ECANCELED);
	CHECK_INT(http_request(h, "PUT", "ok", "{}", 2, &resp), -ECANCELED);
	http_set_thread_cancel(NULL, NULL);
	buf_release(&resp);
	http_free(h);
}

static void test_memory_bounds(void)
{
	struct http *h = client(5000, 0, 0, 4 * MiB, MiB);
	struct buf resp = BUF_INIT;

	/* 600 KB take a 1 MiB buffer: within max_inflight, and released after
	 * each request (else the second would be refused) */
	for (int i = 0; i < 3; i++) {
		CHECK_INT(http_get(h, "big/600000", &resp), 0);
		CHECK_INT(resp.len, 600000);
	}
	/* 1.5 MB would take 2 MiB: refused, memory released */
	CHECK_INT(http_get(h, "big/1500000", &resp), -ENOMEM);
	CHECK_INT(resp.len, 0);
	CHECK_INT(http_get(h, "big/600000", &resp), 0);
	/* beyond max_body: refused by its Content-Length */
	CHECK_INT(http_get(h, "big/5000000", &resp), -EFBIG);
	/* into a file: max_inflight does not apply */
	FILE *f = tmpfile();
	size_t size = 0;
	CHECK_INT(http_request_to_fd(h, "POST", "big/3000000", "{}", 2, fileno(f), 4 * MiB, &size),
		  0);
	CHECK_INT(size, 3000000);
	fclose(f);
	buf_release(&resp);
	http_free(h);
}

static void test_put_resent_on_dropped_keepalive(void)
{
	struct http *h = client(5000, 0, 2, MiB, 0);
	struct buf resp = BUF_INIT;
	const char *body = "{\"columns\":[]}";

	log_reset();
	CHECK_INT(http_get(h, "ok", &resp), 0); /* a kept-alive connection now exists */
	CHECK_INT(http_request(h, "PUT", "put-drop", body, strlen(body), &resp), 0);
	/* the dropped one and the one libcurl resent with the body rewound */
	CHECK_INT(log_count("PUT", "put-drop", NULL, NULL), 2);
	CHECK_INT(srv.dropped_put, 1);
	buf_release(&resp);
	http_free(h);
}

int main(void)
{
	alarm(120); /* a hang is a failure */
	log_set_level(LOG_LVL_ERROR);
	server_start();
	test_retries();
	test_backoff_is_jittered();
	test_retry_after_is_honoured();
	test_stall_times_out();
	test_stream_has_a_total_deadline();
	test_thread_hook_interrupts();
	test_memory_bounds();
	test_put_resent_on_dropped_keepalive();
	test_cancel_all();
	test_cancel_reads_spares_saves();
	server_stop();
	http_global_cleanup();
	CHECK_DONE();
}
