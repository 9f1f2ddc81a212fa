/* test_attention_tiles.c - the tiled attention schedule (attention_tiles.c)
 * over the CPU's primitives against the CPU backend's attention, the
 * reference that matches PyTorch: forward out and lse, the three gradients,
 * for causal and document masks and arbitrary ranges with Tq != Tk (empty
 * ones, whole query rows that see nothing), grouped and multi-query KV
 * heads, and key tiles from one key to more than Tk, so that tiles split
 * documents, start mid-range and are skipped.  The schedule is what the
 * GPU runs over cuBLAS; this is its test on a machine without one. */
#include "core/base.h"
#include <math.h>
#include "attention_tiles.h"
#include "kernels.h"
#include "check.h"

static uint64_t rng_state = 7;

static float rnd(void)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((double)(rng_state >> 40) / (double)(1 << 24) * 2 - 1);
}

static int rnd_int(int n)
{
	int r = (int)((rnd() + 1) * 0.5f * (float)n);

	return r < n ? r : n - 1;
}

enum mask { CAUSAL, DOCUMENTS, RANGES };

static void make_mask(int32_t *lo, int32_t *hi, int B, int Tq, int Tk, enum mask kind)
{
	for (int b = 0; b < B; b++) {
		int start = 0;
		for (int t = 0; t < Tq; t++) {
			size_t at = (size_t)b * Tq + t;
			switch (kind) {
			case CAUSAL:
				lo[at] = 0;
				hi[at] = t;
				break;
			case DOCUMENTS:
				if (t > 0 && rnd_int(5) == 0)
					start = t;
				lo[at] = start;
				hi[at] = t;
				break;
			case RANGES:
				lo[at] = rnd_int(Tk + 4) - 2;
				hi[at] = lo[at] + rnd_int(Tk) - 3;
				/* row 1 sees nothing in its first queries */
				if (b == 1 && t < Tq / 3) {
					lo[at] = 5;
					hi[at] = 4;
				}
				break;
			}
		}
	}
}

/* Largest |a - b| relative to the largest |b| (at least 1). */
static double rel_err(const float *a, const float *b, size_t n)
{
	double worst = 0, scale = 1;

	for (size_t i = 0; i < n; i++)
		if (isfinite(b[i]) && fabs(b[i]) > scale)
			scale = fabs(b[i]);
	for (size_t i = 0; i < n; i++) {
		if (isinf(b[i]) || isinf(a[i])) {
			if (a[i] != b[i])
				return INFINITY;
			continue;
		}
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= worst))
			worst = d;
	}
	return worst / scale;
}

static float *randoms(size_t n)
{
	float *x = malloc(n * sizeof *x);

	for (size_t i = 0; i < n && x; i++)
		x[i] = rnd();
	return x;
}

static void check_case(int B, int Tq, int Tk, int H, int KV, int D, enum mask kind, int tile)
{
	size_t nq = (size_t)B * Tq * H * D, nk = (size_t)B * Tk * KV * D;
	size_t nl = (size_t)B * H * Tq;
	float *q = randoms(nq), *k = randoms(nk), *v = randoms(nk), *dout = randoms(nq);
	float *out = calloc(nq, 4), *lse = calloc(nl, 4), *tout = calloc(nq, 4), *tlse = calloc(nl, 4);
	float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
	float *tdq = calloc(nq, 4), *tdk = calloc(nk, 4), *tdv = calloc(nk, 4);
	int32_t *lo = malloc((size_t)B * Tq * 4), *hi = malloc((size_t)B * Tq * 4);
	const attention_tile_prims *p = &attention_tile_prims_cpu;
	char what[128];

	snprintf(what, sizeof what, "B %d Tq %d Tk %d H %d KV %d D %d mask %d tile %d", B, Tq,
		 Tk, H, KV, D, kind, tile);
	if (!q || !k || !v || !dout || !out || !lse || !tout || !tlse || !dq || !dk || !dv ||
	    !tdq || !tdk || !tdv || !lo || !hi) {
		CHECK(0, "%s: out of memory", what);
		goto out;
	}
	make_mask(lo, hi, B, Tq, Tk, kind);
	kernels_cpu.attention_forward(out, lse, q, k, v, lo, hi, B, Tq, Tk, H, KV, D);
	int rc = attention_tiles_forward(p, tout, tlse, q, k, v, lo, hi, lo, hi, B, Tq, Tk, H,
					 KV, D, tile);
	CHECK(rc == 0, "%s: forward %d", what, rc);
	double e_out = rel_err(tout, out, nq), e_lse = rel_err(tlse, lse, nl);
	CHECK(e_out < 2e-5, "%s: out differs by %g", what, e_out);
	CHECK(e_lse < 2e-5, "%s: lse differs by %g", what, e_lse);

	kernels_cpu.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, lo, hi, B, Tq, Tk, H,
				       KV, D);
	rc = attention_tiles_backward(p, tdq, tdk, tdv, dout, q, k, v, out, lse, lo, hi, lo, hi,
				      B, Tq, Tk, H, KV, D, tile);
	CHECK(rc == 0, "%s: backward %d", what, rc);
	double e_dq = rel_err(tdq, dq, nq), e_dk = rel_err(tdk, dk, nk), e_dv = rel_err(tdv, dv, nk);
	CHECK(e_dq < 5e-5, "%s: dq differs by %g", what, e_dq);
	CHECK(e_dk < 5e-5, "%s: dk differs by %g", what, e_dk);
	CHECK(e_dv < 5e-5, "%s: dv differs by %g", what, e_dv);
out:
	free(q), free(k), free(v), free(dout), free(out), free(lse), free(tout), free(tlse);
	free(dq), free(dk), free(dv), free(tdq), free(tdk), free(tdv), free(lo), free(hi);
}

static void test_causal(void)
{
	static const int tiles[] = {1, 5, 16, 37, 64, 0};

	for (size_t i = 0; i < sizeof tiles / sizeof *tiles; i++) {
		check_case(2, 37, 37, 4, 2, 8, CAUSAL, tiles[i]);
		check_case(1, 37, 37, 2, 2, 16, CAUSAL, tiles[i]);
	}
}

static void test_documents(void)
{
	check_case(3, 50, 50, 4, 4, 8, DOCUMENTS, 7);
	check_case(3, 50, 50, 6, 2, 12, DOCUMENTS, 16);
	check_case(2, 64, 64, 4, 1, 8, DOCUMENTS, 0);
}

static void test_ranges(void)
{
	check_case(2, 33, 90, 4, 1, 16, RANGES, 11);
	check_case(3, 20, 45, 4, 2, 8, RANGES, 64);
	check_case(2, 9, 17, 2, 1, 4, RANGES, 1);
}

/* The automatic tile: at most Tk keys, at least 64 when there are more. */
static void test_tile_sizes(void)
{
	check_case(1, 130, 130, 2, 1, 8, CAUSAL, 0);
	check_case(1, 1, 1, 1, 1, 1, CAUSAL, 0);
}

int main(void)
{
	RUN(test_causal);
	RUN(test_documents);
	RUN(test_ranges);
	RUN(test_tile_sizes);
	return check_done();
}
