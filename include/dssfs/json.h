/*
 * json - deterministic rendering of JSON documents, and field access.
 *
 * Every JSON file dssfs shows is json_render() of a server object: the same
 * object always gives the same bytes.  Layout: two-space indentation, one
 * member or element per line, "key": value, empty containers as {} and [],
 * the server's key order, a trailing newline.  Strings are written as UTF-8
 * with only '"', '\\' and control characters escaped.  Numbers: integers
 * (|x| < 2^53) without a fraction or exponent; other numbers with the
 * shortest %g form that reads back to the same double.  (cJSON keeps numbers
 * as doubles, so "1.0" reads back as 1 and integers beyond 2^53 lose
 * precision; DSS's own values - epoch-ms timestamps, counters - fit.
 * Numbers beyond the range of a double, such as 1e400, render as null: the
 * documents dssfs shows keep such numbers as marked strings, see
 * MARK_NUMBER in resource.c.)
 * Rendering is idempotent: parsing a rendering and rendering it again gives
 * the same bytes.
 *
 * Thread-safe: pure functions over caller-owned trees.
 */
#ifndef DSSFS_JSON_H
#define DSSFS_JSON_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "dssfs/buf.h"

/* Appends the rendering of `item` plus a final newline to out. */
void json_render(const cJSON *item, struct buf *out);

/* Appends s as a JSON string (quoted, escaped as above). */
void json_render_string(const char *s, struct buf *out);

/* Follows a dotted path ("recipe.versionTag") from root.  NULL or "" returns
 * root itself.  Returns NULL if a step is missing or not an object. */
const cJSON *json_get(const cJSON *root, const char *path);

/* Reads an integer field at a dotted path; returns `def` if it is missing or
 * not a number. */
int64_t json_get_int64(const cJSON *root, const char *path, int64_t def);

/* Returns the string at a dotted path, or NULL. */
const char *json_get_string(const cJSON *root, const char *path);

#endif
