/*
 * errmap - the one place where HTTP statuses, DSS error bodies and libcurl
 * transport errors become errno values.
 *
 * DSS answers errors with a status and a JSON body {errorType, message,
 * detailedMessage}.  It sometimes reports "does not exist" or "access denied"
 * with a 500, so the exception class decides as much as the status: a known
 * errorType wins over the status.  Each mapping function logs the failure
 * once, at error level, naming the request (`what`, e.g. "GET
 * projects/SALES/permissions") and DSS's message; callers above never log
 * the same failure again.
 *
 * Thread-safe.  Return values are negative errno codes.
 */
#ifndef DSSFS_ERRMAP_H
#define DSSFS_ERRMAP_H

#include <stddef.h>

/* errno for an HTTP status and an optional DSS errorType (may be NULL). */
int errmap_status(long status, const char *error_type);

/* errno for a CURLcode (passed as int so curl.h stays inside http.c). */
int errmap_curl(int curl_code);

/* Maps and logs a non-2xx response: parses `body` as a DSS error when it is
 * JSON, otherwise logs its start as text.  Returns -errno. */
int errmap_response(const char *what, long status, const char *body, size_t len);

/* Maps and logs a transport failure; `detail` is curl's error text. */
int errmap_transport(const char *what, int curl_code, const char *detail);

/* While on, the calling thread's failures are logged at debug level only
 * (a probe whose refusal is an answer, not an error).  Returns the
 * previous setting. */
int errmap_quiet(int on);

#endif
