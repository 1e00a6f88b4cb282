#include "check.h"
#include "dssfs/json.h"

#include <errno.h>
#include <stdlib.h>

static const struct {
	const char *in, *out;
} cases[] = {
    {"{}", "{}\n"},
    {"[]", "[]\n"},
    {"{\"a\":1}", "{\n  \"a\": 1\n}\n"},
    {"{\"b\":[1,2],\"a\":{}}", "{\n  \"b\": [\n    1,\n    2\n  ],\n  \"a\": {}\n}\n"},
    {"[true,false,null]", "[\n  true,\n  false,\n  null\n]\n"},
    {"\"x\"", "\"x\"\n"},
    {"{\"s\":\"q\\\"b\\\\n\\n\\t\\u0001/é\"}", "{\n  \"s\": \"q\\\"b\\\\n\\n\\t\\u0001/é\"\n}\n"},
    {"[1586927069592, -3, 0]", "[\n  1586927069592,\n  -3,\n  0\n]\n"},
    {"[0.1, 2.5, 1e-05, 1.0]", "[\n  0.1,\n  2.5,\n  1e-05,\n  1\n]\n"},
    {"[0.30000000000000004]", "[\n  0.30000000000000004\n]\n"},
    {"{\"z\":1,\"a\":2,\"m\":3}", "{\n  \"z\": 1,\n  \"a\": 2,\n  \"m\": 3\n}\n"},
    {"[[[]]]", "[\n  [\n    []\n  ]\n]\n"},
};

/* json_scan_list's fn for the tests: "key:item;" (compact) for each item;
 * stops at the item "stop". */
static int collect(const char *key, const cJSON *item, void *ctx)
{
	struct buf *out = ctx;
	char *s = cJSON_PrintUnformatted(item);

	if (key)
		buf_addf(out, "%s:", key);
	buf_addf(out, "%s;", s);
	free(s);
	return cJSON_IsString(item) && !strcmp(item->valuestring, "stop") ? 7 : 0;
}

/* The same from the whole document, parsed by cJSON as parse_body does. */
static int collect_parsed(const char *text, size_t len, const char *at, struct buf *out)
{
	const char *end = NULL;
	cJSON *doc = cJSON_ParseWithLengthOpts(text, len, &end, 0), *item;
	const cJSON *list = json_get(doc, at);
	int ret = -EINVAL;

	for (; doc && end < text + len; end++)
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
			goto out;
	if (!cJSON_IsArray(list) && !cJSON_IsObject(list))
		goto out;
	ret = 0;
	cJSON_ArrayForEach(item, list)
	{
		if ((ret = collect(cJSON_IsObject(list) ? item->string : NULL, item, out)))
			break;
	}
out:
	cJSON_Delete(doc);
	return ret;
}

static const struct {
	const char *text;
	const char *at;
	int ret;
	const char *items;
} scans[] = {
    {"[]", NULL, 0, ""},
    {"{}", "", 0, ""},
    {"[{\"id\":\"a\"},{\"id\":\"b\",\"n\":[1,{}]}]", NULL, 0,
     "{\"id\":\"a\"};{\"id\":\"b\",\"n\":[1,{}]};"},
    {"{\"x\":{\"id\":\"a\"},\"y\":1,\"x\":null}", NULL, 0, "x:{\"id\":\"a\"};y:1;x:null;"},
    {"\xEF\xBB\xBF [1]", NULL, 0, "1;"},
    {"\x01\x1f [ 1 ,\x02 2 ] \t\r\n", NULL, 0, "1;2;"},
    {"[1] x", NULL, -EINVAL, NULL},
    {"[1]\x01", NULL, -EINVAL, NULL},
    {"[1][2]", NULL, -EINVAL, NULL},
    {"[1,]", NULL, -EINVAL, NULL},
    {"[1 2]", NULL, -EINVAL, NULL},
    {"[", NULL, -EINVAL, NULL},
    {"", NULL, -EINVAL, NULL},
    {"   ", NULL, -EINVAL, NULL},
    {"[1", NULL, -EINVAL, NULL},
    {"[\"a]", NULL, -EINVAL, NULL},
    {"[\xEF\xBB\xBF"
     "1]",
     NULL, -EINVAL, NULL},
    {"{\"k\":1 \"j\":2}", NULL, -EINVAL, NULL},
    {"{1:2}", NULL, -EINVAL, NULL},
    {"{\"k\" 1}", NULL, -EINVAL, NULL},
    {"{\"k\":}", NULL, -EINVAL, NULL},
    {"\"str\"", NULL, -EINVAL, NULL},
    {"12", NULL, -EINVAL, NULL},
    {"[nul]", NULL, -EINVAL, NULL},
    {"[tru, 1]", NULL, -EINVAL, NULL},
    {"[1e400, -1e400, 9007199254740993, -0]", NULL, 0, "null;null;9.00719925474099e+15;-0;"},
    {"[\"\\ud800\"]", NULL, -EINVAL, NULL}, /* (the daemon marks these first) */
    {"[\"a\\u0000b\"]", NULL, 0, "\"a\";"},
    {"[\"\xff\xfe\\u00e9\"]", NULL, 0, "\"\xff\xfe\xc3\xa9\";"},
    {"[\"\\q\"]", NULL, -EINVAL, NULL},
    /* the list at a path: the first member of its name */
    {"{\"total\":2,\"items\":[{\"id\":\"a\"}],\"items\":[{\"id\":\"b\"}]}", "items", 0,
     "{\"id\":\"a\"};"},
    {"{\"a\":[1,2],\"items\":{\"k\":true}}", "items", 0, "k:true;"},
    {"{\"a\":{\"b\":[1]},\"c\":{\"d\":[{\"e\":[]}]}}", "a.b", 0, "1;"},
    {"{\"items\":\"x\"}", "items", -EINVAL, NULL},
    {"{\"other\":[]}", "items", -EINVAL, NULL},
    {"{}", "items", -EINVAL, NULL},
    {"[1]", "items", -EINVAL, NULL},
    {"{\"items\":[1],\"bad\":[}", "items", -EINVAL, NULL},
    {"{\"items\":[1]} x", "items", -EINVAL, NULL},
    {"{\"a\":{\"b\":1}}", "a.b", -EINVAL, NULL},
    /* fn stops the scan */
    {"[1,\"stop\",3]", NULL, 7, "1;\"stop\";"},
};

/* A list whose item nests `depth` arrays, in `outer` objects. */
static void nested_list(int outer, int depth, struct buf *out)
{
	for (int i = 0; i < outer; i++)
		buf_addstr(out, "{\"l\":");
	buf_addch(out, '[');
	for (int i = 0; i < depth; i++)
		buf_addch(out, '[');
	for (int i = 0; i < depth; i++)
		buf_addch(out, ']');
	buf_addch(out, ']');
	for (int i = 0; i < outer; i++)
		buf_addch(out, '}');
}

static void test_scan(void)
{
	for (size_t i = 0; i < sizeof(scans) / sizeof(scans[0]); i++) {
		struct buf got = BUF_INIT, want = BUF_INIT;
		size_t len = strlen(scans[i].text);
		/* (exactly len bytes, not NUL-terminated) */
		char *copy = malloc(len ? len : 1);
		memcpy(copy, scans[i].text, len);
		int ret = json_scan_list(copy, len, scans[i].at, collect, &got);
		if (ret != scans[i].ret)
			fprintf(stderr, "scan case %zu: %s\n", i, scans[i].text);
		CHECK_INT(ret, scans[i].ret);
		if (scans[i].items)
			CHECK_STR(got.data, scans[i].items);
		/* cJSON, given the whole document, agrees */
		int parsed = collect_parsed(scans[i].text, len, scans[i].at, &want);
		CHECK_INT(parsed, scans[i].ret);
		if (!ret)
			CHECK_STR(got.data, want.data);
		free(copy);
		buf_release(&got);
		buf_release(&want);
	}

	/* A text cut short is read no further than its length. */
	struct buf got = BUF_INIT;
	CHECK_INT(json_scan_list("[1,2]", 4, NULL, collect, &got), -EINVAL);
	buf_release(&got);

	/* Nesting: what cJSON reads (under its limit of 1000) is read, beyond
	 * it nothing is; near it the scan may leave it to cJSON. */
	static const struct {
		int outer, depth, ret;
	} deep[] = {{0, 500, 0}, {3, 900, 0}, {0, 1200, -EINVAL}, {2, 997, -EINVAL}};
	for (size_t i = 0; i < sizeof(deep) / sizeof(deep[0]); i++) {
		struct buf text = BUF_INIT, path = BUF_INIT, items = BUF_INIT;
		nested_list(deep[i].outer, deep[i].depth, &text);
		for (int k = 0; k < deep[i].outer; k++)
			buf_addstr(&path, k ? ".l" : "l");
		CHECK_INT(json_scan_list(text.data, text.len, path.data, collect, &items),
			  deep[i].ret);
		cJSON *full = cJSON_ParseWithLength(text.data, text.len);
		CHECK((full != NULL) == (deep[i].depth + deep[i].outer < 1000));
		cJSON_Delete(full);
		buf_release(&text);
		buf_release(&path);
		buf_release(&items);
	}
}

int main(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *j = cJSON_Parse(cases[i].in);
		struct buf out = BUF_INIT, again = BUF_INIT;
		CHECK(j != NULL);
		if (!j)
			continue;
		json_render(j, &out);
		CHECK_STR(out.data, cases[i].out);
		/* Rendering is deterministic and reads back to the same value. */
		json_render(j, &again);
		CHECK_STR(again.data, out.data);
		cJSON *back = cJSON_Parse(out.data);
		CHECK(back && cJSON_Compare(j, back, 1));
		cJSON_Delete(back);
		cJSON_Delete(j);
		buf_release(&out);
		buf_release(&again);
	}

	/* What a hostile server may send renders as JSON that renders the same
	 * once read back. */
	static const struct {
		const char *in, *out;
	} hostile[] = {
	    {"[1e400, -1e400, -0, 9007199254740993, 1e20, 5e-324]",
	     "[\n  null,\n  null,\n  -0,\n  9007199254740992,\n  1e+20,\n  "
	     "4.94065645841247e-324\n]\n"},
	    {"{\"a\":1,\"a\":2}", "{\n  \"a\": 1,\n  \"a\": 2\n}\n"},
	    {"[\"a\\u0000b\", \"\xff\xfe\", \"\x7f\"]",
	     "[\n  \"a\",\n  \"\xff\xfe\",\n  \"\x7f\"\n]\n"},
	};
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		cJSON *j = cJSON_Parse(hostile[i].in), *back;
		struct buf out = BUF_INIT, again = BUF_INIT;
		CHECK(j != NULL);
		json_render(j, &out);
		CHECK_STR(out.data, hostile[i].out);
		back = cJSON_Parse(out.data);
		CHECK(back != NULL);
		json_render(back, &again);
		CHECK_STR(again.data, out.data);
		cJSON_Delete(back);
		cJSON_Delete(j);
		buf_release(&out);
		buf_release(&again);
	}

	/* Deep nesting, as deep as cJSON reads. */
	struct buf deep = BUF_INIT, out = BUF_INIT;
	for (int i = 0; i < 900; i++)
		buf_addch(&deep, '[');
	for (int i = 0; i < 900; i++)
		buf_addch(&deep, ']');
	cJSON *dj = cJSON_Parse(deep.data);
	CHECK(dj != NULL);
	json_render(dj, &out);
	/* level k < 899: "[\n", 2(k+1) spaces, the inner level, "\n", 2k spaces, "]" */
	CHECK_INT(out.len, 899 * 6 + 4 * (898 * 899 / 2) + 2 + 1);
	cJSON_Delete(dj);
	buf_release(&deep);
	buf_release(&out);

	cJSON *doc = cJSON_Parse("{\"recipe\":{\"type\":\"python\",\"versionTag\":"
				 "{\"versionNumber\":3,\"lastModifiedOn\":1700000000123}},"
				 "\"payload\":\"print(1)\",\"n\":\"str\"}");
	CHECK(json_get(doc, NULL) == doc);
	CHECK(json_get(doc, "") == doc);
	CHECK_STR(json_get_string(doc, "recipe.type"), "python");
	CHECK_STR(json_get_string(doc, "payload"), "print(1)");
	CHECK(json_get(doc, "recipe.missing") == NULL);
	CHECK(json_get(doc, "payload.deeper") == NULL);
	CHECK(json_get_string(doc, "recipe") == NULL);
	CHECK_INT(json_get_int64(doc, "recipe.versionTag.lastModifiedOn", -1), 1700000000123LL);
	CHECK_INT(json_get_int64(doc, "recipe.versionTag.nope", -1), -1);
	CHECK_INT(json_get_int64(doc, "n", -7), -7);
	cJSON_Delete(doc);

	cJSON *huge = cJSON_Parse("{\"t\":1e300}");
	CHECK_INT(json_get_int64(huge, "t", -2), -2);
	cJSON_Delete(huge);

	test_scan();
	CHECK_DONE();
}
