/*
 * fuzz_pathtab - path resolution as the tree engine does it: every row
 * reached from the root through pathtab_children, its endpoint templates
 * filled by pathtab_expand with hostile object names, and names matched
 * against its leaf (pathtab_leaf, pathtab_map, pathtab_map_has).
 *
 * The input is object names separated by NUL bytes; the k-th variable
 * along a pattern takes the k-th name (cycling).  Checked:
 *  - an expansion has exactly the template's number of '/' (a name never
 *    adds or removes a path segment; a path in a file tree, {var*}, adds
 *    exactly its own), no "." or ".." segment that the template does not
 *    have, only URL-safe bytes where a name went, and fails (-EINVAL)
 *    exactly when a name it needs is empty (for a path: when one of its
 *    segments is empty, "." or "..");
 *  - pt_vars_get returns what was bound;
 *  - pathtab_map always gives one of the map's results, which
 *    pathtab_map_has accepts; pathtab_map_has accepts a name exactly when
 *    it is one of them.
 */
#include "dssfs/pathtab.h"
#include "fuzz.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAMES 16

static const char *names[MAX_NAMES];
static size_t nnames;

static size_t count_char(const char *s, char c)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == c;
	return n;
}

static int dot_segments(const char *path)
{
	int n = 0;

	for (const char *seg = path;; seg++) {
		size_t len = strcspn(seg, "/");
		n += (len == 1 && seg[0] == '.') || (len == 2 && !strncmp(seg, "..", 2));
		seg += len;
		if (!*seg)
			return n;
	}
}

static int url_safe(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       strchr("-._~%/", c);
}

/* Whether a path has an empty, "." or ".." segment. */
static int bad_path(const char *v)
{
	for (const char *seg = v;; seg++) {
		size_t len = strcspn(seg, "/");
		if (!len || (len == 1 && seg[0] == '.') || (len == 2 && !strncmp(seg, "..", 2)))
			return 1;
		seg += len;
		if (!*seg)
			return 0;
	}
}

static void check_expand(const char *tmpl, const struct pt_vars *vars)
{
	struct buf out = BUF_INIT;
	int need_empty = 0, ret;
	size_t added = 0; /* the '/' of the paths put in */

	if (!tmpl)
		return;
	for (int i = 0; i < vars->n; i++) {
		struct buf pat = BUF_INIT;
		buf_addf(&pat, "{%s}", vars->name[i]);
		need_empty |= strstr(tmpl, pat.data) && !*vars->value[i];
		buf_reset(&pat);
		buf_addf(&pat, "{%s*}", vars->name[i]);
		if (strstr(tmpl, pat.data)) {
			need_empty |= bad_path(vars->value[i]);
			added += count_char(vars->value[i], '/');
		}
		buf_release(&pat);
	}
	ret = pathtab_expand(tmpl, vars, &out);
	REQUIRE(ret == (need_empty ? -EINVAL : 0));
	if (!ret) {
		REQUIRE(count_char(out.data, '/') == count_char(tmpl, '/') + added);
		REQUIRE(dot_segments(out.data) == dot_segments(tmpl));
		REQUIRE(strlen(out.data) == out.len);
		/* (a query string only where the template has one) */
		REQUIRE(count_char(out.data, '?') == count_char(tmpl, '?'));
		for (const char *p = out.data; *p; p++)
			REQUIRE(url_safe((unsigned char)*p) || *p == '?' || *p == '=');
	}
	buf_release(&out);
}

static void check_map(const struct pt_map *map, const char *name)
{
	const char *to = pathtab_map(map, name);
	int listed = 0;

	REQUIRE(to && pathtab_map_has(map, to, strlen(to)));
	for (const struct pt_map *m = map;; m++) {
		listed |= !strcmp(m->to, name);
		if (!m->from)
			break;
	}
	REQUIRE(pathtab_map_has(map, name, strlen(name)) == listed);
}

static void walk(const struct pt_row *row, struct pt_vars vars, int depth)
{
	const struct pt_row *kids[PT_MAX_CHILDREN + 1];
	const char *text, *suffix;
	size_t nk = pathtab_children(row, kids, PT_MAX_CHILDREN + 1);

	REQUIRE(depth < 16 && nk <= PT_MAX_CHILDREN);
	if (pathtab_leaf(row, &text, &suffix) == PT_SEG_VAR) {
		REQUIRE(vars.n < PT_MAX_VARS);
		REQUIRE(!pt_vars_set(&vars, text, nnames ? names[vars.n % nnames] : ""));
	}
	/* the objects of a union have its `over` variable bound too; so does
	 * its list when asked */
	const struct pt_row *up = pathtab_parent(row);
	if (up && up->over)
		REQUIRE(!pt_vars_set(&vars, up->over, nnames ? names[vars.n % nnames] : ""));
	if (row->over) {
		struct pt_vars lv = vars;
		REQUIRE(!pt_vars_set(&lv, row->over, nnames ? names[lv.n % nnames] : ""));
		check_expand(row->list, &lv);
	}
	for (int i = 0; i < vars.n; i++)
		REQUIRE(pt_vars_get(&vars, vars.name[i]) == vars.value[i]);
	check_expand(row->get, &vars);
	check_expand(row->put, &vars);
	if (!row->over)
		check_expand(row->list, &vars);
	check_expand(row->cond_get, &vars);
	if (row->name_map)
		for (size_t i = 0; i < nnames; i++)
			check_map(row->name_map, names[i]);
	for (size_t k = 0; k < nk; k++) {
		/* a folder of any depth holds its parent's object rows again
		 * (recurse), or all its parent's rows (repeat: a project
		 * folder's sub-folder): walked once, from the parent */
		if (row->recurse || row->repeat) {
			REQUIRE(pathtab_parent(kids[k]) == pathtab_parent(row));
			continue;
		}
		REQUIRE(pathtab_parent(kids[k]) == row);
		walk(kids[k], vars, depth + 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = malloc(size + 1);
	struct pt_vars none = {0};

	if (!in)
		return 0;
	memcpy(in, data, size);
	in[size] = '\0';
	nnames = 0;
	for (char *p = in; p <= in + size && nnames < MAX_NAMES; p += strlen(p) + 1)
		names[nnames++] = p;
	walk(pathtab_root(), none, 0);
	free(in);
	return 0;
}
