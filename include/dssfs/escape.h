/*
 * escape - object names <-> file names, and path segments in URLs.
 *
 * DSS object names are arbitrary strings; file names may not contain '/' or
 * NUL, may not be "." or "..", and are at most 255 bytes.  dssfs shows an
 * object named N under the file name escape_name(N):
 *
 *   '%'  -> "%25"     '/' -> "%2F"
 *   "."  -> "%2E"     ".." -> "%2E%2E"
 *   everything else unchanged (UTF-8 passes through).
 *
 * If the result is longer than NAME_MAX_BYTES it is cut at a character
 * boundary to at most 200 bytes and "%~" plus 16 hex digits of a hash of the
 * full object name are appended, so it is unique and stable.  dssfs never
 * decodes a file name: it resolves one by comparing it with the escaped
 * names of the listed objects, so long names work too.  Distinct object
 * names have distinct file names (for long ones, unless their 64-bit hashes
 * collide).  A name escaped this way never contains '/' and is never "." or
 * "..", so a name sent by the server cannot leave its directory.
 *
 * All functions are pure and thread-safe.
 */
#ifndef DSSFS_ESCAPE_H
#define DSSFS_ESCAPE_H

#include <stdint.h>

#include "dssfs/buf.h"

#define NAME_MAX_BYTES 255

/* Appends the file name for object name `name` to out.  Returns 0, or
 * -EINVAL for an empty name (nothing can address it). */
int escape_name(const char *name, struct buf *out);

/* Appends `seg` percent-encoded for use as one URL path segment: every byte
 * outside RFC 3986's unreserved set (A-Z a-z 0-9 - . _ ~) becomes %XX, and
 * so do the dots of a segment "." or "..", which would otherwise be removed
 * from the path as dot segments. */
void url_encode_segment(const char *seg, struct buf *out);

/* Appends the bytes of base64 text (standard or URL alphabet, padding and
 * line breaks optional) to out.  Returns 0, or -EINVAL for anything else. */
int base64_decode(const char *in, size_t len, struct buf *out);

/* 64-bit FNV-1a hash of a NUL-terminated string. */
uint64_t hash64(const char *s);

#endif
