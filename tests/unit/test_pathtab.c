#include "check.h"
#include "dssfs/pathtab.h"

#include <errno.h>

/* Every {variable} of an endpoint template must be bound by the pattern. */
static int template_bound(const char *tmpl, const char *pattern)
{
	const char *p = tmpl;
	while (p && (p = strchr(p, '{'))) {
		const char *close = strchr(p, '}');
		char var[64];
		size_t n = (size_t)(close - p + 1);
		if (!close || n >= sizeof(var))
			return 0;
		memcpy(var, p, n);
		var[n] = '\0';
		if (!strstr(pattern, var))
			return 0;
		p = close + 1;
	}
	return 1;
}

static const struct {
	const char *path; /* segments separated by '|' */
	const char *pattern;
	const char *get; /* expected expansion of `get` (or list for dirs) */
} match_cases[] = {
    {"", "/", "projects/"},
    {"SALES", "/{project}", NULL},
    {"SALES|variables.json", "/{project}/variables.json", "projects/SALES/variables/"},
    {"SALES|datasets", "/{project}/datasets", "projects/SALES/datasets/"},
    {"SALES|datasets|my ds/é", "/{project}/datasets/{dataset}", NULL},
    {"SALES|datasets|my ds/é|schema.json", "/{project}/datasets/{dataset}/schema.json",
     "projects/SALES/datasets/my%20ds%2F%C3%A9/schema"},
    {"SALES|datasets|o|metrics.json", "/{project}/datasets/{dataset}/metrics.json",
     "projects/SALES/datasets/o/metrics/last/NP"},
    {"SALES|recipes|r1|payload.py", "/{project}/recipes/{recipe}/payload.{ext}",
     "projects/SALES/recipes/r1"},
    {"SALES|recipes|r1|recipe.json", "/{project}/recipes/{recipe}/recipe.json",
     "projects/SALES/recipes/r1"},
    {"SALES|scenarios|S1|script.py", "/{project}/scenarios/{scenario}/script.py",
     "projects/SALES/scenarios/S1/payload"},
    {"SALES|scenarios|S1|last-runs.json", "/{project}/scenarios/{scenario}/last-runs.json",
     "projects/SALES/scenarios/S1/get-last-runs"},
    {"SALES|nothing.json", NULL, NULL},
    {"SALES|recipes|r1|payload", NULL, NULL},
    {"SALES|datasets|d|schema.json|x", NULL, NULL},
};

int main(void)
{
	size_t n = pathtab_count();

	CHECK(n > 10);
	CHECK(pathtab_row(n) == NULL);
	CHECK_STR(pathtab_root()->pattern, "/");
	CHECK(pathtab_parent(pathtab_root()) == NULL);

	/* The table is consistent. */
	for (size_t i = 0; i < n; i++) {
		const struct pt_row *r = pathtab_row(i), *kids[32];
		const char *text;
		size_t nk = pathtab_children(r, kids, 32);

		if (i > 0)
			CHECK(pathtab_parent(r) != NULL);
		if (r->kind == PT_FILE) {
			CHECK(r->get != NULL);
			CHECK_INT(nk, 0);
			CHECK(template_bound(r->get, r->pattern));
			CHECK(!r->put || template_bound(r->put, r->pattern));
			CHECK(!r->cond_get || template_bound(r->cond_get, r->pattern));
			CHECK(pathtab_leaf(r, &text, NULL) != PT_SEG_VAR);
			if (pathtab_leaf(r, NULL, NULL) == PT_SEG_DERIVED)
				CHECK(r->name_map && r->cond_get && r->cond_field);
		} else if (r->list) {
			/* A listing directory has exactly one child row: the object. */
			CHECK_INT(nk, 1);
			CHECK(nk == 1 && pathtab_leaf(kids[0], NULL, NULL) == PT_SEG_VAR);
			CHECK(r->list_key != NULL);
			CHECK(template_bound(r->list, r->pattern));
		} else {
			CHECK(nk > 0);
			for (size_t k = 0; k < nk; k++)
				CHECK(pathtab_leaf(kids[k], NULL, NULL) != PT_SEG_VAR);
		}
	}

	for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		char tmp[256];
		const char *segs[8];
		size_t nseg = 0;
		struct pt_vars vars;

		snprintf(tmp, sizeof(tmp), "%s", match_cases[i].path);
		if (*tmp) {
			char *s = tmp, *bar;
			for (; (bar = strchr(s, '|')); s = bar + 1) {
				*bar = '\0';
				segs[nseg++] = s;
			}
			segs[nseg++] = s;
		}
		const struct pt_row *r = pathtab_match(segs, nseg, &vars);
		if (!match_cases[i].pattern) {
			CHECK(r == NULL);
			continue;
		}
		CHECK(r != NULL);
		if (!r)
			continue;
		CHECK_STR(r->pattern, match_cases[i].pattern);
		const char *tmpl = r->kind == PT_FILE ? r->get : r->list;
		if (match_cases[i].get) {
			struct buf out = BUF_INIT;
			CHECK_INT(pathtab_expand(tmpl, &vars, &out), 0);
			CHECK_STR(out.data, match_cases[i].get);
			buf_release(&out);
		}
	}

	/* Unbound variables are an error, not an empty segment. */
	struct pt_vars none = {0};
	struct buf out = BUF_INIT;
	CHECK_INT(pathtab_expand("projects/{project}", &none, &out), -EINVAL);
	buf_release(&out);

	/* The payload extension follows the recipe type. */
	const struct pt_row *payload = NULL;
	for (size_t i = 0; i < n; i++)
		if (pathtab_row(i)->name_map)
			payload = pathtab_row(i);
	CHECK(payload != NULL);
	if (payload) {
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
	}
	CHECK_DONE();
}
