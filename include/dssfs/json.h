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

/* Called by json_scan_list for each item of the list, in order: `key` is
 * the member's name when the list is an object, NULL in an array; `item`
 * is the item alone, parsed by cJSON (both freed when fn returns).  A
 * nonzero return stops the scan and is returned by it. */
typedef int (*json_item_fn)(const char *key, const cJSON *item, void *ctx);

/* Reads the list at the dotted path `at` (json_get's) of a JSON text
 * without building its whole tree: each item is parsed by cJSON on its own
 * (so only one item's tree exists at a time) and handed to fn, the
 * structure around the items is read here with cJSON's own rules (a UTF-8
 * BOM first, any byte up to 32 as space, its nesting limit).  Returns 0 when
 * the text is one JSON document as cJSON_ParseWithLengthOpts reads it,
 * followed by nothing but ' ', '\t', '\n' or '\r', and json_get(document,
 * at) is an array or an object whose items fn was given, in order.
 * Otherwise returns -EINVAL (or fn's nonzero value), possibly after fn was
 * called for some items: the caller then holds nothing it collected, and
 * parses the whole text to report what is wrong.  -EINVAL may also come
 * from a document cJSON would accept (a list nested near cJSON's limit, a
 * BOM where an item starts: never from a document DSS sends), never the
 * reverse.  text needs no NUL terminator (len bytes are read, no more).
 * Thread-safe. */
int json_scan_list(const char *text, size_t len, const char *at, json_item_fn fn, void *ctx);

#endif
