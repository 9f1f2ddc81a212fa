/* optim.h - AdamW over the model's parameter chunks, global gradient-norm
 * clipping, and torchtitan's warmup-stable-decay learning-rate schedule.
 *
 * The moments use the parameters' chunk layout, so the update is one kernel
 * call per run of tensors with the same weight decay. */
#ifndef TITAN_TRAIN_OPTIM_H
#define TITAN_TRAIN_OPTIM_H
#include "core/base.h"
#include "core/mem.h"
#include "model/llama.h"

typedef struct adamw_config {
	double lr;                 /* peak; the schedule scales it */
	double beta1, beta2, eps, weight_decay;
	bool decay_embeddings_and_norms;  /* false: weight decay 0 for them */
} adamw_config;

typedef struct adamw {
	adamw_config cfg;
	long step;                 /* updates done */
	int nchunks;
	size_t *numel;             /* [nchunks] */
	float **m, **v;            /* [nchunks] first and second moments */
	/* runs of tensors sharing a weight decay, per chunk */
	struct adamw_run { int chunk; size_t offset, numel; bool decay; } *runs;
	int nruns;
	mem_tracker *mem;
} adamw;

int adamw_new(adamw **out, const llama_model *m, const adamw_config *cfg, mem_tracker *mem);
void adamw_free(adamw *o);
/* One update of every parameter of m with the gradients in m->grads, at
 * learning rate lr (step counts from 1 as PyTorch's does). */
void adamw_step(adamw *o, llama_model *m, double lr);

/* Global L2 norm of every gradient (accumulated in double, deterministic). */
double grad_norm(const llama_model *m);
/* torch.nn.utils.clip_grad_norm_: when norm > max_norm, scale every
 * gradient by max_norm / (norm + 1e-6).  max_norm <= 0: no clipping. */
void grad_clip(llama_model *m, double norm, double max_norm);

typedef enum { LR_DECAY_LINEAR, LR_DECAY_SQRT, LR_DECAY_COSINE } lr_decay_type;

typedef struct lr_schedule {
	long steps, warmup_steps;
	double decay_ratio;        /* < 0: decay over every step after warmup */
	lr_decay_type decay_type;
	double min_lr_factor;
} lr_schedule;

/* The factor that multiplies the peak lr at step (1-based), torchtitan's
 * linear_warmup_stable_decay. */
double lr_factor(const lr_schedule *s, long step);

#endif
