/* test_kernels.c - the CPU backend's kernels against naive double references.
 *
 * Forwards are compared with a direct double-precision transcription of the
 * op; backwards with central finite differences of that double reference
 * (loss = sum(g * out) for a random g), so the analytic gradient is checked
 * independently of the kernel's own formula.  Shapes are deliberately odd
 * (7, 13, 37, ...) to catch vector-remainder bugs.  Determinism is checked by
 * running a kernel at 1 and 2 threads and comparing bits. */
#include "core/base.h"

#include <math.h>
#include <omp.h>

#include "check.h"
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

/* ---- elementwise and reductions ---- */

static void test_add_scale(void)
{
	const size_t n = 100003;
	float *y = frandn(n, 1), *x = frandn(n, 1), *y0 = malloc(n * 4);
	int bad = 0;

	memcpy(y0, y, n * 4);
	cpu_add_inplace(y, x, n);
	for (size_t i = 0; i < n; i++)
		bad += y[i] != y0[i] + x[i];
	CHECK(bad == 0, "add_inplace: %d wrong", bad);
	cpu_scale(y, 0.37f, n);
	for (size_t i = 0; i < n; i++)
		bad += y[i] != (y0[i] + x[i]) * 0.37f;
	CHECK(bad == 0, "scale: %d wrong", bad);
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
	const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
	float *p = frandn(n, 1), *m = calloc(n, 4), *v = calloc(n, 4);
	float *rp = malloc(n * 4), *rm = calloc(n, 4), *rv = calloc(n, 4);
	long ulps = 0;

	memcpy(rp, p, n * 4);
	for (long step = 1; step <= 3; step++) {
		float *g = frandn(n, 1);

		/* Both take the scalars as the doubles Python holds. */
		cpu_adamw(p, g, m, v, n, lr, b1, b2, eps, wd, step);
		torch_adamw(rp, g, rm, rv, n, 3e-3, 0.9, 0.95, 1e-8, 0.1, step);
		free(g);
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
	free(p), free(m), free(v), free(rp), free(rm), free(rv);
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
	CHECK(k->add_inplace && k->scale && k->sumsq && k->adamw, "elementwise");
	/* Every pointer after the name, so that an entry added to the struct
	 * and left out of the table fails here too. */
	size_t first = offsetof(kernel_ops, matmul_forward);
	for (size_t at = first; at + sizeof(void (*)(void)) <= sizeof(*k);
	     at += sizeof(void (*)(void))) {
		void (*fn)(void);

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
	RUN(test_rmsnorm);
	RUN(test_rope);
	RUN(test_swiglu);
	RUN(test_swiglu_long);
	RUN(test_embedding);
	RUN(test_cross_entropy);
	RUN(test_add_scale);
	RUN(test_sumsq);
	RUN(test_adamw);
	RUN(test_thread_count);
	RUN(test_table);
	RUN(test_peak);
	return check_done();
}
