#include "dssfs/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void indent(struct buf *out, int depth)
{
	buf_addch(out, '\n');
	for (int i = 0; i < depth; i++)
		buf_add(out, "  ", 2);
}

void json_render_string(const char *s, struct buf *out)
{
	buf_addch(out, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':
			buf_add(out, "\\\"", 2);
			break;
		case '\\':
			buf_add(out, "\\\\", 2);
			break;
		case '\b':
			buf_add(out, "\\b", 2);
			break;
		case '\f':
			buf_add(out, "\\f", 2);
			break;
		case '\n':
			buf_add(out, "\\n", 2);
			break;
		case '\r':
			buf_add(out, "\\r", 2);
			break;
		case '\t':
			buf_add(out, "\\t", 2);
			break;
		default:
			if (*p < 0x20)
				buf_addf(out, "\\u%04x", *p);
			else
				buf_addch(out, (char)*p);
		}
	}
	buf_addch(out, '"');
}

static void render_number(double d, struct buf *out)
{
	char tmp[64];

	if (!isfinite(d)) {
		/* JSON has no spelling for these; cJSON reads numbers beyond
		 * the range of a double (1e400) as infinities. */
		buf_addstr(out, "null");
		return;
	}
	if (d == floor(d) && fabs(d) < 9007199254740992.0) {
		buf_addf(out, "%.0f", d);
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	buf_addstr(out, tmp);
}

static void render(const cJSON *item, int depth, struct buf *out)
{
	const cJSON *child;

	if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
		int is_obj = cJSON_IsObject(item);
		buf_addch(out, is_obj ? '{' : '[');
		if (!item->child) {
			buf_addch(out, is_obj ? '}' : ']');
			return;
		}
		for (child = item->child; child; child = child->next) {
			indent(out, depth + 1);
			if (is_obj) {
				json_render_string(child->string ? child->string : "", out);
				buf_add(out, ": ", 2);
			}
			render(child, depth + 1, out);
			if (child->next)
				buf_addch(out, ',');
		}
		indent(out, depth);
		buf_addch(out, is_obj ? '}' : ']');
	} else if (cJSON_IsString(item)) {
		json_render_string(item->valuestring, out);
	} else if (cJSON_IsNumber(item)) {
		render_number(item->valuedouble, out);
	} else if (cJSON_IsTrue(item)) {
		buf_addstr(out, "true");
	} else if (cJSON_IsFalse(item)) {
		buf_addstr(out, "false");
	} else {
		buf_addstr(out, "null");
	}
}

void json_render(const cJSON *item, struct buf *out)
{
	render(item, 0, out);
	buf_addch(out, '\n');
}

const cJSON *json_get(const cJSON *root, const char *path)
{
	const cJSON *cur = root;
	const char *p = path;

	if (!path || !*path)
		return root;
	while (cur && *p) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		const cJSON *c;

		if (!cJSON_IsObject(cur))
			return NULL;
		for (c = cur->child; c; c = c->next)
			if (c->string && strlen(c->string) == n && !memcmp(c->string, p, n))
				break;
		cur = c;
		p += n;
		if (*p == '.')
			p++;
	}
	return cur;
}

int64_t json_get_int64(const cJSON *root, const char *path, int64_t def)
{
	const cJSON *it = json_get(root, path);

	if (!cJSON_IsNumber(it) || !(fabs(it->valuedouble) < 9.2e18))
		return def;
	return (int64_t)it->valuedouble;
}

const char *json_get_string(const cJSON *root, const char *path)
{
	const cJSON *it = json_get(root, path);

	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* ---- json_scan_list ------------------------------------------------------ */

struct scan {
	const char *p, *end;
	json_item_fn fn;
	void *ctx;
};

/* cJSON's buffer_skip_whitespace: any byte up to 32, NUL included. */
static void skip_space(struct scan *s)
{
	while (s->p < s->end && (unsigned char)*s->p <= 32)
		s->p++;
}

static int at_char(const struct scan *s, char c)
{
	return s->p < s->end && *s->p == c;
}

/* How deep containers nest in v: 0 for a scalar, 1 for [] or [1]. */
static int nesting(const cJSON *v)
{
	int most = 0;

	if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
		return 0;
	for (const cJSON *c = v->child; c; c = c->next) {
		int d = nesting(c);
		if (d > most)
			most = d;
	}
	return most + 1;
}

/* The value at s->p, inside `depth` containers, parsed by cJSON alone;
 * NULL if cJSON refuses it or the whole document would pass cJSON's
 * nesting limit (counted a little short: the caller then parses it all). */
static cJSON *scan_value(struct scan *s, int depth)
{
	const char *vend = NULL;
	cJSON *v;

	/* (cJSON skips a BOM at the start of what it is given: not an item's) */
	if (s->p >= s->end || (unsigned char)*s->p == 0xEF)
		return NULL;
	v = cJSON_ParseWithLengthOpts(s->p, (size_t)(s->end - s->p), &vend, 0);
	if (!v)
		return NULL;
	if (!vend || vend <= s->p || vend > s->end || depth + nesting(v) >= CJSON_NESTING_LIMIT) {
		cJSON_Delete(v);
		return NULL;
	}
	s->p = vend;
	return v;
}

/* An object member's name and its colon, as cJSON's parse_object reads
 * them; s->p is left at its value. */
static cJSON *scan_key(struct scan *s, int depth)
{
	cJSON *key;

	if (!at_char(s, '"') || !(key = scan_value(s, depth)))
		return NULL;
	skip_space(s);
	if (!at_char(s, ':') || !cJSON_IsString(key)) {
		cJSON_Delete(key);
		return NULL;
	}
	s->p++;
	skip_space(s);
	return key;
}

/* After an item of a container closed by `close`: 1 if another follows,
 * 0 at the end (consumed), -EINVAL otherwise. */
static int scan_next(struct scan *s, char close)
{
	skip_space(s);
	if (at_char(s, ',')) {
		s->p++;
		skip_space(s);
		return 1;
	}
	if (at_char(s, close)) {
		s->p++;
		return 0;
	}
	return -EINVAL;
}

/* The list at s->p, inside `depth` containers: each item to fn. */
static int scan_items(struct scan *s, int depth)
{
	char close;
	int more, ret = 0;

	if (!at_char(s, '[') && !at_char(s, '{'))
		return -EINVAL;
	close = *s->p == '[' ? ']' : '}';
	s->p++;
	skip_space(s);
	if (at_char(s, close)) {
		s->p++;
		return 0;
	}
	do {
		cJSON *key = NULL, *item = NULL;
		if (close == '}' && !(key = scan_key(s, depth + 1)))
			return -EINVAL;
		if ((item = scan_value(s, depth + 1)))
			ret = s->fn(key ? key->valuestring : NULL, item, s->ctx);
		cJSON_Delete(item);
		cJSON_Delete(key);
		if (!item)
			return -EINVAL;
		if (ret)
			return ret;
	} while ((more = scan_next(s, close)) == 1);
	return more;
}

/* The object at s->p, inside `depth` containers, down to the list at
 * `path`: the first member of each name, as json_get() takes it. */
static int scan_path(struct scan *s, const char *path, int depth)
{
	const char *dot;
	size_t n;
	int found = 0, more, ret;

	if (!*path)
		return scan_items(s, depth);
	dot = strchr(path, '.');
	n = dot ? (size_t)(dot - path) : strlen(path);
	if (!at_char(s, '{'))
		return -EINVAL;
	s->p++;
	skip_space(s);
	if (at_char(s, '}'))
		return -EINVAL;
	do {
		cJSON *key = scan_key(s, depth + 1), *skipped;
		if (!key)
			return -EINVAL;
		int take =
		    !found && strlen(key->valuestring) == n && !memcmp(key->valuestring, path, n);
		cJSON_Delete(key);
		if (take) {
			found = 1;
			if ((ret = scan_path(s, path + n + (dot != NULL), depth + 1)))
				return ret;
		} else {
			if (!(skipped = scan_value(s, depth + 1)))
				return -EINVAL;
			cJSON_Delete(skipped);
		}
	} while ((more = scan_next(s, '}')) == 1);
	return more ? more : found ? 0 : -EINVAL;
}

int json_scan_list(const char *text, size_t len, const char *at, json_item_fn fn, void *ctx)
{
	struct scan s = {text, text + len, fn, ctx};
	int ret;

	if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
		s.p += 3;
	skip_space(&s);
	if ((ret = scan_path(&s, at ? at : "", 0)))
		return ret;
	for (; s.p < s.end; s.p++)
		if (*s.p != ' ' && *s.p != '\t' && *s.p != '\n' && *s.p != '\r')
			return -EINVAL;
	return 0;
}
