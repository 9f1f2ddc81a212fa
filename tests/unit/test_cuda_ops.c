/* test_cuda_ops.c - every op of the CUDA backend against the CPU backend,
 * its reference, on random inputs of awkward sizes: the same call on both,
 * the results compared with a tolerance for fp32 summed in another order.
 *
 * The harness runs any backend against the CPU one, reaching the backend's
 * memory through four functions.  It runs the CPU backend itself over host
 * memory first, everywhere, so the harness (its buffers, copies and
 * comparisons) is exercised on machines without a GPU too; then the CUDA
 * backend when a device is present.  Without one the CUDA half skips with
 * the reason; TITAN_REQUIRE_CUDA=1 (make test-cuda) makes that a failure. */
#include "core/base.h"
#include <math.h>
#include "kernels.h"
#if TITAN_CUDA
#include "attention_tiles.h"
#include "cuda/cuda.h"
#endif
#include "check.h"

/* A backend under test and its memory. */
struct backend {
	const char *name;
	const kernel_ops *ops;
	int (*alloc)(void **p, size_t n);
	void (*release)(void *p, size_t n);
	int (*upload)(void *dst, const void *src, size_t n);
	int (*download)(void *dst, const void *src, size_t n);
	int (*sync)(void);
};

static int host_alloc(void **p, size_t n)
{
	*p = malloc(n ? n : 1);
	return *p ? 0 : TITAN_ENOMEM;
}

static void host_free(void *p, size_t n)
{
	(void)n;
	free(p);
}

static int host_copy(void *dst, const void *src, size_t n)
{
	memcpy(dst, src, n);
	return 0;
}

static int host_sync(void)
{
	return 0;
}

static const struct backend host_backend = {
	"cpu (host memory)", &kernels_cpu, host_alloc, host_free, host_copy, host_copy, host_sync,
};

/* The backend of the test running, and every buffer it allocated there
 * (freed after each test); host buffers likewise. */
static const struct backend *be;
static void *dev_bufs[256], *host_bufs[256];
static size_t dev_sizes[256];
static int ndev, nhost;

static void release_all(void)
{
	for (int i = 0; i < ndev; i++)
		be->release(dev_bufs[i], dev_sizes[i]);
	for (int i = 0; i < nhost; i++)
		free(host_bufs[i]);
	ndev = nhost = 0;
}

static void *host_buf(size_t bytes)
{
	void *p = calloc(1, bytes ? bytes : 1);

	if (!p || nhost == (int)ARRAY_SIZE(host_bufs)) {
		fprintf(stderr, "test_cuda_ops: out of host buffers\n");
		abort();
	}
	host_bufs[nhost++] = p;
	return p;
}

/* n floats of NaN (every byte 0xff). */
static float *nan_buf(size_t n)
{
	float *p = host_buf(n * 4);

	memset(p, 0xff, n * 4);
	return p;
}

/* A copy of host memory on the backend (NULL, with a failed check, when
 * the backend could not take it). */
static void *put(const void *src, size_t bytes)
{
	void *p = NULL;

	if (ndev == (int)ARRAY_SIZE(dev_bufs) || be->alloc(&p, bytes)) {
		CHECK(0, "%s: cannot allocate %zu bytes: %s", be->name, bytes, titan_errmsg());
		return NULL;
	}
	dev_sizes[ndev] = bytes;
	dev_bufs[ndev++] = p;
	if (be->upload(p, src, bytes))
		CHECK(0, "%s: upload: %s", be->name, titan_errmsg());
	return p;
}

/* The backend's buffer back on the host, after the ops queued before. */
static float *get(const void *dev, size_t n)
{
	float *h = host_buf(n * sizeof(float));

	if (dev && be->download(h, dev, n * sizeof(float)))
		CHECK(0, "%s: download: %s", be->name, titan_errmsg());
	return h;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static float urand(void)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((double)(rng >> 40) / (double)(1 << 24) * 2 - 1);
}

static float *randv(size_t n, float amp)
{
	float *v = host_buf(n * sizeof(float));

	for (size_t i = 0; i < n; i++)
		v[i] = amp * urand();
	return v;
}

static float *copyv(const float *v, size_t n)
{
	float *c = host_buf(n * sizeof(float));

	memcpy(c, v, n * sizeof(float));
	return c;
}

/* The largest difference relative to the reference's largest magnitude
 * (infinite when either has a NaN where the other has not). */
static double rel_err(const float *got, const float *want, size_t n)
{
	double d = 0, m = 1e-30;

	for (size_t i = 0; i < n; i++) {
		if (isnan(got[i]) != isnan(want[i]) || isinf(got[i]) != isinf(want[i]))
			return INFINITY;
		if (isinf(want[i]))
			continue;
		d = fmax(d, fabs((double)got[i] - want[i]));
		m = fmax(m, fabs((double)want[i]));
	}
	return d / m;
}

#define EXPECT_CLOSE(got, want, n, tol, what)                                          \
	do {                                                                           \
		double e_ = rel_err(got, want, n);                                     \
		CHECK(e_ <= (tol), "%s %s: relative error %.3g (tolerance %.1g)",      \
		      be->name, what, e_, (double)(tol));                              \
	} while (0)

static void expect_synced(void)
{
	CHECK(be->sync() == 0, "%s: %s", be->name, titan_errmsg());
}

static void check_matmul(void)
{
	const int N = 37, IC = 70, OC = 45;
	float *inp = randv((size_t)N * IC, 1), *w = randv((size_t)OC * IC, 0.5f);
	float *out0 = randv((size_t)N * OC, 1), *dout = randv((size_t)N * OC, 1);
	float *dinp0 = randv((size_t)N * IC, 1), *dw0 = randv((size_t)OC * IC, 1);

	for (int acc = 0; acc < 2; acc++) {
		float *ref = copyv(out0, (size_t)N * OC);
		float *d = put(out0, (size_t)N * OC * 4);

		kernels_cpu.matmul_forward(ref, inp, w, N, IC, OC, acc);
		be->ops->matmul_forward(d, put(inp, (size_t)N * IC * 4), put(w, (size_t)OC * IC * 4),
					N, IC, OC, acc);
		EXPECT_CLOSE(get(d, (size_t)N * OC), ref, (size_t)N * OC, 1e-5,
			     acc ? "matmul_forward +=" : "matmul_forward");

		float *rdi = copyv(dinp0, (size_t)N * IC), *rdw = copyv(dw0, (size_t)OC * IC);
		float *ddi = put(dinp0, (size_t)N * IC * 4), *ddw = put(dw0, (size_t)OC * IC * 4);

		kernels_cpu.matmul_backward(rdi, rdw, dout, inp, w, N, IC, OC, acc);
		be->ops->matmul_backward(ddi, ddw, put(dout, (size_t)N * OC * 4),
					 put(inp, (size_t)N * IC * 4), put(w, (size_t)OC * IC * 4),
					 N, IC, OC, acc);
		EXPECT_CLOSE(get(ddi, (size_t)N * IC), rdi, (size_t)N * IC, 1e-5, "matmul dinp");
		EXPECT_CLOSE(get(ddw, (size_t)OC * IC), rdw, (size_t)OC * IC, 1e-5, "matmul dweight");
	}
	/* one side only: the other pointer is NULL */
	float *rdw = copyv(dw0, (size_t)OC * IC), *ddw = put(dw0, (size_t)OC * IC * 4);

	kernels_cpu.matmul_backward(NULL, rdw, dout, inp, w, N, IC, OC, false);
	be->ops->matmul_backward(NULL, ddw, put(dout, (size_t)N * OC * 4),
				 put(inp, (size_t)N * IC * 4), put(w, (size_t)OC * IC * 4), N, IC,
				 OC, false);
	EXPECT_CLOSE(get(ddw, (size_t)OC * IC), rdw, (size_t)OC * IC, 1e-5, "matmul dweight only");
	expect_synced();
}

/* rel_err row by row, each row against its own largest magnitude: a GEMM's
 * rows differ in scale, and summation order errs in proportion to each. */
static double row_rel_err(const float *got, const float *want, int rows, int cols)
{
	double e = 0;

	for (int r = 0; r < rows; r++)
		e = fmax(e, rel_err(got + (size_t)r * cols, want + (size_t)r * cols,
				    (size_t)cols));
	return e;
}

#define EXPECT_ROWS_CLOSE(got, want, rows, cols, tol, what)                             \
	do {                                                                           \
		double e_ = row_rel_err(got, want, rows, cols);                        \
		CHECK(e_ <= (tol), "%s %s: relative error %.3g (tolerance %.1g)",      \
		      be->name, what, e_, (double)(tol));                              \
	} while (0)

/* w cast to bf16 on the host (the CPU's cast_bf16). */
static kernel_bf16 *host_bf16(const float *w, size_t n)
{
	kernel_bf16 *b = host_buf(n * sizeof *b);

	kernels_cpu.cast_bf16(b, w, n);
	return b;
}

/* The bf16 GEMMs against the CPU's: the same bf16 products on both sides
 * (each exact in fp32), so only the order of the fp32 sums differs. */
/* Forward and every backward variant at one shape, against the CPU's. */
static void check_matmul_bf16_shape(int N, int IC, int OC, const char *shape)
{
	const size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
	float *wf = randv(nw, 0.5f);
	kernel_bf16 *w = host_bf16(wf, nw), *inp = host_bf16(randv(ni, 1), ni);
	float *out0 = randv(no, 1), *dout = randv(no, 1);
	float *dinp0 = randv(ni, 1), *dw0 = randv(nw, 1);
	static const struct {
		bool dinp, dweight, acc;
		const char *what;
	} bw[] = {
		{ true, false, false, "matmul_backward_bf16 dinp only" },
		{ false, true, false, "matmul_backward_bf16 dweight only" },
		{ true, true, false, "matmul_backward_bf16 both" },
		{ true, true, true, "matmul_backward_bf16 both, dinp +=" },
	};

	for (int acc = 0; acc < 2; acc++) {
		float *ref = copyv(out0, no), *d = put(out0, no * 4);

		char what[128];

		kernels_cpu.matmul_forward_bf16(ref, inp, w, N, IC, OC, acc);
		be->ops->matmul_forward_bf16(d, put(inp, ni * 2), put(w, nw * 2), N, IC, OC, acc);
		snprintf(what, sizeof what, "%s%s", acc ? "matmul_forward_bf16 +=" :
			 "matmul_forward_bf16", shape);
		EXPECT_ROWS_CLOSE(get(d, no), ref, N, OC, 1e-4, what);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bw); i++) {
		float *rdi = bw[i].dinp ? copyv(dinp0, ni) : NULL;
		float *rdw = bw[i].dweight ? copyv(dw0, nw) : NULL;
		float *ddi = bw[i].dinp ? put(dinp0, ni * 4) : NULL;
		float *ddw = bw[i].dweight ? put(dw0, nw * 4) : NULL;
		char what[128];

		kernels_cpu.matmul_backward_bf16(rdi, rdw, dout, inp, w, N, IC, OC, bw[i].acc);
		be->ops->matmul_backward_bf16(ddi, ddw, put(dout, no * 4), put(inp, ni * 2),
					      put(w, nw * 2), N, IC, OC, bw[i].acc);
		if (rdi) {
			snprintf(what, sizeof what, "%s%s: dinp", bw[i].what, shape);
			EXPECT_ROWS_CLOSE(get(ddi, ni), rdi, N, IC, 1e-4, what);
		}
		if (rdw) {
			snprintf(what, sizeof what, "%s%s: dweight", bw[i].what, shape);
			EXPECT_ROWS_CLOSE(get(ddw, nw), rdw, OC, IC, 1e-4, what);
		}
	}
}

static void check_matmul_bf16(void)
{
	const int N = 37, IC = 70, OC = 45;
	const size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
	float *wf = randv(nw, 0.5f);
	float *out0 = randv(no, 1), *dout = randv(no, 1), *dinp0 = randv(ni, 1);
	kernel_bf16 *w, *dw16, *inp = host_bf16(randv(ni, 1), ni);

	/* the cast itself, bit for bit, ties to even included (halfway
	 * down to 1, halfway up to 1 + 2^-6, and a negative one) */
	wf[0] = 1.0f + 0x1p-8f;
	wf[1] = 1.0f + 0x3p-8f;
	wf[2] = -(1.0f + 0x1p-9f);
	w = host_bf16(wf, nw);
	dw16 = put(w, nw * 2);
	be->ops->cast_bf16(dw16, put(wf, nw * 4), nw);
	{
		kernel_bf16 *got = host_buf(nw * 2);

		if (be->download(got, dw16, nw * 2))
			CHECK(0, "%s: download: %s", be->name, titan_errmsg());
		CHECK(!memcmp(got, w, nw * 2), "%s cast_bf16: not the CPU's bits", be->name);
	}

	check_matmul_bf16_shape(N, IC, OC, "");
	/* A device casts dout's rows in chunks: two whole chunks and a part.
	 * Large (a quarter GiB of dout), so on a device only; on the host the
	 * op is the CPU's own. */
	if (be->ops != &kernels_cpu) {
		int chunk = kernels_bf16_chunk_rows(1 << 30, 4100);

		check_matmul_bf16_shape(2 * chunk + 101, 24, 4100, " (rows in 3 chunks)");
	}
	/* an empty sum (IC = 0, OC = 0) zeroes the output unless it accumulates */
	float *rz = copyv(out0, no), *dz = put(out0, no * 4);

	kernels_cpu.matmul_forward_bf16(rz, inp, w, N, 0, OC, false);
	be->ops->matmul_forward_bf16(dz, put(inp, ni * 2), put(w, nw * 2), N, 0, OC, false);
	EXPECT_CLOSE(get(dz, no), rz, no, 0, "matmul_forward_bf16 with IC = 0");
	rz = copyv(dinp0, ni);
	dz = put(dinp0, ni * 4);
	kernels_cpu.matmul_backward_bf16(rz, NULL, dout, inp, w, N, IC, 0, false);
	be->ops->matmul_backward_bf16(dz, NULL, put(dout, no * 4), put(inp, ni * 2),
				      put(w, nw * 2), N, IC, 0, false);
	EXPECT_CLOSE(get(dz, ni), rz, ni, 0, "matmul_backward_bf16 dinp with OC = 0");
	expect_synced();
}

static void check_rmsnorm_shape(int N, int C)
{
	size_t NC = (size_t)N * C;
	float *x = randv(NC, 2), *w = randv((size_t)C, 1), *dout = randv(NC, 1);
	float *ref = host_buf(NC * 4), *rstd = host_buf((size_t)N * 4);
	float *dx0 = randv(NC, 1), *dw0 = randv((size_t)C, 1);
	float *d = put(ref, NC * 4), *drstd = put(rstd, (size_t)N * 4);

	kernels_cpu.rmsnorm_forward(ref, rstd, x, w, N, C, 1e-5f);
	be->ops->rmsnorm_forward(d, drstd, put(x, NC * 4), put(w, (size_t)C * 4), N, C, 1e-5f);
	EXPECT_CLOSE(get(d, NC), ref, NC, 1e-5, "rmsnorm_forward");
	EXPECT_CLOSE(get(drstd, (size_t)N), rstd, (size_t)N, 1e-5, "rmsnorm rstd");

	float *rdx = copyv(dx0, NC), *rdw = copyv(dw0, (size_t)C);
	float *ddx = put(dx0, NC * 4), *ddw = put(dw0, (size_t)C * 4);

	kernels_cpu.rmsnorm_backward(rdx, rdw, dout, x, w, rstd, N, C);
	be->ops->rmsnorm_backward(ddx, ddw, put(dout, NC * 4), put(x, NC * 4),
				  put(w, (size_t)C * 4), put(rstd, (size_t)N * 4), N, C);
	EXPECT_CLOSE(get(ddx, NC), rdx, NC, 1e-5, "rmsnorm dinp");
	EXPECT_CLOSE(get(ddw, (size_t)C), rdw, (size_t)C, 1e-5, "rmsnorm dweight");
	expect_synced();
}

/* A device sums dweight over chunks of rows (kernels_rmsnorm_dweight_chunks):
 * one chunk, four with a short last one, and the most chunks there are. */
static void check_rmsnorm(void)
{
	check_rmsnorm_shape(29, 203);
	check_rmsnorm_shape(3 * 64 + 7, 203);
	check_rmsnorm_shape(128 * 64 + 45, 67);
}

static void check_rope(void)
{
	const int N = 23, heads = 3, D = 18, maxpos = 40;
	size_t n = (size_t)N * heads * D, tab = (size_t)maxpos * (D / 2);
	float *x = randv(n, 1), *c = randv(tab, 1), *s = randv(tab, 1);
	int32_t pos[23];

	for (int i = 0; i < N; i++)
		pos[i] = (i * 7) % maxpos;
	for (int back = 0; back < 2; back++) {
		float *ref = copyv(x, n), *d = put(x, n * 4);
		void *dp = put(pos, sizeof pos), *dc = put(c, tab * 4), *ds = put(s, tab * 4);

		if (back) {
			kernels_cpu.rope_backward(ref, pos, c, s, N, heads, D);
			be->ops->rope_backward(d, dp, dc, ds, N, heads, D);
		} else {
			kernels_cpu.rope_forward(ref, pos, c, s, N, heads, D);
			be->ops->rope_forward(d, dp, dc, ds, N, heads, D);
		}
		EXPECT_CLOSE(get(d, n), ref, n, 1e-6, back ? "rope_backward" : "rope_forward");
	}
	expect_synced();
}

/* One attention case: B rows of Tq queries and Tk keys, ranges lo..hi;
 * the host inputs and the CPU's results (bf16: of the CPU's bf16 ops, the
 * twin of the backend's). */
struct attn_case {
	int B, Tq, Tk, H, KV, D;
	const int32_t *lo, *hi;
	const char *what;
	bool bf16;
	const float *q, *k, *v, *dout;
	const float *out, *lse, *dq, *dk, *dv;
};

/* The case through the attention pair of ops (the backend's table, or
 * another implementation with its signatures, named impl) against the
 * CPU's results.  bf16: both sides round P and dS at the same points, but
 * a last-bit difference in exp may round a P the other way, a relative
 * 2^-8 on one term of a sum; lse sums the unrounded P and stays fp32. */
static void check_attention_ops(const kernel_ops *ops, const char *impl, const struct attn_case *c)
{
	size_t nq = (size_t)c->B * c->Tq * c->H * c->D, nk = (size_t)c->B * c->Tk * c->KV * c->D;
	size_t nl = (size_t)c->B * c->H * c->Tq, nr = (size_t)c->B * c->Tq * 4;
	/* the outputs start as NaN: a row an op leaves unwritten fails even
	 * where its value should be 0 */
	float *zq = nan_buf(nq), *zk = nan_buf(nk), *zl = nan_buf(nl);
	void *dlo = put(c->lo, nr), *dhi = put(c->hi, nr);
	float *gq = put(c->q, nq * 4), *gk = put(c->k, nk * 4), *gv = put(c->v, nk * 4);
	float *gout = put(zq, nq * 4), *glse = put(zl, nl * 4);
	double tol_out = c->bf16 ? 2e-3 : 2e-5, tol_grad = c->bf16 ? 5e-3 : 5e-5;
	const char *dt = c->bf16 ? "_bf16" : "";
	char name[160];

	(c->bf16 ? ops->attention_forward_bf16 : ops->attention_forward)(
		gout, glse, gq, gk, gv, dlo, dhi, c->B, c->Tq, c->Tk, c->H, c->KV, c->D);
	snprintf(name, sizeof name, "attention_forward%s%s %s: out", dt, impl, c->what);
	EXPECT_CLOSE(get(gout, nq), c->out, nq, tol_out, name);
	snprintf(name, sizeof name, "attention_forward%s%s %s: lse", dt, impl, c->what);
	EXPECT_CLOSE(get(glse, nl), c->lse, nl, 2e-5, name);

	/* backward from the reference's out and lse, so it is judged alone */
	float *gdq = put(zq, nq * 4), *gdk = put(zk, nk * 4), *gdv = put(zk, nk * 4);

	(c->bf16 ? ops->attention_backward_bf16 : ops->attention_backward)(
		gdq, gdk, gdv, put(c->dout, nq * 4), gq, gk, gv, put(c->out, nq * 4),
		put(c->lse, nl * 4), dlo, dhi, c->B, c->Tq, c->Tk, c->H, c->KV, c->D);
	snprintf(name, sizeof name, "attention_backward%s%s %s: dq", dt, impl, c->what);
	EXPECT_CLOSE(get(gdq, nq), c->dq, nq, tol_grad, name);
	snprintf(name, sizeof name, "attention_backward%s%s %s: dk", dt, impl, c->what);
	EXPECT_CLOSE(get(gdk, nk), c->dk, nk, tol_grad, name);
	snprintf(name, sizeof name, "attention_backward%s%s %s: dv", dt, impl, c->what);
	EXPECT_CLOSE(get(gdv, nk), c->dv, nk, tol_grad, name);
}

#if TITAN_CUDA
/* The op pair over the CUDA primitives with tiles of 7 keys: the schedule
 * plans from the host's copy of the case's ranges, set here before use. */
static const int32_t *small_tile_lo, *small_tile_hi;

static void small_tile_forward(float *out, float *lse, const float *q, const float *k,
			       const float *v, const int32_t *kv_lo, const int32_t *kv_hi,
			       int B, int Tq, int Tk, int H, int KV, int D)
{
	attention_tiles_shape sh = {B, Tq, Tk, H, KV, D, 7, false, 5, 2};
	int rc = attention_tiles_forward(cuda_attention_tile_prims(), &sh, out, lse, q, k, v,
					 kv_lo, kv_hi, small_tile_lo, small_tile_hi);
	CHECK(rc == 0, "attention_tiles_forward: %d", rc);
}

static void small_tile_backward(float *dq, float *dk, float *dv, const float *dout,
				const float *q, const float *k, const float *v,
				const float *out, const float *lse, const int32_t *kv_lo,
				const int32_t *kv_hi, int B, int Tq, int Tk, int H, int KV,
				int D)
{
	attention_tiles_shape sh = {B, Tq, Tk, H, KV, D, 7, false, 5, 2};
	int rc = attention_tiles_backward(cuda_attention_tile_prims(), &sh, dq, dk, dv, dout, q,
					  k, v, out, lse, kv_lo, kv_hi, small_tile_lo,
					  small_tile_hi);
	CHECK(rc == 0, "attention_tiles_backward: %d", rc);
}
#endif

static void check_attention_case(int B, int Tq, int Tk, int H, int KV, int D,
				 const int32_t *lo, const int32_t *hi, const char *what)
{
	size_t nq = (size_t)B * Tq * H * D, nk = (size_t)B * Tk * KV * D;
	size_t nl = (size_t)B * H * Tq;
	float *q = randv(nq, 1), *k = randv(nk, 1), *v = randv(nk, 1), *dout = randv(nq, 1);
	float *out = host_buf(nq * 4), *lse = host_buf(nl * 4);
	float *dq = host_buf(nq * 4), *dk = host_buf(nk * 4), *dv = host_buf(nk * 4);

	kernels_cpu.attention_forward(out, lse, q, k, v, lo, hi, B, Tq, Tk, H, KV, D);
	kernels_cpu.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, lo, hi, B, Tq, Tk, H,
				       KV, D);

	struct attn_case c = {B, Tq, Tk, H, KV, D, lo, hi, what, false, q, k, v, dout,
			      out, lse, dq, dk, dv};

	/* bf16: the CPU's bf16 pair is the reference */
	float *out16 = host_buf(nq * 4), *lse16 = host_buf(nl * 4);
	float *dq16 = host_buf(nq * 4), *dk16 = host_buf(nk * 4), *dv16 = host_buf(nk * 4);

	kernels_cpu.attention_forward_bf16(out16, lse16, q, k, v, lo, hi, B, Tq, Tk, H, KV, D);
	kernels_cpu.attention_backward_bf16(dq16, dk16, dv16, dout, q, k, v, out16, lse16, lo, hi,
					    B, Tq, Tk, H, KV, D);
	struct attn_case c16 = {B, Tq, Tk, H, KV, D, lo, hi, what, true, q, k, v, dout,
				out16, lse16, dq16, dk16, dv16};

	check_attention_ops(be->ops, "", &c16);
	check_attention_ops(be->ops, "", &c);
#if TITAN_CUDA
	/* the CUDA backend's plain kernels too, a second reference on the
	 * GPU beside the table's tiled attention */
	if (be->ops == kernels_cuda_ops()) {
		kernel_ops plain = *be->ops;

		plain.attention_forward = cuda_attention_forward_plain;
		plain.attention_backward = cuda_attention_backward_plain;
		check_attention_ops(&plain, " (plain)", &c);

		/* and the tile schedule with tiles of 7 keys, so that tiles
		 * start inside ranges and the kernels see k0 > 0 */
		kernel_ops small = *be->ops;

		small_tile_lo = lo;
		small_tile_hi = hi;
		small.attention_forward = small_tile_forward;
		small.attention_backward = small_tile_backward;
		check_attention_ops(&small, " (key tiles of 7)", &c);
	}
#endif
	/* a case takes some 50 of the harness's 256 device buffers */
	expect_synced();
	release_all();
}

static void check_attention(void)
{
	enum { B = 2, T = 70, TQ = 33, TK = 90 };
	int32_t lo[B * T], hi[B * T], rlo[B * TQ], rhi[B * TQ];

	/* causal, then documents (row 1 restarts at 20 and 21) */
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			lo[b * T + t] = 0;
			hi[b * T + t] = t;
		}
	check_attention_case(B, T, T, 4, 2, 48, lo, hi, "causal, GQA 4/2, D 48");
	for (int t = 0; t < T; t++)
		lo[T + t] = t < 20 ? 0 : t == 20 ? 20 : 21;
	check_attention_case(B, T, T, 2, 2, 64, lo, hi, "documents, D 64");
	/* another block of keys: any ranges, some empty or past the row */
	for (int i = 0; i < B * TQ; i++) {
		int a = (int)((urand() + 1) * 60) - 10, w = (int)((urand() + 1) * 40) - 8;

		rlo[i] = a;
		rhi[i] = a + w;
	}
	rlo[3] = 5, rhi[3] = 4;
	rlo[4] = 0, rhi[4] = TK - 1;
	check_attention_case(B, TQ, TK, 4, 1, 128, rlo, rhi, "ranges, Tq 33 Tk 90, MQA, D 128");

	/* longer rows: several key tiles and query blocks of the fused
	 * kernels, the narrowest head and the widest (whose dk, dv kernel
	 * takes 32 queries a round) */
	enum { TL = 300 };
	int32_t llo[TL], lhi[TL];

	for (int t = 0; t < TL; t++) {
		llo[t] = t < 130 ? 0 : 130;   /* a second document from 130 */
		lhi[t] = t;
	}
	check_attention_case(1, TL, TL, 4, 1, 16, llo, lhi, "documents, T 300, MQA, D 16");
	check_attention_case(1, 200, 200, 4, 2, 128, llo, lhi, "documents, T 200, GQA 4/2, D 128");

	/* blocks with nothing to do: queries 0..63 see no key, so the first
	 * query block of the forward and dq is empty; the rest see keys 0..40,
	 * so keys 41..259 get no gradient (four whole 64-key blocks of the
	 * dk, dv kernel, and the tail of the first) */
	enum { TQE = 160, TKE = 260 };
	int32_t elo[TQE], ehi[TQE];

	for (int t = 0; t < TQE; t++) {
		elo[t] = t < 64 ? 1 : 0;
		ehi[t] = t < 64 ? 0 : 40;
	}
	check_attention_case(1, TQE, TKE, 4, 2, 128, elo, ehi,
			     "empty blocks, Tq 160 Tk 260, GQA 4/2, D 128");
	expect_synced();
}

static void check_elementwise(void)
{
	const size_t n = 1237;
	float *a = randv(n, 3), *b = randv(n, 2), *dout = randv(n, 1);
	float *ref = host_buf(n * 4), *ga = put(a, n * 4), *gb = put(b, n * 4);
	float *gout = put(ref, n * 4);

	kernels_cpu.swiglu_forward(ref, a, b, n);
	be->ops->swiglu_forward(gout, ga, gb, n);
	EXPECT_CLOSE(get(gout, n), ref, n, 1e-6, "swiglu_forward");

	float *da = host_buf(n * 4), *db = host_buf(n * 4);
	float *gda = put(da, n * 4), *gdb = put(db, n * 4);

	kernels_cpu.swiglu_backward(da, db, dout, a, b, n);
	be->ops->swiglu_backward(gda, gdb, put(dout, n * 4), ga, gb, n);
	EXPECT_CLOSE(get(gda, n), da, n, 1e-6, "swiglu da");
	EXPECT_CLOSE(get(gdb, n), db, n, 1e-6, "swiglu db");

	float *y = copyv(a, n), *gy = put(a, n * 4);

	kernels_cpu.add_inplace(y, b, n);
	be->ops->add_inplace(gy, gb, n);
	EXPECT_CLOSE(get(gy, n), y, n, 0, "add_inplace");

	double want = kernels_cpu.sumsq(a, n), got = be->ops->sumsq(ga, n);
	CHECK(fabs(got - want) <= 1e-12 * want, "%s sumsq: %.17g, want %.17g", be->name, got,
	      want);
	CHECK(be->ops->sumsq(ga, 0) == 0, "%s sumsq of nothing", be->name);
	expect_synced();
}

static void check_embedding(void)
{
	const int N = 41, C = 37, V = 13;
	uint32_t ids[41];
	float *table = randv((size_t)V * C, 1), *dout = randv((size_t)N * C, 1);
	float *out = host_buf((size_t)N * C * 4), *dt = randv((size_t)V * C, 1);

	for (int i = 0; i < N; i++)
		ids[i] = (uint32_t)(i * 5 % V);   /* ids repeat: the gradient adds up */
	void *gids = put(ids, sizeof ids);
	float *gout = put(out, (size_t)N * C * 4), *gdt = put(dt, (size_t)V * C * 4);

	kernels_cpu.embedding_forward(out, ids, table, N, C);
	be->ops->embedding_forward(gout, gids, put(table, (size_t)V * C * 4), N, C);
	EXPECT_CLOSE(get(gout, (size_t)N * C), out, (size_t)N * C, 0, "embedding_forward");
	kernels_cpu.embedding_backward(dt, dout, ids, N, C);
	be->ops->embedding_backward(gdt, put(dout, (size_t)N * C * 4), gids, N, C);
	EXPECT_CLOSE(get(gdt, (size_t)V * C), dt, (size_t)V * C, 1e-6, "embedding_backward");
	expect_synced();
}

static void check_cross_entropy(void)
{
	const int N = 19, V = 1031;
	size_t NV = (size_t)N * V;
	uint32_t labels[19];
	float *logits = randv(NV, 8);

	for (int i = 0; i < N; i++)
		labels[i] = (uint32_t)(i * 97 % V);
	for (int grad = 0; grad < 2; grad++) {
		float dscale = grad ? 1.0f / N : 0.0f;
		float *ref = copyv(logits, NV), *loss = host_buf((size_t)N * 4);
		float *g = put(logits, NV * 4), *gl = put(loss, (size_t)N * 4);

		kernels_cpu.cross_entropy(loss, ref, labels, N, V, dscale);
		be->ops->cross_entropy(gl, g, put(labels, sizeof labels), N, V, dscale);
		EXPECT_CLOSE(get(gl, (size_t)N), loss, (size_t)N, 1e-5, "cross_entropy loss");
		EXPECT_CLOSE(get(g, NV), ref, NV, 1e-5,
			     grad ? "cross_entropy gradient" : "cross_entropy logits kept");
	}
	expect_synced();
}

/* Loss parallel's three steps on one rank's slice v0..v0+V-1 of the
 * vocabulary, labels in and out of it (its first and last entries too).
 * Each op is fed the reference's inputs, so it is judged alone; the
 * maxima and sums the later steps take are bumped on some rows, as other
 * ranks' larger logits would make them. */
static void check_vocab(void)
{
	const int N = 21, V = 517;
	const uint32_t v0 = 300;
	size_t NV = (size_t)N * V;
	uint32_t labels[21];
	float *logits = randv(NV, 8);
	float *rmax = host_buf((size_t)N * 4), *rsum = host_buf((size_t)N * 4);
	float *rlab = host_buf((size_t)N * 4);
	void *glabels;

	for (int i = 0; i < N; i++)
		labels[i] = (uint32_t)(i * 131 % 1200);   /* 300..816 in the slice */
	labels[0] = v0, labels[1] = v0 + V - 1, labels[2] = v0 - 1, labels[3] = v0 + V;
	glabels = put(labels, sizeof labels);

	float *gmax = put(rmax, (size_t)N * 4), *glog = put(logits, NV * 4);

	kernels_cpu.vocab_max(rmax, logits, N, V);
	be->ops->vocab_max(gmax, glog, N, V);
	EXPECT_CLOSE(get(gmax, (size_t)N), rmax, (size_t)N, 0, "vocab_max");

	for (int i = 0; i < N; i += 3)
		rmax[i] += 1.25f;
	float *gsum = put(rsum, (size_t)N * 4), *glab = put(rlab, (size_t)N * 4);

	kernels_cpu.vocab_sumexp(rsum, rlab, logits, rmax, labels, v0, N, V);
	be->ops->vocab_sumexp(gsum, glab, glog, put(rmax, (size_t)N * 4), glabels, v0, N, V);
	EXPECT_CLOSE(get(gsum, (size_t)N), rsum, (size_t)N, 1e-6, "vocab_sumexp sum");
	EXPECT_CLOSE(get(glab, (size_t)N), rlab, (size_t)N, 0, "vocab_sumexp label logit");

	for (int i = 1; i < N; i += 4)
		rsum[i] += 3.5f;
	for (int grad = 0; grad < 2; grad++) {
		float dscale = grad ? 1.0f / N : 0.0f;
		float *ref = copyv(logits, NV), *loss = host_buf((size_t)N * 4);
		float *g = put(logits, NV * 4), *gl = put(loss, (size_t)N * 4);

		kernels_cpu.vocab_finish(loss, ref, rmax, rsum, rlab, labels, v0, N, V, dscale);
		be->ops->vocab_finish(gl, g, put(rmax, (size_t)N * 4), put(rsum, (size_t)N * 4),
				      put(rlab, (size_t)N * 4), glabels, v0, N, V, dscale);
		EXPECT_CLOSE(get(gl, (size_t)N), loss, (size_t)N, 1e-6, "vocab_finish loss");
		EXPECT_CLOSE(get(g, NV), ref, NV, 1e-6,
			     grad ? "vocab_finish gradient" : "vocab_finish logits kept");
	}
	expect_synced();
}

/* Two partial results merged into a running one, with -inf on either
 * side and on both: where the block's lse is -inf, out must stay as it
 * was to the bit. */
static void check_attention_merge(void)
{
	const int B = 2, T = 23, H = 3, D = 40;
	size_t nq = (size_t)B * T * H * D, nl = (size_t)B * H * T;
	float *out = randv(nq, 1), *o = randv(nq, 1);
	float *lse_out = randv(nl, 4), *lse = randv(nl, 4);
	float *out0 = copyv(out, nq);

	for (size_t i = 0; i < nl; i += 5)
		lse_out[i] = -INFINITY;
	for (size_t i = 0; i < nl; i += 7)
		lse[i] = -INFINITY;   /* i % 35 == 0: both */
	float *gout = put(out, nq * 4), *glse = put(lse_out, nl * 4);

	kernels_cpu.attention_merge(out, lse_out, o, lse, B, T, H, D);
	be->ops->attention_merge(gout, glse, put(o, nq * 4), put(lse, nl * 4), B, T, H, D);
	float *hout = get(gout, nq);

	EXPECT_CLOSE(hout, out, nq, 1e-6, "attention_merge out");
	EXPECT_CLOSE(get(glse, nl), lse_out, nl, 1e-6, "attention_merge lse");

	int kept = 0, moved = 0;

	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++)
			for (int h = 0; h < H; h++) {
				size_t il = ((size_t)b * H + h) * T + t;
				size_t io = (((size_t)b * T + t) * H + h) * D;

				if (lse[il] != -INFINITY)
					continue;
				kept++;
				moved += memcmp(hout + io, out0 + io, (size_t)D * 4) != 0;
			}
	CHECK(kept > 0 && moved == 0, "%s attention_merge: %d of %d rows with lse -inf moved",
	      be->name, moved, kept);
	expect_synced();
}

/* A multi-tensor step over more tensors than one launch takes, with their
 * own sizes and weight decays, and bf16 copies for some: the tensors are
 * pieces of four buffers, back to back. */
static void check_adamw(void)
{
	enum { NT = 37 };
	kernel_adamw_tensor ht[NT], dt[NT];
	size_t at[NT + 1] = { 0 };

	for (int i = 0; i < NT; i++)
		at[i + 1] = at[i] + 97 + (size_t)i * 13;
	size_t n = at[NT];
	float *p = randv(n, 1), *g = randv(n, 0.1f), *m = randv(n, 0.01f), *v = randv(n, 0.01f);

	for (size_t k = 0; k < n; k++)
		v[k] = fabsf(v[k]);
	float *dp = put(p, n * 4), *dg = put(g, n * 4), *dm = put(m, n * 4), *dv = put(v, n * 4);
	kernel_bf16 *d16 = put(host_buf(n * 2), n * 2);

	if (!dp || !dg || !dm || !dv || !d16)
		return;
	for (int i = 0; i < NT; i++) {
		size_t o = at[i], len = at[i + 1] - at[i];
		double wd = i % 2 ? 0.1 : 0.0;

		ht[i] = (kernel_adamw_tensor){ p + o, g + o, m + o, v + o, len, wd, NULL };
		dt[i] = (kernel_adamw_tensor){ dp + o, dg + o, dm + o, dv + o, len, wd,
					       i % 3 ? d16 + o : NULL };
	}
	for (long step = 1; step <= 3; step++) {
		/* a clipped step on the second, as PyTorch's clip_grad_norm_ */
		float clip = step == 2 ? 0.37f : 1.0f;

		kernels_cpu.adamw(ht, NT, 8e-4, 0.9, 0.95, 1e-8, step, clip);
		be->ops->adamw(dt, NT, 8e-4, 0.9, 0.95, 1e-8, step, clip);
	}
	float *got = get(dp, n);

	EXPECT_CLOSE(got, p, n, 1e-6, "adamw param");
	EXPECT_CLOSE(get(dm, n), m, n, 1e-6, "adamw m");
	EXPECT_CLOSE(get(dv, n), v, n, 1e-6, "adamw v");
	/* each bf16 copy is its tensor's parameters rounded */
	kernel_bf16 *b = host_buf(n * 2), *want = host_bf16(got, n);

	if (be->download(b, d16, n * 2))
		CHECK(0, "%s: download: %s", be->name, titan_errmsg());
	for (int i = 0; i < NT; i++)
		if (i % 3)
			CHECK(!memcmp(b + at[i], want + at[i], (at[i + 1] - at[i]) * 2),
			      "%s adamw tensor %d: its bf16 copy is not its parameters rounded",
			      be->name, i);
	expect_synced();
}

static void run_all(void)
{
	void (*const checks[])(void) = {
		check_matmul, check_matmul_bf16, check_rmsnorm, check_rope, check_attention,
		check_elementwise, check_embedding, check_cross_entropy, check_vocab,
		check_attention_merge, check_adamw,
	};

	for (size_t i = 0; i < ARRAY_SIZE(checks); i++) {
		checks[i]();
		release_all();
	}
}

/* The harness itself, with the CPU backend over host memory: every
 * comparison must come out exact. */
static void test_harness_on_cpu(void)
{
	be = &host_backend;
	run_all();
}

/* The device-memory entries beyond the four the harness uses: zero-filled
 * allocation (a reused block too), zero, copy, and a freed block served
 * again without a new device allocation. */
static void check_device_memory(const kernel_ops *ops)
{
	enum { N = 1000 };
	static unsigned char pattern[N], back[N], zeros[N];
	kernel_mem_stats st;
	void *a = NULL, *b = NULL;
	long allocs;

	for (int i = 0; i < N; i++)
		pattern[i] = (unsigned char)(i * 7 + 1);
	REQUIRE(ops->alloc(&a, N) == 0 && ops->alloc(&b, N) == 0, "alloc: %s", titan_errmsg());
	CHECK(ops->download(back, a, N) == 0 && !memcmp(back, zeros, N), "alloc not zero-filled");
	CHECK(ops->upload(a, pattern, N) == 0, "upload: %s", titan_errmsg());
	ops->copy(b, a, N);
	CHECK(ops->download(back, b, N) == 0 && !memcmp(back, pattern, N), "copy");
	ops->zero(a, N);
	CHECK(ops->download(back, a, N) == 0 && !memcmp(back, zeros, N), "zero");
	CHECK(ops->sync() == 0, "%s", titan_errmsg());

	ops->mem_stats(&st);
	CHECK(st.reserved >= 2 * N && st.reserved_peak >= st.reserved && st.device_allocs >= 2,
	      "mem_stats: reserved %zu peak %zu, %ld allocs", st.reserved, st.reserved_peak,
	      st.device_allocs);
	CHECK(st.device_total > 0 && st.device_free <= st.device_total,
	      "mem_stats: device %zu free of %zu", st.device_free, st.device_total);
	allocs = st.device_allocs;

	ops->free(b, N);
	REQUIRE(ops->alloc(&b, N) == 0, "alloc: %s", titan_errmsg());
	ops->mem_stats(&st);
	CHECK(st.device_allocs == allocs, "a freed block was not reused: %ld device allocs, "
	      "%ld before", st.device_allocs, allocs);
	CHECK(ops->download(back, b, N) == 0 && !memcmp(back, zeros, N),
	      "a reused block is not zero-filled");
	ops->free(a, N);
	ops->free(b, N);
	ops->free(NULL, 0);
	CHECK(ops->sync() == 0, "%s", titan_errmsg());
}

static void test_cuda_against_cpu(void)
{
	static struct backend cuda = { .name = "cuda" };
	bool required = getenv("TITAN_REQUIRE_CUDA") != NULL;
	char info[256];

	if (kernels_cuda_probe(info, sizeof info)) {
		CHECK(!required, "CUDA required: %s", titan_errmsg());
		if (!required)
			SKIP("%s", titan_errmsg());
		return;
	}
	cuda.ops = kernels_cuda_ops();
	REQUIRE(cuda.ops, "a probe succeeded without an op table");
	cuda.alloc = cuda.ops->alloc;
	cuda.release = cuda.ops->free;
	cuda.upload = cuda.ops->upload;
	cuda.download = cuda.ops->download;
	cuda.sync = cuda.ops->sync;
	printf("# cuda: %s\n", info);
	be = &cuda;
	run_all();
	check_device_memory(cuda.ops);
}

int main(void)
{
	RUN(test_harness_on_cpu);
	RUN(test_cuda_against_cpu);
	return check_done();
}
