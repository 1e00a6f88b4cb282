#include "check.h"
#include "dssfs/scratch.h"

#include <errno.h>

static char listed[8][64];
static int nlisted;

static void collect(const char *name, void *ctx)
{
	(void)ctx;
	if (nlisted < 8)
		snprintf(listed[nlisted++], sizeof(listed[0]), "%s", name);
}

static int has(const char *name)
{
	for (int i = 0; i < nlisted; i++)
		if (!strcmp(listed[i], name))
			return 1;
	return 0;
}

int main(void)
{
	struct scratch *s = scratch_new(100);
	struct scratch_attr a;
	struct buf b = BUF_INIT;

	/* vim's probe: create exclusively, stat, unlink. */
	CHECK_INT(scratch_create(s, "/P/recipes/r/4913", 0600, 1000), 0);
	CHECK_INT(scratch_create(s, "/P/recipes/r/4913", 0600, 1000), -EEXIST);
	CHECK_INT(scratch_stat(s, "/P/recipes/r/4913", &a), 0);
	CHECK_INT(a.size, 0);
	CHECK_INT(a.mode, 0600);
	CHECK_INT(a.mtime_ms, 1000);
	CHECK_INT(scratch_unlink(s, "/P/recipes/r/4913"), 0);
	CHECK_INT(scratch_stat(s, "/P/recipes/r/4913", &a), -ENOENT);
	CHECK_INT(scratch_unlink(s, "/P/recipes/r/4913"), -ENOENT);

	/* Content, the bound, and what a failed store leaves. */
	CHECK_INT(scratch_create(s, "/P/a.swp", 0644, 0), 0);
	CHECK_INT(scratch_store(s, "/P/a.swp", "hello", 5, 2000), 0);
	CHECK_INT(scratch_read(s, "/P/a.swp", &b), 0);
	CHECK_STR(b.data, "hello");
	char big[101];
	memset(big, 'x', sizeof(big));
	CHECK_INT(scratch_store(s, "/P/a.swp", big, 101, 3000), -ENOSPC);
	CHECK_INT(scratch_store(s, "/P/a.swp", big, 100, 3000), 0);
	CHECK_INT(scratch_bytes(s), 100);
	CHECK_INT(scratch_create(s, "/P/b", 0644, 0), 0);
	CHECK_INT(scratch_store(s, "/P/b", "y", 1, 0), -ENOSPC);
	CHECK_INT(scratch_store(s, "/P/a.swp", "short", 5, 4000), 0);
	CHECK_INT(scratch_store(s, "/P/b", "y", 1, 0), 0);
	CHECK_INT(scratch_bytes(s), 6);
	CHECK_INT(scratch_store(s, "/P/none", "y", 1, 0), -ENOENT);

	/* rename replaces the target and frees its bytes. */
	CHECK_INT(scratch_rename(s, "/P/b", "/P/a.swp"), 0);
	CHECK_INT(scratch_bytes(s), 1);
	buf_reset(&b);
	CHECK_INT(scratch_read(s, "/P/a.swp", &b), 0);
	CHECK_STR(b.data, "y");
	CHECK_INT(scratch_stat(s, "/P/b", &a), -ENOENT);
	CHECK_INT(scratch_rename(s, "/P/b", "/P/c"), -ENOENT);
	CHECK_INT(scratch_rename(s, "/P/a.swp", "/P/a.swp"), 0);

	/* mode and mtime */
	CHECK_INT(scratch_set(s, "/P/a.swp", 0755, 5000), 0);
	CHECK_INT(scratch_stat(s, "/P/a.swp", &a), 0);
	CHECK_INT(a.mode, 0755);
	CHECK_INT(a.mtime_ms, 5000);
	CHECK_INT(scratch_set(s, "/P/a.swp", (mode_t)-1, -1), 0);
	CHECK_INT(scratch_stat(s, "/P/a.swp", &a), 0);
	CHECK_INT(a.mode, 0755);

	/* Listing: direct children only; the root is "/". */
	CHECK_INT(scratch_create(s, "/P/recipes/r/x~", 0644, 0), 0);
	CHECK_INT(scratch_create(s, "/top", 0644, 0), 0);
	nlisted = 0;
	scratch_list(s, "/P", collect, NULL);
	CHECK_INT(nlisted, 1);
	CHECK(has("a.swp"));
	nlisted = 0;
	scratch_list(s, "/P/recipes/r", collect, NULL);
	CHECK_INT(nlisted, 1);
	CHECK(has("x~"));
	nlisted = 0;
	scratch_list(s, "/", collect, NULL);
	CHECK_INT(nlisted, 1);
	CHECK(has("top"));
	nlisted = 0;
	scratch_list(s, "/P/rec", collect, NULL);
	CHECK_INT(nlisted, 0);

	/* The buffer operations handles use. */
	struct buf h = BUF_INIT;
	buf_write_at(&h, 0, "abc", 3);
	buf_write_at(&h, 5, "z", 1);
	CHECK_INT(h.len, 6);
	CHECK(!memcmp(h.data, "abc\0\0z", 6));
	buf_write_at(&h, 1, "XY", 2);
	CHECK(!memcmp(h.data, "aXY\0\0z", 6));
	buf_resize(&h, 2);
	CHECK_STR(h.data, "aX");
	buf_resize(&h, 4);
	CHECK_INT(h.len, 4);
	CHECK(!memcmp(h.data, "aX\0\0", 5));
	buf_resize(&h, 0);
	CHECK_INT(h.len, 0);
	buf_write_at(&h, 0, "", 0);
	CHECK_INT(h.len, 0);

	buf_release(&h);
	buf_release(&b);
	scratch_free(s);
	CHECK_DONE();
}
