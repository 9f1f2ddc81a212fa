/* llama_decode.h - inference for the Llama 3 model: a KV cache for a batch
 * of sequences, prefill and one-token-at-a-time decode over it.
 *
 * A decoder holds, for each of B sequence slots, the keys and values of
 * every token fed so far: [layers][B][max_len][n_kv_heads * head_dim] for k
 * and for v, counted in the model's mem_tracker.  One call feeds any mix of
 * tokens: a prefill is many tokens of a few sequences, a decode step one
 * token of each.  Token i goes to sequence slot seq[i] at that sequence's
 * next position, so a batch of prompts of different lengths is one call,
 * and each sequence sees exactly what a causal forward of it alone would.
 *
 * The decoder runs on the CPU backend (the cache and the attention over it
 * are CPU code).  It reads the model's parameters and writes nothing in
 * them.  A tensor-parallel model (llama_new_tp, with its tp hooks) decodes
 * its share of the heads, FFN hidden units and vocabulary: the outputs of
 * wo and w2 and the embeddings are summed over the tp ranks, and the
 * logits gathered, so every tp rank gets every logit.  The tp ranks must
 * make the same calls. */
#ifndef TITAN_MODEL_LLAMA_DECODE_H
#define TITAN_MODEL_LLAMA_DECODE_H
#include "core/base.h"
#include "model/llama.h"

typedef struct llama_decoder llama_decoder;

/* Cache for B sequences of up to max_len tokens each (max_len <=
 * model.max_seq_len) and scratch for calls of up to max_tokens tokens.  The
 * model must outlive the decoder.  A model on another backend than
 * kernels_cpu is TITAN_EUSAGE. */
int llama_decoder_new(llama_decoder **out, const llama_model *m, int B, int max_len,
		      int max_tokens);
void llama_decoder_free(llama_decoder *d);

/* Bytes of the KV cache and scratch (all counted in the model's tracker). */
size_t llama_decoder_bytes(const llama_decoder *d);
int llama_decoder_max_len(const llama_decoder *d);
int llama_decoder_max_tokens(const llama_decoder *d);
/* Tokens sequence seq holds. */
int llama_decoder_len(const llama_decoder *d, int seq);
/* Forget sequence seq (-1: every sequence); its slot starts again at 0. */
void llama_decoder_reset(llama_decoder *d, int seq);

/* Feed N <= max_tokens tokens: ids[i] goes to slot seq[i], at the position
 * after everything that sequence holds (tokens of one sequence in order).
 * logits (may be NULL) receives [rows, V]: one row per token i with want[i]
 * set, in token order, or every token's row when want is NULL.  A slot
 * outside 0..B-1, an id past the vocabulary or a sequence that would pass
 * max_len is TITAN_ERANGE naming it, and nothing is fed. */
int llama_decoder_forward(llama_decoder *d, const uint32_t *ids, const int *seq, int N,
			  const bool *want, float *logits);

/* Prefill nseq prompts, prompt j (n[j] >= 1 tokens, ids[j]) into slot
 * slots[j], in calls of at most max_tokens tokens; last_logits (may be NULL)
 * receives [nseq, V], the logits after each prompt's last token. */
int llama_decoder_prefill(llama_decoder *d, int nseq, const int *slots,
			  const uint32_t *const *ids, const int *n, float *last_logits);

#endif
