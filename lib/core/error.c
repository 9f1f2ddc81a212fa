/* error.c - per-thread last-error message (see error.h). */
#include "core/base.h"

#include <stdarg.h>

/* The only mutable static state in lib/: one message buffer per thread,
 * the same bargain as errno. */
static _Thread_local char errbuf[1024];

int titan_err(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof errbuf, fmt, ap);
	va_end(ap);
	return code;
}

int titan_err_errno(int code, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(errbuf, sizeof errbuf, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof errbuf)
		snprintf(errbuf + n, sizeof errbuf - (size_t)n, ": %s", strerror(saved));
	return code;
}

int titan_err_prefix(int code, const char *fmt, ...)
{
	char old[sizeof errbuf];
	memcpy(old, errbuf, sizeof old);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(errbuf, sizeof errbuf - 2, fmt, ap);
	va_end(ap);
	/* Keep the old message after "PREFIX: ", truncated if it must be. */
	size_t at = n < 0 ? 0 : TITAN_MIN((size_t)n, sizeof errbuf - 3);
	size_t room = sizeof errbuf - at - 3, len = strnlen(old, room);
	memcpy(errbuf + at, ": ", 2);
	memcpy(errbuf + at + 2, old, len);
	errbuf[at + 2 + len] = 0;
	return code;
}

const char *titan_errmsg(void)
{
	return errbuf;
}

int titan_err_nomem(void)
{
	return titan_err(TITAN_ENOMEM, "out of memory");
}

int titan_exit_code(int status)
{
	if (status == 0)
		return 0;
	return status == TITAN_EUSAGE ? 2 : 1;
}
