/* llama_internal.h - what llama.c and llama_step.c share and nobody else
 * needs. */
#ifndef TITAN_MODEL_LLAMA_INTERNAL_H
#define TITAN_MODEL_LLAMA_INTERNAL_H
#include "model/llama.h"

/* Release the plan's activations (llama_step.c); NULL acts is fine. */
void llama_acts_free(llama_model *m);

#endif
