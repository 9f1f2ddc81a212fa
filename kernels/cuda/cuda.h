/* cuda.h - the CUDA backend's fp32 kernels, one function per entry of the
 * op table (kernels.h documents each contract), callable from C:
 * cuda_host.c gathers them into the table kernels_cuda_ops returns.
 *
 * Every function queues its work on the backend's stream (cuda_stream) and
 * returns; a failure to launch is kept for the next sync (cuda_sync),
 * since the op table's kernels have no error return.  GEMMs go through
 * cuBLAS (fp32, no TF32: the twin must agree with the CPU backend to fp32
 * rounding). */
#ifndef TITAN_KERNELS_CUDA_H
#define TITAN_KERNELS_CUDA_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* context.cu: the backend's state, made on first use on the current
 * device: one stream, one cuBLAS handle, the first error since the last
 * sync.  0, or -1 with the reason in why. */
int cuda_context_init(char *why, size_t wn);
/* Record the first failure (a launch or cuBLAS error) for cuda_sync. */
void cuda_note_error(const char *what, int code);
/* Wait for the stream; 0, or -1 with the first failure in why (and clear
 * it). */
int cuda_sync(char *why, size_t wn);
/* Make device the current one of this thread; before the context is made
 * (after, only the device it was made on is accepted).  0; -2 when there
 * is no such device; -1 for any other failure; the reason in why. */
int cuda_set_device(int device, char *why, size_t wn);
/* The device's own allocator, uncached (cudaMalloc/cudaFree, which
 * synchronise the device): for the caching allocator of cuda_host.c.  On
 * failure why holds CUDA's reason alone ("out of memory"). */
int cuda_device_alloc(void **p, size_t n, char *why, size_t wn);
void cuda_device_free(void *p);
/* Record msg as the first failure for cuda_sync (for host code, whose
 * failures an op cannot return either). */
void cuda_note_failure(const char *msg);
/* Queued on the stream like the ops: p[0..n) = 0, and dst = src (both on
 * the device). */
void cuda_zero(void *p, size_t n);
void cuda_copy_d2d(void *dst, const void *src, size_t n);
/* The device's free and total memory as the driver reports them; -1 and
 * zeros when the context is not made yet or the driver cannot tell. */
int cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
/* to_device: host src to device dst; else device src to host dst.  Both
 * wait for what is queued before them. */
int cuda_copy(void *dst, const void *src, size_t n, bool to_device, char *why, size_t wn);
/* Host src to device dst in stream order, without waiting: src is copied
 * first into pinned memory of the context's (two blocks in turn, each
 * reused once the copy out of it is done), so the caller may reuse src at
 * once.  For small tables an op builds on the host; -1 with why set when
 * pinned memory or the copy fails. */
int cuda_upload_async(void *dst, const void *src, size_t n, char *why, size_t wn);

/* cuda_host.c: a block of the backend's caching allocator for an op's
 * own temporaries (not zero-filled), and its return.  NULL, the reason
 * noted for the next sync, when there is no memory; the op then returns
 * without launching.  put takes NULL.  A block may go back while work
 * reading it is still queued: the next user of the cache queues behind
 * it on the same stream. */
void *cuda_scratch_get(size_t bytes);
void cuda_scratch_put(void *p);

/* ops.cu */
bool cuda_matmul_forward_trivial(float *out, int N, int IC, int OC, bool accumulate);
bool cuda_matmul_backward_trivial(float *dinp, int N, int IC, int OC, bool accumulate_dinp);
void cuda_matmul_forward(float *out, const float *inp, const float *weight,
			 int N, int IC, int OC, bool accumulate);
void cuda_matmul_backward(float *dinp, float *dweight, const float *dout,
			  const float *inp, const float *weight,
			  int N, int IC, int OC, bool accumulate_dinp);
void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp,
			  const float *weight, int N, int C, float eps);
void cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout,
			   const float *inp, const float *weight,
			   const float *rstd, int N, int C);
void cuda_rope_forward(float *x, const int32_t *pos, const float *cos_tab,
		       const float *sin_tab, int N, int heads, int D);
void cuda_rope_backward(float *dx, const int32_t *pos, const float *cos_tab,
			const float *sin_tab, int N, int heads, int D);
void cuda_swiglu_forward(float *out, const float *a, const float *b, size_t n);
void cuda_swiglu_backward(float *da, float *db, const float *dout,
			  const float *a, const float *b, size_t n);
void cuda_embedding_forward(float *out, const uint32_t *ids, const float *table,
			    int N, int C);
void cuda_embedding_backward(float *dtable, const float *dout, const uint32_t *ids,
			     int N, int C);
void cuda_cross_entropy(float *loss, float *logits, const uint32_t *labels,
			int N, int V, float dscale);
void cuda_add_inplace(float *y, const float *x, size_t n);
double cuda_sumsq(const float *x, size_t n);
void cuda_adamw(const kernel_adamw_tensor *t, int nt, double lr, double beta1, double beta2,
		double eps, long step, float grad_scale);

/* gemm_bf16.cu */
void cuda_matmul_forward_bf16(float *out, const kernel_bf16 *inp, const kernel_bf16 *weight,
			      int N, int IC, int OC, bool accumulate);
void cuda_matmul_backward_bf16(float *dinp, float *dweight, const float *dout,
			       const kernel_bf16 *inp, const kernel_bf16 *weight,
			       int N, int IC, int OC, bool accumulate_dinp);
void cuda_cast_bf16(kernel_bf16 *dst, const float *src, size_t n);

/* attention.cu: the plain warp-per-query kernels, a second reference */
void cuda_attention_forward_plain(float *out, float *lse, const float *q,
				  const float *k, const float *v,
				  const int32_t *kv_lo, const int32_t *kv_hi,
				  int B, int Tq, int Tk, int H, int KV, int D);
void cuda_attention_backward_plain(float *dq, float *dk, float *dv,
				   const float *dout, const float *q,
				   const float *k, const float *v,
				   const float *out, const float *lse,
				   const int32_t *kv_lo, const int32_t *kv_hi,
				   int B, int Tq, int Tk, int H, int KV, int D);

/* attention_tiles.cu: the op table's attention, attention_tiles.h's
 * schedule over cuBLAS */
void cuda_attention_ranges(const int32_t *lo, const int32_t *hi, const int32_t *host_lo,
			   const int32_t *host_hi, size_t n);
void cuda_attention_forward(float *out, float *lse, const float *q,
			    const float *k, const float *v,
			    const int32_t *kv_lo, const int32_t *kv_hi,
			    int B, int Tq, int Tk, int H, int KV, int D);
void cuda_attention_backward(float *dq, float *dk, float *dv,
			     const float *dout, const float *q,
			     const float *k, const float *v,
			     const float *out, const float *lse,
			     const int32_t *kv_lo, const int32_t *kv_hi,
			     int B, int Tq, int Tk, int H, int KV, int D);
void cuda_attention_forward_bf16(float *out, float *lse, const float *q,
				 const float *k, const float *v,
				 const int32_t *kv_lo, const int32_t *kv_hi,
				 int B, int Tq, int Tk, int H, int KV, int D);
void cuda_attention_backward_bf16(float *dq, float *dk, float *dv,
				  const float *dout, const float *q,
				  const float *k, const float *v,
				  const float *out, const float *lse,
				  const int32_t *kv_lo, const int32_t *kv_hi,
				  int B, int Tq, int Tk, int H, int KV, int D);
/* Its primitives, for tests that run the schedule with their own tile. */
struct attention_tile_prims;
const struct attention_tile_prims *cuda_attention_tile_prims(void);

/* attention_flash.cu: the bf16 attention's fused kernels, for calls
 * attention_flash_fits takes with B, Tq and Tk > 0 (the table's bf16 ops
 * choose them, and the tiles otherwise). */
void cuda_flash_forward(float *out, float *lse, const float *q, const float *k, const float *v,
			const int32_t *lo, const int32_t *hi, int B, int Tq, int Tk, int H, int KV,
			int D);
void cuda_flash_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
			 const float *k, const float *v, const float *out, const float *lse,
			 const int32_t *lo, const int32_t *hi, int B, int Tq, int Tk, int H,
			 int KV, int D);

/* parallel.cu */
void cuda_vocab_max(float *rmax, const float *logits, int N, int V);
void cuda_vocab_sumexp(float *rsum, float *rlab, const float *logits, const float *rmax,
		       const uint32_t *labels, uint32_t v0, int N, int V);
void cuda_vocab_finish(float *loss, float *logits, const float *rmax, const float *rsum,
		       const float *rlab, const uint32_t *labels, uint32_t v0, int N, int V,
		       float dscale);
void cuda_attention_merge(float *out, float *lse_out, const float *o, const float *lse,
			  int B, int T, int H, int D);

#ifdef __cplusplus
}
#endif

/* For the .cu files: the stream and cuBLAS handle every op uses, and a
 * 64 KiB device scratch for reductions (one op uses it at a time: ops run
 * in stream order).  Each makes the context on first use; when that fails
 * it notes the error for the next sync and returns 0 / NULL, and the op
 * must then return without launching. */
#ifdef __CUDACC__
#include <cublas_v2.h>
#include <cuda_runtime.h>
cudaStream_t cuda_stream(void);
cublasHandle_t cuda_blas(void);
void *cuda_scratch(void);
enum { CUDA_SCRATCH_BYTES = 65536 };
/* After a launch: note a launch failure for the next sync. */
void cuda_check_launch(const char *what);
bool cuda_ready(void);   /* the context exists (made on first call) */

/* Threads per block of every kernel; the tree reductions need a power of
 * two. */
enum { RED_THREADS = 256 };

/* Blocks of RED_THREADS for a grid-stride loop over n elements: no more
 * than fill the GPU. */
static inline unsigned int cuda_grid_for(size_t n)
{
	const size_t most = 65536;
	size_t blocks = (n + RED_THREADS - 1) / RED_THREADS;

	return (unsigned int)(blocks < most ? blocks : most);
}

/* The block's v combined with combine(a, b), in a fixed order (a tree
 * over thread ids, a shape that depends on nothing but RED_THREADS, so the
 * bits are the same run to run), given back to every thread.  sh holds
 * RED_THREADS values; the trailing barrier lets the caller reuse it at
 * once. */
template <typename T, typename Combine>
__device__ static inline T block_reduce(T v, T *sh, Combine combine)
{
	unsigned int t = threadIdx.x;

	sh[t] = v;
	__syncthreads();
	for (unsigned int s = RED_THREADS / 2; s > 0; s >>= 1) {
		if (t < s)
			sh[t] = combine(sh[t], sh[t + s]);
		__syncthreads();
	}
	T r = sh[0];
	__syncthreads();
	return r;
}

struct red_add {
	template <typename T>
	__device__ T operator()(T a, T b) const
	{
		return a + b;
	}
};

template <typename T>
__device__ static inline T block_sum(T v, T *sh)
{
	return block_reduce(v, sh, red_add());
}
#endif

#endif
