/* attention_tiles.cu - the CUDA backend's attention ops: the tile schedule
 * of attention_tiles.h over cuBLAS's batched GEMM and the small kernels
 * below, its primitives on the GPU.
 *
 * The products of each key tile (S = Q K^T, P V, and the backward's five)
 * are cublasSgemmBatched over every (row, head) of the tile, in fp32 with
 * the handle's pedantic math mode: no TF32, so the results agree with the
 * CPU backend to fp32 rounding.  The bf16 ops run the fused kernels of
 * attention_flash.cu where those take the head dim; the others run the same
 * schedule with cublasGemmBatchedEx over bf16 operands and fp32 sums, on
 * the tensor cores, the softmax kernels then also writing P and dS
 * rounded to bf16.  cuBLAS is column-major and the schedule's
 * GEMMs are row-major; a row-major matrix read column-major is its
 * transpose, so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T with
 * the operands and M, N swapped and the transposes kept.
 *
 * The softmax steps are one warp per row of the score tile (or of out),
 * the lanes striding over the keys (or the head dim), each lane owning the
 * same elements in every pass over a row, so a lane only ever reads back
 * what it wrote itself.  Row maxima and sums are butterflies over
 * __shfl_xor_sync: each pair of lanes combines the same two numbers, only
 * in swapped order, and max and float addition are commutative, so every
 * lane ends with the same bits and every branch on them is uniform over
 * the warp.  The order of every sum depends on nothing but the shapes:
 * the results are the same run to run.  expf and logf, not the fast
 * intrinsics: accuracy over speed, the CPU backend being the reference.
 *
 * Every edge case of the header is taken as it is written there: a row
 * that sees no key of a tile gets P = 0 and keeps m, l and out; a running
 * max of -inf rescales by 0, never by exp(-inf - -inf); l = 0 finishes to
 * out 0 and lse -inf; lse = -inf gives P = dS = 0. */
#include "cuda/cuda.h"
#include "attention_tiles.h"
#include "attention_flash.h"
#include "attention_ranges.h"
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum {
	WARP = 32,
	WARPS_PER_BLOCK = 8,
	THREADS = WARP * WARPS_PER_BLOCK,
	/* grid-stride and warp-stride loops cover the rest: any size fits */
	MAX_BLOCKS = 65535,
};

#define FULL_MASK 0xffffffffu

/* Sum and max over the warp, the same bits in every lane (see the top). */
__device__ static inline float warp_sum(float x)
{
	for (int o = WARP / 2; o > 0; o /= 2)
		x += __shfl_xor_sync(FULL_MASK, x, o);
	return x;
}

__device__ static inline float warp_max(float x)
{
	for (int o = WARP / 2; o > 0; o /= 2)
		x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
	return x;
}

/* The first warp of this thread and the warp stride of the grid (blocks
 * are whole warps, so all lanes of a warp walk the same rows). */
__device__ static inline int64_t first_warp(void)
{
	return ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
}

__device__ static inline int64_t warp_stride(void)
{
	return (int64_t)gridDim.x * blockDim.x / WARP;
}

/* Blocks for n threads' worth of work, at least 1 (callers skip n == 0). */
static unsigned int blocks_for(int64_t n, int per_block)
{
	int64_t blocks = (n + per_block - 1) / per_block;

	return (unsigned int)(blocks < (int64_t)MAX_BLOCKS ? blocks : (int64_t)MAX_BLOCKS);
}

__global__ static void __launch_bounds__(THREADS)
fill_kernel(float *x, float value, size_t n)
{
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
		x[i] = value;
}

/* dst row r (ld apart) = src row r (w wide) in bf16, the padding zero. */
__global__ static void __launch_bounds__(THREADS)
to_bf16_kernel(uint16_t *dst, const float *src, size_t rows, int w, int ld)
{
	size_t n = rows * (size_t)ld, stride = (size_t)gridDim.x * blockDim.x;

	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
		size_t r = i / (size_t)ld;
		int c = (int)(i % (size_t)ld);
		__nv_bfloat16 h = __float2bfloat16_rn(c < w ? src[r * (size_t)w + c] : 0.0f);

		dst[i] = *(const uint16_t *)&h;
	}
}

/* x as the bits of a bf16, rounded to nearest, ties to even. */
__device__ static inline uint16_t bf16_bits(float x)
{
	__nv_bfloat16 h = __float2bfloat16_rn(x);

	return *(const uint16_t *)&h;
}

/* The row (b, h, t = qa + i) of a tile kernel's warp r = (b * H + h) * M + i:
 * its index in m, l, lse and dvec ([B][H][Tq]), in lo and hi ([B*Tq]), and in
 * out ([B][Tq][H][D], in rows of D). */
struct tile_row {
	size_t bht, bt, out_row;
};

__device__ static inline tile_row tile_row_of(int64_t r, int H, int Tq, int qa, int M)
{
	int64_t i = r % M, bh = r / M, h = bh % H, b = bh / H;
	int64_t t = (int64_t)qa + i;
	tile_row x;

	x.bht = (size_t)(bh * Tq + t);
	x.bt = (size_t)(b * Tq + t);
	x.out_row = x.bt * (size_t)H + (size_t)h;
	return x;
}

/* The keys of the tile row bt sees, as tile columns [*jlo, *jhi] (empty
 * when *jlo > *jhi): key k0 + j is seen iff lo <= k0 + j <= hi.  In 64
 * bits, so no range of int32 overflows. */
__device__ static inline void seen_cols(const int32_t *lo, const int32_t *hi, size_t bt,
					int k0, int N, int64_t *jlo, int64_t *jhi)
{
	int64_t a = (int64_t)lo[bt] - k0, b = (int64_t)hi[bt] - k0;

	*jlo = a > 0 ? a : 0;
	*jhi = b < (int64_t)N - 1 ? b : (int64_t)N - 1;
}

/* softmax_tile: warp r owns row r of s ([B][H][M][ld16]) and the row's m, l
 * and out.  The m and l it reads are written back by lane 0 only after
 * __syncwarp, which orders every lane's read before that write. */
__global__ static void __launch_bounds__(THREADS)
softmax_tile_kernel(float *s, uint16_t *p16, int ld16, float *m, float *l, float *out,
		    const int32_t *lo, const int32_t *hi, int H, int Tq, int qa, int M, int k0,
		    int N, int D, int64_t rows)
{
	int lane = threadIdx.x % WARP;

	for (int64_t r = first_warp(); r < rows; r += warp_stride()) {
		tile_row x = tile_row_of(r, H, Tq, qa, M);
		float *srow = s + (size_t)r * (size_t)ld16;
		uint16_t *prow = p16 ? p16 + (size_t)r * (size_t)ld16 : NULL;
		float *orow = out + x.out_row * (size_t)D;
		int64_t jlo, jhi;

		seen_cols(lo, hi, x.bt, k0, N, &jlo, &jhi);
		if (jlo > jhi) {
			for (int64_t j = lane; j < N; j += WARP) {
				if (prow)
					prow[j] = 0;
				else
					srow[j] = 0.0f;
			}
			continue;
		}
		float mx = -INFINITY;

		for (int64_t j = lane; j < N; j += WARP)
			if (j >= jlo && j <= jhi)
				mx = fmaxf(mx, srow[j]);
		float m_old = m[x.bht], l_old = l[x.bht];
		float m_new = fmaxf(m_old, warp_max(mx));
		float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
		float sum = 0.0f;

		for (int64_t j = lane; j < N; j += WARP) {
			float p = 0.0f;

			if (j >= jlo && j <= jhi)
				p = expf(srow[j] - m_new);
			if (prow)
				prow[j] = bf16_bits(p);
			else
				srow[j] = p;
			sum += p;
		}
		sum = warp_sum(sum);
		/* the same in every lane; once a row's max is found it rarely
		 * moves, and out's row need not be read and written back */
		if (alpha != 1.0f)
			for (int64_t d = lane; d < D; d += WARP)
				orow[d] *= alpha;
		__syncwarp();
		if (lane == 0) {
			m[x.bht] = m_new;
			l[x.bht] = l_old * alpha + sum;
		}
	}
}

/* grad_tile: warp r owns row r of s and dp, elementwise; no reduction. */
__global__ static void __launch_bounds__(THREADS)
grad_tile_kernel(float *s, float *dp, uint16_t *p16, uint16_t *ds16, int ld16,
		 const float *lse, const float *dvec, const int32_t *lo, const int32_t *hi, int H,
		 int Tq, int qa, int M, int k0, int N, float scale, int64_t rows)
{
	int lane = threadIdx.x % WARP;

	for (int64_t r = first_warp(); r < rows; r += warp_stride()) {
		tile_row x = tile_row_of(r, H, Tq, qa, M);
		size_t row16 = (size_t)r * (size_t)ld16;
		float *srow = s + row16, *dprow = dp + row16;
		float L = lse[x.bht], di = dvec[x.bht];
		/* lse -inf: the row saw no key in the whole attention */
		bool live = L > -INFINITY;
		int64_t jlo, jhi;

		seen_cols(lo, hi, x.bt, k0, N, &jlo, &jhi);
		for (int64_t j = lane; j < N; j += WARP) {
			float p = 0.0f, ds = 0.0f;

			if (live && j >= jlo && j <= jhi) {
				p = expf(srow[j] - L);
				ds = scale * p * (dprow[j] - di);
			}
			if (p16) {
				p16[row16 + j] = bf16_bits(p);
				ds16[row16 + j] = bf16_bits(ds);
			} else {
				srow[j] = p;
				dprow[j] = ds;
			}
		}
	}
}

/* finish and rowdot: warp w owns the row w = (b * Tq + t) * H + h of out
 * (and dout), D wide, and its entry (b, h, t) of lse or dvec. */
__device__ static inline size_t bht_of(int64_t w, int Tq, int H)
{
	int64_t h = w % H, bt = w / H, b = bt / Tq, t = bt % Tq;

	return (size_t)((b * H + h) * Tq + t);
}

__global__ static void __launch_bounds__(THREADS)
finish_kernel(float *out, float *lse, const float *m, const float *l, int Tq, int H, int D,
	      int64_t rows)
{
	int lane = threadIdx.x % WARP;

	for (int64_t w = first_warp(); w < rows; w += warp_stride()) {
		size_t bht = bht_of(w, Tq, H);
		float *orow = out + (size_t)w * (size_t)D;
		float lw = l[bht];

		if (lw > 0.0f) {
			for (int64_t d = lane; d < D; d += WARP)
				orow[d] /= lw;
			if (lane == 0)
				lse[bht] = m[bht] + logf(lw);
		} else {
			for (int64_t d = lane; d < D; d += WARP)
				orow[d] = 0.0f;
			if (lane == 0)
				lse[bht] = -INFINITY;
		}
	}
}

__global__ static void __launch_bounds__(THREADS)
rowdot_kernel(float *dvec, const float *dout, const float *out, int Tq, int H, int D,
	      int64_t rows)
{
	int lane = threadIdx.x % WARP;

	for (int64_t w = first_warp(); w < rows; w += warp_stride()) {
		const float *a = dout + (size_t)w * (size_t)D, *b = out + (size_t)w * (size_t)D;
		float acc = 0.0f;

		for (int64_t d = lane; d < D; d += WARP)
			acc += a[d] * b[d];
		acc = warp_sum(acc);
		if (lane == 0)
			dvec[bht_of(w, Tq, H)] = acc;
	}
}

/* group_sum: one thread per element of the tile's dk (dv) rows, the
 * group's shares added in head order, as on the CPU. */
__global__ static void __launch_bounds__(THREADS)
group_sum_kernel(float *dst, const float *part, int Tk, int KV, int rep, int k0, int N, int D,
		 int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int d = (int)(i % D);
		int64_t rest = i / D;
		int g = (int)(rest % KV);
		int j = (int)(rest / KV % N);
		int64_t b = rest / KV / N;
		float *out = dst + ((b * Tk + k0 + j) * KV + g) * D + d;
		const float *x = part + ((b * KV * rep + (int64_t)g * rep) * N + j) * D + d;
		float acc = *out;

		for (int r = 0; r < rep; r++)
			acc += x[(int64_t)r * N * D];
		*out = acc;
	}
}

/* The primitives.  ctx is unused: the backend's state is context.cu's. */

static void *prim_scratch_get(void *ctx, size_t bytes)
{
	(void)ctx;
	return cuda_scratch_get(bytes);
}

static void prim_scratch_put(void *ctx, void *p)
{
	(void)ctx;
	cuda_scratch_put(p);
}

/* The table on the device, in a block with room for `room` entries (the
 * memory an op takes does not depend on its mask).  The host table is the
 * schedule's, freed once this returns: cuda_upload_async copies it through
 * pinned memory in stream order, so nothing waits for the device here and
 * the GEMMs queued next read the table once it has landed. */
static void *const *prim_pointers(void *ctx, void *const *host, size_t n, size_t room)
{
	size_t bytes = n * sizeof(void *);
	void *dev;
	char why[256] = "";

	(void)ctx;
	if (!cuda_ready())
		return NULL;
	dev = cuda_scratch_get((room > n ? room : n ? n : 1) * sizeof(void *));
	if (!dev)
		return NULL;
	if (cuda_upload_async(dev, host, bytes, why, sizeof why)) {
		char msg[384];

		snprintf(msg, sizeof msg, "attention: %zu GEMM pointers: %s", n, why);
		cuda_note_failure(msg);
		cuda_scratch_put(dev);
		return NULL;
	}
	return (void *const *)dev;
}

static void prim_pointers_put(void *ctx, void *const *table)
{
	(void)ctx;
	cuda_scratch_put((void *)table);
}

static void prim_fill(void *ctx, float *x, float value, size_t n)
{
	(void)ctx;
	if (!n || !cuda_ready())
		return;
	fill_kernel<<<blocks_for((int64_t)n, THREADS), THREADS, 0, cuda_stream()>>>(x, value, n);
	cuda_check_launch("attention fill");
}

static void prim_to_bf16(void *ctx, void *dst, const float *src, size_t rows, int w, int ld)
{
	(void)ctx;
	if (!rows || ld <= 0 || !cuda_ready())
		return;
	to_bf16_kernel<<<blocks_for((int64_t)(rows * (size_t)ld), THREADS), THREADS, 0,
			 cuda_stream()>>>((uint16_t *)dst, src, rows, w, ld);
	cuda_check_launch("attention to_bf16");
}

/* Row-major C = alpha op(A) op(B) + beta C as column-major
 * C^T = alpha op(B)^T op(A)^T + beta C^T (see the top): B's list first,
 * N and M swapped, each operand's transpose flag kept.  In bf16 the
 * handle's pedantic math (kept for the fp32 twin) is lifted for the call,
 * as gemm_bf16.cu does: it may keep bf16 off the tensor cores, and bf16
 * products are exact in the fp32 sums either way. */
static void prim_gemm(void *ctx, bool bf16, bool ta, bool tb, int M, int N, int K, float alpha,
		      void *const *A, int lda, void *const *B, int ldb, float beta,
		      void *const *C, int ldc, int batch)
{
	cublasHandle_t h = cuda_blas();
	cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasStatus_t st;

	(void)ctx;
	if (M <= 0 || N <= 0 || batch <= 0 || !cuda_ready())
		return;
	if (!bf16) {
		st = cublasSgemmBatched(h, opb, opa, N, M, K, &alpha, (const float *const *)B, ldb,
					(const float *const *)A, lda, &beta, (float *const *)C, ldc,
					batch);
	} else {
		cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
		st = cublasGemmBatchedEx(h, opb, opa, N, M, K, &alpha, (const void *const *)B,
					 CUDA_R_16BF, ldb, (const void *const *)A, CUDA_R_16BF, lda,
					 &beta, (void *const *)C, CUDA_R_32F, ldc, batch,
					 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
		cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
	}
	if (st != CUBLAS_STATUS_SUCCESS)
		cuda_note_error(bf16 ? "attention gemm (bf16)" : "attention gemm", (int)st);
}

static void prim_softmax_tile(void *ctx, float *s, void *p16, float *m, float *l, float *out,
			      const int32_t *lo, const int32_t *hi, int B, int H, int Tq,
			      int qa, int M, int k0, int N, int D)
{
	int64_t rows = (int64_t)B * H * M;

	(void)ctx;
	if (rows <= 0 || N <= 0 || !cuda_ready())
		return;
	softmax_tile_kernel<<<blocks_for(rows, WARPS_PER_BLOCK), THREADS, 0, cuda_stream()>>>(
		s, (uint16_t *)p16, attention_tiles_ld16(N), m, l, out, lo, hi, H, Tq, qa, M, k0, N, D, rows);
	cuda_check_launch("attention softmax_tile");
}

static void prim_finish(void *ctx, float *out, float *lse, const float *m, const float *l,
			int B, int Tq, int H, int D)
{
	int64_t rows = (int64_t)B * Tq * H;

	(void)ctx;
	if (rows <= 0 || !cuda_ready())
		return;
	finish_kernel<<<blocks_for(rows, WARPS_PER_BLOCK), THREADS, 0, cuda_stream()>>>(
		out, lse, m, l, Tq, H, D, rows);
	cuda_check_launch("attention finish");
}

static void prim_rowdot(void *ctx, float *dvec, const float *dout, const float *out, int B,
			int Tq, int H, int D)
{
	int64_t rows = (int64_t)B * Tq * H;

	(void)ctx;
	if (rows <= 0 || !cuda_ready())
		return;
	rowdot_kernel<<<blocks_for(rows, WARPS_PER_BLOCK), THREADS, 0, cuda_stream()>>>(
		dvec, dout, out, Tq, H, D, rows);
	cuda_check_launch("attention rowdot");
}

static void prim_grad_tile(void *ctx, float *s, float *dp, void *p16, void *ds16,
			   const float *lse, const float *dvec, const int32_t *lo,
			   const int32_t *hi, int B, int H, int Tq, int qa, int M, int k0, int N,
			   float scale)
{
	int64_t rows = (int64_t)B * H * M;

	(void)ctx;
	if (rows <= 0 || N <= 0 || !cuda_ready())
		return;
	grad_tile_kernel<<<blocks_for(rows, WARPS_PER_BLOCK), THREADS, 0, cuda_stream()>>>(
		s, dp, (uint16_t *)p16, (uint16_t *)ds16, attention_tiles_ld16(N), lse, dvec, lo, hi, H, Tq, qa, M, k0, N,
		scale, rows);
	cuda_check_launch("attention grad_tile");
}

static void prim_group_sum(void *ctx, float *dst, const float *part, int B, int Tk, int KV,
			   int rep, int k0, int N, int D)
{
	int64_t n = (int64_t)B * N * KV * D;

	(void)ctx;
	if (n <= 0 || !cuda_ready())
		return;
	group_sum_kernel<<<cuda_grid_for((size_t)n), THREADS, 0, cuda_stream()>>>(
		dst, part, Tk, KV, rep, k0, N, D, n);
	cuda_check_launch("attention group_sum");
}

/* In the struct's order (C++ before C++20 has no designated initialisers). */
static const attention_tile_prims tile_prims = {
	NULL,                /* ctx */
	2,                   /* bf16_size */
	prim_scratch_get,
	prim_scratch_put,
	prim_pointers,
	prim_pointers_put,
	prim_fill,
	prim_to_bf16,
	prim_gemm,
	prim_softmax_tile,
	prim_finish,
	prim_rowdot,
	prim_grad_tile,
	prim_group_sum,
};

const attention_tile_prims *cuda_attention_tile_prims(void)
{
	return &tile_prims;
}

/* The key ranges the model keeps on the host too (kernels.h's
 * attention_ranges): the backend's state, like context.cu's, one thread
 * driving the device. */
static attention_range_table known_ranges;

void cuda_attention_ranges(const int32_t *lo, const int32_t *hi, const int32_t *host_lo,
			   const int32_t *host_hi, size_t n)
{
	attention_ranges_set(&known_ranges, lo, hi, host_lo, host_hi, n);
}

/* The key ranges on the host, where the schedule plans its tiles: lo then
 * hi, B*Tq each, in one block for the caller to free.  cuda_copy waits for
 * the queued work first: a sync per call where the model did not tell
 * the backend its ranges (attention_ranges).  NULL, with the reason noted
 * for the next sync, on failure. */
static int32_t *ranges_to_host(const char *op, const int32_t *kv_lo, const int32_t *kv_hi,
			       size_t n)
{
	char why[256] = "", msg[384];
	int32_t *h;

	h = (int32_t *)malloc(n ? 2 * n * sizeof *h : sizeof *h);
	if (!h) {
		snprintf(msg, sizeof msg, "%s: out of host memory for %zu key ranges", op, n);
		cuda_note_failure(msg);
		return NULL;
	}
	if (cuda_copy(h, kv_lo, n * sizeof *h, false, why, sizeof why) ||
	    cuda_copy(h + n, kv_hi, n * sizeof *h, false, why, sizeof why)) {
		snprintf(msg, sizeof msg, "%s: key ranges: %s", op, why);
		cuda_note_failure(msg);
		free(h);
		return NULL;
	}
	return h;
}

/* One op call: the ranges to the host, the schedule, the failure noted. */
struct att_call {
	bool backward;
	float *out, *lse;              /* forward */
	float *dq, *dk, *dv;           /* backward */
	const float *dout, *q, *k, *v, *fwd_out, *fwd_lse;
};

static void run_attention(const char *op, const struct att_call *a, const int32_t *kv_lo,
			  const int32_t *kv_hi, int B, int Tq, int Tk, int H, int KV, int D,
			  bool bf16)
{
	attention_tiles_shape sh = {B, Tq, Tk, H, KV, D, 0, bf16, 0, 0};
	size_t n = B > 0 && Tq > 0 ? (size_t)B * (size_t)Tq : 0, stride = 0;
	const int32_t *known;
	int32_t *host;
	int rc;
	char msg[256];

	if (!cuda_ready())
		return;
	/* out, dq, dk and dv are the bf16 GEMMs' C: rows of D floats must
	 * keep each (b, h) block 16-byte aligned (attention_tiles.h) */
	if (bf16 && D % 4) {
		snprintf(msg, sizeof msg, "%s: head dim %d: bf16 attention needs a multiple "
			 "of 4", op, D);
		cuda_note_failure(msg);
		return;
	}
	if (KV <= 0 || H % KV) {
		snprintf(msg, sizeof msg, "%s: %d heads over %d key/value heads", op, H, KV);
		cuda_note_failure(msg);
		return;
	}
	known = attention_ranges_find(&known_ranges, kv_lo, kv_hi, n, &stride);
	host = known ? NULL : ranges_to_host(op, kv_lo, kv_hi, n);
	if (!known && !host)
		return;
	if (!known) {
		known = host;
		stride = n;
	}
	if (a->backward)
		rc = attention_tiles_backward(&tile_prims, &sh, a->dq, a->dk, a->dv, a->dout, a->q,
					      a->k, a->v, a->fwd_out, a->fwd_lse, kv_lo, kv_hi,
					      known, known + stride);
	else
		rc = attention_tiles_forward(&tile_prims, &sh, a->out, a->lse, a->q, a->k, a->v,
					     kv_lo, kv_hi, known, known + stride);
	if (rc) {
		snprintf(msg, sizeof msg, "%s: out of memory for the score tiles or the GEMM "
			 "pointers", op);
		cuda_note_failure(msg);
	}
	free(host);
}

/* The bf16 calls the fused kernels run (attention_flash.h); the rest,
 * empty ones included, take the tiles, which handle every edge. */
static bool flash_takes(int B, int Tq, int Tk, int H, int KV, int D)
{
	return attention_flash_fits(D) && B > 0 && Tq > 0 && Tk > 0 && H > 0 && KV > 0 &&
	       H % KV == 0;
}

void cuda_attention_forward(float *out, float *lse, const float *q,
			    const float *k, const float *v,
			    const int32_t *kv_lo, const int32_t *kv_hi,
			    int B, int Tq, int Tk, int H, int KV, int D)
{
	struct att_call a = {false, out, lse, NULL, NULL, NULL, NULL, q, k, v, NULL, NULL};

	run_attention("attention_forward", &a, kv_lo, kv_hi, B, Tq, Tk, H, KV, D, false);
}

void cuda_attention_forward_bf16(float *out, float *lse, const float *q,
				 const float *k, const float *v,
				 const int32_t *kv_lo, const int32_t *kv_hi,
				 int B, int Tq, int Tk, int H, int KV, int D)
{
	struct att_call a = {false, out, lse, NULL, NULL, NULL, NULL, q, k, v, NULL, NULL};

	if (flash_takes(B, Tq, Tk, H, KV, D))
		cuda_flash_forward(out, lse, q, k, v, kv_lo, kv_hi, B, Tq, Tk, H, KV, D);
	else
		run_attention("attention_forward_bf16", &a, kv_lo, kv_hi, B, Tq, Tk, H, KV, D,
			      true);
}

void cuda_attention_backward(float *dq, float *dk, float *dv,
			     const float *dout, const float *q,
			     const float *k, const float *v,
			     const float *out, const float *lse,
			     const int32_t *kv_lo, const int32_t *kv_hi,
			     int B, int Tq, int Tk, int H, int KV, int D)
{
	struct att_call a = {true, NULL, NULL, dq, dk, dv, dout, q, k, v, out, lse};

	run_attention("attention_backward", &a, kv_lo, kv_hi, B, Tq, Tk, H, KV, D, false);
}

void cuda_attention_backward_bf16(float *dq, float *dk, float *dv,
				  const float *dout, const float *q,
				  const float *k, const float *v,
				  const float *out, const float *lse,
				  const int32_t *kv_lo, const int32_t *kv_hi,
				  int B, int Tq, int Tk, int H, int KV, int D)
{
	struct att_call a = {true, NULL, NULL, dq, dk, dv, dout, q, k, v, out, lse};

	if (flash_takes(B, Tq, Tk, H, KV, D))
		cuda_flash_backward(dq, dk, dv, dout, q, k, v, out, lse, kv_lo, kv_hi, B, Tq, Tk,
				    H, KV, D);
	else
		run_attention("attention_backward_bf16", &a, kv_lo, kv_hi, B, Tq, Tk, H, KV, D,
			      true);
}
