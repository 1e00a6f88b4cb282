#include "check.h"
#include "dssfs/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_parse_level(void)
{
	static const struct {
		const char *name;
		int ret;
		enum log_level want;
	} rows[] = {
	    {"error", 0, LOG_LVL_ERROR},
	    {"warning", 0, LOG_LVL_WARN},
	    {"info", 0, LOG_LVL_INFO},
	    {"debug", 0, LOG_LVL_DEBUG},
	    {"warn", -EINVAL, 0},
	    {"INFO", -EINVAL, 0},
	    {"", -EINVAL, 0},
	    {"debug ", -EINVAL, 0},
	    {NULL, -EINVAL, 0},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		enum log_level lvl = (enum log_level)99;
		CHECK_INT(log_parse_level(rows[i].name, &lvl), rows[i].ret);
		CHECK_INT(lvl, rows[i].ret ? 99 : (int)rows[i].want);
	}
}

/* Sends stderr to a temporary file; returns the file's descriptor. */
static int capture_stderr(char *path, int *saved)
{
	int fd = mkstemp(path);
	*saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	return fd;
}

static void read_all(const char *path, char *out, size_t size)
{
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(out, 1, size - 1, f) : 0;
	out[n] = '\0';
	if (f)
		fclose(f);
}

/* The level filter, the last error (of the shown errors only: a quiet
 * thread's error is a debug message), and the journal's priority prefix,
 * only when JOURNAL_STREAM names stderr itself. */
static void test_output_and_last_error(void)
{
	char path[] = "/tmp/dssfs-test-log-XXXXXX", text[4096], last[16];
	int saved, fd = capture_stderr(path, &saved);
	struct stat st;
	char js[64];

	CHECK_INT(log_last_error(last, sizeof(last)), 0);
	CHECK_STR(last, "");
	log_set_level(LOG_LVL_WARN);
	log_info("hidden info");
	log_warn("shown %s", "warning");
	log_error("first error");
	log_thread_quiet(1);
	log_error("quiet error");
	log_thread_quiet(0);
	CHECK_INT(log_last_error(last, sizeof(last)), 1);
	CHECK_STR(last, "first error");
	log_error("a second error, longer than last[]");
	CHECK_INT(log_last_error(last, sizeof(last)), 2);
	CHECK_STR(last, "a second error,");

	setenv("JOURNAL_STREAM", "1:2", 1); /* not stderr */
	log_detect_journal();
	log_warn("no prefix");
	fstat(fd, &st);
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	log_detect_journal();
	log_set_level(LOG_LVL_DEBUG);
	log_debug("debug %d", 7);
	log_error("err");

	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fd);
	read_all(path, text, sizeof(text));
	unlink(path);
	CHECK_STR(text, "dssfs: warning: shown warning\n"
			"dssfs: error: first error\n"
			"dssfs: error: a second error, longer than last[]\n"
			"dssfs: warning: no prefix\n"
			"<7>dssfs: debug: debug 7\n"
			"<3>dssfs: error: err\n");
}

int main(void)
{
	test_parse_level();
	test_output_and_last_error();
	CHECK_DONE();
}
