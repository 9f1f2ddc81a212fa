/* cli.c - the tools' shared command-line conventions (see cli.h). */
#include "core/base.h"
#include "cli.h"

/* "a, b, c or d": the command names, for the unknown-command message. */
static void command_list(const cli_command *cmds, char *buf, size_t n)
{
	size_t count = 0, at = 0;
	while (cmds[count].name)
		count++;
	buf[0] = 0;
	for (size_t i = 0; i < count && at < n; i++) {
		const char *sep = i == 0 ? "" : i + 1 == count ? " or " : ", ";
		int w = snprintf(buf + at, n - at, "%s%s", sep, cmds[i].name);
		if (w < 0)
			break;
		at += (size_t)w;
	}
}

int cli_main(const cli_tool *tool, int argc, char **argv)
{
	titan_log log;
	log_init(&log, tool->prog);
	if (argc < 2) {
		fputs(tool->usage, stderr);
		return 2;
	}
	const char *name = argv[1];
	if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
		fputs(tool->usage, stdout);
		return 0;
	}
	if (!strcmp(name, "--version") || !strcmp(name, "-V")) {
		printf("%s %s\n", tool->prog, TITAN_VERSION);
		return 0;
	}
	cli_fn fn = NULL;
	int skip = 2;
	for (const cli_command *c = tool->cmds; c->name; c++)
		if (!strcmp(name, c->name))
			fn = c->fn;
	if (!fn && name[0] == '-' && tool->bare) {
		fn = tool->bare;
		skip = 1;
		name = NULL;
	}
	int rc;
	if (fn)
		rc = fn(argc - skip, argv + skip, &log);
	else {
		char list[256];
		command_list(tool->cmds, list, sizeof list);
		rc = titan_err(TITAN_EUSAGE, "unknown command '%s' (expected %s)", name, list);
	}
	if (!rc)
		return 0;
	log_error(&log, "%s", titan_errmsg());
	if (rc == TITAN_EUSAGE) {
		if (fn && name)
			fprintf(stderr, "try '%s %s --help'\n", tool->prog, name);
		else
			fprintf(stderr, "try '%s --help'\n", tool->prog);
	}
	return titan_exit_code(rc);
}

void cli_print_help(const char *synopsis, const opt_spec *specs)
{
	printf("usage: %s\n\noptions:\n", synopsis);
	opt_print_help(stdout, specs);
}

int cli_finish_stdout(void)
{
	if (fflush(stdout) || ferror(stdout))
		return titan_err_errno(TITAN_EIO, "cannot write standard output");
	return 0;
}

int cli_load_tok(const cli_tok_args *a, titan_tok **t)
{
	if (!a->path)
		return titan_err(TITAN_EUSAGE, "no tokenizer given (-t TOK)");
	tok_load_opts lo = {
		.pattern = a->pattern,
		.specials = a->specials.v,
		.nspecials = a->specials.n,
	};
	return tok_load(t, a->path, &lo);
}
