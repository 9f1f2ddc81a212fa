/* optim.c - AdamW, gradient clipping and the LR schedule (optim.h). */
#include "core/base.h"
#include <math.h>
#include "train/optim.h"

bool adamw_decays(const adamw_config *cfg, const llama_tensor_info *t)
{
	return cfg->decay_embeddings_and_norms || !(t->is_norm || t->is_embedding);
}

int adamw_new_flat(adamw **out, int nchunks, const size_t *numel,
		   const struct adamw_run *runs, int nruns, const adamw_config *cfg,
		   mem_tracker *mem)
{
	adamw *o = calloc(1, sizeof *o);
	int rc;

	*out = NULL;
	if (!o)
		return titan_err_nomem();
	o->cfg = *cfg;
	o->mem = mem;
	o->nchunks = nchunks;
	o->numel = calloc(nchunks, sizeof *o->numel);
	o->m = calloc(nchunks, sizeof *o->m);
	o->v = calloc(nchunks, sizeof *o->v);
	o->runs = calloc(nruns ? nruns : 1, sizeof *o->runs);
	o->table = calloc(nruns ? nruns : 1, sizeof *o->table);
	if (!o->numel || !o->m || !o->v || !o->runs || !o->table) {
		rc = titan_err_nomem();
		goto fail;
	}
	for (int c = 0; c < nchunks; c++) {
		size_t bytes = numel[c] * sizeof(float);
		o->numel[c] = numel[c];
		o->m[c] = mem_alloc(mem, bytes, "AdamW first moments");
		o->v[c] = mem_alloc(mem, bytes, "AdamW second moments");
		if (!o->m[c] || !o->v[c]) {
			rc = TITAN_ENOMEM;
			goto fail;
		}
	}
	/* Neighbouring ranges of a chunk with the same decay make one run,
	 * so a layer is typically two kernel calls (matrices, then norms). */
	for (int i = 0; i < nruns; i++) {
		struct adamw_run *last = o->nruns ? &o->runs[o->nruns - 1] : NULL;
		if (!runs[i].numel)
			continue;
		if (last && last->chunk == runs[i].chunk && last->decay == runs[i].decay &&
		    last->offset + last->numel == runs[i].offset) {
			last->numel += runs[i].numel;
			continue;
		}
		o->runs[o->nruns++] = runs[i];
	}
	*out = o;
	return 0;
fail:
	adamw_free(o);
	return rc;
}

int adamw_new(adamw **out, const llama_model *m, const adamw_config *cfg, mem_tracker *mem)
{
	llama_tensor_info *ti;
	struct adamw_run *runs;
	int nt, rc;

	*out = NULL;
	if ((rc = llama_tensors(&m->cfg, &ti, &nt)))
		return rc;
	runs = calloc(nt, sizeof *runs);
	if (!runs) {
		free(ti);
		return titan_err_nomem();
	}
	for (int i = 0; i < nt; i++)
		runs[i] = (struct adamw_run){ ti[i].chunk, ti[i].offset, ti[i].numel,
					      adamw_decays(cfg, &ti[i]) };
	rc = adamw_new_flat(out, m->nchunks, m->chunk_numel, runs, nt, cfg, mem);
	free(runs);
	free(ti);
	return rc;
}

void adamw_free(adamw *o)
{
	if (!o)
		return;
	for (int c = 0; c < o->nchunks; c++) {
		if (o->m)
			mem_free(o->mem, o->m[c], o->numel[c] * sizeof(float));
		if (o->v)
			mem_free(o->mem, o->v[c], o->numel[c] * sizeof(float));
	}
	free(o->m);
	free(o->v);
	free(o->numel);
	free(o->runs);
	free(o->table);
	free(o);
}

void adamw_step_flat(adamw *o, const kernel_ops *ops, float **params, float **grads,
		     kernel_bf16 **params_bf16, double lr, float grad_scale)
{
	const adamw_config *c = &o->cfg;

	o->step++;
	for (int i = 0; i < o->nruns; i++) {
		const struct adamw_run *r = &o->runs[i];
		kernel_bf16 *p16 = params_bf16 ? params_bf16[r->chunk] : NULL;

		o->table[i] = (kernel_adamw_tensor){
			.param = params[r->chunk] + r->offset,
			.grad = grads[r->chunk] + r->offset,
			.m = o->m[r->chunk] + r->offset, .v = o->v[r->chunk] + r->offset,
			.n = r->numel, .weight_decay = r->decay ? c->weight_decay : 0.0,
			.param_bf16 = p16 ? p16 + r->offset : NULL,
		};
	}
	ops->adamw(o->table, o->nruns, lr, c->beta1, c->beta2, c->eps, o->step, grad_scale);
}

void adamw_step(adamw *o, llama_model *m, double lr, float grad_scale)
{
	adamw_step_flat(o, m->ops, m->params, m->grads, NULL, lr, grad_scale);
}

double grad_sumsq_flat(const kernel_ops *ops, float *const *g, const size_t *numel, int n)
{
	double sum = 0;
	for (int c = 0; c < n; c++)
		sum += ops->sumsq(g[c], numel[c]);
	return sum;
}

float grad_clip_coef(double norm, double max_norm)
{
	/* PyTorch computes the coefficient in fp32 from the fp32 norm and
	 * clamps it to 1, and a product with 1 is the gradient itself */
	float coef = (float)max_norm / ((float)norm + 1e-6f);

	return max_norm <= 0 || !(coef < 1.0f) ? 1.0f : coef;
}

double grad_norm(const llama_model *m)
{
	return sqrt(grad_sumsq_flat(m->ops, m->grads, m->chunk_numel, m->nchunks));
}

double lr_factor(const lr_schedule *s, long step)
{
	long warmup = TITAN_MIN(s->warmup_steps, s->steps), decay, stable;
	long cur = step - 1;   /* torchtitan's LambdaLR counts from 0 */
	double progress, adj;

	if (s->decay_ratio >= 0) {
		decay = lround(s->steps * s->decay_ratio);
		if (warmup + decay > s->steps)
			decay = s->steps - warmup;
	} else {
		decay = s->steps - warmup;
	}
	/* One virtual step past the end keeps the last LR above zero. */
	stable = s->steps + 1 - warmup - decay;
	if (cur < warmup)
		return (double)(cur + 1) / warmup;
	if (cur < warmup + stable)
		return 1.0;
	progress = (double)(cur + 1 - (warmup + stable)) / (decay ? decay : 1);
	switch (s->decay_type) {
	case LR_DECAY_SQRT:
		adj = 1.0 - sqrt(progress);
		break;
	case LR_DECAY_COSINE:
		adj = 0.5 * (1.0 + cos(M_PI * progress));
		break;
	default:
		adj = 1.0 - progress;
		break;
	}
	return s->min_lr_factor + (1.0 - s->min_lr_factor) * adj;
}
