#include "check.h"
#include "dssfs/pathtab.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A failed check that names the row it is about. */
#define CHECK_ROW(r, cond)                                                                       \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: row %s: check failed: %s\n", __FILE__, __LINE__, \
				(r)->pattern, #cond);                                            \
			check_failures++;                                                        \
		}                                                                                \
	} while (0)

/* More than any row may have, so that a row beyond PT_MAX_CHILDREN is seen. */
#define WIDE 256
#define MAX_DEPTH 32

/* The variables bound along the pattern being walked. */
struct bound {
	int n;
	const char *name[MAX_DEPTH];
};

/* Whether every {variable} of an endpoint template is bound. */
static int template_bound(const char *tmpl, const struct bound *b)
{
	for (const char *p = tmpl; (p = strchr(p, '{'));) {
		const char *close = strchr(p, '}');
		int found = 0;

		if (!close)
			return 0;
		size_t nl = (size_t)(close - p - 1);
		if (nl && p[nl] == '*') /* {path*}: a path in a file tree */
			nl--;
		for (int i = 0; i < b->n; i++)
			found |= strlen(b->name[i]) == nl && !strncmp(b->name[i], p + 1, nl);
		if (!found)
			return 0;
		p = close + 1;
	}
	return 1;
}

/* Whether the row's pattern is its parent's plus the leaf pathtab_leaf()
 * reports. */
static int leaf_spelled(const struct pt_row *r, enum pt_seg seg, const char *text,
			const char *suffix)
{
	const struct pt_row *up = pathtab_parent(r);

	if (seg == PT_SEG_ROOT)
		return !up && !strcmp(r->pattern, "/");
	if (!up)
		return 0;
	size_t ul = strcmp(up->pattern, "/") ? strlen(up->pattern) : 0, tl = strlen(text);
	const char *leaf = r->pattern + ul + 1;
	if (strncmp(r->pattern, up->pattern, ul) || r->pattern[ul] != '/')
		return 0;
	if (seg == PT_SEG_LITERAL)
		return !strcmp(leaf, text) && !strchr(leaf, '{');
	if (seg == PT_SEG_VAR)
		return leaf[0] == '{' && !strncmp(leaf + 1, text, tl) && leaf[1 + tl] == '}' &&
		       !strcmp(leaf + 2 + tl, suffix) && !strchr(suffix, '{');
	const char *close = strchr(leaf, '}');
	return !strncmp(leaf, text, tl) && leaf[tl] == '{' && close && close > leaf + tl + 1 &&
	       !strcmp(close + 1, suffix);
}

static size_t rows_seen;

/* Checks row r and everything below it, as the tree engine walks them. */
static void walk(const struct pt_row *r, struct bound b, int depth)
{
	const struct pt_row *kids[WIDE];
	const char *text, *suffix;
	size_t nk = pathtab_children(r, kids, WIDE);
	enum pt_seg seg = pathtab_leaf(r, &text, &suffix);

	rows_seen++;
	CHECK_ROW(r, depth < MAX_DEPTH);
	if (depth >= MAX_DEPTH)
		return;
	if (seg == PT_SEG_VAR)
		b.name[b.n++] = text;
	/* (the objects of a union have its `over` variable bound too) */
	if (pathtab_parent(r) && pathtab_parent(r)->over)
		b.name[b.n++] = pathtab_parent(r)->over;
	CHECK_ROW(r, (seg == PT_SEG_ROOT) == (r == pathtab_root()));
	CHECK_ROW(r, leaf_spelled(r, seg, text, suffix));
	CHECK_ROW(r, seg == PT_SEG_ROOT || *text || *suffix);

	/* The engine's limits. */
	CHECK_ROW(r, b.n <= PT_MAX_VARS);
	CHECK_ROW(r, nk <= PT_MAX_CHILDREN);

	if (r->kind == PT_FILE) {
		CHECK_ROW(r, r->get != NULL);
		CHECK_ROW(r, nk == 0);
		/* A file named by an object: <name><suffix> in a listed folder;
		 * or a file of a file tree, named as it is */
		CHECK_ROW(r, seg != PT_SEG_VAR ||
				 (pathtab_parent(r)->list && (*suffix || r->content)));
		CHECK_ROW(r, !r->put_raw || r->content);
		CHECK_ROW(r, r->format != PT_BASE64 || r->field);
		CHECK_ROW(r, (r->format == PT_CONCAT) == (r->join != NULL));
		CHECK_ROW(r, r->format != PT_CONCAT || r->field);
		/* rows converted to CSV are streams, never listed (their size
		 * is known once fetched), never saved */
		CHECK_ROW(r, !r->tsv_to_csv || (r->format == PT_SPOOL && r->hidden && !r->put));
		CHECK_ROW(r, !r->time_at && !r->list_max);
		CHECK_ROW(r, !r->activity || !r->put);
		CHECK_ROW(r, !r->put_wrap || r->put);
		CHECK_ROW(r, !r->put_method || r->put);
		CHECK_ROW(r, !r->list);
		CHECK_ROW(r, r->get && template_bound(r->get, &b));
		CHECK_ROW(r, !r->put || template_bound(r->put, &b));
		CHECK_ROW(r, !r->cond_get || template_bound(r->cond_get, &b));
		CHECK_ROW(r, !r->cond_equals || (r->cond_get && r->cond_field));
		if (seg == PT_SEG_DERIVED)
			CHECK_ROW(r, r->name_map && r->cond_get && r->cond_field);
		for (const struct pt_map *m = r->name_map; m; m++) {
			CHECK_ROW(r, *m->to && !strchr(m->to, '/'));
			if (!m->from)
				break;
		}
	} else if (r->kind == PT_LINK) {
		/* a link is an object of a list of its own in its folder's
		 * document, to a place its variables name; never saved */
		const struct pt_row *up = pathtab_parent(r);
		CHECK_ROW(r, seg == PT_SEG_VAR && !*suffix && nk == 0);
		CHECK_ROW(r, r->list && up && up->list && !strcmp(r->list, up->list));
		CHECK_ROW(r, r->link && template_bound(r->link, &b) && r->link[0] != '/');
		CHECK_ROW(r, !r->get && !r->put && !r->name_get && !r->name_key && !r->nest);
		return;
	} else if (r->repeat) {
		/* its parent folder again, with the same children and list:
		 * the walk does not go round again */
		const struct pt_row *up = pathtab_parent(r);
		const char *utext;
		CHECK_ROW(r, up && up->list && r->list && !strcmp(r->list, up->list));
		CHECK_ROW(r, seg == PT_SEG_VAR && !*suffix &&
				 pathtab_leaf(up, &utext, NULL) == PT_SEG_VAR &&
				 !strcmp(utext, text));
		CHECK_ROW(r, !r->recurse && !r->content && !r->nest);
		for (size_t k = 0; k < nk; k++)
			CHECK_ROW(kids[k], pathtab_parent(kids[k]) == up);
		return;
	} else if (r->list && r->content) {
		/* A file tree: a folder row (itself again below) and a file row,
		 * both the {path} in it. */
		CHECK_ROW(r, nk == 2);
		for (size_t k = 0; k < nk; k++) {
			CHECK_ROW(kids[k], kids[k]->content == r->content);
			CHECK_ROW(kids[k], pathtab_leaf(kids[k], NULL, NULL) == PT_SEG_VAR);
			CHECK_ROW(kids[k], (kids[k]->kind == PT_DIR) == kids[k]->recurse);
		}
		CHECK_ROW(r, nk == 2 && kids[0]->kind != kids[1]->kind);
		CHECK_ROW(r, template_bound(r->list, &b));
		CHECK_ROW(r, !r->rename == !r->move);
	} else if (r->list) {
		/* A listing directory's object rows (<name>.md, <name>.json,
		 * <name>/) share one variable, each with its own suffix; its
		 * other rows are fixed files (and, at the root, instance/). */
		const char *var = NULL, *v, *sfx;
		size_t nvar = 0;
		for (size_t k = 0; k < nk; k++) {
			if (kids[k]->kind == PT_LINK)
				continue; /* listed by its own list */
			if (pathtab_leaf(kids[k], &v, &sfx) != PT_SEG_VAR) {
				CHECK_ROW(kids[k],
					  kids[k]->kind == PT_FILE || pathtab_parent(r) == NULL);
				continue;
			}
			CHECK_ROW(kids[k], !var || !strcmp(var, v));
			for (size_t q = 0; q < k; q++) {
				const char *s2;
				if (pathtab_leaf(kids[q], NULL, &s2) == PT_SEG_VAR)
					CHECK_ROW(kids[k], strcmp(s2, sfx));
			}
			var = v;
			nvar++;
		}
		CHECK_ROW(r, nvar >= 1);
		/* (no list_key: the items are strings, named by themselves) */
		CHECK_ROW(r, r->list_key || !r->name_key);
		/* activity is read-only: nothing below it is saved */
		if (r->activity)
			for (size_t k = 0; k < nk; k++)
				CHECK_ROW(kids[k], !kids[k]->put && (kids[k]->kind == PT_FILE ||
								     !kids[k]->list));
		/* a union: its list is asked with `over` bound, by a folder
		 * that lists objects named so */
		struct bound ob = b;
		if (r->over) {
			const struct pt_row *lister = pathtab_lister(r->over);
			CHECK_ROW(r, lister && lister != r && !r->optional);
			ob.name[ob.n++] = r->over;
		}
		CHECK_ROW(r, template_bound(r->list, &ob));
		CHECK_ROW(r, !r->name_get || (r->name_field && r->name_key == NULL));
		CHECK_ROW(r, !r->recurse);
	} else if (r->recurse) {
		/* A folder of any depth: it holds its parent's object rows,
		 * itself among them; the walk does not go round again. */
		const struct pt_row *up = pathtab_parent(r);
		CHECK_ROW(r, up && up->list && (up->nest || up->content));
		CHECK_ROW(r, seg == PT_SEG_VAR && !*suffix);
		for (size_t k = 0; k < nk; k++)
			CHECK_ROW(kids[k], pathtab_parent(kids[k]) == up &&
					       pathtab_leaf(kids[k], NULL, NULL) == PT_SEG_VAR);
		return;
	} else {
		CHECK_ROW(r, !r->list_at && !r->name_key && !r->optional);
		/* an object folder is its name, nothing more */
		CHECK_ROW(r, seg != PT_SEG_VAR || !*suffix);
		CHECK_ROW(r, nk > 0);
		for (size_t k = 0; k < nk; k++)
			CHECK_ROW(kids[k], pathtab_leaf(kids[k], NULL, NULL) != PT_SEG_VAR);
	}
	for (size_t k = 0; k < nk; k++) {
		CHECK_ROW(kids[k], pathtab_parent(kids[k]) == r);
		walk(kids[k], b, depth + 1);
	}
}

/* The row of a pattern, found as the engine finds rows: from the root. */
static const struct pt_row *find_row(const struct pt_row *r, const char *pattern)
{
	const struct pt_row *kids[WIDE];
	size_t nk = pathtab_children(r, kids, WIDE);

	if (!strcmp(r->pattern, pattern))
		return r;
	for (size_t k = 0; k < nk; k++) {
		const struct pt_row *f = find_row(kids[k], pattern);
		if (f)
			return f;
	}
	return NULL;
}

/* Binds the variables of r's pattern, outermost first, to values. */
static void bind(const struct pt_row *r, const char *const *values, struct pt_vars *vars)
{
	const char *names[MAX_DEPTH];
	int n = 0;

	for (; r; r = pathtab_parent(r)) {
		const char *text;
		if (pathtab_leaf(r, &text, NULL) == PT_SEG_VAR && n < MAX_DEPTH)
			names[n++] = text;
	}
	vars->n = 0;
	while (n > 0 && vars->n < PT_MAX_VARS && values[vars->n]) {
		vars->name[vars->n] = names[--n];
		vars->value[vars->n] = values[vars->n];
		vars->n++;
	}
}

static size_t count_slashes(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '/';
	return n;
}

static const struct {
	const char *pattern;
	const char *values[3]; /* the pattern's variables, outermost first */
	const char *want;      /* the expansion of `list` (directories) or `get` */
} expand_cases[] = {
    {"/", {NULL}, "projects/"},
    {"/{project}/variables.json", {"SALES"}, "projects/SALES/variables/"},
    {"/{project}/datasets", {"SALES"}, "projects/SALES/datasets/"},
    {"/{project}/datasets/{dataset}/schema.json",
     {"SALES", "my ds/é"},
     "projects/SALES/datasets/my%20ds%2F%C3%A9/schema"},
    {"/{project}/datasets/{dataset}/metrics.json",
     {"SALES", "o"},
     "projects/SALES/datasets/o/metrics/last/NP"},
    {"/{project}/recipes/{recipe}/payload.{ext}", {"SALES", "r1"}, "projects/SALES/recipes/r1"},
    {"/{project}/recipes/{recipe}/recipe.json", {"SALES", "r1"}, "projects/SALES/recipes/r1"},
    {"/{project}/scenarios/{scenario}/script.py",
     {"SALES", "S1"},
     "projects/SALES/scenarios/S1/payload"},
    {"/{project}/scenarios/{scenario}/last-runs.json",
     {"SALES", "S1"},
     "projects/SALES/scenarios/S1/get-last-runs"},
    {"/{project}/export.zip", {"SALES"}, "projects/SALES/export"},
    {"/{project}/scenarios/{scenario}/runs",
     {"SALES", "S1"},
     "projects/SALES/scenarios/S1/get-last-runs?limit=20"},
    {"/{project}/scenarios/{scenario}/runs/{run}/log.txt",
     {"SALES", "S1", "2024-10-01-16-46-00-088"},
     "projects/SALES/scenarios/S1/2024-10-01-16-46-00-088/log"},
    {"/{project}/jobs/{job}/status.json",
     {"SALES", "Build_x_2024"},
     "projects/SALES/jobs/Build_x_2024"},
    {"/{project}/history", {"SALES"}, "projects/SALES/git/actions/log?count=100"},
    {"/{project}/history/{commit}.diff",
     {"SALES", "f7f0"},
     "projects/SALES/git/actions/diff?commitFrom=f7f0"},
    {"/{project}/datasets/{dataset}/data.csv",
     {"SALES", "orders"},
     "projects/SALES/datasets/orders/data/?format=tsv-excel-header"},
    /* Hostile names stay one segment each. */
    {"/{project}/datasets/{dataset}/settings.json", {"..", "."}, "projects/%2E%2E/datasets/%2E"},
    {"/{project}/datasets/{dataset}/schema.json",
     {"../..", "a/b?c#d"},
     "projects/..%2F../datasets/a%2Fb%3Fc%23d/schema"},
    {"/{project}/scenarios/{scenario}/last-runs.json",
     {"%2F", "\xff\xfe"},
     "projects/%252F/scenarios/%FF%FE/get-last-runs"},
};

int main(void)
{
	struct bound none_bound = {0};

	CHECK_STR(pathtab_root()->pattern, "/");
	CHECK(pathtab_parent(pathtab_root()) == NULL);

	/* The whole table, from the root as the engine reaches it. */
	walk(pathtab_root(), none_bound, 0);
	CHECK(rows_seen > 10);

	/* Leaves as the engine matches names against them. */
	const char *text, *suffix;
	const struct pt_row *payload =
	    find_row(pathtab_root(), "/{project}/recipes/{recipe}/payload.{ext}");
	const struct pt_row *schema =
	    find_row(pathtab_root(), "/{project}/datasets/{dataset}/schema.json");
	CHECK(payload && schema);
	if (!payload || !schema)
		CHECK_DONE();
	CHECK_INT(pathtab_leaf(payload, &text, &suffix), PT_SEG_DERIVED);
	CHECK_STR(text, "payload.");
	CHECK_STR(suffix, "");
	CHECK_INT(pathtab_leaf(schema, &text, &suffix), PT_SEG_LITERAL);
	CHECK_STR(text, "schema.json");
	CHECK_STR(suffix, "");
	CHECK_INT(pathtab_leaf(pathtab_parent(schema), &text, NULL), PT_SEG_VAR);
	CHECK_STR(text, "dataset");

	for (size_t i = 0; i < sizeof(expand_cases) / sizeof(expand_cases[0]); i++) {
		const struct pt_row *r = find_row(pathtab_root(), expand_cases[i].pattern);
		struct pt_vars vars;
		struct buf out = BUF_INIT;

		CHECK(r != NULL);
		if (!r)
			continue;
		const char *tmpl = r->kind == PT_FILE ? r->get : r->list;
		bind(r, expand_cases[i].values, &vars);
		CHECK_INT(pathtab_expand(tmpl, &vars, &out), 0);
		CHECK_STR(out.data, expand_cases[i].want);
		CHECK_INT(count_slashes(out.data), count_slashes(tmpl));
		buf_release(&out);
	}

	/* Unbound variables and unclosed braces are errors, not empty
	 * segments. */
	struct pt_vars none = {0};
	struct buf out = BUF_INIT;
	CHECK_INT(pathtab_expand("projects/{project}", &none, &out), -EINVAL);
	buf_reset(&out);
	CHECK_INT(pathtab_expand("projects/{project", &none, &out), -EINVAL);
	buf_reset(&out);
	struct pt_vars one = {1, {"project"}, {"A"}};
	CHECK_INT(pathtab_expand("projects/{projectKey}", &one, &out), -EINVAL);
	buf_reset(&out);
	struct pt_vars empty = {1, {"project"}, {""}};
	CHECK_INT(pathtab_expand("projects/{project}/x", &empty, &out), -EINVAL);
	buf_reset(&out);
	CHECK_INT(pathtab_expand("projects/{project}/x", &one, &out), 0);
	CHECK_STR(out.data, "projects/A/x");
	CHECK_STR(pt_vars_get(&one, "project"), "A");
	CHECK(pt_vars_get(&one, "proj") == NULL);
	buf_release(&out);

	/* Literals and variable names of any length (once cut at 63 bytes),
	 * and a variable past PT_MAX_VARS refused, not dropped (issue 7,
	 * 2.5). */
	char lit[201], name[151], tmpl[600];
	memset(lit, 'l', 200);
	lit[200] = '\0';
	memset(name, 'v', 150);
	name[150] = '\0';
	snprintf(tmpl, sizeof(tmpl), "%s/{%s}/%s", lit, name, lit);
	struct pt_vars longv = {0};
	CHECK_INT(pt_vars_set(&longv, name, "X"), 0);
	CHECK_INT(pathtab_expand(tmpl, &longv, &out), 0);
	CHECK_INT(out.len, 403); /* lit "/" X "/" lit */
	CHECK(out.data[201] == 'X' && !strncmp(out.data + 203, lit, 200));
	buf_release(&out);
	struct pt_vars full = {0};
	static const char *const names[PT_MAX_VARS + 1] = {"a", "b", "c", "d", "e", "f", "g"};
	_Static_assert(PT_MAX_VARS == 6, "names[] above holds PT_MAX_VARS + 1 names");
	for (int i = 0; i < PT_MAX_VARS; i++)
		CHECK_INT(pt_vars_set(&full, names[i], "x"), 0);
	CHECK_INT(pt_vars_set(&full, names[PT_MAX_VARS], "x"), -E2BIG);
	CHECK_INT(full.n, PT_MAX_VARS);

	/* The payload extension follows the recipe type. */
	CHECK_STR(pathtab_map(payload->name_map, "python"), "py");
	CHECK_STR(pathtab_map(payload->name_map, "r"), "R");
	CHECK_STR(pathtab_map(payload->name_map, "sql_query"), "sql");
	CHECK_STR(pathtab_map(payload->name_map, "shell"), "sh");
	CHECK_STR(pathtab_map(payload->name_map, "shaker"), "json");
	CHECK_STR(pathtab_map(payload->name_map, NULL), "json");
	CHECK(pathtab_map_has(payload->name_map, "py", 2));
	CHECK(pathtab_map_has(payload->name_map, "json", 4));
	CHECK(!pathtab_map_has(payload->name_map, "py~", 3));
	CHECK(!pathtab_map_has(payload->name_map, "p", 1));
	CHECK(!pathtab_map_has(payload->name_map, "txt", 3));
	CHECK_DONE();
}
