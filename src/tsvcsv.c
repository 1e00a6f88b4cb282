/*
 * tsvcsv - TSV (Excel dialect) to CSV (see tsvcsv.h).
 */
#include "dssfs/tsvcsv.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define CHUNK 65536

enum {
	LINE_START, /* nothing of the current line read yet */
	CELL_START, /* after a tab */
	PLAIN,	    /* in an unquoted cell */
	QUOTED,	    /* in a quoted cell */
	QUOTE_SEEN  /* a quote in a quoted cell: doubled, or the closing one */
};

void tsvcsv_init(struct tsvcsv *c)
{
	c->state = LINE_START;
	c->cr = 0;
	c->first = 1;
	buf_init(&c->cell);
}

void tsvcsv_release(struct tsvcsv *c)
{
	buf_release(&c->cell);
}

/* Writes the cell read and forgets it; `last`: it ends its line. */
static void put_cell(struct tsvcsv *c, int last, struct buf *out)
{
	const char *s = c->cell.data;
	size_t n = c->cell.len;
	/* a line of one empty cell is "": an empty line is no row to most
	 * CSV readers, and at the end of the file it would be nothing */
	int quote = last && !n && c->first;

	for (size_t i = 0; i < n && !quote; i++)
		quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
	if (!quote) {
		buf_add(out, s, n);
	} else {
		buf_addch(out, '"');
		for (size_t i = 0; i < n; i++) {
			if (s[i] == '"')
				buf_addch(out, '"');
			buf_addch(out, s[i]);
		}
		buf_addch(out, '"');
	}
	buf_reset(&c->cell);
}

/* Ends the cell at an unquoted tab or line break ('\t', '\n' or '\r' for
 * "\r\n"). */
static void end_cell(struct tsvcsv *c, char sep, struct buf *out)
{
	put_cell(c, sep != '\t', out);
	if (sep == '\t') {
		buf_addch(out, ',');
		c->state = CELL_START;
		c->first = 0;
	} else {
		buf_addstr(out, sep == '\r' ? "\r\n" : "\n");
		c->state = LINE_START;
		c->first = 1;
	}
}

static void feed_one(struct tsvcsv *c, char ch, struct buf *out)
{
	if (c->cr) { /* an unquoted "\r": a line break only before "\n" */
		c->cr = 0;
		if (ch == '\n') {
			end_cell(c, '\r', out);
			return;
		}
		buf_addch(&c->cell, '\r');
	}
	switch (c->state) {
	case LINE_START:
	case CELL_START:
		if (ch == '"') {
			c->state = QUOTED;
			return;
		}
		c->state = PLAIN;
		/* fall through */
	case PLAIN:
		if (ch == '\t' || ch == '\n')
			end_cell(c, ch, out);
		else if (ch == '\r')
			c->cr = 1;
		else
			buf_addch(&c->cell, ch);
		return;
	case QUOTED:
		if (ch == '"')
			c->state = QUOTE_SEEN;
		else
			buf_addch(&c->cell, ch);
		return;
	case QUOTE_SEEN:
		if (ch == '"') { /* a doubled quote */
			buf_addch(&c->cell, '"');
			c->state = QUOTED;
			return;
		}
		c->state = PLAIN; /* closed: the rest is read as unquoted */
		feed_one(c, ch, out);
		return;
	}
}

void tsvcsv_feed(struct tsvcsv *c, const char *data, size_t len, struct buf *out)
{
	for (size_t i = 0; i < len; i++)
		feed_one(c, data[i], out);
}

void tsvcsv_end(struct tsvcsv *c, struct buf *out)
{
	if (c->cr)
		buf_addch(&c->cell, '\r');
	c->cr = 0;
	if (c->state != LINE_START)
		put_cell(c, 1, out);
	c->state = LINE_START;
	c->first = 1;
}

/* Writes out's bytes at *off (all of them, or -errno) and empties it. */
static int flush_at(int fd, struct buf *out, size_t *off)
{
	for (size_t done = 0; done < out->len;) {
		ssize_t n = pwrite(fd, out->data + done, out->len - done, (off_t)*off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
		*off += (size_t)n;
	}
	buf_reset(out);
	return 0;
}

int tsvcsv_file(int in, size_t len, int out, size_t max, size_t *out_len)
{
	struct tsvcsv c;
	struct buf chunk = BUF_INIT, csv = BUF_INIT;
	size_t off = 0, written = 0;
	int ret = 0;

	tsvcsv_init(&c);
	buf_resize(&chunk, CHUNK);
	while (!ret && off < len) {
		size_t want = len - off < CHUNK ? len - off : CHUNK;
		ssize_t n = pread(in, chunk.data, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
		tsvcsv_feed(&c, chunk.data, (size_t)n, &csv);
		if (off == len)
			tsvcsv_end(&c, &csv);
		if (written + csv.len > max)
			ret = -EFBIG;
		else
			ret = flush_at(out, &csv, &written);
	}
	*out_len = written;
	tsvcsv_release(&c);
	buf_release(&chunk);
	buf_release(&csv);
	return ret;
}
