#include "check.h"
#include "dssfs/buf.h"
#include "dssfs/service.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void test_status_line(void)
{
	static const struct {
		const char *json, *last_error, *want;
	} rows[] = {
	    {"{\"requests\": {\"total\": 12, \"failed\": 1}, \"cache\": {\"hits\": 40, "
	     "\"fetches\": 12}, \"errors\": {\"ENOENT\": 2, \"EIO\": 1}}",
	     "GET projects/X: HTTP 500",
	     "requests: 12 (1 failed), cache: 40 hits, 12 fetches, errors: 3; last error: GET "
	     "projects/X: HTTP 500"},
	    {"{\"requests\": {\"total\": 0}, \"errors\": {}}", "",
	     "requests: 0 (0 failed), cache: 0 hits, 0 fetches, errors: 0"},
	    {"not json", NULL, "requests: 0 (0 failed), cache: 0 hits, 0 fetches, errors: 0"},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct buf b = BUF_INIT;
		service_status_line(rows[i].json, rows[i].last_error, &b);
		CHECK_STR(b.data, rows[i].want);
		buf_release(&b);
	}
}

/* A long last error is cut at 200 bytes, not inside a UTF-8 character. */
static void test_long_last_error(void)
{
	struct buf err = BUF_INIT, b = BUF_INIT;
	const char *cut;

	buf_addstr(&err, "x");
	for (int i = 0; i < 150; i++)
		buf_addstr(&err, "\xc3\xa9"); /* é: byte 200 is the second of one */
	service_status_line("{}", err.data, &b);
	cut = strstr(b.data, "last error: ");
	CHECK(cut != NULL);
	if (cut) {
		cut += strlen("last error: ");
		CHECK_INT(strlen(cut), 199 + 3);
		CHECK(!strcmp(cut + 199, "..."));
	}
	buf_release(&b);
	buf_release(&err);
}

/* What reaches NOTIFY_SOCKET: one datagram per call, the status on one line. */
static void test_notify(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char dir[] = "/tmp/dssfs-test-notify-XXXXXX", got[512];
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ssize_t n;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", dir);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	unsetenv("NOTIFY_SOCKET");
	CHECK(!service_listening());
	service_ready("nobody listens"); /* sends nothing */
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	if (!service_listening()) {
		fprintf(stderr, "test_service: built without libsystemd, notify not tested\n");
		goto out;
	}
	service_ready("two\nlines");
	service_status("figures");
	service_stopping();
	static const char *const want[] = {"READY=1\nSTATUS=two lines", "STATUS=figures",
					   "STOPPING=1\nSTATUS=stopping"};
	for (int i = 0; i < 3; i++) {
		n = recv(fd, got, sizeof(got) - 1, MSG_DONTWAIT);
		got[n > 0 ? n : 0] = '\0';
		CHECK_STR(got, want[i]);
	}
	CHECK(recv(fd, got, sizeof(got), MSG_DONTWAIT) < 0);
out:
	close(fd);
	unlink(sa.sun_path);
	rmdir(dir);
}

int main(void)
{
	test_status_line();
	test_long_last_error();
	test_notify();
	CHECK_DONE();
}
