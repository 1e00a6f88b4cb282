#include "dssfs/json.h"

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
