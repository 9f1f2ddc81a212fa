/* test_attention.c - the CPU flash attention against a naive double
 * precision attention that materialises the softmax: forward out and lse,
 * the three gradients, finite differences of sum(out * R), causal and
 * document masks, grouped KV heads, odd sizes, and bitwise determinism
 * across thread counts. */
#include "core/base.h"
#include <math.h>
#include <omp.h>
#include "cpu/cpu.h"
#include "check.h"

struct shape {
	int B, T, H, KV, D;
};

struct attn {
	struct shape s;
	size_t nq, nk, nl;
	float *q, *k, *v, *dout, *out, *lse, *dq, *dk, *dv;
	int32_t *seg;
	double *rout, *rlse, *rdq, *rdk, *rdv;
};

static uint64_t rng_state;

static float rnd(void)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((double)(rng_state >> 40) / (double)(1 << 24) * 2 - 1);
}

/* seg_start per row: docs == 0 is causal; otherwise documents of random
 * length (including length 1) that differ from row to row. */
static void make_segments(int32_t *seg, int B, int T, int docs)
{
	for (int b = 0; b < B; b++) {
		int start = 0;
		for (int t = 0; t < T; t++) {
			if (docs && t > 0) {
				uint32_t r = (uint32_t)((rnd() + 1) * 1000);
				/* about `docs` documents per row, some of length 1 */
				if (r % (unsigned)(T / docs + 1) == 0 || (b == 1 && t == T / 2) ||
				    (b == 1 && t == T / 2 + 1))
					start = t;
			}
			seg[(size_t)b * T + t] = start;
		}
	}
}

static int attn_init(struct attn *a, struct shape s, int docs, float amp)
{
	memset(a, 0, sizeof *a);
	a->s = s;
	a->nq = (size_t)s.B * s.T * s.H * s.D;
	a->nk = (size_t)s.B * s.T * s.KV * s.D;
	a->nl = (size_t)s.B * s.H * s.T;
	a->q = malloc(a->nq * sizeof(float));
	a->dout = malloc(a->nq * sizeof(float));
	a->out = malloc(a->nq * sizeof(float));
	a->dq = malloc(a->nq * sizeof(float));
	a->k = malloc(a->nk * sizeof(float));
	a->v = malloc(a->nk * sizeof(float));
	a->dk = malloc(a->nk * sizeof(float));
	a->dv = malloc(a->nk * sizeof(float));
	a->lse = malloc(a->nl * sizeof(float));
	a->seg = malloc((size_t)s.B * s.T * sizeof(int32_t));
	a->rout = calloc(a->nq, sizeof(double));
	a->rdq = calloc(a->nq, sizeof(double));
	a->rdk = calloc(a->nk, sizeof(double));
	a->rdv = calloc(a->nk, sizeof(double));
	a->rlse = calloc(a->nl, sizeof(double));
	if (!a->q || !a->dout || !a->out || !a->dq || !a->k || !a->v || !a->dk ||
	    !a->dv || !a->lse || !a->seg || !a->rout || !a->rdq || !a->rdk ||
	    !a->rdv || !a->rlse)
		return -1;
	for (size_t i = 0; i < a->nq; i++) {
		a->q[i] = rnd() * amp;
		a->dout[i] = rnd();
	}
	for (size_t i = 0; i < a->nk; i++) {
		a->k[i] = rnd() * amp;
		a->v[i] = rnd();
	}
	make_segments(a->seg, s.B, s.T, docs);
	return 0;
}

static void attn_free(struct attn *a)
{
	free(a->q), free(a->dout), free(a->out), free(a->dq);
	free(a->k), free(a->v), free(a->dk), free(a->dv);
	free(a->lse), free(a->seg);
	free(a->rout), free(a->rdq), free(a->rdk), free(a->rdv), free(a->rlse);
}

/* Naive attention in double, one query at a time with its full softmax row.
 * Fills rout, rlse and (when dout is given) rdq, rdk, rdv.  q, k and v may
 * be given as doubles (finite differences) or taken from a. */
static void reference(struct attn *a, const double *qd, const double *kd,
		      const double *vd, int grads)
{
	struct shape s = a->s;
	int rep = s.H / s.KV;
	double scale = 1.0 / sqrt((double)s.D);
	double *p = malloc((size_t)s.T * sizeof(double));
	double *dp = malloc((size_t)s.T * sizeof(double));

	if (grads) {
		memset(a->rdq, 0, a->nq * sizeof(double));
		memset(a->rdk, 0, a->nk * sizeof(double));
		memset(a->rdv, 0, a->nk * sizeof(double));
	}
	for (int b = 0; b < s.B; b++)
	for (int h = 0; h < s.H; h++)
	for (int t = 0; t < s.T; t++) {
		int g = h / rep, j0 = a->seg[(size_t)b * s.T + t];
		size_t qi = (((size_t)b * s.T + t) * s.H + h) * s.D;
		double m = -INFINITY, sum = 0;

		for (int j = j0; j <= t; j++) {
			size_t kj = (((size_t)b * s.T + j) * s.KV + g) * s.D;
			double x = 0;
			for (int d = 0; d < s.D; d++)
				x += (qd ? qd[qi + d] : a->q[qi + d]) *
				     (kd ? kd[kj + d] : a->k[kj + d]);
			p[j] = x * scale;
			m = fmax(m, p[j]);
		}
		for (int j = j0; j <= t; j++)
			sum += p[j] = exp(p[j] - m);
		a->rlse[((size_t)b * s.H + h) * s.T + t] = m + log(sum);
		for (int d = 0; d < s.D; d++)
			a->rout[qi + d] = 0;
		for (int j = j0; j <= t; j++) {
			size_t kj = (((size_t)b * s.T + j) * s.KV + g) * s.D;
			p[j] /= sum;
			for (int d = 0; d < s.D; d++)
				a->rout[qi + d] += p[j] * (vd ? vd[kj + d] : a->v[kj + d]);
		}
		if (!grads)
			continue;
		double di = 0;
		for (int j = j0; j <= t; j++) {
			size_t kj = (((size_t)b * s.T + j) * s.KV + g) * s.D;
			dp[j] = 0;
			for (int d = 0; d < s.D; d++)
				dp[j] += a->dout[qi + d] * a->v[kj + d];
			di += p[j] * dp[j];
		}
		for (int j = j0; j <= t; j++) {
			size_t kj = (((size_t)b * s.T + j) * s.KV + g) * s.D;
			double ds = p[j] * (dp[j] - di) * scale;
			for (int d = 0; d < s.D; d++) {
				a->rdq[qi + d] += ds * a->k[kj + d];
				a->rdk[kj + d] += ds * a->q[qi + d];
				a->rdv[kj + d] += p[j] * a->dout[qi + d];
			}
		}
	}
	free(p);
	free(dp);
}

/* max |x - ref| / max |ref| */
static double rel_err(const float *x, const double *ref, size_t n)
{
	double num = 0, den = 0;

	for (size_t i = 0; i < n; i++) {
		double e = fabs(x[i] - ref[i]);
		if (!(e <= num))
			num = e;
		den = fmax(den, fabs(ref[i]));
	}
	return num / (den > 0 ? den : 1);
}

static void run_kernels(struct attn *a)
{
	struct shape s = a->s;

	cpu_attention_forward(a->out, a->lse, a->q, a->k, a->v, a->seg,
			      s.B, s.T, s.H, s.KV, s.D);
	cpu_attention_backward(a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v,
			       a->out, a->lse, a->seg, s.B, s.T, s.H, s.KV, s.D);
}

static void check_case(struct shape s, int docs, float amp)
{
	struct attn a;

	rng_state = 0x1234u + (uint64_t)s.T * 31 + (uint64_t)s.D * 7 + (uint64_t)docs;
	if (attn_init(&a, s, docs, amp) < 0) {
		CHECK(0, "out of memory");
		attn_free(&a);
		return;
	}
	run_kernels(&a);
	reference(&a, NULL, NULL, NULL, 1);

	double eo = rel_err(a.out, a.rout, a.nq);
	/* lse: absolute error relative to its scale (it is a log) */
	double el = rel_err(a.lse, a.rlse, a.nl);
	double eq = rel_err(a.dq, a.rdq, a.nq);
	double ek = rel_err(a.dk, a.rdk, a.nk);
	double ev = rel_err(a.dv, a.rdv, a.nk);
	CHECK(eo < 1e-5 && el < 1e-5 && eq < 1e-4 && ek < 1e-4 && ev < 1e-4,
	      "B=%d T=%d H=%d KV=%d D=%d docs=%d amp=%g: out %.2e lse %.2e "
	      "dq %.2e dk %.2e dv %.2e", s.B, s.T, s.H, s.KV, s.D, docs,
	      (double)amp, eo, el, eq, ek, ev);
	attn_free(&a);
}

static void test_causal(void)
{
	static const struct shape shapes[] = {
		{ 1, 1, 1, 1, 8 },     { 2, 7, 4, 4, 8 },   { 2, 33, 4, 2, 16 },
		{ 1, 130, 4, 1, 16 },  { 2, 130, 2, 2, 64 }, { 1, 64, 2, 1, 64 },
		{ 1, 65, 4, 2, 8 },    { 3, 33, 4, 1, 64 },  { 1, 200, 2, 2, 12 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++)
		check_case(shapes[i], 0, 1.0f);
}

static void test_documents(void)
{
	static const struct shape shapes[] = {
		{ 2, 7, 4, 2, 8 },    { 3, 33, 4, 1, 16 }, { 2, 130, 4, 2, 16 },
		{ 2, 130, 2, 1, 64 }, { 4, 97, 2, 2, 8 },  { 2, 260, 2, 1, 16 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++) {
		check_case(shapes[i], 3, 1.0f);
		check_case(shapes[i], 20, 1.0f);
	}
}

/* Large scores: the running max moves a lot between key blocks. */
static void test_peaky(void)
{
	check_case((struct shape){ 2, 150, 4, 2, 16 }, 0, 6.0f);
	check_case((struct shape){ 2, 150, 2, 1, 64 }, 4, 3.0f);
}

/* Gradients against central differences of sum(out * dout) through the
 * double reference: checks the gradient formulas, not just agreement of
 * two implementations of them. */
static void test_finite_differences(void)
{
	struct shape s = { 2, 9, 4, 2, 8 };
	struct attn a;

	rng_state = 99;
	if (attn_init(&a, s, 2, 1.5f) < 0) {
		CHECK(0, "out of memory");
		attn_free(&a);
		return;
	}
	run_kernels(&a);
	double *x[3], eps = 1e-5;
	size_t n[3] = { a.nq, a.nk, a.nk };
	const float *src[3] = { a.q, a.k, a.v }, *got[3] = { a.dq, a.dk, a.dv };
	for (int w = 0; w < 3; w++) {
		x[w] = malloc(n[w] * sizeof(double));
		REQUIRE(x[w], "out of memory");
		for (size_t i = 0; i < n[w]; i++)
			x[w][i] = src[w][i];
	}
	for (int w = 0; w < 3; w++) {
		double worst = 0, big = 0;
		for (size_t i = 0; i < n[w]; i++) {
			double keep = x[w][i], f[2];
			for (int side = 0; side < 2; side++) {
				x[w][i] = keep + (side ? -eps : eps);
				reference(&a, x[0], x[1], x[2], 0);
				f[side] = 0;
				for (size_t e = 0; e < a.nq; e++)
					f[side] += a.rout[e] * a.dout[e];
			}
			x[w][i] = keep;
			double fd = (f[0] - f[1]) / (2 * eps);
			worst = fmax(worst, fabs(fd - got[w][i]));
			big = fmax(big, fabs(fd));
		}
		CHECK(worst / big < 1e-4, "%s: finite differences off by %.2e (max %.2e)",
		      w == 0 ? "dq" : w == 1 ? "dk" : "dv", worst / big, big);
	}
	for (int w = 0; w < 3; w++)
		free(x[w]);
	attn_free(&a);
}

/* The same inputs give the same bits with 1, 2, 3 and 8 threads (the last
 * two take the backward's two-pass schedule, the first two its one-pass
 * one). */
static void test_determinism(void)
{
	struct shape s = { 2, 300, 4, 2, 16 };
	struct attn a;
	float *keep[5];
	int nthreads[] = { 1, 2, 3, 8 }, saved = omp_get_max_threads();

	rng_state = 7;
	if (attn_init(&a, s, 4, 2.0f) < 0) {
		CHECK(0, "out of memory");
		attn_free(&a);
		return;
	}
	float *res[5] = { a.out, a.lse, a.dq, a.dk, a.dv };
	size_t n[5] = { a.nq, a.nl, a.nq, a.nk, a.nk };
	for (int r = 0; r < 5; r++)
		keep[r] = malloc(n[r] * sizeof(float));
	for (size_t c = 0; c < ARRAY_SIZE(nthreads); c++) {
		omp_set_num_threads(nthreads[c]);
		run_kernels(&a);
		for (int r = 0; r < 5; r++) {
			if (!keep[r])
				continue;
			if (c == 0)
				memcpy(keep[r], res[r], n[r] * sizeof(float));
			else
				CHECK(!memcmp(keep[r], res[r], n[r] * sizeof(float)),
				      "output %d differs between 1 and %d threads",
				      r, nthreads[c]);
		}
	}
	omp_set_num_threads(saved);
	for (int r = 0; r < 5; r++)
		free(keep[r]);
	attn_free(&a);
}

int main(void)
{
	RUN(test_causal);
	RUN(test_documents);
	RUN(test_peaky);
	RUN(test_finite_differences);
	RUN(test_determinism);
	return check_done();
}
