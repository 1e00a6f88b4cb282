#include "check.h"
#include "dssfs/json.h"

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
	CHECK_DONE();
}
