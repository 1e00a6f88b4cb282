#include "dssfs/pathtab.h"
#include "dssfs/escape.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
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

/* A webapp's code, split into files by webapp type. */
static const char webapp_standard[] = "STANDARD";
static const char webapp_python[] = "STANDARD|BOKEH|DASH";
static const char webapp_shiny[] = "SHINY";

#define P "projects/{project}"
#define DS P "/datasets/{dataset}"
#define RC P "/recipes/{recipe}"
#define SC P "/scenarios/{scenario}"
#define WA P "/webapps/{webapp}"
#define MF P "/managedfolders/{folder}"
#define SM P "/savedmodels/{model}"
#define MES P "/evaluationstores/{store}"
#define LAB P "/lab/{analysis}"
#define WK P "/wiki/{article}"
#define RUN SC "/{run}"
#define JOB P "/jobs/{job}"
#define PFOLDER "project-folders/{pfolder}"

/* Activity (pathtab.h, `activity`): how much of it a folder shows.  DSS
 * keeps at most 20 runs of a scenario by default and answers
 * get-last-runs with at most `limit`; it lists all the jobs it keeps (the
 * newest first), of which the newest 50 are shown; the git log is asked
 * for its newest 100 commits. */
#define RUNS_SHOWN "20"
#define JOBS_SHOWN 50
#define GIT_LOG P "/git/actions/log?count=100"

/* An object folder listed by id and named by name (generated ids). */
#define NAMED(pat, endpoint)                                                        \
	{                                                                           \
		.pattern = pat, .kind = PT_DIR, .list = endpoint, .list_key = "id", \
		.name_key = "name", .optional = 1                                   \
	}
/* One document per object: <name>.json, saved where it is read. */
#define DOC(pat, endpoint)                                                         \
	{                                                                          \
		.pattern = pat, .kind = PT_FILE, .get = endpoint, .put = endpoint, \
		.version_at = "versionTag"                                         \
	}
/* A code field of a webapp, present for the types in `types`. */
#define WEBAPP_CODE(file, fld, types)                                                             \
	{                                                                                         \
		.pattern = "/{project}/webapps/{webapp}/" file, .kind = PT_FILE, .get = WA,       \
		.put = WA, .field = "params." fld, .format = PT_TEXT, .version_at = "versionTag", \
		.cond_get = WA, .cond_field = "type", .cond_equals = types                        \
	}

/* A project folder (the one of document `doc`): its sub-folders, listed
 * by id, each named by its own document; and its projects, listed by key,
 * as links to them.  The root folder's document is ROOT's (DSS's name
 * for it), which a DSS without project folders answers "not found"
 * (`opt`); a sub-folder is the folder above it again (`rep`). */
#define PFOLDERS(pat, doc, opt, rep)                                                      \
	{                                                                                 \
		.pattern = pat, .kind = PT_DIR, .list = doc, .list_at = "childrenIds",    \
		.name_get = PFOLDER, .name_field = "name", .optional = opt, .repeat = rep \
	}
#define PFOLDER_LINKS(pat, doc)                                                         \
	{                                                                               \
		.pattern = pat, .kind = PT_LINK, .list = doc, .list_at = "projectKeys", \
		.link = "{pkey}"                                                        \
	}

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
     .put = P "/permissions",
     .hide_forbidden = 1},
    {.pattern = "/{project}/variables.json",
     .kind = PT_FILE,
     .get = P "/variables/",
     .put = P "/variables/",
     .require = "standard,local"},

    {.pattern = "/{project}/export.zip",
     .kind = PT_FILE,
     .get = P "/export",
     .get_method = "POST",
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
    /* The rows, as CSV with a header line: DSS's documented formats are
     * TSV ones, converted (pathtab.h, tsv_to_csv). */
    {.pattern = "/{project}/datasets/{dataset}/data.csv",
     .kind = PT_FILE,
     .get = DS "/data/?format=tsv-excel-header",
     .format = PT_SPOOL,
     .tsv_to_csv = 1,
     .hidden = 1},

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
     .get = SC "/get-last-runs",
     .activity = 1},
    {.pattern = "/{project}/scenarios/{scenario}/runs",
     .kind = PT_DIR,
     .list = SC "/get-last-runs?limit=" RUNS_SHOWN,
     .list_key = "runId",
     .time_at = "start",
     .activity = 1},
    {.pattern = "/{project}/scenarios/{scenario}/runs/{run}", .kind = PT_DIR},
    {.pattern = "/{project}/scenarios/{scenario}/runs/{run}/run.json",
     .kind = PT_FILE,
     .get = RUN "/"},
    {.pattern = "/{project}/scenarios/{scenario}/runs/{run}/log.txt",
     .kind = PT_FILE,
     .get = RUN "/log",
     .format = PT_SPOOL},

    {.pattern = "/{project}/tags.json", .kind = PT_FILE, .get = P "/tags", .put = P "/tags"},

    /* Jobs and the project's git history (activity: see pathtab.h). */
    {.pattern = "/{project}/jobs",
     .kind = PT_DIR,
     .list = P "/jobs/",
     .list_key = "def.id",
     .time_at = "def.initiationTimestamp",
     .list_max = JOBS_SHOWN,
     .activity = 1},
    {.pattern = "/{project}/jobs/{job}", .kind = PT_DIR},
    {.pattern = "/{project}/jobs/{job}/status.json", .kind = PT_FILE, .get = JOB},
    {.pattern = "/{project}/jobs/{job}/log.txt",
     .kind = PT_FILE,
     .get = JOB "/log",
     .format = PT_SPOOL},
    {.pattern = "/{project}/history",
     .kind = PT_DIR,
     .list = GIT_LOG,
     .list_at = "entries",
     .list_key = "commit",
     .time_at = "timestamp",
     .activity = 1},
    {.pattern = "/{project}/history/log.json", .kind = PT_FILE, .get = GIT_LOG, .field = "entries"},
    {.pattern = "/{project}/history/{commit}.diff",
     .kind = PT_FILE,
     .get = P "/git/actions/diff?commitFrom={commit}",
     .field = "entries",
     .join = "diff",
     .format = PT_CONCAT},

    /* The wiki: its settings, and each article as <name>.md (its text)
     * and <name>.json (the rest), with the articles under it in <name>/,
     * as the taxonomy nests them; the taxonomy holds only ids, so each
     * article's name comes from its own document. */
    {.pattern = "/{project}/wiki",
     .kind = PT_DIR,
     .list = P "/wiki/",
     .list_at = "taxonomy",
     .list_key = "id",
     .name_get = WK,
     .name_field = "article.name",
     .nest = "children"},
    {.pattern = "/{project}/wiki/wiki.json",
     .kind = PT_FILE,
     .get = P "/wiki/",
     .put = P "/wiki/",
     .require = "taxonomy"},
    {.pattern = "/{project}/wiki/{article}.md",
     .kind = PT_FILE,
     .get = WK,
     .put = WK,
     .field = "payload",
     .format = PT_TEXT,
     .version_at = "article.versionTag"},
    {.pattern = "/{project}/wiki/{article}.json",
     .kind = PT_FILE,
     .get = WK,
     .put = WK,
     .field = "article",
     .version_at = "article.versionTag"},
    {.pattern = "/{project}/wiki/{article}", .kind = PT_DIR, .recurse = 1},

    /* The project library: its files and folders as they are. */
    {.pattern = "/{project}/library",
     .kind = PT_DIR,
     .list = P "/libraries/contents",
     .content = PT_TREE,
     .mkdir = P "/libraries/folders/{path*}",
     .remove = P "/libraries/contents/{path*}",
     .rename = P "/libraries/contents-actions/rename/",
     .move = P "/libraries/contents-actions/move"},
    {.pattern = "/{project}/library/{path}", .kind = PT_DIR, .recurse = 1, .content = PT_TREE},
    {.pattern = "/{project}/library/{path}",
     .kind = PT_FILE,
     .content = PT_TREE,
     .get = P "/libraries/contents/{path*}?dataEncoding=base64",
     .field = "data",
     .format = PT_BASE64,
     .put = P "/libraries/contents/{path*}",
     .put_method = "POST",
     .put_raw = 1},

    NAMED("/{project}/managed_folders", P "/managedfolders/"),
    {.pattern = "/{project}/managed_folders/{folder}", .kind = PT_DIR},
    DOC("/{project}/managed_folders/{folder}/settings.json", MF),
    /* A managed folder's files, of any size: read and written through
     * temporary files; DSS has no folders of their own (a folder is there
     * while a file is in it) and no rename. */
    {.pattern = "/{project}/managed_folders/{folder}/files",
     .kind = PT_DIR,
     .list = MF "/contents",
     .list_at = "items",
     .content = PT_FLAT,
     .remove = MF "/contents/{path*}"},
    {.pattern = "/{project}/managed_folders/{folder}/files/{path}",
     .kind = PT_DIR,
     .recurse = 1,
     .content = PT_FLAT},
    {.pattern = "/{project}/managed_folders/{folder}/files/{path}",
     .kind = PT_FILE,
     .content = PT_FLAT,
     .get = MF "/contents/{path*}",
     .format = PT_SPOOL,
     .put = MF "/contents/{path*}",
     .put_method = "POST",
     .put_form = 1},

    {.pattern = "/{project}/notebooks",
     .kind = PT_DIR,
     .list = P "/jupyter-notebooks/",
     .list_key = "name",
     .optional = 1},
    {.pattern = "/{project}/notebooks/{notebook}.ipynb",
     .kind = PT_FILE,
     .get = P "/jupyter-notebooks/{notebook}",
     .put = P "/jupyter-notebooks/{notebook}",
     .require = "cells"},

    NAMED("/{project}/sql_notebooks", P "/sql-notebooks/"),
    {.pattern = "/{project}/sql_notebooks/{sqlnb}", .kind = PT_DIR},
    DOC("/{project}/sql_notebooks/{sqlnb}/settings.json", P "/sql-notebooks/{sqlnb}"),
    {.pattern = "/{project}/sql_notebooks/{sqlnb}/history.json",
     .kind = PT_FILE,
     .get = P "/sql-notebooks/{sqlnb}/history"},

    NAMED("/{project}/webapps", P "/webapps/"),
    {.pattern = "/{project}/webapps/{webapp}", .kind = PT_DIR},
    DOC("/{project}/webapps/{webapp}/settings.json", WA),
    WEBAPP_CODE("body.html", "html", webapp_standard),
    WEBAPP_CODE("app.js", "js", webapp_standard),
    WEBAPP_CODE("style.css", "css", webapp_standard),
    WEBAPP_CODE("backend.py", "python", webapp_python),
    WEBAPP_CODE("ui.R", "ui", webapp_shiny),
    WEBAPP_CODE("server.R", "server", webapp_shiny),

    NAMED("/{project}/dashboards", P "/dashboards/"),
    DOC("/{project}/dashboards/{dashboard}.json", P "/dashboards/{dashboard}/"),

    NAMED("/{project}/insights", P "/insights/"),
    {.pattern = "/{project}/insights/{insight}.json",
     .kind = PT_FILE,
     .get = P "/insights/{insight}/",
     .put = P "/insights/{insight}/",
     .put_method = "POST",
     .put_wrap = "insight",
     .version_at = "versionTag"},

    NAMED("/{project}/zones", P "/flow/zones"),
    DOC("/{project}/zones/{zone}.json", P "/flow/zones/{zone}"),

    NAMED("/{project}/saved_models", P "/savedmodels/"),
    {.pattern = "/{project}/saved_models/{model}", .kind = PT_DIR},
    DOC("/{project}/saved_models/{model}/settings.json", SM),
    {.pattern = "/{project}/saved_models/{model}/versions.json",
     .kind = PT_FILE,
     .get = SM "/versions"},

    NAMED("/{project}/model_evaluation_stores", P "/evaluationstores/"),
    {.pattern = "/{project}/model_evaluation_stores/{store}", .kind = PT_DIR},
    DOC("/{project}/model_evaluation_stores/{store}/settings.json", MES),
    {.pattern = "/{project}/model_evaluation_stores/{store}/evaluations.json",
     .kind = PT_FILE,
     .get = MES "/evaluations/"},

    {.pattern = "/{project}/analyses",
     .kind = PT_DIR,
     .list = P "/lab/",
     .list_key = "analysisId",
     .name_key = "name",
     .optional = 1},
    {.pattern = "/{project}/analyses/{analysis}", .kind = PT_DIR},
    DOC("/{project}/analyses/{analysis}/settings.json", LAB "/"),
    {.pattern = "/{project}/analyses/{analysis}/ml_tasks",
     .kind = PT_DIR,
     .list = LAB "/models/",
     .list_at = "mlTasks",
     .list_key = "mlTaskId"},
    {.pattern = "/{project}/analyses/{analysis}/ml_tasks/{mltask}", .kind = PT_DIR},
    {.pattern = "/{project}/analyses/{analysis}/ml_tasks/{mltask}/settings.json",
     .kind = PT_FILE,
     .get = P "/models/lab/{analysis}/{mltask}/settings",
     .put = P "/models/lab/{analysis}/{mltask}/settings",
     .put_method = "POST"},

    {.pattern = "/{project}/api_services",
     .kind = PT_DIR,
     .list = P "/apiservices/",
     .list_key = "id",
     .optional = 1},
    {.pattern = "/{project}/api_services/{service}", .kind = PT_DIR},
    DOC("/{project}/api_services/{service}/settings.json", P "/apiservices/{service}/settings"),

    {.pattern = "/{project}/model_comparisons",
     .kind = PT_DIR,
     .list = P "/evaluationcomparisons/",
     .list_key = "id",
     .name_key = "displayName",
     .optional = 1},
    DOC("/{project}/model_comparisons/{comparison}.json", P "/evaluationcomparisons/{comparison}"),

    /* Each dataset's worksheets, in one folder of the project (DSS lists
     * them per dataset only: one list per dataset). */
    {.pattern = "/{project}/statistics_worksheets",
     .kind = PT_DIR,
     .list = DS "/statistics/worksheets/",
     .list_key = "id",
     .name_key = "name",
     .over = "dataset"},
    DOC("/{project}/statistics_worksheets/{worksheet}.json",
	DS "/statistics/worksheets/{worksheet}"),

    NAMED("/{project}/code_studios", P "/code-studios/"),
    {.pattern = "/{project}/code_studios/{studio}.json",
     .kind = PT_FILE,
     .get = P "/code-studios/{studio}",
     .version_at = "versionTag"},

    NAMED("/{project}/knowledge_banks", P "/knowledge-banks"),
    DOC("/{project}/knowledge_banks/{kb}.json", P "/knowledge-banks/{kb}"),

    {.pattern = "/{project}/agent_tools",
     .kind = PT_DIR,
     .list = P "/agents/tools",
     .list_at = "tools",
     .list_key = "id",
     .name_key = "name",
     .optional = 1},
    DOC("/{project}/agent_tools/{tool}.json", P "/agents/tools/{tool}"),

    /* The instance (lower case: project keys are upper case).  `admin`
     * rows are shown to an admin key only (tree_probe_admin). */
    {.pattern = "/instance", .kind = PT_DIR},
    {.pattern = "/instance/info.json", .kind = PT_FILE, .get = "instance-info"},
    {.pattern = "/instance/general-settings.json",
     .kind = PT_FILE,
     .get = "admin/general-settings",
     .put = "admin/general-settings",
     .admin = 1},
    {.pattern = "/instance/variables.json",
     .kind = PT_FILE,
     .get = "admin/variables/",
     .put = "admin/variables/",
     .admin = 1},
    {.pattern = "/instance/users",
     .kind = PT_DIR,
     .list = "admin/users/",
     .list_key = "login",
     .admin = 1},
    {.pattern = "/instance/users/{login}.json",
     .kind = PT_FILE,
     .get = "admin/users/{login}",
     .put = "admin/users/{login}"},
    {.pattern = "/instance/groups",
     .kind = PT_DIR,
     .list = "admin/groups/",
     .list_key = "name",
     .admin = 1},
    {.pattern = "/instance/groups/{group}.json",
     .kind = PT_FILE,
     .get = "admin/groups/{group}",
     .put = "admin/groups/{group}"},
    /* (listed as an object keyed by name) */
    {.pattern = "/instance/connections",
     .kind = PT_DIR,
     .list = "admin/connections/",
     .list_key = "name",
     .admin = 1},
    {.pattern = "/instance/connections/{connection}.json",
     .kind = PT_FILE,
     .get = "admin/connections/{connection}",
     .put = "admin/connections/{connection}"},
    /* one list of every code env, shown by language */
    {.pattern = "/instance/code-envs", .kind = PT_DIR, .admin = 1},
    {.pattern = "/instance/code-envs/python",
     .kind = PT_DIR,
     .list = "admin/code-envs/",
     .list_key = "envName",
     .list_if = "envLang",
     .list_if_equals = "PYTHON",
     .admin = 1},
    {.pattern = "/instance/code-envs/python/{pyenv}.json",
     .kind = PT_FILE,
     .get = "admin/code-envs/PYTHON/{pyenv}",
     .put = "admin/code-envs/PYTHON/{pyenv}"},
    {.pattern = "/instance/code-envs/r",
     .kind = PT_DIR,
     .list = "admin/code-envs/",
     .list_key = "envName",
     .list_if = "envLang",
     .list_if_equals = "R",
     .admin = 1},
    {.pattern = "/instance/code-envs/r/{renv}.json",
     .kind = PT_FILE,
     .get = "admin/code-envs/R/{renv}",
     .put = "admin/code-envs/R/{renv}"},
    {.pattern = "/instance/clusters",
     .kind = PT_DIR,
     .list = "admin/clusters/",
     .list_key = "id",
     .name_key = "name",
     .admin = 1,
     .optional = 1},
    {.pattern = "/instance/clusters/{cluster}.json",
     .kind = PT_FILE,
     .get = "admin/clusters/{cluster}",
     .put = "admin/clusters/{cluster}"},
    {.pattern = "/instance/meanings",
     .kind = PT_DIR,
     .list = "meanings/",
     .list_key = "id",
     .admin = 1,
     .optional = 1},
    {.pattern = "/instance/meanings/{meaning}.json",
     .kind = PT_FILE,
     .get = "meanings/{meaning}",
     .put = "meanings/{meaning}"},
    {.pattern = "/instance/plugins",
     .kind = PT_DIR,
     .list = "plugins/",
     .list_key = "id",
     .admin = 1,
     .optional = 1},
    {.pattern = "/instance/plugins/{plugin}", .kind = PT_DIR},
    {.pattern = "/instance/plugins/{plugin}/settings.json",
     .kind = PT_FILE,
     .get = "plugins/{plugin}/settings",
     .put = "plugins/{plugin}/settings",
     .put_method = "POST"},
    /* A plugin in development: its files as they are (any bytes), read
     * and written through temporary files, as DSS serves them raw. */
    {.pattern = "/instance/plugins/{plugin}/files",
     .kind = PT_DIR,
     .cond_get = "plugins/",
     .cond_key = "id",
     .cond_var = "plugin",
     .cond_field = "isDev",
     .cond_equals = "true",
     .list = "plugins/{plugin}/contents",
     .content = PT_TREE,
     .mkdir = "plugins/{plugin}/folders/{path*}",
     .remove = "plugins/{plugin}/contents/{path*}",
     .rename = "plugins/{plugin}/contents-actions/rename",
     .move = "plugins/{plugin}/contents-actions/move"},
    {.pattern = "/instance/plugins/{plugin}/files/{path}",
     .kind = PT_DIR,
     .recurse = 1,
     .content = PT_TREE},
    {.pattern = "/instance/plugins/{plugin}/files/{path}",
     .kind = PT_FILE,
     .content = PT_TREE,
     .get = "plugins/{plugin}/contents/{path*}",
     .format = PT_SPOOL,
     .put = "plugins/{plugin}/contents/{path*}",
     .put_method = "POST"},
    /* The UI's project folders: each folder a document listing its
     * sub-folders by id (each named by its own document) and its projects
     * by key, shown as links to the projects; any key reads them (DSS
     * shows it the projects it may read), their settings are an admin's. */
    PFOLDERS("/instance/project-folders", "project-folders/ROOT", 1, 0),
    PFOLDERS("/instance/project-folders/{pfolder}", PFOLDER, 0, 0),
    PFOLDER_LINKS("/instance/project-folders/{pkey}", "project-folders/ROOT"),
    {.pattern = "/instance/project-folders/{pfolder}/settings.json",
     .kind = PT_FILE,
     .get = PFOLDER "/settings",
     .put = PFOLDER "/settings",
     .admin = 1},
    PFOLDERS("/instance/project-folders/{pfolder}/{pfolder}", PFOLDER, 0, 1),
    PFOLDER_LINKS("/instance/project-folders/{pfolder}/{pkey}", PFOLDER),
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
		} else if (open == leaf && !rows[i].name_map) {
			/* an object variable, maybe with a suffix */
			const char *close = strchr(open, '}');
			info[i].seg = PT_SEG_VAR;
			info[i].text = xstrndup(leaf + 1, (size_t)(close - leaf - 1));
			info[i].suffix = close + 1;
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
	const struct pt_row *up = row;
	size_t n = 0;

	pthread_once(&parsed, parse_rows);
	/* A recursive folder holds what its parent's objects are; a
	 * repeated one, all that its parent holds. */
	if (row->recurse || row->repeat)
		up = info[index_of(row)].parent;
	for (size_t i = 0; i < NROWS && n < max; i++)
		if (info[i].parent == up && (!row->recurse || info[i].seg == PT_SEG_VAR))
			out[n++] = &rows[i];
	return n;
}

const struct pt_row *pathtab_lister(const char *var)
{
	pthread_once(&parsed, parse_rows);
	for (size_t i = 0; i < NROWS; i++)
		if (info[i].seg == PT_SEG_VAR && !strcmp(info[i].text, var) && info[i].parent &&
		    info[i].parent->list && !info[i].parent->over)
			return info[i].parent;
	return NULL;
}

static int same(const char *a, const char *b)
{
	return a && b && !strcmp(a, b);
}

int pathtab_list_only(const struct pt_row *dir)
{
	if (!dir->list || dir->recurse || dir->nest || dir->name_get || dir->over || dir->content)
		return 0;
	for (size_t i = 0; i < NROWS; i++) {
		const struct pt_row *r = &rows[i];
		if (same(r->get, dir->list) || same(r->cond_get, dir->list) ||
		    same(r->name_get, dir->list) || (r != dir && same(r->list, dir->list)))
			return 0;
	}
	return 1;
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

int pathtab_cond_holds(const char *cond_equals, const char *value)
{
	size_t vl;

	if (!value)
		return 0;
	vl = strlen(value);
	for (const char *p = cond_equals;;) {
		const char *bar = strchr(p, '|');
		size_t n = bar ? (size_t)(bar - p) : strlen(p);
		if (n == vl && !memcmp(p, value, n))
			return 1;
		if (!bar)
			return 0;
		p = bar + 1;
	}
}

static const char *vars_find(const struct pt_vars *vars, const char *name, size_t len)
{
	for (int i = 0; i < vars->n; i++)
		if (strlen(vars->name[i]) == len && !memcmp(vars->name[i], name, len))
			return vars->value[i];
	return NULL;
}

int pt_vars_set(struct pt_vars *vars, const char *name, const char *value)
{
	for (int i = 0; i < vars->n; i++)
		if (!strcmp(vars->name[i], name)) {
			vars->value[i] = value;
			return 0;
		}
	if (vars->n == PT_MAX_VARS)
		return -E2BIG;
	vars->name[vars->n] = name;
	vars->value[vars->n++] = value;
	return 0;
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
		size_t nl = (size_t)(close - open - 1);
		int multi = nl > 0 && open[nl] == '*';
		const char *v = vars_find(vars, open + 1, nl - (size_t)multi);
		/* An empty value would leave "//", which servers collapse:
		 * the path would lose a segment and name another resource. */
		if (!v || !*v)
			return -EINVAL;
		if (multi) {
			/* a path: every segment non-empty, none "." or ".." */
			for (const char *seg = v;;) {
				const char *slash = strchr(seg, '/');
				size_t sl = slash ? (size_t)(slash - seg) : strlen(seg);
				char *one = xstrndup(seg, sl);
				int bad = !sl || !strcmp(one, ".") || !strcmp(one, "..");
				if (!bad)
					url_encode_segment(one, out);
				free(one);
				if (bad)
					return -EINVAL;
				if (!slash)
					break;
				buf_addch(out, '/');
				seg = slash + 1;
			}
		} else {
			url_encode_segment(v, out);
		}
		p = close + 1;
	}
	return 0;
}
