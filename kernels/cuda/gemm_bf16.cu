/* gemm_bf16.cu - matmul_forward_bf16 / matmul_backward_bf16: the GEMMs of
 * ops.cu with both operands rounded to bfloat16 and the products summed in
 * fp32 (kernels.h).
 *
 * The weight and the input come in bf16 (the model casts them with
 * cast_bf16, once per update and once per activation); dout comes as fp32
 * and is cast (round to nearest, ties to even, as the CPU twin's
 * f32_to_bf16) into a scratch block of the backend's caching allocator,
 * kernels_bf16_chunk_rows rows at a time, so the copy stays small next to
 * the output head's [N, V].  cublasGemmEx multiplies the bf16 operands into
 * the fp32 output.  The layout is ops.cu's exactly: the same transposes,
 * leading dimensions and beta, only the operand types differ. */
#include "cuda/cuda.h"
#include "kernels.h"

#include <cuda_bf16.h>

__global__ static void cast_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n)
{
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
		dst[i] = __float2bfloat16_rn(src[i]);
}

void cuda_cast_bf16(kernel_bf16 *dst, const float *src, size_t n)
{
	if (!cuda_ready() || !n)
		return;
	cast_bf16_kernel<<<cuda_grid_for(n), RED_THREADS, 0, cuda_stream()>>>(
		(__nv_bfloat16 *)dst, src, n);
	cuda_check_launch("cast_bf16");
}

/* src[0..n) as bf16 in a scratch block (queued on the stream), for
 * release_bf16; NULL, the failure noted for the next sync, when the cache
 * has no memory. */
static __nv_bfloat16 *to_bf16(const float *src, size_t n)
{
	__nv_bfloat16 *dst = (__nv_bfloat16 *)cuda_scratch_get(n * sizeof(*dst));

	if (dst)
		cuda_cast_bf16((kernel_bf16 *)dst, src, n);
	return dst;
}

/* Back to the cache while the GEMM reading it may still be queued: safe,
 * since every user of the cache (ops, zeroing allocations, copies) queues
 * on the one stream, so whoever gets the block next writes it only after
 * the GEMM has read it. */
static void release_bf16(__nv_bfloat16 *p)
{
	cuda_scratch_put(p);
}

static void gemm_bf16(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
		      const __nv_bfloat16 *a, int lda, const __nv_bfloat16 *b, int ldb,
		      float beta, float *c, int ldc)
{
	const float one = 1.0f;
	cublasHandle_t h = cuda_blas();
	cublasStatus_t st;

	/* The handle is pedantic for the fp32 twin (no TF32, no reduced
	 * precision); pedantic math may also keep bf16 off the tensor cores,
	 * which are the point here.  Default math for this call only: bf16
	 * products are exact in the fp32 sums either way. */
	cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
	st = cublasGemmEx(h, ta, tb, m, n, k, &one, a, CUDA_R_16BF, lda, b,
			  CUDA_R_16BF, ldb, &beta, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
			  CUBLAS_GEMM_DEFAULT);
	cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
	if (st != CUBLAS_STATUS_SUCCESS)
		cuda_note_error("cublasGemmEx", (int)st);
}

/* out^T[OC,N] = weight^T^T[OC,IC] @ inp^T[IC,N], as cuda_matmul_forward:
 * both operands are bf16 already, so it is the GEMM alone. */
void cuda_matmul_forward_bf16(float *out, const kernel_bf16 *inp, const kernel_bf16 *weight,
			      int N, int IC, int OC, bool accumulate)
{
	if (!cuda_ready() || cuda_matmul_forward_trivial(out, N, IC, OC, accumulate))
		return;
	gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, (const __nv_bfloat16 *)weight, IC,
		  (const __nv_bfloat16 *)inp, IC, accumulate ? 1.0f : 0.0f, out, OC);
}

/* dinp^T[IC,N] = weight^T[IC,OC] @ dout^T[OC,N] and dweight^T[IC,OC] +=
 * inp^T[IC,N] @ dout[N,OC], as cuda_matmul_backward, a chunk of dout's
 * rows at a time: each chunk's dout is cast once for both products, its
 * rows of dinp are its own, and dweight sums the chunks' products in
 * order. */
void cuda_matmul_backward_bf16(float *dinp, float *dweight, const float *dout,
			       const kernel_bf16 *inp, const kernel_bf16 *weight,
			       int N, int IC, int OC, bool accumulate_dinp)
{
	int chunk = kernels_bf16_chunk_rows(N, OC);
	const __nv_bfloat16 *bw = (const __nv_bfloat16 *)weight;
	const __nv_bfloat16 *bi = (const __nv_bfloat16 *)inp;

	if (!cuda_ready() || cuda_matmul_backward_trivial(dinp, N, IC, OC, accumulate_dinp))
		return;
	if (!dinp && !dweight)
		return;
	for (int r0 = 0; r0 < N; r0 += chunk) {
		int n = N - r0 < chunk ? N - r0 : chunk;
		__nv_bfloat16 *bd = to_bf16(dout + (size_t)r0 * OC, (size_t)n * OC);

		if (!bd)
			break;
		if (dinp)
			gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, IC, n, OC, bw, IC, bd, OC,
				  accumulate_dinp ? 1.0f : 0.0f, dinp + (size_t)r0 * IC, IC);
		if (dweight)
			gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, n, bi + (size_t)r0 * IC, IC,
				  bd, OC, 1.0f, dweight, IC);
		release_bf16(bd);
	}
}
