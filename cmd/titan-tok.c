/* titan-tok - byte-level BPE tokenizer: encode, decode, info, train.
 *
 * Thin over lib/tok: parse options, stream documents through the encoder on
 * a thread pool, write ids.  Exit 0 ok, 1 runtime failure, 2 usage error. */
#include "core/base.h"
#include "cli.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/log.h"
#include "core/opt.h"
#include "core/pool.h"
#include "data/ingest.h"
#include "tok/batch.h"
#include "tok/tok.h"
#include "tok/train.h"

#include <jansson.h>

#define PROG "titan-tok"

static const char usage_top[] =
	"usage: titan-tok encode -t TOK [options] [FILE...|-]\n"
	"       titan-tok decode -t TOK [options] [FILE...|-]\n"
	"       titan-tok info -t TOK [--json]\n"
	"       titan-tok train -o OUT --vocab-size N [options] INPUT...\n"
	"\n"
	"Byte-level BPE tokenizer, token for token compatible with Hugging Face\n"
	"tokenizers and tiktoken.  TOK is a tokenizer.json, a directory holding\n"
	"one, or a tiktoken rank file.  'titan-tok COMMAND --help' for options;\n"
	"man titan-tok for the details.\n";

/* Options every subcommand that loads a tokenizer shares. */
typedef struct tok_common {
	cli_tok_args tok;
	long long threads;
	int verbosity;
	bool help;
	const char *out;
} tok_common;

#define COMMON_MISC_OPTS(c)                                                             \
	{"quiet", 'q', OPT_DEC, &(c).verbosity, NULL, "no progress or summary"},       \
	{"verbose", 'v', OPT_INC, &(c).verbosity, NULL, "more detail"},                \
	{"help", 'h', OPT_FLAG, &(c).help, NULL, "show this help"}

/* ---- encode ---------------------------------------------------------- */

typedef enum { FMT_TEXT, FMT_U32, FMT_JSONL } id_format;

static int parse_id_format(const char *s, bool allow_jsonl, id_format *f)
{
	if (!strcmp(s, "text"))
		*f = FMT_TEXT;
	else if (!strcmp(s, "u32"))
		*f = FMT_U32;
	else if (allow_jsonl && !strcmp(s, "jsonl"))
		*f = FMT_JSONL;
	else
		return titan_err(TITAN_EUSAGE, "unknown --format '%s' (expected text, u32%s)", s,
				 allow_jsonl ? " or jsonl" : "");
	return 0;
}

typedef struct encoder_run {
	id_format fmt;
	int64_t bos, eos;  /* -1 when not added */
	titan_bytes out;   /* formatted output waiting to be written */
	titan_atomic *sink;
	uint64_t tokens_out, docs;
	bool in_doc;       /* a document's first piece is out, its end is not */
	bool sep;          /* the next id of the document needs a separator */
} encoder_run;

static int flush_out(encoder_run *r, bool force)
{
	if (r->out.n == 0 || (!force && r->out.n < (1u << 20)))
		return 0;
	int rc = file_write(r->sink->fp, r->sink->path, r->out.v, r->out.n);
	r->out.n = 0;
	return rc;
}

/* Append ids to the output in its format; the room is reserved. */
static void put_ids(encoder_run *r, const uint32_t *ids, size_t n)
{
	uint8_t *p = r->out.v + r->out.n;
	for (size_t i = 0; i < n; i++) {
		uint32_t id = ids[i];
		if (r->fmt == FMT_U32) {
			p[0] = (uint8_t)id;
			p[1] = (uint8_t)(id >> 8);
			p[2] = (uint8_t)(id >> 16);
			p[3] = (uint8_t)(id >> 24);
			p += 4;
			continue;
		}
		if (r->sep)
			*p++ = r->fmt == FMT_JSONL ? ',' : ' ';
		r->sep = true;
		char digits[10];
		int nd = 0;
		do
			digits[nd++] = (char)('0' + id % 10);
		while ((id /= 10));
		while (nd)
			*p++ = (uint8_t)digits[--nd];
	}
	r->out.n = (size_t)(p - r->out.v);
}

/* Append text that needs no separator (the room is reserved). */
static void put_raw(encoder_run *r, const char *s, size_t n)
{
	memcpy(r->out.v + r->out.n, s, n);
	r->out.n += n;
}

/* tok_batch's function: a document's ids, or a piece's, to the output in
 * the output format, in input order.  Ids go out a slice at a time, so the
 * buffer stays about 1 MB whatever the document's length. */
static int format_ids(void *arg, const uint32_t *ids, size_t n, bool doc_end)
{
	enum { SLICE = 1 << 16, ROOM = 11 };  /* at most 11 bytes per id */
	encoder_run *r = arg;
	int rc = bytes_reserve(&r->out, 2 * ROOM + 16);
	if (rc)
		return rc;
	if (!r->in_doc) {
		r->in_doc = true;
		r->sep = false;
		if (r->fmt == FMT_JSONL)
			put_raw(r, "{\"ids\":[", 8);
		if (r->bos >= 0)
			put_ids(r, &(uint32_t){(uint32_t)r->bos}, 1);
	}
	for (size_t at = 0; at < n && !rc; at += SLICE) {
		size_t k = TITAN_MIN((size_t)SLICE, n - at);
		if (!(rc = bytes_reserve(&r->out, k * ROOM + 2 * ROOM + 16))) {
			put_ids(r, ids + at, k);
			rc = flush_out(r, false);
		}
	}
	r->tokens_out += n;
	if (rc || !doc_end)
		return rc;
	if ((rc = bytes_reserve(&r->out, 2 * ROOM + 16)))
		return rc;
	if (r->eos >= 0)
		put_ids(r, &(uint32_t){(uint32_t)r->eos}, 1);
	if (r->fmt == FMT_U32)
		put_raw(r, "\xff\xff\xff\xff", 4);
	else
		put_raw(r, r->fmt == FMT_JSONL ? "]}\n" : "\n", r->fmt == FMT_JSONL ? 3 : 1);
	r->tokens_out += (r->bos >= 0) + (r->eos >= 0);
	r->docs++;
	r->in_doc = false;
	return flush_out(r, false);
}

static int run_encode(tok_batch *b, encoder_run *r, ingest *in, titan_log *log)
{
	ingest_doc doc;
	int rc;
	while ((rc = ingest_next(in, &doc)) == 1) {
		if ((rc = tok_batch_add_part(b, doc.text, doc.len, !doc.more)))
			return rc;
		log_progress(log, "encode", (double)ingest_bytes_done(in),
			     (double)ingest_bytes_total(in), "B", false);
	}
	if (rc < 0 || (rc = tok_batch_flush(b)))
		return rc;
	log_progress_end(log);
	return flush_out(r, true);
}

static int cmd_encode(int argc, char **argv, titan_log *log)
{
	tok_common c = {.threads = 0, .verbosity = 1};
	bool bos = false, eos = false, lines = false, jsonl = false, stats = false, skip_bad = false;
	const char *format = "text", *field = NULL, *in_format = NULL, *ahead = NULL;
	const opt_spec specs[] = {
		CLI_TOK_OPTS(c.tok),
		{"bos", 0, OPT_FLAG, &bos, NULL, "begin each document with the BOS token"},
		{"eos", 0, OPT_FLAG, &eos, NULL, "end each document with the EOS token"},
		{"lines", 0, OPT_FLAG, &lines, NULL, "each line is a document (without its newline)"},
		{"jsonl", 0, OPT_FLAG, &jsonl, NULL, "input is JSON lines; the document is --field"},
		{"field", 0, OPT_STR, &field, "NAME", "JSONL field, dotted paths allowed (default text)"},
		{"input-format", 0, OPT_STR, &in_format, "F", "input: auto, text or jsonl (default auto)"},
		{"skip-bad", 0, OPT_FLAG, &skip_bad, NULL, "skip invalid JSON lines and count them"},
		{"format", 'f', OPT_STR, &format, "F", "output: text (default), u32 or jsonl"},
		{"output", 'o', OPT_STR, &c.out, "FILE", "write here (atomically) instead of stdout"},
		{"threads", 'T', OPT_INT, &c.threads, "N", "worker threads (default 0: all cores)"},
		CLI_READ_AHEAD_OPT(ahead),
		{"stats", 0, OPT_FLAG, &stats, NULL, "print bytes, tokens and encode speed on stderr"},
		COMMON_MISC_OPTS(c),
		{0},
	};
	opt_list files = {0};
	titan_tok *tok = NULL;
	ingest *in = NULL;
	titan_pool *pool = NULL;
	tok_batch *batch = NULL;
	titan_atomic sink = {0};
	bool sink_open = false;
	encoder_run r = {.bos = -1, .eos = -1};
	id_format fmt;
	ingest_opts io = {.format = INGEST_AUTO, .field = field, .lines = lines, .pieces = true};
	int rc = opt_parse(specs, argc, argv, &files);
	if (!rc && c.help) {
		cli_print_help("titan-tok encode -t TOK [--bos] [--eos] [--lines] [--jsonl] "
			   "[--format text|u32|jsonl] [FILE...|-]", specs);
		goto out;
	}
	if (!rc)
		rc = parse_id_format(format, true, &fmt);
	if (!rc && in_format)
		rc = ingest_parse_format(in_format, &io.format);
	if (!rc)
		rc = cli_parse_read_ahead(ahead, &io.read_ahead);
	if (!rc && jsonl)
		io.format = INGEST_JSONL;
	if (!rc && c.threads < 0)
		rc = titan_err(TITAN_EUSAGE, "--threads must be 0 (all cores) or more, got %lld",
			       c.threads);
	if (rc) {
		goto out;
	}
	log->verbosity = c.verbosity;
	io.field = field;
	io.lines = lines;
	io.skip_bad = skip_bad;
	if ((rc = cli_load_tok(&c.tok, &tok)))
		goto out;
	r.fmt = fmt;
	if (bos && (r.bos = tok_bos(tok)) < 0)
		rc = titan_err(TITAN_EUSAGE, "--bos: tokenizer '%s' has no BOS token", c.tok.path);
	if (!rc && eos && (r.eos = tok_eos(tok)) < 0)
		rc = titan_err(TITAN_EUSAGE, "--eos: tokenizer '%s' has no EOS token", c.tok.path);
	if (rc)
		goto out;
	/* the job as a user sees it, load excluded */
	double t_start = titan_now(), cpu_start = titan_cpu_now();
	static const char *const stdin_only[] = {"-"};
	const char *const *inputs = files.n ? files.v : stdin_only;
	if ((rc = pool_new(&pool, (int)c.threads)))
		goto out;
	io.readers = pool_threads(pool);
	if ((rc = ingest_open(&in, inputs, files.n ? files.n : 1, &io)) ||
	    (rc = tok_batch_new(&batch, tok, pool, format_ids, &r)))
		goto out;
	if ((rc = atomic_open(&sink, c.out ? c.out : "-")))
		goto out;
	sink_open = true;
	r.sink = &sink;
	if ((rc = run_encode(batch, &r, in, log)))
		goto out;
	sink_open = false;
	if ((rc = atomic_commit(&sink)))
		goto out;
	if (skip_bad && ingest_skipped(in))
		log_warn(log, "skipped %llu invalid JSON line(s)",
			 (unsigned long long)ingest_skipped(in));
	if (stats) {
		double secs = tok_batch_seconds(batch);
		uint64_t bytes = tok_batch_bytes(batch);
		double job = titan_now() - t_start;
		fprintf(stderr, "%s: encoded %llu bytes into %llu tokens in %.3f s "
			"(%.2f MB/s, %d threads); %.3f s from first read to last write, "
			"%.3f s of CPU\n",
			PROG, (unsigned long long)bytes, (unsigned long long)r.tokens_out, secs,
			secs > 0 ? (double)bytes / 1e6 / secs : 0.0, pool_threads(pool), job,
			titan_cpu_now() - cpu_start);
	}
out:
	log_progress_end(log);
	tok_batch_free(batch);  /* joins the thread that writes to sink */
	if (sink_open)
		atomic_abort(&sink);
	bytes_free(&r.out);
	pool_free(pool);
	ingest_close(in);
	tok_free(tok);
	opt_list_free(&files);
	opt_list_free(&c.tok.specials);
	return rc;
}

/* ---- decode ---------------------------------------------------------- */

typedef struct decoder_run {
	const titan_tok *tok;
	bool lines;
	titan_bytes out;
	titan_atomic *sink;
} decoder_run;

static int decode_ids(decoder_run *d, const uint32_t *ids, size_t n, bool doc_end)
{
	int rc = tok_decode(d->tok, ids, n, &d->out);
	if (!rc && doc_end && d->lines)
		rc = bytes_append(&d->out, "\n", 1);
	if (!rc && d->out.n >= (1u << 20)) {
		rc = file_write(d->sink->fp, d->sink->path, d->out.v, d->out.n);
		d->out.n = 0;
	}
	return rc;
}

/* Text: one document per line, ids separated by blanks. */
static int decode_text(decoder_run *d, FILE *fp, const char *name)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	uint64_t lineno = 0;
	titan_u32s ids = {0};
	int rc = 0;
	while (!rc && (len = getline(&line, &cap, fp)) >= 0) {
		lineno++;
		ids.n = 0;
		char *p = line, *end = line + len;
		while (!rc && p < end) {
			while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
				p++;
			if (p == end)
				break;
			char *q;
			errno = 0;
			unsigned long long v = strtoull(p, &q, 10);
			if (q == p || (q < end && !strchr(" \t\r\n", *q)) || errno || v > UINT32_MAX ||
			    *p == '-' || *p == '+') {
				char *tend = p;
				while (tend < end && !strchr(" \t\r\n", *tend))
					tend++;
				rc = titan_err(TITAN_EFORMAT, "'%s':%llu: expected a token id, got '%.*s'",
					       name, (unsigned long long)lineno, (int)TITAN_MIN(tend - p, 40), p);
				break;
			}
			rc = u32s_push(&ids, (uint32_t)v);
			p = q;
		}
		if (!rc && (rc = decode_ids(d, ids.v, ids.n, true)))
			titan_err_prefix(rc, "'%s':%llu", name, (unsigned long long)lineno);
	}
	if (!rc && ferror(fp))
		rc = titan_err_errno(TITAN_EIO, "cannot read '%s'", name);
	free(line);
	u32s_free(&ids);
	return rc;
}

/* u32: little-endian ids, 0xFFFFFFFF after each document. */
static int decode_u32(decoder_run *d, FILE *fp, const char *name)
{
	enum { N = 1 << 16 };
	uint8_t *buf = malloc(N * 4 + 4);
	titan_u32s ids = {0};
	size_t have = 0;
	uint64_t offset = 0;
	int rc = buf ? u32s_reserve(&ids, N) : titan_err_nomem();
	while (!rc) {
		size_t got = fread(buf + have, 1, N * 4 - have, fp);
		have += got;
		if (got == 0)
			break;
		size_t nw = have / 4;
		ids.n = 0;
		for (size_t i = 0; i < nw && !rc; i++) {
			const uint8_t *p = buf + 4 * i;
			uint32_t id = p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				      (uint32_t)p[3] << 24;
			if (id == 0xFFFFFFFFu) {
				rc = decode_ids(d, ids.v, ids.n, true);
				ids.n = 0;
			} else
				ids.v[ids.n++] = id;
		}
		if (!rc)
			rc = decode_ids(d, ids.v, ids.n, false);
		if (rc)
			titan_err_prefix(rc, "'%s': near byte %llu", name, (unsigned long long)offset);
		memmove(buf, buf + nw * 4, have - nw * 4);
		offset += nw * 4;
		have -= nw * 4;
	}
	if (!rc && ferror(fp))
		rc = titan_err_errno(TITAN_EIO, "cannot read '%s'", name);
	if (!rc && have)
		rc = titan_err(TITAN_EFORMAT, "'%s': %zu trailing byte(s) at offset %llu: u32 input "
			       "must be a whole number of 4-byte ids", name, have,
			       (unsigned long long)offset);
	free(buf);
	u32s_free(&ids);
	return rc;
}

static int cmd_decode(int argc, char **argv, titan_log *log)
{
	tok_common c = {.verbosity = 1};
	bool lines = false;
	const char *format = "text";
	const opt_spec specs[] = {
		CLI_TOK_OPTS(c.tok),
		{"format", 'f', OPT_STR, &format, "F", "input: text (default) or u32"},
		{"lines", 0, OPT_FLAG, &lines, NULL, "write a newline after each document"},
		{"output", 'o', OPT_STR, &c.out, "FILE", "write here (atomically) instead of stdout"},
		COMMON_MISC_OPTS(c),
		{0},
	};
	opt_list files = {0};
	titan_tok *tok = NULL;
	titan_atomic sink = {0};
	bool sink_open = false;
	decoder_run d = {.lines = false};
	id_format fmt = FMT_TEXT;
	int rc = opt_parse(specs, argc, argv, &files);
	if (!rc && c.help) {
		cli_print_help("titan-tok decode -t TOK [--format text|u32] [--lines] [FILE...|-]", specs);
		goto out;
	}
	if (!rc)
		rc = parse_id_format(format, false, &fmt);
	if (rc) {
		goto out;
	}
	log->verbosity = c.verbosity;
	if ((rc = cli_load_tok(&c.tok, &tok)))
		goto out;
	d.tok = tok;
	d.lines = lines;
	if ((rc = atomic_open(&sink, c.out ? c.out : "-")))
		goto out;
	sink_open = true;
	d.sink = &sink;
	size_t nf = files.n ? files.n : 1;
	for (size_t i = 0; i < nf && !rc; i++) {
		const char *name = files.n ? files.v[i] : "-";
		FILE *fp = strcmp(name, "-") ? fopen(name, "rb") : stdin;
		if (!fp) {
			rc = titan_err_errno(TITAN_EIO, "cannot open '%s'", name);
			break;
		}
		rc = fmt == FMT_U32 ? decode_u32(&d, fp, name) : decode_text(&d, fp, name);
		if (fp != stdin)
			fclose(fp);
	}
	if (!rc && d.out.n)
		rc = file_write(sink.fp, sink.path, d.out.v, d.out.n);
	if (!rc) {
		sink_open = false;
		rc = atomic_commit(&sink);
	}
out:
	if (sink_open)
		atomic_abort(&sink);
	bytes_free(&d.out);
	tok_free(tok);
	opt_list_free(&files);
	opt_list_free(&c.tok.specials);
	return rc;
}

/* ---- info ------------------------------------------------------------ */

static json_t *info_json(const titan_tok *tok, const char *path)
{
	json_t *j = json_object(), *added = json_array();
	const pretok *pt = tok_pretok(tok);
	json_object_set_new(j, "path", json_string(path));
	json_object_set_new(j, "model", json_string("BPE"));
	json_object_set_new(j, "byte_level", json_true());
	json_object_set_new(j, "source_format", json_string(tok_source_format(tok)));
	json_object_set_new(j, "vocab_size", json_integer(tok_vocab_size(tok)));
	json_object_set_new(j, "pattern", json_string(pretok_pattern(pt)));
	json_object_set_new(j, "pattern_kind", json_string(pretok_kind(pt)));
	json_object_set_new(j, "ignore_merges", json_boolean(tok_ignore_merges(tok)));
	json_object_set_new(j, "sha256", json_string(tok_hash(tok)));
	const int64_t be[2] = {tok_bos(tok), tok_eos(tok)};
	const char *names[2] = {"bos", "eos"};
	for (int k = 0; k < 2; k++) {
		if (be[k] < 0) {
			json_object_set_new(j, names[k], json_null());
			continue;
		}
		size_t n;
		const uint8_t *b = tok_token_bytes(tok, (uint32_t)be[k], &n);
		json_object_set_new(j, names[k],
				    json_pack("{s:I,s:s%}", "id", (json_int_t)be[k], "text",
					      b ? (const char *)b : "", b ? n : 0));
	}
	for (size_t i = 0; i < tok_added_count(tok); i++) {
		uint32_t id;
		bool special;
		const char *s = tok_added(tok, i, &id, &special);
		json_array_append_new(added, json_pack("{s:I,s:s,s:b}", "id", (json_int_t)id,
						       "content", s, "special", special));
	}
	json_object_set_new(j, "added_tokens", added);
	return j;
}

static void info_text(const titan_tok *tok, json_t *j)
{
	printf("model          BPE (byte-level)\n");
	printf("source         %s\n", tok_source_format(tok));
	printf("vocab size     %u\n", tok_vocab_size(tok));
	printf("pre-tokenizer  %s: %s\n", pretok_kind(tok_pretok(tok)),
	       pretok_pattern(tok_pretok(tok)));
	printf("ignore merges  %s\n", tok_ignore_merges(tok) ? "yes" : "no");
	const char *names[2] = {"bos", "eos"};
	for (int k = 0; k < 2; k++) {
		json_t *v = json_object_get(j, names[k]);
		if (json_is_null(v))
			printf("%-14s none\n", names[k]);
		else
			printf("%-14s %lld %s\n", names[k],
			       (long long)json_integer_value(json_object_get(v, "id")),
			       json_string_value(json_object_get(v, "text")));
	}
	size_t n = tok_added_count(tok), nspecial = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t id;
		bool special;
		tok_added(tok, i, &id, &special);
		nspecial += special;
	}
	printf("added tokens   %zu (%zu special)\n", n, nspecial);
	for (size_t i = 0; i < n; i++) {
		uint32_t id;
		bool special;
		const char *s = tok_added(tok, i, &id, &special);
		printf("  %8u  %s%s\n", id, s, special ? "" : "  (not special)");
	}
	printf("sha256         %s\n", tok_hash(tok));
}

static int cmd_info(int argc, char **argv, titan_log *log)
{
	tok_common c = {.verbosity = 1};
	bool as_json = false;
	const opt_spec specs[] = {
		CLI_TOK_OPTS(c.tok),
		{"json", 0, OPT_FLAG, &as_json, NULL, "print JSON"},
		COMMON_MISC_OPTS(c),
		{0},
	};
	opt_list rest = {0};
	titan_tok *tok = NULL;
	int rc = opt_parse(specs, argc, argv, &rest);
	if (!rc && c.help) {
		cli_print_help("titan-tok info -t TOK [--json]", specs);
		goto out;
	}
	if (!rc && rest.n == 1 && !c.tok.path)
		c.tok.path = rest.v[0];
	else if (!rc && rest.n)
		rc = titan_err(TITAN_EUSAGE, "unexpected argument '%s'", rest.v[0]);
	if (rc) {
		goto out;
	}
	if ((rc = cli_load_tok(&c.tok, &tok)))
		goto out;
	json_t *j = info_json(tok, c.tok.path);
	if (!j) {
		rc = titan_err_nomem();
		goto out;
	}
	if (as_json) {
		char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (s)
			printf("%s\n", s);
		free(s);
	} else
		info_text(tok, j);
	json_decref(j);
	if (fflush(stdout) || ferror(stdout))
		rc = titan_err_errno(TITAN_EIO, "cannot write standard output");
out:
	tok_free(tok);
	opt_list_free(&rest);
	opt_list_free(&c.tok.specials);
	return rc;
}

/* ---- train ----------------------------------------------------------- */

static int cmd_train(int argc, char **argv, titan_log *log)
{
	tok_common c = {.verbosity = 1};
	long long vocab = 0, min_freq = 2;
	bool lines = false, jsonl = false, skip_bad = false;
	const char *pattern = "llama3", *field = NULL, *in_format = NULL, *ahead = NULL;
	opt_list specials = {0};
	const opt_spec specs[] = {
		{"output", 'o', OPT_STR, &c.out, "OUT", "tokenizer.json to write (atomically)"},
		{"vocab-size", 0, OPT_INT, &vocab, "N", "tokens in all: 256 bytes + merges + specials"},
		{"pattern", 0, OPT_STR, &pattern, "P",
		 "split pattern: gpt2, cl100k, llama3 (default), o200k or a regex"},
		{"special", 0, OPT_LIST, &specials, "TOKEN", "add a special token (repeatable)"},
		{"min-frequency", 0, OPT_INT, &min_freq, "N", "never merge a pair seen fewer times (default 2)"},
		{"lines", 0, OPT_FLAG, &lines, NULL, "each line is a document"},
		{"jsonl", 0, OPT_FLAG, &jsonl, NULL, "input is JSON lines; the document is --field"},
		{"field", 0, OPT_STR, &field, "NAME", "JSONL field, dotted paths allowed (default text)"},
		{"input-format", 0, OPT_STR, &in_format, "F", "input: auto, text or jsonl (default auto)"},
		{"skip-bad", 0, OPT_FLAG, &skip_bad, NULL, "skip invalid JSON lines and count them"},
		{"threads", 'T', OPT_INT, &c.threads, "N", "worker threads (default 0: all cores)"},
		CLI_READ_AHEAD_OPT(ahead),
		COMMON_MISC_OPTS(c),
		{0},
	};
	opt_list inputs = {0};
	titan_pool *pool = NULL;
	ingest *in = NULL;
	ingest_opts io = {.format = INGEST_AUTO};
	int rc = opt_parse(specs, argc, argv, &inputs);
	if (!rc && c.help) {
		cli_print_help("titan-tok train -o OUT --vocab-size N [--pattern P] [--special TOKEN]... "
			   "[--min-frequency N] [--threads N] INPUT...", specs);
		goto out;
	}
	if (!rc && in_format)
		rc = ingest_parse_format(in_format, &io.format);
	if (!rc)
		rc = cli_parse_read_ahead(ahead, &io.read_ahead);
	if (!rc && !c.out)
		rc = titan_err(TITAN_EUSAGE, "no output given (-o OUT)");
	if (!rc && (vocab <= 0 || vocab > UINT32_MAX))
		rc = titan_err(TITAN_EUSAGE, "--vocab-size must be a positive integer%s",
			       vocab ? "" : " (it is required)");
	if (!rc && min_freq < 1)
		rc = titan_err(TITAN_EUSAGE, "--min-frequency must be at least 1, got %lld", min_freq);
	if (!rc && c.threads < 0)
		rc = titan_err(TITAN_EUSAGE, "--threads must be 0 (all cores) or more, got %lld",
			       c.threads);
	if (!rc && !inputs.n)
		rc = titan_err(TITAN_EUSAGE, "no input given (INPUT..., or - for stdin)");
	if (rc) {
		goto out;
	}
	log->verbosity = c.verbosity;
	if (jsonl)
		io.format = INGEST_JSONL;
	io.field = field;
	io.lines = lines;
	io.skip_bad = skip_bad;
	if ((rc = pool_new(&pool, (int)c.threads)))
		goto out;
	io.readers = pool_threads(pool);
	if ((rc = ingest_open(&in, inputs.v, inputs.n, &io)))
		goto out;
	tok_train_opts to = {
		.vocab_size = (uint32_t)vocab,
		.pattern = pattern,
		.specials = specials.v,
		.nspecials = specials.n,
		.min_frequency = (uint64_t)min_freq,
		.pool = pool,
		.log = log,
	};
	rc = tok_train(&to, in, c.out);
	if (!rc && skip_bad && ingest_skipped(in))
		log_warn(log, "skipped %llu invalid JSON line(s)",
			 (unsigned long long)ingest_skipped(in));
out:
	ingest_close(in);
	pool_free(pool);
	opt_list_free(&inputs);
	opt_list_free(&specials);
	opt_list_free(&c.tok.specials);
	return rc;
}

/* ---- main ------------------------------------------------------------ */

int main(int argc, char **argv)
{
	static const cli_command cmds[] = {
		{"encode", cmd_encode},
		{"decode", cmd_decode},
		{"info", cmd_info},
		{"train", cmd_train},
		{0},
	};
	const cli_tool tool = {.prog = PROG, .usage = usage_top, .cmds = cmds};
	return cli_main(&tool, argc, argv);
}
