/* opt.c - the option table parser (see opt.h). */
#include "core/base.h"
#include "core/opt.h"

static int list_push(opt_list *l, const char *s)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap ? 2 * l->cap : 8;
		const char **v = realloc(l->v, ncap * sizeof *v);
		if (!v)
			return titan_err_nomem();
		l->v = v;
		l->cap = ncap;
	}
	l->v[l->n++] = s;
	return 0;
}

void opt_list_free(opt_list *l)
{
	free(l->v);
	*l = (opt_list){0};
}

static bool takes_arg(const opt_spec *o)
{
	return o->kind == OPT_STR || o->kind == OPT_INT || o->kind == OPT_LIST;
}

static int store(const opt_spec *o, const char *shown, const char *arg)
{
	switch (o->kind) {
	case OPT_FLAG:
		*(bool *)o->dst = true;
		return 0;
	case OPT_INC:
		(*(int *)o->dst)++;
		return 0;
	case OPT_DEC:
		(*(int *)o->dst)--;
		return 0;
	case OPT_STR:
		*(const char **)o->dst = arg;
		return 0;
	case OPT_LIST:
		return list_push(o->dst, arg);
	case OPT_INT: {
		char *end;
		errno = 0;
		long long v = strtoll(arg, &end, 10);
		if (end == arg || *end || errno)
			return titan_err(TITAN_EUSAGE, "option '%s' expects an integer, got '%s'",
					 shown, arg);
		*(long long *)o->dst = v;
		return 0;
	}
	}
	return titan_err(TITAN_EINTERNAL, "bad option kind");
}

static const opt_spec *find_long(const opt_spec *specs, const char *name, size_t len)
{
	for (const opt_spec *o = specs; o->name; o++)
		if (strlen(o->name) == len && !memcmp(o->name, name, len))
			return o;
	return NULL;
}

static const opt_spec *find_short(const opt_spec *specs, char c)
{
	for (const opt_spec *o = specs; o->name; o++)
		if (o->shrt == c)
			return o;
	return NULL;
}

static int parse_long(const opt_spec *specs, int argc, char **argv, int *i)
{
	const char *name = argv[*i] + 2;
	const char *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	const opt_spec *o = find_long(specs, name, len);
	if (!o)
		return titan_err(TITAN_EUSAGE, "unknown option '--%.*s'", (int)len, name);
	char shown[128];
	snprintf(shown, sizeof shown, "--%s", o->name);
	if (!takes_arg(o)) {
		if (eq)
			return titan_err(TITAN_EUSAGE, "option '%s' takes no value", shown);
		return store(o, shown, NULL);
	}
	if (eq)
		return store(o, shown, eq + 1);
	if (*i + 1 >= argc)
		return titan_err(TITAN_EUSAGE, "option '%s' requires a value (%s)", shown,
				 o->argname ? o->argname : "ARG");
	return store(o, shown, argv[++*i]);
}

static int parse_shorts(const opt_spec *specs, int argc, char **argv, int *i)
{
	const char *p = argv[*i] + 1;
	for (; *p; p++) {
		const opt_spec *o = find_short(specs, *p);
		if (!o)
			return titan_err(TITAN_EUSAGE, "unknown option '-%c'", *p);
		char shown[4] = {'-', *p, 0, 0};
		if (!takes_arg(o)) {
			int rc = store(o, shown, NULL);
			if (rc)
				return rc;
			continue;
		}
		if (p[1])
			return store(o, shown, p + 1);
		if (*i + 1 >= argc)
			return titan_err(TITAN_EUSAGE, "option '%s' requires a value (%s)", shown,
					 o->argname ? o->argname : "ARG");
		return store(o, shown, argv[++*i]);
	}
	return 0;
}

int opt_parse(const opt_spec *specs, int argc, char **argv, opt_list *operands)
{
	bool only_operands = false;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int rc;
		if (only_operands || a[0] != '-' || !a[1])
			rc = list_push(operands, a);
		else if (!strcmp(a, "--")) {
			only_operands = true;
			rc = 0;
		} else if (a[1] == '-')
			rc = parse_long(specs, argc, argv, &i);
		else
			rc = parse_shorts(specs, argc, argv, &i);
		if (rc)
			return rc;
	}
	return 0;
}

void opt_print_help(FILE *fp, const opt_spec *specs)
{
	for (const opt_spec *o = specs; o->name; o++) {
		char left[64];
		const char *arg = takes_arg(o) ? (o->argname ? o->argname : "ARG") : NULL;
		if (o->shrt)
			snprintf(left, sizeof left, "-%c, --%s%s%s", o->shrt, o->name, arg ? " " : "",
				 arg ? arg : "");
		else
			snprintf(left, sizeof left, "    --%s%s%s", o->name, arg ? " " : "",
				 arg ? arg : "");
		fprintf(fp, "  %-26s %s\n", left, o->help);
	}
}
