#include "check.h"
#include "dssfs/escape.h"

#include <errno.h>

static const struct {
	const char *name, *file;
} cases[] = {
    {"orders", "orders"},   {"my ds", "my ds"}, {"ventes é 2024", "ventes é 2024"},
    {"a/b", "a%2Fb"},	    {"100%", "100%25"}, {"%2F", "%252F"},
    {".", "%2E"},	    {"..", "%2E%2E"},	{"...", "..."},
    {".hidden", ".hidden"}, {"/", "%2F"},
};

static const struct {
	const char *seg, *url;
} url_cases[] = {
    {"orders", "orders"},
    {"my ds/é?", "my%20ds%2F%C3%A9%3F"},
    {"a.b_c-d~e", "a.b_c-d~e"},
    {"100%", "100%25"},
    {"#&+=", "%23%26%2B%3D"},
    {".", "%2E"},
    {"..", "%2E%2E"},
    {"...", "..."},
    {".x", ".x"},
};

int main(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf f = BUF_INIT, n = BUF_INIT;
		CHECK_INT(escape_name(cases[i].name, &f), 0);
		CHECK_STR(f.data, cases[i].file);
		CHECK_INT(unescape_name(f.data, &n), 0);
		CHECK_STR(n.data, cases[i].name);
		buf_release(&f);
		buf_release(&n);
	}

	/* Non-canonical spellings name nothing. */
	static const char *const bad[] = {"a%2fb", "%41", "a%2Eb", "%", "%2", "%G1", "%00", "a%~"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf n = BUF_INIT;
		CHECK_INT(unescape_name(bad[i], &n), -EINVAL);
		buf_release(&n);
	}

	struct buf e = BUF_INIT;
	CHECK_INT(escape_name("", &e), -EINVAL);

	/* Long names: cut, hashed, unique, never longer than NAME_MAX. */
	char longname[400], other[400];
	memset(longname, 'x', 399);
	longname[399] = '\0';
	memcpy(other, longname, sizeof(other));
	other[398] = 'y';
	struct buf l1 = BUF_INIT, l2 = BUF_INIT;
	CHECK_INT(escape_name(longname, &l1), 0);
	CHECK_INT(escape_name(other, &l2), 0);
	CHECK(l1.len <= NAME_MAX_BYTES);
	CHECK(strcmp(l1.data, l2.data) != 0);
	CHECK(strstr(l1.data, "%~") != NULL);
	CHECK(strchr(l1.data, '/') == NULL);
	struct buf again = BUF_INIT;
	CHECK_INT(escape_name(longname, &again), 0);
	CHECK_STR(again.data, l1.data);

	/* The cut never splits a %XX sequence or a UTF-8 character. */
	struct buf sl = BUF_INIT, out = BUF_INIT;
	for (int i = 0; i < 150; i++)
		buf_addstr(&sl, "/é");
	CHECK_INT(escape_name(sl.data, &out), 0);
	CHECK(out.len <= NAME_MAX_BYTES);
	const char *cut = strstr(out.data, "%~");
	CHECK(cut != NULL);
	if (cut) {
		size_t prefix = (size_t)(cut - out.data);
		/* pattern "%2Fé" is 5 bytes: the prefix is whole units */
		CHECK_INT(prefix % 5, 0);
	}

	for (size_t i = 0; i < sizeof(url_cases) / sizeof(url_cases[0]); i++) {
		struct buf u = BUF_INIT;
		url_encode_segment(url_cases[i].seg, &u);
		CHECK_STR(u.data, url_cases[i].url);
		buf_release(&u);
	}

	CHECK(hash64("a") != hash64("b"));
	CHECK_INT(hash64("") == 0xcbf29ce484222325ULL, 1);
	buf_release(&e);
	buf_release(&l1);
	buf_release(&l2);
	buf_release(&again);
	buf_release(&sl);
	buf_release(&out);
	CHECK_DONE();
}
