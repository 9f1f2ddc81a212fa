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
	kernel_adamw_tensor *table;  /* [nruns] what each step hands the kernel */
	mem_tracker *mem;
} adamw;

/* AdamW for every parameter of m, in m's chunk layout. */
/* Whether tensor t takes weight decay under cfg. */
bool adamw_decays(const adamw_config *cfg, const llama_tensor_info *t);
int adamw_new(adamw **out, const llama_model *m, const adamw_config *cfg, mem_tracker *mem);
/* AdamW for nchunks flat buffers of numel[c] floats (a rank's shards):
 * runs[0..nruns) say which ranges take weight decay (neighbours with the
 * same decay are merged; ranges not covered are not updated). */
int adamw_new_flat(adamw **out, int nchunks, const size_t *numel,
		   const struct adamw_run *runs, int nruns, const adamw_config *cfg,
		   mem_tracker *mem);
void adamw_free(adamw *o);
/* One update of every parameter of m with the gradients in m->grads times
 * grad_scale (grad_clip_coef's, or 1), at learning rate lr (step counts
 * from 1 as PyTorch's does): one multi-tensor call of the backend's adamw.
 * The gradients are left unscaled. */
void adamw_step(adamw *o, llama_model *m, double lr, float grad_scale);
/* The same over the flat buffers adamw_new_flat describes; params_bf16,
 * when not NULL, holds per chunk a bf16 copy in the same layout (or NULL)
 * that the step writes the updated parameters into, rounded. */
void adamw_step_flat(adamw *o, const kernel_ops *ops, float **params, float **grads,
		     kernel_bf16 **params_bf16, double lr, float grad_scale);

/* Global L2 norm of every gradient (accumulated in double, deterministic). */
double grad_norm(const llama_model *m);
/* torch.nn.utils.clip_grad_norm_'s coefficient for gradients of global
 * norm `norm`: max_norm / (norm + 1e-6) in fp32 when that is below 1,
 * else 1 (and 1 when max_norm <= 0: no clipping).  PyTorch multiplies the
 * gradients by it in place; titan's step multiplies them as it reads them
 * (adamw_step's grad_scale), the same products. */
float grad_clip_coef(double norm, double max_norm);
/* Sum of squares of n flat buffers (double): what grad_norm is made of,
 * for gradients sharded across ranks. */
double grad_sumsq_flat(const kernel_ops *ops, float *const *g, const size_t *numel, int n);

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
