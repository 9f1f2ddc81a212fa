/* kernels.h - the compute backends' shared entry points.
 *
 * The model is written once over the op table below; each backend fills one
 * (kernels_cpu here, the CUDA table later), and every pointer an op takes is
 * memory of that backend's device.  The CPU backend is always built; the CUDA
 * backend (kernels/cuda) only with `make CUDA=1`.  Without a GPU, or in a
 * build without CUDA, the CUDA entry points fail cleanly with a message and
 * the CPU backend works as always.
 *
 * Shapes: N = B * T tokens (row-major, token-major), C model dim, H heads,
 * KV key/value heads (H % KV == 0), D head dim, F FFN hidden, V vocab.
 * Activations of attention are token-major: q is [B, T, H, D], k and v are
 * [B, T, KV, D], exactly what the projections' matmuls produce (attention
 * allows a different number of keys than queries: Tq, Tk).
 *
 * Gradient conventions: parameter gradients (dweight, dtable) always
 * accumulate (+=), so gradient accumulation over micro-batches is free;
 * activation gradients are overwritten unless the op says "+=". */
#ifndef TITAN_KERNELS_H
#define TITAN_KERNELS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kernel_ops {
	const char *name;  /* "cpu", "cuda" */

	/* out[N,OC] = inp[N,IC] @ weight[OC,IC]^T (PyTorch Linear, no bias);
	 * accumulate: out += instead of =. */
	void (*matmul_forward)(float *out, const float *inp, const float *weight,
			       int N, int IC, int OC, bool accumulate);
	/* dinp[N,IC] = dout @ weight (or += with accumulate_dinp);
	 * dweight[OC,IC] += dout^T @ inp.  dinp or dweight may be NULL. */
	void (*matmul_backward)(float *dinp, float *dweight, const float *dout,
				const float *inp, const float *weight,
				int N, int IC, int OC, bool accumulate_dinp);

	/* out[N,C] = inp * rstd * weight, rstd[N] = 1/sqrt(mean(inp^2) + eps) */
	void (*rmsnorm_forward)(float *out, float *rstd, const float *inp,
				const float *weight, int N, int C, float eps);
	/* dinp[N,C] += ..., dweight[C] += ... */
	void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout,
				 const float *inp, const float *weight,
				 const float *rstd, int N, int C);

	/* Rotary embedding in place on x[N, heads, D]: each pair (2i, 2i+1) of
	 * token n turns by angle pos[n] * freq[i] (Meta's interleaved layout).
	 * cos_tab/sin_tab are [max_pos, D/2]; pos[n] < max_pos.  backward turns
	 * a gradient by the opposite angle, also in place. */
	void (*rope_forward)(float *x, const int32_t *pos, const float *cos_tab,
			     const float *sin_tab, int N, int heads, int D);
	void (*rope_backward)(float *dx, const int32_t *pos, const float *cos_tab,
			      const float *sin_tab, int N, int heads, int D);

	/* Scaled dot-product attention (scale 1/sqrt(D)) with grouped KV heads:
	 * query head h reads KV head h / (H / KV).  A row b has Tq queries
	 * and Tk keys; query t of row b attends to the keys kv_lo[b*Tq + t] ..
	 * kv_hi[b*Tq + t] of its row (inclusive).  lo = 0, hi = t is the causal
	 * mask; lo = first token of t's document the block causal (document)
	 * mask; context parallel passes the range of another rank's keys a
	 * query sees.  A query with lo > hi sees no key: out 0, lse -inf.
	 * Never materialises Tq x Tk: online softmax over key blocks, and key
	 * blocks outside every range of a query block are skipped.
	 * out[B,Tq,H,D]; lse[B,H,Tq] the log-sum-exp of each query's scaled
	 * scores (what backward needs to rebuild the probabilities, and what
	 * merges partial results: with lse = logaddexp(lse1, lse2), out =
	 * out1 exp(lse1 - lse) + out2 exp(lse2 - lse)). */
	void (*attention_forward)(float *out, float *lse, const float *q,
				  const float *k, const float *v,
				  const int32_t *kv_lo, const int32_t *kv_hi,
				  int B, int Tq, int Tk, int H, int KV, int D);
	/* dq[B,Tq,H,D], dk and dv [B,Tk,KV,D] overwritten.  out and lse are
	 * those of the whole attention (merged over every key block when the
	 * keys came in parts), so the gradients are this block of keys' share:
	 * summed over the blocks, the whole gradient. */
	void (*attention_backward)(float *dq, float *dk, float *dv,
				   const float *dout, const float *q,
				   const float *k, const float *v,
				   const float *out, const float *lse,
				   const int32_t *kv_lo, const int32_t *kv_hi,
				   int B, int Tq, int Tk, int H, int KV, int D);

	/* out[n] = silu(a[n]) * b[n]; backward overwrites da, db. */
	void (*swiglu_forward)(float *out, const float *a, const float *b, size_t n);
	void (*swiglu_backward)(float *da, float *db, const float *dout,
				const float *a, const float *b, size_t n);

	/* out[N,C] = table[ids[n]]; backward: dtable[ids[n]] += dout[n]. */
	void (*embedding_forward)(float *out, const uint32_t *ids,
				  const float *table, int N, int C);
	void (*embedding_backward)(float *dtable, const float *dout,
				   const uint32_t *ids, int N, int C);

	/* loss[n] = logsumexp(logits[n]) - logits[n][labels[n]].  When dscale
	 * is not 0, logits[N,V] is overwritten with its gradient
	 * (softmax - onehot(label)) * dscale, so the largest activation needs
	 * no second buffer. */
	void (*cross_entropy)(float *loss, float *logits, const uint32_t *labels,
			      int N, int V, float dscale);

	/* y[n] += x[n] */
	void (*add_inplace)(float *y, const float *x, size_t n);
	/* x[n] *= s */
	void (*scale)(float *x, float s, size_t n);
	/* sum of x[n]^2, accumulated in double */
	double (*sumsq)(const float *x, size_t n);
	/* One AdamW step on n parameters, exactly PyTorch's (1.13+) order of
	 * operations: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
	 * p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps).  step >= 1.
	 * The scalars are doubles, as the Python values PyTorch computes with. */
	void (*adamw)(float *param, const float *grad, float *m, float *v, size_t n,
		      double lr, double beta1, double beta2, double eps,
		      double weight_decay, long step);
} kernel_ops;

/* The fp32 CPU backend (kernels/cpu): OpenBLAS sgemm and OpenMP loops. */
extern const kernel_ops kernels_cpu;

/* The CUDA backend's fp32 twin of kernels_cpu (kernels/cuda; NULL in a
 * build without CUDA): the same contracts over device memory, the ops
 * queued in order on the backend's own stream of the current device.  Ops
 * return nothing; kernels_cuda_sync waits for them and reports the first
 * failure since the last sync.  sumsq syncs (its result is on the host).
 * Parameter-gradient "+=" is done with atomics where rows collide
 * (embedding_backward), so those sums are not bit-reproducible run to
 * run; everything else is. */
const kernel_ops *kernels_cuda_ops(void);
/* Device memory for the ops: n bytes into *p (TITAN_ENOMEM or TITAN_EIO
 * with the reason), free (NULL is fine), and copies to and from the host
 * that wait for the ops queued before them. */
int kernels_cuda_alloc(void **p, size_t n);
void kernels_cuda_free(void *p);
int kernels_cuda_upload(void *dst, const void *src, size_t n);
int kernels_cuda_download(void *dst, const void *src, size_t n);
int kernels_cuda_sync(void);

/* sgemm throughput of this machine in FLOP/s (square fp32 GEMMs of size n
 * through the same BLAS the CPU backend uses, best of a few runs): the
 * denominator of MFU on CPU.  Takes about a second. */
double kernels_cpu_sgemm_peak(int n);

/* 1 when this build includes the CUDA backend. */
int kernels_cuda_built(void);

/* Check that a CUDA device, cuBLAS(Lt) and NCCL work: runs a small kernel
 * and compares its result on the host.  0 on success with a one-line
 * description in info; negative with the reason set through the error API. */
int kernels_cuda_probe(char *info, size_t n);

#ifdef __cplusplus
}
#endif
#endif
