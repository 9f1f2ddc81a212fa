/* titan-pack - a corpus into token shards, and a look inside them: pack,
 * info, cat, verify.
 *
 * Thin over lib/data: parse options, run the packer, print.  Exit 0 ok,
 * 1 runtime failure, 2 usage error. */
#include "core/base.h"
#include "cli.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/opt.h"
#include "core/pool.h"
#include "data/dataset.h"
#include "data/ingest.h"
#include "data/pack.h"
#include "data/shard.h"
#include "tok/tok.h"

#include <jansson.h>
#include <math.h>
#include <sys/stat.h>

#define PROG "titan-pack"
#define VAL_FRACTION_DEFAULT 0.005

#define PACK_SYNOPSIS                                                                   \
	"titan-pack [pack] -t TOK -o OUTDIR [--format auto|text|jsonl] [--field F] "   \
	"[--lines] [--val-fraction F] [--shard-tokens N] [--threads N] [--seed S] "    \
	"[--skip-bad] [--force] [--no-bos] [--no-eos] [--from-ids] INPUT..."
#define INFO_SYNOPSIS "titan-pack info OUTDIR [--json]"
#define CAT_SYNOPSIS                                                                    \
	"titan-pack cat OUTDIR [--split train|val] [--decode -t TOK] [--jsonl] [--lines] " \
	"[--doc N] [--format text|u32] [--strip]"
#define VERIFY_SYNOPSIS "titan-pack verify OUTDIR"

static const char usage_top[] =
	"usage: " PACK_SYNOPSIS "\n"
	"       " INFO_SYNOPSIS "\n"
	"       " CAT_SYNOPSIS "\n"
	"       " VERIFY_SYNOPSIS "\n"
	"\n"
	"Tokenize a corpus (files, directories, archives, JSON lines, stdin) into a\n"
	"dataset directory of compressed token shards with a train/val split, and\n"
	"inspect, print or check one.  'titan-pack COMMAND --help' for options;\n"
	"man titan-pack for the details.\n";

static int parse_fraction(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !(v >= 0 && v <= 1))
		return titan_err(TITAN_EUSAGE, "--val-fraction must be a number in [0, 1], got '%s'", s);
	*out = v;
	return 0;
}

static int write_out(const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, stdout) != n)
		return titan_err_errno(TITAN_EIO, "cannot write standard output");
	return 0;
}

/* ---- pack ------------------------------------------------------------ */

static int cmd_pack(int argc, char **argv, titan_log *log)
{
	cli_tok_args ta = {0};
	const char *outdir = NULL, *format = NULL, *field = NULL, *valf = NULL, *ahead = NULL;
	long long shard_tokens = 0, threads = 0, seed = 0, level = 0;
	bool lines = false, skip_bad = false, force = false, no_bos = false, no_eos = false;
	bool from_ids = false, help = false;
	int verbosity = 1;
	const opt_spec specs[] = {
		CLI_TOK_OPTS(ta),
		{"output", 'o', OPT_STR, &outdir, "OUTDIR", "dataset directory to create"},
		{"format", 0, OPT_STR, &format, "F", "input: auto (by name, default), text or jsonl"},
		{"field", 0, OPT_STR, &field, "F", "JSONL field, dotted paths allowed (default text)"},
		{"lines", 0, OPT_FLAG, &lines, NULL, "text: each line is a document"},
		{"val-fraction", 0, OPT_STR, &valf, "F",
		 "share of documents for validation (default 0.005)"},
		{"shard-tokens", 0, OPT_INT, &shard_tokens, "N",
		 "start a new shard past N tokens (default 2^28)"},
		{"threads", 'T', OPT_INT, &threads, "N", "worker threads (default 0: all cores)"},
		CLI_READ_AHEAD_OPT(ahead),
		{"zstd-level", 0, OPT_INT, &level, "L", "zstd level of the blocks, -7 to 19 (default 1)"},
		{"seed", 0, OPT_INT, &seed, "S", "seed of the train/val split (default 0)"},
		{"skip-bad", 0, OPT_FLAG, &skip_bad, NULL, "skip invalid JSON lines and count them"},
		{"force", 'f', OPT_FLAG, &force, NULL, "replace an existing OUTDIR"},
		{"no-bos", 0, OPT_FLAG, &no_bos, NULL, "do not begin documents with BOS"},
		{"no-eos", 0, OPT_FLAG, &no_eos, NULL, "do not end documents with EOS"},
		{"from-ids", 0, OPT_FLAG, &from_ids, NULL,
		 "inputs are u32 ids (titan-tok encode --format u32)"},
		{"quiet", 'q', OPT_DEC, &verbosity, NULL, "no progress or summary"},
		{"verbose", 'v', OPT_INC, &verbosity, NULL, "more detail"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list inputs = {0};
	titan_tok *tok = NULL;
	titan_pool *pool = NULL;
	pack_opts po = {.val_fraction = VAL_FRACTION_DEFAULT};
	pack_stats st;
	int rc = opt_parse(specs, argc, argv, &inputs);
	if (!rc && help) {
		cli_print_help(PACK_SYNOPSIS, specs);
		goto out;
	}
	if (!rc && format)
		rc = ingest_parse_format(format, &po.ingest.format);
	if (!rc && valf)
		rc = parse_fraction(valf, &po.val_fraction);
	if (!rc)
		rc = cli_parse_read_ahead(ahead, &po.ingest.read_ahead);
	if (!rc && !ta.path)
		rc = titan_err(TITAN_EUSAGE, "no tokenizer given (-t TOK)");
	if (!rc && !outdir)
		rc = titan_err(TITAN_EUSAGE, "no output directory given (-o OUTDIR)");
	if (!rc && !inputs.n)
		rc = titan_err(TITAN_EUSAGE, "no input given (INPUT..., or - for stdin)");
	if (!rc && threads < 0)
		rc = titan_err(TITAN_EUSAGE, "--threads must be 0 (all cores) or more, got %lld",
			       threads);
	if (!rc && shard_tokens < 0)
		rc = titan_err(TITAN_EUSAGE, "--shard-tokens must be positive, got %lld",
			       shard_tokens);
	if (!rc && (level < -7 || level > 19))
		rc = titan_err(TITAN_EUSAGE, "--zstd-level must be -7 to 19, got %lld", level);
	if (!rc && seed < 0)
		rc = titan_err(TITAN_EUSAGE, "--seed must be 0 or more, got %lld", seed);
	if (!rc && from_ids && (format || field || lines || skip_bad))
		rc = titan_err(TITAN_EUSAGE, "--from-ids reads ids: --format, --field, --lines "
			       "and --skip-bad do not apply");
	if (rc)
		goto out;
	log->verbosity = verbosity;
	if ((rc = cli_load_tok(&ta, &tok)) || (rc = pool_new(&pool, (int)threads)))
		goto out;
	po.outdir = outdir;
	po.tok = tok;
	po.tok_source = ta.path;
	po.ingest.field = field;
	po.ingest.lines = lines;
	po.ingest.skip_bad = skip_bad;
	po.from_ids = from_ids;
	po.no_bos = no_bos;
	po.no_eos = no_eos;
	po.seed = (uint64_t)seed;
	po.shard_tokens = (uint64_t)shard_tokens;
	po.zstd_level = (int)level;
	po.force = force;
	po.pool = pool;
	po.log = log;
	if ((rc = pack_run(&po, inputs.v, inputs.n, &st)))
		goto out;
	if (st.skipped)
		log_warn(log, "skipped %llu invalid JSON line(s)", (unsigned long long)st.skipped);
	log_info(log, "packed %llu documents, %llu tokens (train %llu / val %llu) from %.1f MB "
		 "in %.3f s (%.2f MB/s, %.3f s of CPU, %.3f s of it compressing)",
		 (unsigned long long)(st.docs[SPLIT_TRAIN] + st.docs[SPLIT_VAL]),
		 (unsigned long long)(st.tokens[SPLIT_TRAIN] + st.tokens[SPLIT_VAL]),
		 (unsigned long long)st.tokens[SPLIT_TRAIN], (unsigned long long)st.tokens[SPLIT_VAL],
		 (double)st.bytes_in / 1e6, st.seconds,
		 st.seconds > 0 ? (double)st.bytes_in / 1e6 / st.seconds : 0.0, st.cpu_seconds,
		 st.compress_cpu_seconds);
	log_debug(log, "threads %d, bos %s, eos %s", pool_threads(pool),
		  st.bos_added ? "added" : "not added", st.eos_added ? "added" : "not added");
out:
	pool_free(pool);
	tok_free(tok);
	opt_list_free(&inputs);
	opt_list_free(&ta.specials);
	return rc;
}

/* ---- info ------------------------------------------------------------ */

static uint64_t file_size(const char *path)
{
	struct stat sb;
	return path && stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static json_t *special_json(int64_t id, bool added)
{
	if (id < 0)
		return json_null();
	return json_pack("{s:I,s:b}", "id", (json_int_t)id, "added", added);
}

static json_t *info_json(dataset *d, const char *dir)
{
	const dataset_tokinfo *ti = dataset_tok(d);
	int tb = dataset_token_bytes(d);
	json_t *j = json_object(), *splits = json_object();
	json_object_set_new(j, "path", json_string(dir));
	json_object_set_new(j, "dtype", json_string(tb == 2 ? "u16" : "u32"));
	json_object_set_new(j, "token_bytes", json_integer(tb));
	json_object_set_new(j, "tokenizer",
			    json_pack("{s:s,s:s,s:I,s:o,s:o}", "source", ti->source, "sha256",
				      ti->sha256, "vocab_size", (json_int_t)ti->vocab_size,
				      "bos", special_json(ti->bos, ti->bos_added),
				      "eos", special_json(ti->eos, ti->eos_added)));
	static const char *const names[SPLIT_COUNT] = {"train", "val"};
	for (int s = 0; s < SPLIT_COUNT; s++) {
		uint64_t bytes = 0;
		for (size_t i = 0; i < dataset_nshards(d, s); i++)
			bytes += file_size(dataset_shard_path(d, s, i));
		/* Token bytes over file bytes, to two decimals. */
		double raw = (double)(dataset_tokens(d, s) * (uint64_t)tb);
		double ratio = bytes ? round(100.0 * raw / (double)bytes) / 100 : 0.0;
		json_object_set_new(splits, names[s], json_pack(
			"{s:I,s:I,s:I,s:I,s:f}", "documents", (json_int_t)dataset_docs(d, s),
			"tokens", (json_int_t)dataset_tokens(d, s),
			"shards", (json_int_t)dataset_nshards(d, s), "bytes", (json_int_t)bytes,
			"compression_ratio", ratio));
	}
	json_object_set_new(j, "splits", splits);
	return j;
}

static void info_text(json_t *j)
{
	json_t *t = json_object_get(j, "tokenizer");
	printf("path           %s\n", json_string_value(json_object_get(j, "path")));
	printf("dtype          %s\n", json_string_value(json_object_get(j, "dtype")));
	printf("tokenizer      %s\n", json_string_value(json_object_get(t, "source")));
	printf("sha256         %s\n", json_string_value(json_object_get(t, "sha256")));
	printf("vocab size     %lld\n",
	       (long long)json_integer_value(json_object_get(t, "vocab_size")));
	static const char *const be[2] = {"bos", "eos"};
	for (int k = 0; k < 2; k++) {
		json_t *v = json_object_get(t, be[k]);
		if (json_is_null(v))
			printf("%-14s none\n", be[k]);
		else
			printf("%-14s %lld (%s)\n", be[k],
			       (long long)json_integer_value(json_object_get(v, "id")),
			       json_is_true(json_object_get(v, "added")) ? "added" : "not added");
	}
	printf("\n%-6s %12s %14s %7s %14s %6s\n", "split", "documents", "tokens", "shards",
	       "bytes", "ratio");
	const char *name;
	json_t *s;
	json_object_foreach(json_object_get(j, "splits"), name, s) {
		printf("%-6s %12lld %14lld %7lld %14lld %6.2f\n", name,
		       (long long)json_integer_value(json_object_get(s, "documents")),
		       (long long)json_integer_value(json_object_get(s, "tokens")),
		       (long long)json_integer_value(json_object_get(s, "shards")),
		       (long long)json_integer_value(json_object_get(s, "bytes")),
		       json_real_value(json_object_get(s, "compression_ratio")));
	}
}

/* The one OUTDIR operand of info, cat and verify. */
/* The options of a command on one dataset directory.  With --help the help
 * is printed and *dir stays NULL: the command has nothing more to do. */
static int dir_command_args(const opt_spec *specs, const char *synopsis, const bool *help,
			    int argc, char **argv, opt_list *rest, const char **dir)
{
	int rc = opt_parse(specs, argc, argv, rest);

	*dir = NULL;
	if (rc)
		return rc;
	if (*help) {
		cli_print_help(synopsis, specs);
		return 0;
	}
	if (rest->n == 0)
		return titan_err(TITAN_EUSAGE, "no dataset directory given");
	if (rest->n > 1)
		return titan_err(TITAN_EUSAGE, "unexpected argument '%s'", rest->v[1]);
	*dir = rest->v[0];
	return 0;
}

static int cmd_info(int argc, char **argv, titan_log *log)
{
	bool as_json = false, help = false;
	int verbosity = 1;
	const opt_spec specs[] = {
		{"json", 0, OPT_FLAG, &as_json, NULL, "print JSON"},
		{"quiet", 'q', OPT_DEC, &verbosity, NULL, "(no effect)"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	dataset *d = NULL;
	const char *dir = NULL;
	int rc = dir_command_args(specs, INFO_SYNOPSIS, &help, argc, argv, &rest, &dir);
	if (rc || !dir || (rc = dataset_open(&d, dir)))
		goto out;
	json_t *j = info_json(d, dir);
	if (!j) {
		rc = titan_err_nomem();
		goto out;
	}
	if (as_json) {
		char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
		if (s)
			printf("%s\n", s);
		free(s);
	} else {
		info_text(j);
	}
	json_decref(j);
	rc = cli_finish_stdout();
out:
	dataset_close(d);
	opt_list_free(&rest);
	return rc;
}

/* ---- cat ------------------------------------------------------------- */

typedef enum { OUT_TEXT, OUT_U32 } id_format;

typedef struct cat_run {
	const titan_tok *tok;  /* decode when set */
	bool jsonl, lines;
	id_format fmt;
	titan_bytes out;
	titan_bytes text;
} cat_run;

static void put_u32_le(uint8_t *p, uint32_t x)
{
	p[0] = (uint8_t)x;
	p[1] = (uint8_t)(x >> 8);
	p[2] = (uint8_t)(x >> 16);
	p[3] = (uint8_t)(x >> 24);
}

static int emit_ids(cat_run *c, const uint32_t *ids, size_t n)
{
	int rc = bytes_reserve(&c->out, n * 11 + 16);
	if (rc)
		return rc;
	uint8_t *p = c->out.v + c->out.n;
	if (c->fmt == OUT_U32) {
		for (size_t i = 0; i < n; i++, p += 4)
			put_u32_le(p, ids[i]);
		put_u32_le(p, 0xFFFFFFFFu);
		p += 4;
	} else {
		if (c->jsonl) {
			memcpy(p, "{\"ids\":[", 8);
			p += 8;
		}
		for (size_t i = 0; i < n; i++) {
			if (i)
				*p++ = c->jsonl ? ',' : ' ';
			char digits[10];
			int nd = 0;
			uint32_t id = ids[i];
			do
				digits[nd++] = (char)('0' + id % 10);
			while ((id /= 10));
			while (nd)
				*p++ = (uint8_t)digits[--nd];
		}
		if (c->jsonl) {
			*p++ = ']';
			*p++ = '}';
		}
		*p++ = '\n';
	}
	c->out.n = (size_t)(p - c->out.v);
	return 0;
}

static int emit_text(cat_run *c, const uint32_t *ids, size_t n, uint64_t k)
{
	c->text.n = 0;
	int rc = tok_decode(c->tok, ids, n, &c->text);
	if (rc)
		return rc;
	if (!c->jsonl) {
		rc = bytes_append(&c->out, c->text.v, c->text.n);
		return rc || !c->lines ? rc : bytes_append(&c->out, "\n", 1);
	}
	json_t *j = json_object();
	json_t *s = json_stringn((const char *)c->text.v, c->text.n);
	if (!j || !s) {
		json_decref(j);
		json_decref(s);
		return titan_err(TITAN_EFORMAT, "document %llu is not valid UTF-8, so not JSON: "
				 "leave out --jsonl", (unsigned long long)k);
	}
	json_object_set_new(j, "text", s);
	char *line = json_dumps(j, 0);
	json_decref(j);
	if (!line)
		return titan_err_nomem();
	rc = bytes_append(&c->out, line, strlen(line));
	free(line);
	return rc ? rc : bytes_append(&c->out, "\n", 1);
}

static int cat_docs(dataset *d, int split, cat_run *c, bool strip, bool one, uint64_t which)
{
	const dataset_tokinfo *ti = dataset_tok(d);
	uint64_t ndocs = dataset_docs(d, split), first = 0, last = ndocs;
	if (one) {
		if (which >= ndocs)
			return titan_err(TITAN_ERANGE, "--doc %llu: the split has %llu document(s)",
					 (unsigned long long)which, (unsigned long long)ndocs);
		first = which;
		last = which + 1;
	}
	titan_u32s ids = {0};
	int rc = 0;
	for (uint64_t k = first; k < last && !rc; k++) {
		uint64_t start, len;
		if ((rc = dataset_doc(d, split, k, &start, &len)))
			break;
		ids.n = 0;
		if ((rc = u32s_reserve(&ids, len)) ||
		    (rc = dataset_read(d, split, start, len, ids.v)))
			break;
		const uint32_t *p = ids.v;
		size_t n = len;
		if (strip && ti->bos_added && n) {
			p++;
			n--;
		}
		if (strip && ti->eos_added && n)
			n--;
		rc = c->tok ? emit_text(c, p, n, k) : emit_ids(c, p, n);
		if (!rc && c->out.n >= (1u << 20)) {
			rc = write_out(c->out.v, c->out.n);
			c->out.n = 0;
		}
	}
	if (!rc)
		rc = write_out(c->out.v, c->out.n);
	c->out.n = 0;
	u32s_free(&ids);
	return rc;
}

static int cmd_cat(int argc, char **argv, titan_log *log)
{
	cli_tok_args ta = {0};
	const char *split_name = "train", *format = "text";
	bool decode = false, jsonl = false, lines = false, strip = false, help = false;
	long long doc = -1;
	int verbosity = 1;
	const opt_spec specs[] = {
		CLI_TOK_OPTS(ta),
		{"split", 0, OPT_STR, &split_name, "S", "train (default) or val"},
		{"decode", 'd', OPT_FLAG, &decode, NULL, "print text (needs -t TOK)"},
		{"jsonl", 0, OPT_FLAG, &jsonl, NULL,
		 "one JSON object per document: {\"text\": ...}, or {\"ids\": [...]}"},
		{"lines", 0, OPT_FLAG, &lines, NULL, "--decode: a newline after each document"},
		{"doc", 0, OPT_INT, &doc, "N", "only document N (from 0) of the split"},
		{"format", 0, OPT_STR, &format, "F", "ids: text (default) or u32"},
		{"strip", 0, OPT_FLAG, &strip, NULL, "leave out the BOS/EOS packing added"},
		{"quiet", 'q', OPT_DEC, &verbosity, NULL, "(no effect)"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	dataset *d = NULL;
	titan_tok *tok = NULL;
	cat_run c = {0};
	const char *dir = NULL;
	int split = SPLIT_TRAIN;
	int rc = dir_command_args(specs, CAT_SYNOPSIS, &help, argc, argv, &rest, &dir);
	if (!rc && !dir)
		goto out;
	if (!rc)
		rc = dataset_split_index(split_name, &split);
	if (!rc && !strcmp(format, "u32"))
		c.fmt = OUT_U32;
	else if (!rc && strcmp(format, "text"))
		rc = titan_err(TITAN_EUSAGE, "unknown --format '%s' (expected text or u32)", format);
	if (!rc && decode && !ta.path)
		rc = titan_err(TITAN_EUSAGE, "--decode needs the tokenizer (-t TOK)");
	if (!rc && decode && c.fmt == OUT_U32)
		rc = titan_err(TITAN_EUSAGE, "--format u32 prints ids: it does not go with --decode");
	if (!rc && jsonl && c.fmt == OUT_U32)
		rc = titan_err(TITAN_EUSAGE, "--format u32 does not go with --jsonl");
	if (!rc && lines && !decode)
		rc = titan_err(TITAN_EUSAGE, "--lines goes with --decode (ids are one document a line)");
	if (!rc && doc < -1)
		rc = titan_err(TITAN_EUSAGE, "--doc must be 0 or more, got %lld", doc);
	if (rc || (rc = dataset_open(&d, dir)))
		goto out;
	if (decode) {
		if ((rc = cli_load_tok(&ta, &tok)))
			goto out;
		if (strcmp(tok_hash(tok), dataset_tok(d)->sha256)) {
			rc = titan_err(TITAN_EFORMAT, "'%s' is not the tokenizer '%s' was packed with "
				       "(sha256 %.12s..., the dataset's %.12s...)", ta.path, dir,
				       tok_hash(tok), dataset_tok(d)->sha256);
			goto out;
		}
		c.tok = tok;
	}
	c.jsonl = jsonl;
	c.lines = lines;
	rc = cat_docs(d, split, &c, strip || decode, doc >= 0, (uint64_t)doc);
	if (!rc)
		rc = cli_finish_stdout();
out:
	bytes_free(&c.out);
	bytes_free(&c.text);
	tok_free(tok);
	dataset_close(d);
	opt_list_free(&rest);
	opt_list_free(&ta.specials);
	return rc;
}

/* ---- verify ---------------------------------------------------------- */

static int cmd_verify(int argc, char **argv, titan_log *log)
{
	bool help = false;
	int verbosity = 1;
	const opt_spec specs[] = {
		{"quiet", 'q', OPT_DEC, &verbosity, NULL, "print nothing when the dataset is sound"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	dataset *d = NULL;
	const char *dir = NULL;
	int rc = dir_command_args(specs, VERIFY_SYNOPSIS, &help, argc, argv, &rest, &dir);
	if (rc || !dir || (rc = dataset_verify(dir)) || (rc = dataset_open(&d, dir)))
		goto out;
	uint64_t shards = 0, blocks = 0;
	for (int s = 0; s < SPLIT_COUNT && !rc; s++) {
		for (size_t i = 0; i < dataset_nshards(d, s) && !rc; i++) {
			shard_reader *r;
			if ((rc = shard_open(&r, dataset_shard_path(d, s, i))))
				break;
			shards++;
			blocks += shard_nblocks(r);
			shard_close(r);
		}
	}
	if (!rc && verbosity > 0)
		printf("ok: %llu shards, %llu blocks\n", (unsigned long long)shards,
		       (unsigned long long)blocks);
	if (!rc)
		rc = cli_finish_stdout();
out:
	dataset_close(d);
	opt_list_free(&rest);
	return rc;
}

/* ---- main ------------------------------------------------------------ */

int main(int argc, char **argv)
{
	static const cli_command cmds[] = {
		{"pack", cmd_pack},
		{"info", cmd_info},
		{"cat", cmd_cat},
		{"verify", cmd_verify},
		{0},
	};
	/* Options without a command word mean pack. */
	const cli_tool tool = {.prog = PROG, .usage = usage_top, .cmds = cmds, .bare = cmd_pack};
	return cli_main(&tool, argc, argv);
}
