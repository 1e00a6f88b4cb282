#include "check.h"
#include "dssfs/buf.h"

#include <stdlib.h>

int main(void)
{
	struct buf b = BUF_INIT;

	CHECK_INT(b.len, 0);
	CHECK_STR(b.data, "");
	buf_addstr(&b, "abc");
	buf_addch(&b, 'd');
	buf_addf(&b, "-%d-%s", 42, "x");
	CHECK_STR(b.data, "abcd-42-x");
	CHECK_INT(b.len, 9);

	/* Growth across many doublings keeps content and the NUL. */
	buf_reset(&b);
	for (int i = 0; i < 10000; i++)
		buf_addch(&b, (char)('a' + i % 26));
	CHECK_INT(b.len, 10000);
	CHECK_INT(b.data[10000], 0);
	CHECK_INT(b.data[9999], 'a' + 9999 % 26);

	/* A long formatted string (beyond the first guess of vsnprintf). */
	buf_reset(&b);
	char big[300];
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	buf_addf(&b, "<%s>", big);
	CHECK_INT(b.len, 301);
	CHECK_INT(b.data[0], '<');
	CHECK_INT(b.data[300], '>');

	buf_setlen(&b, 1);
	CHECK_STR(b.data, "<");

	size_t len;
	char *p = buf_detach(&b, &len);
	CHECK_STR(p, "<");
	CHECK_INT(len, 1);
	CHECK_INT(b.len, 0);
	free(p);

	/* Detaching an empty buffer still gives a free()-able string. */
	p = buf_detach(&b, NULL);
	CHECK_STR(p, "");
	free(p);

	char *s = xasprintf("%s=%d", "k", 7);
	CHECK_STR(s, "k=7");
	free(s);
	buf_release(&b);
	buf_release(&b); /* release twice is safe */
	CHECK_DONE();
}
