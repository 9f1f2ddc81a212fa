/* test_model.c - the Llama 3 model: parameter counts and layout, a
 * finite-difference check of the whole backward, activation checkpointing,
 * gradient accumulation and initialisation. */
#include "core/base.h"

#include <math.h>
#include <omp.h>

#include "check.h"
#include "model/llama.h"

static llama_config flavor(int dim, int layers, int heads, int kv, int vocab, int multiple_of,
			   double mult, bool tied)
{
	return (llama_config){
		.dim = dim, .n_layers = layers, .n_heads = heads, .n_kv_heads = kv,
		.vocab_size = vocab, .multiple_of = multiple_of, .ffn_dim_multiplier = mult,
		.norm_eps = 1e-5, .rope_theta = 500000, .max_seq_len = 2048,
		.tie_embeddings = tied,
	};
}

static void test_param_counts(void)
{
	static const struct {
		const char *name;
		int dim, layers, heads, kv, multiple_of;
		double mult;
		bool tied;
		int vocab;
		uint64_t want;
	} cases[] = {
		{ "debugmodel", 256, 6, 16, 16, 256, 0, false, 2048, 6163712ull },
		{ "llama3_8b", 4096, 32, 32, 8, 1024, 1.3, false, 128256, 8030261248ull },
		{ "llama3_70b", 8192, 80, 64, 8, 4096, 1.3, false, 128256, 70553706496ull },
		{ "llama3_405b", 16384, 126, 128, 8, 4096, 1.2, false, 128256, 405853388800ull },
		{ "llama3_1b", 2048, 16, 32, 8, 256, 1.5, true, 128256, 1235814400ull },
		{ "llama3_3b", 3072, 28, 24, 8, 256, 1.0, true, 128256, 3212749824ull },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		llama_config c = flavor(cases[i].dim, cases[i].layers, cases[i].heads,
					cases[i].kv, cases[i].vocab, cases[i].multiple_of,
					cases[i].mult, cases[i].tied);
		uint64_t sum = 0;

		REQUIRE(llama_config_check(&c) == 0, "%s: %s", cases[i].name, titan_errmsg());
		CHECK(llama_param_count(&c) == cases[i].want, "%s: %llu, want %llu",
		      cases[i].name, (unsigned long long)llama_param_count(&c),
		      (unsigned long long)cases[i].want);
		for (int k = 0; k < llama_nchunks(&c); k++)
			sum += llama_chunk_numel(&c, k);
		CHECK(sum == cases[i].want, "%s: chunks hold %llu", cases[i].name,
		      (unsigned long long)sum);
	}
	{
		llama_config c = flavor(4096, 32, 32, 8, 128256, 1024, 1.3, false);

		REQUIRE(llama_config_check(&c) == 0, "%s", titan_errmsg());
		CHECK(c.ffn_hidden == 14336, "8b ffn_hidden %d", c.ffn_hidden);
		/* 6 * (8030261248 - 525336576) + 12 * 32 * 32 * 128 * 8192 */
		double want = 6.0 * 7504924672.0 + 12.0 * 32 * 4096 * 8192;

		CHECK(llama_flops_per_token(&c, 8192) == want, "flops %.0f",
		      llama_flops_per_token(&c, 8192));
	}
}

static void test_config_errors(void)
{
	static const struct {
		int dim, heads, kv;
		const char *want;
	} cases[] = {
		{ 256, 7, 7, "model.n_heads: 7 does not divide model.dim 256" },
		{ 256, 16, 3, "model.n_kv_heads: 3 does not divide model.n_heads 16" },
		{ 240, 16, 16, "model.n_heads: head dim 15" },
		{ 0, 16, 16, "model.dim: 0 must be positive" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		llama_config c = flavor(cases[i].dim, 2, cases[i].heads, cases[i].kv, 100, 16,
					0, false);
		int rc = llama_config_check(&c);

		CHECK(rc == TITAN_EUSAGE, "case %zu: rc %d", i, rc);
		CHECK(strstr(titan_errmsg(), cases[i].want), "case %zu: '%s'", i,
		      titan_errmsg());
	}
}

static void test_layout(void)
{
	llama_config cs[2] = {
		flavor(64, 3, 4, 2, 50, 32, 1.3, false),
		flavor(64, 3, 4, 2, 50, 32, 0, true),
	};

	for (int v = 0; v < 2; v++) {
		llama_config *c = &cs[v];
		llama_tensor_info *t;
		int n, chunk = -1;
		size_t off = 0;
		uint64_t sum = 0;
		float base[1];

		REQUIRE(llama_config_check(c) == 0, "%s", titan_errmsg());
		REQUIRE(llama_tensors(c, &t, &n) == 0, "%s", titan_errmsg());
		CHECK(n == 1 + 9 * c->n_layers + (c->tie_embeddings ? 1 : 2), "n %d", n);
		for (int i = 0; i < n; i++) {
			if (t[i].chunk != chunk) {
				CHECK(chunk < 0 || off == llama_chunk_numel(c, chunk),
				      "chunk %d ends at %zu", chunk, off);
				CHECK(t[i].chunk == chunk + 1, "%s in chunk %d after %d",
				      t[i].name, t[i].chunk, chunk);
				chunk = t[i].chunk;
				off = 0;
			}
			CHECK(t[i].offset == off, "%s at %zu, want %zu", t[i].name, t[i].offset,
			      off);
			CHECK(t[i].numel == (size_t)t[i].shape[0] *
						    (size_t)(t[i].ndim == 2 ? t[i].shape[1] : 1),
			      "%s numel", t[i].name);
			off += t[i].numel;
			sum += t[i].numel;
		}
		CHECK(chunk == llama_nchunks(c) - 1 && off == llama_chunk_numel(c, chunk),
		      "last chunk %d ends at %zu", chunk, off);
		CHECK(sum == llama_param_count(c), "sum %llu", (unsigned long long)sum);
		CHECK(!strcmp(t[0].name, "tok_embeddings.weight") && t[0].is_embedding, "%s",
		      t[0].name);
		CHECK(!strcmp(t[1].name, "layers.0.attention.wq.weight") && t[1].shape[0] == 64 &&
			      t[1].shape[1] == 64, "%s", t[1].name);
		CHECK(!strcmp(t[2].name, "layers.0.attention.wk.weight") && t[2].shape[0] == 32,
		      "%s", t[2].name);
		CHECK(!strcmp(t[6].name, "layers.0.feed_forward.w2.weight") &&
			      t[6].shape[0] == 64 && t[6].shape[1] == c->ffn_hidden, "%s",
		      t[6].name);
		CHECK(!strcmp(t[9].name, "layers.0.ffn_norm.weight") && t[9].is_norm &&
			      t[9].ndim == 1, "%s", t[9].name);
		CHECK(!strcmp(t[1 + 9 * 3].name, "norm.weight"), "%s", t[1 + 9 * 3].name);
		if (!c->tie_embeddings)
			CHECK(!strcmp(t[n - 1].name, "output.weight") && t[n - 1].shape[0] == 50,
			      "%s", t[n - 1].name);
		{
			llama_block_weights w;
			float *p = base;

			llama_block_view(c, p, &w);
			CHECK(w.wq == p + t[1].offset && w.wk == p + t[2].offset &&
				      w.wv == p + t[3].offset && w.wo == p + t[4].offset &&
				      w.w1 == p + t[5].offset && w.w2 == p + t[6].offset &&
				      w.w3 == p + t[7].offset &&
				      w.attention_norm == p + t[8].offset &&
				      w.ffn_norm == p + t[9].offset, "block view offsets");
		}
		free(t);
	}
}

/* The tiny model the numerical tests use. */
enum { TB = 2, TT = 6, TN = TB * TT };

static llama_config tiny(bool tied, int layers)
{
	llama_config c = flavor(16, layers, 4, 2, 11, 8, 0, tied);

	c.max_seq_len = 16;
	c.rope_theta = 10000;
	return c;
}

static uint64_t test_rng = 88172645463325252ull;

static double uniform(void)
{
	test_rng ^= test_rng << 13;
	test_rng ^= test_rng >> 7;
	test_rng ^= test_rng << 17;
	return (test_rng >> 11) * 0x1.0p-53;
}

static void batch(uint32_t *in, uint32_t *lab, int V)
{
	for (int n = 0; n < TN; n++) {
		in[n] = (uint32_t)(uniform() * V);
		lab[n] = (uint32_t)(uniform() * V);
	}
}

/* Two documents per row: rows start new documents at tokens 3 and 2, 5. */
static const int32_t doc_seg[TN] = { 0, 0, 0, 3, 3, 3, 0, 0, 2, 2, 2, 5 };

/* Weights large enough that every gradient is well above fp32 noise. */
static void random_weights(llama_model *m)
{
	llama_tensor_info *t;
	int n;

	if (llama_tensors(&m->cfg, &t, &n))
		return;
	for (int i = 0; i < n; i++) {
		float *w = m->params[t[i].chunk] + t[i].offset;

		for (size_t j = 0; j < t[i].numel; j++)
			w[j] = t[i].is_norm ? (float)(1 + 0.4 * (uniform() - 0.5))
					    : (float)(uniform() - 0.5);
	}
	free(t);
}

static int new_tiny(llama_model **m, mem_tracker *mem, bool tied, int layers)
{
	llama_config c = tiny(tied, layers);
	int rc;

	if ((rc = llama_config_check(&c)) || (rc = llama_new(m, &c, &kernels_cpu, mem)))
		return rc;
	random_weights(*m);
	return llama_plan(*m, TB, TT, LLAMA_AC_NONE, 0);
}

static float loss_at(llama_model *m, const uint32_t *in, const uint32_t *lab,
		     const int32_t *seg)
{
	float loss = NAN;

	if (llama_forward(m, in, lab, seg, 0, &loss))
		return NAN;
	return loss;
}

static void gradcheck(bool tied, bool doc)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	llama_tensor_info *t = NULL;
	uint32_t in[TN], lab[TN];
	const int32_t *seg = doc ? doc_seg : NULL;
	/* Gradients here are as small as 1e-5 while the fp32 loss carries
	 * noise near 1e-7: a wide fourth-order central difference keeps both
	 * the noise and the truncation error far below the tolerance. */
	const float h = 4e-2f;
	int nt, checked = 0, bad = 0;
	float loss;
	double worst = 0;

	REQUIRE(new_tiny(&m, &mem, tied, 2) == 0, "%s", titan_errmsg());
	batch(in, lab, m->cfg.vocab_size);
	llama_zero_grads(m);
	REQUIRE(llama_forward(m, in, lab, seg, 1, &loss) == 0, "%s", titan_errmsg());
	CHECK(isfinite(loss) && loss > 0, "loss %g", loss);
	REQUIRE(llama_backward(m) == 0, "%s", titan_errmsg());
	CHECK(llama_backward(m) == TITAN_EUSAGE, "second backward accepted");
	REQUIRE(llama_tensors(&m->cfg, &t, &nt) == 0, "%s", titan_errmsg());
	for (int i = 0; i < nt; i++) {
		float *p = m->params[t[i].chunk] + t[i].offset;
		const float *g = m->grads[t[i].chunk] + t[i].offset;

		for (int s = 0; s < 6; s++) {
			size_t j = (size_t)(uniform() * t[i].numel);
			float keep = p[j];
			double num, err;

			num = 0;
			for (int k = 0; k < 4; k++) {
				static const float step[4] = { 1, -1, 2, -2 };
				static const double weight[4] = { 8, -8, -1, 1 };

				p[j] = keep + step[k] * h;
				num += weight[k] * loss_at(m, in, lab, seg);
			}
			num /= 12.0 * h;
			p[j] = keep;
			err = fabs(num - g[j]) / (fabs(num) + fabs(g[j]) + 1e-3);
			if (err > worst)
				worst = err;
			checked++;
			if (err > 1e-2) {
				bad++;
				printf("#   %s[%zu]: backward %.6g, finite difference %.6g\n",
				       t[i].name, j, g[j], num);
			}
		}
	}
	CHECK(bad == 0, "%d of %d gradients off", bad, checked);
	printf("#   %s, %s mask: %d gradients, worst relative error %.2g\n",
	       tied ? "tied" : "untied", doc ? "document" : "causal", checked, worst);
	free(t);
	llama_free(m);
	CHECK(mem.cur == 0 && mem.nalloc == 0, "leak: %zu bytes", mem.cur);
}

static void test_gradcheck_causal_untied(void)
{
	gradcheck(false, false);
}

static void test_gradcheck_doc_untied(void)
{
	gradcheck(false, true);
}

static void test_gradcheck_causal_tied(void)
{
	gradcheck(true, false);
}

static void test_gradcheck_doc_tied(void)
{
	gradcheck(true, true);
}

/* With the document mask a document's logits do not depend on where in the
 * row it sits: RoPE positions restart and nothing earlier is visible. */
static void test_document_position(void)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	uint32_t in[TN];
	static const int32_t seg[TN] = { 0, 0, 0, 3, 3, 3, 0, 0, 0, 3, 3, 3 };
	const float *lg;
	int V;
	float worst = 0;

	REQUIRE(new_tiny(&m, &mem, false, 2) == 0, "%s", titan_errmsg());
	V = m->cfg.vocab_size;
	for (int t = 0; t < TT; t++) {
		in[t] = (uint32_t)(uniform() * V);
		in[TT + (t + 3) % TT] = in[t];
	}
	REQUIRE(llama_forward(m, in, NULL, seg, 0, NULL) == 0, "%s", titan_errmsg());
	lg = llama_logits(m);
	for (int t = 0; t < TT; t++)
		for (int v = 0; v < V; v++) {
			float a = lg[(size_t)t * V + v];
			float b = lg[(size_t)(TT + (t + 3) % TT) * V + v];

			worst = fmaxf(worst, fabsf(a - b));
		}
	CHECK(worst < 1e-5f, "moved documents' logits differ by %g", worst);
	/* and the causal mask does see the first document */
	REQUIRE(llama_forward(m, in, NULL, NULL, 0, NULL) == 0, "%s", titan_errmsg());
	lg = llama_logits(m);
	worst = 0;
	for (int v = 0; v < V; v++)
		worst = fmaxf(worst, fabsf(lg[(size_t)3 * V + v] - lg[(size_t)TT * V + v]));
	CHECK(worst > 1e-3f, "causal logits ignore the earlier document");
	llama_free(m);
}

static size_t grads_numel(const llama_model *m)
{
	size_t n = 0;

	for (int i = 0; i < m->nchunks; i++)
		n += m->chunk_numel[i];
	return n;
}

static void grads_copy(const llama_model *m, float *out)
{
	for (int i = 0; i < m->nchunks; i++) {
		memcpy(out, m->grads[i], m->chunk_numel[i] * sizeof(float));
		out += m->chunk_numel[i];
	}
}

static void test_checkpointing(void)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	uint32_t in[TN], lab[TN];
	const llama_ac_mode modes[] = { LLAMA_AC_NONE, LLAMA_AC_SELECTIVE, LLAMA_AC_FULL };
	size_t bytes[3], n;
	float *g[3] = { NULL }, loss[3];

	REQUIRE(new_tiny(&m, &mem, false, 4) == 0, "%s", titan_errmsg());
	batch(in, lab, m->cfg.vocab_size);
	n = grads_numel(m);
	for (int i = 0; i < 3; i++) {
		g[i] = malloc(n * sizeof(float));
		REQUIRE(g[i], "out of memory");
		REQUIRE(llama_plan(m, TB, TT, modes[i], 2) == 0, "%s", titan_errmsg());
		bytes[i] = m->act_bytes;
		llama_zero_grads(m);
		REQUIRE(llama_forward(m, in, lab, doc_seg, 0.5f, &loss[i]) == 0, "%s",
			titan_errmsg());
		REQUIRE(llama_backward(m) == 0, "%s", titan_errmsg());
		grads_copy(m, g[i]);
	}
	CHECK(!memcmp(g[0], g[1], n * sizeof(float)), "selective grads differ from none");
	CHECK(!memcmp(g[0], g[2], n * sizeof(float)), "full grads differ from none");
	CHECK(loss[0] == loss[1] && loss[0] == loss[2], "losses %g %g %g", loss[0], loss[1],
	      loss[2]);
	CHECK(bytes[0] > bytes[1] && bytes[1] > bytes[2], "act_bytes none %zu selective %zu "
	      "full %zu", bytes[0], bytes[1], bytes[2]);
	printf("#   act_bytes: none %zu, selective(2) %zu, full %zu\n", bytes[0], bytes[1],
	       bytes[2]);
	CHECK(llama_plan(m, TB, TT, LLAMA_AC_SELECTIVE, 0) == TITAN_EUSAGE, "every 0 accepted");
	CHECK(llama_plan(m, TB, 17, LLAMA_AC_NONE, 0) == TITAN_EUSAGE, "T past max accepted");
	for (int i = 0; i < 3; i++)
		free(g[i]);
	llama_free(m);
	CHECK(mem.cur == 0 && mem.nalloc == 0, "leak: %zu bytes", mem.cur);
}

static void test_accumulation(void)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	uint32_t in[TN], lab[TN];
	float *one = NULL, *two = NULL, loss;
	size_t n, bad = 0;

	REQUIRE(new_tiny(&m, &mem, true, 2) == 0, "%s", titan_errmsg());
	batch(in, lab, m->cfg.vocab_size);
	n = grads_numel(m);
	one = malloc(n * sizeof(float));
	two = malloc(n * sizeof(float));
	REQUIRE(one && two, "out of memory");
	llama_zero_grads(m);
	REQUIRE(llama_forward(m, in, lab, NULL, 1, &loss) == 0, "%s", titan_errmsg());
	REQUIRE(llama_backward(m) == 0, "%s", titan_errmsg());
	grads_copy(m, one);
	/* a second micro-batch, the same one: the gradients must double */
	REQUIRE(llama_forward(m, in, lab, NULL, 1, &loss) == 0, "%s", titan_errmsg());
	REQUIRE(llama_backward(m) == 0, "%s", titan_errmsg());
	grads_copy(m, two);
	for (size_t i = 0; i < n; i++)
		if (fabsf(two[i] - 2 * one[i]) > 1e-5f * fabsf(one[i]) + 1e-9f) {
			bad++;
			printf("#   gradient %zu: %.9g after one, %.9g after two\n", i, one[i],
			       two[i]);
		}
	CHECK(bad == 0, "%zu of %zu gradients are not doubled", bad, n);
	free(one);
	free(two);
	llama_free(m);
}

static void test_errors(void)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	uint32_t in[TN] = { 0 }, lab[TN] = { 0 };
	int32_t seg[TN] = { 0 };
	float loss;

	REQUIRE(new_tiny(&m, &mem, false, 1) == 0, "%s", titan_errmsg());
	CHECK(llama_backward(m) == TITAN_EUSAGE, "backward before forward");
	in[3] = 11;
	CHECK(llama_forward(m, in, lab, NULL, 1, &loss) == TITAN_ERANGE, "id 11 accepted");
	in[3] = 0;
	seg[4] = 5;
	CHECK(llama_forward(m, in, lab, seg, 1, &loss) == TITAN_ERANGE, "seg_start 5 at t 4");
	CHECK(strstr(titan_errmsg(), "seg_start[4]"), "%s", titan_errmsg());
	CHECK(llama_forward(m, in, NULL, NULL, 1, NULL) == 0, "%s", titan_errmsg());
	CHECK(llama_backward(m) == TITAN_EUSAGE, "backward after forward without labels");
	CHECK(llama_logits(m) != NULL, "no logits");
	llama_free(m);
}

static void moments(const float *w, size_t n, double *mean, double *std)
{
	double s = 0, s2 = 0;

	for (size_t i = 0; i < n; i++) {
		s += w[i];
		s2 += (double)w[i] * w[i];
	}
	*mean = s / n;
	*std = sqrt(s2 / n - *mean * *mean);
}

static void test_init(void)
{
	mem_tracker mem = { .device = "cpu" };
	llama_config c = flavor(256, 4, 16, 4, 2048, 256, 0, false);
	llama_model *a = NULL, *b = NULL;
	llama_block_weights w;
	double mean, std, want;
	int threads = omp_get_max_threads();
	bool same = true;

	REQUIRE(llama_config_check(&c) == 0, "%s", titan_errmsg());
	REQUIRE(llama_new(&a, &c, &kernels_cpu, &mem) == 0, "%s", titan_errmsg());
	REQUIRE(llama_new(&b, &c, &kernels_cpu, &mem) == 0, "%s", titan_errmsg());
	omp_set_num_threads(1);
	llama_init_weights(a, 1234);
	omp_set_num_threads(threads > 1 ? threads : 2);
	llama_init_weights(b, 1234);
	omp_set_num_threads(threads);
	for (int i = 0; i < a->nchunks; i++)
		same = same && !memcmp(a->params[i], b->params[i], a->chunk_numel[i] * 4);
	CHECK(same, "same seed, different weights across thread counts");
	llama_init_weights(b, 1235);
	CHECK(memcmp(a->params[1], b->params[1], a->chunk_numel[1] * 4), "seed ignored");

	moments(a->params[0], a->chunk_numel[0], &mean, &std);
	CHECK(fabs(mean) < 0.01 && fabs(std - 1) < 0.01, "embedding mean %g std %g", mean, std);
	llama_block_view(&c, a->params[2], &w);
	moments(w.wq, 256 * 256, &mean, &std);
	CHECK(fabs(std - 0.02) < 0.0005, "wq std %g", std);
	moments(w.wo, 256 * 256, &mean, &std);
	want = 0.02 / sqrt(2.0 * 4);
	CHECK(fabs(std / want - 1) < 0.02, "wo std %g, want %g", std, want);
	moments(w.w3, 256 * (size_t)c.ffn_hidden, &mean, &std);
	CHECK(fabs(std / want - 1) < 0.02, "w3 std %g, want %g", std, want);
	CHECK(w.attention_norm[0] == 1 && w.ffn_norm[255] == 1, "norms not 1");
	{
		const float *out = a->params[c.n_layers + 1] + c.dim;
		size_t n = (size_t)c.vocab_size * c.dim;
		float most = 0;

		CHECK(a->params[c.n_layers + 1][0] == 1, "norm not 1");
		for (size_t i = 0; i < n; i++)
			most = fmaxf(most, fabsf(out[i]));
		moments(out, n, &mean, &std);
		/* a normal cut at 3 std keeps 98.7% of its std */
		want = 0.9866 / 16;
		CHECK(fabs(std / want - 1) < 0.01, "output std %g, want %g", std, want);
		CHECK(most <= 3.0f / 16 && most > 2.5f / 16, "output max %g", most);
	}
	llama_free(a);
	llama_free(b);
	CHECK(mem.cur == 0, "leak: %zu bytes", mem.cur);
}

int main(void)
{
	RUN(test_param_counts);
	RUN(test_config_errors);
	RUN(test_layout);
	RUN(test_gradcheck_causal_untied);
	RUN(test_gradcheck_doc_untied);
	RUN(test_gradcheck_causal_tied);
	RUN(test_gradcheck_doc_tied);
	RUN(test_document_position);
	RUN(test_checkpointing);
	RUN(test_accumulation);
	RUN(test_errors);
	RUN(test_init);
	return check_done();
}
