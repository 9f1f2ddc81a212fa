/* ops.c - the fp32 CPU kernels other than attention.
 *
 * Every kernel gives bit-identical results at any thread count: loops are
 * OpenMP static schedules over independent outputs, and every reduction
 * runs over chunks fixed by the shape alone, combined in a fixed order.
 * Small calls stay on one thread (the if() clauses) so they do not pay a
 * fork and join for a few microseconds of work. */
#include "core/base.h"

#include <cblas.h>
#include <math.h>
#include <sys/mman.h>

#include "core/half.h"
#include "cpu.h"

/* Below this many floats touched, a loop is not worth waking the team. */
#define PAR_MIN 32768

/* The exp-bound loops (SwiGLU, cross-entropy) are CPU_WIDE (cpu.h). */

/* Elementwise loops run over spans of this many floats, one call each. */
#define SPAN 4096

/* e^x within an ulp of glibc's expf (1.02e-7 relative at most, measured
 * over [-110, 90]), inf past 89, 0 below -104 and NaN kept, written so that
 * `omp simd` loops vectorise it (expf is an opaque call that would keep
 * cross-entropy and SwiGLU scalar).  x = n ln2 + r with |r| <= ln2/2 (ln2
 * split in two so that n ln2 is exact), e^r by its Taylor series to r^7
 * (remainder under 5e-9), 2^n applied as two factors so that n down to -150
 * keeps each a normal float.  Out-of-range inputs are fixed up with bit
 * masks: a branch, or a clamp the compiler can fold into a branch, stops
 * the vectoriser. */
static inline float exp_f32(float x)
{
	const float round = 12582912.0f; /* 1.5 * 2^23: adding it rounds to int */
	float t = x * 1.44269504088896341f + round;
	float fn = t - round, r, p, s1, s2, y;
	int32_t n, e1, e2, bits;
	int32_t keep = -(int32_t)!(x < -104.0f), big = -(int32_t)(x > 89.0f);

	memcpy(&n, &t, sizeof(n));
	n -= 0x4b400000;
	n = n < -150 ? -150 : n;
	n = n > 128 ? 128 : n;
	r = x - fn * 0.693145751953125f;
	r = r - fn * 1.428606765330187045e-06f;
	p = exp_taylor7(r);
	e1 = ((n >> 1) + 127) << 23;
	e2 = ((n - (n >> 1)) + 127) << 23;
	memcpy(&s1, &e1, sizeof(s1));
	memcpy(&s2, &e2, sizeof(s2));
	y = p * s1 * s2;
	memcpy(&bits, &y, sizeof(bits));
	bits = (bits & keep & ~big) | (0x7f800000 & big);
	memcpy(&y, &bits, sizeof(y));
	return y;
}

void cpu_matmul_forward(float *out, const float *inp, const float *weight,
			int N, int IC, int OC, bool accumulate)
{
	if (N <= 0 || OC <= 0)
		return;
	if (IC <= 0) {
		if (!accumulate)
			memset(out, 0, (size_t)N * OC * sizeof(*out));
		return;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC,
		    1.0f, inp, IC, weight, IC, accumulate ? 1.0f : 0.0f, out, OC);
}

void cpu_matmul_backward(float *dinp, float *dweight, const float *dout,
			 const float *inp, const float *weight,
			 int N, int IC, int OC, bool accumulate_dinp)
{
	if (N <= 0 || IC <= 0)
		return;
	if (dinp) {
		if (OC > 0)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
				    N, IC, OC, 1.0f, dout, OC, weight, IC,
				    accumulate_dinp ? 1.0f : 0.0f, dinp, IC);
		else if (!accumulate_dinp)
			memset(dinp, 0, (size_t)N * IC * sizeof(*dinp));
	}
	if (dweight && OC > 0)
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
			    OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
}

static float dot_f32(const float *a, const float *b, int n)
{
	float s = 0.0f;

#pragma omp simd reduction(+ : s)
	for (int i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp,
			 const float *weight, int N, int C, float eps)
{
#pragma omp parallel for schedule(static) if ((long)N * C > PAR_MIN)
	for (int n = 0; n < N; n++) {
		const float *x = inp + (size_t)n * C;
		float *y = out + (size_t)n * C;
		float r = 1.0f / sqrtf(dot_f32(x, x, C) / (float)C + eps);

		rstd[n] = r;
#pragma omp simd
		for (int i = 0; i < C; i++)
			y[i] = (x[i] * r) * weight[i];
	}
}

/* y = x * r * w with r = (mean(x^2) + eps)^-1/2, so
 * dx = r * w * dy - x * r^3 / C * sum(dy * w * x). */
static void rmsnorm_backward_inp(float *dinp, const float *dout,
				 const float *inp, const float *weight,
				 const float *rstd, int N, int C)
{
#pragma omp parallel for schedule(static) if ((long)N * C > PAR_MIN)
	for (int n = 0; n < N; n++) {
		const float *x = inp + (size_t)n * C;
		const float *dy = dout + (size_t)n * C;
		float *dx = dinp + (size_t)n * C;
		float r = rstd[n], s = 0.0f, k;

#pragma omp simd reduction(+ : s)
		for (int i = 0; i < C; i++)
			s += dy[i] * weight[i] * x[i];
		k = r * r * r * s / (float)C;

#pragma omp simd
		for (int i = 0; i < C; i++)
			dx[i] += r * weight[i] * dy[i] - k * x[i];
	}
}

/* dweight's reduction over tokens: columns are tiled, and each tile sums
 * its tokens in order into doubles, so the result does not depend on which
 * thread owns the tile. */
#define RMS_TILE 64

static void rmsnorm_backward_weight(float *dweight, const float *dout,
				    const float *inp, const float *rstd,
				    int N, int C)
{
	int tiles = (C + RMS_TILE - 1) / RMS_TILE;

#pragma omp parallel for schedule(static) if ((long)N * C > PAR_MIN && tiles > 1)
	for (int t = 0; t < tiles; t++) {
		int c0 = t * RMS_TILE;
		int w = TITAN_MIN(RMS_TILE, C - c0);
		double acc[RMS_TILE] = { 0 };

		for (int n = 0; n < N; n++) {
			const float *x = inp + (size_t)n * C + c0;
			const float *dy = dout + (size_t)n * C + c0;
			float r = rstd[n];

#pragma omp simd
			for (int i = 0; i < w; i++)
				acc[i] += (double)(dy[i] * (x[i] * r));
		}
		for (int i = 0; i < w; i++)
			dweight[c0 + i] += (float)acc[i];
	}
}

void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout,
			  const float *inp, const float *weight,
			  const float *rstd, int N, int C)
{
	if (dinp)
		rmsnorm_backward_inp(dinp, dout, inp, weight, rstd, N, C);
	if (dweight)
		rmsnorm_backward_weight(dweight, dout, inp, rstd, N, C);
}

/* Turn each interleaved pair by the table's angle, sign = -1 for the
 * opposite angle (the gradient of a rotation is its inverse). */
static void rope_turn(float *x, const int32_t *pos, const float *cos_tab,
		      const float *sin_tab, int N, int heads, int D, float sign)
{
	int half = D / 2;

#pragma omp parallel for schedule(static) if ((long)N * heads * D > PAR_MIN)
	for (int n = 0; n < N; n++) {
		const float *c = cos_tab + (size_t)pos[n] * half;
		const float *s = sin_tab + (size_t)pos[n] * half;

		for (int h = 0; h < heads; h++) {
			float *p = x + ((size_t)n * heads + h) * D;

#pragma omp simd
			for (int i = 0; i < half; i++) {
				float x0 = p[2 * i], x1 = p[2 * i + 1];
				float si = sign * s[i];

				p[2 * i] = x0 * c[i] - x1 * si;
				p[2 * i + 1] = x0 * si + x1 * c[i];
			}
		}
	}
}

void cpu_rope_forward(float *x, const int32_t *pos, const float *cos_tab,
		      const float *sin_tab, int N, int heads, int D)
{
	rope_turn(x, pos, cos_tab, sin_tab, N, heads, D, 1.0f);
}

void cpu_rope_backward(float *dx, const int32_t *pos, const float *cos_tab,
		       const float *sin_tab, int N, int heads, int D)
{
	rope_turn(dx, pos, cos_tab, sin_tab, N, heads, D, -1.0f);
}

CPU_WIDE static void swiglu_forward_span(float *out, const float *a,
					const float *b, size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++)
		out[i] = a[i] / (1.0f + exp_f32(-a[i])) * b[i];
}

/* silu'(a) = sig(a) * (1 + a * (1 - sig(a))), as torch's silu_backward */
CPU_WIDE static void swiglu_backward_span(float *da, float *db, const float *dout,
				      const float *a, const float *b, size_t n)
{
#pragma omp simd
	for (size_t i = 0; i < n; i++) {
		float e = 1.0f + exp_f32(-a[i]);
		float sig = 1.0f / e;
		float dsilu = dout[i] * b[i];

		db[i] = dout[i] * (a[i] / e);
		da[i] = dsilu * sig * (1.0f + a[i] * (1.0f - sig));
	}
}

void cpu_swiglu_forward(float *out, const float *a, const float *b, size_t n)
{
	size_t spans = (n + SPAN - 1) / SPAN;

#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (size_t s = 0; s < spans; s++) {
		size_t lo = s * SPAN;

		swiglu_forward_span(out + lo, a + lo, b + lo, TITAN_MIN(SPAN, n - lo));
	}
}

void cpu_swiglu_backward(float *da, float *db, const float *dout,
			 const float *a, const float *b, size_t n)
{
	size_t spans = (n + SPAN - 1) / SPAN;

#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (size_t s = 0; s < spans; s++) {
		size_t lo = s * SPAN;

		swiglu_backward_span(da + lo, db + lo, dout + lo, a + lo, b + lo,
				     TITAN_MIN(SPAN, n - lo));
	}
}

void cpu_embedding_forward(float *out, const uint32_t *ids,
			   const float *table, int N, int C)
{
#pragma omp parallel for schedule(static) if ((long)N * C > PAR_MIN)
	for (int n = 0; n < N; n++)
		memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C,
		       (size_t)C * sizeof(*out));
}

/* Threads own column tiles and walk all tokens in order: a row repeated in
 * ids is never written by two threads, and each sum runs in token order. */
#define EMB_TILE 64

void cpu_embedding_backward(float *dtable, const float *dout,
			    const uint32_t *ids, int N, int C)
{
	int tiles = (C + EMB_TILE - 1) / EMB_TILE;

#pragma omp parallel for schedule(static) if ((long)N * C > PAR_MIN && tiles > 1)
	for (int t = 0; t < tiles; t++) {
		int c0 = t * EMB_TILE;
		int w = TITAN_MIN(EMB_TILE, C - c0);

		for (int n = 0; n < N; n++) {
			float *d = dtable + (size_t)ids[n] * C + c0;
			const float *g = dout + (size_t)n * C + c0;

#pragma omp simd
			for (int i = 0; i < w; i++)
				d[i] += g[i];
		}
	}
}

/* Sixteen running maxima, elementwise: this vectorises under both GCC and
 * clang, where a `reduction(max)` over floats does not under clang. */
CPU_WIDE static float row_max(const float *x, int n)
{
	float lane[16], mx = -INFINITY;
	int j = 0;

	for (int l = 0; l < 16; l++)
		lane[l] = -INFINITY;
	for (; j + 16 <= n; j += 16)
		for (int l = 0; l < 16; l++)
			lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
	for (; j < n; j++)
		mx = x[j] > mx ? x[j] : mx;
	for (int l = 0; l < 16; l++)
		mx = lane[l] > mx ? lane[l] : mx;
	return mx;
}

/* One row: returns logsumexp(x) - x[label], rounded as torch's
 * -log_softmax(x)[label] = -((x - max) - log(sum)); with dscale, x becomes
 * (softmax(x) - onehot(label)) * dscale.  The exponentials are written into
 * x on the way, so the gradient costs no second exp. */
CPU_WIDE static float cross_entropy_row(float *x, uint32_t label, int V, float dscale)
{
	float mx = row_max(x, V), sum = 0.0f, target = x[label];

	if (dscale == 0.0f) {
#pragma omp simd reduction(+ : sum)
		for (int j = 0; j < V; j++)
			sum += exp_f32(x[j] - mx);
		return -((target - mx) - logf(sum));
	}

#pragma omp simd reduction(+ : sum)
	for (int j = 0; j < V; j++) {
		float e = exp_f32(x[j] - mx);

		x[j] = e;
		sum += e;
	}
	float k = dscale / sum;

#pragma omp simd
	for (int j = 0; j < V; j++)
		x[j] *= k;
	x[label] -= dscale;
	return -((target - mx) - logf(sum));
}

void cpu_cross_entropy(float *loss, float *logits, const uint32_t *labels,
		       int N, int V, float dscale)
{
#pragma omp parallel for schedule(static) if ((long)N * V > PAR_MIN)
	for (int n = 0; n < N; n++)
		loss[n] = cross_entropy_row(logits + (size_t)n * V, labels[n], V, dscale);
}

void cpu_add_inplace(float *y, const float *x, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
	for (size_t i = 0; i < n; i++)
		y[i] += x[i];
}

/* sumsq's chunks depend on n alone: at least SUMSQ_CHUNK floats each and
 * never more than SUMSQ_MAX_CHUNKS of them, so the partials fit the stack. */
#define SUMSQ_CHUNK 16384
#define SUMSQ_MAX_CHUNKS 1024

double cpu_sumsq(const float *x, size_t n)
{
	double part[SUMSQ_MAX_CHUNKS];
	size_t chunk = SUMSQ_CHUNK, nchunks, i;
	double total = 0.0;

	if (n == 0)
		return 0.0;
	if ((n + chunk - 1) / chunk > SUMSQ_MAX_CHUNKS)
		chunk = (n + SUMSQ_MAX_CHUNKS - 1) / SUMSQ_MAX_CHUNKS;
	nchunks = (n + chunk - 1) / chunk;

#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (size_t c = 0; c < nchunks; c++) {
		size_t lo = c * chunk, hi = TITAN_MIN(n, lo + chunk);
		double s = 0.0;

#pragma omp simd reduction(+ : s)
		for (size_t j = lo; j < hi; j++)
			s += (double)x[j] * (double)x[j];
		part[c] = s;
	}
	for (i = 0; i < nchunks; i++)
		total += part[i];
	return total;
}

/* PyTorch's _single_tensor_adamw: the Python scalars (1 - lr*wd, the bias
 * corrections, the step size) are doubles, and each tensor op rounds its
 * scalar to float before applying it elementwise in fp32. */
static void adamw_tensor(const kernel_adamw_tensor *t, double dlr, double db1, double db2,
			 double eps, long step, float grad_scale)
{
	double bc1 = 1.0 - pow(db1, (double)step);
	double bc2 = 1.0 - pow(db2, (double)step);
	float decay = (float)(1.0 - dlr * t->weight_decay);
	float b1 = (float)db1, one_b1 = (float)(1.0 - db1);
	float b2 = (float)db2, one_b2 = (float)(1.0 - db2);
	float bc2_sqrt = (float)sqrt(bc2);
	float neg_step = (float)-(dlr / bc1);
	float feps = (float)eps;
	float *param = t->param, *m = t->m, *v = t->v;
	const float *grad = t->grad;
	kernel_bf16 *p16 = t->param_bf16;
	size_t n = t->n;

#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (size_t i = 0; i < n; i++) {
		float g = grad[i] * grad_scale;
		float p = param[i] * decay;
		float mi = m[i] * b1;
		float vi = v[i] * b2;

		mi = mi + one_b1 * g;
		vi = vi + one_b2 * g * g;
		float denom = sqrtf(vi) / bc2_sqrt + feps;

		param[i] = p + neg_step * mi / denom;
		m[i] = mi;
		v[i] = vi;
		if (p16)
			p16[i] = f32_to_bf16(param[i]);
	}
}

void cpu_adamw(const kernel_adamw_tensor *t, int nt, double lr, double beta1, double beta2,
	       double eps, long step, float grad_scale)
{
	for (int i = 0; i < nt; i++)
		adamw_tensor(&t[i], lr, beta1, beta2, eps, step, grad_scale);
}

/* Scratch an op takes and frees within the call: blocks of 2 MiB and more
 * are aligned to 2 MiB and asked to be backed by transparent huge pages.
 * Such a block is a fresh mapping every call, and faulting it in 4 KiB
 * pages costs more than the op (140 MB: half a second on a VM, against
 * 10 ms in 2 MiB pages).  free() gives it back. */
void *cpu_scratch_alloc(size_t bytes)
{
	const size_t huge = (size_t)2 << 20;
	void *p = NULL;

	if (bytes < huge)
		return malloc(bytes ? bytes : 1);
	if (posix_memalign(&p, huge, bytes))
		return NULL;
#ifdef MADV_HUGEPAGE
	madvise(p, bytes, MADV_HUGEPAGE);   /* advice: no huge pages is no error */
#endif
	return p;
}

/* n bf16 values as fp32 (exact) in a new buffer: x16's widened, or (x16
 * NULL) x32's rounded to bf16; NULL when memory runs out, which the caller
 * notes for the next sync. */
static float *bf16_values(const float *x32, const kernel_bf16 *x16, size_t n)
{
	float *r = cpu_scratch_alloc(n * sizeof *r);

	if (!r)
		return NULL;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (size_t i = 0; i < n; i++)
		r[i] = bf16_to_f32(x16 ? x16[i] : f32_to_bf16(x32[i]));
	return r;
}

void cpu_cast_bf16(kernel_bf16 *dst, const float *src, size_t n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (size_t i = 0; i < n; i++)
		dst[i] = f32_to_bf16(src[i]);
}

void cpu_matmul_forward_bf16(float *out, const kernel_bf16 *inp, const kernel_bf16 *weight,
			     int N, int IC, int OC, bool accumulate)
{
	float *wi = bf16_values(NULL, inp, (size_t)N * IC);
	float *ww = bf16_values(NULL, weight, (size_t)OC * IC);

	if (wi && ww)
		cpu_matmul_forward(out, wi, ww, N, IC, OC, accumulate);
	else
		cpu_note_failure("matmul_forward_bf16: out of memory widening the operands");
	free(wi);
	free(ww);
}

void cpu_matmul_backward_bf16(float *dinp, float *dweight, const float *dout,
			      const kernel_bf16 *inp, const kernel_bf16 *weight,
			      int N, int IC, int OC, bool accumulate_dinp)
{
	float *rd = bf16_values(dout, NULL, (size_t)N * OC);
	float *wi = dweight ? bf16_values(NULL, inp, (size_t)N * IC) : NULL;
	float *ww = dinp ? bf16_values(NULL, weight, (size_t)OC * IC) : NULL;

	if (rd && (wi || !dweight) && (ww || !dinp))
		cpu_matmul_backward(dinp, dweight, rd, wi, ww, N, IC, OC, accumulate_dinp);
	else
		cpu_note_failure("matmul_backward_bf16: out of memory rounding the operands");
	free(rd);
	free(wi);
	free(ww);
}
