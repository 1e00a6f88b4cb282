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

/* Names a server may send; their file names must all differ. */
static const char *const hostile[] = {
    "/",     "//",	     "..",	    ".",    "...",  "%",	"%2F",
    "%252F", "%2E",	     "%2E%2E",	    "a/..", "../a", "\xff\xfe", "\xe2\x82",
    "\xc3",  "\xf0\x9f\x98", "caf\xc3\xa9", "a\nb", " ",    "%~0",
};

/* A file name the kernel accepts in a directory, that cannot leave it. */
static int usable_file_name(const char *f)
{
	return *f && strlen(f) <= NAME_MAX_BYTES && !strchr(f, '/') && strcmp(f, ".") &&
	       strcmp(f, "..");
}

int main(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf f = BUF_INIT;
		CHECK_INT(escape_name(cases[i].name, &f), 0);
		CHECK_STR(f.data, cases[i].file);
		buf_release(&f);
	}

	/* Hostile names: usable, distinct file names. */
	enum { NH = sizeof(hostile) / sizeof(hostile[0]) };
	struct buf hf[NH];
	for (size_t i = 0; i < NH; i++) {
		buf_init(&hf[i]);
		CHECK_INT(escape_name(hostile[i], &hf[i]), 0);
		CHECK(usable_file_name(hf[i].data));
		for (size_t k = 0; k < i; k++)
			CHECK(strcmp(hf[i].data, hf[k].data) != 0);
	}
	for (size_t i = 0; i < NH; i++)
		buf_release(&hf[i]);

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

	/* 300-byte names of slashes, or of bytes that are not UTF-8, that differ
	 * only past the cut. */
	static const char fill[] = {'/', '\xff', '%'};
	for (size_t i = 0; i < sizeof(fill); i++) {
		char a[301], b[301];
		struct buf fa = BUF_INIT, fb = BUF_INIT;
		memset(a, fill[i], 300);
		a[300] = '\0';
		memcpy(b, a, sizeof(b));
		b[299] = 'z';
		CHECK_INT(escape_name(a, &fa), 0);
		CHECK_INT(escape_name(b, &fb), 0);
		CHECK(usable_file_name(fa.data) && usable_file_name(fb.data));
		CHECK(strcmp(fa.data, fb.data) != 0);
		buf_release(&fa);
		buf_release(&fb);
	}

	/* A lead byte of a UTF-8 character followed by an escaped '/' or '%'
	 * (not UTF-8): the cut keeps the %XX sequence whole (fuzz_escape). */
	static const char *const leads[] = {"\xd0/", "\xe2%", "\xf0\x9f/", "\xff/"};
	for (size_t i = 0; i < sizeof(leads) / sizeof(leads[0]); i++) {
		for (size_t shift = 0; shift < 4; shift++) {
			struct buf n = BUF_INIT, f = BUF_INIT;
			for (size_t k = 0; k < shift; k++)
				buf_addch(&n, 'a');
			while (n.len < 300)
				buf_addstr(&n, leads[i]);
			CHECK_INT(escape_name(n.data, &f), 0);
			const char *h = strstr(f.data, "%~");
			CHECK(h != NULL && f.len <= NAME_MAX_BYTES);
			for (const char *p = f.data; h && p < h; p++)
				if (*p == '%') {
					CHECK(p + 3 <= h &&
					      (!strncmp(p, "%2F", 3) || !strncmp(p, "%25", 3)));
					p += 2;
				}
			buf_release(&n);
			buf_release(&f);
		}
	}

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
