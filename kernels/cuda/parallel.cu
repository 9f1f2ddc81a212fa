/* parallel.cu - the ops that combine partial results of tensor and context
 * parallel, the twins of kernels/cpu/parallel.c: the loss over a
 * vocabulary cut across ranks, and ring attention's merge.
 *
 * The CPU code is the reference: the same float and double arithmetic,
 * expf/logf/log1pf the IEEE ones, and products that feed a possibly
 * cancelling sum written with __fmul_rn so nvcc does not fuse them into an
 * FMA the CPU does not do (ops.cu says more).
 *
 * The vocabulary ops run one block of RED_THREADS per row; a row's maximum and
 * its sum of exponentials are a strided pass per thread and a tree over
 * the thread ids, a shape that depends on V alone, so the results are the
 * same bits run to run (no atomics).  The sum is kept in double, as on the
 * CPU; only its order differs, which double absorbs before the float
 * rounding.  The merge runs one block per token: every thread reads the
 * running lse before the barrier and only then are the new ones written. */
#include "cuda/cuda.h"

#include <math.h>

/* The block's maximum of v; fmaxf as the CPU takes it, so a NaN never
 * replaces a number. */
struct red_fmax {
	__device__ float operator()(float a, float b) const
	{
		return fmaxf(a, b);
	}
};

__device__ static float block_max(float v, float *sh)
{
	return block_reduce(v, sh, red_fmax());
}

__device__ static bool in_slice(uint32_t label, uint32_t v0, int V)
{
	return label >= v0 && label - v0 < (uint32_t)V;
}

__global__ static void vocab_max_kernel(float *rmax, const float *logits, int V)
{
	__shared__ float sh[RED_THREADS];
	const float *lg = logits + (size_t)blockIdx.x * V;
	float mx = -INFINITY;

	for (int j = threadIdx.x; j < V; j += RED_THREADS)
		mx = fmaxf(mx, lg[j]);
	mx = block_max(mx, sh);
	if (threadIdx.x == 0)
		rmax[blockIdx.x] = mx;
}

__global__ static void vocab_sumexp_kernel(float *rsum, float *rlab, const float *logits,
					   const float *rmax, const uint32_t *labels,
					   uint32_t v0, int V)
{
	__shared__ double sh[RED_THREADS];
	const float *lg = logits + (size_t)blockIdx.x * V;
	float mx = rmax[blockIdx.x];
	double sum = 0.0;

	for (int j = threadIdx.x; j < V; j += RED_THREADS)
		sum += (double)expf(lg[j] - mx);
	sum = block_sum(sum, sh);
	if (threadIdx.x == 0) {
		uint32_t label = labels[blockIdx.x];

		rsum[blockIdx.x] = (float)sum;
		rlab[blockIdx.x] = in_slice(label, v0, V) ? lg[label - v0] : 0.0f;
	}
}

/* Each thread rewrites only its own entries, so the row needs no barrier:
 * rmax, rsum and rlab are the op's inputs, not the logits. */
__global__ static void vocab_finish_kernel(float *loss, float *logits, const float *rmax,
					   const float *rsum, const float *rlab,
					   const uint32_t *labels, uint32_t v0, int V,
					   float dscale)
{
	float *lg = logits + (size_t)blockIdx.x * V;
	float mx = rmax[blockIdx.x], s = rsum[blockIdx.x];
	uint32_t label = labels[blockIdx.x];

	if (threadIdx.x == 0)
		loss[blockIdx.x] = logf(s) + mx - rlab[blockIdx.x];
	if (dscale == 0.0f)
		return;
	for (int j = threadIdx.x; j < V; j += RED_THREADS) {
		float g = __fmul_rn(expf(lg[j] - mx) / s, dscale);

		if (in_slice(label, v0, V) && (uint32_t)j == label - v0)
			g -= dscale;
		lg[j] = g;
	}
}

void cuda_vocab_max(float *rmax, const float *logits, int N, int V)
{
	if (!cuda_ready())
		return;
	if (N <= 0 || V < 0)
		return;
	vocab_max_kernel<<<N, RED_THREADS, 0, cuda_stream()>>>(rmax, logits, V);
	cuda_check_launch("vocab_max");
}

void cuda_vocab_sumexp(float *rsum, float *rlab, const float *logits, const float *rmax,
		       const uint32_t *labels, uint32_t v0, int N, int V)
{
	if (!cuda_ready())
		return;
	if (N <= 0 || V < 0)
		return;
	vocab_sumexp_kernel<<<N, RED_THREADS, 0, cuda_stream()>>>(rsum, rlab, logits, rmax,
							      labels, v0, V);
	cuda_check_launch("vocab_sumexp");
}

void cuda_vocab_finish(float *loss, float *logits, const float *rmax, const float *rsum,
		       const float *rlab, const uint32_t *labels, uint32_t v0, int N, int V,
		       float dscale)
{
	if (!cuda_ready())
		return;
	if (N <= 0 || V < 0)
		return;
	vocab_finish_kernel<<<N, RED_THREADS, 0, cuda_stream()>>>(loss, logits, rmax, rsum, rlab,
							      labels, v0, V, dscale);
	cuda_check_launch("vocab_finish");
}

/* The merged lse of a running l1 and a block's l2 (not -inf), written as
 * the CPU writes it so both round alike. */
__device__ static float merged_lse(float l1, float l2)
{
	if (l1 == -INFINITY)
		return l2;
	return fmaxf(l1, l2) + log1pf(expf(-fabsf(l1 - l2)));
}

/* One block per token n = b * T + t, its threads strided over the H * D
 * entries of out; each recomputes its head's weights, which costs a few
 * exps but needs no buffer. */
__global__ static void attention_merge_kernel(float *out, float *lse_out, const float *o,
					      const float *lse, int T, int H, int D)
{
	size_t n = blockIdx.x, b = n / (size_t)T, t = n % (size_t)T;
	size_t q = (size_t)H * D;
	float *orow = out + n * q;
	const float *prow = o + n * q;

	for (size_t i = threadIdx.x; i < q; i += RED_THREADS) {
		size_t h = i / (size_t)D;
		size_t il = (b * H + h) * T + t;
		float l1 = lse_out[il], l2 = lse[il];

		if (l2 == -INFINITY)
			continue;
		float l = merged_lse(l1, l2);
		float w1 = l1 == -INFINITY ? 0.0f : expf(l1 - l);
		float w2 = expf(l2 - l);

		orow[i] = __fmul_rn(orow[i], w1) + __fmul_rn(prow[i], w2);
	}
	/* every read of the running lse above comes before a write below */
	__syncthreads();
	for (int h = threadIdx.x; h < H; h += RED_THREADS) {
		size_t il = (b * H + h) * T + t;
		float l1 = lse_out[il], l2 = lse[il];

		if (l2 != -INFINITY)
			lse_out[il] = merged_lse(l1, l2);
	}
}

void cuda_attention_merge(float *out, float *lse_out, const float *o, const float *lse,
			  int B, int T, int H, int D)
{
	if (!cuda_ready())
		return;
	if (B <= 0 || T <= 0 || H <= 0 || D < 0)
		return;
	attention_merge_kernel<<<B * T, RED_THREADS, 0, cuda_stream()>>>(out, lse_out, o, lse, T,
								     H, D);
	cuda_check_launch("attention_merge");
}
