/* opt.h - declarative command-line options: one table drives parsing and
 * the option list in --help, so the two cannot drift apart.
 *
 *   static long long threads = 0; static bool lines;
 *   const opt_spec specs[] = {
 *       { "threads", 'T', OPT_INT, &threads, "N", "worker threads (0: all cores)" },
 *       { "lines",   0,   OPT_FLAG, &lines, NULL, "one document per line" },
 *       { 0 } };
 *
 * Accepted forms: --name VALUE, --name=VALUE, -x VALUE, -xVALUE, -abc (flags),
 * "--" ends options, "-" alone is an operand.  Options and operands may be
 * mixed; operands are returned in order. */
#ifndef TITAN_CORE_OPT_H
#define TITAN_CORE_OPT_H
#include "core/base.h"

typedef enum {
	OPT_FLAG,  /* bool *: set true */
	OPT_STR,   /* const char **: the argument */
	OPT_INT,   /* long long *: a decimal integer */
	OPT_LIST,  /* opt_list *: every occurrence appended */
	OPT_INC,   /* int *: incremented (-v) */
	OPT_DEC,   /* int *: decremented (-q) */
} opt_kind;

typedef struct opt_list {
	const char **v;
	size_t n, cap;
} opt_list;

typedef struct opt_spec {
	const char *name;     /* long name without "--" */
	char shrt;            /* short letter or 0 */
	opt_kind kind;
	void *dst;
	const char *argname;  /* "N", "FILE" (OPT_STR/INT/LIST) */
	const char *help;
} opt_spec;

/* Parse argv[0..argc) (argv[0] is not skipped: pass argv + 1 for a program).
 * Operands are stored in *operands (owned by the caller: free with
 * opt_list_free).  A bad option or value is TITAN_EUSAGE. */
int opt_parse(const opt_spec *specs, int argc, char **argv, opt_list *operands);
/* Print the option table, one option a line, aligned. */
void opt_print_help(FILE *fp, const opt_spec *specs);
void opt_list_free(opt_list *l);

#endif
