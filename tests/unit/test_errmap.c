#include "check.h"
#include "dssfs/errmap.h"
#include "dssfs/log.h"

#include <curl/curl.h>
#include <errno.h>

static const struct {
	long status;
	const char *type;
	int err;
} cases[] = {
    {200, NULL, 0},
    {204, NULL, 0},
    {400, NULL, -EINVAL},
    {401, NULL, -EACCES},
    {403, NULL, -EACCES},
    {404, NULL, -ENOENT},
    {408, NULL, -ETIMEDOUT},
    {409, NULL, -EBUSY},
    {413, NULL, -EFBIG},
    {429, NULL, -EAGAIN},
    {418, NULL, -EIO},
    {500, NULL, -EIO},
    {502, NULL, -EIO},
    {504, NULL, -ETIMEDOUT},
    /* DSS answers some not-found and forbidden cases with a 500. */
    {500, "com.dataiku.dip.server.controllers.NotFoundException", -ENOENT},
    {500, "com.dataiku.dip.security.model.SecurityException", -EACCES},
    {500, "com.dataiku.dip.exceptions.UnauthorizedException", -EACCES},
    {500, "java.lang.IllegalArgumentException", -EINVAL},
    {401, "com.dataiku.dip.exceptions.NotAuthenticatedException", -EACCES},
    {404, "com.dataiku.dip.exceptions.CodedIOException", -ENOENT},
    {500, "com.dataiku.dip.exceptions.CodedIOException", -EIO},
    {500, "NotFoundExceptionX", -EIO},
};

static const struct {
	int code;
	int err;
} curl_cases[] = {
    {CURLE_OK, 0},
    {CURLE_OPERATION_TIMEDOUT, -ETIMEDOUT},
    {CURLE_COULDNT_CONNECT, -ECONNREFUSED},
    {CURLE_COULDNT_RESOLVE_HOST, -EHOSTUNREACH},
    {CURLE_WRITE_ERROR, -EFBIG},
    {CURLE_PEER_FAILED_VERIFICATION, -EIO},
    {CURLE_RECV_ERROR, -EIO},
};

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK_INT(errmap_status(cases[i].status, cases[i].type), cases[i].err);
	for (size_t i = 0; i < sizeof(curl_cases) / sizeof(curl_cases[0]); i++)
		CHECK_INT(errmap_curl(curl_cases[i].code), curl_cases[i].err);

	/* Bodies: DSS JSON errors, HTML pages, nothing, garbage. */
	const char *nf = "{\"errorType\":\"com.dataiku.dip.server.controllers.NotFoundException\","
			 "\"message\":\"dataset does not exist: P.x\"}";
	CHECK_INT(errmap_response("GET t", 500, nf, strlen(nf)), -ENOENT);
	const char *html = "<html><body>Bad gateway</body></html>";
	CHECK_INT(errmap_response("GET t", 502, html, strlen(html)), -EIO);
	CHECK_INT(errmap_response("GET t", 403, NULL, 0), -EACCES);
	const char *odd = "{\"errorType\": 5, \"message\": [1]}";
	CHECK_INT(errmap_response("GET t", 404, odd, strlen(odd)), -ENOENT);
	CHECK_INT(errmap_transport("GET t", CURLE_COULDNT_CONNECT, "Connection refused"),
		  -ECONNREFUSED);
	CHECK_DONE();
}
