/* dp.h - data parallelism: FSDP, DDP and HSDP as one mechanism.
 *
 * The ranks form dp_replicate groups of dp_shard ranks (dp_shard x cp under
 * context parallel: torchtitan shards parameters over both).  Each chunk of the
 * model (llama.h: the embeddings, one per layer, the head) is held as one
 * flat shard per rank of its shard group: every tensor of the chunk is cut
 * along dim 0 as torch.chunk cuts it (pieces of p = ceil(rows / dp_shard)
 * rows; rank i holds rows [i p, min((i + 1) p, rows))), each piece padded
 * to p rows, pieces in chunk order.  That is lib/model/shard.h's rule, so a
 * rank's pieces are exactly its slices in a checkpoint of the same layout.
 *
 * Through the model's hooks (llama.h), a chunk is all-gathered into a whole
 * buffer before a pass reads it and its gradient is reduce-scattered into
 * the shard after its backward; the next layer's all-gather is started
 * while the current one computes.  Layers are freed after forward when
 * reshard_after_forward is set (their gather is repeated in backward),
 * else kept to their backward.  Then, on the last micro-batch of a step,
 * the shard gradients are all-reduced across the replicate group.  With
 * bf16 GEMMs (m->matmul_bf16, set before dp_new) the model reads its GEMM
 * weights from bf16 copies of the buffers it computes with, which the
 * acquire casts when they have changed since the last cast.  With
 * dp_shard = 1 nothing is gathered (the shard is the chunk; DDP when
 * dp_replicate > 1, one rank when both are 1); gradients are all-reduced
 * layer by layer as backward produces them.
 *
 * Reductions are sums: the trainer scales each micro-batch's loss by
 * 1 / (micro-batches x data-parallel ranks), so the gradients are the
 * global batch's mean.  The optimizer then updates each rank's shards. */
#ifndef TITAN_DIST_DP_H
#define TITAN_DIST_DP_H
#include "core/base.h"
#include "core/mem.h"
#include "dist/comm.h"
#include "model/llama.h"

typedef struct dp_opts {
	comm *shard;        /* parameters are sharded over it (NULL: one rank) */
	comm *replicate;    /* gradients are all-reduced over it (NULL: none) */
	comm *tp;           /* the model's tensor-parallel group (NULL: none) */
	comm *pp;           /* the pipeline's ranks, in order (NULL: none); the
	                       model's pp_* fields say which chunks this rank
	                       holds */
	comm *cp;           /* the model's context-parallel ring (NULL: none) */
	bool reshard_after_forward;
} dp_opts;

/* A tensor's piece in a rank's shard of its chunk. */
typedef struct dp_piece {
	int tensor;             /* llama_tensors index */
	int chunk;
	size_t offset;          /* floats into the chunk's shard */
	int64_t row0, rows;     /* the rows held (rows may be 0) */
	int64_t cols;           /* 1 for a norm */
	size_t padded;          /* floats the piece takes: ceil(rows / n) * cols */
	bool tp_whole;          /* whole on every tp rank (a norm), not cut by tp */
} dp_piece;

typedef struct dp dp;

/* Make the shards and buffers for model m (made by llama_new_views) and
 * install the hooks in m.  The parameters are zero until dp_init_weights
 * or a checkpoint load fills the shards. */
int dp_new(dp **out, llama_model *m, const dp_opts *o, mem_tracker *mem);
/* Removes the hooks; m's params/grads pointers are NULL afterwards. */
void dp_free(dp *d);

/* llama_init_weights's values, each rank keeping its pieces. */
int dp_init_weights(dp *d, uint64_t seed);

/* This rank's shards: nchunks flat buffers of numel[c] floats. */
int dp_nchunks(const dp *d);
const size_t *dp_shard_numel(const dp *d);
float **dp_params(dp *d);
float **dp_grads(dp *d);
/* Every tensor's piece, in llama_tensors order. */
const dp_piece *dp_pieces(const dp *d, int *n);

/* With bf16 GEMMs and no sharding (the shard is the buffer the model
 * reads): per chunk the bf16 copy of the shard (NULL for a chunk without
 * GEMM weights), for the optimizer to write as it updates the shard
 * (adamw_step_flat's params_bf16).  NULL otherwise. */
kernel_bf16 **dp_shard_bf16(dp *d);
/* The shards' values changed (the optimizer's step, a checkpoint load):
 * what was gathered or cast to bf16 from them is stale, except the copies
 * of dp_shard_bf16 when bf16_written says they were written with the
 * shards.  dp_init_weights says so itself. */
void dp_params_changed(dp *d, bool bf16_written);

/* Start a step: zero the shard gradients; accum micro-batches follow. */
void dp_begin_step(dp *d, int accum);
/* After each llama_backward (each micro-batch's, on each local stage). */
int dp_end_backward(dp *d);
/* Wait for the pipeline sends in flight from activation set `set` (the
 * model's set when each was sent), before a later micro-batch reuses it;
 * set -1: every send (the end of a step). */
int dp_pp_flush(dp *d, int set);
/* After the last micro-batch's backward: wait for every reduction.  The
 * shard gradients then hold the sum over every data-parallel rank. */
int dp_finish_grads(dp *d);
/* Seconds spent in communication since the last call (then reset). */
double dp_comm_seconds(dp *d);

#endif
