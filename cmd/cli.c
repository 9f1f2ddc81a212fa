/* cli.c - the tools' shared command-line conventions (see cli.h). */
#include "core/base.h"
#include "cli.h"

#include <strings.h>

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
	/* A tool without commands takes every word as its own (and names
	 * a stray operand itself). */
	if (!fn && tool->bare && (name[0] == '-' || !tool->cmds[0].name)) {
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

bool cli_is_override(const char *arg)
{
	const char *eq, *dot;

	if (strncmp(arg, "--", 2) || !arg[2])
		return false;
	eq = strchr(arg, '=');
	dot = strchr(arg, '.');
	return dot && (!eq || dot < eq);
}

int cli_parse_size(const char *option, const char *s, uint64_t *out)
{
	static const struct { const char *suffix; double mult; } units[] = {
		{ "", 1 }, { "B", 1 },
		{ "K", 0x1p10 }, { "KiB", 0x1p10 }, { "KB", 1e3 },
		{ "M", 0x1p20 }, { "MiB", 0x1p20 }, { "MB", 1e6 },
		{ "G", 0x1p30 }, { "GiB", 0x1p30 }, { "GB", 1e9 },
		{ "T", 0x1p40 }, { "TiB", 0x1p40 }, { "TB", 1e12 },
	};
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end != s && !errno && v > 0)
		for (size_t i = 0; i < ARRAY_SIZE(units); i++)
			if (!strcasecmp(end, units[i].suffix) && v * units[i].mult >= 1 &&
			    v * units[i].mult < 0x1p63) {
				*out = (uint64_t)(v * units[i].mult);
				return 0;
			}
	return titan_err(TITAN_EUSAGE, "%s: '%s' is not a size (e.g. 80GiB, 96GB, 1e9)",
			 option, s);
}

int cli_parse_read_ahead(const char *s, size_t *bytes)
{
	uint64_t v = 0;
	int rc = s ? cli_parse_size("--read-ahead", s, &v) : 0;
	/* Past what an address space holds, a limit is no limit. */
	*bytes = rc ? 0 : v > SIZE_MAX ? SIZE_MAX : (size_t)v;
	return rc;
}

int cli_parse_config_args(const opt_spec *specs, int argc, char **argv,
			  char ***overrides, int *noverrides)
{
	char **ov = calloc((size_t)argc + 1, sizeof *ov);
	char **rest = calloc((size_t)argc + 1, sizeof *rest);
	opt_list operands = {0};
	int nov = 0, nrest = 0, rc;

	*overrides = NULL;
	*noverrides = 0;
	if (!ov || !rest) {
		free(ov);
		free(rest);
		return titan_err_nomem();
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (cli_is_override(argv[i]))
			ov[nov++] = argv[i] + 2;
		else
			rest[nrest++] = argv[i];
	}
	rc = opt_parse(specs, nrest, rest, &operands);
	if (!rc && operands.n)
		rc = titan_err(TITAN_EUSAGE, "unexpected argument '%s' (options are "
			       "--section.key=value)", operands.v[0]);
	opt_list_free(&operands);
	free(rest);
	if (rc) {
		free(ov);
		return rc;
	}
	*overrides = ov;
	*noverrides = nov;
	return 0;
}

void cli_rank_failed(comm *world, titan_log *log, int rc, bool everyones)
{
	if (rc == TITAN_EUSAGE || everyones) {
		if (comm_rank(world) == 0) {
			log_error(log, "%s", titan_errmsg());
			if (rc == TITAN_EUSAGE)
				fprintf(stderr, "try '%s --help'\n", log->prog);
			fflush(stderr);
		}
		/* the others wait for the message: the launcher stops the job
		 * as soon as one rank exits with an error */
		comm_barrier(world);
		comm_free(world);
		exit(titan_exit_code(rc));
	}
	titan_err_prefix(rc, "rank %d of %d", comm_rank(world), comm_size(world));
	log_error(log, "%s", titan_errmsg());
	fflush(stderr);
	comm_abort(world, titan_exit_code(rc));
	exit(titan_exit_code(rc));   /* the self backend's abort returns */
}
