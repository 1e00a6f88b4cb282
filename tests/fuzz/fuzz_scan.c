/*
 * fuzz_scan - json_scan_list, which reads a large listing from DSS item by
 * item, against cJSON reading the whole document as parse_body does.
 *
 * The input is a document, optionally followed by a NUL byte and the dotted
 * path of the list (a listing's list_at).  Checked: when the scan succeeds,
 * cJSON reads the text as one document followed only by ' ', '\t', '\n' or
 * '\r', the path leads to an array or an object, and the scan gave its
 * items in order, each equal to cJSON's (type, value, keys, all the way
 * down); when cJSON reads such a document, not nested near its limit, the
 * scan succeeds too.  The document is held in a struct buf, as a response
 * body is, and the scan is given exactly its length.
 */
#include "dssfs/json.h"
#include "fuzz.h"

#include <errno.h>
#include <string.h>

struct items {
	cJSON *copies[64]; /* the first ones, duplicated */
	size_t n;
	char *keys[64];
};

static int keep(const char *key, const cJSON *item, void *ctx)
{
	struct items *it = ctx;

	if (it->n < 64) {
		it->copies[it->n] = cJSON_Duplicate(item, 1);
		it->keys[it->n] = key ? strdup(key) : NULL;
	}
	it->n++;
	return 0;
}

static int same_double(double a, double b)
{
	return !memcmp(&a, &b, sizeof(a));
}

/* a and b are the same value, keys and order included. */
static int same(const cJSON *a, const cJSON *b)
{
	if ((a->type & 0xff) != (b->type & 0xff))
		return 0;
	if (cJSON_IsString(a) && strcmp(a->valuestring, b->valuestring))
		return 0;
	if (cJSON_IsNumber(a) && !same_double(a->valuedouble, b->valuedouble))
		return 0;
	const cJSON *x = a->child, *y = b->child;
	for (; x && y; x = x->next, y = y->next) {
		if (cJSON_IsObject(a) && strcmp(x->string, y->string))
			return 0;
		if (!same(x, y))
			return 0;
	}
	return !x && !y;
}

static int nesting(const cJSON *v)
{
	int most = 0;

	for (const cJSON *c = v->child; c; c = c->next) {
		int d = nesting(c);
		if (d > most)
			most = d;
	}
	return cJSON_IsArray(v) || cJSON_IsObject(v) ? most + 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	const char *nul = memchr(in, '\0', size);
	size_t doc_len = nul ? (size_t)(nul - in) : size;
	struct buf doc = BUF_INIT, path = BUF_INIT;
	struct items it = {0};
	const char *end = NULL;
	cJSON *full = NULL;

	buf_add(&doc, in, doc_len);
	if (nul)
		buf_add(&path, nul + 1, size - doc_len - 1);
	int ret = json_scan_list(doc.data, doc.len, path.data, keep, &it);
	REQUIRE(ret == 0 || ret == -EINVAL);

	full = cJSON_ParseWithLengthOpts(doc.data, doc.len, &end, 0);
	int whole = full != NULL;
	for (; whole && end < doc.data + doc.len; end++)
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
			whole = 0;
	const cJSON *list = whole ? json_get(full, path.data) : NULL;
	int has_list = cJSON_IsArray(list) || cJSON_IsObject(list);

	if (ret == 0) {
		REQUIRE(whole && has_list);
		REQUIRE((size_t)cJSON_GetArraySize(list) == it.n);
		size_t i = 0;
		for (const cJSON *c = list->child; c && i < 64; c = c->next, i++) {
			REQUIRE(same(c, it.copies[i]));
			if (cJSON_IsObject(list))
				REQUIRE(it.keys[i] && !strcmp(it.keys[i], c->string));
			else
				REQUIRE(!it.keys[i]);
		}
	} else if (has_list) {
		/* (only nesting close to cJSON's limit is left to it) */
		REQUIRE(nesting(full) >= 990);
	}

	for (size_t i = 0; i < it.n && i < 64; i++) {
		cJSON_Delete(it.copies[i]);
		free(it.keys[i]);
	}
	cJSON_Delete(full);
	buf_release(&doc);
	buf_release(&path);
	return 0;
}
