/* config.h - the trainer's configuration: built-in defaults, a model flavor,
 * a JSON file, then --section.key=value overrides, in that order.
 *
 * One schema table (config.c) lists every key with its type, default,
 * allowed values and help; it drives parsing, validation, --print-config and
 * the man page's key list.  Errors name the key and where it came from, and
 * an unknown key suggests the closest valid one:
 *   titan-train: --training.stpes: unknown key; did you mean 'training.steps'?
 *   titan-train: 'run.json': $.optimizer.lr: expected a number, got "fast"
 *
 * Flavors are JSON files in share/titan/flavors/NAME.json (found next to the
 * executable: BIN/../share/titan/flavors or BIN/../../share/titan/flavors,
 * or in $TITAN_SHARE/flavors); model.flavor may also be a path to a .json
 * file.  Keys under "model" in the file or on the command line override the
 * flavor's values. */
#ifndef TITAN_CONFIG_CONFIG_H
#define TITAN_CONFIG_CONFIG_H
#include <jansson.h>
#include "core/base.h"
#include "model/llama.h"

struct par_layout;

typedef enum { MASK_CAUSAL, MASK_BLOCK_CAUSAL } mask_kind;
typedef enum { MATMUL_F32, MATMUL_BF16 } matmul_dtype;
typedef enum { DECAY_LINEAR, DECAY_SQRT, DECAY_COSINE } decay_kind;
/* torchtitan's fsdp_reshard_after_forward: default frees gathered layers
 * after forward unless pipeline parallel, where each micro-batch's backward
 * would gather them again. */
typedef enum { RESHARD_DEFAULT, RESHARD_ALWAYS, RESHARD_NEVER } reshard_kind;

typedef struct train_config {
	json_t *json;            /* the merged config, every key present */
	char flavor[256];
	llama_config model;      /* flavor + overrides, checked */
	struct {
		const char *dataset; /* titan-pack directory ("" when unset) */
		mask_kind mask;
	} data;
	struct {
		long steps;
		int local_batch_size, global_batch_size; /* global -1: = local * dp */
		int seq_len;
		uint64_t seed;
		const char *device;  /* "cpu" | "cuda" | "cpu-fenced" */
		int matmul_dtype;    /* MATMUL_F32 | MATMUL_BF16 */
		double max_norm;     /* <= 0: no clipping */
		int threads;         /* 0: OMP_NUM_THREADS or all cores of the CPU set */
	} training;
	struct {
		const char *name;    /* "AdamW" */
		double lr, weight_decay, beta1, beta2, eps;
		bool decay_embeddings_and_norms; /* torchtitan: true */
	} optimizer;
	struct {
		long warmup_steps;
		double decay_ratio;  /* < 0: decay over every step after warmup */
		decay_kind decay_type;
		double min_lr_factor;
	} lr_scheduler;
	struct {
		bool enable;
		const char *folder;
		long interval;
		int keep_latest_k;
		const char *load;    /* "" none, "latest", or a step directory */
		bool async;
	} checkpoint;
	struct {
		long log_freq;
		const char *jsonl, *tensorboard;  /* "" when off */
		double peak_flops;   /* FLOP/s per device; 0: measure (CPU sgemm) */
	} metrics;
	struct {
		llama_ac_mode mode;
		int selective_every;
	} activation_checkpoint;
	struct {
		long freq;           /* 0: off */
		long steps;          /* batches per validation; -1: the whole split */
	} validation;
	struct {
		int data_parallel_replicate_degree, data_parallel_shard_degree;
		int tensor_parallel_degree, pipeline_parallel_degree;
		int context_parallel_degree;
		reshard_kind fsdp_reshard_after_forward;
		bool sequence_parallel;  /* with tp > 1 */
		int pipeline_parallel_microbatch_size;
		int pipeline_parallel_schedule;  /* pp_schedule_kind */
		int pipeline_parallel_layers_per_stage;  /* 0: derived */
	} parallelism;
	struct {
		int init_timeout_seconds;   /* start-up: the launcher's ranks meet */
		int train_timeout_seconds;  /* any one collective while training */
	} comm;
} train_config;

/* Build the config: defaults, the flavor (model.flavor from the file or the
 * overrides, else the default), the file (NULL: none), then overrides
 * (strings "section.key=value" without the leading dashes, applied in
 * order).  Errors are TITAN_EUSAGE with the message described above. */
int config_load(train_config *c, const char *file, int noverrides, char **overrides);
/* The same from a merged config held in memory (a checkpoint's
 * extra.config), named where in messages.  When its model section sets
 * every model key, the flavor is not looked up: a checkpoint's config
 * stands on its own. */
int config_from_json(train_config *c, const json_t *merged, const char *where);
void config_free(train_config *c);
/* The parallel layout of c on world_size ranks, data_parallel_shard_degree
 * -1 resolved to the ranks left over (world_size <= 0: taken as 1), and the
 * pipeline stages a rank runs (config_pp_stages).  A world the degrees do
 * not fit is TITAN_EUSAGE naming every degree. */
int config_layout(const train_config *c, int world_size, struct par_layout *out);
/* Pipeline stages a rank runs (1 without pp): n_layers / (pp x
 * pipeline_parallel_layers_per_stage), or by default 1, 2 under
 * Interleaved1F1B; TITAN_EUSAGE when the layers do not cut evenly. */
int config_pp_stages(const train_config *c, int *stages);
/* Whether FSDP frees gathered layers after forward (the resolved
 * fsdp_reshard_after_forward). */
bool config_reshard_after_forward(const train_config *c);
/* The merged config as indented JSON with sorted keys. */
int config_print(const train_config *c, FILE *fp);
/* Each key with type, default and help, one a line (for --help-config). */
void config_print_keys(FILE *fp);
/* The flavor names found, sorted; *names allocated (free each and the array). */
int config_list_flavors(char ***names, int *n);

#endif
