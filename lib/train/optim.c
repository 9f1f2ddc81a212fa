/* optim.c - AdamW, gradient clipping and the LR schedule (optim.h). */
#include "core/base.h"
#include <math.h>
#include "train/optim.h"

int adamw_new(adamw **out, const llama_model *m, const adamw_config *cfg, mem_tracker *mem)
{
	llama_tensor_info *ti = NULL;
	int nt = 0, rc;
	adamw *o = calloc(1, sizeof *o);

	*out = NULL;
	if (!o)
		return titan_err_nomem();
	o->cfg = *cfg;
	o->mem = mem;
	o->nchunks = m->nchunks;
	o->numel = calloc(m->nchunks, sizeof *o->numel);
	o->m = calloc(m->nchunks, sizeof *o->m);
	o->v = calloc(m->nchunks, sizeof *o->v);
	if (!o->numel || !o->m || !o->v) {
		rc = titan_err_nomem();
		goto fail;
	}
	for (int c = 0; c < m->nchunks; c++) {
		size_t bytes = m->chunk_numel[c] * sizeof(float);
		o->numel[c] = m->chunk_numel[c];
		o->m[c] = mem_alloc(mem, bytes, "AdamW first moments");
		o->v[c] = mem_alloc(mem, bytes, "AdamW second moments");
		if (!o->m[c] || !o->v[c]) {
			rc = TITAN_ENOMEM;
			goto fail;
		}
	}
	/* Neighbouring tensors of a chunk with the same decay make one run,
	 * so a layer is typically two kernel calls (matrices, then norms). */
	if ((rc = llama_tensors(&m->cfg, &ti, &nt)))
		goto fail;
	o->runs = calloc(nt, sizeof *o->runs);
	if (!o->runs) {
		rc = titan_err_nomem();
		goto fail;
	}
	for (int i = 0; i < nt; i++) {
		bool decay = cfg->decay_embeddings_and_norms ||
			     !(ti[i].is_norm || ti[i].is_embedding);
		struct adamw_run *last = o->nruns ? &o->runs[o->nruns - 1] : NULL;
		if (last && last->chunk == ti[i].chunk && last->decay == decay &&
		    last->offset + last->numel == ti[i].offset) {
			last->numel += ti[i].numel;
			continue;
		}
		o->runs[o->nruns++] = (struct adamw_run){ ti[i].chunk, ti[i].offset,
							  ti[i].numel, decay };
	}
	free(ti);
	*out = o;
	return 0;
fail:
	free(ti);
	adamw_free(o);
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
	free(o);
}

void adamw_step(adamw *o, llama_model *m, double lr)
{
	const adamw_config *c = &o->cfg;

	o->step++;
	for (int i = 0; i < o->nruns; i++) {
		const struct adamw_run *r = &o->runs[i];
		m->ops->adamw(m->params[r->chunk] + r->offset, m->grads[r->chunk] + r->offset,
			      o->m[r->chunk] + r->offset, o->v[r->chunk] + r->offset, r->numel,
			      lr, c->beta1, c->beta2, c->eps,
			      r->decay ? c->weight_decay : 0.0, o->step);
	}
}

double grad_norm(const llama_model *m)
{
	double sum = 0;
	for (int c = 0; c < m->nchunks; c++)
		sum += m->ops->sumsq(m->grads[c], m->chunk_numel[c]);
	return sqrt(sum);
}

void grad_clip(llama_model *m, double norm, double max_norm)
{
	/* PyTorch computes the coefficient in fp32 from the fp32 norm and only
	 * ever shrinks: a coefficient clamped to 1 changes nothing. */
	float coef = (float)max_norm / ((float)norm + 1e-6f);

	if (max_norm <= 0 || coef >= 1.0f)
		return;
	for (int c = 0; c < m->nchunks; c++)
		m->ops->scale(m->grads[c], coef, m->chunk_numel[c]);
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
