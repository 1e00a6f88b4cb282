/*
 * service - what dssfs tells the service manager that started it, with
 * systemd's notify protocol (sd_notify(3)), as the dssfs@.service unit
 * (Type=notify) expects:
 *   READY=1     once the file system is mounted and DSS answered;
 *   STATUS=...  the figures of `dssfs stats' in one line (requests, cache
 *               hits, errors, the last error), at ready, then every
 *               SERVICE_STATUS_PERIOD_S seconds and on SIGUSR1;
 *   STOPPING=1  when the session ends (unmount, SIGTERM).
 *
 * Nothing is sent when NOTIFY_SOCKET is not set (not started as a notify
 * service), nor by a dssfs built without libsystemd (DSSFS_SYSTEMD=OFF).
 * Thread-safe (sd_notify opens a socket per call).
 */
#ifndef DSSFS_SERVICE_H
#define DSSFS_SERVICE_H

#define SERVICE_STATUS_PERIOD_S 5

struct buf;

/* True if a service manager listens (NOTIFY_SOCKET set) and this dssfs can
 * talk to it (built with libsystemd). */
int service_listening(void);

/* READY=1 with STATUS=status (status may be NULL). */
void service_ready(const char *status);
void service_status(const char *status);
void service_stopping(void);

/* Appends the one-line STATUS text for the figures `stats_json' (the
 * object stats_render() writes) to out:
 *   "requests: 12 (1 failed), cache: 40 hits, 12 fetches, errors: 2;
 *    last error: GET projects/X/...: HTTP 404 ..."
 * last_error: the last error logged (log_last_error()), "" or NULL if
 * none.  Figures missing from stats_json read as 0. */
void service_status_line(const char *stats_json, const char *last_error, struct buf *out);

#endif
