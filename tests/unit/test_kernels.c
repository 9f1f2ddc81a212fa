/* test_kernels.c - the CPU backend's kernels against naive double references.
 *
 * Forwards are compared with a direct double-precision transcription of the
 * op; backwards with central finite differences of that double reference
 * (loss = sum(g * out) for a random g), so the analytic gradient is checked
 * independently of the kernel's own formula.  Shapes are deliberately odd
 * (7, 13, 37, ...) to catch vector-remainder bugs.  Determinism is checked by
 * running a kernel at 1 and 2 threads and comparing bits. */
#include "core/base.h"

#include <float.h>
#include <math.h>
#include <omp.h>

#include "check.h"
#include "core/half.h"
#include "cpu/cpu.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1): xorshift64*, enough for test data. */
static float frand(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	uint64_t r = rng_state * 0x2545f4914f6cdd1dull;
	return (float)((double)(r >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static float *frandn(size_t n, float amp)
{
	float *p = malloc(n * sizeof(*p));

	for (size_t i = 0; i < n && p; i++)
		p[i] = frand() * amp;
	return p;
}

static double *to_double(const float *x, size_t n)
{
	double *d = malloc(n * sizeof(*d));

	for (size_t i = 0; i < n && d; i++)
		d[i] = x[i];
	return d;
}

static int close_to(double got, double want, double atol, double rtol)
{
	return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Index of the first element of got that is not close to want, or -1. */
static long first_mismatch(const float *got, const double *want, size_t n,
			   double atol, double rtol)
{
	for (size_t i = 0; i < n; i++)
		if (!close_to(got[i], want[i], atol, rtol) || isnan(got[i]))
			return (long)i;
	return -1;
}

#define CHECK_CLOSE(got, want, n, atol, rtol, what)                              \
	do {                                                                     \
		long bad_ = first_mismatch(got, want, n, atol, rtol);            \
		CHECK(bad_ < 0, "%s[%ld]: got %.9g want %.9g", what, bad_,       \
		      bad_ < 0 ? 0.0 : (double)(got)[bad_],                      \
		      bad_ < 0 ? 0.0 : (want)[bad_]);                            \
	} while (0)

/* A double reference forward: reads its inputs through ctx, writes y. */
typedef void (*ref_fn)(void *ctx, double *y);

/* d(sum(g * f()))/d(x[i]) by central differences, x being one of the arrays
 * ctx points to. */
static void fd_grad(ref_fn f, void *ctx, double *x, size_t nx, const double *g,
		    size_t ny, double *grad)
{
	const double h = 1e-6;
	double *y = malloc(ny * sizeof(*y));

	for (size_t i = 0; i < nx; i++) {
		double save = x[i], lp = 0, lm = 0;

		x[i] = save + h;
		f(ctx, y);
		for (size_t j = 0; j < ny; j++)
			lp += g[j] * y[j];
		x[i] = save - h;
		f(ctx, y);
		for (size_t j = 0; j < ny; j++)
			lm += g[j] * y[j];
		x[i] = save;
		grad[i] = (lp - lm) / (2 * h);
	}
	free(y);
}

/* ---- matmul ---- */

/* out[N,OC] = inp @ w^T */
static void ref_matmul(double *out, const float *inp, const float *w, int N,
		       int IC, int OC)
{
	for (int n = 0; n < N; n++)
		for (int o = 0; o < OC; o++) {
			double s = 0;
			for (int i = 0; i < IC; i++)
				s += (double)inp[n * IC + i] * w[o * IC + i];
			out[n * OC + o] = s;
		}
}

/* dinp[N,IC] = dout @ w */
static void ref_matmul_dinp(double *dinp, const float *dout, const float *w,
			    int N, int IC, int OC)
{
	for (int n = 0; n < N; n++)
		for (int i = 0; i < IC; i++) {
			double s = 0;
			for (int o = 0; o < OC; o++)
				s += (double)dout[n * OC + o] * w[o * IC + i];
			dinp[n * IC + i] = s;
		}
}

/* dw[OC,IC] = dw0 + dout^T @ inp */
static void ref_matmul_dweight(double *dw, const float *dw0, const float *dout,
			       const float *inp, int N, int IC, int OC)
{
	for (int o = 0; o < OC; o++)
		for (int i = 0; i < IC; i++) {
			double s = dw0[o * IC + i];
			for (int n = 0; n < N; n++)
				s += (double)dout[n * OC + o] * inp[n * IC + i];
			dw[o * IC + i] = s;
		}
}

static void test_matmul(void)
{
	const int N = 19, IC = 37, OC = 13;
	float *inp = frandn(N * IC, 1), *w = frandn(OC * IC, 1);
	float *out = frandn(N * OC, 1), *dout = frandn(N * OC, 1);
	float *dinp = frandn(N * IC, 1), *dw = frandn(OC * IC, 1);
	float *dinp0 = malloc(N * IC * sizeof(float));
	float *dw0 = malloc(OC * IC * sizeof(float));
	double *want = malloc(N * IC * sizeof(double));
	double *want_dw = malloc(OC * IC * sizeof(double));

	/* out = inp @ w^T, then out += inp @ w^T. */
	ref_matmul(want, inp, w, N, IC, OC);
	cpu_matmul_forward(out, inp, w, N, IC, OC, false);
	CHECK_CLOSE(out, want, (size_t)N * OC, 1e-5, 1e-5, "out");
	for (int i = 0; i < N * OC; i++)
		want[i] *= 2;
	cpu_matmul_forward(out, inp, w, N, IC, OC, true);
	CHECK_CLOSE(out, want, (size_t)N * OC, 1e-5, 1e-5, "out (accumulate)");

	/* dinp = dout @ w overwritten, dweight += dout^T @ inp. */
	memcpy(dw0, dw, OC * IC * sizeof(float));
	ref_matmul_dinp(want, dout, w, N, IC, OC);
	ref_matmul_dweight(want_dw, dw0, dout, inp, N, IC, OC);
	cpu_matmul_backward(dinp, dw, dout, inp, w, N, IC, OC, false);
	CHECK_CLOSE(dinp, want, (size_t)N * IC, 1e-5, 1e-5, "dinp");
	CHECK_CLOSE(dw, want_dw, (size_t)OC * IC, 1e-5, 1e-5, "dweight");

	/* accumulate_dinp with dweight NULL: dinp doubles, dweight untouched. */
	memcpy(dw0, dw, OC * IC * sizeof(float));
	for (int i = 0; i < N * IC; i++)
		want[i] *= 2;
	cpu_matmul_backward(dinp, NULL, dout, inp, w, N, IC, OC, true);
	CHECK_CLOSE(dinp, want, (size_t)N * IC, 1e-5, 1e-5, "dinp (accumulate)");
	CHECK(!memcmp(dw, dw0, OC * IC * sizeof(float)), "dweight changed");

	/* dinp NULL: only dweight moves. */
	memcpy(dinp0, dinp, N * IC * sizeof(float));
	ref_matmul_dweight(want_dw, dw0, dout, inp, N, IC, OC);
	cpu_matmul_backward(NULL, dw, dout, inp, w, N, IC, OC, false);
	CHECK_CLOSE(dw, want_dw, (size_t)OC * IC, 1e-5, 1e-5, "dweight (dinp NULL)");
	CHECK(!memcmp(dinp, dinp0, N * IC * sizeof(float)), "dinp changed");

	free(inp), free(w), free(out), free(dout), free(dinp), free(dw);
	free(dinp0), free(dw0), free(want), free(want_dw);
}

/* ---- rmsnorm ---- */

struct rms_ctx {
	double *x, *w;
	int N, C;
	double eps;
};

static void ref_rmsnorm(void *p, double *y)
{
	struct rms_ctx *c = p;

	for (int n = 0; n < c->N; n++) {
		const double *x = c->x + n * c->C;
		double ss = 0;

		for (int i = 0; i < c->C; i++)
			ss += x[i] * x[i];
		double r = 1 / sqrt(ss / c->C + c->eps);
		for (int i = 0; i < c->C; i++)
			y[n * c->C + i] = x[i] * r * c->w[i];
	}
}

static void test_rmsnorm(void)
{
	const int N = 5, C = 70;
	const float eps = 1e-5f;
	size_t nx = (size_t)N * C;
	float *x = frandn(nx, 2), *w = frandn(C, 1), *out = malloc(nx * 4);
	float *rstd = malloc(N * 4), *dout = frandn(nx, 1);
	float *dinp = frandn(nx, 1), *dw = frandn(C, 1);
	struct rms_ctx c = { to_double(x, nx), to_double(w, C), N, C, eps };
	double *want = malloc(nx * sizeof(double)), *g = to_double(dout, nx);
	double *gx = malloc(nx * sizeof(double)), *gw = malloc(C * sizeof(double));

	ref_rmsnorm(&c, want);
	cpu_rmsnorm_forward(out, rstd, x, w, N, C, eps);
	CHECK_CLOSE(out, want, nx, 1e-6, 1e-5, "out");
	for (int n = 0; n < N; n++) {
		double ss = 0;
		for (int i = 0; i < C; i++)
			ss += c.x[n * C + i] * c.x[n * C + i];
		want[n] = 1 / sqrt(ss / C + eps);
	}
	CHECK_CLOSE(rstd, want, N, 0, 1e-5, "rstd");

	/* One gradient at a time from zero, the other pointer NULL... */
	fd_grad(ref_rmsnorm, &c, c.x, nx, g, nx, gx);
	fd_grad(ref_rmsnorm, &c, c.w, C, g, nx, gw);
	float *dx_only = calloc(nx, 4), *dw_only = calloc(C, 4);
	cpu_rmsnorm_backward(dx_only, NULL, dout, x, w, rstd, N, C);
	cpu_rmsnorm_backward(NULL, dw_only, dout, x, w, rstd, N, C);
	CHECK_CLOSE(dx_only, gx, nx, 1e-4, 1e-4, "dinp (dweight NULL)");
	CHECK_CLOSE(dw_only, gw, C, 1e-4, 1e-4, "dweight (dinp NULL)");
	free(dx_only), free(dw_only);

	/* ...then both, accumulating onto what was there. */
	for (size_t i = 0; i < nx; i++)
		gx[i] += dinp[i];
	for (int i = 0; i < C; i++)
		gw[i] += dw[i];
	cpu_rmsnorm_backward(dinp, dw, dout, x, w, rstd, N, C);
	CHECK_CLOSE(dinp, gx, nx, 1e-4, 1e-4, "dinp");
	CHECK_CLOSE(dw, gw, C, 1e-4, 1e-4, "dweight");

	free(x), free(w), free(out), free(rstd), free(dout), free(dinp), free(dw);
	free(c.x), free(c.w), free(want), free(g), free(gx), free(gw);
}

/* ---- rope ---- */

struct rope_ctx {
	double *x;
	const int32_t *pos;
	const float *cos_tab, *sin_tab;
	int N, heads, D;
};

static void ref_rope(void *p, double *y)
{
	struct rope_ctx *c = p;
	int half = c->D / 2;

	for (int n = 0; n < c->N; n++)
		for (int h = 0; h < c->heads; h++)
			for (int i = 0; i < half; i++) {
				size_t at = ((size_t)n * c->heads + h) * c->D + 2 * i;
				double co = c->cos_tab[c->pos[n] * half + i];
				double si = c->sin_tab[c->pos[n] * half + i];
				double x0 = c->x[at], x1 = c->x[at + 1];

				y[at] = x0 * co - x1 * si;
				y[at + 1] = x0 * si + x1 * co;
			}
}

static void test_rope(void)
{
	const int N = 6, heads = 3, D = 10, max_pos = 8, half = D / 2;
	size_t nx = (size_t)N * heads * D;
	float cos_tab[8 * 5], sin_tab[8 * 5];
	int32_t pos[6];
	float *x = frandn(nx, 1), *dx = frandn(nx, 1);
	struct rope_ctx c = { to_double(x, nx), pos, cos_tab, sin_tab, N, heads, D };
	double *want = malloc(nx * sizeof(double)), *g = to_double(dx, nx);
	double *gx = malloc(nx * sizeof(double));

	for (int p = 0; p < max_pos; p++)
		for (int i = 0; i < half; i++) {
			double freq = pow(10000.0, -2.0 * i / D);
			cos_tab[p * half + i] = (float)cos(p * freq);
			sin_tab[p * half + i] = (float)sin(p * freq);
		}
	for (int n = 0; n < N; n++)
		pos[n] = (n * 5 + 3) % max_pos;

	ref_rope(&c, want);
	cpu_rope_forward(x, pos, cos_tab, sin_tab, N, heads, D);
	CHECK_CLOSE(x, want, nx, 1e-6, 1e-5, "x");

	fd_grad(ref_rope, &c, c.x, nx, g, nx, gx);
	cpu_rope_backward(dx, pos, cos_tab, sin_tab, N, heads, D);
	CHECK_CLOSE(dx, gx, nx, 1e-5, 1e-5, "dx");

	free(x), free(dx), free(c.x), free(want), free(g), free(gx);
}

/* ---- swiglu ---- */

struct swiglu_ctx {
	double *a, *b;
	size_t n;
};

static void ref_swiglu(void *p, double *y)
{
	struct swiglu_ctx *c = p;

	for (size_t i = 0; i < c->n; i++)
		y[i] = c->a[i] / (1 + exp(-c->a[i])) * c->b[i];
}

static void test_swiglu(void)
{
	const size_t n = 1037;
	float *a = frandn(n, 6), *b = frandn(n, 2), *out = malloc(n * 4);
	float *dout = frandn(n, 1), *da = malloc(n * 4), *db = malloc(n * 4);
	struct swiglu_ctx c = { to_double(a, n), to_double(b, n), n };
	double *want = malloc(n * sizeof(double)), *g = to_double(dout, n);
	double *ga = malloc(n * sizeof(double)), *gb = malloc(n * sizeof(double));

	a[0] = -100, c.a[0] = -100; /* exp(100) overflows float: silu is -0 */
	a[1] = 100, c.a[1] = 100;
	ref_swiglu(&c, want);
	cpu_swiglu_forward(out, a, b, n);
	CHECK_CLOSE(out, want, n, 1e-6, 1e-5, "out");

	fd_grad(ref_swiglu, &c, c.a, n, g, n, ga);
	fd_grad(ref_swiglu, &c, c.b, n, g, n, gb);
	cpu_swiglu_backward(da, db, dout, a, b, n);
	CHECK_CLOSE(da, ga, n, 1e-5, 1e-4, "da");
	CHECK_CLOSE(db, gb, n, 1e-5, 1e-4, "db");

	free(a), free(b), free(out), free(dout), free(da), free(db);
	free(c.a), free(c.b), free(want), free(g), free(ga), free(gb);
}

/* Past one span of the parallel loop: the analytic derivative in double. */
static void test_swiglu_long(void)
{
	const size_t n = 3 * 4096 + 77;
	float *a = frandn(n, 8), *b = frandn(n, 2), *dout = frandn(n, 1);
	float *out = malloc(n * 4), *da = malloc(n * 4), *db = malloc(n * 4);
	double *want = malloc(3 * n * sizeof(double));

	for (size_t i = 0; i < n; i++) {
		double x = a[i], sig = 1 / (1 + exp(-x));

		want[i] = x * sig * b[i];
		want[n + i] = dout[i] * b[i] * sig * (1 + x * (1 - sig));
		want[2 * n + i] = dout[i] * x * sig;
	}
	cpu_swiglu_forward(out, a, b, n);
	cpu_swiglu_backward(da, db, dout, a, b, n);
	CHECK_CLOSE(out, want, n, 1e-6, 1e-5, "out");
	CHECK_CLOSE(da, want + n, n, 1e-6, 1e-5, "da");
	CHECK_CLOSE(db, want + 2 * n, n, 1e-6, 1e-5, "db");
	free(a), free(b), free(dout), free(out), free(da), free(db), free(want);
}

/* ---- embedding ---- */

static void test_embedding(void)
{
	const int V = 11, C = 70, N = 23;
	uint32_t ids[23];
	float *table = frandn((size_t)V * C, 1), *out = malloc((size_t)N * C * 4);
	float *dout = frandn((size_t)N * C, 1), *dtable = frandn((size_t)V * C, 1);
	double *want = to_double(dtable, (size_t)V * C);

	for (int n = 0; n < N; n++)
		ids[n] = (uint32_t)(n * 7 % V); /* every row repeats */
	cpu_embedding_forward(out, ids, table, N, C);
	for (int n = 0; n < N; n++)
		CHECK(!memcmp(out + n * C, table + ids[n] * C, C * 4), "row %d", n);

	for (int n = 0; n < N; n++)
		for (int i = 0; i < C; i++)
			want[ids[n] * C + i] += dout[n * C + i];
	cpu_embedding_backward(dtable, dout, ids, N, C);
	CHECK_CLOSE(dtable, want, (size_t)V * C, 1e-6, 1e-6, "dtable");

	free(table), free(out), free(dout), free(dtable), free(want);
}

/* ---- cross entropy ---- */

static void test_cross_entropy(void)
{
	const int N = 7, V = 1001;
	const float dscale = 1.0f / N;
	size_t nl = (size_t)N * V;
	float *logits = frandn(nl, 5), *copy = malloc(nl * 4), loss[7], loss0[7];
	uint32_t labels[7];
	double want_loss[7], *want = malloc(nl * sizeof(double));

	for (int j = 0; j < V; j++)
		logits[3 * V + j] += 1000; /* naive exp would overflow */
	for (int n = 0; n < N; n++)
		labels[n] = (uint32_t)((n * 389 + 17) % V);
	labels[6] = V - 1;
	memcpy(copy, logits, nl * 4);

	for (int n = 0; n < N; n++) {
		const float *x = logits + (size_t)n * V;
		double mx = -INFINITY, s = 0;

		for (int j = 0; j < V; j++)
			mx = fmax(mx, x[j]);
		for (int j = 0; j < V; j++)
			s += exp(x[j] - mx);
		want_loss[n] = mx + log(s) - x[labels[n]];
		for (int j = 0; j < V; j++)
			want[n * V + j] = (exp(x[j] - mx) / s - (j == (int)labels[n])) * dscale;
	}

	cpu_cross_entropy(loss0, logits, labels, N, V, 0.0f);
	CHECK(!memcmp(logits, copy, nl * 4), "dscale 0 changed the logits");
	CHECK_CLOSE(loss0, want_loss, N, 1e-5, 1e-5, "loss (no gradient)");

	cpu_cross_entropy(loss, logits, labels, N, V, dscale);
	CHECK(!memcmp(loss, loss0, sizeof(loss)), "loss depends on dscale");
	CHECK_CLOSE(logits, want, nl, 1e-7, 1e-5, "dlogits");

	free(logits), free(copy), free(want);
}

/* ---- loss parallel and ring attention's merge ---- */

/* A vocabulary of V cut into P slices of uneven width, each rank's logits
 * a [N, width] block of their own: the max, then the sums, then finish per
 * slice, with the reductions over the ranks between them done here, must
 * give cross_entropy's loss and gradient on the whole rows.  log(rsum) +
 * rmax - rlab rounds at rmax's magnitude where cross_entropy subtracts
 * first, so the loss of the row shifted by 100 is allowed that rounding. */
static void check_vocab_split(int P, float dscale)
{
	enum { N = 7, V = 1001, MAXP = 4 };
	size_t nl = (size_t)N * V;
	float *logits = frandn(nl, 5), *whole = malloc(nl * 4), *grad = malloc(nl * 4);
	float *part[MAXP] = { 0 }, loss[N], want[N];
	float rmax[N], rsum[N], rlab[N], pmax[N], psum[N], plab[N];
	uint32_t labels[N], v0[MAXP + 1];
	double *want_grad = malloc(nl * sizeof(double));

	if (!logits || !whole || !grad || !want_grad)
		goto oom;
	for (int p = 0; p <= P; p++)
		v0[p] = (uint32_t)((size_t)V * p / P + (p > 0 && p < P ? 3 * p : 0));
	for (int j = 0; j < V; j++)
		logits[3 * V + j] += 100;   /* exp of it overflows float */
	for (int n = 0; n < N; n++)
		labels[n] = (uint32_t)((n * 389 + 17) % V);
	labels[0] = 0, labels[1] = V - 1, labels[2] = v0[1] % V, labels[4] = v0[1] - 1;
	memcpy(whole, logits, nl * 4);
	cpu_cross_entropy(want, whole, labels, N, V, dscale);
	for (size_t i = 0; i < nl; i++)
		want_grad[i] = dscale ? whole[i] : logits[i];

	for (int p = 0; p < P; p++) {
		int w = (int)(v0[p + 1] - v0[p]);

		part[p] = malloc((size_t)N * w * 4);
		if (!part[p])
			goto oom;
		for (int n = 0; n < N; n++)
			memcpy(part[p] + (size_t)n * w, logits + (size_t)n * V + v0[p],
			       (size_t)w * 4);
	}
	for (int n = 0; n < N; n++)
		rmax[n] = -INFINITY, rsum[n] = 0, rlab[n] = 0;
	for (int p = 0; p < P; p++) {
		cpu_vocab_max(pmax, part[p], N, (int)(v0[p + 1] - v0[p]));
		for (int n = 0; n < N; n++)
			rmax[n] = fmaxf(rmax[n], pmax[n]);
	}
	for (int p = 0; p < P; p++) {
		cpu_vocab_sumexp(psum, plab, part[p], rmax, labels, v0[p], N,
				 (int)(v0[p + 1] - v0[p]));
		for (int n = 0; n < N; n++)
			rsum[n] += psum[n], rlab[n] += plab[n];
	}
	for (int p = 0; p < P; p++) {
		int w = (int)(v0[p + 1] - v0[p]);

		cpu_vocab_finish(loss, part[p], rmax, rsum, rlab, labels, v0[p], N, w, dscale);
		for (int n = 0; n < N; n++) {
			double tol = 1e-6 * fabs(want[n]) + 2 * FLT_EPSILON * fabs(rmax[n]);

			CHECK(fabs((double)loss[n] - want[n]) <= tol,
			      "%d slices, dscale %g: slice %d row %d: loss %.9g want %.9g", P,
			      dscale, p, n, loss[n], want[n]);
			memcpy(grad + (size_t)n * V + v0[p], part[p] + (size_t)n * w,
			       (size_t)w * 4);
		}
	}
	if (dscale)
		CHECK_CLOSE(grad, want_grad, nl, 1e-6, 0, "dlogits");
	else
		CHECK(!memcmp(grad, logits, nl * 4), "%d slices: dscale 0 changed the logits", P);
	goto done;
oom:
	CHECK(0, "out of memory");
done:
	for (int p = 0; p < P; p++)
		free(part[p]);
	free(logits), free(whole), free(grad), free(want_grad);
}

static void test_vocab_parallel(void)
{
	const int slices[] = { 1, 2, 4 };

	for (size_t i = 0; i < ARRAY_SIZE(slices); i++) {
		check_vocab_split(slices[i], 0.0f);
		check_vocab_split(slices[i], 1.0f / 7);
		check_vocab_split(slices[i], 1.0f);
	}
}

/* Keys t0..t0+n-1 of each row of x[B, Tk, KV, D]. */
static float *key_rows(const float *x, int B, int Tk, int KV, int D, int t0, int n)
{
	size_t row = (size_t)KV * D;
	float *y = malloc((size_t)B * n * row * sizeof(float) + 1);

	for (int b = 0; b < B && y; b++)
		memcpy(y + (size_t)b * n * row, x + ((size_t)b * Tk + t0) * row,
		       (size_t)n * row * sizeof(float));
	return y;
}

/* Largest |got - want| over the largest |want|; infinities must agree. */
static double merge_err(const float *got, const float *want, size_t n)
{
	double d = 0, m = 1e-30;

	for (size_t i = 0; i < n; i++) {
		if (isinf(want[i]) || isinf(got[i])) {
			if (got[i] != want[i])
				return INFINITY;
			continue;
		}
		d = fmax(d, fabs((double)got[i] - want[i]));
		m = fmax(m, fabs((double)want[i]));
	}
	return d / m;
}

/* Attention over the keys split at `split`, each part with the queries'
 * ranges cut to it and shifted to its start, merged into a running result
 * that starts empty (out 0, lse -inf): attention over all the keys.  The
 * causal mask leaves the queries before the split nothing in the second
 * part, and one query sees no key at all. */
static void check_merge_split(int split)
{
	enum { B = 2, T = 45, H = 4, KV = 2, D = 16 };
	size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KV * D;
	size_t nl = (size_t)B * H * T, nr = (size_t)B * T;
	int n[2] = { split, T - split }, off[2] = { 0, split };
	float *q = frandn(nq, 2), *k = frandn(nk, 2), *v = frandn(nk, 1);
	float *want = malloc(nq * 4), *want_lse = malloc(nl * 4);
	float *out = calloc(nq, 4), *lse = malloc(nl * 4);
	float *po = malloc(nq * 4), *pl = malloc(nl * 4);
	int32_t lo[B * T], hi[B * T], plo[B * T], phi[B * T];

	if (!q || !k || !v || !want || !want_lse || !out || !lse || !po || !pl)
		goto oom;
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			lo[b * T + t] = b == 1 && t >= 30 ? 30 : 0;   /* a second document */
			hi[b * T + t] = t;
		}
	lo[T + 7] = 8;   /* sees nothing */
	cpu_attention_forward(want, want_lse, q, k, v, lo, hi, B, T, T, H, KV, D);
	for (size_t i = 0; i < nl; i++)
		lse[i] = -INFINITY;
	for (int p = 0; p < 2; p++) {
		float *pk = key_rows(k, B, T, KV, D, off[p], n[p]);
		float *pv = key_rows(v, B, T, KV, D, off[p], n[p]);

		if (!pk || !pv) {
			free(pk), free(pv);
			goto oom;
		}
		for (size_t r = 0; r < nr; r++) {
			plo[r] = TITAN_MAX(lo[r], off[p]) - off[p];
			phi[r] = TITAN_MIN(hi[r], off[p] + n[p] - 1) - off[p];
		}
		cpu_attention_forward(po, pl, q, pk, pv, plo, phi, B, T, n[p], H, KV, D);
		cpu_attention_merge(out, lse, po, pl, B, T, H, D);
		free(pk), free(pv);
	}
	double eo = merge_err(out, want, nq), el = merge_err(lse, want_lse, nl);

	CHECK(eo <= 1e-6 && el <= 1e-6, "split at %d of %d: out %.2e, lse %.2e", split, T, eo,
	      el);
	goto done;
oom:
	CHECK(0, "out of memory");
done:
	free(q), free(k), free(v), free(want), free(want_lse), free(out), free(lse);
	free(po), free(pl);
}

static void test_attention_merge(void)
{
	enum { B = 2, T = 9, H = 3, D = 5 };
	size_t nq = (size_t)B * T * H * D, nl = (size_t)B * H * T;
	float *out = frandn(nq, 1), *o = frandn(nq, 1), *lse = frandn(nl, 3);
	float *lse_out = frandn(nl, 3), *out0 = malloc(nq * 4), *lse0 = malloc(nl * 4);
	int moved = 0, kept = 0;

	check_merge_split(20);
	check_merge_split(1);
	check_merge_split(44);

	/* A block with lse -inf for some queries (garbage in its out):
	 * those keep their out and lse to the bit, the running -inf ones too. */
	for (size_t i = 0; i < nl; i += 2)
		lse[i] = -INFINITY;
	lse_out[4] = -INFINITY;
	memcpy(out0, out, nq * 4);
	memcpy(lse0, lse_out, nl * 4);
	cpu_attention_merge(out, lse_out, o, lse, B, T, H, D);
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++)
			for (int h = 0; h < H; h++) {
				size_t il = ((size_t)b * H + h) * T + t;
				size_t io = (((size_t)b * T + t) * H + h) * D;
				double l = fmax(lse0[il], lse[il]);

				if (lse[il] != -INFINITY) {
					l += log(exp(lse0[il] - l) + exp(lse[il] - l));
					moved += fabs(lse_out[il] - l) > 1e-6 * fmax(1, fabs(l));
					continue;
				}
				kept++;
				moved += memcmp(out + io, out0 + io, D * 4) != 0;
				moved += memcmp(&lse_out[il], &lse0[il], 4) != 0;
			}
	CHECK(kept == (int)(nl + 1) / 2 && moved == 0, "%d of %d kept rows moved", moved, kept);
	free(out), free(o), free(lse), free(lse_out), free(out0), free(lse0);
}

/* ---- elementwise and reductions ---- */

static void test_add_inplace(void)
{
	const size_t n = 100003;
	float *y = frandn(n, 1), *x = frandn(n, 1), *y0 = malloc(n * 4);
	int bad = 0;

	memcpy(y0, y, n * 4);
	cpu_add_inplace(y, x, n);
	for (size_t i = 0; i < n; i++)
		bad += y[i] != y0[i] + x[i];
	CHECK(bad == 0, "add_inplace: %d wrong", bad);
	free(y), free(x), free(y0);
}

static void test_sumsq(void)
{
	const size_t n = 3000017;
	float *x = frandn(n, 3);
	double want = 0, one, two;
	int saved = omp_get_max_threads();

	for (size_t i = 0; i < n; i++)
		want += (double)x[i] * x[i];
	omp_set_num_threads(1);
	one = cpu_sumsq(x, n);
	omp_set_num_threads(2);
	two = cpu_sumsq(x, n);
	omp_set_num_threads(saved);
	CHECK(close_to(one, want, 0, 1e-12), "got %.17g want %.17g", one, want);
	CHECK(!memcmp(&one, &two, sizeof(one)), "1 thread %.17g, 2 threads %.17g",
	      one, two);
	CHECK(cpu_sumsq(x, 0) == 0, "empty");
	want = 0;
	for (size_t i = 0; i < 13; i++)
		want += (double)x[i] * x[i];
	CHECK(close_to(cpu_sumsq(x, 13), want, 0, 1e-15), "13 floats");
	free(x);
}

/* torch/optim/adamw.py, _single_tensor_adamw (1.13), line by line: Python
 * scalars in double, each tensor op in fp32 with its scalar cast to float. */
static void torch_adamw(float *p, const float *g, float *m, float *v, size_t n,
			double lr, double b1, double b2, double eps, double wd,
			long step)
{
	double bc1 = 1 - pow(b1, (double)step), bc2 = 1 - pow(b2, (double)step);
	double step_size = lr / bc1, bc2_sqrt = sqrt(bc2);

	for (size_t i = 0; i < n; i++) {
		p[i] = p[i] * (float)(1 - lr * wd);
		m[i] = m[i] * (float)b1;
		m[i] = m[i] + (float)(1 - b1) * g[i];
		v[i] = v[i] * (float)b2;
		v[i] = v[i] + (float)(1 - b2) * g[i] * g[i];
		float denom = sqrtf(v[i]) / (float)bc2_sqrt;
		denom = denom + (float)eps;
		p[i] = p[i] + (float)-step_size * m[i] / denom;
	}
}

static void test_adamw(void)
{
	const size_t n = 1001;
	const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8;
	float *p = frandn(n, 1), *m = calloc(n, 4), *v = calloc(n, 4);
	float *rp = malloc(n * 4), *rm = calloc(n, 4), *rv = calloc(n, 4);
	kernel_bf16 *p16 = malloc(n * sizeof *p16);
	/* three tensors in one call: their own weight decays, one with a
	 * bf16 copy */
	const size_t at[] = { 0, 400, 401, n };
	const double wds[] = { 0.1, 0.0, 0.1 };
	long ulps = 0;

	memcpy(rp, p, n * 4);
	for (long step = 1; step <= 3; step++) {
		float *g = frandn(n, 1), *clipped = malloc(n * 4);
		/* step 2 is clipped: PyTorch scales the gradients in place
		 * (clip_grad_norm_), the op as it reads them */
		float clip = step == 2 ? 0.37f : 1.0f;
		kernel_adamw_tensor t[3];

		for (size_t i = 0; i < n; i++)
			clipped[i] = g[i] * clip;
		for (int k = 0; k < 3; k++) {
			t[k] = (kernel_adamw_tensor){ p + at[k], g + at[k], m + at[k], v + at[k],
						      at[k + 1] - at[k], wds[k],
						      k ? NULL : p16 };
			/* the reference takes the scalars as the doubles Python holds */
			torch_adamw(rp + at[k], clipped + at[k], rm + at[k], rv + at[k],
				    at[k + 1] - at[k], 3e-3, 0.9, 0.95, 1e-8, wds[k], step);
		}
		cpu_adamw(t, 3, lr, b1, b2, eps, step, clip);
		free(g);
		free(clipped);
	}
	for (size_t i = 0; i < at[1]; i++)
		if (p16[i] != f32_to_bf16(p[i])) {
			CHECK(0, "param %zu: bf16 copy %#x, not %#x", i, p16[i], f32_to_bf16(p[i]));
			break;
		}
	/* The same fp32 operations in the same order: bit for bit, unless the
	 * compiler may fuse multiply-adds (then an ulp or two). */
#ifdef __FMA__
	const long max_ulps = 2;
#else
	const long max_ulps = 0;
#endif
	for (size_t i = 0; i < n; i++) {
		int32_t a, b;
		memcpy(&a, &p[i], 4), memcpy(&b, &rp[i], 4);
		ulps = TITAN_MAX(ulps, labs((long)a - b));
		memcpy(&a, &v[i], 4), memcpy(&b, &rv[i], 4);
		ulps = TITAN_MAX(ulps, labs((long)a - b));
		memcpy(&a, &m[i], 4), memcpy(&b, &rm[i], 4);
		ulps = TITAN_MAX(ulps, labs((long)a - b));
	}
	CHECK(ulps <= max_ulps, "param, m or v %ld ulps from the transcription", ulps);
	free(p), free(m), free(v), free(rp), free(rm), free(rv), free(p16);
}

/* ---- determinism ---- */

static int same_bits(const float *a, const float *b, size_t n)
{
	return !memcmp(a, b, n * sizeof(*a));
}

/* Largest |a - b| relative to the largest |a|. */
static double rel_diff(const float *a, const float *b, size_t n)
{
	double big = 0, d = 0;

	for (size_t i = 0; i < n; i++) {
		big = fmax(big, fabs(a[i]));
		d = fmax(d, fabs((double)a[i] - b[i]));
	}
	return big > 0 ? d / big : d;
}

/* Every output of one run of the reducing kernels at a given thread count. */
struct reduce_run {
	float *rms_dx, *rms_dw, *dtable, *dlogits, *loss, *mm_out, *mm_dw;
	double sumsq;
};

static void test_thread_count(void)
{
	const int N = 2048, C = 256, V = 2048, NV = 64, rows = 97;
	const int threads[] = { 1, 2, 3 }, saved = omp_get_max_threads();
	size_t nx = (size_t)N * C;
	float *x = frandn(nx, 2), *w = frandn(C, 1), *dout = frandn(nx, 1);
	float *logits = frandn((size_t)NV * V, 4), *wm = frandn((size_t)C * C, 1);
	float *rstd = malloc(N * 4);
	uint32_t *ids = malloc(N * 4), labels[64];
	struct reduce_run run[3];

	for (int n = 0; n < N; n++)
		ids[n] = (uint32_t)(n * 131 % rows);
	for (int n = 0; n < NV; n++)
		labels[n] = (uint32_t)(n * 31 % V);
	for (int t = 0; t < 3; t++) {
		struct reduce_run *r = &run[t];

		omp_set_num_threads(threads[t]);
		r->rms_dx = calloc(nx, 4), r->rms_dw = calloc(C, 4);
		r->dtable = calloc((size_t)rows * C, 4);
		r->dlogits = malloc((size_t)NV * V * 4), r->loss = malloc(NV * 4);
		r->mm_out = malloc(nx * 4), r->mm_dw = calloc((size_t)C * C, 4);
		memcpy(r->dlogits, logits, (size_t)NV * V * 4);

		cpu_rmsnorm_forward(r->rms_dx, rstd, x, w, N, C, 1e-5f);
		memset(r->rms_dx, 0, nx * 4);
		cpu_rmsnorm_backward(r->rms_dx, r->rms_dw, dout, x, w, rstd, N, C);
		cpu_embedding_backward(r->dtable, dout, ids, N, C);
		cpu_cross_entropy(r->loss, r->dlogits, labels, NV, V, 1.0f / NV);
		cpu_matmul_forward(r->mm_out, x, wm, N, C, C, false);
		cpu_matmul_backward(r->mm_out, r->mm_dw, dout, x, wm, N, C, C, true);
		r->sumsq = cpu_sumsq(x, nx);
	}
	omp_set_num_threads(saved);

	for (int t = 1; t < 3; t++) {
		struct reduce_run *a = &run[0], *b = &run[t];
		int nt = threads[t];

		CHECK(same_bits(a->rms_dx, b->rms_dx, nx), "rmsnorm dinp, %d threads", nt);
		CHECK(same_bits(a->rms_dw, b->rms_dw, C), "rmsnorm dweight, %d threads", nt);
		CHECK(same_bits(a->dtable, b->dtable, (size_t)rows * C),
		      "embedding dtable, %d threads", nt);
		CHECK(same_bits(a->dlogits, b->dlogits, (size_t)NV * V),
		      "cross entropy gradient, %d threads", nt);
		CHECK(same_bits(a->loss, b->loss, NV), "cross entropy loss, %d threads", nt);
		/* titan's own reductions agree to the bit; GEMM is OpenBLAS's,
		 * which may take another kernel for another thread count (its
		 * AVX-512 small-matrix path does): equal up to rounding */
		CHECK(rel_diff(a->mm_out, b->mm_out, nx) < 1e-6, "matmul dinp, %d threads: %g",
		      nt, rel_diff(a->mm_out, b->mm_out, nx));
		CHECK(rel_diff(a->mm_dw, b->mm_dw, (size_t)C * C) < 1e-6,
		      "matmul dweight, %d threads: %g", nt,
		      rel_diff(a->mm_dw, b->mm_dw, (size_t)C * C));
		CHECK(!memcmp(&a->sumsq, &b->sumsq, sizeof(double)), "sumsq, %d threads", nt);
	}
	for (int t = 0; t < 3; t++)
		free(run[t].rms_dx), free(run[t].rms_dw), free(run[t].dtable),
			free(run[t].dlogits), free(run[t].loss), free(run[t].mm_out),
			free(run[t].mm_dw);
	free(x), free(w), free(dout), free(logits), free(wm), free(rstd), free(ids);
}

/* ---- bf16 matmul ---- */

static float *round_copy(const float *x, size_t n)
{
	float *r = malloc(n * sizeof(*r));

	for (size_t i = 0; i < n && r; i++)
		r[i] = bf16_to_f32(f32_to_bf16(x[i]));
	return r;
}

/* The bf16 GEMMs are the fp32 ones on rounded operands, bit for bit (the
 * same sgemm).  The weight and the input come cast (cast_bf16, the same
 * rounding as f32_to_bf16), dout is rounded inside. */
static void test_matmul_bf16(void)
{
	const int N = 19, IC = 37, OC = 13;
	const size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
	float *inp = frandn(ni, 1), *w = frandn(nw, 1), *dout = frandn(no, 1);
	float *out0 = frandn(no, 1), *dinp0 = frandn(ni, 1), *dw0 = frandn(nw, 1);
	float *ri = round_copy(inp, ni), *rw = round_copy(w, nw), *rd = round_copy(dout, no);
	float *o1 = malloc(no * sizeof(float)), *o2 = malloc(no * sizeof(float));
	float *di1 = malloc(ni * sizeof(float)), *di2 = malloc(ni * sizeof(float));
	float *dw1 = malloc(nw * sizeof(float)), *dw2 = malloc(nw * sizeof(float));
	kernel_bf16 *wb = malloc(nw * sizeof *wb), *ib = malloc(ni * sizeof *ib);

	if (!(inp && w && dout && out0 && dinp0 && dw0 && ri && rw && rd && o1 && o2 && di1 &&
	      di2 && dw1 && dw2 && wb && ib)) {
		CHECK(0, "out of memory");
		goto out;
	}
	cpu_cast_bf16(wb, w, nw);
	cpu_cast_bf16(ib, inp, ni);
	for (size_t i = 0; i < nw; i++)
		if (wb[i] != f32_to_bf16(w[i]) || bf16_to_f32(wb[i]) != rw[i]) {
			CHECK(0, "cast_bf16: element %zu is %#x", i, wb[i]);
			break;
		}
	for (int acc = 0; acc < 2; acc++) {
		memcpy(o1, out0, no * sizeof(float));
		memcpy(o2, out0, no * sizeof(float));
		cpu_matmul_forward_bf16(o1, ib, wb, N, IC, OC, acc);
		cpu_matmul_forward(o2, ri, rw, N, IC, OC, acc);
		CHECK(same_bits(o1, o2, no), "forward%s: not the fp32 GEMM of rounded operands",
		      acc ? " (accumulate)" : "");
		/* the rounding is not a no-op: unrounded operands give another result */
		cpu_matmul_forward(o2, inp, w, N, IC, OC, false);
		if (!acc)
			CHECK(!same_bits(o1, o2, no), "forward: no operand was rounded");
	}

	/* backward: both sides, each side alone, dinp accumulated; dout
	 * rounded inside, so a dout bf16 already holds gives the same */
	for (int mode = 0; mode < 4; mode++) {
		bool want_di = mode != 2, want_dw = mode != 1, acc = mode == 3;

		memcpy(di1, dinp0, ni * sizeof(float));
		memcpy(di2, dinp0, ni * sizeof(float));
		memcpy(dw1, dw0, nw * sizeof(float));
		memcpy(dw2, dw0, nw * sizeof(float));
		cpu_matmul_backward_bf16(want_di ? di1 : NULL, want_dw ? dw1 : NULL, dout, ib, wb,
					 N, IC, OC, acc);
		cpu_matmul_backward(want_di ? di2 : NULL, want_dw ? dw2 : NULL, rd, ri, rw, N, IC,
				    OC, acc);
		CHECK(same_bits(di1, di2, ni), "backward mode %d: dinp", mode);
		CHECK(same_bits(dw1, dw2, nw), "backward mode %d: dweight", mode);
		CHECK(want_di || same_bits(di1, dinp0, ni), "backward mode %d: dinp changed", mode);
		CHECK(want_dw || same_bits(dw1, dw0, nw), "backward mode %d: dweight changed",
		      mode);

		memcpy(di1, dinp0, ni * sizeof(float));
		memcpy(dw1, dw0, nw * sizeof(float));
		cpu_matmul_backward_bf16(want_di ? di1 : NULL, want_dw ? dw1 : NULL, rd, ib, wb,
					 N, IC, OC, acc);
		CHECK(same_bits(di1, di2, ni) && same_bits(dw1, dw2, nw),
		      "backward mode %d on a bf16 dout: not the same result", mode);
	}

	/* round to nearest, ties to even: 1 + 2^-8 lies halfway between 1 and
	 * 1 + 2^-7 and goes down to 1; 1 + 3 * 2^-8 halfway up to 1 + 2^-6;
	 * the same in cast_bf16 and in backward's rounding of dout */
	float one = 1.0f, got;
	kernel_bf16 one_bf16, cast;
	const float ties[][2] = { { 1.0f + 0x1p-8f, 1.0f }, { 1.0f + 0x3p-8f, 1.0f + 0x1p-6f },
				  { -(1.0f + 0x1p-9f), -1.0f } };

	cpu_cast_bf16(&one_bf16, &one, 1);
	for (size_t i = 0; i < ARRAY_SIZE(ties); i++) {
		cpu_matmul_backward_bf16(&got, NULL, &ties[i][0], &one_bf16, &one_bf16, 1, 1, 1,
					 false);
		CHECK(got == ties[i][1], "dout %a rounds to %a, not %a", ties[i][0], got,
		      ties[i][1]);
		cpu_cast_bf16(&cast, &ties[i][0], 1);
		CHECK(bf16_to_f32(cast) == ties[i][1], "cast_bf16: %a gives %a, not %a",
		      ties[i][0], bf16_to_f32(cast), ties[i][1]);
	}

out:
	free(inp), free(w), free(dout), free(out0), free(dinp0), free(dw0);
	free(ri), free(rw), free(rd), free(o1), free(o2);
	free(di1), free(di2), free(dw1), free(dw2), free(wb), free(ib);
}

/* ---- the table ---- */

static void test_table(void)
{
	const kernel_ops *k = &kernels_cpu;

	CHECK(k->name && !strcmp(k->name, "cpu"), "name");
	CHECK(k->matmul_forward && k->matmul_backward, "matmul");
	CHECK(k->rmsnorm_forward && k->rmsnorm_backward, "rmsnorm");
	CHECK(k->rope_forward && k->rope_backward, "rope");
	CHECK(k->attention_forward && k->attention_backward, "attention");
	CHECK(k->swiglu_forward && k->swiglu_backward, "swiglu");
	CHECK(k->embedding_forward && k->embedding_backward, "embedding");
	CHECK(k->cross_entropy, "cross_entropy");
	CHECK(k->add_inplace && k->sumsq && k->adamw, "elementwise");
	/* Every pointer after the name but the optional ones, so that an
	 * entry added to the struct and left out of the table fails here too. */
	size_t first = offsetof(kernel_ops, matmul_forward);
	for (size_t at = first; at + sizeof(void (*)(void)) <= sizeof(*k);
	     at += sizeof(void (*)(void))) {
		void (*fn)(void);

		if (at == offsetof(kernel_ops, attention_ranges))
			continue;
		memcpy(&fn, (const char *)k + at, sizeof(fn));
		CHECK(fn != NULL, "entry at offset %zu is NULL", at);
	}
}

static void test_peak(void)
{
	double flops = kernels_cpu_sgemm_peak(128);

	CHECK(flops > 1e6 && flops < 1e15, "%g FLOP/s", flops);
}

int main(void)
{
	RUN(test_matmul);
	RUN(test_matmul_bf16);
	RUN(test_rmsnorm);
	RUN(test_rope);
	RUN(test_swiglu);
	RUN(test_swiglu_long);
	RUN(test_embedding);
	RUN(test_cross_entropy);
	RUN(test_vocab_parallel);
	RUN(test_attention_merge);
	RUN(test_add_inplace);
	RUN(test_sumsq);
	RUN(test_adamw);
	RUN(test_thread_count);
	RUN(test_table);
	RUN(test_peak);
	return check_done();
}
