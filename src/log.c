#include "dssfs/log.h"
#include "dssfs/buf.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <syslog.h>
#include <unistd.h>

static atomic_int max_level = LOG_LVL_INFO;
static atomic_int to_syslog;
static _Thread_local int quiet;

void log_thread_quiet(int on)
{
	quiet = on;
}

void log_set_level(enum log_level max)
{
	max_level = max;
}

void log_use_syslog(int on)
{
	if (on)
		openlog("dssfs", LOG_PID, LOG_DAEMON);
	to_syslog = on;
}

int log_enabled(enum log_level lvl)
{
	return (int)lvl <= max_level;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warning", "info", "debug"};
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
	if (to_syslog) {
		syslog(prio[lvl], "%s", b.data);
	} else {
		buf_addch(&b, '\n');
		/* One write(2) per line keeps lines from threads whole. */
		struct buf line = BUF_INIT;
		buf_addf(&line, "dssfs: %s: %s", names[lvl], b.data);
		ssize_t r = write(STDERR_FILENO, line.data, line.len);
		(void)r;
		buf_release(&line);
	}
	buf_release(&b);
}
