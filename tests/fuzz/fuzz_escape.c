/*
 * fuzz_escape - object names to file names (escape_name, as the tree engine
 * names every listed object) and to URL segments (url_encode_segment, as
 * pathtab_expand fills endpoint templates).
 *
 * The input is two names separated by the first NUL byte (the second may
 * be empty).  Checked for each name:
 *  - escape_name fails only for the empty name; otherwise the file name is
 *    1 to NAME_MAX_BYTES bytes, has no '/', is not "." or "..", and is the
 *    same every time;
 *  - a file name that is not a hashed long one ("%~" and 16 hex digits at
 *    the end) decodes back to the name (so distinct names give distinct
 *    file names); a hashed one is a prefix of at most 200 bytes of the full
 *    escape, not cut inside a "%XX" sequence or (for UTF-8 names) inside a
 *    character, plus the hash;
 *  - the two names have the same file name only if they are equal;
 *  - the URL segment has only unreserved bytes and %XX, is not "." or "..",
 *    and decodes back to the name.
 */
#include "dssfs/escape.h"
#include "fuzz.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The escape of `name` without the long-name cut: what escape.h specifies. */
static void full_escape(const char *name, struct buf *out)
{
	if (!strcmp(name, ".") || !strcmp(name, "..")) {
		buf_addstr(out, name[1] ? "%2E%2E" : "%2E");
		return;
	}
	for (const char *p = name; *p; p++) {
		if (*p == '%')
			buf_addstr(out, "%25");
		else if (*p == '/')
			buf_addstr(out, "%2F");
		else
			buf_addch(out, *p);
	}
}

/* Decodes %XX sequences; returns 0 on a malformed one. */
static int percent_decode(const char *s, struct buf *out)
{
	for (; *s; s++) {
		if (*s != '%') {
			buf_addch(out, *s);
			continue;
		}
		int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);
		if (hi < 0 || lo < 0)
			return 0;
		buf_addch(out, (char)(hi * 16 + lo));
		s += 2;
	}
	return 1;
}

/* Whether s is well-formed UTF-8 (structure only: lead and continuation
 * bytes). */
static int utf8_shaped(const unsigned char *s)
{
	while (*s) {
		size_t n = *s < 0x80   ? 1
			   : *s < 0xC0 ? 0
			   : *s < 0xE0 ? 2
			   : *s < 0xF0 ? 3
			   : *s < 0xF8 ? 4
				       : 0;
		if (!n)
			return 0;
		for (size_t k = 1; k < n; k++)
			if ((s[k] & 0xC0) != 0x80)
				return 0;
		s += n;
	}
	return 1;
}

static int is_hashed(const char *f, size_t len)
{
	if (len < 18 || memcmp(f + len - 18, "%~", 2))
		return 0;
	for (size_t i = len - 16; i < len; i++)
		if (!strchr("0123456789abcdef", f[i]))
			return 0;
	return 1;
}

static void check_file_name(const char *name, const struct buf *f)
{
	struct buf again = BUF_INIT, full = BUF_INIT, dec = BUF_INIT;

	REQUIRE(f->len >= 1 && f->len <= NAME_MAX_BYTES && strlen(f->data) == f->len);
	REQUIRE(!strchr(f->data, '/'));
	REQUIRE(strcmp(f->data, ".") && strcmp(f->data, ".."));
	REQUIRE(escape_name(name, &again) == 0 && !strcmp(again.data, f->data));
	full_escape(name, &full);
	if (full.len <= NAME_MAX_BYTES) {
		REQUIRE(!strcmp(f->data, full.data));
		REQUIRE(percent_decode(f->data, &dec) && !strcmp(dec.data, name));
	} else {
		size_t cut = f->len - 18;
		REQUIRE(is_hashed(f->data, f->len));
		REQUIRE(cut <= 200 && !memcmp(f->data, full.data, cut));
		/* not inside a %XX sequence */
		REQUIRE(!(cut >= 1 && f->data[cut - 1] == '%') &&
			!(cut >= 2 && f->data[cut - 2] == '%'));
		/* nor inside a UTF-8 character */
		if (utf8_shaped((const unsigned char *)name))
			REQUIRE(((unsigned char)full.data[cut] & 0xC0) != 0x80);
		char hex[17];
		snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)hash64(name));
		REQUIRE(!strcmp(f->data + cut + 2, hex));
	}
	buf_release(&again);
	buf_release(&full);
	buf_release(&dec);
}

static void check_url_segment(const char *name)
{
	struct buf u = BUF_INIT, dec = BUF_INIT;

	url_encode_segment(name, &u);
	REQUIRE(strcmp(u.data, ".") && strcmp(u.data, ".."));
	for (const char *p = u.data; *p; p++) {
		if (*p == '%') {
			REQUIRE(hexval(p[1]) >= 0 && hexval(p[2]) >= 0);
			p += 2;
			continue;
		}
		REQUIRE((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || strchr("-._~", *p));
	}
	REQUIRE(percent_decode(u.data, &dec) && !strcmp(dec.data, name));
	buf_release(&u);
	buf_release(&dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = xmalloc(size + 2);
	struct buf fa = BUF_INIT, fb = BUF_INIT;

	memcpy(in, data, size);
	in[size] = in[size + 1] = '\0';
	const char *a = in, *b = in + strlen(in) + 1;
	if (b > in + size)
		b = in + size + 1; /* no NUL in the input: b is empty */

	int ra = escape_name(a, &fa), rb = escape_name(b, &fb);
	REQUIRE(ra == (*a ? 0 : -EINVAL) && rb == (*b ? 0 : -EINVAL));
	if (!ra)
		check_file_name(a, &fa);
	if (!rb)
		check_file_name(b, &fb);
	if (!ra && !rb)
		REQUIRE(!strcmp(fa.data, fb.data) == !strcmp(a, b));
	check_url_segment(a);
	check_url_segment(b);
	buf_release(&fa);
	buf_release(&fb);
	free(in);
	return 0;
}
