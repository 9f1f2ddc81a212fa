/* config.c - defaults, flavor, file and overrides merged into one JSON
 * object, then checked and copied into train_config.
 *
 * The merged object c->json is the single source of truth: every key of the
 * schema is present in it, with the JSON type of its schema type (floats are
 * always reals), so printing it and loading the print back gives the same
 * config.  The struct's strings point into it. */
#include "core/base.h"

#include <dirent.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "core/json.h"
#include "model/shard.h"

enum key_type { K_INT, K_FLOAT, K_BOOL, K_STR, K_ENUM };

/* Range checks applied after merging (model keys are llama_config_check's). */
enum {
	R_LO = 1,          /* value >= lo (> lo with R_LO_OPEN) */
	R_HI = 2,          /* value <= hi (< hi with R_HI_OPEN) */
	R_LO_OPEN = 4,
	R_HI_OPEN = 8,
	R_OR_UNSET = 16,   /* -1 is also accepted: "unset" */
};

struct config_key {
	const char *section, *name;
	enum key_type type;
	const char *def;                  /* NULL: the flavor sets it */
	const char *const *choices;       /* K_ENUM: NULL-terminated */
	/* Where the value lands in train_config; size 0: not copied.  A K_INT
	 * lands in an int or a 64-bit integer by size; a K_ENUM lands in an
	 * enum (the index of the choice) or, pointer-sized, in a string. */
	size_t offset, size;
	unsigned range;
	double lo, hi;
	const char *help;
};

#define AT(m) .offset = offsetof(train_config, m), .size = sizeof(((train_config *)0)->m)
#define CHOICES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define MODEL(nm, ty, help_) \
	{ .section = "model", .name = #nm, .type = ty, AT(model.nm), .help = help_ }

static const struct config_key keys[] = {
	{ .section = "model", .name = "flavor", .type = K_STR, .def = "debugmodel",
	  .help = "model flavor: a name in share/titan/flavors or a .json path" },
	MODEL(dim, K_INT, "model width"),
	MODEL(n_layers, K_INT, "transformer blocks"),
	MODEL(n_heads, K_INT, "attention heads"),
	MODEL(n_kv_heads, K_INT, "key/value heads (grouped-query attention)"),
	MODEL(vocab_size, K_INT, "vocabulary size"),
	MODEL(multiple_of, K_INT, "FFN hidden size is rounded up to a multiple of this"),
	MODEL(ffn_dim_multiplier, K_FLOAT, "FFN hidden size multiplier (0: none)"),
	{ .section = "model", .name = "ffn_hidden", .type = K_INT, .def = "0",
	  AT(model.ffn_hidden),
	  .help = "FFN hidden size outright (0: from multiple_of and ffn_dim_multiplier)" },
	MODEL(norm_eps, K_FLOAT, "RMSNorm epsilon"),
	MODEL(rope_theta, K_FLOAT, "RoPE base frequency"),
	MODEL(rope_scaling, K_BOOL, "Llama 3.1 RoPE frequency scaling"),
	MODEL(rope_scaling_factor, K_FLOAT, "RoPE scaling factor"),
	MODEL(rope_low_freq_factor, K_FLOAT, "RoPE scaling low-frequency factor"),
	MODEL(rope_high_freq_factor, K_FLOAT, "RoPE scaling high-frequency factor"),
	MODEL(rope_original_max_pos, K_INT, "context length RoPE scaling starts from"),
	MODEL(max_seq_len, K_INT, "longest sequence the model accepts"),
	MODEL(tie_embeddings, K_BOOL, "output projection reads the token embeddings"),
	MODEL(depth_init, K_BOOL, "init std shrinks with depth"),

	{ .section = "data", .name = "dataset", .type = K_STR, .def = "", AT(data.dataset),
	  .help = "titan-pack dataset directory" },
	{ .section = "data", .name = "mask", .type = K_ENUM, .def = "block_causal",
	  .choices = CHOICES("causal", "block_causal"), AT(data.mask),
	  .help = "attention mask: across documents or within each" },

	{ .section = "training", .name = "steps", .type = K_INT, .def = "10",
	  AT(training.steps), .range = R_LO, .lo = 1, .help = "optimizer steps to run" },
	{ .section = "training", .name = "local_batch_size", .type = K_INT, .def = "8",
	  AT(training.local_batch_size), .range = R_LO, .lo = 1,
	  .help = "sequences per device per micro-batch" },
	{ .section = "training", .name = "global_batch_size", .type = K_INT, .def = "-1",
	  AT(training.global_batch_size),
	  .help = "sequences per optimizer step (-1: local * data-parallel degree)" },
	{ .section = "training", .name = "seq_len", .type = K_INT, .def = "2048",
	  AT(training.seq_len), .range = R_LO, .lo = 1, .help = "tokens per sequence" },
	{ .section = "training", .name = "seed", .type = K_INT, .def = "0",
	  AT(training.seed), .range = R_LO, .lo = 0, .help = "random seed" },
	{ .section = "training", .name = "device", .type = K_ENUM, .def = "cpu",
	  .choices = CHOICES("cpu", "cuda", "cpu-fenced"), AT(training.device),
	  .help = "where to train (cpu-fenced: the CPU through the device path, for tests)" },
	{ .section = "training", .name = "matmul_dtype", .type = K_ENUM, .def = "float32",
	  .choices = CHOICES("float32", "bfloat16"), AT(training.matmul_dtype),
	  .help = "GEMM operands (bfloat16: rounded to bf16, summed in fp32; the rest fp32)" },
	{ .section = "training", .name = "max_norm", .type = K_FLOAT, .def = "1.0",
	  AT(training.max_norm), .help = "gradient clipping norm (<= 0: no clipping)" },
	{ .section = "training", .name = "threads", .type = K_INT, .def = "0",
	  AT(training.threads), .range = R_LO, .lo = 0,
	  .help = "CPU threads (0: OMP_NUM_THREADS or every core)" },

	{ .section = "optimizer", .name = "name", .type = K_ENUM, .def = "AdamW",
	  .choices = CHOICES("AdamW"), AT(optimizer.name), .help = "optimizer" },
	{ .section = "optimizer", .name = "lr", .type = K_FLOAT, .def = "8e-4",
	  AT(optimizer.lr), .range = R_LO, .lo = 0, .help = "peak learning rate" },
	{ .section = "optimizer", .name = "weight_decay", .type = K_FLOAT, .def = "0.1",
	  AT(optimizer.weight_decay), .range = R_LO, .lo = 0, .help = "decoupled weight decay" },
	{ .section = "optimizer", .name = "beta1", .type = K_FLOAT, .def = "0.9",
	  AT(optimizer.beta1), .range = R_LO | R_HI | R_HI_OPEN, .lo = 0, .hi = 1,
	  .help = "first-moment decay" },
	{ .section = "optimizer", .name = "beta2", .type = K_FLOAT, .def = "0.95",
	  AT(optimizer.beta2), .range = R_LO | R_HI | R_HI_OPEN, .lo = 0, .hi = 1,
	  .help = "second-moment decay" },
	{ .section = "optimizer", .name = "eps", .type = K_FLOAT, .def = "1e-8",
	  AT(optimizer.eps), .range = R_LO | R_LO_OPEN, .lo = 0,
	  .help = "denominator epsilon" },
	{ .section = "optimizer", .name = "decay_embeddings_and_norms", .type = K_BOOL,
	  .def = "true", AT(optimizer.decay_embeddings_and_norms),
	  .help = "apply weight decay to embeddings and norms too" },

	{ .section = "lr_scheduler", .name = "warmup_steps", .type = K_INT, .def = "2",
	  AT(lr_scheduler.warmup_steps), .range = R_LO, .lo = 0,
	  .help = "linear warmup steps" },
	{ .section = "lr_scheduler", .name = "decay_ratio", .type = K_FLOAT, .def = "-1",
	  AT(lr_scheduler.decay_ratio), .range = R_LO | R_HI | R_OR_UNSET, .lo = 0, .hi = 1,
	  .help = "fraction of steps spent decaying (-1: every step after warmup)" },
	{ .section = "lr_scheduler", .name = "decay_type", .type = K_ENUM, .def = "linear",
	  .choices = CHOICES("linear", "sqrt", "cosine"), AT(lr_scheduler.decay_type),
	  .help = "shape of the decay" },
	{ .section = "lr_scheduler", .name = "min_lr_factor", .type = K_FLOAT, .def = "0.0",
	  AT(lr_scheduler.min_lr_factor), .range = R_LO | R_HI, .lo = 0, .hi = 1,
	  .help = "final learning rate as a fraction of the peak" },

	{ .section = "checkpoint", .name = "enable", .type = K_BOOL, .def = "false",
	  AT(checkpoint.enable), .help = "save checkpoints" },
	{ .section = "checkpoint", .name = "folder", .type = K_STR, .def = "checkpoint",
	  AT(checkpoint.folder), .help = "checkpoint directory" },
	{ .section = "checkpoint", .name = "interval", .type = K_INT, .def = "500",
	  AT(checkpoint.interval), .range = R_LO, .lo = 1, .help = "steps between saves" },
	{ .section = "checkpoint", .name = "keep_latest_k", .type = K_INT, .def = "10",
	  AT(checkpoint.keep_latest_k), .range = R_LO, .lo = 0,
	  .help = "checkpoints kept (0: all)" },
	{ .section = "checkpoint", .name = "load", .type = K_STR, .def = "",
	  AT(checkpoint.load), .help = "resume from \"latest\" or a step directory" },
	{ .section = "checkpoint", .name = "async", .type = K_BOOL, .def = "false",
	  AT(checkpoint.async), .help = "write checkpoints in the background" },

	{ .section = "metrics", .name = "log_freq", .type = K_INT, .def = "10",
	  AT(metrics.log_freq), .range = R_LO, .lo = 1, .help = "steps between log lines" },
	{ .section = "metrics", .name = "jsonl", .type = K_STR, .def = "",
	  AT(metrics.jsonl), .help = "JSON-lines metrics file" },
	{ .section = "metrics", .name = "tensorboard", .type = K_STR, .def = "",
	  AT(metrics.tensorboard), .help = "TensorBoard event directory" },
	{ .section = "metrics", .name = "peak_flops", .type = K_FLOAT, .def = "0",
	  AT(metrics.peak_flops), .range = R_LO, .lo = 0,
	  .help = "peak FLOP/s per device for MFU (0: measure CPU sgemm)" },

	{ .section = "activation_checkpoint", .name = "mode", .type = K_ENUM, .def = "none",
	  .choices = CHOICES("none", "full", "selective"), AT(activation_checkpoint.mode),
	  .help = "recompute activations in backward" },
	{ .section = "activation_checkpoint", .name = "selective_every", .type = K_INT,
	  .def = "2", AT(activation_checkpoint.selective_every), .range = R_LO, .lo = 1,
	  .help = "selective mode: recompute every k-th block" },

	{ .section = "validation", .name = "freq", .type = K_INT, .def = "0",
	  AT(validation.freq), .range = R_LO, .lo = 0,
	  .help = "steps between validations (0: off)" },
	{ .section = "validation", .name = "steps", .type = K_INT, .def = "10",
	  AT(validation.steps), .range = R_LO | R_OR_UNSET, .lo = 1,
	  .help = "batches per validation (-1: the whole split)" },

	{ .section = "parallelism", .name = "data_parallel_replicate_degree", .type = K_INT,
	  .def = "1", AT(parallelism.data_parallel_replicate_degree), .range = R_LO, .lo = 1,
	  .help = "replicated data-parallel groups" },
	{ .section = "parallelism", .name = "data_parallel_shard_degree", .type = K_INT,
	  .def = "-1", AT(parallelism.data_parallel_shard_degree),
	  .range = R_LO | R_OR_UNSET, .lo = 1,
	  .help = "FSDP degree (-1: the ranks left over)" },
	{ .section = "parallelism", .name = "tensor_parallel_degree", .type = K_INT,
	  .def = "1", AT(parallelism.tensor_parallel_degree), .range = R_LO, .lo = 1,
	  .help = "tensor-parallel degree" },
	{ .section = "parallelism", .name = "pipeline_parallel_degree", .type = K_INT,
	  .def = "1", AT(parallelism.pipeline_parallel_degree), .range = R_LO, .lo = 1,
	  .help = "pipeline-parallel degree" },
	{ .section = "parallelism", .name = "context_parallel_degree", .type = K_INT,
	  .def = "1", AT(parallelism.context_parallel_degree), .range = R_LO, .lo = 1,
	  .help = "context-parallel degree" },
	{ .section = "parallelism", .name = "pipeline_parallel_microbatch_size", .type = K_INT,
	  .def = "1", AT(parallelism.pipeline_parallel_microbatch_size), .range = R_LO, .lo = 1,
	  .help = "sequences per pipeline micro-batch (it divides local_batch_size)" },
	{ .section = "parallelism", .name = "pipeline_parallel_schedule", .type = K_ENUM,
	  .def = "1F1B", .choices = CHOICES("1F1B", "GPipe", "Interleaved1F1B"),
	  AT(parallelism.pipeline_parallel_schedule),
	  .help = "pipeline schedule: 1F1B, GPipe or Interleaved1F1B" },
	{ .section = "parallelism", .name = "pipeline_parallel_layers_per_stage", .type = K_INT,
	  .def = "0", AT(parallelism.pipeline_parallel_layers_per_stage), .range = R_LO, .lo = 0,
	  .help = "layers per pipeline stage (0: n_layers / pp, or / 2 pp with "
		  "Interleaved1F1B)" },
	{ .section = "parallelism", .name = "sequence_parallel", .type = K_BOOL, .def = "true",
	  AT(parallelism.sequence_parallel),
	  .help = "with tensor parallel, split the norms and the residual stream over the "
		  "sequence" },
	{ .section = "parallelism", .name = "fsdp_reshard_after_forward", .type = K_ENUM,
	  .def = "default", .choices = CHOICES("default", "always", "never"),
	  AT(parallelism.fsdp_reshard_after_forward),
	  .help = "free FSDP's gathered layers after forward (default: unless pipeline "
		  "parallel)" },

	{ .section = "comm", .name = "init_timeout_seconds", .type = K_INT, .def = "300",
	  AT(comm.init_timeout_seconds), .range = R_LO, .lo = 1,
	  .help = "seconds the ranks may take to meet at start-up" },
	{ .section = "comm", .name = "train_timeout_seconds", .type = K_INT, .def = "100",
	  AT(comm.train_timeout_seconds), .range = R_LO, .lo = 1,
	  .help = "seconds any one collective may wait while training (a rank died or "
		  "hangs)" },
};

/* K_ENUM stores by size: the enum index or the string itself. */
_Static_assert(sizeof(mask_kind) == sizeof(int) && sizeof(decay_kind) == sizeof(int) &&
	       sizeof(reshard_kind) == sizeof(int) &&
	       sizeof(llama_ac_mode) == sizeof(int) && sizeof(const char *) != sizeof(int),
	       "enum-valued keys are told from string-valued ones by size");

static const char *const type_names[] = {
	[K_INT] = "int", [K_FLOAT] = "float", [K_BOOL] = "bool",
	[K_STR] = "string", [K_ENUM] = "enum",
};

static const struct config_key *find_key(const char *section, size_t seclen,
					  const char *name, size_t namelen)
{
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (strlen(keys[i].section) == seclen &&
		    !memcmp(keys[i].section, section, seclen) &&
		    strlen(keys[i].name) == namelen && !memcmp(keys[i].name, name, namelen))
			return &keys[i];
	return NULL;
}

static bool is_section(const char *s, size_t n)
{
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (strlen(keys[i].section) == n && !memcmp(keys[i].section, s, n))
			return true;
	return false;
}

/* Optimal string alignment distance: Levenshtein plus adjacent swaps, so a
 * transposed pair ("stpes") costs one edit. */
static size_t edit_distance(const char *a, const char *b)
{
	enum { MAXLEN = 127 };
	size_t n = strlen(a), m = strlen(b);
	size_t rows[3][MAXLEN + 1];   /* rows i - 2, i - 1 and i of the table */

	if (n > MAXLEN || m > MAXLEN)
		return SIZE_MAX;
	for (size_t j = 0; j <= m; j++)
		rows[0][j] = j;
	for (size_t i = 1; i <= n; i++) {
		size_t *cur = rows[i % 3], *up = rows[(i - 1) % 3], *up2 = rows[(i + 1) % 3];
		cur[0] = i;
		for (size_t j = 1; j <= m; j++) {
			size_t best = up[j - 1] + (a[i - 1] != b[j - 1]);
			best = TITAN_MIN(best, up[j] + 1);
			best = TITAN_MIN(best, cur[j - 1] + 1);
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
				best = TITAN_MIN(best, up2[j - 2] + 1);
			cur[j] = best;
		}
	}
	return rows[n % 3][m];
}

/* Close enough to be what the user meant, not just any short word. */
static bool is_close(const char *given, size_t dist)
{
	return dist <= 2 + strlen(given) / 8 && dist < strlen(given);
}

/* "; did you mean 'training.steps'?", or the keys of the section the user
 * named, or the sections: what helps most after an unknown dotted key. */
static void suggest_key(char *out, size_t n, const char *dotted)
{
	const struct config_key *best = NULL;
	size_t best_dist = SIZE_MAX, len = 0;
	const char *dot = strchr(dotted, '.');
	char full[128];

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		snprintf(full, sizeof full, "%s.%s", keys[i].section, keys[i].name);
		size_t dist = edit_distance(dotted, full);
		if (!dot)    /* a bare "steps" means the key of that name */
			dist = TITAN_MIN(dist, edit_distance(dotted, keys[i].name));
		if (dist < best_dist) {
			best_dist = dist;
			best = &keys[i];
		}
	}
	if (best && is_close(dotted, best_dist)) {
		snprintf(out, n, "; did you mean '%s.%s'?", best->section, best->name);
		return;
	}
	out[0] = '\0';
	if (dot && is_section(dotted, (size_t)(dot - dotted))) {
		const char *sep = " ";
		len = (size_t)snprintf(out, n, " (%.*s keys:", (int)(dot - dotted), dotted);
		for (size_t i = 0; i < ARRAY_SIZE(keys) && len < n; i++) {
			if (strlen(keys[i].section) == (size_t)(dot - dotted) &&
			    !memcmp(keys[i].section, dotted, (size_t)(dot - dotted))) {
				len += (size_t)snprintf(out + len, n - len, "%s%s", sep,
							keys[i].name);
				sep = ", ";
			}
		}
	} else {
		len = (size_t)snprintf(out, n, " (sections: %s", keys[0].section);
		for (size_t i = 1; i < ARRAY_SIZE(keys) && len < n; i++)
			if (strcmp(keys[i].section, keys[i - 1].section))
				len += (size_t)snprintf(out + len, n - len, ", %s",
							keys[i].section);
	}
	if (len < n)
		snprintf(out + len, n - len, ")");
}

/* A short rendering of a JSON value for "got ..." in messages. */
static void describe(char *out, size_t n, const json_t *v)
{
	char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!s) {
		snprintf(out, n, "an unprintable value");
		return;
	}
	if (strlen(s) > 40)
		snprintf(out, n, "%.37s...", s);
	else
		snprintf(out, n, "%s", s);
	free(s);
}

static int choice_index(const struct config_key *k, const char *s)
{
	for (int i = 0; k->choices[i]; i++)
		if (!strcmp(k->choices[i], s))
			return i;
	return -1;
}

static void list_choices(char *out, size_t n, const struct config_key *k)
{
	size_t len = 0;
	out[0] = '\0';
	for (int i = 0; k->choices[i] && len < n; i++)
		len += (size_t)snprintf(out + len, n - len, "%s%s", i ? ", " : "",
					k->choices[i]);
}

static bool fits(const struct config_key *k, long long v)
{
	return k->size != sizeof(int) || (v >= INT_MIN && v <= INT_MAX);
}

/* Convert a JSON value to the key's type.  *out is a new reference; NULL
 * with a message in err when the value does not fit. */
static json_t *from_json(const struct config_key *k, json_t *v, char *err, size_t n)
{
	char got[64], choices[256];

	describe(got, sizeof got, v);
	switch (k->type) {
	case K_INT:
		if (json_is_integer(v) && fits(k, json_integer_value(v)))
			return json_integer(json_integer_value(v));
		if (json_is_real(v)) {
			double d = json_real_value(v);
			if (d == floor(d) && fabs(d) < 9e15 && fits(k, (long long)d))
				return json_integer((json_int_t)d);
		}
		if (json_is_integer(v) || (json_is_real(v) &&
					       json_real_value(v) == floor(json_real_value(v))))
			snprintf(err, n, "%s is out of range", got);
		else
			snprintf(err, n, "expected an integer, got %s", got);
		return NULL;
	case K_FLOAT:
		if (json_is_number(v))
			return json_real(json_number_value(v));
		snprintf(err, n, "expected a number, got %s", got);
		return NULL;
	case K_BOOL:
		if (json_is_boolean(v))
			return json_incref(v);
		snprintf(err, n, "expected true or false, got %s", got);
		return NULL;
	case K_STR:
		if (json_is_string(v))
			return json_incref(v);
		snprintf(err, n, "expected a string, got %s", got);
		return NULL;
	case K_ENUM:
		if (json_is_string(v) && choice_index(k, json_string_value(v)) >= 0)
			return json_incref(v);
		list_choices(choices, sizeof choices, k);
		snprintf(err, n, "expected one of %s, got %s", choices, got);
		return NULL;
	}
	snprintf(err, n, "unknown key type");
	return NULL;
}

/* Parse an override's text as the key's type (NULL and err on failure). */
static json_t *from_text(const struct config_key *k, const char *s, char *err, size_t n)
{
	char *end, choices[256];
	long long i;
	double d;

	switch (k->type) {
	case K_INT:
		errno = 0;
		i = strtoll(s, &end, 10);
		if (!*s || *end || end == s) {
			snprintf(err, n, "expected an integer");
			return NULL;
		}
		if (errno == ERANGE || !fits(k, i)) {
			snprintf(err, n, "out of range");
			return NULL;
		}
		return json_integer(i);
	case K_FLOAT:
		errno = 0;
		d = strtod(s, &end);
		if (!*s || *end || end == s || errno == ERANGE || !isfinite(d)) {
			snprintf(err, n, "expected a finite number");
			return NULL;
		}
		return json_real(d);
	case K_BOOL:
		if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes"))
			return json_true();
		if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no"))
			return json_false();
		snprintf(err, n, "expected true, false, yes, no, 1 or 0");
		return NULL;
	case K_STR:
		return json_string(s);
	case K_ENUM:
		if (choice_index(k, s) >= 0)
			return json_string(s);
		list_choices(choices, sizeof choices, k);
		snprintf(err, n, "expected one of %s", choices);
		return NULL;
	}
	snprintf(err, n, "unknown key type");
	return NULL;
}

static int put(json_t *root, const struct config_key *k, json_t *v)
{
	json_t *sec = json_object_get(root, k->section);
	if (!v)
		return titan_err_nomem();
	if (!sec) {
		sec = json_object();
		if (!sec || json_object_set_new(root, k->section, sec)) {
			json_decref(v);
			return titan_err_nomem();
		}
	}
	if (json_object_set_new(sec, k->name, v))
		return titan_err_nomem();
	return 0;
}

static json_t *get(json_t *root, const struct config_key *k)
{
	return json_object_get(json_object_get(root, k->section), k->name);
}

static int set_defaults(json_t *root)
{
	char err[256];
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		if (!keys[i].def)
			continue;
		json_t *v = from_text(&keys[i], keys[i].def, err, sizeof err);
		if (!v)
			return titan_err(TITAN_EINTERNAL, "%s.%s: bad default '%s': %s",
					 keys[i].section, keys[i].name, keys[i].def, err);
		int rc = put(root, &keys[i], v);
		if (rc)
			return rc;
	}
	return 0;
}

/* The key of "section.key=value"; its length goes to *keylen. */
static const struct config_key *override_key(const char *arg, size_t *keylen)
{
	const char *eq = strchr(arg, '=');
	const char *dot;

	*keylen = eq ? (size_t)(eq - arg) : strlen(arg);
	dot = memchr(arg, '.', *keylen);
	if (!dot)
		return NULL;
	return find_key(arg, (size_t)(dot - arg), dot + 1, *keylen - (size_t)(dot - arg) - 1);
}

static int apply_override(json_t *root, const char *arg)
{
	size_t keylen;
	const struct config_key *k = override_key(arg, &keylen);
	const char *value = arg[keylen] == '=' ? arg + keylen + 1 : NULL;
	char err[320], dotted[128];

	if (!k) {
		snprintf(dotted, sizeof dotted, "%.*s", (int)TITAN_MIN(keylen, 127), arg);
		suggest_key(err, sizeof err, dotted);
		return titan_err(TITAN_EUSAGE, "--%s: unknown key%s", dotted, err);
	}
	if (!value) {
		if (k->type != K_BOOL)
			return titan_err(TITAN_EUSAGE, "--%s: expected '=VALUE' (a %s)", arg,
					 type_names[k->type]);
		value = "true";
	}
	json_t *v = from_text(k, value, err, sizeof err);
	if (!v)
		return titan_err(TITAN_EUSAGE, "--%s: %s", arg, err);
	return put(root, k, v);
}

/* Keys of one JSON object into the merged config.  A flavor file (flavor
 * true) holds the model keys at the top level; a config file holds
 * sections. */
static int apply_section(json_t *root, json_t *obj, const char *section,
			 const char *file, bool flavor)
{
	const char *name;
	json_t *v;
	char err[512], dotted[128], path[160];

	json_object_foreach(obj, name, v) {
		const struct config_key *k = find_key(section, strlen(section), name,
						      strlen(name));
		if (flavor)
			snprintf(path, sizeof path, "$.%s", name);
		else
			snprintf(path, sizeof path, "$.%s.%s", section, name);
		if (!k || (flavor && !k->size)) {
			snprintf(dotted, sizeof dotted, "%s.%s", section, name);
			suggest_key(err, sizeof err, dotted);
			return titan_err(TITAN_EUSAGE, "'%s': %s: unknown key%s", file, path, err);
		}
		json_t *nv = from_json(k, v, err, sizeof err);
		if (!nv)
			return titan_err(TITAN_EUSAGE, "'%s': %s: %s", file, path, err);
		int rc = put(root, k, nv);
		if (rc)
			return rc;
	}
	return 0;
}

static int apply_file(json_t *root, json_t *file_json, const char *file)
{
	const char *section;
	json_t *obj;
	char got[64], hint[320];

	if (!json_is_object(file_json))
		return titan_err(TITAN_EUSAGE, "'%s': expected a JSON object at the top level",
				 file);
	json_object_foreach(file_json, section, obj) {
		if (!is_section(section, strlen(section))) {
			size_t best = SIZE_MAX;
			const char *best_sec = NULL;
			for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
				size_t d = edit_distance(section, keys[i].section);
				if (d < best) {
					best = d;
					best_sec = keys[i].section;
				}
			}
			if (best_sec && is_close(section, best))
				snprintf(hint, sizeof hint, "; did you mean '%s'?", best_sec);
			else
				suggest_key(hint, sizeof hint, "?"); /* lists the sections */
			return titan_err(TITAN_EUSAGE, "'%s': $.%s: unknown section%s", file,
					 section, hint);
		}
		if (!json_is_object(obj)) {
			describe(got, sizeof got, obj);
			return titan_err(TITAN_EUSAGE, "'%s': $.%s: expected an object, got %s",
					 file, section, got);
		}
		int rc = apply_section(root, obj, section, file, false);
		if (rc)
			return rc;
	}
	return 0;
}

static bool is_dir(const char *path)
{
	struct stat st;
	return !stat(path, &st) && S_ISDIR(st.st_mode);
}

/* $TITAN_SHARE/flavors, else next to the executable: BIN/../share/titan/flavors
 * (installed) or BIN/../../share/titan/flavors (build/bin, build/tests). */
static int flavor_dir(char *out, size_t n)
{
	const char *share = getenv("TITAN_SHARE");
	char exe[PATH_MAX];
	ssize_t len;

	if (share && *share) {
		snprintf(out, n, "%s/flavors", share);
		if (is_dir(out))
			return 0;
	}
	len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (len > 0) {
		exe[len] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = '\0';
		if (snprintf(out, n, "%s/../share/titan/flavors", exe) < (int)n &&
		    is_dir(out))
			return 0;
		if (snprintf(out, n, "%s/../../share/titan/flavors", exe) < (int)n &&
		    is_dir(out))
			return 0;
	}
	return titan_err(TITAN_EIO, "cannot find the flavor directory share/titan/flavors "
			 "next to the executable (set TITAN_SHARE to the share/titan directory)");
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int config_list_flavors(char ***names, int *n)
{
	char dir[PATH_MAX];
	char **v = NULL;
	int count = 0, cap = 0, rc;
	struct dirent *e;
	DIR *d;

	*names = NULL;
	*n = 0;
	if ((rc = flavor_dir(dir, sizeof dir)))
		return rc;
	if (!(d = opendir(dir)))
		return titan_err_errno(TITAN_EIO, "cannot open '%s'", dir);
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len <= 5 || e->d_name[0] == '.' || strcmp(e->d_name + len - 5, ".json"))
			continue;
		if (count == cap) {
			cap = cap ? 2 * cap : 16;
			char **nv = realloc(v, (size_t)cap * sizeof *v);
			if (!nv)
				goto nomem;
			v = nv;
		}
		if (!(v[count] = strndup(e->d_name, len - 5)))
			goto nomem;
		count++;
	}
	closedir(d);
	if (count)
		qsort(v, (size_t)count, sizeof *v, cmp_str);
	*names = v;
	*n = count;
	return 0;
nomem:
	closedir(d);
	for (int i = 0; i < count; i++)
		free(v[i]);
	free(v);
	return titan_err_nomem();
}

static int unknown_flavor(const char *name)
{
	char **names;
	int n, rc = config_list_flavors(&names, &n);
	char known[512], hint[160] = "";
	size_t len = 0, best = SIZE_MAX;

	if (rc)
		return rc;
	known[0] = '\0';
	for (int i = 0; i < n; i++) {
		size_t d = edit_distance(name, names[i]);
		if (d < best && is_close(name, d)) {
			best = d;
			snprintf(hint, sizeof hint, "; did you mean '%s'?", names[i]);
		}
		if (len < sizeof known)
			len += (size_t)snprintf(known + len, sizeof known - len, "%s%s",
						i ? ", " : "", names[i]);
		free(names[i]);
	}
	free(names);
	return titan_err(TITAN_EUSAGE, "model.flavor: no flavor '%s'%s (known: %s)", name,
			 hint, n ? known : "none");
}

/* model.flavor as the overrides, else the file, else the default give it. */
static int pick_flavor(const char **out, json_t *file_json, const char *file,
		       int noverrides, char **overrides)
{
	const struct config_key *k = find_key("model", 5, "flavor", 6);
	json_t *v = json_object_get(json_object_get(file_json, "model"), "flavor");
	char got[64];

	*out = k->def;
	if (v) {
		if (!json_is_string(v)) {
			describe(got, sizeof got, v);
			return titan_err(TITAN_EUSAGE, "'%s': $.model.flavor: expected a string, "
					 "got %s", file, got);
		}
		*out = json_string_value(v);
	}
	for (int i = 0; i < noverrides; i++)
		if (!strncmp(overrides[i], "model.flavor=", 13))
			*out = overrides[i] + 13;
	return 0;
}

static int load_flavor(json_t *root, const char *name)
{
	char dir[PATH_MAX], path[PATH_MAX + 300];
	size_t len = strlen(name);
	json_t *fj = NULL;
	int rc;

	if (!*name)
		return titan_err(TITAN_EUSAGE, "model.flavor: empty flavor name");
	if (strchr(name, '/') || (len > 5 && !strcmp(name + len - 5, ".json"))) {
		snprintf(path, sizeof path, "%s", name);
	} else {
		if ((rc = flavor_dir(dir, sizeof dir)))
			return rc;
		snprintf(path, sizeof path, "%s/%s.json", dir, name);
		if (access(path, R_OK))
			return unknown_flavor(name);
	}
	if ((rc = json_load_path(&fj, path)))
		return rc;
	if (!json_is_object(fj))
		rc = titan_err(TITAN_EUSAGE, "'%s': expected a JSON object of model keys", path);
	else
		rc = apply_section(root, fj, "model", path, true);
	json_decref(fj);
	if (rc)
		return rc;
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (!keys[i].def && !get(root, &keys[i]))
			return titan_err(TITAN_EUSAGE, "'%s': missing model key '%s'", path,
					 keys[i].name);
	return 0;
}

static void store(train_config *c, const struct config_key *k, json_t *v)
{
	char *dst = (char *)c + k->offset;
	long long i;
	int small;
	double d;
	bool b;
	const char *s;

	switch (k->type) {
	case K_INT:
		i = json_integer_value(v);
		small = (int)i;
		if (k->size == sizeof(int))
			memcpy(dst, &small, sizeof small);
		else
			memcpy(dst, &i, sizeof i);
		break;
	case K_FLOAT:
		d = json_number_value(v);
		memcpy(dst, &d, sizeof d);
		break;
	case K_BOOL:
		b = json_is_true(v);
		memcpy(dst, &b, sizeof b);
		break;
	case K_STR:
		s = json_string_value(v);
		memcpy(dst, &s, sizeof s);
		break;
	case K_ENUM:
		s = json_string_value(v);
		if (k->size == sizeof(int)) {
			small = choice_index(k, s);
			memcpy(dst, &small, sizeof small);
		} else {
			memcpy(dst, &s, sizeof s);
		}
		break;
	}
}

static int check_range(const struct config_key *k, json_t *v)
{
	double x = json_number_value(v);
	bool lo_ok = !(k->range & R_LO) ||
		     ((k->range & R_LO_OPEN) ? x > k->lo : x >= k->lo);
	bool hi_ok = !(k->range & R_HI) ||
		     ((k->range & R_HI_OPEN) ? x < k->hi : x <= k->hi);
	char want[96], got[64];

	if ((lo_ok && hi_ok) || ((k->range & R_OR_UNSET) && x == -1))
		return 0;
	if ((k->range & (R_LO | R_HI)) == (R_LO | R_HI))
		snprintf(want, sizeof want, "in %c%g, %g%c", (k->range & R_LO_OPEN) ? '(' : '[',
			 k->lo, k->hi, (k->range & R_HI_OPEN) ? ')' : ']');
	else if (k->range & R_LO)
		snprintf(want, sizeof want, "%s %g", (k->range & R_LO_OPEN) ? ">" : ">=", k->lo);
	else
		snprintf(want, sizeof want, "%s %g", (k->range & R_HI_OPEN) ? "<" : "<=", k->hi);
	describe(got, sizeof got, v);
	return titan_err(TITAN_EUSAGE, "%s.%s: must be %s%s, got %s", k->section, k->name,
			 (k->range & R_OR_UNSET) ? "-1 or " : "", want, got);
}

static int check(train_config *c)
{
	int rc;

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (keys[i].range && (rc = check_range(&keys[i], get(c->json, &keys[i]))))
			return rc;
	int local = c->training.local_batch_size, global = c->training.global_batch_size;
	if (global != -1 && (global <= 0 || global % local))
		return titan_err(TITAN_EUSAGE, "training.global_batch_size: %d is not -1 or a "
				 "positive multiple of training.local_batch_size %d", global, local);
	if ((rc = llama_config_check(&c->model)))
		return rc;
	/* the check fills n_kv_heads 0 ("as many as n_heads"); print what runs */
	if ((rc = put(c->json, find_key("model", 5, "n_kv_heads", 10),
		      json_integer(c->model.n_kv_heads))))
		return rc;
	if (c->training.seq_len > c->model.max_seq_len)
		return titan_err(TITAN_EUSAGE, "training.seq_len: %d exceeds model.max_seq_len %d",
				 c->training.seq_len, c->model.max_seq_len);
	return 0;
}

/* Whether obj's "model" section sets every key a flavor must set, so the
 * flavor need not be found (a checkpoint's saved config). */
static bool has_every_model_key(const json_t *obj)
{
	const json_t *model = json_object_get(obj, "model");

	if (!json_is_object(model))
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (!keys[i].def && !json_object_get(model, keys[i].name))
			return false;
	return true;
}

static int build(train_config *c, json_t *file_json, const char *file, int noverrides,
		 char **overrides)
{
	const char *flavor;
	int rc;

	memset(c, 0, sizeof *c);
	if (!(c->json = json_object()))
		return titan_err_nomem();
	if ((rc = set_defaults(c->json)))
		goto fail;
	if ((rc = pick_flavor(&flavor, file_json, file, noverrides, overrides)))
		goto fail;
	if (strlen(flavor) >= sizeof c->flavor) {
		rc = titan_err(TITAN_EUSAGE, "model.flavor: name longer than %zu bytes",
			       sizeof c->flavor - 1);
		goto fail;
	}
	snprintf(c->flavor, sizeof c->flavor, "%s", flavor);
	bool flavor_named = false;
	for (int i = 0; i < noverrides; i++)
		flavor_named |= !strncmp(overrides[i], "model.flavor=", 13);
	if ((flavor_named || !file_json || !has_every_model_key(file_json)) &&
	    (rc = load_flavor(c->json, c->flavor)))
		goto fail;
	if (file_json && (rc = apply_file(c->json, file_json, file)))
		goto fail;
	for (int i = 0; i < noverrides; i++)
		if ((rc = apply_override(c->json, overrides[i])))
			goto fail;
	/* the flavor stays named as loaded, whatever spelled it */
	if ((rc = put(c->json, &keys[0], json_string(c->flavor))))
		goto fail;
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (keys[i].size)
			store(c, &keys[i], get(c->json, &keys[i]));
	if ((rc = check(c)))
		goto fail;
	return 0;
fail:
	config_free(c);
	return rc;
}

int config_load(train_config *c, const char *file, int noverrides, char **overrides)
{
	json_t *file_json = NULL;
	int rc;

	if (file && (rc = json_load_path(&file_json, file))) {
		memset(c, 0, sizeof *c);
		return rc;
	}
	rc = build(c, file_json, file, noverrides, overrides);
	json_decref(file_json);
	return rc;
}

int config_from_json(train_config *c, const json_t *merged, const char *where)
{
	json_t *copy = json_deep_copy(merged);
	int rc;

	if (!copy) {
		memset(c, 0, sizeof *c);
		return titan_err(TITAN_EFORMAT, "'%s': no configuration", where);
	}
	rc = build(c, copy, where, 0, NULL);
	json_decref(copy);
	return rc;
}

void config_free(train_config *c)
{
	json_decref(c->json);
	memset(c, 0, sizeof *c);
}

/* The shortest "%.Ng" that reads back as the same double, so 8e-4 prints
 * as 0.0008 and still round-trips; always with a '.' or exponent so it
 * reads back as a real. */
static void format_real(char *out, size_t n, double x)
{
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(out, n, "%.*g", prec, x);
		if (strtod(out, NULL) == x)
			break;
	}
	if (!strpbrk(out, ".eEni"))
		snprintf(out + strlen(out), n - strlen(out), ".0");
}

static int print_value(FILE *fp, json_t *v, int indent)
{
	char buf[64];

	if (json_is_real(v)) {
		format_real(buf, sizeof buf, json_real_value(v));
		return fputs(buf, fp) < 0 ? -1 : 0;
	}
	if (!json_is_object(v) || !json_object_size(v))
		return json_dumpf(v, fp, JSON_ENCODE_ANY | JSON_COMPACT);

	size_t n = json_object_size(v), i = 0;
	const char **names = malloc(n * sizeof *names);
	const char *name;
	json_t *member;
	int rc = 0;

	if (!names)
		return -1;
	json_object_foreach(v, name, member)
		names[i++] = name;
	qsort(names, n, sizeof *names, cmp_str);
	fputs("{\n", fp);
	for (i = 0; i < n && !rc; i++) {
		json_t *key = json_string(names[i]);
		fprintf(fp, "%*s", indent + 2, "");
		rc = key ? json_dumpf(key, fp, JSON_ENCODE_ANY) : -1;
		json_decref(key);
		fputs(": ", fp);
		if (!rc)
			rc = print_value(fp, json_object_get(v, names[i]), indent + 2);
		fputs(i + 1 < n ? ",\n" : "\n", fp);
	}
	fprintf(fp, "%*s}", indent, "");
	free(names);
	return rc;
}

int config_print(const train_config *c, FILE *fp)
{
	if (print_value(fp, c->json, 0) || fputc('\n', fp) == EOF || ferror(fp))
		return titan_err_errno(TITAN_EIO, "cannot write the config");
	return 0;
}

void config_print_keys(FILE *fp)
{
	char name[128], type[96], def[64];
	int wname = 0, wtype = 0, wdef = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
			const struct config_key *k = &keys[i];
			snprintf(name, sizeof name, "%s.%s", k->section, k->name);
			if (k->type == K_ENUM) {
				size_t len = 0;
				for (int j = 0; k->choices[j] && len < sizeof type; j++)
					len += (size_t)snprintf(type + len, sizeof type - len,
								"%s%s", j ? "|" : "",
								k->choices[j]);
			} else {
				snprintf(type, sizeof type, "%s", type_names[k->type]);
			}
			if (!k->def)
				snprintf(def, sizeof def, "(flavor)");
			else if (k->type == K_STR)
				snprintf(def, sizeof def, "\"%s\"", k->def);
			else
				snprintf(def, sizeof def, "%s", k->def);
			if (pass == 0) {
				wname = TITAN_MAX(wname, (int)strlen(name));
				wtype = TITAN_MAX(wtype, (int)strlen(type));
				wdef = TITAN_MAX(wdef, (int)strlen(def));
			} else {
				fprintf(fp, "%-*s  %-*s  %-*s  %s\n", wname, name, wtype, type,
					wdef, def, k->help);
			}
		}
	}
}

int config_layout(const train_config *c, int world_size, par_layout *p)
{
	int rest;

	p->pp = c->parallelism.pipeline_parallel_degree;
	p->dp_replicate = c->parallelism.data_parallel_replicate_degree;
	p->cp = c->parallelism.context_parallel_degree;
	p->tp = c->parallelism.tensor_parallel_degree;
	p->dp_shard = c->parallelism.data_parallel_shard_degree;
	rest = p->pp * p->dp_replicate * p->cp * p->tp;
	if (p->dp_shard != -1)
		;
	else if (world_size <= 0)
		p->dp_shard = 1;
	else if (world_size % rest)
		return titan_err(TITAN_EUSAGE, "world size %d is not a multiple of pp=%d x "
				 "dp_replicate=%d x cp=%d x tp=%d = %d (what "
				 "data_parallel_shard_degree=-1 divides)", world_size,
				 p->pp, p->dp_replicate, p->cp, p->tp, rest);
	else
		p->dp_shard = world_size / rest;
	return config_pp_stages(c, &p->pp_stages);
}

int config_pp_stages(const train_config *c, int *stages)
{
	int pp = c->parallelism.pipeline_parallel_degree, L = c->model.n_layers;
	int per = c->parallelism.pipeline_parallel_layers_per_stage;
	/* torchtitan's default: two stages a rank for a schedule that runs
	 * several (Interleaved1F1B, the enum's third), else one */
	int v = c->parallelism.pipeline_parallel_schedule == 2 ? 2 : 1;

	*stages = 1;
	if (pp == 1)
		return 0;
	if (per > 0) {
		if (L % per || (L / per) % pp)
			return titan_err(TITAN_EUSAGE, "parallelism.pipeline_parallel_layers_per_stage "
					 "%d: model.n_layers=%d is not cut into a multiple of pp=%d "
					 "stages of that depth", per, L, pp);
		v = L / per / pp;
	} else if (L % (pp * v)) {
		return titan_err(TITAN_EUSAGE, "pp=%d%s does not divide model.n_layers=%d", pp,
				 v > 1 ? " x 2 stages a rank" : "", L);
	}
	*stages = v;
	return 0;
}

bool config_reshard_after_forward(const train_config *c)
{
	switch (c->parallelism.fsdp_reshard_after_forward) {
	case RESHARD_ALWAYS:
		return true;
	case RESHARD_NEVER:
		return false;
	default:
		return c->parallelism.pipeline_parallel_degree == 1;
	}
}
