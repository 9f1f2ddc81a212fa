/* tp.h - the model's tensor-parallel hooks (llama.h) over a communicator,
 * for a model that needs no other hooks (inference: titan-gen --tp). */
#ifndef TITAN_DIST_TP_H
#define TITAN_DIST_TP_H
#include "dist/comm.h"
#include "model/llama.h"

/* h's tp_sum, tp_max, tp_all_gather and tp_reduce_scatter work over c
 * (borrowed; it must outlive every use); acquire and release are NULL. */
void tp_hooks_init(llama_hooks *h, comm *c);

#endif
