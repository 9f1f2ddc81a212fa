/* llama.h - the Llama 3 model: configuration, parameter layout, forward and
 * backward, written once over a backend's op table (kernels/kernels.h).
 *
 * Parameters live in chunks, one flat buffer each, the unit FSDP will gather
 * and shard: chunk 0 holds tok_embeddings; chunk 1 + l holds layer l
 * (attention.wq, .wk, .wv, .wo, feed_forward.w1, .w2, .w3, attention_norm,
 * ffn_norm, in that order); the last chunk holds norm and output (only norm
 * when the embeddings are tied, output then reads tok_embeddings).  Gradients
 * use the same layout, so the optimizer is one loop per chunk.  Tensor names
 * are torchtitan's state-dict names ("layers.3.attention.wq.weight").
 *
 * The model holds no global state and never communicates: a parallel layer
 * may point params[c] at a gathered buffer before a block runs. */
#ifndef TITAN_MODEL_LLAMA_H
#define TITAN_MODEL_LLAMA_H
#include "core/base.h"
#include "core/mem.h"
#include "kernels.h"

typedef struct llama_config {
	int dim, n_layers, n_heads, n_kv_heads, vocab_size;
	int multiple_of;            /* FFN hidden rounded up to a multiple */
	double ffn_dim_multiplier;  /* 0: none */
	int ffn_hidden;             /* 0: derived by llama_config_check */
	double norm_eps;
	double rope_theta;
	/* Llama 3.1 frequency scaling (torchtitan's apply_scaling) */
	bool rope_scaling;
	double rope_scaling_factor, rope_low_freq_factor, rope_high_freq_factor;
	int rope_original_max_pos;
	int max_seq_len;            /* longest sequence the model accepts */
	bool tie_embeddings;        /* output projection reads tok_embeddings */
	bool depth_init;            /* torchtitan: init std shrinks with depth */
} llama_config;

/* Validate (positive dims, heads divide dim, kv heads divide heads, even head
 * dim, ...) and, when ffn_hidden is 0, derive ffn_hidden = multiple_of-rounded
 * ffn_dim_multiplier * int(2 * 4 * dim / 3).  A bad value is TITAN_EUSAGE
 * naming its key as "model.n_kv_heads". */
int llama_config_check(llama_config *c);
/* Total parameters (tied embeddings counted once). */
uint64_t llama_param_count(const llama_config *c);
/* Training FLOPs per token as torchtitan counts them:
 * 6 * (params - embedding params) + 12 * layers * heads * head_dim * seq_len. */
double llama_flops_per_token(const llama_config *c, int seq_len);

/* Parameter layout. */
int llama_nchunks(const llama_config *c);               /* n_layers + 2 */
/* Whether a GEMM reads chunk's weights: every layer, the head unless the
 * embeddings are tied (its norm alone is no GEMM's), the embeddings only
 * when tied (the output reads them; the lookup is no GEMM). */
bool llama_chunk_has_gemm_weights(const llama_config *c, int chunk);
size_t llama_chunk_numel(const llama_config *c, int chunk);

typedef struct llama_tensor_info {
	char name[64];        /* torchtitan state-dict name */
	int chunk;
	size_t offset, numel; /* floats, within the chunk */
	int ndim;
	int64_t shape[2];     /* PyTorch's shape: Linear weights are [out, in] */
	bool is_norm, is_embedding;
	int tp_dim;           /* the dimension tensor parallelism cuts; -1: none */
} llama_tensor_info;

/* Every tensor in chunk order; *out is allocated, the caller frees it. */
int llama_tensors(const llama_config *c, llama_tensor_info **out, int *n);
/* The same for one rank of tensor parallel degree tp (lib/model/shard.h's
 * cut): shapes are the rank's pieces, offsets within its chunks. */
int llama_tensors_tp(const llama_config *c, int tp, llama_tensor_info **out, int *n);
size_t llama_chunk_numel_tp(const llama_config *c, int tp, int chunk);

/* Named views into one layer's chunk. */
typedef struct llama_block_weights {
	float *wq, *wk, *wv, *wo;     /* [H*D, C], [KV*D, C], [KV*D, C], [C, H*D] */
	float *w1, *w2, *w3;          /* [F, C], [C, F], [F, C] */
	float *attention_norm, *ffn_norm;  /* [C] */
} llama_block_weights;
void llama_block_view(const llama_config *c, float *chunk, llama_block_weights *w);
void llama_block_view_tp(const llama_config *c, int tp, float *chunk, llama_block_weights *w);

typedef enum {
	LLAMA_AC_NONE,       /* keep every activation backward needs */
	LLAMA_AC_FULL,       /* keep only each block's input; recompute */
	LLAMA_AC_SELECTIVE,  /* recompute every k-th block only */
} llama_ac_mode;

typedef struct llama_acts llama_acts;  /* activations and scratch (llama.c) */
typedef struct llama_model llama_model;

/* Which pass asks for a chunk: a forward whose backward follows, one
 * without (evaluation, dloss 0), or the backward. */
typedef enum { LLAMA_PASS_EVAL, LLAMA_PASS_FORWARD, LLAMA_PASS_BACKWARD } llama_pass;

/* Where data parallelism plugs in (lib/dist/dp.c): acquire(chunk) runs
 * before the model reads params[chunk] (and, in backward, adds into
 * grads[chunk]); it may point them at other buffers (params_bf16[chunk]
 * too, with matmul_bf16).  release(chunk) runs
 * when the pass is done with the chunk; in backward, grads[chunk] then holds
 * this micro-batch's whole contribution.  In order: forward acquires and
 * releases chunk 0, each layer, then the last chunk; backward the last
 * chunk, the layers from the top, then chunk 0.  With tied embeddings the
 * output reads chunk 0, so chunk 0 is acquired a second time at the output
 * (forward and backward) and released once per pass, after its last use.
 * A hook's error stops the pass with that status. */
typedef struct llama_hooks {
	void *arg;
	int (*acquire)(void *arg, llama_model *m, int chunk, llama_pass pass);
	int (*release)(void *arg, llama_model *m, int chunk, llama_pass pass);
	/* tensor parallel (m->tp > 1): buf becomes the sum (the maximum) of
	 * every tp rank's buf, in place */
	int (*tp_sum)(void *arg, float *buf, size_t n);
	int (*tp_max)(void *arg, float *buf, size_t n);
	/* sequence parallel: recv (tp x n) gets every tp rank's send (n) in
	 * rank order; recv (n) gets this rank's block of the sum of every tp
	 * rank's send (tp x n) */
	int (*tp_all_gather)(void *arg, const float *send, float *recv, size_t n);
	int (*tp_reduce_scatter)(void *arg, const float *send, float *recv, size_t n);
	/* pipeline parallel: a stage's input activations come from the
	 * previous stage and its output goes to the next (grad false); in
	 * backward the gradient of its output comes from the next stage and
	 * that of its input goes to the previous one (grad true); the stage
	 * after the last local stage of rank pp_ranks - 1 is the next local
	 * stage of rank 0.  tag tells the messages of a step apart (the
	 * micro-batch and the stage boundary).  A send may return before the
	 * data has left; buf stays untouched until the caller's flush. */
	int (*pp_send)(void *arg, const float *buf, size_t n, bool grad, int tag);
	int (*pp_recv)(void *arg, float *buf, size_t n, bool grad, int tag);
	/* context parallel (m->cp > 1), one step of the ring: send (n
	 * floats) goes to the next cp rank, recv (n, not overlapping send)
	 * comes from the previous one */
	int (*cp_shift)(void *arg, const float *send, float *recv, size_t n);
} llama_hooks;

struct llama_model {
	llama_config cfg;
	const kernel_ops *ops;
	mem_tracker *mem;        /* every buffer below is counted here */
	int nchunks;
	size_t *chunk_numel;     /* [nchunks] */
	float **params;          /* [nchunks] flat parameters per chunk */
	float **grads;           /* [nchunks] same layout, accumulated */
	llama_acts *acts;        /* NULL until llama_plan */
	int B, T;                /* batch shape of the plan */
	llama_ac_mode ac;
	int ac_every;
	size_t act_bytes;        /* bytes of activations + scratch in the plan */
	bool with_grads;         /* backward allowed */
	int tp, tp_rank;         /* tensor parallel degree and this rank (1, 0: none) */
	/* Sequence parallel (tp > 1; set before llama_plan): the residual
	 * stream and the norms hold 1/tp of the rows (tokens), all-gathered
	 * before the column-parallel matmuls, reduce-scattered after the
	 * row-parallel ones; the norm weights' gradients are then partial
	 * sums over the tp ranks, which the caller adds up. */
	bool sp;
	/* Context parallel (set before llama_plan): the rows' tokens are cut
	 * into 2 cp chunks and cp rank r holds chunks r and 2 cp - 1 - r (the
	 * causal mask's work is then even over the ranks).  Every token-wise
	 * op runs on the rank's T / cp tokens of each row; attention is ring
	 * attention: the key/value blocks go round the cp ranks (hooks'
	 * cp_shift) and each rank merges its queries' partial results with
	 * the online softmax, forward and backward.  The gradients are then
	 * this rank's tokens' share, summed over the cp ranks by the caller. */
	int cp, cp_rank;
	/* Pipeline parallel (set before llama_plan): the layers are cut into
	 * pp_ranks x pp_stages stages of equal depth; this rank holds stages
	 * pp_rank + j pp_ranks for j < pp_stages (its local stages j, more
	 * than one when interleaved) and a pass runs local stage pp_stage.
	 * Stage 0 embeds, the last stage has the final norm, the output and
	 * the loss.  Defaults 0, 1, 1, 0: every layer. */
	int pp_rank, pp_ranks, pp_stages, pp_stage;
	/* Activation sets (llama_plan_sets), one per micro-batch in flight
	 * (each holds every local stage's activations); acts is sets[set].
	 * pp_tag names the micro-batch in the pipeline's messages (the
	 * caller's). */
	llama_acts **sets;
	int nsets, set, pp_tag;
	bool views;              /* params/grads are someone else's buffers */
	/* The GEMMs take bf16 operands with fp32 sums (kernels.h's *_bf16
	 * ops; training.matmul_dtype=bfloat16); everything else stays fp32.
	 * They read the weights from params_bf16[c], a bf16 copy of params[c]
	 * in the same layout (only the GEMMs' tensors need be cast), which
	 * whoever points params[c] also points (the hooks' acquire): the
	 * copy is cast when the parameters change, not at every GEMM.  A
	 * chunk with GEMM weights and no copy stops the pass (TITAN_EUSAGE).
	 * The GEMMs' inputs are cast once where they are made and kept for
	 * backward, those only GEMMs read in bf16 alone, so the flag is set
	 * before llama_plan, which lays the activations out by it. */
	bool matmul_bf16;
	kernel_bf16 **params_bf16;  /* [nchunks] */
	const llama_hooks *hooks;  /* NULL: params and grads are always there */
};

/* Allocate parameters and gradients (zero) for c (already checked). */
int llama_new(llama_model **out, const llama_config *c, const kernel_ops *ops,
	      mem_tracker *mem);
/* A model whose params[] and grads[] are NULL pointers for someone else
 * to point at buffers they own (the data-parallel layer, through hooks);
 * llama_free leaves them alone.  With tp > 1 it is rank tp_rank's part of
 * a tensor-parallel model: its chunks hold llama_tensors_tp's pieces, and
 * the hooks' tp_sum / tp_max combine partial results across the tp ranks. */
int llama_new_views(llama_model **out, const llama_config *c, const kernel_ops *ops,
		    mem_tracker *mem, int tp, int tp_rank);
/* Rank tp_rank's part of a tensor-parallel model (tp 1: the whole model),
 * with its own buffers (llama_tensors_tp's pieces; the caller fills them);
 * with_grads false leaves grads[] NULL (inference: llama_forward without
 * dloss and decoding only). */
int llama_new_tp(llama_model **out, const llama_config *c, const kernel_ops *ops,
		 mem_tracker *mem, bool with_grads, int tp, int tp_rank);
void llama_free(llama_model *m);

/* torchtitan's init_weights from a seed: embeddings N(0, 1); wq, wk, wv, w1
 * truncated N(0, 0.02); wo, w2, w3 truncated N(0, s), s = 0.02 /
 * sqrt(2 * (layer + 1)) with depth_init, else 0.02 / sqrt(2 * n_layers);
 * norms 1; output truncated N(0, dim^-0.5) cut at 3 std (with tied
 * embeddings the shared weight gets the output's init, as in torchtitan,
 * whose output init runs last).  The same seed gives the same weights on
 * every machine and thread count.  Computed on the host (and uploaded when
 * the backend's memory is not the host's). */
int llama_init_weights(llama_model *m, uint64_t seed);
/* The same weights for one chunk of tp rank tp_rank into dst
 * (llama_chunk_numel_tp floats), so a rank holding a shard can initialise
 * chunk by chunk. */
int llama_init_chunk(const llama_config *c, uint64_t seed, int chunk, int tp, int tp_rank,
		     float *dst);
/* The same into dst in ops's memory (through a host buffer unless that is
 * host memory). */
int llama_init_chunk_to(const kernel_ops *ops, const llama_config *c, uint64_t seed,
			int chunk, int tp, int tp_rank, float *dst);

/* Allocate activations for batches of B rows of T tokens (T <= max_seq_len)
 * and decide what backward keeps.  selective_every: with
 * LLAMA_AC_SELECTIVE, layers l with l % every == every - 1 are recomputed.
 * Replaces an earlier plan. */
int llama_plan(llama_model *m, int B, int T, llama_ac_mode ac, int selective_every);
/* The same with n activation sets of that shape (pipeline micro-batches
 * in flight), set 0 in use; only the stage's layers get activations. */
int llama_plan_sets(llama_model *m, int B, int T, llama_ac_mode ac, int selective_every,
		    int n);
/* Use activation set i (0..nsets-1) for the next forward and backward. */
void llama_use_set(llama_model *m, int i);
/* Pipeline parallel: layers [*l0, *l1) of local stage j; whether this
 * rank holds layer l, the embeddings (stage 0), the head (the last). */
void llama_stage_layers(const llama_model *m, int j, int *l0, int *l1);
bool llama_holds_layer(const llama_model *m, int l);
bool llama_holds_embeddings(const llama_model *m);
bool llama_holds_head(const llama_model *m);

/* Forward one batch: inputs and labels are [B*T] token ids; seg_start is
 * NULL for the causal mask or [B*T] for the document mask (see kernels.h;
 * RoPE positions then restart at each document: pos = t - seg_start).
 * With labels, *loss is the mean cross-entropy over the B*T tokens
 * (without, loss may be NULL and is left alone).  An id or label past the
 * vocabulary or a seg_start outside 0..t is TITAN_ERANGE naming it.
 * dloss != 0 prepares backward: the gradient of dloss * (mean loss) flows
 * into the grads at llama_backward (1/accumulation steps when accumulating);
 * dloss == 0 (or labels NULL) leaves the logits readable with llama_logits.
 * Under context parallel the arguments are still whole rows (every cp rank
 * passes the same ones); the loss is the mean over this rank's tokens and
 * the logits are those of its tokens. */
int llama_forward(llama_model *m, const uint32_t *inputs, const uint32_t *labels,
		  const int32_t *seg_start, float dloss, float *loss);
/* Backward of the last forward (which had labels and dloss != 0):
 * grads += gradients. */
int llama_backward(llama_model *m);
/* [B*T, V] logits of the last forward with dloss == 0. */
const float *llama_logits(const llama_model *m);
void llama_zero_grads(llama_model *m);

#endif
