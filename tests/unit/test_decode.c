/* test_decode.c - the KV-cache decoder against the model's full forward:
 * the logits of every position, fed all at once, a token at a time or in
 * chunks, and a batch of prompts of different lengths against each alone. */
#include "core/base.h"

#include <math.h>

#include "check.h"
#include "model/llama_decode.h"

/* Decoding multiplies by GEMV, the forward by GEMM: the sums run in other
 * orders, and OpenBLAS's AVX-512 kernels differ from the forward's by up to
 * about 1e-5 on logits of a few units. */
#define DECODE_TOL 3e-5

static llama_config small_config(bool tied, bool scaling, int kv_heads)
{
	llama_config c = {
		.dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = kv_heads,
		.vocab_size = 97, .multiple_of = 16, .norm_eps = 1e-5, .rope_theta = 10000,
		.rope_scaling = scaling, .rope_scaling_factor = 8, .rope_low_freq_factor = 1,
		.rope_high_freq_factor = 4, .rope_original_max_pos = 64, .max_seq_len = 48,
		.tie_embeddings = tied, .depth_init = true,
	};

	return c;
}

/* A model whose weights move the result: torchtitan's init is too close to
 * zero in the deeper projections for a test to see a wrong position. */
static int make_model(llama_model **m, llama_config c, mem_tracker *mem)
{
	int rc;

	if ((rc = llama_config_check(&c)) || (rc = llama_new(m, &c, &kernels_cpu, mem)))
		return rc;
	llama_init_weights(*m, 7);
	for (int ch = 1; ch <= c.n_layers; ch++)
		for (size_t i = 0; i < (*m)->chunk_numel[ch]; i++)
			(*m)->params[ch][i] *= 4;
	return 0;
}

static void tokens(uint32_t *ids, int n, uint32_t seed, int V)
{
	for (int i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		ids[i] = (seed >> 8) % (uint32_t)V;
	}
}

static double max_diff(const float *a, const float *b, size_t n)
{
	double d = 0;

	for (size_t i = 0; i < n; i++)
		d = fmax(d, fabs((double)a[i] - b[i]));
	return d;
}

/* Full forward logits [T, V] of one row. */
static int full_logits(llama_model *m, const uint32_t *ids, int T, float *out)
{
	int rc;

	if ((rc = llama_plan(m, 1, T, LLAMA_AC_NONE, 1)) ||
	    (rc = llama_forward(m, ids, NULL, NULL, 0, NULL)))
		return rc;
	memcpy(out, llama_logits(m), (size_t)T * m->cfg.vocab_size * sizeof(float));
	return 0;
}

static void check_config(llama_config c, const char *what)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	llama_decoder *d = NULL;
	enum { T = 40 };
	uint32_t ids[T];
	int V, seq[T] = { 0 };
	float *want = NULL, *got = NULL;

	REQUIRE(!make_model(&m, c, &mem), "%s: %s", what, titan_errmsg());
	V = m->cfg.vocab_size;
	want = malloc((size_t)T * V * sizeof(float));
	got = malloc((size_t)T * V * sizeof(float));
	REQUIRE(want && got, "out of memory");
	tokens(ids, T, 3, V);
	REQUIRE(!full_logits(m, ids, T, want), "%s: %s", what, titan_errmsg());

	/* every position in one call */
	REQUIRE(!llama_decoder_new(&d, m, 1, T, T), "%s", titan_errmsg());
	REQUIRE(!llama_decoder_forward(d, ids, seq, T, NULL, got), "%s", titan_errmsg());
	CHECK(max_diff(want, got, (size_t)T * V) < DECODE_TOL, "%s, one call: %g", what,
	      max_diff(want, got, (size_t)T * V));

	/* a token at a time: the decode path (GEMV) */
	llama_decoder_reset(d, -1);
	for (int t = 0; t < T; t++)
		REQUIRE(!llama_decoder_forward(d, ids + t, seq, 1, NULL, got + (size_t)t * V),
			"%s", titan_errmsg());
	CHECK(max_diff(want, got, (size_t)T * V) < DECODE_TOL, "%s, token by token: %g", what,
	      max_diff(want, got, (size_t)T * V));
	CHECK(llama_decoder_len(d, 0) == T, "len %d", llama_decoder_len(d, 0));
	llama_decoder_free(d);

	/* chunks of 7, then the decode steps */
	REQUIRE(!llama_decoder_new(&d, m, 1, T, 7), "%s", titan_errmsg());
	for (int t = 0; t < 21; t += 7)
		REQUIRE(!llama_decoder_forward(d, ids + t, seq, 7, NULL, got + (size_t)t * V),
			"%s", titan_errmsg());
	for (int t = 21; t < T; t++)
		REQUIRE(!llama_decoder_forward(d, ids + t, seq, 1, NULL, got + (size_t)t * V),
			"%s", titan_errmsg());
	CHECK(max_diff(want, got, (size_t)T * V) < DECODE_TOL, "%s, chunks: %g", what,
	      max_diff(want, got, (size_t)T * V));
	llama_decoder_free(d);
	free(want);
	free(got);
	llama_free(m);
	CHECK(mem.cur == 0, "%zu bytes still held", mem.cur);
}

static void test_decode_matches_forward(void)
{
	check_config(small_config(false, false, 4), "MHA");
	check_config(small_config(false, true, 2), "GQA, rope scaling");
	check_config(small_config(true, false, 1), "MQA, tied");
}

/* Three prompts of different lengths prefilled together and decoded in one
 * batch give each one's logits alone, at every step. */
static void test_batch_equals_one_by_one(void)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	llama_decoder *d = NULL, *one = NULL;
	enum { S = 3, STEPS = 6 };
	const int n[S] = { 5, 17, 1 }, slots[S] = { 2, 0, 1 };
	uint32_t buf[S][32];
	const uint32_t *ids[S] = { buf[0], buf[1], buf[2] };
	float *batch = NULL, *alone = NULL;
	int V;

	REQUIRE(!make_model(&m, small_config(false, false, 2), &mem), "%s", titan_errmsg());
	V = m->cfg.vocab_size;
	batch = malloc((size_t)S * V * sizeof(float));
	alone = malloc((size_t)V * sizeof(float));
	REQUIRE(batch && alone, "out of memory");
	for (int j = 0; j < S; j++)
		tokens(buf[j], 32, 11 + (uint32_t)j, V);
	/* max_tokens 8: the prompts straddle calls */
	REQUIRE(!llama_decoder_new(&d, m, 3, 32, 8), "%s", titan_errmsg());
	REQUIRE(!llama_decoder_new(&one, m, 1, 32, 8), "%s", titan_errmsg());
	REQUIRE(!llama_decoder_prefill(d, S, slots, ids, n, batch), "%s", titan_errmsg());
	for (int step = 0; step <= STEPS; step++) {
		uint32_t next[S];

		for (int j = 0; j < S; j++) {
			int zero = 0, len = n[j] + step;

			llama_decoder_reset(one, -1);
			REQUIRE(!llama_decoder_prefill(one, 1, &zero, &ids[j], &len, alone),
				"%s", titan_errmsg());
			CHECK(max_diff(alone, batch + (size_t)j * V, (size_t)V) < DECODE_TOL,
			      "prompt %d step %d: %g", j, step,
			      max_diff(alone, batch + (size_t)j * V, (size_t)V));
			next[j] = buf[j][n[j] + step];
		}
		REQUIRE(!llama_decoder_forward(d, next, slots, S, NULL, batch), "%s",
			titan_errmsg());
	}
	for (int j = 0; j < S; j++)
		CHECK(llama_decoder_len(d, slots[j]) == n[j] + STEPS + 1, "slot %d: %d",
		      slots[j], llama_decoder_len(d, slots[j]));
	llama_decoder_free(d);
	llama_decoder_free(one);
	free(batch);
	free(alone);
	llama_free(m);
}

static void test_errors(void)
{
	mem_tracker mem = { .device = "cpu" };
	llama_model *m = NULL;
	llama_decoder *d = NULL;
	uint32_t ids[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, bad = 1000;
	int seq[8] = { 0 }, slot = 2, n = 8, zero = 0;
	const uint32_t *p = ids;

	REQUIRE(!make_model(&m, small_config(false, false, 2), &mem), "%s", titan_errmsg());
	CHECK(llama_decoder_new(&d, m, 1, 49, 4) == TITAN_EUSAGE, "past max_seq_len");
	CHECK(strstr(titan_errmsg(), "max_seq_len"), "%s", titan_errmsg());
	CHECK(llama_decoder_new(&d, m, 0, 8, 4) == TITAN_EUSAGE, "no sequences");
	REQUIRE(!llama_decoder_new(&d, m, 2, 6, 4), "%s", titan_errmsg());
	CHECK(llama_decoder_forward(d, ids, &slot, 1, NULL, NULL) == TITAN_ERANGE, "slot");
	CHECK(strstr(titan_errmsg(), "slot 2"), "%s", titan_errmsg());
	CHECK(llama_decoder_forward(d, &bad, seq, 1, NULL, NULL) == TITAN_ERANGE, "id");
	CHECK(strstr(titan_errmsg(), "1000"), "%s", titan_errmsg());
	CHECK(llama_decoder_forward(d, ids, seq, 5, NULL, NULL) == TITAN_ERANGE, "N");
	CHECK(llama_decoder_prefill(d, 1, &zero, &p, &n, NULL) == TITAN_ERANGE, "too long");
	CHECK(strstr(titan_errmsg(), "context of 6"), "%s", titan_errmsg());
	REQUIRE(!llama_decoder_forward(d, ids, seq, 4, NULL, NULL), "%s", titan_errmsg());
	REQUIRE(!llama_decoder_forward(d, ids, seq, 2, NULL, NULL), "%s", titan_errmsg());
	/* full: nothing more goes in, and the failed call feeds nothing */
	CHECK(llama_decoder_forward(d, ids, seq, 1, NULL, NULL) == TITAN_ERANGE, "full");
	CHECK(strstr(titan_errmsg(), "position 6"), "%s", titan_errmsg());
	CHECK(llama_decoder_len(d, 0) == 6, "len %d", llama_decoder_len(d, 0));
	llama_decoder_free(d);
	llama_free(m);
	CHECK(mem.cur == 0, "%zu bytes still held", mem.cur);
}

int main(void)
{
	RUN(test_decode_matches_forward);
	RUN(test_batch_equals_one_by_one);
	RUN(test_errors);
	return check_done();
}
