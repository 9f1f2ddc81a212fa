/* llama_internal.h - what the model's own files share and nobody else
 * needs. */
#ifndef TITAN_MODEL_LLAMA_INTERNAL_H
#define TITAN_MODEL_LLAMA_INTERNAL_H
#include "model/llama.h"

/* Release the plan's activations (llama_step.c); NULL acts is fine. */
void llama_acts_free(llama_model *m);

/* torchtitan's precompute_freqs_cis in fp32 as torch computes it, with
 * Llama 3.1's apply_scaling: cos and sin of pos * freq for pos < T, [T][D/2]
 * (llama_step.c; decoding rotates by the very same angles as training). */
void llama_rope_tables(const llama_config *c, int T, float *cos_tab, float *sin_tab);

#endif
