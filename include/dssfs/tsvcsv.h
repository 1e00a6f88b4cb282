/*
 * tsvcsv - TSV in DSS's "tsv-excel" dialect to CSV, as a stream.
 *
 * DSS sends a dataset's rows as TSV (format tsv-excel-header): cells
 * separated by tabs, lines by "\n" (or "\r\n"), a cell holding a tab, a
 * quote or a line break enclosed in double quotes with its quotes doubled.
 * The CSV written is the same table in the Excel dialect (RFC 4180 quoting):
 * cells separated by commas, a cell quoted (quotes doubled) when it holds a
 * comma, a quote, "\r" or "\n", or when it is the only cell of its line
 * and empty (an empty line is no row to most CSV readers); every other
 * cell, and every line break between lines, exactly as read.  A quote
 * inside an unquoted cell is a character of the cell; text after a closing
 * quote is added to the cell.
 *
 * Memory: one cell at a time (a cell is at most what was fed).  Not
 * thread-safe: one converter per stream.
 */
#ifndef DSSFS_TSVCSV_H
#define DSSFS_TSVCSV_H

#include <stddef.h>

#include "dssfs/buf.h"

struct tsvcsv {
	int state; /* where the reader is in a cell (tsvcsv.c) */
	int cr;	   /* an unquoted "\r" not yet known to end a line */
	int first; /* the cell being read is its line's first */
	struct buf cell;
};

void tsvcsv_init(struct tsvcsv *c);
void tsvcsv_release(struct tsvcsv *c);

/* Converts the next len bytes of the TSV, appending the CSV of every cell
 * they complete to out. */
void tsvcsv_feed(struct tsvcsv *c, const char *data, size_t len, struct buf *out);

/* The end of the TSV: appends the last cell, if a line was not ended. */
void tsvcsv_end(struct tsvcsv *c, struct buf *out);

/* Converts the first len bytes of file `in` (read with pread) into file
 * `out` (written from offset 0), 64 KiB at a time: at most `max` bytes of
 * CSV (-EFBIG beyond), *out_len its length.  0 or -errno. */
int tsvcsv_file(int in, size_t len, int out, size_t max, size_t *out_len);

#endif
