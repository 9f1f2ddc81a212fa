/* cuda.h - the CUDA backend's fp32 kernels, one function per entry of the
 * op table (kernels.h documents each contract), callable from C:
 * cuda_host.c gathers them into the table kernels_cuda_ops returns.
 *
 * Every function queues its work on the backend's stream (cuda_stream) and
 * returns; a failure to launch is kept for the next kernels_cuda_sync,
 * since the op table's kernels have no error return.  GEMMs go through
 * cuBLAS (fp32, no TF32: the twin must agree with the CPU backend to fp32
 * rounding). */
#ifndef TITAN_KERNELS_CUDA_H
#define TITAN_KERNELS_CUDA_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
int cuda_alloc(void **p, size_t n, char *why, size_t wn);
void cuda_free(void *p);
/* to_device: host src to device dst; else device src to host dst.  Both
 * wait for what is queued before them. */
int cuda_copy(void *dst, const void *src, size_t n, bool to_device, char *why, size_t wn);

/* ops.cu */
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
void cuda_scale(float *x, float s, size_t n);
double cuda_sumsq(const float *x, size_t n);
void cuda_adamw(float *param, const float *grad, float *m, float *v, size_t n,
		double lr, double beta1, double beta2, double eps,
		double weight_decay, long step);

/* attention.cu */
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
#endif

#endif
