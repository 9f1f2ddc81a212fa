/* hf.h - titan checkpoints to and from Hugging Face's Llama layout, and the
 * consolidated single-file export.
 *
 * Names: tok_embeddings -> model.embed_tokens, layers.L.attention.wq/wk/wv/wo
 * -> model.layers.L.self_attn.q_proj/k_proj/v_proj/o_proj,
 * feed_forward.w1/w3/w2 -> mlp.gate_proj/up_proj/down_proj, attention_norm
 * -> input_layernorm, ffn_norm -> post_attention_layernorm, norm ->
 * model.norm, output -> lm_head (absent with tied embeddings), all with
 * ".weight".
 *
 * Rotary layout: titan (like Meta's and torchtitan's Llama) rotates
 * interleaved pairs (x[2i], x[2i+1]) of each head; transformers'
 * LlamaForCausalLM rotates halves (x[i], x[i + D/2]).  Export permutes the
 * rows of wq (per query head) and wk (per key/value head) so that row
 * h*D + 2i goes to h*D + i and row h*D + 2i+1 to h*D + D/2 + i; import
 * inverts it.  Both are exact (a reordering), so round trips are
 * bit-identical in fp32. */
#ifndef TITAN_CKPT_HF_H
#define TITAN_CKPT_HF_H
#include "core/base.h"
#include "ckpt/ckpt.h"
#include "ckpt/safetensors.h"
#include "model/llama.h"

/* Hugging Face name of titan parameter name into out (n bytes); false when
 * the name is not a model parameter (optimizer state). */
bool hf_name_from_titan(const char *titan, char *out, size_t n);
/* The titan name of a Hugging Face Llama name; false when unknown. */
bool hf_name_to_titan(const char *hf, char *out, size_t n);

/* Rows of a [heads * head_dim, cols] q or k projection, interleaved pairs to
 * halves (to_hf) or back.  src and dst must not overlap. */
void hf_rotary_permute(const float *src, float *dst, int heads, int head_dim,
		       int64_t cols, bool to_hf);

typedef struct hf_export_opts {
	st_dtype dtype;              /* ST_F32, ST_BF16 or ST_F16 */
	uint64_t max_shard_bytes;    /* split above this (0: 5 GB, as
				      * transformers' save_pretrained) */
	const char *tokenizer;       /* tokenizer.json to copy; NULL: the
				      * checkpoint's own, if it carries one */
	bool force;                  /* replace an existing OUTDIR */
	ckpt_progress_fn progress;
	void *progress_arg;
} hf_export_opts;

/* Write OUTDIR (built as OUTDIR.tmp, renamed at the end): model.safetensors
 * or model-0000K-of-0000N.safetensors + model.safetensors.index.json,
 * config.json (LlamaForCausalLM), generation_config.json, and with a
 * tokenizer tokenizer.json + tokenizer_config.json.  Model weights only;
 * one tensor in memory at a time. */
int hf_export(ckpt_reader *r, const char *outdir, const hf_export_opts *o);

typedef struct hf_import_opts {
	bool force;                  /* replace an existing OUTDIR */
	ckpt_progress_fn progress;
	void *progress_arg;
} hf_import_opts;

/* A Hugging Face Llama directory (config.json, model.safetensors or an
 * index-sharded set; F32, BF16 or F16) becomes the titan step directory
 * OUTDIR at step 0: the model weights (no optimizer state), extra.config
 * holding the model config (model.ffn_hidden from intermediate_size), and
 * model.json (a flavor file for titan-train's --model.flavor) and
 * tokenizer.json when HF_DIR has one.  Another architecture, attention or
 * MLP biases, a head_dim other than hidden_size / num_attention_heads, a
 * missing or misshapen tensor: TITAN_EFORMAT naming the file and key. */
int hf_import(const char *hf_dir, const char *outdir, const hf_import_opts *o);

/* One safetensors file of every model parameter under titan's names (no
 * optimizer state), in dtype, written atomically; metadata carries the
 * step and the model config. */
int ckpt_export_consolidated(ckpt_reader *r, const char *path, st_dtype dtype,
			     bool force, ckpt_progress_fn progress, void *arg);

#endif
