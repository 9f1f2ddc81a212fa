/* test_golden.c - the C Llama 3 against PyTorch: logits, loss, every
 * gradient, and three clipped AdamW steps, on the golden files that
 * tests/golden/make_golden.py writes (one per case: causal with an untied
 * output, block-causal documents with tied embeddings).
 *
 * The files are found in $TITAN_GOLDEN, else tests/golden under the current
 * directory (tests run from the repository root).  Errors are relative to
 * the largest magnitude of the reference tensor; the worst of each group is
 * printed as a TAP comment. */
#include "core/base.h"

#include <jansson.h>
#include <math.h>
#include <unistd.h>

#include "check.h"
#include "ckpt/safetensors.h"
#include "core/mem.h"
#include "kernels.h"
#include "model/llama.h"
#include "train/optim.h"

#define LOGITS_TOL 1e-5
#define LOSS_TOL 1e-5
#define GRAD_TOL 1e-4
#define STEP_TOL 1e-4

/* One golden case, read from its file. */
struct golden {
	char path[512];
	st_file *st;
	json_t *cfg;
	llama_config model;
	int B, T, steps;
	double max_norm;
	adamw_config adamw;
	uint32_t *inputs, *labels;   /* [B*T] */
	int32_t *seg_start;          /* [B*T] or NULL (causal) */
	llama_tensor_info *tensors;
	int ntensors;
};

/* The worst error of a group of tensors and which tensor it was. */
struct worst {
	double err;
	char name[128];
};

static void worst_note(struct worst *w, double err, const char *name)
{
	if (err > w->err || !w->name[0]) {
		w->err = err;
		snprintf(w->name, sizeof w->name, "%s", name);
	}
}

static const char *golden_dir(void)
{
	const char *d = getenv("TITAN_GOLDEN");
	return d && *d ? d : "tests/golden";
}

/* max |got - want| / max |want| (absolute when want is all zero). */
static double rel_err(const float *got, const float *want, size_t n)
{
	double diff = 0, scale = 0;

	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - want[i]);
		if (d > diff || isnan(d))
			diff = isnan(d) ? INFINITY : d;
		if (fabs(want[i]) > scale)
			scale = fabs(want[i]);
	}
	return scale > 0 ? diff / scale : diff;
}

static double cfg_num(const json_t *cfg, const char *key, int *bad)
{
	json_t *v = json_object_get(cfg, key);
	if (!json_is_number(v) && !json_is_boolean(v)) {
		printf("#   config key '%s' missing or not a number\n", key);
		(*bad)++;
		return 0;
	}
	return json_is_boolean(v) ? json_is_true(v) : json_number_value(v);
}

/* The F32 tensor NAME with numel floats, or NULL (after a failed check). */
static const float *golden_f32(const struct golden *g, const char *name, size_t numel)
{
	const st_tensor *t = st_find(g->st, name);
	size_t n = 1;

	CHECK(t, "'%s': tensor '%s' missing", g->path, name);
	if (!t)
		return NULL;
	for (int i = 0; i < t->ndim; i++)
		n *= (size_t)t->shape[i];
	CHECK(t->dtype == ST_F32 && n == numel, "'%s': '%s': dtype %s, %zu elements, want F32 %zu",
	      g->path, name, st_dtype_name(t->dtype), n, numel);
	if (t->dtype != ST_F32 || n != numel)
		return NULL;
	return st_data(g->st, t);
}

static int golden_ids(struct golden *g, const char *name, int32_t **out)
{
	const st_tensor *t = st_find(g->st, name);
	size_t n = (size_t)g->B * g->T;

	if (!t || t->dtype != ST_I32 || t->ndim != 2 || t->shape[0] != g->B ||
	    t->shape[1] != g->T) {
		printf("#   '%s': '%s' missing or not I32 [%d, %d]\n", g->path, name, g->B, g->T);
		return -1;
	}
	*out = malloc(n * sizeof **out);
	if (!*out)
		return -1;
	memcpy(*out, st_data(g->st, t), n * sizeof **out);
	return 0;
}

static void golden_close(struct golden *g)
{
	free(g->inputs);
	free(g->labels);
	free(g->seg_start);
	free(g->tensors);
	json_decref(g->cfg);
	if (g->st)
		st_close(g->st);
}

/* Open NAME in the golden directory: 1 when absent (the test skips), 0 when
 * loaded, -1 on a failure already reported. */
static int golden_open(struct golden *g, const char *name)
{
	const char *meta, *mask;
	json_error_t jerr;
	int bad = 0, rc;
	int32_t *ids = NULL;

	memset(g, 0, sizeof *g);
	snprintf(g->path, sizeof g->path, "%s/%s", golden_dir(), name);
	if (access(g->path, R_OK) != 0)
		return 1;
	rc = st_open(&g->st, g->path);
	if (rc < 0) {
		printf("#   st_open: %s\n", titan_errmsg());
		return -1;
	}
	meta = st_meta(g->st, "config");
	if (!meta || !(g->cfg = json_loads(meta, 0, &jerr))) {
		printf("#   '%s': no config metadata (%s)\n", g->path, meta ? jerr.text : "absent");
		return -1;
	}

	llama_config *c = &g->model;
	c->dim = cfg_num(g->cfg, "dim", &bad);
	c->n_layers = cfg_num(g->cfg, "n_layers", &bad);
	c->n_heads = cfg_num(g->cfg, "n_heads", &bad);
	c->n_kv_heads = cfg_num(g->cfg, "n_kv_heads", &bad);
	c->vocab_size = cfg_num(g->cfg, "vocab_size", &bad);
	c->multiple_of = cfg_num(g->cfg, "multiple_of", &bad);
	c->ffn_dim_multiplier = cfg_num(g->cfg, "ffn_dim_multiplier", &bad);
	c->norm_eps = cfg_num(g->cfg, "norm_eps", &bad);
	c->rope_theta = cfg_num(g->cfg, "rope_theta", &bad);
	c->rope_scaling = cfg_num(g->cfg, "rope_scaling", &bad);
	c->rope_scaling_factor = cfg_num(g->cfg, "rope_scaling_factor", &bad);
	c->rope_low_freq_factor = cfg_num(g->cfg, "rope_low_freq_factor", &bad);
	c->rope_high_freq_factor = cfg_num(g->cfg, "rope_high_freq_factor", &bad);
	c->rope_original_max_pos = cfg_num(g->cfg, "rope_original_max_pos", &bad);
	c->max_seq_len = cfg_num(g->cfg, "max_seq_len", &bad);
	c->tie_embeddings = cfg_num(g->cfg, "tie_embeddings", &bad);
	c->depth_init = cfg_num(g->cfg, "depth_init", &bad);
	g->B = cfg_num(g->cfg, "B", &bad);
	g->T = cfg_num(g->cfg, "T", &bad);
	g->steps = cfg_num(g->cfg, "steps", &bad);
	g->max_norm = cfg_num(g->cfg, "max_norm", &bad);
	g->adamw.lr = cfg_num(g->cfg, "lr", &bad);
	g->adamw.beta1 = cfg_num(g->cfg, "beta1", &bad);
	g->adamw.beta2 = cfg_num(g->cfg, "beta2", &bad);
	g->adamw.eps = cfg_num(g->cfg, "eps", &bad);
	g->adamw.weight_decay = cfg_num(g->cfg, "weight_decay", &bad);
	g->adamw.decay_embeddings_and_norms = true;
	mask = json_string_value(json_object_get(g->cfg, "mask"));
	if (bad || !mask)
		return -1;

	int want_hidden = cfg_num(g->cfg, "ffn_hidden", &bad);
	if (bad)
		return -1;
	rc = llama_config_check(c);
	if (rc < 0) {
		printf("#   llama_config_check: %s\n", titan_errmsg());
		return -1;
	}
	CHECK(c->ffn_hidden == want_hidden, "ffn_hidden %d, PyTorch %d", c->ffn_hidden, want_hidden);

	if (golden_ids(g, "inputs", &ids) < 0)
		return -1;
	g->inputs = (uint32_t *)ids;
	if (golden_ids(g, "labels", &ids) < 0)
		return -1;
	g->labels = (uint32_t *)ids;
	if (!strcmp(mask, "block_causal") && golden_ids(g, "seg_start", &g->seg_start) < 0)
		return -1;
	if (llama_tensors(c, &g->tensors, &g->ntensors) < 0) {
		printf("#   llama_tensors: %s\n", titan_errmsg());
		return -1;
	}
	return 0;
}

/* Copy the golden weights (tensors named PREFIX + name) into m's chunks. */
static int load_weights(const struct golden *g, llama_model *m, const char *prefix)
{
	char name[128];

	for (int i = 0; i < g->ntensors; i++) {
		const llama_tensor_info *ti = &g->tensors[i];
		const st_tensor *t;

		snprintf(name, sizeof name, "%s%s", prefix, ti->name);
		t = st_find(g->st, name);
		CHECK(t, "'%s': tensor '%s' missing", g->path, name);
		if (!t)
			return -1;
		bool same = t->dtype == ST_F32 && t->ndim == ti->ndim;
		for (int d = 0; same && d < ti->ndim; d++)
			same = t->shape[d] == ti->shape[d];
		CHECK(same, "'%s': '%s' has another dtype or shape than the C layout",
		      g->path, name);
		if (!same)
			return -1;
		memcpy(m->params[ti->chunk] + ti->offset, st_data(g->st, t),
		       ti->numel * sizeof(float));
	}
	return 0;
}

/* Compare every tensor of m's chunks (params or grads) with PREFIX + name. */
static void compare_tensors(const struct golden *g, float *const *chunks,
			    const char *prefix, double tol, struct worst *w)
{
	char name[128];

	for (int i = 0; i < g->ntensors; i++) {
		const llama_tensor_info *ti = &g->tensors[i];
		const float *want;
		double err;

		snprintf(name, sizeof name, "%s%s", prefix, ti->name);
		want = golden_f32(g, name, ti->numel);
		if (!want)
			continue;
		err = rel_err(chunks[ti->chunk] + ti->offset, want, ti->numel);
		worst_note(w, err, name);
		CHECK(err < tol, "'%s': %s: relative error %.3g", g->path, name, err);
	}
}

static size_t grads_floats(const llama_model *m)
{
	size_t n = 0;
	for (int c = 0; c < m->nchunks; c++)
		n += m->chunk_numel[c];
	return n;
}

static void check_case(const char *file)
{
	struct golden g;
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	adamw *opt = NULL;
	float *saved = NULL;
	struct worst logits_w = { 0 }, grads_w = { 0 }, step_w = { 0 };
	double loss_err = 0, losses_err = 0, norms_err = 0;
	float loss = 0;
	size_t N, V;
	int rc;

	rc = golden_open(&g, file);
	if (rc > 0) {
		golden_close(&g);
		SKIP("'%.120s' not found: run from the repository root or set TITAN_GOLDEN "
		     "(tests/golden/make_golden.py writes it)", g.path);
	}
	CHECK(rc == 0, "'%s': cannot load the golden case", g.path);
	if (rc < 0)
		goto out;
	N = (size_t)g.B * g.T;
	V = (size_t)g.model.vocab_size;

	rc = llama_new(&m, &g.model, &kernels_cpu, &mem);
	CHECK(rc == 0, "llama_new: %s", titan_errmsg());
	if (rc < 0 || load_weights(&g, m, "") < 0)
		goto out;
	rc = llama_plan(m, g.B, g.T, LLAMA_AC_NONE, 0);
	CHECK(rc == 0, "llama_plan: %s", titan_errmsg());
	if (rc < 0)
		goto out;

	/* Forward alone: the logits. */
	rc = llama_forward(m, g.inputs, g.labels, g.seg_start, 0, &loss);
	CHECK(rc == 0, "llama_forward: %s", titan_errmsg());
	if (rc < 0)
		goto out;
	const float *want = golden_f32(&g, "logits", N * V);
	if (want) {
		logits_w.err = rel_err(llama_logits(m), want, N * V);
		snprintf(logits_w.name, sizeof logits_w.name, "logits");
		CHECK(logits_w.err < LOGITS_TOL, "'%s': logits: relative error %.3g",
		      g.path, logits_w.err);
	}

	/* Forward and backward of the mean loss. */
	llama_zero_grads(m);
	rc = llama_forward(m, g.inputs, g.labels, g.seg_start, 1, &loss);
	CHECK(rc == 0, "llama_forward: %s", titan_errmsg());
	if (rc < 0)
		goto out;
	rc = llama_backward(m);
	CHECK(rc == 0, "llama_backward: %s", titan_errmsg());
	if (rc < 0)
		goto out;
	want = golden_f32(&g, "loss", 1);
	if (want) {
		loss_err = fabs(loss - want[0]) / fabs(want[0]);
		CHECK(loss_err < LOSS_TOL, "'%s': loss %.8g, PyTorch %.8g", g.path, loss, want[0]);
	}
	compare_tensors(&g, m->grads, "grad.", GRAD_TOL, &grads_w);

	/* Full activation checkpointing recomputes the same floats in the same
	 * order, so its gradients are the same bits. */
	size_t nfloats = grads_floats(m), off = 0;
	saved = malloc(nfloats * sizeof *saved);
	CHECK(saved, "out of memory");
	if (!saved)
		goto out;
	for (int c = 0; c < m->nchunks; c++) {
		memcpy(saved + off, m->grads[c], m->chunk_numel[c] * sizeof(float));
		off += m->chunk_numel[c];
	}
	rc = llama_plan(m, g.B, g.T, LLAMA_AC_FULL, 0);
	CHECK(rc == 0, "llama_plan full: %s", titan_errmsg());
	if (rc < 0)
		goto out;
	llama_zero_grads(m);
	float loss_ac = 0;
	rc = llama_forward(m, g.inputs, g.labels, g.seg_start, 1, &loss_ac);
	if (rc == 0)
		rc = llama_backward(m);
	CHECK(rc == 0, "forward/backward with full AC: %s", titan_errmsg());
	if (rc < 0)
		goto out;
	CHECK(memcmp(&loss_ac, &loss, sizeof loss) == 0, "loss with full AC %.9g, without %.9g",
	      loss_ac, loss);
	off = 0;
	int ac_diff = 0;
	for (int c = 0; c < m->nchunks; c++) {
		if (memcmp(saved + off, m->grads[c], m->chunk_numel[c] * sizeof(float)))
			ac_diff++;
		off += m->chunk_numel[c];
	}
	CHECK(ac_diff == 0, "'%s': %d chunk(s) of gradients differ between AC full and none",
	      g.path, ac_diff);
	rc = llama_plan(m, g.B, g.T, LLAMA_AC_NONE, 0);
	CHECK(rc == 0, "llama_plan: %s", titan_errmsg());
	if (rc < 0)
		goto out;

	/* Clipped AdamW steps at a constant learning rate. */
	const float *want_losses = golden_f32(&g, "losses", g.steps);
	const float *want_norms = golden_f32(&g, "grad_norms", g.steps);
	if (!want_losses || !want_norms)
		goto out;
	rc = adamw_new(&opt, m, &g.adamw, &mem);
	CHECK(rc == 0, "adamw_new: %s", titan_errmsg());
	if (rc < 0)
		goto out;
	for (int step = 0; step < g.steps; step++) {
		llama_zero_grads(m);
		rc = llama_forward(m, g.inputs, g.labels, g.seg_start, 1, &loss);
		if (rc == 0)
			rc = llama_backward(m);
		CHECK(rc == 0, "step %d: %s", step + 1, titan_errmsg());
		if (rc < 0)
			goto out;
		double norm = grad_norm(m);
		adamw_step(opt, m, g.adamw.lr, grad_clip_coef(norm, g.max_norm));

		double le = fabs(loss - want_losses[step]) / fabs(want_losses[step]);
		double ne = fabs(norm - want_norms[step]) / fabs(want_norms[step]);
		losses_err = TITAN_MAX(losses_err, le);
		norms_err = TITAN_MAX(norms_err, ne);
		CHECK(le < LOSS_TOL, "'%s': step %d: loss %.8g, PyTorch %.8g", g.path,
		      step + 1, loss, want_losses[step]);
		CHECK(ne < STEP_TOL, "'%s': step %d: grad norm %.8g, PyTorch %.8g", g.path,
		      step + 1, norm, want_norms[step]);
	}
	compare_tensors(&g, m->params, "step3.", STEP_TOL, &step_w);

	printf("# %s: logits %.2e, loss %.2e, grads %.2e (worst %s), step losses %.2e, "
	       "grad norms %.2e, params after %d steps %.2e (worst %s), AC full grads %s\n",
	       file, logits_w.err, loss_err, grads_w.err, grads_w.name, losses_err, norms_err,
	       g.steps, step_w.err, step_w.name, ac_diff ? "DIFFER" : "bit-identical");
out:
	free(saved);
	if (opt)
		adamw_free(opt);
	if (m)
		llama_free(m);
	golden_close(&g);
}

static void test_causal_untied(void)
{
	check_case("llama_causal.safetensors");
}

static void test_block_causal_tied(void)
{
	check_case("llama_block_tied.safetensors");
}

int main(void)
{
	RUN(test_causal_untied);
	RUN(test_block_causal_tied);
	return check_done();
}
