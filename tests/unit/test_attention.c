/* test_attention.c - the CPU flash attention against a naive double
 * precision attention that materialises the softmax: forward out and lse,
 * the three gradients, finite differences of sum(out * R), causal and
 * document masks, arbitrary per-query key ranges with Tq != Tk (empty,
 * whole, starting mid-block), keys split in two and the halves merged as
 * context parallel does, grouped KV heads, odd sizes, and bitwise
 * determinism across thread counts. */
#include "core/base.h"
#include <math.h>
#include <omp.h>
#include "cpu/cpu.h"
#include "check.h"
#include "rand.h"

/* make_mask's docs for random key ranges rather than documents */
#define RANGES (-1)

struct shape {
	int B, Tq, Tk, H, KV, D;
};

struct attn {
	struct shape s;
	size_t nq, nk, nl;
	float *q, *k, *v, *dout, *out, *lse, *dq, *dk, *dv;
	int32_t *lo, *hi;
	double *rout, *rlse, *rdq, *rdk, *rdv;
};

/* Documents (Tq == Tk): docs == 0 is causal; otherwise documents of random
 * length (including length 1) that differ from row to row. */
static void make_documents(struct attn *a, int docs)
{
	int B = a->s.B, T = a->s.Tq;

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
			a->lo[(size_t)b * T + t] = start;
			a->hi[(size_t)b * T + t] = t;
		}
	}
}

/* Random contiguous key ranges: empty ones (lo > hi, some of them outside
 * the row's keys, as restricting a range to a block of keys leaves them),
 * whole rows, single keys, ranges starting one key into a block of 64
 * (the kernel's tile) and anything else.  Row 1's second 64 queries see
 * nothing, so a whole query block is empty, and neither does the last
 * query of row 0. */
static void make_ranges(struct attn *a)
{
	int Tq = a->s.Tq, Tk = a->s.Tk;

	for (int b = 0; b < a->s.B; b++) {
		for (int t = 0; t < Tq; t++) {
			int32_t *lo = &a->lo[(size_t)b * Tq + t];
			int32_t *hi = &a->hi[(size_t)b * Tq + t];
			int x = rnd_int(Tk), y = rnd_int(Tk);

			bool none = (b == 1 && t / 64 == 1) ||
				    (b == 0 && t == Tq - 1);

			switch (none ? 0 : rnd_int(8)) {
			case 0:
				*lo = rnd_int(Tk + 3) - 1;
				*hi = *lo - 1 - rnd_int(3);
				break;
			case 1:
				*lo = 0, *hi = Tk - 1;
				break;
			case 2:
				*lo = *hi = x;
				break;
			case 3:
				*lo = TITAN_MIN(x / 64 * 64 + 1, Tk - 1);
				*hi = TITAN_MAX(*lo, y);
				break;
			default:
				*lo = TITAN_MIN(x, y), *hi = TITAN_MAX(x, y);
				break;
			}
		}
	}
}

static void make_mask(struct attn *a, int docs)
{
	if (docs == RANGES)
		make_ranges(a);
	else
		make_documents(a, docs);
}

static int attn_init(struct attn *a, struct shape s, int docs, float amp)
{
	memset(a, 0, sizeof *a);
	a->s = s;
	a->nq = (size_t)s.B * s.Tq * s.H * s.D;
	a->nk = (size_t)s.B * s.Tk * s.KV * s.D;
	a->nl = (size_t)s.B * s.H * s.Tq;
	a->q = malloc(a->nq * sizeof(float));
	a->dout = malloc(a->nq * sizeof(float));
	a->out = malloc(a->nq * sizeof(float));
	a->dq = malloc(a->nq * sizeof(float));
	a->k = malloc(a->nk * sizeof(float));
	a->v = malloc(a->nk * sizeof(float));
	a->dk = malloc(a->nk * sizeof(float));
	a->dv = malloc(a->nk * sizeof(float));
	a->lse = malloc(a->nl * sizeof(float));
	a->lo = malloc((size_t)s.B * s.Tq * sizeof(int32_t));
	a->hi = malloc((size_t)s.B * s.Tq * sizeof(int32_t));
	a->rout = calloc(a->nq, sizeof(double));
	a->rdq = calloc(a->nq, sizeof(double));
	a->rdk = calloc(a->nk, sizeof(double));
	a->rdv = calloc(a->nk, sizeof(double));
	a->rlse = calloc(a->nl, sizeof(double));
	if (!a->q || !a->dout || !a->out || !a->dq || !a->k || !a->v || !a->dk ||
	    !a->dv || !a->lse || !a->lo || !a->hi || !a->rout || !a->rdq ||
	    !a->rdk || !a->rdv || !a->rlse)
		return -1;
	for (size_t i = 0; i < a->nq; i++) {
		a->q[i] = rnd() * amp;
		a->dout[i] = rnd();
	}
	for (size_t i = 0; i < a->nk; i++) {
		a->k[i] = rnd() * amp;
		a->v[i] = rnd();
	}
	make_mask(a, docs);
	return 0;
}

static void attn_free(struct attn *a)
{
	free(a->q), free(a->dout), free(a->out), free(a->dq);
	free(a->k), free(a->v), free(a->dk), free(a->dv);
	free(a->lse), free(a->lo), free(a->hi);
	free(a->rout), free(a->rdq), free(a->rdk), free(a->rdv), free(a->rlse);
}

/* Naive attention in double, one query at a time with its full softmax row
 * over the keys lo .. hi.  Fills rout, rlse and (when grads) rdq, rdk, rdv.
 * q, k and v may be given as doubles (finite differences) or taken from a. */
static void reference(struct attn *a, const double *qd, const double *kd,
		      const double *vd, int grads)
{
	struct shape s = a->s;
	int rep = s.H / s.KV;
	double scale = 1.0 / sqrt((double)s.D);
	double *p = malloc(((size_t)s.Tk + 1) * sizeof(double));
	double *dp = malloc(((size_t)s.Tk + 1) * sizeof(double));

	if (grads) {
		memset(a->rdq, 0, a->nq * sizeof(double));
		memset(a->rdk, 0, a->nk * sizeof(double));
		memset(a->rdv, 0, a->nk * sizeof(double));
	}
	for (int b = 0; b < s.B; b++)
	for (int h = 0; h < s.H; h++)
	for (int t = 0; t < s.Tq; t++) {
		int g = h / rep;
		int j0 = TITAN_MAX(a->lo[(size_t)b * s.Tq + t], 0);
		int j1 = TITAN_MIN(a->hi[(size_t)b * s.Tq + t], s.Tk - 1);
		size_t qi = (((size_t)b * s.Tq + t) * s.H + h) * s.D;
		double m = -INFINITY, sum = 0;

		for (int d = 0; d < s.D; d++)
			a->rout[qi + d] = 0;
		if (j0 > j1) {
			a->rlse[((size_t)b * s.H + h) * s.Tq + t] = -INFINITY;
			continue;
		}
		for (int j = j0; j <= j1; j++) {
			size_t kj = (((size_t)b * s.Tk + j) * s.KV + g) * s.D;
			double x = 0;
			for (int d = 0; d < s.D; d++)
				x += (qd ? qd[qi + d] : a->q[qi + d]) *
				     (kd ? kd[kj + d] : a->k[kj + d]);
			p[j] = x * scale;
			m = fmax(m, p[j]);
		}
		for (int j = j0; j <= j1; j++)
			sum += p[j] = exp(p[j] - m);
		a->rlse[((size_t)b * s.H + h) * s.Tq + t] = m + log(sum);
		for (int j = j0; j <= j1; j++) {
			size_t kj = (((size_t)b * s.Tk + j) * s.KV + g) * s.D;
			p[j] /= sum;
			for (int d = 0; d < s.D; d++)
				a->rout[qi + d] += p[j] * (vd ? vd[kj + d] : a->v[kj + d]);
		}
		if (!grads)
			continue;
		double di = 0;
		for (int j = j0; j <= j1; j++) {
			size_t kj = (((size_t)b * s.Tk + j) * s.KV + g) * s.D;
			dp[j] = 0;
			for (int d = 0; d < s.D; d++)
				dp[j] += a->dout[qi + d] * a->v[kj + d];
			di += p[j] * dp[j];
		}
		for (int j = j0; j <= j1; j++) {
			size_t kj = (((size_t)b * s.Tk + j) * s.KV + g) * s.D;
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

/* max |x - ref| / max |ref| over the finite ref; equal values (-inf lse of
 * a query that sees nothing) count as no error, and a NaN as the worst. */
static double rel_err(const float *x, const double *ref, size_t n)
{
	double num = 0, den = 0;

	for (size_t i = 0; i < n; i++) {
		double e = x[i] == ref[i] ? 0 : fabs(x[i] - ref[i]);
		if (!(e <= num))
			num = e;
		if (isfinite(ref[i]))
			den = fmax(den, fabs(ref[i]));
	}
	return num / (den > 0 ? den : 1);
}

/* The same for two float arrays. */
static double rel_err_f(const float *x, const float *ref, size_t n)
{
	double num = 0, den = 0;

	for (size_t i = 0; i < n; i++) {
		double e = x[i] == ref[i] ? 0 : fabs((double)x[i] - ref[i]);
		if (!(e <= num))
			num = e;
		if (isfinite(ref[i]))
			den = fmax(den, fabs(ref[i]));
	}
	return num / (den > 0 ? den : 1);
}

static void run_kernels(struct attn *a)
{
	struct shape s = a->s;

	cpu_attention_forward(a->out, a->lse, a->q, a->k, a->v, a->lo, a->hi,
			      s.B, s.Tq, s.Tk, s.H, s.KV, s.D);
	cpu_attention_backward(a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v,
			       a->out, a->lse, a->lo, a->hi,
			       s.B, s.Tq, s.Tk, s.H, s.KV, s.D);
}

/* Queries that see no key: out and dq exactly 0, lse exactly -inf.
 * Returns how many such queries there are. */
static int check_empty(const struct attn *a)
{
	struct shape s = a->s;
	int n = 0, bad = 0;

	for (int b = 0; b < s.B; b++)
	for (int t = 0; t < s.Tq; t++) {
		size_t r = (size_t)b * s.Tq + t;

		if (TITAN_MAX(a->lo[r], 0) <= TITAN_MIN(a->hi[r], s.Tk - 1))
			continue;
		n++;
		for (int h = 0; h < s.H; h++) {
			const float *o = a->out + (r * s.H + h) * s.D;
			const float *g = a->dq + (r * s.H + h) * s.D;

			bad += a->lse[((size_t)b * s.H + h) * s.Tq + t] != -INFINITY;
			for (int d = 0; d < s.D; d++)
				bad += o[d] != 0 || g[d] != 0;
		}
	}
	CHECK(!bad, "%d values of queries that see no key are not 0 (lse -inf)",
	      bad);
	return n;
}

static void check_case(struct shape s, int docs, float amp)
{
	struct attn a;

	rng_state = 0x1234u + (uint64_t)s.Tq * 31 + (uint64_t)s.Tk * 17 +
		    (uint64_t)s.D * 7 + (uint64_t)(docs + 1);
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
	      "B=%d Tq=%d Tk=%d H=%d KV=%d D=%d docs=%d amp=%g: out %.2e "
	      "lse %.2e dq %.2e dk %.2e dv %.2e", s.B, s.Tq, s.Tk, s.H, s.KV,
	      s.D, docs, (double)amp, eo, el, eq, ek, ev);
	int empty = check_empty(&a);
	if (docs == RANGES)
		CHECK(empty > 0, "Tq=%d Tk=%d: no query without keys", s.Tq,
		      s.Tk);
	attn_free(&a);
}

/* The causal mask: Tq == Tk, lo = 0, hi = t. */
static void test_causal(void)
{
	static const struct shape shapes[] = {
		{ 1, 1, 1, 1, 1, 8 },      { 2, 7, 7, 4, 4, 8 },
		{ 2, 33, 33, 4, 2, 16 },   { 1, 130, 130, 4, 1, 16 },
		{ 2, 130, 130, 2, 2, 64 }, { 1, 64, 64, 2, 1, 64 },
		{ 1, 65, 65, 4, 2, 8 },    { 3, 33, 33, 4, 1, 64 },
		{ 1, 200, 200, 2, 2, 12 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++)
		check_case(shapes[i], 0, 1.0f);
}

/* Document masks: lo = the start of t's document, hi = t. */
static void test_documents(void)
{
	static const struct shape shapes[] = {
		{ 2, 7, 7, 4, 2, 8 },      { 3, 33, 33, 4, 1, 16 },
		{ 2, 130, 130, 4, 2, 16 }, { 2, 130, 130, 2, 1, 64 },
		{ 4, 97, 97, 2, 2, 8 },    { 2, 260, 260, 2, 1, 16 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++) {
		check_case(shapes[i], 3, 1.0f);
		check_case(shapes[i], 20, 1.0f);
	}
}

/* Random key ranges, fewer and more queries than keys. */
static void test_ranges(void)
{
	static const struct shape shapes[] = {
		{ 2, 48, 130, 4, 2, 16 },  { 2, 130, 48, 2, 1, 64 },
		{ 3, 65, 64, 4, 4, 8 },    { 2, 1, 200, 2, 1, 12 },
		{ 2, 200, 1, 2, 2, 8 },    { 2, 150, 150, 4, 2, 16 },
		{ 2, 129, 300, 2, 1, 32 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(shapes); i++)
		check_case(shapes[i], RANGES, 1.0f);
}

/* Large scores: the running max moves a lot between key blocks. */
static void test_peaky(void)
{
	check_case((struct shape){ 2, 150, 150, 4, 2, 16 }, 0, 6.0f);
	check_case((struct shape){ 2, 150, 150, 2, 1, 64 }, 4, 3.0f);
	check_case((struct shape){ 2, 90, 170, 2, 1, 16 }, RANGES, 5.0f);
}

/* Keys [off, off + n) of every row of a, as a contiguous [B, n, KV, D]. */
static float *key_part(const struct attn *a, const float *x, int off, int n)
{
	struct shape s = a->s;
	size_t row = (size_t)s.KV * s.D;
	float *y = malloc(((size_t)s.B * n * row + 1) * sizeof(float));

	if (!y)
		return NULL;
	for (int b = 0; b < s.B; b++)
		memcpy(y + (size_t)b * n * row,
		       x + ((size_t)b * s.Tk + off) * row,
		       (size_t)n * row * sizeof(float));
	return y;
}

/* What context parallel does with keys held in parts: keys split at
 * `split`, each part attended with the ranges intersected with it and
 * shifted to its start, the partial results merged by their lse; then the
 * backward of each part with the merged out and lse, dq summed over the
 * parts.  Must match one call over all the keys to fp32 rounding. */
static void check_split(struct shape s, int split)
{
	struct attn a;
	int n[2] = { split, s.Tk - split }, off[2] = { 0, split };
	size_t nlr = (size_t)s.B * s.Tq;
	float *po[2] = { 0 }, *pl[2] = { 0 }, *pk[2] = { 0 }, *pv[2] = { 0 };
	float *pdq[2] = { 0 }, *pdk[2] = { 0 }, *pdv[2] = { 0 };
	int32_t *plo[2] = { 0 }, *phi[2] = { 0 };
	float *out = NULL, *lse = NULL, *dq = NULL, *dk = NULL, *dv = NULL;

	rng_state = 0x5151u + (uint64_t)split;
	if (attn_init(&a, s, RANGES, 2.0f) < 0)
		goto oom;
	run_kernels(&a);
	out = malloc(a.nq * sizeof(float));
	lse = malloc(a.nl * sizeof(float));
	dq = calloc(a.nq, sizeof(float));
	dk = malloc(a.nk * sizeof(float));
	dv = malloc(a.nk * sizeof(float));
	if (!out || !lse || !dq || !dk || !dv)
		goto oom;
	for (int p = 0; p < 2; p++) {
		size_t nkp = (size_t)s.B * n[p] * s.KV * s.D + 1;

		po[p] = malloc(a.nq * sizeof(float));
		pl[p] = malloc(a.nl * sizeof(float));
		pdq[p] = malloc(a.nq * sizeof(float));
		pdk[p] = malloc(nkp * sizeof(float));
		pdv[p] = malloc(nkp * sizeof(float));
		pk[p] = key_part(&a, a.k, off[p], n[p]);
		pv[p] = key_part(&a, a.v, off[p], n[p]);
		plo[p] = malloc(nlr * sizeof(int32_t));
		phi[p] = malloc(nlr * sizeof(int32_t));
		if (!po[p] || !pl[p] || !pdq[p] || !pdk[p] || !pdv[p] ||
		    !pk[p] || !pv[p] || !plo[p] || !phi[p])
			goto oom;
		for (size_t r = 0; r < nlr; r++) {
			plo[p][r] = TITAN_MAX(a.lo[r], off[p]) - off[p];
			phi[p][r] = TITAN_MIN(a.hi[r], off[p] + n[p] - 1) - off[p];
		}
		cpu_attention_forward(po[p], pl[p], a.q, pk[p], pv[p], plo[p],
				      phi[p], s.B, s.Tq, n[p], s.H, s.KV, s.D);
	}

	/* lse = logaddexp(lse0, lse1); out = sum of out_p exp(lse_p - lse) */
	for (int b = 0; b < s.B; b++)
	for (int h = 0; h < s.H; h++)
	for (int t = 0; t < s.Tq; t++) {
		size_t li = ((size_t)b * s.H + h) * s.Tq + t;
		size_t oi = (((size_t)b * s.Tq + t) * s.H + h) * s.D;
		double l0 = pl[0][li], l1 = pl[1][li], m = fmax(l0, l1);
		double l = m == -INFINITY ? m :
			   m + log(exp(l0 - m) + exp(l1 - m));
		double w0 = l0 == -INFINITY ? 0 : exp(l0 - l);
		double w1 = l1 == -INFINITY ? 0 : exp(l1 - l);

		lse[li] = (float)l;
		for (int d = 0; d < s.D; d++)
			out[oi + d] = (float)(po[0][oi + d] * w0 +
					      po[1][oi + d] * w1);
	}
	double eo = rel_err_f(out, a.out, a.nq);
	double el = rel_err_f(lse, a.lse, a.nl);
	CHECK(eo < 2e-6 && el < 2e-6, "split at %d of %d: merged forward: "
	      "out %.2e lse %.2e", split, s.Tk, eo, el);

	size_t row = (size_t)s.KV * s.D;
	for (int p = 0; p < 2; p++) {
		cpu_attention_backward(pdq[p], pdk[p], pdv[p], a.dout, a.q,
				       pk[p], pv[p], out, lse, plo[p], phi[p],
				       s.B, s.Tq, n[p], s.H, s.KV, s.D);
		for (size_t i = 0; i < a.nq; i++)
			dq[i] += pdq[p][i];
		for (int b = 0; b < s.B; b++) {
			size_t at = ((size_t)b * s.Tk + off[p]) * row;
			size_t len = (size_t)n[p] * row * sizeof(float);

			memcpy(dk + at, pdk[p] + (size_t)b * n[p] * row, len);
			memcpy(dv + at, pdv[p] + (size_t)b * n[p] * row, len);
		}
	}
	double eq = rel_err_f(dq, a.dq, a.nq);
	double ek = rel_err_f(dk, a.dk, a.nk);
	double ev = rel_err_f(dv, a.dv, a.nk);
	CHECK(eq < 5e-6 && ek < 5e-6 && ev < 5e-6, "split at %d of %d: "
	      "backward: dq %.2e dk %.2e dv %.2e", split, s.Tk, eq, ek, ev);
	goto done;
oom:
	CHECK(0, "out of memory");
done:
	for (int p = 0; p < 2; p++) {
		free(po[p]), free(pl[p]), free(pdq[p]), free(pdk[p]);
		free(pdv[p]), free(pk[p]), free(pv[p]), free(plo[p]);
		free(phi[p]);
	}
	free(out), free(lse), free(dq), free(dk), free(dv);
	attn_free(&a);
}

/* Splits on and off the 64-key tile, and one whose first part is shorter
 * than a tile. */
static void test_split_merge(void)
{
	check_split((struct shape){ 2, 48, 130, 4, 2, 16 }, 64);
	check_split((struct shape){ 2, 48, 130, 4, 2, 16 }, 77);
	check_split((struct shape){ 2, 150, 200, 2, 1, 32 }, 100);
	check_split((struct shape){ 2, 130, 90, 2, 2, 8 }, 13);
}

/* Gradients against central differences of sum(out * dout) through the
 * double reference: checks the gradient formulas, not just agreement of
 * two implementations of them. */
static void check_finite_differences(struct shape s, int docs)
{
	struct attn a;

	rng_state = 99;
	if (attn_init(&a, s, docs, 1.5f) < 0) {
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
		CHECK(worst / big < 1e-4, "Tq=%d Tk=%d docs=%d: %s: finite "
		      "differences off by %.2e (max %.2e)", s.Tq, s.Tk, docs,
		      w == 0 ? "dq" : w == 1 ? "dk" : "dv", worst / big, big);
	}
	for (int w = 0; w < 3; w++)
		free(x[w]);
	attn_free(&a);
}

static void test_finite_differences(void)
{
	check_finite_differences((struct shape){ 2, 9, 9, 4, 2, 8 }, 2);
	check_finite_differences((struct shape){ 2, 9, 13, 4, 2, 8 }, RANGES);
}

/* The same inputs give the same bits with 1, 2, 3 and 8 threads (the last
 * two take the backward's two-pass schedule, the first two its one-pass
 * one). */
static void check_determinism(struct shape s, int docs)
{
	struct attn a;
	float *keep[5];
	int nthreads[] = { 1, 2, 3, 8 }, saved = omp_get_max_threads();

	rng_state = 7;
	if (attn_init(&a, s, docs, 2.0f) < 0) {
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
				      "Tq=%d Tk=%d docs=%d: output %d differs "
				      "between 1 and %d threads", s.Tq, s.Tk,
				      docs, r, nthreads[c]);
		}
	}
	omp_set_num_threads(saved);
	for (int r = 0; r < 5; r++)
		free(keep[r]);
	attn_free(&a);
}

static void test_determinism(void)
{
	check_determinism((struct shape){ 2, 300, 300, 4, 2, 16 }, 4);
	check_determinism((struct shape){ 2, 300, 200, 4, 2, 16 }, RANGES);
}

int main(void)
{
	RUN(test_causal);
	RUN(test_documents);
	RUN(test_ranges);
	RUN(test_peaky);
	RUN(test_split_merge);
	RUN(test_finite_differences);
	RUN(test_determinism);
	return check_done();
}
