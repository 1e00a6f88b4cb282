/*
 * log - the daemon's log.
 *
 * Messages go to stderr while the daemon runs in the foreground, to syslog
 * (ident "dssfs", with the pid, facility daemon; journald keeps them) once
 * it has daemonised.  When stderr is the journal (systemd's JOURNAL_STREAM
 * names it, as under the dssfs@.service unit), each line starts with the
 * syslog priority in the journal's "<N>" form, so that `journalctl -p`
 * filters dssfs's lines.  Every function is thread-safe; a message is
 * written in one call so lines from several threads never mix.
 *
 * Never pass the API key, an Authorization header or a URL carrying
 * credentials to these functions: nothing here can filter them out.
 */
#ifndef DSSFS_LOG_H
#define DSSFS_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Messages above `max` are dropped.  Default: LOG_LVL_INFO. */
void log_set_level(enum log_level max);
/* The level `name` names ("error", "warning", "info", "debug") in *lvl.
 * Returns 0, or -EINVAL for any other name (*lvl untouched). */
int log_parse_level(const char *name, enum log_level *lvl);
/* Switches output to syslog (after daemonising) or back to stderr. */
void log_use_syslog(int on);
/* Looks whether stderr is the journal (JOURNAL_STREAM is the device and
 * inode of stderr) and, if so, starts every line with its priority.  Call
 * once at start-up, before threads. */
void log_detect_journal(void);
int log_enabled(enum log_level lvl);

/* While on, the calling thread's errors and warnings are logged as debug
 * messages: for work nobody asked for yet (prefetching), whose failures
 * the request that needs the result will meet and report itself. */
void log_thread_quiet(int on);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies the text of the last message logged as an error (NUL-terminated,
 * cut to size - 1 bytes) to out.  Returns how many errors were logged so
 * far (0: none, and out is ""). */
unsigned long log_last_error(char *out, size_t size);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                       \
	do {                                                 \
		if (log_enabled(LOG_LVL_DEBUG))              \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__); \
	} while (0)

#endif
