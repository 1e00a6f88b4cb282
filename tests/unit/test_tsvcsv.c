#include "check.h"
#include "dssfs/tsvcsv.h"

#include <string.h>

static const struct {
	const char *tsv, *csv;
} cases[] = {
    {"", ""},
    {"a\tb\n", "a,b\n"},
    {"a\tb", "a,b"},
    /* an empty line is a row of one empty cell: "" (an empty line is no
     * row to most CSV readers; at the end, it would be nothing) */
    {"a\t\tb\n\n", "a,,b\n\"\"\n"},
    {"a\n\"\"", "a\n\"\""},
    {"a\n\"", "a\n\"\""},
    {"\t\n", ",\n"},
    {"id\tname\n1\tx,y\n", "id,name\n1,\"x,y\"\n"},
    /* quoted cells: a tab, a doubled quote, a line break */
    {"\"a\tb\"\tc\n", "a\tb,c\n"},
    {"\"say \"\"hi\"\"\"\t2\n", "\"say \"\"hi\"\"\",2\n"},
    {"\"two\nlines\"\t3\n", "\"two\nlines\",3\n"},
    {"\"\"\tx\n", ",x\n"},
    /* a quote inside an unquoted cell is a character of it */
    {"5\"\tin\n", "\"5\"\"\",in\n"},
    /* text after a closing quote joins the cell */
    {"\"a\"b\tc\n", "ab,c\n"},
    /* CRLF lines stay CRLF; a lone CR is a character of its cell */
    {"a\tb\r\nc\td\r\n", "a,b\r\nc,d\r\n"},
    {"a\rb\tc\n", "\"a\rb\",c\n"},
    {"a\r", "\"a\r\""},
    {"é\t\"ü\"\"\"\n", "é,\"ü\"\"\"\n"},
};

/* Converts tsv fed in pieces of `step` bytes. */
static void convert(const char *tsv, size_t step, struct buf *out)
{
	struct tsvcsv c;
	size_t len = strlen(tsv);

	tsvcsv_init(&c);
	for (size_t i = 0; i < len; i += step)
		tsvcsv_feed(&c, tsv + i, len - i < step ? len - i : step, out);
	tsvcsv_end(&c, out);
	tsvcsv_release(&c);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* whole, and byte by byte (a chunk may end anywhere) */
		for (size_t step = 1; step <= 64; step *= 64) {
			struct buf out = BUF_INIT;
			convert(cases[i].tsv, step, &out);
			CHECK_STR(out.len ? out.data : "", cases[i].csv);
			buf_release(&out);
		}
	}
	CHECK_DONE();
}
