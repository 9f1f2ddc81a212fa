/* log.c - messages on stderr and the progress line (see log.h).
 *
 * Progress values are in unit.  With unit "B" they are scaled with the
 * unit ("12.3/45.6 MB  38.2 MB/s"); any other unit gets an SI suffix on the
 * number ("1.2M/4.0M tok  310.5k tok/s"). */
#include "core/base.h"
#include "core/log.h"

#include <stdarg.h>
#include <time.h>
#include <unistd.h>

/* Redraw at most this often, so progress costs nothing on fast loops and
 * does not flicker. */
#define PROGRESS_INTERVAL 0.2

double titan_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_clock(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double titan_cpu_now(void)
{
	return cpu_clock(CLOCK_PROCESS_CPUTIME_ID);
}

double titan_thread_cpu_now(void)
{
	return cpu_clock(CLOCK_THREAD_CPUTIME_ID);
}

void log_init(titan_log *l, const char *prog)
{
	const char *force = getenv("TITAN_FORCE_TTY");
	*l = (titan_log){
		.prog = prog,
		.verbosity = 1,
		.tty = isatty(STDERR_FILENO) || (force && !strcmp(force, "1")),
		.start = titan_now(),
	};
	l->last_draw = l->start - PROGRESS_INTERVAL;
}

static void erase_progress(titan_log *l)
{
	if (l->drawn) {
		fputs("\r\033[K", stderr);
		l->drawn = false;
	}
}

static void vemit(titan_log *l, const char *kind, const char *fmt, va_list ap)
{
	char msg[2048];
	vsnprintf(msg, sizeof msg, fmt, ap);
	erase_progress(l);
	/* One write per line: stderr is unbuffered, and threads or other
	 * processes may share it. */
	char line[2304];
	snprintf(line, sizeof line, "%s: %s%s\n", l->prog, kind, msg);
	fputs(line, stderr);
	/* Let the next progress call redraw right away. */
	l->last_draw = titan_now() - PROGRESS_INTERVAL;
}

void log_error(titan_log *l, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vemit(l, "", fmt, ap);
	va_end(ap);
}

void log_warn(titan_log *l, const char *fmt, ...)
{
	if (l->verbosity < 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	vemit(l, "warning: ", fmt, ap);
	va_end(ap);
}

void log_info(titan_log *l, const char *fmt, ...)
{
	if (l->verbosity < 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	vemit(l, "", fmt, ap);
	va_end(ap);
}

void log_debug(titan_log *l, const char *fmt, ...)
{
	if (l->verbosity < 2)
		return;
	va_list ap;
	va_start(ap, fmt);
	vemit(l, "", fmt, ap);
	va_end(ap);
}

/* The SI prefix that keeps x below 1000 (x >= 0), and the divisor for it. */
static const char *si_prefix(double x, double *div)
{
	static const char *const prefix[] = { "", "k", "M", "G", "T", "P" };
	size_t i = 0;
	*div = 1;
	while (x >= 1000 * *div && i + 1 < ARRAY_SIZE(prefix)) {
		*div *= 1000;
		i++;
	}
	return prefix[i];
}

void log_progress(titan_log *l, const char *label, double done, double total,
		  const char *unit, bool force)
{
	if (!l->tty || l->verbosity == 0)
		return;
	double now = titan_now();
	if (!force && now - l->last_draw < PROGRESS_INTERVAL)
		return;
	l->last_draw = now;

	if (!unit)
		unit = "";
	if (done < 0)
		done = 0;
	bool bytes = !strcmp(unit, "B");
	double elapsed = now - l->start;
	double rate = elapsed > 0 ? done / elapsed : 0;

	char line[512];
	size_t n = 0;
	double div, rdiv;
	const char *pre = si_prefix(TITAN_MAX(done, total), &div);
	const char *rpre = si_prefix(rate, &rdiv);
	const char *sep = *unit ? " " : "";

	n += (size_t)snprintf(line, sizeof line, "\r%s: %s  ", l->prog, label);
	if (n < sizeof line) {
		if (bytes && total > 0)
			n += (size_t)snprintf(line + n, sizeof line - n, "%.1f/%.1f %s%s",
					      done / div, total / div, pre, unit);
		else if (bytes)
			n += (size_t)snprintf(line + n, sizeof line - n, "%.1f %s%s",
					      done / div, pre, unit);
		else if (total > 0)
			n += (size_t)snprintf(line + n, sizeof line - n, "%.1f%s/%.1f%s%s%s",
					      done / div, pre, total / div, pre, sep, unit);
		else
			n += (size_t)snprintf(line + n, sizeof line - n, "%.1f%s%s%s",
					      done / div, pre, sep, unit);
	}
	if (n < sizeof line && total > 0)
		n += (size_t)snprintf(line + n, sizeof line - n, "  %.0f%%",
				      100.0 * TITAN_MIN(done, total) / total);
	if (n < sizeof line) {
		if (bytes)
			n += (size_t)snprintf(line + n, sizeof line - n, "  %.1f %s%s/s",
					      rate / rdiv, rpre, unit);
		else
			n += (size_t)snprintf(line + n, sizeof line - n, "  %.1f%s%s%s/s",
					      rate / rdiv, rpre, sep, unit);
	}
	if (n < sizeof line)
		snprintf(line + n, sizeof line - n, "\033[K");
	fputs(line, stderr);
	l->drawn = true;
}

void log_progress_end(titan_log *l)
{
	erase_progress(l);
}
