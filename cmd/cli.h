/* cli.h - what the tools share on their side of the library: dispatching a
 * subcommand, reporting a failure with the right exit status, the tokenizer
 * options, help text.  Only cmd/ includes it: unlike lib/, it prints. */
#ifndef TITAN_CMD_CLI_H
#define TITAN_CMD_CLI_H
#include "core/base.h"
#include "core/log.h"
#include "core/opt.h"
#include "dist/comm.h"
#include "tok/tok.h"

typedef int (*cli_fn)(int argc, char **argv, titan_log *log);

typedef struct cli_command {
	const char *name;
	cli_fn fn;
} cli_command;

typedef struct cli_tool {
	const char *prog;          /* "titan-tok" */
	const char *usage;         /* printed by -h (stdout) and bare calls (stderr) */
	const cli_command *cmds;   /* ends with {0} */
	cli_fn bare;               /* runs when the first word is an option; may be NULL */
} cli_tool;

/* Run the tool: -h/--help, --version, then the named subcommand on the words
 * after it.  A failure is printed as "PROG: MESSAGE" (usage errors add a
 * pointer to the help); returns the exit status. */
int cli_main(const cli_tool *tool, int argc, char **argv);

/* "usage: SYNOPSIS" and the option table, on stdout. */
void cli_print_help(const char *synopsis, const opt_spec *specs);

/* A failure on one rank of several (never returns).  A usage error, or
 * one that every rank meets alike (everyones: the same config or input),
 * is reported by rank 0 while the others wait, then every rank exits with
 * its status.  Anything else is this rank's alone: it is reported with the
 * rank, and the launcher is told to stop every rank at once rather than
 * let them wait for this one until their timeout. */
void cli_rank_failed(comm *world, titan_log *log, int rc, bool everyones);

/* Flush stdout and turn a write error into a titan error. */
int cli_finish_stdout(void);

/* Whether arg is a configuration override: a long option whose name has a
 * dot ("--training.steps=3", "--checkpoint.enable"). */
bool cli_is_override(const char *arg);

/* The words of a tool that reads titan-train's configuration: each
 * --section.key=value goes to *overrides (without the dashes; free the
 * array, not the strings), the rest through opt_parse; an operand is a
 * usage error. */
int cli_parse_config_args(const opt_spec *specs, int argc, char **argv,
			  char ***overrides, int *noverrides);

/* A size such as "80GiB", "80G" (binary), "96GB" (decimal) or "1e9"
 * (bytes) into *out; anything else is TITAN_EUSAGE naming option. */
int cli_parse_size(const char *option, const char *s, uint64_t *out);

/* --read-ahead SIZE, for the commands that read corpora through ingest.h:
 * how much of each input file after the one being parsed may be read and
 * decompressed before it is reached. */
#define CLI_READ_AHEAD_OPT(s)                                                           \
	{"read-ahead", 0, OPT_STR, &(s), "SIZE",                                       \
	 "decompress each next input up to SIZE ahead (default 32M)"}

/* The --read-ahead argument (NULL: not given) into *bytes, 0 meaning the
 * default. */
int cli_parse_read_ahead(const char *s, size_t *bytes);

/* The options that name a tokenizer, shared by every tool that loads one. */
typedef struct cli_tok_args {
	const char *path;
	const char *pattern;
	opt_list specials;
} cli_tok_args;

#define CLI_TOK_OPTS(a)                                                                  \
	{"tokenizer", 't', OPT_STR, &(a).path, "TOK",                                  \
	 "tokenizer.json, a directory holding one, or a tiktoken rank file"},          \
	{"pattern", 0, OPT_STR, &(a).pattern, "P",                                     \
	 "tiktoken files: split pattern (gpt2, cl100k, llama3, o200k or a regex)"},    \
	{"special", 0, OPT_LIST, &(a).specials, "NAME=ID",                            \
	 "tiktoken files: a special token (repeatable)"}

/* Load the tokenizer the options name; none named is a usage error. */
int cli_load_tok(const cli_tok_args *a, titan_tok **t);

#endif
