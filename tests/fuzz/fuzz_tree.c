/*
 * fuzz_tree - the tree engine fed by a hostile server.
 *
 * The input is the server's side of a conversation: bodies separated by a
 * line "--" ("\n--\n", which no JSON document contains).  Each request the
 * engine sends takes the next body in order; a body "!" followed by a byte
 * is an error (the byte picks the errno); once the input is used up, every
 * request fails with ENOENT.  The engine is driven as `ls -lR` and `cat`
 * drive it through FUSE: readdir from the root, lookup of every listed name
 * and of a few hostile ones, getattr, and open (read-only) of every file,
 * down to the leaves of the table.  The first byte of the input chooses
 * the mount (see LLVMFuzzerTestOneInput).
 *
 * This file defines every function of include/dssfs/http.h, so the linker
 * takes none of src/http.c from dssfs_core (check: nm fuzz_tree | grep
 * curl_ prints nothing).
 *
 * Checked: no crash, leak or undefined behaviour; no request but GET and
 * the POST of a stream (reading never writes to DSS); every requested path
 * is made of URL-safe segments, none "." or ".."; every listed name is a
 * usable, unique file name; lookup agrees with readdir on the type and the
 * inode; getattr agrees with lookup and open with getattr on the size.
 *
 * With DSSFS_FUZZ_TRACE set in the environment, each request is printed
 * with the number of the body that answers it (to write seed inputs).
 */
#include "dssfs/cache.h"
#include "dssfs/escape.h"
#include "dssfs/http.h"
#include "dssfs/log.h"
#include "dssfs/tree.h"
#include "fuzz.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bounds that keep one input fast. */
#define MAX_REQUESTS 400
#define MAX_ENTRIES 40 /* visited per directory */
#define MAX_DEPTH 6

#define SEP "\n--\n"

/* ---- the server --------------------------------------------------------- */

struct http {
	int unused;
};

static struct {
	const char *data;
	size_t size, pos;
	atomic_int requests;
	int trace;
	pthread_mutex_t lock; /* prefetch threads ask too */
} server = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const int errnos[] = {ENOENT, EACCES, EIO, EFBIG, ETIMEDOUT, ECONNREFUSED, EPERM, EINVAL};

/* Whether a requested path is made of URL-safe segments, none a dot
 * segment: no object name can change which resource it names. */
static int safe_path(const char *path)
{
	const char *seg = path;

	for (const char *p = path;; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '/' || !c) {
			size_t n = (size_t)(p - seg);
			if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
				return 0;
			if (!c)
				return 1;
			seg = p + 1;
		} else if (c == '?') {
			/* a query string: only the table's own (the library's) */
			return !strcmp(p, "?dataEncoding=base64");
		} else if (c <= ' ' || c >= 0x7f || strchr("?#\\\"<>{}|^`[]", c)) {
			return 0;
		}
	}
}

/* The next body: 0 with *body and *len set, or -errno.  The engine only
 * reads: GET, and POST for a stream. */
static int next_body(const char *method, const char *expected, const char *path, const char **body,
		     size_t *len)
{
	const char *start, *end;
	size_t n;
	int nr;

	REQUIRE(!strcmp(method, expected));
	REQUIRE(safe_path(path));
	pthread_mutex_lock(&server.lock);
	nr = server.requests++;
	if (server.trace)
		fprintf(stderr, "body %d: %s %s\n", nr, method, path);
	if (server.pos > server.size || nr >= MAX_REQUESTS) {
		pthread_mutex_unlock(&server.lock);
		return -ENOENT;
	}
	start = server.data + server.pos;
	end = memmem(start, server.size - server.pos, SEP, strlen(SEP));
	n = end ? (size_t)(end - start) : server.size - server.pos;
	server.pos += n + strlen(SEP);
	pthread_mutex_unlock(&server.lock);
	if (n >= 1 && start[0] == '!')
		return -errnos[(n >= 2 ? (unsigned char)start[1] : 0) %
			       (sizeof(errnos) / sizeof(errnos[0]))];
	*body = start;
	*len = n;
	return 0;
}

struct http *http_new(const struct http_config *cfg)
{
	(void)cfg;
	return calloc(1, sizeof(struct http));
}

void http_free(struct http *h)
{
	free(h);
}

int http_request(struct http *h, const char *method, const char *path, const char *body,
		 size_t body_len, struct buf *resp)
{
	const char *b;
	size_t n;
	int ret;

	(void)h;
	(void)body;
	(void)body_len;
	buf_reset(resp);
	ret = next_body(method, "GET", path, &b, &n);
	if (!ret)
		buf_add(resp, b, n);
	return ret;
}

int http_request_to_fd(struct http *h, const char *method, const char *path, const char *body,
		       size_t body_len, int fd, size_t max, size_t *size)
{
	const char *b;
	size_t n;
	int ret;

	(void)h;
	(void)body;
	(void)body_len;
	/* an export (POST) or a managed folder's file (GET) */
	ret = next_body(method, strcmp(method, "GET") ? "POST" : "GET", path, &b, &n);
	if (ret)
		return ret;
	if (n > max)
		return -EFBIG;
	REQUIRE(write(fd, b, n) == (ssize_t)n);
	*size = n;
	return 0;
}

/* This client only reads: no upload may happen. */
int http_upload(struct http *h, const char *path, const char *data, int fd, size_t len, int form,
		struct buf *resp)
{
	(void)h;
	(void)path;
	(void)data;
	(void)fd;
	(void)len;
	(void)form;
	(void)resp;
	REQUIRE(!"an upload from a read-only walk");
	return -EIO;
}

void http_get_stats(struct http *h, struct http_stats *st)
{
	(void)h;
	memset(st, 0, sizeof(*st));
	st->requests = (uint64_t)server.requests;
}

/* Reads are never interrupted here. */
void http_set_thread_cancel(int (*cancelled)(void *arg), void *arg)
{
	(void)cancelled;
	(void)arg;
}

void http_global_cleanup(void)
{
}

/* ---- the client --------------------------------------------------------- */

/* Strict: the cache holds everything for the whole run, so every answer
 * about a file must agree with the others. */
static int strict;

static void require_errno(int ret)
{
	REQUIRE(ret <= 0 && ret > -4096);
}

static void check_listing(const struct tree_dir *d)
{
	REQUIRE(d->n >= 2);
	REQUIRE(!strcmp(d->ents[0].name, ".") && !strcmp(d->ents[1].name, ".."));
	for (size_t i = 2; i < d->n; i++) {
		const char *name = d->ents[i].name;
		REQUIRE(*name && strlen(name) <= NAME_MAX_BYTES && !strchr(name, '/'));
		REQUIRE(strcmp(name, ".") && strcmp(name, ".."));
		REQUIRE(d->ents[i].mode == S_IFDIR || d->ents[i].mode == S_IFREG);
		for (size_t k = 2; k < i; k++)
			REQUIRE(strcmp(name, d->ents[k].name));
	}
}

static void read_file(struct tree *t, uint64_t ino, const struct stat *st)
{
	struct buf content = BUF_INIT;
	struct tree_base base;
	struct tree_stream *s;
	int changed, kind = tree_file_kind(t, ino);

	REQUIRE(kind == TREE_API_RO || kind == TREE_API_RW || kind == TREE_STREAM);
	if (kind == TREE_STREAM) {
		int ret = tree_stream_open(t, ino, &s);
		require_errno(ret);
		if (!ret) {
			char chunk[512];
			off_t off = 0;
			ssize_t n;
			while ((n = tree_stream_read(s, chunk, sizeof(chunk), off)) > 0)
				off += n;
			REQUIRE(n == 0);
			if (strict)
				REQUIRE(off == st->st_size);
			tree_stream_close(s);
		}
		return;
	}
	struct tree_caller who = {(int64_t)getpid(), 0, 0};
	int ret = tree_open(t, ino, 0, &who, &content, &base, &changed);
	require_errno(ret);
	if (!ret && strict) {
		REQUIRE((off_t)content.len == st->st_size);
		REQUIRE(!changed);
	}
	buf_release(&content);
}

static void visit(struct tree *t, uint64_t ino, int depth);

/* Looks a name up; then what a walk does with what it found. */
static void look(struct tree *t, uint64_t dir, const char *name, mode_t listed_mode,
		 uint64_t listed_ino, int depth)
{
	struct stat st, st2;
	uint64_t ino;
	int permanent;
	int ret = tree_lookup(t, dir, name, &ino, &st, &permanent);

	require_errno(ret);
	if (ret)
		return;
	REQUIRE(ino != TREE_ROOT_INO && st.st_ino == ino);
	REQUIRE(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode));
	if (listed_mode)
		REQUIRE((st.st_mode & S_IFMT) == listed_mode);
	if (listed_ino && strict)
		REQUIRE(ino == listed_ino);
	ret = tree_getattr(t, ino, &st2);
	require_errno(ret);
	if (!ret && strict)
		REQUIRE(st2.st_ino == ino && st2.st_mode == st.st_mode &&
			st2.st_size == st.st_size);
	if (S_ISDIR(st.st_mode))
		visit(t, ino, depth + 1);
	else
		read_file(t, ino, &st);
	tree_forget(t, ino, 1);
}

static void visit(struct tree *t, uint64_t ino, int depth)
{
	static const char *const hostile[] = {"export.zip", "nothing-here", "%2F", "%2E%2E", "a%"};
	struct tree_dir d;
	char toolong[NAME_MAX_BYTES + 2];
	uint64_t ino2;
	struct stat st;
	int permanent, ret;

	if (depth > MAX_DEPTH || server.requests > MAX_REQUESTS)
		return;
	ret = tree_readdir(t, ino, &d);
	require_errno(ret);
	if (ret)
		return;
	check_listing(&d);
	for (size_t i = 2; i < d.n && i < 2 + MAX_ENTRIES; i++)
		look(t, ino, d.ents[i].name, d.ents[i].mode, d.ents[i].ino, depth);
	tree_dir_release(&d);
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++)
		look(t, ino, hostile[i], 0, 0, depth);
	memset(toolong, 'x', sizeof(toolong) - 1);
	toolong[sizeof(toolong) - 1] = '\0';
	REQUIRE(tree_lookup(t, ino, toolong, &ino2, &st, &permanent) == -ENAMETOOLONG);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int once;
	struct tree_options o = {.mount_time_ms = 1700000000000LL,
				 .uid = 1000,
				 .gid = 1000,
				 .scratch_max = 1 << 20,
				 .spool_max = 1 << 20};
	uint8_t flags = size ? data[0] : 0;

	if (!once) {
		/* Errors about hostile answers are expected: not printed. */
		log_thread_quiet(1);
		server.trace = getenv("DSSFS_FUZZ_TRACE") != NULL;
		once = 1;
	}
	/* The first byte chooses the mount: read-only or not (bit 0), a cache
	 * small enough to drop documents between two questions (bit 1), and
	 * prefetching by one thread (bit 2; the bodies then answer requests
	 * in the order the two threads send them, which may vary), and the
	 * admin probe of the mount (bit 3: its answer, the first body, decides
	 * whether instance/'s admin rows exist). */
	if (size) {
		data++;
		size--;
	}
	o.read_only = flags & 1;
	strict = !(flags & 2);
	server.data = (const char *)data;
	server.size = size;
	server.pos = 0;
	server.requests = 0;

	struct http *h = http_new(NULL);
	struct cache *c = tree_cache_new(strict ? (size_t)1 << 30 : 4096, INT64_MAX / 4);
	o.prefetch_threads = flags & 4 ? 1 : 0;
	struct tree *t = tree_new(h, c, &o);
	if (flags & 8)
		tree_probe_admin(t);
	tree_start(t);
	visit(t, TREE_ROOT_INO, 0);
	tree_free(t);
	cache_free(c);
	http_free(h);
	return 0;
}
