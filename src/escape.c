#include "dssfs/escape.h"

#include <errno.h>
#include <string.h>

uint64_t hash64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Longest prefix of the escaped name kept before a hash suffix: at most
 * `limit` bytes, not splitting a "%XX" sequence or a UTF-8 character.  A
 * character is its lead byte and the continuation bytes that follow it:
 * in a name that is not UTF-8 a lead byte may be followed by fewer, or by
 * a "%XX" sequence, which must not be taken as part of the character. */
static size_t cut_point(const char *s, size_t len, size_t limit)
{
	size_t i = 0, last = 0;

	while (i < len) {
		unsigned char c = (unsigned char)s[i];
		size_t step = 1, want = c >= 0xF8   ? 1
					: c >= 0xF0 ? 4
					: c >= 0xE0 ? 3
					: c >= 0xC0 ? 2
						    : 1;

		if (c == '%')
			step = 3;
		else
			while (step < want && i + step < len &&
			       ((unsigned char)s[i + step] & 0xC0) == 0x80)
				step++;
		if (i + step > limit || i + step > len)
			break;
		i += step;
		last = i;
	}
	return last;
}

int escape_name(const char *name, struct buf *out)
{
	struct buf e = BUF_INIT;

	if (!*name)
		return -EINVAL;
	if (!strcmp(name, ".")) {
		buf_addstr(out, "%2E");
		return 0;
	}
	if (!strcmp(name, "..")) {
		buf_addstr(out, "%2E%2E");
		return 0;
	}
	for (const char *p = name; *p; p++) {
		if (*p == '%')
			buf_addstr(&e, "%25");
		else if (*p == '/')
			buf_addstr(&e, "%2F");
		else
			buf_addch(&e, *p);
	}
	if (e.len > NAME_MAX_BYTES) {
		size_t cut = cut_point(e.data, e.len, 200);
		buf_setlen(&e, cut);
		buf_addf(&e, "%%~%016llx", (unsigned long long)hash64(name));
	}
	buf_add(out, e.data, e.len);
	buf_release(&e);
	return 0;
}

void url_encode_segment(const char *seg, struct buf *out)
{
	static const char hex[] = "0123456789ABCDEF";

	/* "." and ".." would be removed from the path as dot segments. */
	if (!strcmp(seg, ".") || !strcmp(seg, "..")) {
		buf_addstr(out, seg[1] ? "%2E%2E" : "%2E");
		return;
	}
	for (const unsigned char *p = (const unsigned char *)seg; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			buf_addch(out, (char)*p);
		} else {
			buf_addch(out, '%');
			buf_addch(out, hex[*p >> 4]);
			buf_addch(out, hex[*p & 15]);
		}
	}
}

int base64_decode(const char *in, size_t len, struct buf *out)
{
	unsigned acc = 0;
	int bits = 0, pad = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		int v;
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '+' || c == '-')
			v = 62;
		else if (c == '/' || c == '_')
			v = 63;
		else if (c == '=') {
			pad++;
			continue;
		} else if (c == '\n' || c == '\r' || c == ' ' || c == '\t')
			continue;
		else
			return -EINVAL;
		if (pad) /* data after padding */
			return -EINVAL;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf_addch(out, (char)((acc >> bits) & 0xff));
		}
	}
	/* What is left must be the zero bits of a final, partial group. */
	if (bits >= 6 || (acc & ((1u << bits) - 1)) || pad > 2)
		return -EINVAL;
	return 0;
}
