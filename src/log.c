#include "dssfs/log.h"
#include "dssfs/buf.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

static const char *const level_names[] = {"error", "warning", "info", "debug"};
static atomic_int max_level = LOG_LVL_INFO;
static atomic_int to_syslog, to_journal;
static _Thread_local int quiet;

/* The last error, for the service manager's STATUS= (service.h). */
#define LAST_ERROR_MAX 512
static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[LAST_ERROR_MAX];
static unsigned long errors_logged;

void log_thread_quiet(int on)
{
	quiet = on;
}

void log_set_level(enum log_level max)
{
	max_level = max;
}

int log_parse_level(const char *name, enum log_level *lvl)
{
	for (int i = LOG_LVL_ERROR; i <= LOG_LVL_DEBUG; i++) {
		if (name && !strcmp(name, level_names[i])) {
			*lvl = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_use_syslog(int on)
{
	if (on)
		openlog("dssfs", LOG_PID, LOG_DAEMON);
	to_syslog = on;
}

void log_detect_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char end;

	if (!js || sscanf(js, "%llu:%llu%c", &dev, &ino, &end) != 2)
		return;
	/* Only stderr itself: a program started from a unit's shell may have
	 * inherited the variable with stderr sent elsewhere. */
	if (fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino)
		to_journal = 1;
}

int log_enabled(enum log_level lvl)
{
	return (int)lvl <= max_level;
}

unsigned long log_last_error(char *out, size_t size)
{
	unsigned long n;

	pthread_mutex_lock(&last_lock);
	n = errors_logged;
	if (size)
		snprintf(out, size, "%s", last_error);
	pthread_mutex_unlock(&last_lock);
	return n;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	struct buf b = BUF_INIT;
	va_list ap;

	if (quiet && lvl < LOG_LVL_DEBUG)
		lvl = LOG_LVL_DEBUG;
	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	buf_vaddf(&b, fmt, ap);
	va_end(ap);
	if (lvl == LOG_LVL_ERROR) {
		pthread_mutex_lock(&last_lock);
		snprintf(last_error, sizeof(last_error), "%s", b.data);
		errors_logged++;
		pthread_mutex_unlock(&last_lock);
	}
	if (to_syslog) {
		syslog(prio[lvl], "%s", b.data);
	} else {
		buf_addch(&b, '\n');
		/* One write(2) per line keeps lines from threads whole. */
		struct buf line = BUF_INIT;
		if (to_journal)
			buf_addf(&line, "<%d>", prio[lvl]);
		buf_addf(&line, "dssfs: %s: %s", level_names[lvl], b.data);
		ssize_t r = write(STDERR_FILENO, line.data, line.len);
		(void)r;
		buf_release(&line);
	}
	buf_release(&b);
}
