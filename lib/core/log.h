/* log.h - diagnostics on stderr and a tty-aware progress line.
 *
 * A titan_log is owned by the tool: it holds the program name and verbosity
 * (-q lowers, -v raises; errors always print).  Progress is drawn only when
 * stderr is a terminal (or TITAN_FORCE_TTY=1 is set, which tests use), at
 * most a few times a second, and erased before any other message. */
#ifndef TITAN_CORE_LOG_H
#define TITAN_CORE_LOG_H
#include "core/base.h"

typedef struct titan_log {
	const char *prog;  /* "titan-tok" */
	int verbosity;     /* 0 quiet, 1 normal (default), 2+ verbose */
	bool tty;          /* stderr is a terminal (or forced) */
	double last_draw;  /* monotonic seconds of the last progress draw */
	double start;      /* monotonic seconds at log_init */
	bool drawn;        /* a progress line is on screen */
} titan_log;

void log_init(titan_log *l, const char *prog);
/* "PROG: error: msg" style is git's; titan prints "PROG: msg". */
void log_error(titan_log *l, const char *fmt, ...) TITAN_PRINTF(2, 3);
void log_warn(titan_log *l, const char *fmt, ...) TITAN_PRINTF(2, 3);   /* verbosity >= 1 */
void log_info(titan_log *l, const char *fmt, ...) TITAN_PRINTF(2, 3);   /* verbosity >= 1 */
void log_debug(titan_log *l, const char *fmt, ...) TITAN_PRINTF(2, 3);  /* verbosity >= 2 */

/* Redraw the progress line if due: "label  done/total unit  rate/s". total 0
 * means unknown.  force draws regardless of the rate limit. */
void log_progress(titan_log *l, const char *label, double done, double total,
		  const char *unit, bool force);
/* Erase the progress line if one is drawn. */
void log_progress_end(titan_log *l);

/* Monotonic clock in seconds. */
double titan_now(void);
/* CPU seconds the process has used, all its threads together. */
double titan_cpu_now(void);
/* CPU seconds the calling thread has used. */
double titan_thread_cpu_now(void);

#endif
