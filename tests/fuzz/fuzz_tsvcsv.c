/*
 * fuzz_tsvcsv - a dataset's rows as DSS sends them (TSV, Excel dialect) to
 * the CSV of data.csv (src/tsvcsv.c), on any bytes a server may send.
 *
 * The input's first byte picks where the TSV (the rest) is cut in two
 * feeds.  Checked:
 *  - the CSV is the same whether the TSV comes in one feed or two, and
 *    through tsvcsv_file (a file in, a file out), which fails with EFBIG,
 *    writing nothing beyond the bound, when the bound is one byte short;
 *  - the CSV is strict RFC 4180 (a field with a comma, a quote, CR or LF is
 *    quoted, its quotes doubled; nothing follows a closing quote but a
 *    comma or a line break) and holds exactly the cells of the TSV, read
 *    here by a second reader of tsvcsv.h's rules: a cell that starts with
 *    a quote is quoted (quotes doubled) up to its closing quote, any text
 *    after which joins the cell; cells end at a tab, lines at "\n" or
 *    "\r\n" outside quotes; the end of the input ends what was started.
 */
#include "dssfs/buf.h"
#include "dssfs/tsvcsv.h"
#include "fuzz.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Cells as one string: each cell's bytes then 0x1F, each line then 0x1E
 * (escaped when in a cell: 0x1D then the byte). */
static void add_cell_byte(struct buf *t, char ch)
{
	if (ch == 0x1D || ch == 0x1E || ch == 0x1F)
		buf_addch(t, 0x1D);
	buf_addch(t, ch);
}

/* The TSV's cells, by tsvcsv.h's rules. */
static void tsv_cells(const char *s, size_t n, struct buf *t)
{
	size_t i = 0;

	while (i < n) {	   /* a line */
		for (;;) { /* a cell */
			if (i < n && s[i] == '"') {
				for (i++; i < n; i++) {
					if (s[i] != '"') {
						add_cell_byte(t, s[i]);
					} else if (i + 1 < n && s[i + 1] == '"') {
						add_cell_byte(t, '"');
						i++;
					} else {
						i++;
						break;
					}
				}
			}
			while (i < n && s[i] != '\t' && s[i] != '\n' &&
			       !(s[i] == '\r' && i + 1 < n && s[i + 1] == '\n'))
				add_cell_byte(t, s[i++]);
			buf_addch(t, 0x1F);
			if (i < n && s[i] == '\t') {
				i++;
				continue; /* (a tab at the end starts an empty cell) */
			}
			break;
		}
		buf_addch(t, 0x1E);
		if (i < n)
			i += s[i] == '\r' ? 2 : 1;
	}
}

/* The CSV's cells, or -1 if it is not strict RFC 4180. */
static int csv_cells(const char *s, size_t n, struct buf *t)
{
	size_t i = 0;

	while (i < n) {
		for (;;) {
			if (i < n && s[i] == '"') {
				for (i++;; i++) {
					if (i >= n)
						return -1; /* not closed */
					if (s[i] == '"' && i + 1 < n && s[i + 1] == '"') {
						add_cell_byte(t, '"');
						i++;
					} else if (s[i] == '"') {
						i++;
						break;
					} else {
						add_cell_byte(t, s[i]);
					}
				}
			} else {
				for (; i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r'; i++) {
					if (s[i] == '"')
						return -1; /* a quote in an unquoted field */
					add_cell_byte(t, s[i]);
				}
				if (i < n && s[i] == '\r' && !(i + 1 < n && s[i + 1] == '\n'))
					return -1; /* a bare CR unquoted */
			}
			buf_addch(t, 0x1F);
			if (i < n && s[i] == ',') {
				i++;
				continue;
			}
			if (i < n && s[i] != '\n' && s[i] != '\r')
				return -1; /* text after a closing quote */
			break;
		}
		buf_addch(t, 0x1E);
		if (i < n)
			i += s[i] == '\r' ? 2 : 1;
	}
	return 0;
}

static void convert(const char *s, size_t n, size_t cut, struct buf *out)
{
	struct tsvcsv c;

	tsvcsv_init(&c);
	tsvcsv_feed(&c, s, cut, out);
	tsvcsv_feed(&c, s + cut, n - cut, out);
	tsvcsv_end(&c, out);
	tsvcsv_release(&c);
}

/* tsvcsv_file on the TSV, bounded by max: its result, the CSV in *out. */
static int convert_file(const char *s, size_t n, size_t max, struct buf *out)
{
	int in = memfd_create("tsv", 0), to = memfd_create("csv", 0);
	size_t len = 0;
	int ret;

	REQUIRE(in >= 0 && to >= 0);
	REQUIRE(write(in, s, n) == (ssize_t)n);
	ret = tsvcsv_file(in, n, to, max, &len);
	REQUIRE(len <= max);
	buf_resize(out, len);
	REQUIRE(pread(to, out->data, len, 0) == (ssize_t)len);
	close(in);
	close(to);
	return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	const char *s = (const char *)data + 1;
	size_t n = size - 1, cut = n ? data[0] % (n + 1) : 0;
	struct buf whole = BUF_INIT, split = BUF_INIT, file = BUF_INIT;
	struct buf want = BUF_INIT, got = BUF_INIT;

	convert(s, n, n, &whole);
	convert(s, n, cut, &split);
	REQUIRE(whole.len == split.len && !memcmp(whole.data, split.data, whole.len));

	REQUIRE(convert_file(s, n, whole.len, &file) == 0);
	REQUIRE(file.len == whole.len && !memcmp(file.data, whole.data, whole.len));
	if (whole.len) {
		buf_reset(&file);
		REQUIRE(convert_file(s, n, whole.len - 1, &file) == -EFBIG);
		REQUIRE(!memcmp(file.data, whole.data, file.len));
	}

	tsv_cells(s, n, &want);
	REQUIRE(csv_cells(whole.data, whole.len, &got) == 0);
	REQUIRE(want.len == got.len && !memcmp(want.data, got.data, want.len));

	buf_release(&whole);
	buf_release(&split);
	buf_release(&file);
	buf_release(&want);
	buf_release(&got);
	return 0;
}
