/* shard.h - parallel layouts: which slice of every model tensor each rank
 * holds.  One rule serves the checkpoint writer (titan-ckpt reshard), the
 * loader and the parallel trainer, so a checkpoint's files are exactly what
 * the ranks of that layout hold.
 *
 * The mesh is pp x dp_replicate x dp_shard x cp x tp (torchtitan's order);
 * rank = (((pp_i * dp_replicate + dr_i) * dp_shard + ds_i) * cp + cp_i) * tp
 * + tp_i.  Per tensor:
 *   - pp: the layers are cut into pp x pp_stages stages of L / (pp x
 *     pp_stages) layers and pp rank s holds stages s, s + pp, ... (one
 *     stage [s L/pp, (s+1) L/pp) unless interleaved); pp rank 0 also holds
 *     tok_embeddings, the last one norm and output.
 *   - tp: column-parallel wq, wk, wv, w1, w3 and output are split along dim
 *     0, row-parallel wo and w2 along dim 1, tok_embeddings along dim 0
 *     (vocab); norms are whole on every tp rank.  Every split is even.
 *   - FSDP over dp_shard * cp (torchtitan shards parameters over both):
 *     the tp-local piece is cut along dim 0 as torch.chunk does: pieces of
 *     ceil(rows / n), the last ones shorter or empty.
 *   - dp_replicate: replicas hold the same slices; only replica 0 writes a
 *     checkpoint file.  Likewise a norm, whole on every tp rank, is written
 *     by tp rank 0 only (par_ckpt_slice), so the files tile every tensor
 *     exactly once.
 * AdamW moments follow their parameter. */
#ifndef TITAN_MODEL_SHARD_H
#define TITAN_MODEL_SHARD_H
#include "core/base.h"
#include "model/llama.h"

typedef struct par_layout {
	int pp, dp_replicate, dp_shard, cp, tp;
	int pp_stages;           /* pipeline stages a pp rank runs (0 or 1: one) */
} par_layout;

/* All degrees 1. */
par_layout par_layout_single(void);
/* "dp_shard=4,tp=2,pp=1" (keys pp, dp_replicate, dp_shard, cp, tp and
 * pp_stages; any order; missing keys are 1).  Bad syntax, an unknown key or a degree < 1
 * is TITAN_EUSAGE naming it. */
int par_layout_parse(const char *s, par_layout *l);
/* "pp=1,dp_replicate=1,dp_shard=4,cp=1,tp=2" into buf (",pp_stages=N"
 * after it when more than 1). */
void par_layout_format(const par_layout *l, char *buf, size_t n);
int par_layout_world(const par_layout *l);
/* Constraints of the layout for a model: n_heads, n_kv_heads, ffn_hidden
 * and vocab_size divisible by tp; n_layers divisible by pp; world ==
 * nranks when nranks > 0.  The first that fails is TITAN_EUSAGE naming it:
 * "tp=3 does not divide model.n_heads=16". */
int par_layout_check(const par_layout *l, const llama_config *c, int nranks);

/* Context parallel cuts every sequence into 2 cp chunks: seq_len must be a
 * multiple of 2 cp (TITAN_EUSAGE saying so otherwise; cp 1 takes any). */
int par_check_seq_len(int seq_len, int cp);

typedef struct par_coord {
	int pp, dp_replicate, dp_shard, cp, tp;
} par_coord;
par_coord par_layout_coord(const par_layout *l, int rank);

/* The slice of tensor t (llama_tensors order, global shape) that rank holds
 * in layout l: false when it holds none of it (another pp stage, or an
 * empty FSDP piece).  The slice is start[0..ndim), shape[0..ndim). */
bool par_slice(const llama_config *c, const par_layout *l, int rank,
	       const llama_tensor_info *t, int64_t *start, int64_t *shape);
/* Whether rank writes checkpoint files (replica 0 of dp_replicate). */
bool par_rank_writes(const par_layout *l, int rank);
/* The slice rank writes into a checkpoint of layout l: par_slice's, but
 * false where another rank writes the same one (a replica other than 0;
 * a tp rank other than 0 for a tensor whole on every tp rank). */
bool par_ckpt_slice(const llama_config *c, const par_layout *l, int rank,
		    const llama_tensor_info *t, int64_t *start, int64_t *shape);

#endif
