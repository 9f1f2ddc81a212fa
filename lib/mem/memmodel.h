/* memmodel.h - the analytical memory model: the bytes each rank of a
 * training run holds, from the config alone, without building the model.
 *
 * For the CPU backend on one rank the model is exact: it sizes the buffers
 * llama_new, llama_plan and adamw_new allocate through the mem_tracker by
 * the same rules (every activation buffer rounded up to 64 bytes), so the
 * trainer can print "predicted X, measured Y" and the two agree.  The rows
 * for parallel layouts and for bf16 mixed precision follow the design
 * (lib/model/shard.h for which slice of a tensor a rank holds; FSDP gathers
 * one block at a time and prefetches the next) and are marked "model only":
 * no trainer measures them yet.
 *
 * The breakdown is per pipeline stage; the stage with the largest total is
 * the one that decides whether a config fits. */
#ifndef TITAN_MEM_MEMMODEL_H
#define TITAN_MEM_MEMMODEL_H
#include "core/base.h"
#include "config/config.h"
#include "model/llama.h"
#include "model/shard.h"

typedef enum {
	MEM_PREC_FP32,   /* everything fp32: the CPU backend */
	MEM_PREC_BF16,   /* bf16 compute, fp32 master weights, moments, gradients */
} mem_precision;

typedef enum {
	MEM_PP_GPIPE,        /* every microbatch's forward, then every backward */
	MEM_PP_1F1B,         /* stage s keeps pp - s microbatches in flight */
	MEM_PP_INTERLEAVED,  /* 1F1B over pp_virtual stages per rank */
} mem_pp_schedule;

typedef struct mem_model_opts {
	llama_config model;          /* checked (llama_config_check) */
	int batch, seq_len;          /* training.local_batch_size, training.seq_len */
	llama_ac_mode ac;
	int ac_every;                /* selective: every k-th block is recomputed */
	par_layout par;              /* every degree resolved (>= 1) */
	mem_precision prec;
	bool cuda;                   /* a GPU: host-side rows do not count */
	bool sequence_parallel;      /* with tp > 1 */
	bool reshard_after_forward;  /* FSDP frees a gathered block after forward */
	mem_pp_schedule pp_schedule;
	int pp_microbatches;         /* 0: one sequence per microbatch */
	int pp_virtual;              /* interleaved: stages per rank (>= 1) */
	bool async_checkpoint;       /* checkpoint.async: a staging copy */
	int threads;                 /* CPU threads (attention workspace each) */
	bool matmul_bf16;            /* training.matmul_dtype=bfloat16: GEMMs on
	                                bf16 copies of their operands, kept (the
	                                inputs only GEMMs read in bf16 alone) */
} mem_model_opts;

/* The rows of the table, in the order titan-mem prints them. */
enum mem_row_id {
	MEM_ROW_PARAMS,        /* parameters in the compute dtype */
	MEM_ROW_MASTER,        /* fp32 master weights (mixed precision) */
	MEM_ROW_BF16_WEIGHTS,  /* bf16 GEMMs: the weights' bf16 copies */
	MEM_ROW_GRADS,         /* gradients (sharded like the parameters) */
	MEM_ROW_OPTIM,         /* AdamW first and second moments */
	MEM_ROW_ACTS,          /* activations backward reads */
	MEM_ROW_LOGITS,        /* logits (overwritten by their gradient), losses */
	MEM_ROW_SCRATCH,       /* backward's gradient buffers */
	MEM_ROW_ATTN,          /* attention workspace (CPU) */
	MEM_ROW_OP_SCRATCH,    /* a GPU op's own scratch, the largest op's */
	MEM_ROW_ALLGATHER,     /* FSDP: gathered blocks, the current and the next */
	MEM_ROW_REDUCE,        /* FSDP: one block's unsharded gradients */
	MEM_ROW_TP,            /* sequence parallel: gathered activations */
	MEM_ROW_CP,            /* ring attention: K/V chunks in flight */
	MEM_ROW_PP,            /* pipeline send/receive buffers */
	MEM_ROW_LOADER,        /* loader batches (host) */
	MEM_ROW_CKPT,          /* async checkpoint staging (host) */
	MEM_NROWS
};

typedef struct mem_row_info {
	const char *key;       /* JSON key: "params", "activations", ... */
	const char *label;     /* table label */
	bool tracked;          /* the CPU trainer's mem_tracker counts it */
	bool host;             /* host memory: not on a GPU's */
} mem_row_info;

extern const mem_row_info mem_row_infos[MEM_NROWS];

typedef struct mem_stage {
	size_t row[MEM_NROWS];
	bool model_only[MEM_NROWS];  /* not measured by any trainer yet */
	size_t total;          /* every row on the device (host rows too on CPU) */
	size_t tracked;        /* what the CPU trainer's tracker would peak at */
	uint64_t params;       /* parameters this rank holds (its shard) */
	int layers;            /* blocks of this stage */
	int in_flight;         /* microbatches whose activations are held */
	int micro_batch;       /* sequences per microbatch */
	size_t act_none;       /* activations + logits + scratch without AC */
	size_t act_other_sp;   /* tp > 1: the same with sequence parallel flipped */
} mem_stage;

typedef struct mem_model_report {
	int nstages;           /* pp */
	mem_stage *stage;      /* [nstages] */
	int worst;             /* the stage with the largest total */
	size_t total;          /* stage[worst].total */
} mem_model_report;

/* Options from a trainer config: batch, sequence, AC, parallel degrees,
 * device, async checkpoints and threads (precision fp32, the trainer's)
 * (the trainer's rule: training.threads, OMP_NUM_THREADS, the CPU set).
 * world_size 0 means the product of the degrees; data_parallel_shard_degree
 * -1 takes the ranks left over (1 when world_size is 0).  An impossible
 * layout (world size, heads or layers not divisible) is TITAN_EUSAGE naming
 * the constraint that failed. */
int mem_model_from_config(mem_model_opts *o, const train_config *c, int world_size);

/* The layout's constraints for the model (TITAN_EUSAGE naming the first
 * that fails); mem_model_from_config calls it. */
int mem_model_check(const mem_model_opts *o, int world_size);

/* Estimate every stage; r->stage is allocated (mem_model_report_free). */
int mem_model_estimate(const mem_model_opts *o, mem_model_report *r);
void mem_model_report_free(mem_model_report *r);

/* The largest local batch (multiple of the microbatch count under pp) whose
 * worst stage fits in device_bytes; 0 when not even the smallest does, -1
 * when every batch up to 2^24 fits (under pp with microbatches of fixed
 * size, a larger batch is more microbatches, not more memory). */
int mem_model_max_batch(const mem_model_opts *o, size_t device_bytes, int *batch);

/* What the CPU trainer's mem_tracker peaks at for config c on world_size
 * ranks (parameters, gradients, AdamW moments, the activation plan and,
 * under FSDP, the gather and reduce buffers), on the largest rank: the
 * figure train_run prints next to the measured peak. */
int mem_model_predict_tracked(const train_config *c, int world_size, size_t *bytes);

/* The bytes llama_plan allocates on one CPU rank for config c's batch
 * shape under AC mode ac (m->act_bytes after the plan): what the trainer
 * reports for "activation_checkpoint.mode=none would hold" without
 * allocating that plan. */
int mem_model_plan_bytes(const train_config *c, llama_ac_mode ac, size_t *bytes);

#endif
