/*
 * resource - the documents of the tree: REST resources fetched into the
 * cache, parsed, checked and rendered as the bytes of files.
 */
#include "tree_int.h"

#include "dssfs/cache.h"
#include "dssfs/errmap.h"
#include "dssfs/escape.h"
#include "dssfs/http.h"
#include "dssfs/json.h"
#include "dssfs/log.h"
#include "dssfs/pathtab.h"
#include "dssfs/strmap.h"
#include "dssfs/tsvcsv.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- resources ---------------------------------------------------------- */

static void resource_free(void *v)
{
	struct resource *res = v;

	if (!res)
		return;
	while (res->r) {
		struct rendering *r = res->r;
		res->r = r->next;
		buf_release(&r->bytes);
		free(r);
	}
	listings_free(res->listings);
	content_free(res->content);
	cJSON_Delete(res->json);
	if (res->spool_fd >= 0) {
		close(res->spool_fd);
		atomic_fetch_sub(&res->owner->spool_used, res->spool_size);
	}
	pthread_mutex_destroy(&res->lock);
	free(res);
}

struct cache *tree_cache_new(size_t max_bytes, int64_t ttl_ms)
{
	return cache_new(max_bytes, ttl_ms, resource_free, NULL);
}

/* A \uXXXX escape cJSON cannot hold (\u0000 cuts the string, a lone
 * surrogate fails the whole document) is rewritten as MARK_ESCAPE followed by
 * its four hex digits: a byte no UTF-8 text contains, so it is found again
 * when rendering (unmark_text(), unmark_json()) and a name holding it is
 * never valid. */
#define MARK_ESCAPE '\xfe'
/* A number a double cannot hold as DSS wrote it (number_lossy: 1e400, an
 * integer beyond 2^53) is rewritten as a string of MARK_NUMBER and the
 * number's text, which unmark_json() writes back as the bare number: such
 * a document is shown as DSS sent it (and read-only, see `unfaithful`). */
#define MARK_NUMBER '\xfd'

static int hexval(int c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* The code unit of the escape "\uXXXX" at s (len bytes available), or -1. */
static long escape_unit(const char *s, size_t len)
{
	long v = 0;

	if (len < 6 || s[0] != '\\' || s[1] != 'u')
		return -1;
	for (int i = 2; i < 6; i++) {
		int h = hexval((unsigned char)s[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/* Marks the escapes cJSON cannot hold (see MARK_ESCAPE) in a JSON text, in
 * place: the text only shrinks (six bytes become five), so each byte is
 * written at or before where it is read, never ahead of what is still to
 * read.  Returns how many were marked.  (In place: the body of a large
 * listing is not copied.) */
static size_t mark_escapes(struct buf *b)
{
	char *s = b->data;
	size_t len = b->len, w = 0, marked = 0;
	int in_string = 0;

	if (!len || !memmem(s, len, "\\u", 2))
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!in_string) {
			in_string = c == '"';
			s[w++] = c;
			continue;
		}
		if (c == '"') {
			in_string = 0;
			s[w++] = c;
			continue;
		}
		if (c != '\\' || i + 1 >= len) {
			s[w++] = c;
			continue;
		}
		long u = escape_unit(s + i, len - i);
		if (u >= 0xD800 && u <= 0xDBFF) {
			long lo = escape_unit(s + i + 6, len - i - 6);
			if (lo >= 0xDC00 && lo <= 0xDFFF) {
				for (int k = 0; k < 12; k++) /* a valid pair */
					s[w++] = s[i + k];
				i += 11;
				continue;
			}
		}
		if (u == 0 || (u >= 0xD800 && u <= 0xDFFF)) {
			s[w++] = MARK_ESCAPE;
			for (int k = 2; k < 6; k++)
				s[w++] = s[i + k];
			i += 5;
			marked++;
			continue;
		}
		/* any other escape: copied as is, with the escaped character */
		s[w++] = s[i];
		s[w++] = s[i + 1];
		i++;
	}
	buf_setlen(b, w);
	return marked;
}

/* Whether a number cannot be rendered as the value DSS sent: not finite,
 * or an integer beyond 2^53 (a double holds it only approximately). */
static int number_lossy(double d)
{
	return !isfinite(d) || fabs(d) >= 9007199254740992.0;
}

/* Whether a number's text (valid JSON) reads as a value that renders as
 * something else: beyond a double's range, or an integer beyond 2^53. */
static int number_text_lossy(const char *s, size_t n)
{
	char *text = xstrndup(s, n);
	double d;

	errno = 0;
	d = strtod(text, NULL);
	int lossy = errno == ERANGE || number_lossy(d);
	free(text);
	return lossy;
}

static int has_lossy_number(const cJSON *j)
{
	if (cJSON_IsNumber(j) && number_lossy(j->valuedouble))
		return 1;
	for (const cJSON *c = j ? j->child : NULL; c; c = c->next)
		if (has_lossy_number(c))
			return 1;
	return 0;
}

/* Copies a JSON document (which parsed), marking the numbers a double
 * cannot hold (see MARK_NUMBER).  Returns how many were marked. */
static size_t mark_numbers(const char *in, size_t len, struct buf *out)
{
	size_t marked = 0;

	buf_grow(out, len + 64);
	for (size_t i = 0; i < len;) {
		size_t j = i + 1;
		if (in[i] == '"') { /* a string, as it is */
			while (j < len && in[j] != '"')
				j += in[j] == '\\' ? 2 : 1;
			j = j < len ? j + 1 : len;
			buf_add(out, in + i, j - i);
		} else if (in[i] == '-' || (in[i] >= '0' && in[i] <= '9')) {
			while (j < len && in[j] && strchr("0123456789+-.eE", in[j]))
				j++;
			if (number_text_lossy(in + i, j - i)) {
				buf_addch(out, '"');
				buf_addch(out, MARK_NUMBER);
				buf_add(out, in + i, j - i);
				buf_addch(out, '"');
				marked++;
			} else {
				buf_add(out, in + i, j - i);
			}
		} else {
			buf_addch(out, in[i]);
		}
		i = j;
	}
	return marked;
}

static const char *find_unfaithful(const cJSON *j, size_t marked)
{
	if (marked)
		return "a string holds \\u0000 or a lone surrogate, which cannot be kept";
	if (!j)
		return NULL;
	if (cJSON_IsNumber(j) && number_lossy(j->valuedouble))
		return "a number is too large to be kept exactly";
	for (const cJSON *c = j->child; c; c = c->next) {
		const char *why = find_unfaithful(c, 0);
		if (why)
			return why;
	}
	return NULL;
}

const char *doc_unfaithful(const char *data, size_t len, const cJSON *j)
{
	struct buf text = BUF_INIT;
	size_t n;

	buf_add(&text, data, len);
	n = mark_escapes(&text);
	buf_release(&text);
	return find_unfaithful(j, n);
}

static struct resource *resource_new(void)
{
	struct resource *res = xcalloc(1, sizeof(*res));

	res->spool_fd = -1;
	pthread_mutex_init(&res->lock, NULL);
	return res;
}

/* Parses a server's JSON body (its escapes marked: mark_escapes, nmarked
 * of them; `sent` bytes as DSS sent it) into a resource.  Text after the
 * document is an error, as it is for a save. */
static int parse_body(const char *what, const struct buf *body, size_t sent, size_t nmarked,
		      struct resource **out)
{
	const char *end = NULL;
	cJSON *json = cJSON_ParseWithLengthOpts(body->data, body->len, &end, 0);

	*out = NULL;
	if (!json) {
		log_error("GET %s: DSS answered with invalid JSON (%zu bytes)", what, sent);
		return -EIO;
	}
	for (; end && end < body->data + body->len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
			log_error("GET %s: DSS answered with text after the JSON document", what);
			cJSON_Delete(json);
			return -EIO;
		}
	}
	size_t numbers = 0;
	if (has_lossy_number(json)) {
		struct buf nums = BUF_INIT;
		size_t k = mark_numbers(body->data, body->len, &nums);
		cJSON *again = k ? cJSON_ParseWithLengthOpts(nums.data, nums.len, NULL, 0) : NULL;
		if (again) {
			cJSON_Delete(json);
			json = again;
			numbers = k;
		}
		buf_release(&nums);
	}
	struct resource *res = resource_new();
	res->json = json;
	res->unfaithful = find_unfaithful(json, nmarked);
	if (!res->unfaithful && numbers)
		res->unfaithful = "a number is too large to be kept exactly";
	*out = res;
	return 0;
}

/* The listing of a list-only folder read from its body (escapes marked)
 * without parsing the whole document (listing_scan): the resource holds
 * only its listing, as listing_compact leaves it.  (Its `unfaithful` is not
 * set: no file shows a list-only listing's document.)  -EINVAL if it cannot
 * be: the body is then parsed as any other. */
static int scan_body(const struct list_fetch *f, const struct buf *body, struct resource **out,
		     size_t *cost)
{
	size_t bytes = 0;
	struct listing *l;

	if (f->dir->recurse || !pathtab_list_only(f->dir))
		return -EINVAL;
	if (!(l = listing_scan(f->dir, body->data, body->len, &bytes)))
		return -EINVAL;
	*out = resource_new();
	(*out)->listings = l;
	*cost = sizeof(**out) + 256 + bytes;
	return 0;
}

/* What malloc adds to each block, roughly (glibc, 64-bit). */
#define MALLOC_OVERHEAD 16

/* The memory a parsed document takes: each node, its key and its string. */
static size_t json_bytes(const cJSON *j)
{
	size_t n = 0;

	for (; j; j = j->next) {
		n += sizeof(*j) + MALLOC_OVERHEAD;
		if (j->string)
			n += strlen(j->string) + 1 + MALLOC_OVERHEAD;
		if (j->valuestring)
			n += strlen(j->valuestring) + 1 + MALLOC_OVERHEAD;
		n += json_bytes(j->child);
	}
	return n;
}

/* Fetches and parses the document at key; the listing of the folder of f
 * (if f) is read without its whole tree when it can be (scan_body). */
static int fetch_parsed(struct tree *t, const char *key, const struct list_fetch *f, void **value,
			size_t *cost)
{
	struct buf body = BUF_INIT;
	struct resource *res;
	size_t sent, nmarked;
	int ret = http_get(t->http, key, &body);

	if (ret)
		return ret;
	sent = body.len;
	nmarked = mark_escapes(&body);
	if (f && !scan_body(f, &body, &res, cost)) {
		*value = res;
		goto out;
	}
	ret = parse_body(key, &body, sent, nmarked, &res);
	if (!ret) {
		/* What it takes in memory: the parsed tree, and the files
		 * rendered from it (about the body's size, twice: a recipe's
		 * two files, buffer slack). */
		*cost = json_bytes(res->json) + 2 * sent + sizeof(*res) + 256;
		*value = res;
	}
out:
	buf_release(&body);
	return ret;
}

int fetch_resource(void *ctx, const char *key, void **value, size_t *cost)
{
	return fetch_parsed(ctx, key, NULL, value, cost);
}

/* An anonymous temporary file (gone when closed). */
int spool_file(void)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	if (!dir || !*dir)
		dir = "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		char *tmpl = xasprintf("%s/dssfs-spool-XXXXXX", dir);
		fd = mkostemp(tmpl, O_CLOEXEC);
		if (fd >= 0)
			unlink(tmpl);
		free(tmpl);
	}
	return fd < 0 ? -errno : fd;
}

/* Spooled streams stay on disk while cached or open; those older than
 * spool_ttl_ms are dropped from the cache (their file goes with the last
 * reference), so that, with spool_total, their disk use is bounded. */
static int spool_expired(const char *key, void *value, void *ctx)
{
	int64_t *fetched = value;
	void **c = ctx;
	struct tree *t = c[0];

	if (*fetched + t->opt.spool_ttl_ms > *(int64_t *)c[1])
		return 0;
	cache_invalidate(t->cache, key);
	free(fetched);
	return 1;
}

static void sweep_spools(struct tree *t)
{
	int64_t now = cache_monotonic_ms();
	void *c[2] = {t, &now};

	/* cache_invalidate takes only the cache's lock, never t->lock */
	pthread_mutex_lock(&t->lock);
	strmap_filter(t->spools, spool_expired, c);
	pthread_mutex_unlock(&t->lock);
}

/* What fetch_spool fetches: the stream of file row `row`. */
struct spool_fetch {
	struct tree *t;
	const struct pt_row *row;
};

/* A dataset's rows arrived as TSV in *fd (size bytes): *fd becomes a file
 * of their CSV, *size its length, at most max bytes (-EFBIG). */
static int spool_to_csv(const char *key, int *fd, size_t *size, size_t max)
{
	int csv = spool_file(), ret;
	size_t len = 0;

	if (csv < 0) {
		log_error("%s: cannot make a temporary file: %s", key, strerror(-csv));
		return csv;
	}
	ret = tsvcsv_file(*fd, *size, csv, max, &len);
	if (ret) {
		close(csv);
		return ret;
	}
	close(*fd);
	*fd = csv;
	*size = len;
	return 0;
}

static int recent_failure(struct tree *t, const char *key);
static void note_failure(struct tree *t, const char *key, int err, int64_t window_ms);

/* Fetches a stream (key "<METHOD> <path>") into a spool file, within what
 * is left of spool_total (-ENOSPC beyond it), and spool_max for an export
 * or data_max for a dataset's rows (-EFBIG: too large to be shown whole). */
static int fetch_spool(void *ctx, const char *key, void **value, size_t *cost)
{
	struct spool_fetch *sf = ctx;
	struct tree *t = sf->t;
	const char *path = strchr(key, ' ') + 1;
	int post = !strncmp(key, "POST ", 5);
	struct resource *res;
	size_t size = 0, used, room, max, bound = SIZE_MAX;
	int fd, ret;

	/* Rows found over data_max are not downloaded again (up to the bound,
	 * at each lookup) before cache_ttl or SIGHUP: the answer stands. */
	if (sf->row->tsv_to_csv && recent_failure(t, key) == -EFBIG)
		return -EFBIG;
	sweep_spools(t);
	used = atomic_load(&t->spool_used);
	room = used < t->opt.spool_total ? t->opt.spool_total - used : 0;
	/* An export is also bounded by spool_max, a dataset's rows by
	 * data_max; a file of a managed folder or a log only by the disk left
	 * (files there can be gigabytes). */
	if (post)
		bound = t->opt.spool_max;
	else if (sf->row->tsv_to_csv)
		bound = t->opt.data_max;
	max = room < bound ? room : bound;
	if (!max) {
		log_error("%s: the files being held take all of -o spool_total", key);
		return -ENOSPC;
	}
	fd = spool_file();
	if (fd < 0) {
		log_error("%s: cannot make a temporary file: %s", key, strerror(-fd));
		return fd;
	}
	/* (an export's options: DSS's defaults) */
	ret = http_request_to_fd(t->http, post ? "POST" : "GET", path, post ? "{}" : NULL,
				 post ? 2 : 0, fd, max, &size);
	if (!ret && sf->row->tsv_to_csv)
		ret = spool_to_csv(key, &fd, &size, max);
	if (ret == -EFBIG && max < bound) {
		log_error("%s: the files being held take all of -o spool_total", key);
		ret = -ENOSPC;
	} else if (ret == -EFBIG && sf->row->tsv_to_csv) {
		log_error("%s: the rows take more than -o data_max=%zu (MiB): not shown, never in "
			  "part; mount with a larger -o data_max=MIB to read them",
			  key, bound >> 20);
		note_failure(t, key, ret, t->opt.spool_ttl_ms);
	}
	if (ret) {
		close(fd);
		return ret;
	}
	atomic_fetch_add(&t->spool_used, size);
	res = xcalloc(1, sizeof(*res));
	res->spool_fd = fd;
	res->spool_size = size;
	res->owner = t;
	pthread_mutex_init(&res->lock, NULL);
	*cost = sizeof(*res) + 256; /* the bytes are on disk */
	*value = res;
	int64_t *fetched = xmalloc(sizeof(*fetched));
	*fetched = cache_monotonic_ms();
	pthread_mutex_lock(&t->lock);
	free(strmap_put(t->spools, key, fetched));
	pthread_mutex_unlock(&t->lock);
	return 0;
}

int get_row_resource(struct tree *t, const struct pt_row *row, const struct pt_vars *vars,
		     struct cache_ref **ref)
{
	struct buf key = BUF_INIT;
	int ret;

	if (row->format != PT_SPOOL)
		return get_resource(t, row->get, vars, ref);
	buf_addf(&key, "%s ", row->get_method ? row->get_method : "GET");
	ret = pathtab_expand(row->get, vars, &key);
	if (!ret)
		ret =
		    cache_get(t->cache, key.data, fetch_spool, &(struct spool_fetch){t, row}, ref);
	buf_release(&key);
	return ret;
}

/* A listing DSS did not answer in time is remembered for FAILURE_WINDOW_MS: the kernel runs lookups
 * in one folder one at a time (libfuse 3.14 never grants parallel directory operations), so the
 * lookups queued behind one hung listing would otherwise each wait a whole timeout again, one after
 * the other.  They share its deadline. Documents are not concerned: nothing queues behind them. */
#define FAILURE_WINDOW_MS 1000

struct failure {
	int err;
	int64_t until_ms;
};

static int expired_failure(const char *key, void *value, void *ctx)
{
	struct failure *f = value;

	(void)key;
	if (ctx && f->until_ms >= *(int64_t *)ctx)
		return 0;
	free(f);
	return 1;
}

static int recent_failure(struct tree *t, const char *key)
{
	int64_t now = cache_monotonic_ms();
	int err = 0;

	pthread_mutex_lock(&t->lock);
	struct failure *f = strmap_get(t->failures, key);
	if (f && f->until_ms >= now)
		err = f->err;
	pthread_mutex_unlock(&t->lock);
	return err;
}

void forget_failures(struct tree *t)
{
	pthread_mutex_lock(&t->lock);
	strmap_filter(t->failures, expired_failure, NULL);
	pthread_mutex_unlock(&t->lock);
}

/* Remembers a listing's failure for window_ms. */
static void note_failure(struct tree *t, const char *key, int err, int64_t window_ms)
{
	int64_t now = cache_monotonic_ms();

	pthread_mutex_lock(&t->lock);
	if (strmap_size(t->failures) >= 1024)
		strmap_filter(t->failures, expired_failure, &now);
	struct failure *f = strmap_get(t->failures, key);
	if (!f) {
		f = xmalloc(sizeof(*f));
		strmap_put(t->failures, key, f);
	}
	f->err = err;
	f->until_ms = now + window_ms;
	pthread_mutex_unlock(&t->lock);
}

int get_resource(struct tree *t, const char *tmpl, const struct pt_vars *vars,
		 struct cache_ref **ref)
{
	struct buf key = BUF_INIT;
	int ret = pathtab_expand(tmpl, vars, &key);

	if (!ret)
		ret = cache_get(t->cache, key.data, fetch_resource, t, ref);
	buf_release(&key);
	return ret;
}

/* fetch_parsed for a document DSS may not have: a "not found" is noted
 * (fetch_optional). */
static int fetch_maybe_absent(struct tree *t, const char *key, const struct list_fetch *f,
			      void **value, size_t *cost)
{
	int ret = recent_failure(t, key);

	if (ret == -ENOENT)
		return ret; /* known absent: not asked again */
	ret = fetch_parsed(t, key, f, value, cost);

	/* Noted before the cache hands the result to the threads waiting
	 * for it, so that no one asks again: as lasting as a listing, it is
	 * kept as long as the cache keeps a document (spool_ttl_ms is the
	 * cache's TTL). */
	if (ret == -ENOENT)
		note_failure(t, key, ret, t->opt.spool_ttl_ms);
	return ret;
}

int fetch_listing(void *ctx, const char *key, void **value, size_t *cost)
{
	struct list_fetch *f = ctx;
	int ret = f->optional ? fetch_maybe_absent(f->t, key, f, value, cost)
			      : fetch_parsed(f->t, key, f, value, cost);

	/* (no other thread sees the resource yet; a scanned listing has no
	 * document left to compact) */
	if (!ret)
		listing_compact(f->t, f->dir, f->vars, *value, cost);
	return ret;
}

int get_listing(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars,
		struct cache_ref **ref)
{
	struct list_fetch f = {t, dir, vars, 0};
	struct buf key = BUF_INIT;
	int ret = pathtab_expand(dir->list, vars, &key);

	if (!ret)
		ret = recent_failure(t, key.data);
	if (!ret) {
		ret = cache_get_keep(t->cache, key.data, fetch_listing, &f, ref, 0);
		/* (a refused connection fails fast anyway) */
		if (ret == -ETIMEDOUT)
			note_failure(t, key.data, ret, FAILURE_WINDOW_MS);
	}
	buf_release(&key);
	return ret;
}

/* A document DSS refused this key (403) is not asked for again while a
 * document stays cached (hide_forbidden rows). */
static int fetch_guarded(void *ctx, const char *key, void **value, size_t *cost)
{
	struct tree *t = ctx;
	int ret = recent_failure(t, key);

	if (ret == -EACCES)
		return ret;
	ret = fetch_resource(ctx, key, value, cost);
	if (ret == -EACCES) {
		log_info("GET %s: DSS refuses it to this key: not shown", key);
		note_failure(t, key, ret, t->opt.spool_ttl_ms);
	}
	return ret;
}

int document_forbidden(struct tree *t, const struct pt_row *row, const struct pt_vars *vars)
{
	struct cache_ref *ref = NULL;
	struct buf key = BUF_INIT;
	int ret = pathtab_expand(row->get, vars, &key);

	if (!ret)
		ret = recent_failure(t, key.data);
	if (!ret) {
		/* (a refusal is an answer here: logged as one, not as an error) */
		int was = errmap_quiet(1);
		ret = cache_get(t->cache, key.data, fetch_guarded, t, &ref);
		errmap_quiet(was);
	}
	cache_ref_put(ref);
	buf_release(&key);
	return ret == -EACCES;
}

int fetch_optional(void *ctx, const char *key, void **value, size_t *cost)
{
	return fetch_maybe_absent(ctx, key, NULL, value, cost);
}

int listing_absent(struct tree *t, const struct pt_row *dir, const struct pt_vars *vars)
{
	struct list_fetch f = {t, dir, vars, 1};
	struct cache_ref *ref = NULL;
	struct buf key = BUF_INIT;
	int ret = pathtab_expand(dir->list, vars, &key);

	if (!ret)
		ret = recent_failure(t, key.data);
	if (!ret)
		ret = cache_get_keep(t->cache, key.data, fetch_listing, &f, &ref, 0);
	cache_ref_put(ref);
	buf_release(&key);
	return ret == -ENOENT;
}

/* Writes the string bytes of a text file: a marked escape (MARK_ESCAPE)
 * of \u0000 becomes the NUL it stands for; any other one, its escape text. */
static void unmark_text(const char *s, struct buf *out)
{
	for (; *s; s++) {
		if (*s == MARK_ESCAPE && strlen(s) >= 5) {
			if (!strncmp(s + 1, "0000", 4))
				buf_addch(out, '\0');
			else
				buf_addf(out, "\\u%.4s", s + 1);
			s += 4;
		} else {
			buf_addch(out, *s);
		}
	}
}

/* In rendered JSON a marked escape stands inside a string: it becomes the
 * escape DSS sent; a marked number is a string of its own ("<mark>1e400"):
 * it becomes the bare number. */
static void unmark_json(struct buf *b)
{
	if (!memchr(b->data, MARK_ESCAPE, b->len) && !memchr(b->data, MARK_NUMBER, b->len))
		return;
	struct buf out = BUF_INIT;
	for (size_t i = 0; i < b->len; i++) {
		if (b->data[i] == MARK_ESCAPE) {
			buf_addstr(&out, "\\u");
		} else if (b->data[i] == '"' && i + 1 < b->len && b->data[i + 1] == MARK_NUMBER) {
			const char *end = memchr(b->data + i + 2, '"', b->len - i - 2);
			size_t n = end ? (size_t)(end - (b->data + i + 2)) : b->len - i - 2;
			buf_add(&out, b->data + i + 2, n);
			i += 2 + n; /* (the closing quote) */
		} else {
			buf_addch(&out, b->data[i]);
		}
	}
	buf_release(b);
	*b = out;
}

static void render_new(struct resource *res, const struct pt_row *row, struct rendering *r)
{
	const cJSON *part = json_get(res->json, row->field);

	if (row->format == PT_JSON) {
		if (part) {
			json_render(part, &r->bytes);
			unmark_json(&r->bytes);
		} else {
			r->err = -EIO;
		}
	} else if (row->format == PT_CONCAT) {
		const cJSON *item, *items = cJSON_IsArray(part) ? part : NULL;
		if (!items)
			r->err = -EIO;
		cJSON_ArrayForEach(item, items)
		{
			const char *text = json_get_string(item, row->join);
			if (!text || !*text)
				continue;
			unmark_text(text, &r->bytes);
			if (r->bytes.data[r->bytes.len - 1] != '\n')
				buf_addch(&r->bytes, '\n');
		}
	} else if (row->format == PT_BASE64) {
		if (!cJSON_IsString(part) ||
		    base64_decode(part->valuestring, strlen(part->valuestring), &r->bytes))
			r->err = -EIO;
	} else if (cJSON_IsString(part)) {
		unmark_text(part->valuestring, &r->bytes);
	} else if (!part || cJSON_IsNull(part)) {
		/* DSS omits an empty payload. */
	} else {
		r->err = -EIO;
	}
	if (r->err)
		log_error("%s: the document from DSS has no usable \"%s\" field", row->pattern,
			  row->field ? row->field : "");
	r->hash = content_hash(r->bytes.data, r->bytes.len);
}

int render(struct resource *res, const struct pt_row *row, const struct buf **out, uint64_t *hash)
{
	struct rendering *r;
	int ret;

	if (!res->json)
		return -EIO;
	pthread_mutex_lock(&res->lock);
	for (r = res->r; r; r = r->next)
		if (r->field == row->field && r->format == row->format)
			break;
	if (!r) {
		r = xcalloc(1, sizeof(*r));
		r->field = row->field;
		r->format = row->format;
		buf_init(&r->bytes);
		render_new(res, row, r);
		r->next = res->r;
		res->r = r;
	}
	ret = r->err;
	*out = &r->bytes;
	if (hash)
		*hash = r->hash;
	pthread_mutex_unlock(&res->lock);
	return ret;
}

/* 64-bit FNV-1a of a byte string; 0 is kept for "unknown". */
uint64_t content_hash(const char *data, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)data[i];
		h *= 0x100000001b3ULL;
	}
	return h ? h : 1;
}
