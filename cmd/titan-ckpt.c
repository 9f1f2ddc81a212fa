/* titan-ckpt - look inside checkpoints, check them, and carry them to other
 * formats and layouts: info, verify, export, import, reshard, diff.
 *
 * Thin over lib/ckpt: parse options, call the library, print.  Exit 0 ok,
 * 1 runtime failure (a damaged checkpoint, a difference above the
 * tolerance), 2 usage error. */
#include "core/base.h"
#include "cli.h"
#include "ckpt/ckpt.h"
#include "ckpt/gguf.h"
#include "ckpt/hf.h"
#include "ckpt/reshard.h"
#include "ckpt/safetensors.h"
#include "config/config.h"
#include "core/file.h"
#include "core/half.h"
#include "core/log.h"
#include "core/opt.h"
#include "model/shard.h"

#include <jansson.h>
#include <math.h>
#include <sys/stat.h>

#define PROG "titan-ckpt"

#define INFO_SYNOPSIS "titan-ckpt info CKPT [--json]"
#define VERIFY_SYNOPSIS "titan-ckpt verify CKPT [-q]"
#define EXPORT_SYNOPSIS                                                                 \
	"titan-ckpt export --to hf|gguf|consolidated CKPT OUT [--dtype f32|bf16|f16] "  \
	"[-t TOKENIZER.json] [--max-shard-size SIZE] [--name NAME] [--force] [-q]"
#define IMPORT_SYNOPSIS "titan-ckpt import --from hf HF_DIR OUTCKPT [--force] [-q]"
#define RESHARD_SYNOPSIS "titan-ckpt reshard CKPT OUTCKPT --layout dp_shard=N,tp=M,pp=K [--force] [-q]"
#define DIFF_SYNOPSIS "titan-ckpt diff A B [--tolerance T] [--weights-only] [--all]"

static const char usage_top[] =
	"usage: " INFO_SYNOPSIS "\n"
	"       " VERIFY_SYNOPSIS "\n"
	"       " EXPORT_SYNOPSIS "\n"
	"       " IMPORT_SYNOPSIS "\n"
	"       " RESHARD_SYNOPSIS "\n"
	"       " DIFF_SYNOPSIS "\n"
	"\n"
	"Inspect and check titan checkpoints, export them to Hugging Face\n"
	"safetensors, GGUF (llama.cpp) or one consolidated safetensors file,\n"
	"import Hugging Face Llama models, rewrite them for another parallel\n"
	"layout, and compare two of them.  CKPT is a step directory or a\n"
	"checkpoint folder (its latest step).  'titan-ckpt COMMAND --help' for\n"
	"options; man titan-ckpt for the details.\n";

/* ---- shared pieces ----------------------------------------------------- */

/* Parse options; exactly want operands.  With --help, prints the help and
 * sets *done. */
static int command_args(const opt_spec *specs, const char *synopsis, const bool *help,
			int argc, char **argv, opt_list *rest, size_t want, bool *done)
{
	int rc = opt_parse(specs, argc, argv, rest);

	*done = false;
	if (rc)
		return rc;
	if (*help) {
		cli_print_help(synopsis, specs);
		*done = true;
		return 0;
	}
	if (rest->n < want)
		return titan_err(TITAN_EUSAGE, "expected %zu operand%s, got %zu (usage: %s)",
				 want, want == 1 ? "" : "s", rest->n, synopsis);
	if (rest->n > want)
		return titan_err(TITAN_EUSAGE, "unexpected argument '%s'", rest->v[want]);
	return 0;
}

static void progress_cb(void *arg, uint64_t done, uint64_t total)
{
	titan_log *log = arg;
	log_progress(log, "tensors", (double)done / 1e6, (double)total / 1e6, "MB",
		     done == total);
}

static int parse_dtype(const char *s, st_dtype *out)
{
	if (!s || !strcmp(s, "f32") || !strcmp(s, "F32"))
		*out = ST_F32;
	else if (!strcmp(s, "bf16") || !strcmp(s, "BF16"))
		*out = ST_BF16;
	else if (!strcmp(s, "f16") || !strcmp(s, "F16"))
		*out = ST_F16;
	else
		return titan_err(TITAN_EUSAGE, "--dtype: expected f32, bf16 or f16, got '%s'", s);
	return 0;
}

static uint64_t path_bytes(const char *dir, const char *name)
{
	char *p = file_path_join(dir, name);
	struct stat sb;
	uint64_t n = p && stat(p, &sb) == 0 ? (uint64_t)sb.st_size : 0;
	free(p);
	return n;
}

static int64_t numel(int ndim, const int64_t *shape)
{
	int64_t n = 1;
	for (int d = 0; d < ndim; d++)
		n *= shape[d];
	return n;
}

static json_t *int_array(int n, const int64_t *v)
{
	json_t *a = json_array();
	for (int i = 0; a && i < n; i++)
		json_array_append_new(a, json_integer(v[i]));
	return a;
}

/* ---- info -------------------------------------------------------------- */

static bool is_optim(const char *name)
{
	return !strncmp(name, "optim.", 6);
}

static json_t *info_json(ckpt_reader *r)
{
	const json_t *man = ckpt_reader_manifest(r);
	const json_t *extra = json_object_get(man, "extra");
	const json_t *state = json_object_get(extra, "train_state");
	const json_t *model = json_object_get(json_object_get(extra, "config"), "model");
	json_t *j = json_object(), *tensors = json_array(), *files = json_object();
	uint64_t param_bytes = 0, optim_bytes = 0, file_bytes = 0;

	json_object_set_new(j, "path", json_string(ckpt_reader_dir(r)));
	json_object_set_new(j, "step", json_integer(ckpt_reader_step(r)));
	json_t *tokens = json_object_get(state, "tokens");
	json_object_set_new(j, "tokens", tokens ? json_incref(tokens) : json_null());
	json_object_set_new(j, "model", model ? json_deep_copy(model) : json_null());
	json_object_set(j, "nranks", json_object_get(man, "nranks"));
	json_object_set_new(j, "layout", json_object_get(man, "layout") ?
			    json_deep_copy(json_object_get(man, "layout")) : json_null());
	json_object_set_new(j, "tokenizer_sha256",
			    json_object_get(state, "tokenizer_sha256") ?
			    json_deep_copy(json_object_get(state, "tokenizer_sha256")) :
			    json_null());
	char *tokfile = ckpt_reader_file(r, "tokenizer.json");
	json_object_set_new(j, "tokenizer", tokfile ? json_string(tokfile) : json_null());
	free(tokfile);

	for (size_t i = 0; i < ckpt_reader_count(r); i++) {
		const ckpt_tensor_info *t = ckpt_reader_tensor(r, i);
		uint64_t bytes = (uint64_t)numel(t->ndim, t->shape) * 4;
		json_t *shards = json_array();
		for (size_t s = 0; s < t->nshards; s++) {
			const ckpt_shard_info *sh = &t->shards[s];
			json_array_append_new(shards, json_pack(
				"{s:s, s:o, s:o}", "file", sh->file,
				"start", int_array(t->ndim, sh->start),
				"shape", int_array(t->ndim, sh->shape)));
			if (!json_object_get(files, sh->file))
				json_object_set_new(files, sh->file, json_integer(
					(json_int_t)path_bytes(ckpt_reader_dir(r), sh->file)));
		}
		json_array_append_new(tensors, json_pack(
			"{s:s, s:s, s:o, s:I, s:o}", "name", t->name, "dtype", "F32",
			"shape", int_array(t->ndim, t->shape), "bytes", (json_int_t)bytes,
			"shards", shards));
		*(is_optim(t->name) ? &optim_bytes : &param_bytes) += bytes;
	}
	const char *fname;
	json_t *fv;
	json_object_foreach(files, fname, fv)
		file_bytes += (uint64_t)json_integer_value(fv);
	json_object_set_new(j, "bytes", json_pack("{s:I, s:I, s:I}",
		"parameters", (json_int_t)param_bytes, "optimizer", (json_int_t)optim_bytes,
		"files", (json_int_t)file_bytes));
	json_object_set_new(j, "files", files);
	json_object_set_new(j, "tensors", tensors);
	return j;
}

static void print_mb(const char *label, uint64_t bytes)
{
	printf("%-13s %.1f MB\n", label, (double)bytes / 1e6);
}

static void info_text(ckpt_reader *r, json_t *j)
{
	const json_t *model = json_object_get(j, "model");
	const json_t *bytes = json_object_get(j, "bytes");
	const json_t *layout = json_object_get(j, "layout");
	train_config cfg;
	char buf[160];

	printf("%-13s %s\n", "checkpoint", ckpt_reader_dir(r));
	printf("%-13s %ld\n", "step", ckpt_reader_step(r));
	if (json_is_integer(json_object_get(j, "tokens")))
		printf("%-13s %lld\n", "tokens",
		       (long long)json_integer_value(json_object_get(j, "tokens")));
	if (model && !config_from_json(&cfg, json_object_get(json_object_get(
			ckpt_reader_manifest(r), "extra"), "config"), ckpt_reader_dir(r))) {
		const llama_config *c = &cfg.model;
		printf("%-13s dim %d, %d layers, %d heads (%d kv), ffn %d, vocab %d, "
		       "%.2fM parameters%s\n", "model", c->dim, c->n_layers, c->n_heads,
		       c->n_kv_heads, c->ffn_hidden, c->vocab_size,
		       (double)llama_param_count(c) / 1e6,
		       c->tie_embeddings ? ", tied embeddings" : "");
		config_free(&cfg);
	} else {
		printf("%-13s (no usable model configuration: %s)\n", "model",
		       model ? titan_errmsg() : "none in the manifest");
	}
	if (json_is_object(layout)) {
		size_t k = 0;
		const char *key;
		json_t *v;
		buf[0] = 0;
		json_object_foreach((json_t *)layout, key, v)
			k += (size_t)snprintf(buf + k, k < sizeof buf ? sizeof buf - k : 0,
					      "%s%s=%lld", k ? "," : "", key,
					      (long long)json_integer_value(v));
		printf("%-13s %s, %lld file%s\n", "layout", buf,
		       (long long)json_integer_value(json_object_get(j, "nranks")),
		       json_integer_value(json_object_get(j, "nranks")) == 1 ? "" : "s");
	} else {
		printf("%-13s %lld rank%s\n", "layout",
		       (long long)json_integer_value(json_object_get(j, "nranks")),
		       json_integer_value(json_object_get(j, "nranks")) == 1 ? "" : "s");
	}
	const json_t *tok = json_object_get(j, "tokenizer");
	const json_t *sha = json_object_get(j, "tokenizer_sha256");
	printf("%-13s %s%s%.12s%s\n", "tokenizer",
	       json_is_string(tok) ? "tokenizer.json" : "not carried",
	       json_is_string(sha) && *json_string_value(sha) ? " (sha256 " : "",
	       json_is_string(sha) ? json_string_value(sha) : "",
	       json_is_string(sha) && *json_string_value(sha) ? "...)" : "");
	print_mb("parameters", (uint64_t)json_integer_value(json_object_get(bytes, "parameters")));
	print_mb("optimizer", (uint64_t)json_integer_value(json_object_get(bytes, "optimizer")));
	print_mb("files", (uint64_t)json_integer_value(json_object_get(bytes, "files")));

	printf("\n%-48s %-5s %-16s %s\n", "tensor", "dtype", "shape", "shards");
	json_t *t;
	size_t i;
	json_array_foreach(json_object_get(j, "tensors"), i, t) {
		const ckpt_tensor_info *ti = ckpt_reader_tensor(r, i);
		ckpt_shape_text(buf, sizeof buf, ti->ndim, ti->shape);
		printf("%-48s %-5s %-16s %zu\n", ti->name, "F32", buf, ti->nshards);
	}
}

static int cmd_info(int argc, char **argv, titan_log *log)
{
	bool as_json = false, help = false, done;
	const opt_spec specs[] = {
		{"json", 0, OPT_FLAG, &as_json, NULL, "print JSON"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	ckpt_reader *r = NULL;
	int rc = command_args(specs, INFO_SYNOPSIS, &help, argc, argv, &rest, 1, &done);

	if (rc || done || (rc = ckpt_reader_open(&r, rest.v[0])))
		goto out;
	json_t *j = info_json(r);
	if (!j) {
		rc = titan_err_nomem();
		goto out;
	}
	if (as_json) {
		char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (s)
			printf("%s\n", s);
		free(s);
	} else {
		info_text(r, j);
	}
	json_decref(j);
	rc = cli_finish_stdout();
out:
	ckpt_reader_close(r);
	opt_list_free(&rest);
	return rc;
}

/* ---- verify ------------------------------------------------------------ */

static int cmd_verify(int argc, char **argv, titan_log *log)
{
	bool help = false, done;
	int verbosity = 1;
	const opt_spec specs[] = {
		{"quiet", 'q', OPT_DEC, &verbosity, NULL, "print nothing when the checkpoint is sound"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	ckpt_reader *r = NULL;
	int rc = command_args(specs, VERIFY_SYNOPSIS, &help, argc, argv, &rest, 1, &done);

	if (rc || done || (rc = ckpt_reader_open(&r, rest.v[0])))
		goto out;
	rc = ckpt_reader_verify(r, progress_cb, log);
	log_progress_end(log);
	if (rc)
		goto out;
	if (verbosity > 0) {
		size_t shards = 0;
		uint64_t bytes = 0;
		for (size_t i = 0; i < ckpt_reader_count(r); i++) {
			const ckpt_tensor_info *t = ckpt_reader_tensor(r, i);
			shards += t->nshards;
			bytes += (uint64_t)numel(t->ndim, t->shape) * 4;
		}
		printf("ok: %s: %zu tensors in %zu slices, %.1f MB\n", ckpt_reader_dir(r),
		       ckpt_reader_count(r), shards, (double)bytes / 1e6);
	}
	rc = cli_finish_stdout();
out:
	ckpt_reader_close(r);
	opt_list_free(&rest);
	return rc;
}

/* ---- export ------------------------------------------------------------ */

static int cmd_export(int argc, char **argv, titan_log *log)
{
	const char *to = NULL, *dtype_s = NULL, *tok = NULL, *max_shard = NULL, *name = NULL;
	bool help = false, force = false, done;
	int verbosity = 0;
	const opt_spec specs[] = {
		{"to", 0, OPT_STR, &to, "FORMAT", "hf, gguf or consolidated"},
		{"dtype", 0, OPT_STR, &dtype_s, "T", "f32 (default), bf16 or f16"},
		{"tokenizer", 't', OPT_STR, &tok, "FILE",
		 "tokenizer.json to include (default: the checkpoint's own)"},
		{"max-shard-size", 0, OPT_STR, &max_shard, "SIZE",
		 "hf: split files above SIZE (default 5GB)"},
		{"name", 0, OPT_STR, &name, "NAME", "gguf: general.name (default titan)"},
		{"force", 'f', OPT_FLAG, &force, NULL, "replace an existing output"},
		{"quiet", 'q', OPT_DEC, &verbosity, NULL, "only errors"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	ckpt_reader *r = NULL;
	st_dtype dtype = ST_F32;
	uint64_t shard_bytes = 0;
	double t0 = titan_now();
	int rc = command_args(specs, EXPORT_SYNOPSIS, &help, argc, argv, &rest, 2, &done);

	if (rc || done)
		goto out;
	log->verbosity += verbosity;
	if (!to) {
		rc = titan_err(TITAN_EUSAGE, "export: --to hf|gguf|consolidated is required");
		goto out;
	}
	if (strcmp(to, "hf") && strcmp(to, "gguf") && strcmp(to, "consolidated")) {
		rc = titan_err(TITAN_EUSAGE, "--to: expected hf, gguf or consolidated, got '%s'", to);
		goto out;
	}
	if ((rc = parse_dtype(dtype_s, &dtype)) ||
	    (max_shard && (rc = cli_parse_size("--max-shard-size", max_shard, &shard_bytes))))
		goto out;
	if (max_shard && strcmp(to, "hf")) {
		rc = titan_err(TITAN_EUSAGE, "--max-shard-size applies to --to hf only");
		goto out;
	}
	if (name && strcmp(to, "gguf")) {
		rc = titan_err(TITAN_EUSAGE, "--name applies to --to gguf only");
		goto out;
	}
	if (tok && !strcmp(to, "consolidated")) {
		rc = titan_err(TITAN_EUSAGE, "--tokenizer does not apply to --to consolidated "
			       "(model weights only)");
		goto out;
	}
	if ((rc = ckpt_reader_open(&r, rest.v[0])))
		goto out;
	if (!strcmp(to, "hf")) {
		hf_export_opts o = {.dtype = dtype, .max_shard_bytes = shard_bytes,
				    .tokenizer = tok, .force = force,
				    .progress = progress_cb, .progress_arg = log};
		rc = hf_export(r, rest.v[1], &o);
	} else if (!strcmp(to, "gguf")) {
		gguf_export_opts o = {.dtype = dtype, .tokenizer = tok, .name = name,
				      .force = force, .progress = progress_cb,
				      .progress_arg = log};
		rc = gguf_export(r, rest.v[1], &o);
	} else {
		rc = ckpt_export_consolidated(r, rest.v[1], dtype, force, progress_cb, log);
	}
	log_progress_end(log);
	if (!rc)
		log_info(log, "exported %s to %s (%s, %s) in %.1f s", ckpt_reader_dir(r),
			 rest.v[1], to, st_dtype_name(dtype), titan_now() - t0);
out:
	ckpt_reader_close(r);
	opt_list_free(&rest);
	return rc;
}

/* ---- import ------------------------------------------------------------ */

static int cmd_import(int argc, char **argv, titan_log *log)
{
	const char *from = NULL;
	bool help = false, force = false, done;
	int verbosity = 0;
	const opt_spec specs[] = {
		{"from", 0, OPT_STR, &from, "FORMAT", "hf (a Hugging Face Llama directory)"},
		{"force", 'f', OPT_FLAG, &force, NULL, "replace an existing OUTCKPT"},
		{"quiet", 'q', OPT_DEC, &verbosity, NULL, "only errors"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	double t0 = titan_now();
	int rc = command_args(specs, IMPORT_SYNOPSIS, &help, argc, argv, &rest, 2, &done);

	if (rc || done)
		goto out;
	log->verbosity += verbosity;
	if (!from || strcmp(from, "hf")) {
		rc = titan_err(TITAN_EUSAGE, "import: --from hf is required (the one format "
			       "titan imports)%s%s%s", from ? "; got '" : "", from ? from : "",
			       from ? "'" : "");
		goto out;
	}
	hf_import_opts o = {.force = force, .progress = progress_cb, .progress_arg = log};
	rc = hf_import(rest.v[0], rest.v[1], &o);
	log_progress_end(log);
	if (!rc)
		log_info(log, "imported %s to %s in %.1f s; train on with "
			 "--model.flavor=%s/model.json --checkpoint.load=%s", rest.v[0],
			 rest.v[1], titan_now() - t0, rest.v[1], rest.v[1]);
out:
	opt_list_free(&rest);
	return rc;
}

/* ---- reshard ----------------------------------------------------------- */

static int cmd_reshard(int argc, char **argv, titan_log *log)
{
	const char *layout_s = NULL;
	bool help = false, force = false, done;
	int verbosity = 0;
	const opt_spec specs[] = {
		{"layout", 'l', OPT_STR, &layout_s, "L",
		 "pp=K,dp_replicate=R,dp_shard=N,cp=C,tp=M (missing degrees are 1)"},
		{"force", 'f', OPT_FLAG, &force, NULL, "replace an existing OUTCKPT"},
		{"quiet", 'q', OPT_DEC, &verbosity, NULL, "only errors"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	ckpt_reader *r = NULL;
	par_layout l;
	char buf[128];
	double t0 = titan_now();
	int rc = command_args(specs, RESHARD_SYNOPSIS, &help, argc, argv, &rest, 2, &done);

	if (rc || done)
		goto out;
	log->verbosity += verbosity;
	if (!layout_s) {
		rc = titan_err(TITAN_EUSAGE, "reshard: --layout is required (e.g. "
			       "--layout dp_shard=4,tp=2)");
		goto out;
	}
	if ((rc = par_layout_parse(layout_s, &l)) || (rc = ckpt_reader_open(&r, rest.v[0])))
		goto out;
	rc = ckpt_reshard(r, rest.v[1], &l, force, progress_cb, log);
	log_progress_end(log);
	par_layout_format(&l, buf, sizeof buf);
	if (!rc)
		log_info(log, "resharded %s to %s (%s) in %.1f s", ckpt_reader_dir(r), rest.v[1],
			 buf, titan_now() - t0);
out:
	ckpt_reader_close(r);
	opt_list_free(&rest);
	return rc;
}

/* ---- diff -------------------------------------------------------------- */

/* Either side of a diff: a titan checkpoint or one safetensors file (a
 * consolidated export, a shard). */
typedef struct tensor_source {
	ckpt_reader *ckpt;
	st_file *st;
} tensor_source;

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && !strcmp(s + n - k, suffix);
}

static int source_open(tensor_source *s, const char *path)
{
	struct stat sb;
	memset(s, 0, sizeof *s);
	if (ends_with(path, ".safetensors") && stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
		return st_open(&s->st, path);
	return ckpt_reader_open(&s->ckpt, path);
}

static void source_close(tensor_source *s)
{
	ckpt_reader_close(s->ckpt);
	st_close(s->st);
}

static size_t source_count(const tensor_source *s)
{
	return s->ckpt ? ckpt_reader_count(s->ckpt) : s->st->n;
}

static const char *source_name(const tensor_source *s, size_t i)
{
	return s->ckpt ? ckpt_reader_tensor(s->ckpt, i)->name : s->st->tensors[i].name;
}

/* Shape of tensor name, false when absent. */
static bool source_shape(const tensor_source *s, const char *name, int *ndim, int64_t *shape)
{
	if (s->ckpt) {
		const ckpt_tensor_info *t = ckpt_reader_find(s->ckpt, name);
		if (!t)
			return false;
		*ndim = t->ndim;
		memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
		return true;
	}
	const st_tensor *t = st_find(s->st, name);
	if (!t)
		return false;
	*ndim = t->ndim;
	memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
	return true;
}

/* Tensor name as fp32 into dst (n values). */
static int source_read(tensor_source *s, const char *name, float *dst, int64_t n)
{
	if (s->ckpt)
		return ckpt_reader_read(s->ckpt, name, NULL, NULL, dst);
	const st_tensor *t = st_find(s->st, name);
	const uint8_t *p = st_data(s->st, t);
	for (int64_t i = 0; i < n; i++) {
		uint16_t h;
		switch (t->dtype) {
		case ST_F32:
			memcpy(&dst[i], p + 4 * i, 4);
			break;
		case ST_BF16:
			memcpy(&h, p + 2 * i, 2);
			dst[i] = bf16_to_f32(h);
			break;
		case ST_F16:
			memcpy(&h, p + 2 * i, 2);
			dst[i] = f16_to_f32(h);
			break;
		default:
			return titan_err(TITAN_EFORMAT, "'%s': tensor '%s' is %s; diff compares "
					 "F32, BF16 and F16", s->st->path, name,
					 st_dtype_name(t->dtype));
		}
	}
	return 0;
}

typedef struct diff_stats {
	double max_abs, max_ref, max_rel;
	bool nan_mismatch;
} diff_stats;

/* Largest |a - b|, and relative to the largest |a| of the tensor (so that a
 * value near 0 does not blow the ratio up). */
static diff_stats compare(const float *a, const float *b, int64_t n)
{
	diff_stats d = {0};
	for (int64_t i = 0; i < n; i++) {
		if (isnan(a[i]) || isnan(b[i])) {
			d.nan_mismatch |= isnan(a[i]) != isnan(b[i]);
			continue;
		}
		double diff = fabs((double)a[i] - (double)b[i]);
		if (diff > d.max_abs || isinf(diff))
			d.max_abs = diff;
		if (fabs(a[i]) > d.max_ref)
			d.max_ref = fabs(a[i]);
	}
	d.max_rel = d.max_abs == 0 ? 0 : d.max_ref > 0 ? d.max_abs / d.max_ref : INFINITY;
	if (d.nan_mismatch)
		d.max_abs = d.max_rel = INFINITY;
	return d;
}

static int cmd_diff(int argc, char **argv, titan_log *log)
{
	const char *tol_s = NULL;
	bool help = false, all = false, weights_only = false, done;
	const opt_spec specs[] = {
		{"tolerance", 0, OPT_STR, &tol_s, "T",
		 "largest absolute difference allowed (default 0: bit-identical values)"},
		{"weights-only", 'w', OPT_FLAG, &weights_only, NULL,
		 "compare the model's weights, not the optimizer state"},
		{"all", 'a', OPT_FLAG, &all, NULL, "print every tensor, not only those that differ"},
		{"help", 'h', OPT_FLAG, &help, NULL, "show this help"},
		{0},
	};
	opt_list rest = {0};
	tensor_source a = {0}, b = {0};
	float *va = NULL, *vb = NULL;
	size_t cap = 0, over = 0, only_a = 0, only_b = 0, shape_diff = 0, same = 0, skipped = 0;
	double tol = 0, worst = 0;
	int rc = command_args(specs, DIFF_SYNOPSIS, &help, argc, argv, &rest, 2, &done);

	if (rc || done)
		goto out;
	if (tol_s) {
		char *end;
		errno = 0;
		tol = strtod(tol_s, &end);
		if (end == tol_s || *end || errno || !(tol >= 0)) {
			rc = titan_err(TITAN_EUSAGE, "--tolerance: expected a number >= 0, got '%s'",
				       tol_s);
			goto out;
		}
	}
	if ((rc = source_open(&a, rest.v[0])) || (rc = source_open(&b, rest.v[1])))
		goto out;
	printf("%-48s %12s %12s\n", "tensor", "max_abs", "max_rel");
	for (size_t i = 0; i < source_count(&a); i++) {
		const char *name = source_name(&a, i);
		int nda, ndb;

		if (weights_only && is_optim(name)) {
			skipped++;
			continue;
		}
		int64_t sa[ST_MAX_DIMS], sb[ST_MAX_DIMS];
		char ta[96], tb[96];

		source_shape(&a, name, &nda, sa);
		if (!source_shape(&b, name, &ndb, sb)) {
			printf("%-48s only in %s\n", name, rest.v[0]);
			only_a++;
			continue;
		}
		if (nda != ndb || memcmp(sa, sb, sizeof(int64_t) * (size_t)nda)) {
			ckpt_shape_text(ta, sizeof ta, nda, sa);
			ckpt_shape_text(tb, sizeof tb, ndb, sb);
			printf("%-48s shape %s vs %s\n", name, ta, tb);
			shape_diff++;
			continue;
		}
		size_t n = (size_t)numel(nda, sa);
		if (n > cap) {
			free(va);
			free(vb);
			va = malloc(n * sizeof *va);
			vb = malloc(n * sizeof *vb);
			cap = n;
			if (!va || !vb) {
				rc = titan_err_nomem();
				goto out;
			}
		}
		if ((rc = source_read(&a, name, va, (int64_t)n)) ||
		    (rc = source_read(&b, name, vb, (int64_t)n)))
			goto out;
		diff_stats d = compare(va, vb, (int64_t)n);
		bool bad = d.max_abs > tol;
		over += bad;
		same += d.max_abs == 0;
		if (d.max_abs > worst)
			worst = d.max_abs;
		if (bad || all)
			printf("%-48s %12.4g %12.4g%s\n", name, d.max_abs, d.max_rel,
			       bad ? "  over" : "");
	}
	for (size_t i = 0; i < source_count(&b); i++) {
		int nd;
		int64_t s[ST_MAX_DIMS];
		if (weights_only && is_optim(source_name(&b, i)))
			continue;
		if (!source_shape(&a, source_name(&b, i), &nd, s)) {
			printf("%-48s only in %s\n", source_name(&b, i), rest.v[1]);
			only_b++;
		}
	}
	printf("%zu tensors compared: %zu identical, %zu above tolerance %g (largest "
	       "difference %.4g); %zu only on one side, %zu of another shape\n",
	       source_count(&a) - skipped - only_a - shape_diff, same, over, tol, worst,
	       only_a + only_b, shape_diff);
	if ((rc = cli_finish_stdout()))
		goto out;
	if (over || only_a || only_b || shape_diff)
		rc = titan_err(TITAN_EFORMAT, "%s and %s differ", rest.v[0], rest.v[1]);
out:
	free(va);
	free(vb);
	source_close(&a);
	source_close(&b);
	opt_list_free(&rest);
	return rc;
}

/* ---- main -------------------------------------------------------------- */

int main(int argc, char **argv)
{
	static const cli_command cmds[] = {
		{"info", cmd_info},
		{"verify", cmd_verify},
		{"export", cmd_export},
		{"import", cmd_import},
		{"reshard", cmd_reshard},
		{"diff", cmd_diff},
		{0},
	};
	const cli_tool tool = {.prog = PROG, .usage = usage_top, .cmds = cmds};
	return cli_main(&tool, argc, argv);
}
