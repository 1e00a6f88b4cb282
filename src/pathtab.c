#include "dssfs/pathtab.h"
#include "dssfs/escape.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

/* Extension of a recipe's payload file by recipe type; visual recipes keep
 * their settings as JSON text. */
static const struct pt_map recipe_payload_ext[] = {
    {"python", "py"},
    {"pyspark", "py"},
    {"r", "R"},
    {"sparkr", "R"},
    {"sql_query", "sql"},
    {"sql_script", "sql"},
    {"spark_sql_query", "sql"},
    {"hive", "sql"},
    {"impala", "sql"},
    {"spark_scala", "scala"},
    {"shell", "sh"},
    {"julia", "jl"},
    {NULL, "json"},
};

#define P "projects/{project}"
#define DS P "/datasets/{dataset}"
#define RC P "/recipes/{recipe}"
#define SC P "/scenarios/{scenario}"

static const struct pt_row rows[] = {
    {.pattern = "/", .kind = PT_DIR, .list = "projects/", .list_key = "projectKey"},
    {.pattern = "/{project}", .kind = PT_DIR},
    {.pattern = "/{project}/metadata.json",
     .kind = PT_FILE,
     .get = P "/metadata",
     .put = P "/metadata"},
    {.pattern = "/{project}/settings.json",
     .kind = PT_FILE,
     .get = P "/settings",
     .put = P "/settings"},
    {.pattern = "/{project}/permissions.json",
     .kind = PT_FILE,
     .get = P "/permissions",
     .put = P "/permissions"},
    {.pattern = "/{project}/variables.json",
     .kind = PT_FILE,
     .get = P "/variables/",
     .put = P "/variables/",
     .require = "standard,local"},

    {.pattern = "/{project}/export.zip",
     .kind = PT_FILE,
     .get = P "/export",
     .format = PT_SPOOL,
     .hidden = 1},
    {.pattern = "/{project}/datasets", .kind = PT_DIR, .list = P "/datasets/", .list_key = "name"},
    {.pattern = "/{project}/datasets/{dataset}", .kind = PT_DIR},
    {.pattern = "/{project}/datasets/{dataset}/settings.json",
     .kind = PT_FILE,
     .get = DS,
     .put = DS,
     .version_at = "versionTag"},
    {.pattern = "/{project}/datasets/{dataset}/schema.json",
     .kind = PT_FILE,
     .get = DS "/schema",
     .put = DS "/schema",
     .require = "columns"},
    {.pattern = "/{project}/datasets/{dataset}/metadata.json",
     .kind = PT_FILE,
     .get = DS "/metadata",
     .put = DS "/metadata"},
    {.pattern = "/{project}/datasets/{dataset}/partitions.json",
     .kind = PT_FILE,
     .get = DS "/partitions"},
    {.pattern = "/{project}/datasets/{dataset}/metrics.json",
     .kind = PT_FILE,
     .get = DS "/metrics/last/NP"},

    {.pattern = "/{project}/recipes", .kind = PT_DIR, .list = P "/recipes/", .list_key = "name"},
    {.pattern = "/{project}/recipes/{recipe}", .kind = PT_DIR},
    {.pattern = "/{project}/recipes/{recipe}/recipe.json",
     .kind = PT_FILE,
     .get = RC,
     .put = RC,
     .field = "recipe",
     .version_at = "recipe.versionTag"},
    {.pattern = "/{project}/recipes/{recipe}/payload.{ext}",
     .kind = PT_FILE,
     .get = RC,
     .put = RC,
     .field = "payload",
     .format = PT_TEXT,
     .version_at = "recipe.versionTag",
     .cond_get = RC,
     .cond_field = "recipe.type",
     .name_map = recipe_payload_ext},

    {.pattern = "/{project}/scenarios", .kind = PT_DIR, .list = P "/scenarios/", .list_key = "id"},
    {.pattern = "/{project}/scenarios/{scenario}", .kind = PT_DIR},
    {.pattern = "/{project}/scenarios/{scenario}/settings.json",
     .kind = PT_FILE,
     .get = SC,
     .put = SC,
     .version_at = "versionTag"},
    {.pattern = "/{project}/scenarios/{scenario}/script.py",
     .kind = PT_FILE,
     .get = SC "/payload",
     .put = SC "/payload",
     .field = "script",
     .format = PT_TEXT,
     .cond_get = SC,
     .cond_field = "type",
     .cond_equals = "custom_python"},
    {.pattern = "/{project}/scenarios/{scenario}/last-runs.json",
     .kind = PT_FILE,
     .get = SC "/get-last-runs"},
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* Parsed form of each pattern, computed once and kept for the life of the
 * process.  The strings are tails of the patterns or copies made once, so a
 * literal or a variable name can be of any length. */
static struct {
	const struct pt_row *parent;
	enum pt_seg seg;
	const char *text;   /* literal, variable name or derived prefix */
	const char *suffix; /* derived suffix; "" for other segments */
} info[NROWS];
static pthread_once_t parsed = PTHREAD_ONCE_INIT;

static void parse_rows(void)
{
	for (size_t i = 0; i < NROWS; i++) {
		const char *pat = rows[i].pattern;
		const char *last = strrchr(pat, '/');
		size_t plen = (size_t)(last - pat);

		info[i].text = info[i].suffix = "";
		if (!strcmp(pat, "/")) {
			info[i].seg = PT_SEG_ROOT;
			continue;
		}
		for (size_t j = 0; j < NROWS; j++) {
			const char *pp = rows[j].pattern;
			if ((plen == 0 && !strcmp(pp, "/")) ||
			    (plen > 0 && strlen(pp) == plen && !strncmp(pp, pat, plen)))
				info[i].parent = &rows[j];
		}
		const char *leaf = last + 1;
		const char *open = strchr(leaf, '{');
		if (!open) {
			info[i].seg = PT_SEG_LITERAL;
			info[i].text = leaf;
		} else if (open == leaf && leaf[strlen(leaf) - 1] == '}') {
			info[i].seg = PT_SEG_VAR;
			info[i].text = xstrndup(leaf + 1, strlen(leaf) - 2);
		} else {
			info[i].seg = PT_SEG_DERIVED;
			info[i].text = xstrndup(leaf, (size_t)(open - leaf));
			info[i].suffix = strchr(open, '}') + 1;
		}
	}
}

static size_t index_of(const struct pt_row *row)
{
	pthread_once(&parsed, parse_rows);
	return (size_t)(row - rows);
}

const struct pt_row *pathtab_root(void)
{
	return &rows[0];
}

const struct pt_row *pathtab_parent(const struct pt_row *row)
{
	return info[index_of(row)].parent;
}

enum pt_seg pathtab_leaf(const struct pt_row *row, const char **text, const char **suffix)
{
	size_t i = index_of(row);

	if (text)
		*text = info[i].text;
	if (suffix)
		*suffix = info[i].suffix;
	return info[i].seg;
}

size_t pathtab_children(const struct pt_row *row, const struct pt_row **out, size_t max)
{
	size_t n = 0;

	pthread_once(&parsed, parse_rows);
	for (size_t i = 0; i < NROWS && n < max; i++)
		if (info[i].parent == row)
			out[n++] = &rows[i];
	return n;
}

const char *pathtab_map(const struct pt_map *map, const char *value)
{
	for (; map->from; map++)
		if (value && !strcmp(map->from, value))
			return map->to;
	return map->to;
}

int pathtab_map_has(const struct pt_map *map, const char *value, size_t len)
{
	for (;; map++) {
		if (strlen(map->to) == len && !strncmp(map->to, value, len))
			return 1;
		if (!map->from)
			return 0;
	}
}

static const char *vars_find(const struct pt_vars *vars, const char *name, size_t len)
{
	for (int i = 0; i < vars->n; i++)
		if (strlen(vars->name[i]) == len && !memcmp(vars->name[i], name, len))
			return vars->value[i];
	return NULL;
}

const char *pt_vars_get(const struct pt_vars *vars, const char *name)
{
	return vars_find(vars, name, strlen(name));
}

int pathtab_expand(const char *tmpl, const struct pt_vars *vars, struct buf *out)
{
	const char *p = tmpl;

	while (*p) {
		const char *open = strchr(p, '{');
		if (!open) {
			buf_addstr(out, p);
			break;
		}
		const char *close = strchr(open, '}');
		if (!close)
			return -EINVAL;
		buf_add(out, p, (size_t)(open - p));
		const char *v = vars_find(vars, open + 1, (size_t)(close - open - 1));
		/* An empty value would leave "//", which servers collapse:
		 * the path would lose a segment and name another resource. */
		if (!v || !*v)
			return -EINVAL;
		url_encode_segment(v, out);
		p = close + 1;
	}
	return 0;
}
