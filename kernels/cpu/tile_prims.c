/* tile_prims.c - the CPU's primitives for the tiled attention schedule
 * (attention_tiles.h): cblas_sgemm per batch entry and plain loops, in
 * libm's expf and logf.  The CPU backend's own fp32 attention
 * (attention.c) is faster and remains its op; the schedule over these
 * primitives is checked against it (tests/unit/test_attention_tiles.c), so
 * only the GPU's twins of these loops are left to a GPU's own test.  The
 * CPU's bf16 attention ops are this schedule, the twin of the GPU's: bf16
 * values are kept widened to fp32 (bf16_size 4), which is exact, so the
 * GEMM on them is sgemm, and the products of two bf16 values being exact
 * in fp32, that is what tensor cores compute, up to the order of the
 * sums. */
#include "attention_tiles.h"
#include "core/half.h"
#include "cpu.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

/* Below this much work a loop runs on one thread (as ops.c's). */
enum { PAR_MIN = 32768 };

static void *cpu_scratch_get(void *ctx, size_t bytes)
{
	(void)ctx;
	return cpu_scratch_alloc(bytes);
}

static void cpu_scratch_put(void *ctx, void *p)
{
	(void)ctx;
	free(p);
}

static void *const *cpu_pointers(void *ctx, void *const *host, size_t n, size_t room)
{
	(void)ctx;
	(void)n;
	(void)room;
	return host;
}

static void cpu_pointers_put(void *ctx, void *const *table)
{
	(void)ctx;
	(void)table;
}

static void cpu_fill(void *ctx, float *x, float value, size_t n)
{
	(void)ctx;
	for (size_t i = 0; i < n; i++)
		x[i] = value;
}

/* x rounded to bf16 and widened back: how this backend keeps a bf16 value
 * (bf16_size 4), exact, so that its GEMM is sgemm on rounded operands. */
static float rounded(float x)
{
	return bf16_to_f32(f32_to_bf16(x));
}

static void cpu_to_bf16(void *ctx, void *dst, const float *src, size_t rows, int w, int ld)
{
	float *d = dst;

	(void)ctx;
#pragma omp parallel for schedule(static) if (rows * (size_t)ld > PAR_MIN)
	for (size_t r = 0; r < rows; r++)
		for (int i = 0; i < ld; i++)
			d[r * ld + i] = i < w ? rounded(src[r * w + i]) : 0.0f;
}

/* One sgemm per batch entry, the entries side by side: each writes its own
 * C (the schedule's promise), and an sgemm's sums do not depend on the
 * threads it runs on (OpenBLAS splits rows and columns, never the inner
 * dimension), so the result is the same at any thread count. */
static void cpu_gemm(void *ctx, bool bf16, bool ta, bool tb, int M, int N, int K, float alpha,
		     void *const *A, int lda, void *const *Bm, int ldb, float beta,
		     void *const *C, int ldc, int batch)
{
	(void)ctx;
	(void)bf16;   /* bf16 operands are rounded fp32 here */
#pragma omp parallel for schedule(dynamic) if (batch > 1)
	for (int i = 0; i < batch; i++)
		cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
			    tb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
			    (const float *)A[i], lda, (const float *)Bm[i], ldb, beta,
			    (float *)C[i], ldc);
}

static bool sees(const int32_t *lo, const int32_t *hi, size_t at, int key)
{
	return lo[at] <= key && key <= hi[at];
}

/* Row i of a tile's [B][H][M][ld16] buffers (scores, and P's and dS's
 * bf16 copies alike) for batch row b, head h: query t = qa + i; its index
 * in lo and hi (at), in m, l, lse and dvec (row), and the offset of its N
 * scores (off). */
typedef struct tile_row {
	int t;
	size_t at, row, off;
} tile_row;

static tile_row tile_row_of(int b, int h, int i, int H, int Tq, int qa, int M, int N)
{
	tile_row r = {.t = qa + i};

	r.at = (size_t)b * Tq + r.t;
	r.row = ((size_t)b * H + h) * Tq + r.t;
	r.off = (((size_t)b * H + h) * M + i) * (size_t)attention_tiles_ld16(N);
	return r;
}

/* One row (b, h, i) of softmax_tile: it owns its scores, m, l and its row
 * of out, so rows run side by side. */
static void softmax_row(float *s, float *p16, float *m, float *l, float *out,
			const int32_t *lo, const int32_t *hi, int b, int h, int i, int H, int Tq,
			int qa, int M, int k0, int N, int D)
{
	tile_row x = tile_row_of(b, h, i, H, Tq, qa, M, N);
	size_t at = x.at, row = x.row;
	float *p = s + x.off;
	float *p16row = p16 ? p16 + x.off : NULL;
	float mx = -INFINITY;
	bool any = false;

	for (int j = 0; j < N; j++) {
		if (sees(lo, hi, at, k0 + j)) {
			any = true;
			mx = fmaxf(mx, p[j]);
		}
	}
	if (!any) {
		float *zeros = p16row ? p16row : p;

		for (int j = 0; j < N; j++)
			zeros[j] = 0.0f;
		return;
	}
	float m_new = fmaxf(m[row], mx);
	float corr = m[row] == -INFINITY ? 0.0f : expf(m[row] - m_new);
	float sum = 0.0f;
	for (int j = 0; j < N; j++) {
		float pj = sees(lo, hi, at, k0 + j) ? expf(p[j] - m_new) : 0.0f;

		sum += pj;
		if (p16row)
			p16row[j] = rounded(pj);
		else
			p[j] = pj;
	}
	l[row] = l[row] * corr + sum;
	m[row] = m_new;
	float *o = out + (at * H + h) * (size_t)D;
	for (int d = 0; d < D; d++)
		o[d] *= corr;
}

static void cpu_softmax_tile(void *ctx, float *s, void *p16, float *m, float *l, float *out,
			     const int32_t *lo, const int32_t *hi, int B, int H, int Tq,
			     int qa, int M, int k0, int N, int D)
{
	long rows = (long)B * H * M;

	(void)ctx;
#pragma omp parallel for schedule(static) if (rows * N > PAR_MIN)
	for (long r = 0; r < rows; r++)
		softmax_row(s, p16, m, l, out, lo, hi, (int)(r / ((long)H * M)),
			    (int)(r / M % H), (int)(r % M), H, Tq, qa, M, k0, N, D);
}

static void cpu_finish(void *ctx, float *out, float *lse, const float *m, const float *l,
		       int B, int Tq, int H, int D)
{
	(void)ctx;
	for (int b = 0; b < B; b++) {
		for (int t = 0; t < Tq; t++) {
			for (int h = 0; h < H; h++) {
				size_t row = ((size_t)b * H + h) * Tq + t;
				float *o = out + (((size_t)b * Tq + t) * H + h) * (size_t)D;
				bool seen = l[row] > 0.0f;
				for (int d = 0; d < D; d++)
					o[d] = seen ? o[d] / l[row] : 0.0f;
				lse[row] = seen ? m[row] + logf(l[row]) : -INFINITY;
			}
		}
	}
}

static void cpu_group_sum(void *ctx, float *dst, const float *part, int B, int Tk, int KV,
			  int rep, int k0, int N, int D)
{
	(void)ctx;
	for (int b = 0; b < B; b++) {
		for (int j = 0; j < N; j++) {
			for (int g = 0; g < KV; g++) {
				float *out = dst + (((size_t)b * Tk + k0 + j) * KV + g) * (size_t)D;

				for (int r = 0; r < rep; r++) {
					const float *x = part + (((size_t)b * KV * rep + (size_t)g * rep +
								  r) * N + j) * (size_t)D;

					for (int d = 0; d < D; d++)
						out[d] += x[d];
				}
			}
		}
	}
}

static void cpu_rowdot(void *ctx, float *dvec, const float *dout, const float *out,
		       int B, int Tq, int H, int D)
{
	(void)ctx;
	for (int b = 0; b < B; b++) {
		for (int t = 0; t < Tq; t++) {
			for (int h = 0; h < H; h++) {
				size_t at = (((size_t)b * Tq + t) * H + h) * (size_t)D;
				float sum = 0.0f;
				for (int d = 0; d < D; d++)
					sum += dout[at + d] * out[at + d];
				dvec[((size_t)b * H + h) * Tq + t] = sum;
			}
		}
	}
}

/* One row (b, h, i) of grad_tile, elementwise. */
static void grad_row(float *s, float *dp, float *p16, float *ds16, const float *lse,
		     const float *dvec, const int32_t *lo, const int32_t *hi, int b, int h, int i,
		     int H, int Tq, int qa, int M, int k0, int N, float scale)
{
	tile_row x = tile_row_of(b, h, i, H, Tq, qa, M, N);
	size_t at = x.at, row = x.row, off = x.off;

	for (int j = 0; j < N; j++) {
		bool live = sees(lo, hi, at, k0 + j) && lse[row] > -INFINITY;
		float pj = live ? expf(s[off + j] - lse[row]) : 0.0f;
		float dsj = live ? scale * pj * (dp[off + j] - dvec[row]) : 0.0f;

		if (p16) {
			p16[off + j] = rounded(pj);
			ds16[off + j] = rounded(dsj);
		} else {
			s[off + j] = pj;
			dp[off + j] = dsj;
		}
	}
}

static void cpu_grad_tile(void *ctx, float *s, float *dp, void *p16, void *ds16,
			  const float *lse, const float *dvec, const int32_t *lo,
			  const int32_t *hi, int B, int H, int Tq, int qa, int M, int k0, int N,
			  float scale)
{
	long rows = (long)B * H * M;

	(void)ctx;
#pragma omp parallel for schedule(static) if (rows * N > PAR_MIN)
	for (long r = 0; r < rows; r++)
		grad_row(s, dp, p16, ds16, lse, dvec, lo, hi, (int)(r / ((long)H * M)),
			 (int)(r / M % H), (int)(r % M), H, Tq, qa, M, k0, N, scale);
}

const attention_tile_prims attention_tile_prims_cpu = {
	.ctx = NULL,
	.bf16_size = 4,
	.scratch_get = cpu_scratch_get,
	.scratch_put = cpu_scratch_put,
	.pointers = cpu_pointers,
	.pointers_put = cpu_pointers_put,
	.fill = cpu_fill,
	.to_bf16 = cpu_to_bf16,
	.gemm = cpu_gemm,
	.softmax_tile = cpu_softmax_tile,
	.finish = cpu_finish,
	.rowdot = cpu_rowdot,
	.group_sum = cpu_group_sum,
	.grad_tile = cpu_grad_tile,
};

/* kernels.h's bf16 attention on the CPU: the same schedule, tile size and
 * rounding as the GPU's, so that this is its twin. */
void cpu_attention_forward_bf16(float *out, float *lse, const float *q,
				const float *k, const float *v,
				const int32_t *kv_lo, const int32_t *kv_hi,
				int B, int Tq, int Tk, int H, int KV, int D)
{
	attention_tiles_shape sh = {B, Tq, Tk, H, KV, D, 0, true, 0, 0};

	if (attention_tiles_forward(&attention_tile_prims_cpu, &sh, out, lse, q, k, v, kv_lo,
				    kv_hi, kv_lo, kv_hi))
		cpu_note_failure("attention_forward_bf16: out of memory for the score tiles");
}

void cpu_attention_backward_bf16(float *dq, float *dk, float *dv,
				 const float *dout, const float *q,
				 const float *k, const float *v,
				 const float *out, const float *lse,
				 const int32_t *kv_lo, const int32_t *kv_hi,
				 int B, int Tq, int Tk, int H, int KV, int D)
{
	attention_tiles_shape sh = {B, Tq, Tk, H, KV, D, 0, true, 0, 0};

	if (attention_tiles_backward(&attention_tile_prims_cpu, &sh, dq, dk, dv, dout, q, k, v,
				     out, lse, kv_lo, kv_hi, kv_lo, kv_hi))
		cpu_note_failure("attention_backward_bf16: out of memory for the score tiles");
}
