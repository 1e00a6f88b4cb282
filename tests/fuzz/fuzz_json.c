/*
 * fuzz_json - rendering of what the server sends (json_render) and field
 * access (json_get, json_get_int64, json_get_string), on documents parsed
 * by cJSON as the tree engine parses every response.
 *
 * The input is a document, optionally followed by a NUL byte and a dotted
 * field path.  Checked: a rendering parses back, and rendering that again
 * gives the same bytes (idempotent: a file's bytes do not depend on how
 * the server spelled its JSON); rendering is deterministic; the rendering
 * ends with exactly one newline and holds no NUL; the field getters agree
 * with each other.
 */
#include "dssfs/json.h"
#include "fuzz.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	const char *nul = memchr(in, '\0', size);
	size_t doc_len = nul ? (size_t)(nul - in) : size;
	struct buf path = BUF_INIT, r1 = BUF_INIT, r2 = BUF_INIT, r3 = BUF_INIT;
	cJSON *j = cJSON_ParseWithLength(in, doc_len), *back = NULL;

	if (nul)
		buf_add(&path, nul + 1, size - doc_len - 1);
	if (!j)
		goto out;
	json_render(j, &r1);
	json_render(j, &r2);
	REQUIRE(r1.len == r2.len && !memcmp(r1.data, r2.data, r1.len));
	REQUIRE(strlen(r1.data) == r1.len);
	REQUIRE(r1.len >= 2 && r1.data[r1.len - 1] == '\n' && r1.data[r1.len - 2] != '\n');
	back = cJSON_ParseWithLength(r1.data, r1.len);
	REQUIRE(back != NULL);
	json_render(back, &r3);
	if (r3.len != r1.len || memcmp(r3.data, r1.data, r1.len)) {
		fprintf(stderr, "first rendering:\n%s\nsecond rendering:\n%s\n", r1.data, r3.data);
		REQUIRE(!"rendering is idempotent");
	}

	const cJSON *f = json_get(j, path.data);
	const char *s = json_get_string(j, path.data);
	int64_t v = json_get_int64(j, path.data, -1), w = json_get_int64(j, path.data, -2);
	REQUIRE(s == (cJSON_IsString(f) ? f->valuestring : NULL));
	REQUIRE((v == w) == cJSON_IsNumber(f) || (cJSON_IsNumber(f) && v == -1 && w == -2));
	if (!path.len)
		REQUIRE(f == j);
out:
	cJSON_Delete(back);
	cJSON_Delete(j);
	buf_release(&path);
	buf_release(&r1);
	buf_release(&r2);
	buf_release(&r3);
	return 0;
}
