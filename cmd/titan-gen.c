/* titan-gen - sample from or score with a titan checkpoint.
 *
 * Thin over lib/gen and the decoder (lib/model/llama_decode.h): load the
 * checkpoint and its tokenizer, turn the input into token ids, prefill,
 * decode with the KV cache, and write text, JSON or JSON lines.  Exit 0 ok,
 * 1 runtime failure, 2 usage error. */
#include "core/base.h"

#include <jansson.h>
#include <math.h>

#include "cli.h"
#include "dist/comm.h"
#include "dist/tp.h"
#include "core/buf.h"
#include "core/file.h"
#include "gen/gen.h"
#include "gen/load.h"
#include "gen/sample.h"
#include "model/llama_decode.h"

#define PROG "titan-gen"
#define SYNOPSIS "titan-gen -m CKPT [-t TOK] [options] [PROMPT|-]"
#define JSONL_SYNOPSIS "titan-gen -m CKPT --jsonl [options] [FILE|-]"
#define SCORE_SYNOPSIS "titan-gen -m CKPT --score [--json] [--ids FILE|-] [TEXT|-]"

/* Tokens a prefill call takes at most: enough for sgemm to run at full
 * speed, small enough that the scratch stays a few MiB. */
#define PREFILL_CHUNK 256

static const char usage_top[] =
	"usage: " SYNOPSIS "\n"
	"       " JSONL_SYNOPSIS "\n"
	"       " SCORE_SYNOPSIS "\n"
	"\n"
	"Continue PROMPT (or standard input with -) with a model trained by\n"
	"titan-train, streaming the text as it is decoded; or, with --score, give\n"
	"the log-probability of every token of the input.  CKPT is a step\n"
	"directory or a checkpoint folder (its latest step).  The tokenizer is the\n"
	"checkpoint's own unless -t names one.\n"
	"\n"
	"options:\n"
	"  -m, --model CKPT          checkpoint step directory or folder\n"
	"  -t, --tokenizer TOK       tokenizer (default: the checkpoint's)\n"
	"  -n, --max-new-tokens N    tokens to generate at most (default 256)\n"
	"      --temperature T       0: greedy (default 0.8)\n"
	"      --top-k K             sample from the K most likely tokens (default 40, 0: all)\n"
	"      --top-p P             ... that hold probability P (default 0.95, 1: all)\n"
	"      --seed S              random seed (default 0)\n"
	"      --stop STR            stop before STR (repeatable)\n"
	"      --no-bos              do not start a text prompt with the BOS token\n"
	"      --ignore-eos          go on past the end-of-text token\n"
	"      --ids FILE            token ids (whitespace-separated) instead of text; - is stdin\n"
	"      --json                one JSON object instead of text\n"
	"      --jsonl               JSON lines in, {\"prompt\", \"max_new_tokens\"}; JSON lines out\n"
	"      --batch N             --jsonl: prompts decoded together (default 8)\n"
	"      --score               log-probabilities of the input instead of sampling\n"
	"      --tp N                tensor parallel over the N ranks of mpirun -np N\n"
	"  -q, --quiet               only errors\n"
	"  -v, --verbose             prefill and decode speed on stderr\n"
	"  -h, --help                this help\n"
	"      --version             the version\n"
	"\n"
	"man titan-gen for the details.\n";

struct args {
	const char *model, *ids_file;
	cli_tok_args tok;
	long long max_new, top_k, seed, batch, tp;
	const char *temperature, *top_p;
	opt_list stops;
	bool no_bos, ignore_eos, json, jsonl, score;
	int verbose;
};

/* Everything a run holds. */
struct ctx {
	struct args a;
	titan_log *log;
	gen_model *g;
	titan_tok *tok;
	tok_encoder *enc;
	gen_sampling sampling;
	gen_sampler *sampler;
	int V, max_seq;
	int64_t eos;
	/* speed, over the whole run */
	double prefill_s, decode_s;
	uint64_t prefill_tokens, decode_tokens;
	/* tensor parallel (--tp): every rank runs this same flow; rank 0
	 * reads the input and writes the output */
	comm *world;
	llama_hooks tp_hooks;
};

/* One sequence to continue. */
struct job {
	titan_u32s prompt;       /* ids fed first */
	char *prompt_text;       /* for the JSON output, or NULL */
	long long max_new;
	titan_u32s out;          /* generated ids */
	gen_stream text;
	titan_rng rng;
	const char *finish;      /* "stop" or "length" once done */
	char name[256];          /* for messages: "prompt", "in.jsonl:7" */
	bool stream;             /* write text to stdout as it comes */
};

static void job_free(struct job *j)
{
	u32s_free(&j->prompt);
	u32s_free(&j->out);
	free(j->prompt_text);
	gen_stream_free(&j->text);
}

static int parse_double(const char *s, const char *opt, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	if (!*s || *end || errno)
		return titan_err(TITAN_EUSAGE, "%s: '%s' is not a number", opt, s);
	return 0;
}

/* Token ids from text: "12 7\n300". */
static int parse_ids(const char *name, const titan_bytes *b, titan_u32s *out)
{
	size_t i = 0;
	int rc;

	while (i < b->n) {
		unsigned long long v = 0;
		size_t start;

		while (i < b->n && strchr(" \t\r\n", b->v[i]))
			i++;
		if (i == b->n)
			break;
		start = i;
		while (i < b->n && b->v[i] >= '0' && b->v[i] <= '9' && v <= UINT32_MAX)
			v = v * 10 + (b->v[i++] - '0');
		if (i == start || v > UINT32_MAX || (i < b->n && !strchr(" \t\r\n", b->v[i])))
			return titan_err(TITAN_EFORMAT, "'%s': offset %zu: expected a token id",
					 name, start);
		if ((rc = u32s_push(out, (uint32_t)v)))
			return rc;
	}
	return 0;
}

/* A whole input file ("-": stdin).  Under --tp rank 0 reads it (only it
 * has the launcher's stdin) and every rank gets the bytes, or the error. */
static int read_input(const struct ctx *c, const char *path, titan_bytes *out)
{
	int64_t head[2] = { 0, 0 };   /* status, length */
	int rc;

	if (!c->world || comm_size(c->world) == 1)
		return file_read_all(path, out);
	if (comm_rank(c->world) == 0) {
		head[0] = file_read_all(path, out);
		head[1] = (int64_t)out->n;
	}
	if ((rc = comm_broadcast(c->world, head, 2, COMM_I64, 0)))
		return rc;
	if (head[0]) {
		/* every rank fails alike; rank 0 has the message */
		return comm_rank(c->world) == 0 ? (int)head[0]
			: titan_err((int)head[0], "cannot read '%s'", path);
	}
	if (comm_rank(c->world) > 0 && (rc = bytes_reserve(out, (size_t)head[1])))
		return rc;
	out->n = (size_t)head[1];
	return out->n ? comm_broadcast(c->world, out->v, out->n, COMM_U8, 0) : 0;
}

/* Ids of text, after BOS unless --no-bos. */
static int encode(struct ctx *c, const void *text, size_t n, titan_u32s *out)
{
	int64_t bos = tok_bos(c->tok);
	int rc;

	if (!c->a.no_bos && bos >= 0 && (rc = u32s_push(out, (uint32_t)bos)))
		return rc;
	return tok_encode(c->enc, text, n, out);
}

static int check_ids(const struct ctx *c, const titan_u32s *ids, const char *what)
{
	for (size_t i = 0; i < ids->n; i++)
		if (ids->v[i] >= (uint32_t)c->V)
			return titan_err(TITAN_ERANGE, "%s: token %zu: id %u is past the model's "
					 "vocabulary (%d)", what, i, ids->v[i], c->V);
	return 0;
}

static int put_json(json_t *j)
{
	char *s;
	int rc;

	if (!j)
		return titan_err_nomem();
	s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (!s)
		return titan_err_nomem();
	rc = puts(s) < 0 ? titan_err_errno(TITAN_EIO, "cannot write standard output") : 0;
	free(s);
	return rc;
}

/* A JSON string of bytes that may not be valid UTF-8. */
static json_t *json_text(const void *p, size_t n)
{
	titan_bytes b = {0};
	json_t *j = NULL;

	if (!gen_utf8_sanitize(p, n, &b))
		j = json_stringn(b.n ? (const char *)b.v : "", b.n);
	bytes_free(&b);
	return j;
}

static json_t *json_ids(const titan_u32s *ids)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < ids->n; i++)
		if (json_array_append_new(a, json_integer(ids->v[i]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* ---- generation ------------------------------------------------------ */

/* Take token id for job j: append, show its text, decide whether j is
 * done.  ctx_left: tokens the context still takes after this one. */
static int accept(struct ctx *c, struct job *j, uint32_t id, long long ctx_left)
{
	titan_bytes b = {0};
	const char *show;
	size_t n;
	int rc, stop = 0;

	if (c->eos >= 0 && id == (uint32_t)c->eos) {
		j->finish = "stop";
	} else {
		if ((rc = u32s_push(&j->out, id)) || (rc = tok_decode(c->tok, &id, 1, &b)))
			goto out;
		if ((stop = rc = gen_stream_push(&j->text, b.v, b.n, &show, &n)) < 0)
			goto out;
		if (j->stream && n && (rc = file_write(stdout, "standard output", show, n)))
			goto out;
		rc = 0;
		if (stop)
			j->finish = "stop";
		else if ((long long)j->out.n >= j->max_new || ctx_left <= 0)
			j->finish = "length";
	}
	/* what was held back: an incomplete character, a stop string's start */
	if (j->stream && j->finish) {
		gen_stream_finish(&j->text, &show, &n);
		if (n)
			rc = file_write(stdout, "standard output", show, n);
	}
	if (!rc && j->stream)
		fflush(stdout);
out:
	bytes_free(&b);
	return rc;
}

/* Continue every job, all in one batch. */
static int generate(struct ctx *c, struct job *jobs, int njobs)
{
	llama_decoder *d = NULL;
	float *logits = NULL;
	int *slots = NULL, *row_job = NULL, max_len = 1, active, rc;
	const uint32_t **pids = NULL;
	int *plen = NULL;
	uint32_t *next = NULL;
	size_t total = 0;
	double t0;

	for (int i = 0; i < njobs; i++) {
		struct job *j = &jobs[i];
		long long room;

		if (j->prompt.n == 0)
			return titan_err(TITAN_EUSAGE, "%s is empty: no token to continue "
					 "from", j->name);
		if (j->prompt.n > (size_t)c->max_seq)
			return titan_err(TITAN_EUSAGE, "%s: %zu tokens do not fit the context "
					 "(model.max_seq_len %d)", j->name, j->prompt.n,
					 c->max_seq);
		/* the last token sampled is never fed */
		room = TITAN_MIN(j->max_new, (long long)c->max_seq - (long long)j->prompt.n + 1);
		max_len = TITAN_MAX(max_len, (int)TITAN_MIN((long long)c->max_seq,
							     (long long)j->prompt.n +
							     TITAN_MAX(room - 1, 0)));
		total += j->prompt.n;
		if (j->max_new <= 0)
			j->finish = "length";
	}
	slots = calloc((size_t)njobs, sizeof *slots);
	row_job = calloc((size_t)njobs, sizeof *row_job);
	pids = calloc((size_t)njobs, sizeof *pids);
	plen = calloc((size_t)njobs, sizeof *plen);
	next = calloc((size_t)njobs, sizeof *next);
	logits = malloc((size_t)njobs * c->V * sizeof *logits);
	if (!slots || !row_job || !pids || !plen || !next || !logits) {
		rc = titan_err_nomem();
		goto out;
	}
	rc = llama_decoder_new(&d, c->g->model, njobs, max_len,
			       (int)TITAN_MAX((size_t)njobs, TITAN_MIN(total, PREFILL_CHUNK)));
	if (rc)
		goto out;
	for (int i = 0; i < njobs; i++) {
		slots[i] = i;
		pids[i] = jobs[i].prompt.v;
		plen[i] = (int)jobs[i].prompt.n;
	}
	t0 = titan_now();
	if ((rc = llama_decoder_prefill(d, njobs, slots, pids, plen, logits)))
		goto out;
	c->prefill_s += titan_now() - t0;
	c->prefill_tokens += total;
	for (int i = 0; i < njobs; i++)
		row_job[i] = i;
	active = njobs;
	t0 = titan_now();
	while (active > 0) {
		int rows = active;

		active = 0;
		for (int r = 0; r < rows; r++) {
			struct job *j = &jobs[row_job[r]];
			uint32_t id;
			long long left;

			if (j->finish)
				continue;
			id = gen_sample(c->sampler, logits + (size_t)r * c->V, &j->rng);
			left = (long long)c->max_seq - (long long)j->prompt.n -
			       (long long)j->out.n - 1;
			if ((rc = accept(c, j, id, left)))
				goto out;
			if (!j->finish) {
				next[active] = id;
				slots[active] = row_job[r];
				active++;
			}
		}
		if (!active)
			break;
		memcpy(row_job, slots, (size_t)active * sizeof *slots);
		if ((rc = llama_decoder_forward(d, next, slots, active, NULL, logits)))
			goto out;
		c->decode_tokens += (uint64_t)active;
	}
	c->decode_s += titan_now() - t0;
out:
	llama_decoder_free(d);
	free(logits);
	free(slots);
	free(row_job);
	free(pids);
	free(plen);
	free(next);
	return rc;
}

static json_t *job_json(const struct job *j)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	if (j->prompt_text)
		json_object_set_new(o, "prompt", json_text(j->prompt_text,
							   strlen(j->prompt_text)));
	else
		json_object_set_new(o, "prompt_ids", json_ids(&j->prompt));
	json_object_set_new(o, "completion", json_text(j->text.text.v, j->text.text.n));
	json_object_set_new(o, "tokens", json_integer((json_int_t)j->out.n));
	json_object_set_new(o, "finish_reason", json_string(j->finish ? j->finish : "length"));
	json_object_set_new(o, "ids", json_ids(&j->out));
	return o;
}

static void job_init(struct ctx *c, struct job *j, uint64_t index)
{
	*j = (struct job){ .max_new = c->a.max_new };
	snprintf(j->name, sizeof j->name, "prompt");
	gen_stream_init(&j->text, c->a.stops.v, c->a.stops.n);
	rng_seed(&j->rng, (uint64_t)c->a.seed, index);
}

/* The prompt of the operand, stdin or --ids. */
static int read_prompt(struct ctx *c, const char *operand, struct job *j)
{
	titan_bytes b = {0};
	int rc;

	if (c->a.ids_file) {
		if (!(rc = read_input(c, c->a.ids_file, &b)))
			rc = parse_ids(c->a.ids_file, &b, &j->prompt);
		if (!rc)
			rc = check_ids(c, &j->prompt, c->a.ids_file);
		bytes_free(&b);
		return rc;
	}
	if (operand && !strcmp(operand, "-")) {
		if ((rc = read_input(c, "-", &b)))
			return rc;
	} else if (operand && (rc = bytes_append(&b, operand, strlen(operand)))) {
		return rc;
	}
	if (!(rc = bytes_append(&b, "", 1))) {
		j->prompt_text = (char *)b.v;  /* NUL-terminated now */
		b = (titan_bytes){0};
		rc = encode(c, j->prompt_text, strlen(j->prompt_text), &j->prompt);
	}
	bytes_free(&b);
	return rc;
}

static int run_one(struct ctx *c, const char *operand)
{
	struct job j;
	int rc;

	job_init(c, &j, 0);
	j.stream = !c->a.json;
	if (!(rc = read_prompt(c, operand, &j)) && !(rc = generate(c, &j, 1))) {
		if (c->a.json)
			rc = put_json(job_json(&j));
		else if (j.text.text.n && j.text.text.v[j.text.text.n - 1] != '\n')
			rc = file_write(stdout, "standard output", "\n", 1);
	}
	job_free(&j);
	return rc;
}

/* ---- scoring --------------------------------------------------------- */

/* log p(ids[t + 1] | ids[0..t]) for every t into lp[0..n-1). */
static int score_ids(struct ctx *c, const titan_u32s *ids, double *lp)
{
	int n = (int)ids->n, chunk = TITAN_MIN(n, PREFILL_CHUNK), rc;
	llama_decoder *d = NULL;
	float *logits = malloc((size_t)chunk * c->V * sizeof *logits);
	int *seq = calloc((size_t)chunk, sizeof *seq);
	double t0 = titan_now();

	if (!logits || !seq) {
		rc = titan_err_nomem();
		goto out;
	}
	if ((rc = llama_decoder_new(&d, c->g->model, 1, n, chunk)))
		goto out;
	for (int t = 0; t < n - 1; t += chunk) {
		int m = TITAN_MIN(chunk, n - 1 - t);

		if ((rc = llama_decoder_forward(d, ids->v + t, seq, m, NULL, logits)))
			goto out;
		for (int i = 0; i < m; i++)
			lp[t + i] = gen_logprob(logits + (size_t)i * c->V, c->V, ids->v[t + i + 1]);
	}
	c->prefill_s += titan_now() - t0;
	c->prefill_tokens += (uint64_t)n - 1;
out:
	llama_decoder_free(d);
	free(logits);
	free(seq);
	return rc;
}

/* Score ids; text lines, or one JSON object (with the prompt of j when
 * given: a JSON line's). */
static int score(struct ctx *c, const titan_u32s *ids, const char *what, bool json,
		 const struct job *j)
{
	double *lp, sum = 0;
	int n = (int)ids->n - 1, rc;
	json_t *o, *arr;

	if (ids->n < 2)
		return titan_err(TITAN_EUSAGE, "%s: %zu token(s): scoring needs at least two",
				 what, ids->n);
	if (ids->n > (size_t)c->max_seq)
		return titan_err(TITAN_EUSAGE, "%s: %zu tokens do not fit the context "
				 "(model.max_seq_len %d)", what, ids->n, c->max_seq);
	if (!(lp = malloc((size_t)n * sizeof *lp)))
		return titan_err_nomem();
	if ((rc = score_ids(c, ids, lp)))
		goto out;
	for (int i = 0; i < n; i++)
		sum -= lp[i];
	if (!json) {
		for (int i = 0; i < n && !rc; i++)
			if (printf("%u\t%.6f\n", ids->v[i + 1], lp[i]) < 0)
				rc = titan_err_errno(TITAN_EIO, "cannot write standard output");
		if (!rc && printf("# tokens %d mean_nll %.6f perplexity %.6f\n", n, sum / n,
				  exp(sum / n)) < 0)
			rc = titan_err_errno(TITAN_EIO, "cannot write standard output");
		goto out;
	}
	o = json_object();
	arr = json_array();
	if (o && j && j->prompt_text)
		json_object_set_new(o, "prompt", json_text(j->prompt_text,
							   strlen(j->prompt_text)));
	else if (o && j)
		json_object_set_new(o, "prompt_ids", json_ids(&j->prompt));
	for (int i = 0; arr && i < n; i++)
		json_array_append_new(arr, json_real(lp[i]));
	if (o && arr) {
		json_object_set_new(o, "tokens", json_integer(n));
		json_object_set_new(o, "mean_nll", json_real(sum / n));
		json_object_set_new(o, "perplexity", json_real(exp(sum / n)));
		json_object_set_new(o, "logprobs", arr);
		arr = NULL;
	}
	json_decref(arr);
	rc = put_json(o);
out:
	free(lp);
	return rc;
}

static int run_score(struct ctx *c, const char *operand)
{
	struct job j;
	int rc;

	job_init(c, &j, 0);
	if (!(rc = read_prompt(c, operand, &j)))
		rc = score(c, &j.prompt, c->a.ids_file ? c->a.ids_file : "input", c->a.json,
			   NULL);
	job_free(&j);
	return rc;
}

/* ---- JSON lines ------------------------------------------------------ */

/* One input line into a job: {"prompt": "..."} or {"ids": [...]}, with an
 * optional "max_new_tokens". */
static int parse_line(struct ctx *c, const char *name, long line, const char *s, size_t n,
		      struct job *j)
{
	json_error_t err;
	json_t *o = json_loadb(s, n, 0, &err), *p, *ids, *mx;
	int rc = 0;

	if (!o)
		return titan_err(TITAN_EFORMAT, "%s:%ld: invalid JSON: %s", name, line,
				 err.text);
	p = json_object_get(o, "prompt");
	ids = json_object_get(o, "ids");
	mx = json_object_get(o, "max_new_tokens");
	if (!json_is_object(o) || (!json_is_string(p) && !json_is_array(ids))) {
		rc = titan_err(TITAN_EFORMAT, "%s:%ld: expected an object with \"prompt\" "
			       "(a string) or \"ids\" (an array)", name, line);
	} else if (mx && (!json_is_integer(mx) || json_integer_value(mx) < 0)) {
		rc = titan_err(TITAN_EFORMAT, "%s:%ld: $.max_new_tokens: expected an integer "
			       ">= 0", name, line);
	} else if (json_is_string(p)) {
		if (mx)
			j->max_new = json_integer_value(mx);
		j->prompt_text = strdup(json_string_value(p));
		rc = j->prompt_text ? encode(c, json_string_value(p), json_string_length(p),
					     &j->prompt) : titan_err_nomem();
	} else {
		size_t i;
		json_t *v;

		if (mx)
			j->max_new = json_integer_value(mx);
		json_array_foreach(ids, i, v) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) >= c->V) {
				rc = titan_err(TITAN_EFORMAT, "%s:%ld: $.ids[%zu]: expected a "
					       "token id below %d", name, line, i, c->V);
				break;
			}
			if ((rc = u32s_push(&j->prompt, (uint32_t)json_integer_value(v))))
				break;
		}
	}
	json_decref(o);
	return rc;
}

static int flush_batch(struct ctx *c, struct job *jobs, int n)
{
	int rc = 0;

	if (!n)
		return 0;
	if (c->a.score) {
		for (int i = 0; i < n && !rc; i++)
			rc = score(c, &jobs[i].prompt, jobs[i].name, true, &jobs[i]);
	} else if (!(rc = generate(c, jobs, n))) {
		for (int i = 0; i < n && !rc; i++)
			rc = put_json(job_json(&jobs[i]));
	}
	if (!rc)
		rc = cli_finish_stdout();
	for (int i = 0; i < n; i++)
		job_free(&jobs[i]);
	return rc;
}

/* Lines are read as they come, and each batch is written as soon as it is
 * full, so that a pipe gets its answers without waiting for the end. */
static int run_jsonl(struct ctx *c, const char *operand)
{
	bool is_stdin = !operand || !strcmp(operand, "-");
	const char *name = is_stdin ? "<stdin>" : operand;
	titan_bytes all = {0};
	FILE *fp;
	struct job *jobs;
	char *s = NULL;
	size_t cap = 0;
	ssize_t got;
	int n = 0, rc = 0;
	long line = 0;
	uint64_t index = 0;

	if (c->world && comm_size(c->world) > 1) {
		/* tensor parallel: the whole input first, the same on every rank */
		if ((rc = read_input(c, is_stdin ? "-" : operand, &all)))
			return rc;
		is_stdin = false;
		fp = all.n ? fmemopen(all.v, all.n, "rb") : fopen("/dev/null", "rb");
	} else {
		fp = is_stdin ? stdin : fopen(operand, "rb");
	}
	if (!fp) {
		bytes_free(&all);
		return titan_err_errno(TITAN_EIO, "cannot open '%s'", name);
	}
	jobs = calloc((size_t)c->a.batch, sizeof *jobs);
	if (!jobs) {
		rc = titan_err_nomem();
		goto out;
	}
	while (!rc && (got = getline(&s, &cap, fp)) >= 0) {
		size_t len = (size_t)got;

		line++;
		while (len && strchr("\r\n \t", s[len - 1]))
			len--;
		if (!len)
			continue;
		job_init(c, &jobs[n], index++);
		snprintf(jobs[n].name, sizeof jobs[n].name, "%s:%ld", name, line);
		n++;
		if ((rc = parse_line(c, name, line, s, len, &jobs[n - 1])))
			break;
		if (n == c->a.batch) {
			rc = flush_batch(c, jobs, n);
			n = 0;
		}
	}
	if (!rc && ferror(fp))
		rc = titan_err_errno(TITAN_EIO, "cannot read '%s'", name);
	if (!rc)
		rc = flush_batch(c, jobs, n);
	else
		for (int i = 0; i < n; i++)
			job_free(&jobs[i]);
out:
	if (!is_stdin)
		fclose(fp);
	bytes_free(&all);
	free(s);
	free(jobs);
	return rc;
}

/* ---- setup ----------------------------------------------------------- */

static int open_tokenizer(struct ctx *c)
{
	cli_tok_args ta = c->a.tok;
	char *path = NULL;
	int rc;

	if (!ta.path) {
		if ((rc = gen_model_tokenizer(c->g, &path)))
			return rc;
		ta.path = path;
	}
	if (!(rc = cli_load_tok(&ta, &c->tok)) &&
	    !(rc = gen_check_tokenizer(c->g, c->tok, ta.path)))
		rc = tok_encoder_new(&c->enc, c->tok);
	if (!rc)
		log_debug(c->log, "tokenizer: %s", ta.path);
	free(path);
	return rc;
}

static int check_args(struct ctx *c, const opt_list *operands)
{
	const struct args *a = &c->a;
	int rc;

	if (!a->model)
		return titan_err(TITAN_EUSAGE, "no checkpoint given (-m CKPT)");
	if (operands->n > 1)
		return titan_err(TITAN_EUSAGE, "unexpected argument '%s' (one prompt at most; "
				 "quote it)", operands->v[1]);
	if (a->ids_file && operands->n)
		return titan_err(TITAN_EUSAGE, "--ids and a prompt '%s': give one of them",
				 operands->v[0]);
	if (a->ids_file && a->jsonl)
		return titan_err(TITAN_EUSAGE, "--ids and --jsonl: JSON lines carry their own "
				 "\"ids\"");
	if (a->max_new < 0)
		return titan_err(TITAN_EUSAGE, "--max-new-tokens: %lld must not be negative",
				 a->max_new);
	if (a->batch < 1 || a->batch > 4096)
		return titan_err(TITAN_EUSAGE, "--batch: %lld must be in 1..4096", a->batch);
	if (a->top_k > INT_MAX)
		return titan_err(TITAN_EUSAGE, "--top-k: %lld is too large", a->top_k);
	if (a->tp < 0 || a->tp > 4096)
		return titan_err(TITAN_EUSAGE, "--tp: %lld must be in 1..4096", a->tp);
	if ((rc = parse_double(a->temperature, "--temperature", &c->sampling.temperature)) ||
	    (rc = parse_double(a->top_p, "--top-p", &c->sampling.top_p)))
		return rc;
	c->sampling.top_k = (int)a->top_k;
	return gen_sampling_check(&c->sampling);
}

/* --tp N under a launcher of N ranks: the world is the tp group.  Ranks
 * other than 0 write nothing to stdout and log only with -v. */
static int join_ranks(struct ctx *c)
{
	int rc, n;

	if (c->a.tp <= 1 && !comm_launched())
		return 0;
	if ((rc = comm_world(&c->world, 0)))
		return rc;
	n = comm_size(c->world);
	if (n != (c->a.tp ? c->a.tp : 1)) {
		rc = titan_err(TITAN_EUSAGE, "--tp %lld with %d rank%s: launch as many ranks as "
			       "--tp says (mpirun -np N titan-gen --tp N ...)", c->a.tp ? c->a.tp : 1,
			       n, n == 1 ? "" : "s");
		if (n == 1) {
			comm_free(c->world);
			c->world = NULL;
		}
		return rc;
	}
	if (n == 1) {
		comm_free(c->world);
		c->world = NULL;
		return 0;
	}
	if (comm_rank(c->world) > 0) {
		if (c->a.verbose <= 0)
			c->log->verbosity = 0;
		if (!freopen("/dev/null", "w", stdout))
			return titan_err_errno(TITAN_EIO, "rank %d: cannot silence stdout",
					       comm_rank(c->world));
	}
	return 0;
}

static int cmd_gen(int argc, char **argv, titan_log *log)
{
	struct ctx c = {
		.a = { .max_new = 256, .top_k = 40, .batch = 8, .temperature = "0.8",
		       .top_p = "0.95" },
		.log = log,
	};
	bool help = false;
	opt_spec specs[] = {
		{"model", 'm', OPT_STR, &c.a.model, "CKPT", "checkpoint step directory or folder"},
		CLI_TOK_OPTS(c.a.tok),
		{"max-new-tokens", 'n', OPT_INT, &c.a.max_new, "N", "tokens to generate at most"},
		{"temperature", 0, OPT_STR, &c.a.temperature, "T", "0: greedy"},
		{"top-k", 0, OPT_INT, &c.a.top_k, "K", "sample from the K most likely tokens"},
		{"top-p", 0, OPT_STR, &c.a.top_p, "P", "... that hold probability P"},
		{"seed", 0, OPT_INT, &c.a.seed, "S", "random seed"},
		{"stop", 0, OPT_LIST, &c.a.stops, "STR", "stop before STR (repeatable)"},
		{"no-bos", 0, OPT_FLAG, &c.a.no_bos, NULL, "no BOS token before a text prompt"},
		{"ignore-eos", 0, OPT_FLAG, &c.a.ignore_eos, NULL, "go on past the EOS token"},
		{"ids", 0, OPT_STR, &c.a.ids_file, "FILE", "token ids instead of text"},
		{"json", 0, OPT_FLAG, &c.a.json, NULL, "one JSON object"},
		{"jsonl", 0, OPT_FLAG, &c.a.jsonl, NULL, "JSON lines in and out"},
		{"batch", 0, OPT_INT, &c.a.batch, "N", "--jsonl: prompts decoded together"},
		{"score", 0, OPT_FLAG, &c.a.score, NULL, "log-probabilities of the input"},
		{"tp", 0, OPT_INT, &c.a.tp, "N", "tensor parallel over N ranks"},
		{"quiet", 'q', OPT_DEC, &c.a.verbose, NULL, "only errors"},
		{"verbose", 'v', OPT_INC, &c.a.verbose, NULL, "speed on stderr"},
		{"help", 'h', OPT_FLAG, &help, NULL, "this help"},
		{0},
	};
	opt_list operands = {0};
	const char *operand;
	int rc;

	if ((rc = opt_parse(specs, argc, argv, &operands)))
		goto out;
	if (help) {
		fputs(usage_top, stdout);
		goto out;
	}
	log->verbosity += c.a.verbose;
	if ((rc = check_args(&c, &operands)))
		goto out;
	operand = operands.n ? operands.v[0] : NULL;
	if ((rc = join_ranks(&c)) ||
	    (rc = gen_model_load(&c.g, c.a.model, c.world ? comm_size(c.world) : 1,
				 c.world ? comm_rank(c.world) : 0)) ||
	    (rc = open_tokenizer(&c)))
		goto out;
	if (c.world) {
		tp_hooks_init(&c.tp_hooks, c.world);
		c.g->model->hooks = &c.tp_hooks;
	}
	c.V = c.g->model->cfg.vocab_size;
	c.max_seq = c.g->model->cfg.max_seq_len;
	c.eos = c.a.ignore_eos ? -1 : tok_eos(c.tok);
	if ((rc = gen_sampler_new(&c.sampler, &c.sampling, c.V)))
		goto out;
	log_debug(log, "model: %s, %llu parameters, context %d", c.g->dir,
		 (unsigned long long)llama_param_count(&c.g->model->cfg), c.max_seq);
	if (c.a.jsonl)
		rc = run_jsonl(&c, operand);
	else if (c.a.score)
		rc = run_score(&c, operand);
	else
		rc = run_one(&c, operand);
	if (!rc)
		rc = cli_finish_stdout();
	if (!rc && c.prefill_tokens)
		log_debug(log, "prefill: %llu tokens in %.3f s, %.1f tokens/s",
			 (unsigned long long)c.prefill_tokens, c.prefill_s,
			 c.prefill_tokens / TITAN_MAX(c.prefill_s, 1e-9));
	if (!rc && c.decode_tokens)
		log_debug(log, "decode: %llu tokens in %.3f s, %.1f tokens/s",
			 (unsigned long long)c.decode_tokens, c.decode_s,
			 c.decode_tokens / TITAN_MAX(c.decode_s, 1e-9));
out:
	gen_sampler_free(c.sampler);
	tok_encoder_free(c.enc);
	tok_free(c.tok);
	gen_model_free(c.g);
	opt_list_free(&operands);
	opt_list_free(&c.a.stops);
	/* the ranks read the same input and make the same calls: a failure
	 * is every rank's */
	if (rc && c.world)
		cli_rank_failed(c.world, log, rc, true);
	comm_free(c.world);
	return rc;
}

int main(int argc, char **argv)
{
	static const cli_command cmds[] = { {0} };
	const cli_tool tool = {.prog = PROG, .usage = usage_top, .cmds = cmds, .bare = cmd_gen};

	return cli_main(&tool, argc, argv);
}
