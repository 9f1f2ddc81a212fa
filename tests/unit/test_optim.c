/* test_optim.c - the LR schedule against torchtitan's numbers, gradient
 * clipping, and which parameters AdamW decays. */
#include "core/base.h"
#include <math.h>
#include "check.h"
#include "train/optim.h"

static lr_schedule sched(long steps, long warmup, double ratio, lr_decay_type t, double min)
{
	return (lr_schedule){ .steps = steps, .warmup_steps = warmup, .decay_ratio = ratio,
			      .decay_type = t, .min_lr_factor = min };
}

#define NEAR(a, b) (fabs((a) - (b)) < 1e-12)

/* Values worked out from torchtitan's linear_warmup_stable_decay, with its
 * virtual last step (stable = steps + 1 - warmup - decay) and LambdaLR
 * counting from 0. */
static void test_lr_schedule(void)
{
	lr_schedule s = sched(10, 2, -1, LR_DECAY_LINEAR, 0);
	const double linear[10] = { 0.5, 1, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125 };
	for (int i = 0; i < 10; i++)
		CHECK(NEAR(lr_factor(&s, i + 1), linear[i]), "step %d: %g, want %g", i + 1,
		      lr_factor(&s, i + 1), linear[i]);

	/* decay over half the steps: stable until step 6 */
	s = sched(10, 2, 0.5, LR_DECAY_LINEAR, 0);
	CHECK(NEAR(lr_factor(&s, 6), 1.0), "%g", lr_factor(&s, 6));
	CHECK(NEAR(lr_factor(&s, 7), 0.8), "%g", lr_factor(&s, 7));
	CHECK(NEAR(lr_factor(&s, 10), 0.2), "%g", lr_factor(&s, 10));

	s = sched(10, 2, 0.5, LR_DECAY_COSINE, 0.1);
	/* step 8: progress 2/5 */
	double want = 0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 0.4));
	CHECK(NEAR(lr_factor(&s, 8), want), "%g want %g", lr_factor(&s, 8), want);
	s = sched(10, 2, 0.5, LR_DECAY_SQRT, 0);
	CHECK(NEAR(lr_factor(&s, 10), 1 - sqrt(0.8)), "%g", lr_factor(&s, 10));

	/* no warmup; warmup longer than the run is cut to the run */
	s = sched(4, 0, -1, LR_DECAY_LINEAR, 0);
	CHECK(NEAR(lr_factor(&s, 1), 1.0), "%g", lr_factor(&s, 1));
	CHECK(NEAR(lr_factor(&s, 2), 0.75), "%g", lr_factor(&s, 2));
	s = sched(4, 10, -1, LR_DECAY_LINEAR, 0);
	CHECK(NEAR(lr_factor(&s, 2), 0.5), "%g", lr_factor(&s, 2));
	CHECK(NEAR(lr_factor(&s, 4), 1.0), "%g", lr_factor(&s, 4));
	/* the last step never reaches zero */
	s = sched(100, 10, -1, LR_DECAY_LINEAR, 0);
	CHECK(lr_factor(&s, 100) > 0, "%g", lr_factor(&s, 100));
}

static llama_model *tiny_model(mem_tracker *mem)
{
	llama_config c = {
		.dim = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .vocab_size = 11,
		.multiple_of = 8, .norm_eps = 1e-5, .rope_theta = 10000, .max_seq_len = 16,
		.rope_scaling_factor = 8, .rope_low_freq_factor = 1, .rope_high_freq_factor = 4,
		.rope_original_max_pos = 8192, .depth_init = true,
	};
	llama_model *m = NULL;
	if (llama_config_check(&c) || llama_new(&m, &c, &kernels_cpu, mem))
		return NULL;
	llama_init_weights(m, 1);
	return m;
}

/* clip_grad_norm_'s coefficient, and a step that scales the gradients as
 * it reads them: the step PyTorch takes after scaling them in place, bit
 * for bit, the gradients themselves left as they were. */
static void test_grad_clip(void)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = tiny_model(&mem), *twin = tiny_model(&mem);
	adamw_config ac = { .lr = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
			    .weight_decay = 0.1 };
	adamw *o, *o2;
	REQUIRE(m && twin, "%s", titan_errmsg());
	for (int c = 0; c < m->nchunks; c++)
		for (size_t i = 0; i < m->chunk_numel[c]; i++)
			m->grads[c][i] = (float)((i % 7) - 3) * 0.5f;
	double norm = grad_norm(m);
	float coef = grad_clip_coef(norm, 2.0);
	CHECK(norm > 2.0, "norm %g", norm);
	CHECK(coef == 2.0f / ((float)norm + 1e-6f), "coefficient %g", coef);
	CHECK(grad_clip_coef(norm, norm * 2) == 1.0f, "below max_norm: 1");
	CHECK(grad_clip_coef(norm, 0) == 1.0f, "max_norm 0: off");

	REQUIRE(adamw_new(&o, m, &ac, &mem) == 0 && adamw_new(&o2, twin, &ac, &mem) == 0, "%s",
		titan_errmsg());
	for (int c = 0; c < m->nchunks; c++)
		for (size_t i = 0; i < m->chunk_numel[c]; i++)
			twin->grads[c][i] = m->grads[c][i] * coef;   /* PyTorch's in place */
	adamw_step(o, m, 0.1, coef);
	adamw_step(o2, twin, 0.1, 1.0f);
	for (int c = 0; c < m->nchunks; c++) {
		size_t bytes = m->chunk_numel[c] * sizeof(float);
		CHECK(!memcmp(m->params[c], twin->params[c], bytes), "chunk %d: params differ", c);
		CHECK(!memcmp(o->m[c], o2->m[c], bytes) && !memcmp(o->v[c], o2->v[c], bytes),
		      "chunk %d: moments differ", c);
	}
	CHECK(grad_norm(m) == norm, "the step left the gradients scaled");
	adamw_free(o);
	adamw_free(o2);
	llama_free(m);
	llama_free(twin);
	CHECK(mem.cur == 0, "%zu bytes left", mem.cur);
}

/* With zero gradients AdamW only decays: matrices shrink by 1 - lr*wd and,
 * when they are exempt, embeddings and norms stay. */
static void test_adamw_decay_groups(void)
{
	for (int exempt = 0; exempt < 2; exempt++) {
		mem_tracker mem = { .device = "cpu" };
		llama_model *m = tiny_model(&mem);
		adamw_config ac = { .lr = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
				    .weight_decay = 0.5, .decay_embeddings_and_norms = !exempt };
		adamw *o;
		llama_tensor_info *ti;
		int nt;
		REQUIRE(m, "%s", titan_errmsg());
		REQUIRE(adamw_new(&o, m, &ac, &mem) == 0, "%s", titan_errmsg());
		REQUIRE(llama_tensors(&m->cfg, &ti, &nt) == 0, "%s", titan_errmsg());
		float *before = malloc(nt * sizeof *before);
		for (int i = 0; i < nt; i++)
			before[i] = m->params[ti[i].chunk][ti[i].offset];
		llama_zero_grads(m);
		adamw_step(o, m, 0.1, 1.0f);
		CHECK(o->step == 1, "step %ld", o->step);
		for (int i = 0; i < nt; i++) {
			float now = m->params[ti[i].chunk][ti[i].offset];
			bool decays = !exempt || !(ti[i].is_norm || ti[i].is_embedding);
			float want = decays ? before[i] * (float)(1 - 0.1 * 0.5) : before[i];
			CHECK(now == want, "%s (exempt %d): %g, want %g", ti[i].name, exempt, now, want);
		}
		free(before);
		free(ti);
		adamw_free(o);
		llama_free(m);
		CHECK(mem.cur == 0, "%zu bytes left", mem.cur);
	}
}

int main(void)
{
	RUN(test_lr_schedule);
	RUN(test_grad_clip);
	RUN(test_adamw_decay_groups);
	return check_done();
}
