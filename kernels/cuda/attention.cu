/* attention.cu - fp32 attention on the GPU, the twin of kernels/cpu/attention.c.
 *
 * This is the plain version, written to be obviously right rather than
 * fast: one warp per query (forward and dq) or per key (dk, dv), a loop
 * over the other side one token at a time, and every dot product a warp
 * reduction.  Nothing of size Tq x Tk is ever held, and no atomics are
 * used, so the results are bit-identical run to run.  The op table's
 * attention is the tiled one over cuBLAS (attention_tiles.cu); these
 * _plain entry points stay as a second GPU reference for the tests.
 *
 * A warp spreads the head dim over its lanes: lane l holds elements
 * l, l + 32, l + 64, ... of each row it works on (NPL = ceil(D / 32) of
 * them, D <= 256), so a row is read with coalesced loads and a dot product
 * is NPL products per lane and a butterfly over __shfl_xor_sync.  In the
 * butterfly each pair of lanes adds the same two numbers, only in swapped
 * order, and float addition is commutative: every lane ends with the same
 * bits, so the softmax state (max, sum) is the same in all 32 lanes and
 * every branch on it is uniform over the warp, as __shfl_xor_sync with a
 * full mask needs.  NPL is a template parameter, so the per-lane rows stay
 * in registers and small heads do not pay for D = 256.
 *
 * Forward: online softmax over the keys a query sees, key by key: running
 * max m and sum l, the accumulator rescaled when m grows; then
 * out = acc / l and lse = m + log l.  q is multiplied by the scale once,
 * as the CPU code does, so the scores are rounded the same way.
 *
 * Backward: P = exp(S - lse) is rebuilt from the lse it is given (merged
 * over several key blocks when the keys came in parts, so P is then this
 * block's share of the whole softmax); D_i = rowsum(dout_i * out_i) and
 * dS = P * (dP - D_i).  Two kernels, each the only writer of its outputs:
 * dq per (row, query, head) over the keys in range, and dk, dv per (row,
 * key, KV head) over the queries of the group's heads whose range holds
 * the key.  The second recomputes D_i and P rather than keeping them from
 * the first, which would need a [B, H, Tq] buffer the op does not have.
 *
 * expf and logf, not __expf: accuracy over speed, since the CPU backend
 * is the reference to about 1e-5.  A query that sees no key, or whose lse
 * is -inf, gives out 0, lse -inf, dq 0 and nothing to dk, dv: no exp of
 * -inf - -inf is ever taken. */
#include "cuda/cuda.h"
#include <math.h>
#include <stdio.h>

enum {
	WARP = 32,
	WARPS_PER_BLOCK = 4,
	THREADS = WARP * WARPS_PER_BLOCK,
	MAX_D = 256,
	MAX_NPL = MAX_D / WARP,
	/* warp-stride loops cover the rest: any B * T * H fits */
	MAX_BLOCKS = 1 << 20,
};

#define FULL_MASK 0xffffffffu

/* Sum over the warp, the same bits in every lane (see the top). */
__device__ static inline float warp_sum(float x)
{
	for (int o = WARP / 2; o > 0; o /= 2)
		x += __shfl_xor_sync(FULL_MASK, x, o);
	return x;
}

/* This lane's elements of a D-wide row, times mul; 0 past D, so the dot
 * products below need no bounds. */
template <int NPL>
__device__ static inline void load_row(float (&x)[NPL], const float *src,
				       int D, int lane, float mul)
{
#pragma unroll
	for (int i = 0; i < NPL; i++) {
		int d = lane + i * WARP;

		x[i] = d < D ? src[d] * mul : 0.0f;
	}
}

template <int NPL>
__device__ static inline void store_row(float *dst, const float (&x)[NPL],
					int D, int lane, float mul)
{
#pragma unroll
	for (int i = 0; i < NPL; i++) {
		int d = lane + i * WARP;

		if (d < D)
			dst[d] = x[i] * mul;
	}
}

template <int NPL>
__device__ static inline float warp_dot(const float (&a)[NPL],
					const float (&b)[NPL])
{
	float s = 0.0f;

#pragma unroll
	for (int i = 0; i < NPL; i++)
		s += a[i] * b[i];
	return warp_sum(s);
}

/* The first warp of this thread and the warp stride of the grid. */
__device__ static inline int64_t first_warp(void)
{
	return ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
}

__device__ static inline int64_t warp_stride(void)
{
	return (int64_t)gridDim.x * blockDim.x / WARP;
}

/* Warp w is query token bt = b * Tq + t, head h, with w = bt * H + h: the
 * row of q, out, dq it owns starts at w * D. */
template <int NPL>
__global__ static void __launch_bounds__(THREADS)
attn_forward_kernel(float *out, float *lse, const float *q, const float *k,
		    const float *v, const int32_t *kv_lo,
		    const int32_t *kv_hi, int Tq, int Tk, int H, int KV, int D,
		    int64_t nwarps)
{
	int lane = threadIdx.x % WARP, rep = H / KV;
	size_t ldk = (size_t)KV * D;
	float scale = 1.0f / sqrtf((float)D);

	for (int64_t w = first_warp(); w < nwarps; w += warp_stride()) {
		int h = (int)(w % H), g = h / rep;
		int64_t bt = w / H, b = bt / Tq, t = bt % Tq;
		int lo = max(kv_lo[bt], 0), hi = min(kv_hi[bt], Tk - 1);
		const float *kb = k + (size_t)b * Tk * ldk + (size_t)g * D;
		const float *vb = v + (size_t)b * Tk * ldk + (size_t)g * D;
		float *o = out + (size_t)w * D;
		float *l_out = lse + ((size_t)b * H + h) * Tq + t;
		float qs[NPL], acc[NPL], kv[NPL];
		float m = -INFINITY, l = 0.0f;

		if (lo > hi) {
#pragma unroll
			for (int i = 0; i < NPL; i++)
				acc[i] = 0.0f;
			store_row(o, acc, D, lane, 1.0f);
			if (lane == 0)
				*l_out = -INFINITY;
			continue;
		}
		load_row(qs, q + (size_t)w * D, D, lane, scale);
#pragma unroll
		for (int i = 0; i < NPL; i++)
			acc[i] = 0.0f;
		for (int j = lo; j <= hi; j++) {
			load_row(kv, kb + (size_t)j * ldk, D, lane, 1.0f);
			float s = warp_dot(qs, kv);

			/* the first key always takes this branch: m = -inf
			 * gives alpha = 0 on an l and acc that are 0 */
			if (s > m) {
				float alpha = expf(m - s);

				l *= alpha;
#pragma unroll
				for (int i = 0; i < NPL; i++)
					acc[i] *= alpha;
				m = s;
			}
			float p = expf(s - m);

			l += p;
			load_row(kv, vb + (size_t)j * ldk, D, lane, 1.0f);
#pragma unroll
			for (int i = 0; i < NPL; i++)
				acc[i] += p * kv[i];
		}
		/* l >= 1: the key at the max adds exp(0) */
		store_row(o, acc, D, lane, 1.0f / l);
		if (lane == 0)
			*l_out = m + logf(l);
	}
}

/* dq: warp w as in the forward.  D_i, then dS over the keys in range. */
template <int NPL>
__global__ static void __launch_bounds__(THREADS)
attn_backward_dq_kernel(float *dq, const float *dout, const float *q,
			const float *k, const float *v, const float *out,
			const float *lse, const int32_t *kv_lo,
			const int32_t *kv_hi, int Tq, int Tk, int H, int KV,
			int D, int64_t nwarps)
{
	int lane = threadIdx.x % WARP, rep = H / KV;
	size_t ldk = (size_t)KV * D;
	float scale = 1.0f / sqrtf((float)D);

	for (int64_t w = first_warp(); w < nwarps; w += warp_stride()) {
		int h = (int)(w % H), g = h / rep;
		int64_t bt = w / H, b = bt / Tq, t = bt % Tq;
		int lo = max(kv_lo[bt], 0), hi = min(kv_hi[bt], Tk - 1);
		float L = lse[((size_t)b * H + h) * Tq + t];
		const float *kb = k + (size_t)b * Tk * ldk + (size_t)g * D;
		const float *vb = v + (size_t)b * Tk * ldk + (size_t)g * D;
		float qs[NPL], dy[NPL], kj[NPL], vj[NPL], acc[NPL];

#pragma unroll
		for (int i = 0; i < NPL; i++)
			acc[i] = 0.0f;
		if (lo <= hi && L != -INFINITY) {
			load_row(qs, q + (size_t)w * D, D, lane, scale);
			load_row(dy, dout + (size_t)w * D, D, lane, 1.0f);
			/* out is only needed for D_i: borrow vj for it */
			load_row(vj, out + (size_t)w * D, D, lane, 1.0f);
			float di = warp_dot(dy, vj);

			for (int j = lo; j <= hi; j++) {
				load_row(kj, kb + (size_t)j * ldk, D, lane, 1.0f);
				load_row(vj, vb + (size_t)j * ldk, D, lane, 1.0f);
				float p = expf(warp_dot(qs, kj) - L);
				float ds = p * (warp_dot(dy, vj) - di);

#pragma unroll
				for (int i = 0; i < NPL; i++)
					acc[i] += ds * kj[i];
			}
		}
		store_row(dq + (size_t)w * D, acc, D, lane, scale);
	}
}

/* dk, dv: warp w is key token bj = b * Tk + j, KV head g, w = bj * KV + g,
 * owning the rows at w * D of dk and dv.  It visits every query of row b
 * and, for those whose range holds j, the query heads of g.  The range
 * needs no clipping here: 0 <= j < Tk already. */
template <int NPL>
__global__ static void __launch_bounds__(THREADS)
attn_backward_dkv_kernel(float *dk, float *dv, const float *dout,
			 const float *q, const float *k, const float *v,
			 const float *out, const float *lse,
			 const int32_t *kv_lo, const int32_t *kv_hi, int Tq,
			 int Tk, int H, int KV, int D, int64_t nwarps)
{
	int lane = threadIdx.x % WARP, rep = H / KV;
	float scale = 1.0f / sqrtf((float)D);

	for (int64_t w = first_warp(); w < nwarps; w += warp_stride()) {
		int g = (int)(w % KV);
		int64_t bj = w / KV, b = bj / Tk, j = bj % Tk;
		float kj[NPL], vj[NPL], qs[NPL], dy[NPL], y[NPL];
		float dka[NPL], dva[NPL];

		load_row(kj, k + (size_t)w * D, D, lane, 1.0f);
		load_row(vj, v + (size_t)w * D, D, lane, 1.0f);
#pragma unroll
		for (int i = 0; i < NPL; i++) {
			dka[i] = 0.0f;
			dva[i] = 0.0f;
		}
		for (int64_t t = 0; t < Tq; t++) {
			int64_t bt = b * Tq + t;

			if (j < kv_lo[bt] || j > kv_hi[bt])
				continue;
			for (int h = g * rep; h < (g + 1) * rep; h++) {
				float L = lse[((size_t)b * H + h) * Tq + t];
				size_t row = ((size_t)bt * H + h) * D;

				if (L == -INFINITY)
					continue;
				load_row(qs, q + row, D, lane, scale);
				load_row(dy, dout + row, D, lane, 1.0f);
				load_row(y, out + row, D, lane, 1.0f);
				float di = warp_dot(dy, y);
				float p = expf(warp_dot(qs, kj) - L);
				float ds = p * (warp_dot(dy, vj) - di);

				/* qs holds the scale: dk = scale dS^T q */
#pragma unroll
				for (int i = 0; i < NPL; i++) {
					dva[i] += p * dy[i];
					dka[i] += ds * qs[i];
				}
			}
		}
		store_row(dk + (size_t)w * D, dka, D, lane, 1.0f);
		store_row(dv + (size_t)w * D, dva, D, lane, 1.0f);
	}
}

/* Blocks for nwarps warps, at least 1 (callers skip nwarps == 0). */
static unsigned int grid_for(int64_t nwarps)
{
	int64_t blocks = (nwarps + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK;

	return (unsigned int)(blocks < (int64_t)MAX_BLOCKS ? blocks : (int64_t)MAX_BLOCKS);
}

/* The shapes no kernel here can run: the op table has no error return, so
 * the reason waits for the next sync. */
static bool shapes_ok(const char *op, int H, int KV, int D)
{
	char what[128];

	if (D > MAX_D)
		snprintf(what, sizeof what, "%s with head dim %d over %d", op, D,
			 MAX_D);
	else if (KV <= 0 || H % KV)
		snprintf(what, sizeof what,
			 "%s with %d heads over %d key/value heads", op, H, KV);
	else
		return true;
	cuda_note_error(what, (int)cudaErrorInvalidValue);
	return false;
}

/* One case per per-lane row length: X(npl) for npl = 1 .. MAX_NPL. */
#define NPL_CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)

static int npl_of(int D)
{
	int npl = (D + WARP - 1) / WARP;

	return npl < 1 ? 1 : npl;
}

void cuda_attention_forward_plain(float *out, float *lse, const float *q,
				  const float *k, const float *v,
				  const int32_t *kv_lo, const int32_t *kv_hi,
				  int B, int Tq, int Tk, int H, int KV, int D)
{
	if (!cuda_ready())
		return;
	int64_t nwarps = (int64_t)B * Tq * H;

	if (nwarps <= 0 || !shapes_ok("attention_forward", H, KV, D))
		return;
	unsigned int grid = grid_for(nwarps);
	cudaStream_t st = cuda_stream();

	switch (npl_of(D)) {
#define X(n)                                                                    \
	case n:                                                                 \
		attn_forward_kernel<n><<<grid, THREADS, 0, st>>>(               \
			out, lse, q, k, v, kv_lo, kv_hi, Tq, Tk, H, KV, D,      \
			nwarps);                                                \
		break;
	NPL_CASES(X)
#undef X
	}
	cuda_check_launch("attention_forward");
}

void cuda_attention_backward_plain(float *dq, float *dk, float *dv,
				   const float *dout, const float *q,
				   const float *k, const float *v,
				   const float *out, const float *lse,
				   const int32_t *kv_lo, const int32_t *kv_hi,
				   int B, int Tq, int Tk, int H, int KV, int D)
{
	if (!cuda_ready())
		return;
	int64_t nq = (int64_t)B * Tq * H, nk = (int64_t)B * Tk * KV;

	if ((nq <= 0 && nk <= 0) || !shapes_ok("attention_backward", H, KV, D))
		return;
	cudaStream_t st = cuda_stream();
	int npl = npl_of(D);

	if (nq > 0) {
		unsigned int grid = grid_for(nq);

		switch (npl) {
#define X(n)                                                                    \
		case n:                                                         \
			attn_backward_dq_kernel<n><<<grid, THREADS, 0, st>>>(   \
				dq, dout, q, k, v, out, lse, kv_lo, kv_hi, Tq,  \
				Tk, H, KV, D, nq);                              \
			break;
		NPL_CASES(X)
#undef X
		}
		cuda_check_launch("attention_backward dq");
	}
	/* with Tq = 0 the loop over queries is empty: dk, dv are zeroed */
	if (nk > 0) {
		unsigned int grid = grid_for(nk);

		switch (npl) {
#define X(n)                                                                    \
		case n:                                                         \
			attn_backward_dkv_kernel<n><<<grid, THREADS, 0, st>>>(  \
				dk, dv, dout, q, k, v, out, lse, kv_lo, kv_hi,  \
				Tq, Tk, H, KV, D, nk);                          \
			break;
		NPL_CASES(X)
#undef X
		}
		cuda_check_launch("attention_backward dk dv");
	}
}
