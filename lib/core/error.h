/* error.h - the one way lib/ reports failure.
 *
 * Every fallible library function returns int: 0 on success, a negative
 * TITAN_E* code on failure, after setting a message with titan_err().  The
 * message is kept per thread (like errno), so library code never prints and
 * never exits; the tool (cmd/) prints "PROGRAM: MESSAGE" and maps the code to
 * an exit status with titan_exit_code().
 *
 * Message style (git's): lowercase, no trailing period, the subject quoted,
 * and where it helps the place: "'tok.json': $.model.merges[3]: expected ...".
 */
#ifndef TITAN_CORE_ERROR_H
#define TITAN_CORE_ERROR_H

enum titan_status {
	TITAN_OK = 0,
	TITAN_EIO = -1,       /* reading or writing a file or stream failed */
	TITAN_EUSAGE = -2,    /* bad flag, option value or config value: exit 2 */
	TITAN_EFORMAT = -3,   /* malformed or unsupported input file */
	TITAN_ENOMEM = -4,    /* allocation failed */
	TITAN_ERANGE = -5,    /* value out of range (an id past the vocab, ...) */
	TITAN_EINTERNAL = -6, /* a bug: an invariant did not hold */
};

#if defined(__GNUC__)
#define TITAN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TITAN_PRINTF(a, b)
#endif

/* Set this thread's message and return code, so callers can write
 * "return titan_err(TITAN_EFORMAT, "...", ...);".  code must be negative. */
int titan_err(int code, const char *fmt, ...) TITAN_PRINTF(2, 3);

/* Like titan_err() with ": strerror(errno)" appended (errno read on entry). */
int titan_err_errno(int code, const char *fmt, ...) TITAN_PRINTF(2, 3);

/* Prefix the current message with "PREFIX: " (context added on the way up,
 * for instance the file name).  Returns code unchanged. */
int titan_err_prefix(int code, const char *fmt, ...) TITAN_PRINTF(2, 3);

/* The last message set on this thread ("" when none). */
const char *titan_errmsg(void);

/* Return the status after recording an allocation failure. */
int titan_err_nomem(void);

/* Exit status for a status code: 0 ok, 2 usage, 1 anything else. */
int titan_exit_code(int status);

#endif
