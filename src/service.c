/*
 * service - the service manager's notify protocol (see service.h).
 */
#include "dssfs/service.h"

#include "dssfs/buf.h"
#include "dssfs/log.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#ifdef DSSFS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

/* STATUS= is one line in systemctl status: a long DSS message is cut. */
#define LAST_ERROR_SHOWN 200

int service_listening(void)
{
#ifdef DSSFS_HAVE_SYSTEMD
	const char *s = getenv("NOTIFY_SOCKET");
	return s && *s;
#else
	return 0;
#endif
}

static void notify(const char *state)
{
#ifdef DSSFS_HAVE_SYSTEMD
	int r;

	if (!service_listening())
		return;
	r = sd_notify(0, state);
	if (r < 0)
		log_warn("cannot notify the service manager: %s", strerror(-r));
#else
	(void)state;
#endif
}

static void notify_with_status(const char *first, const char *status)
{
	struct buf b = BUF_INIT;

	if (first)
		buf_addstr(&b, first);
	if (status) {
		/* sd_notify's assignments are newline-separated: the status
		 * must be one line. */
		buf_addf(&b, "%sSTATUS=", b.len ? "\n" : "");
		for (const char *p = status; *p; p++)
			buf_addch(&b, *p == '\n' ? ' ' : *p);
	}
	notify(b.data);
	buf_release(&b);
}

void service_ready(const char *status)
{
	notify_with_status("READY=1", status);
}

void service_status(const char *status)
{
	notify_with_status(NULL, status);
}

void service_stopping(void)
{
	notify_with_status("STOPPING=1", "stopping");
}

static double figure(const cJSON *root, const char *object, const char *name)
{
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, object);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

void service_status_line(const char *stats_json, const char *last_error, struct buf *out)
{
	cJSON *root = cJSON_Parse(stats_json ? stats_json : "");
	const cJSON *e, *errors = cJSON_GetObjectItemCaseSensitive(root, "errors");
	double n_errors = 0;

	cJSON_ArrayForEach(e, errors)
	{
		if (cJSON_IsNumber(e))
			n_errors += e->valuedouble;
	}
	buf_addf(out, "requests: %.0f (%.0f failed), cache: %.0f hits, %.0f fetches, errors: %.0f",
		 figure(root, "requests", "total"), figure(root, "requests", "failed"),
		 figure(root, "cache", "hits"), figure(root, "cache", "fetches"), n_errors);
	if (last_error && *last_error) {
		size_t n = strlen(last_error);
		buf_addstr(out, "; last error: ");
		if (n > LAST_ERROR_SHOWN) {
			/* not in the middle of a UTF-8 sequence */
			n = LAST_ERROR_SHOWN;
			while (n && ((unsigned char)last_error[n] & 0xC0) == 0x80)
				n--;
			buf_add(out, last_error, n);
			buf_addstr(out, "...");
		} else {
			buf_addstr(out, last_error);
		}
	}
	cJSON_Delete(root);
}
