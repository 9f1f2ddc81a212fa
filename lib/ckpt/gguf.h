/* gguf.h - export a titan checkpoint to GGUF (version 3), the file llama.cpp
 * loads, with the "llama" architecture.
 *
 * Tensors take llama.cpp's names (token_embd, blk.N.attn_norm, attn_q,
 * attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down,
 * output_norm, output; rope_freqs with Llama 3.1 scaling) and GGUF's
 * dimension order (innermost first, so a PyTorch [out, in] weight is stored
 * with ne = {in, out}, the same bytes).  q and k stay in titan's interleaved
 * rotary layout, which llama.cpp's llama architecture expects.
 *
 * Metadata: general.architecture = "llama", general.name, general.alignment
 * (32), general.file_type, llama.* (context length, embedding length, block
 * count, feed-forward length, head counts, rope dimension count and freq
 * base, layer norm rms epsilon, vocab size), and the tokenizer from a
 * Hugging Face tokenizer.json: tokenizer.ggml.model = "gpt2", .pre (the
 * pre-tokenizer: "llama-bpe", "gpt-2", "gpt-4o", else "default"), .tokens,
 * .token_type, .merges, .bos_token_id, .eos_token_id, .add_bos_token and
 * .clean_spaces (false: decoding gives the exact bytes).  Ids the tokenizer
 * leaves unused up to the model's vocabulary become "[PAD<id>]" tokens of
 * type unused, so the token list is as long as llama.vocab_size. */
#ifndef TITAN_CKPT_GGUF_H
#define TITAN_CKPT_GGUF_H
#include "core/base.h"
#include "ckpt/ckpt.h"
#include "ckpt/safetensors.h"

typedef struct gguf_export_opts {
	st_dtype dtype;              /* ST_F32, ST_F16 or ST_BF16 for the 2-D
				      * weights; norms and rope_freqs stay F32 */
	const char *tokenizer;       /* tokenizer.json or a directory holding
				      * one; NULL: the checkpoint's */
	const char *name;            /* general.name; NULL: "titan" */
	bool force;                  /* replace an existing file */
	ckpt_progress_fn progress;
	void *progress_arg;
} gguf_export_opts;

/* Write out_path atomically, one tensor in memory at a time (o NULL: F32,
 * the checkpoint's tokenizer, name "titan").  No tokenizer
 * (none given and the checkpoint carries none), or one that is not a
 * byte-level BPE tokenizer.json, is TITAN_EUSAGE saying so. */
int gguf_export(ckpt_reader *r, const char *out_path, const gguf_export_opts *o);

#endif
