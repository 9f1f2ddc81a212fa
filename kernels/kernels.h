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

/* What a backend's device memory holds, for the metrics: bytes taken from
 * the device (the caching allocator's cache included) now and at most,
 * calls to the device's own allocator, and the device's free and total
 * memory as the driver reports them (0 when it cannot tell). */
typedef struct kernel_mem_stats {
	size_t reserved, reserved_peak;
	long device_allocs;
	size_t device_free, device_total;
} kernel_mem_stats;

/* A bfloat16 value as every backend stores it in its memory: the top 16
 * bits of the fp32 value, rounded (lib/core/half.h). */
typedef uint16_t kernel_bf16;

/* One tensor of an AdamW step (kernel_ops.adamw): its parameters,
 * gradient and moments (n floats each), its weight decay, and where its
 * parameters' bf16 copy goes (NULL: none). */
typedef struct kernel_adamw_tensor {
	float *param;
	const float *grad;
	float *m, *v;
	size_t n;
	double weight_decay;
	kernel_bf16 *param_bf16;
} kernel_adamw_tensor;

typedef struct kernel_ops {
	const char *name;  /* "cpu", "cuda", "cpu-fenced" */

	/* Device memory.  Every pointer an op takes lies in a buffer from
	 * alloc; host code reaches that memory only through upload, download
	 * and the ops, unless host_memory says the device is the host.
	 * alloc: bytes of zero-filled memory, 64-byte aligned, into *p; 0, or
	 * TITAN_ENOMEM with the reason set.  free takes what alloc gave (NULL
	 * is fine) with the same bytes.  upload (host src to device dst) and
	 * download (device src to host dst) run after the ops queued before
	 * them and return when the copy is done; 0, or negative with the
	 * reason.  zero and copy (device to device) are queued like ops.  sync
	 * waits for everything queued and reports the first failure since the
	 * last sync.  mem_stats may be NULL. */
	int (*alloc)(void **p, size_t bytes);
	void (*free)(void *p, size_t bytes);
	int (*upload)(void *dst, const void *src, size_t bytes);
	int (*download)(void *dst, const void *src, size_t bytes);
	void (*zero)(void *p, size_t bytes);
	void (*copy)(void *dst, const void *src, size_t bytes);
	int (*sync)(void);
	void (*mem_stats)(kernel_mem_stats *s);
	bool host_memory;

	/* out[N,OC] = inp[N,IC] @ weight[OC,IC]^T (PyTorch Linear, no bias);
	 * accumulate: out += instead of =. */
	void (*matmul_forward)(float *out, const float *inp, const float *weight,
			       int N, int IC, int OC, bool accumulate);
	/* dinp[N,IC] = dout @ weight (or += with accumulate_dinp);
	 * dweight[OC,IC] += dout^T @ inp.  dinp or dweight may be NULL. */
	void (*matmul_backward)(float *dinp, float *dweight, const float *dout,
				const float *inp, const float *weight,
				int N, int IC, int OC, bool accumulate_dinp);

	/* The same two GEMMs with bf16 operands and the products summed in
	 * fp32, as tensor cores compute them (training.matmul_dtype=
	 * bfloat16).  The weight and the input come as bfloat16 already
	 * (cast_bf16 below: the model casts a weight once per update and an
	 * activation once, where it is made, for every GEMM that reads it);
	 * dout comes as fp32 and is rounded inside, to nearest, ties to even,
	 * as PyTorch's .to(torch.bfloat16).  out, dinp and dweight are fp32.
	 * A product of two bf16 values is exact in fp32, so the CPU's result
	 * is the GPU's up to the order of the sums.  A device backend casts
	 * dout's rows kernels_bf16_chunk_rows at a time (below). */
	void (*matmul_forward_bf16)(float *out, const kernel_bf16 *inp, const kernel_bf16 *weight,
				    int N, int IC, int OC, bool accumulate);
	void (*matmul_backward_bf16)(float *dinp, float *dweight, const float *dout,
				     const kernel_bf16 *inp, const kernel_bf16 *weight,
				     int N, int IC, int OC, bool accumulate_dinp);
	/* dst[i] = src[i] rounded to bfloat16 (to nearest, ties to even). */
	void (*cast_bf16)(kernel_bf16 *dst, const float *src, size_t n);

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

	/* The same two ops with bf16 GEMM operands (training.matmul_dtype=
	 * bfloat16), as FlashAttention runs them on bf16 inputs: q, k, v and
	 * dout rounded to bfloat16, and the probabilities P and their
	 * gradient dS rounded before the GEMMs that read them; scores, the
	 * softmax's running max and sum, lse and every output in fp32.  The
	 * CPU runs kernels/attention_tiles.c's schedule, the CUDA backend
	 * fused kernels (kernels/attention_flash.h; the schedule where they do
	 * not fit), both over key tiles of ATTENTION_FLASH_KEYS from key 0, so
	 * P is rounded against the same running maxima and the CPU's result is
	 * the GPU's up to the order of the sums. */
	void (*attention_forward_bf16)(float *out, float *lse, const float *q,
				       const float *k, const float *v,
				       const int32_t *kv_lo, const int32_t *kv_hi,
				       int B, int Tq, int Tk, int H, int KV, int D);
	void (*attention_backward_bf16)(float *dq, float *dk, float *dv,
					const float *dout, const float *q,
					const float *k, const float *v,
					const float *out, const float *lse,
					const int32_t *kv_lo, const int32_t *kv_hi,
					int B, int Tq, int Tk, int H, int KV, int D);

	/* Optional: NULL where the attention ops read the key ranges where
	 * they are (the CPU's).  A backend that plans attention on the host
	 * (CUDA's tiles) would otherwise copy kv_lo and kv_hi back on every
	 * call, a wait for the device each time; with this it takes them from
	 * host_lo and host_hi (n each, copied now) for calls whose ranges lie
	 * in lo[0..n) and hi[0..n) at the same offset.  The caller promises
	 * that the device's lo and hi hold those values until it calls again
	 * for the same lo (after every upload of new ranges) or with n = 0
	 * (before it frees them). */
	void (*attention_ranges)(const int32_t *lo, const int32_t *hi,
				 const int32_t *host_lo, const int32_t *host_hi, size_t n);

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

	/* Loss-parallel cross-entropy (tensor parallel: each rank holds the
	 * logits[N,V] of vocabulary rows v0..v0+V-1 and none holds a whole
	 * row), in three steps with a reduction over the ranks between them:
	 * rmax[n] = max of the row (then the maximum over the ranks);
	 * rsum[n] = sum of exp(logit - rmax[n]) accumulated in double, and
	 * rlab[n] = the label's logit when labels[n] is in this rank's slice,
	 * else 0 (then both summed over the ranks); finally loss[n] =
	 * log(rsum) + rmax - rlab and, when dscale is not 0, the logits are
	 * overwritten with (softmax - onehot) * dscale as cross_entropy does. */
	void (*vocab_max)(float *rmax, const float *logits, int N, int V);
	void (*vocab_sumexp)(float *rsum, float *rlab, const float *logits,
			     const float *rmax, const uint32_t *labels, uint32_t v0,
			     int N, int V);
	void (*vocab_finish)(float *loss, float *logits, const float *rmax,
			     const float *rsum, const float *rlab,
			     const uint32_t *labels, uint32_t v0, int N, int V,
			     float dscale);
	/* Ring attention's merge of a key block's partial result (o[B,T,H,D],
	 * lse[B,H,T]) into the running one (out, lse_out): lse = logaddexp of
	 * the two, out the two weighted by exp(their lse - lse).  A query
	 * whose block lse is -inf keeps what it had. */
	void (*attention_merge)(float *out, float *lse_out, const float *o,
				const float *lse, int B, int T, int H, int D);

	/* y[n] += x[n] */
	void (*add_inplace)(float *y, const float *x, size_t n);
	/* sum of x[n]^2, accumulated in double */
	double (*sumsq)(const float *x, size_t n);
	/* One AdamW step on nt tensors at once (multi-tensor: a device
	 * backend updates them in one launch), each exactly PyTorch's (1.13+)
	 * order of operations: p *= 1 - lr*wd; m = b1*m + (1-b1)*g;
	 * v = b2*v + (1-b2)*g*g; p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step)
	 * + eps).  step >= 1.  The scalars are doubles, as the Python values
	 * PyTorch computes with.  A tensor with param_bf16 also gets its
	 * updated parameters rounded to bfloat16 there (cast_bf16's rounding),
	 * the copy bf16 GEMMs read, in the same pass.  g is the gradient
	 * times grad_scale, in fp32: clip_grad_norm_'s coefficient, which
	 * PyTorch multiplies the gradients by in place before the step (1:
	 * none), so the step reads them once; the gradients are left as they
	 * are.  t is host memory; the pointers in it are the backend's. */
	void (*adamw)(const kernel_adamw_tensor *t, int nt, double lr, double beta1,
		      double beta2, double eps, long step, float grad_scale);
} kernel_ops;

/* The fp32 CPU backend (kernels/cpu): OpenBLAS sgemm and OpenMP loops. */
extern const kernel_ops kernels_cpu;

/* The CUDA backend's fp32 twin of kernels_cpu (kernels/cuda; NULL in a
 * build without CUDA): the same contracts over device memory, the ops
 * queued in order on the backend's own stream of the current device (the
 * device current when the first op or allocation runs).  Ops return
 * nothing; sync waits for them and reports the first failure since the
 * last sync.  sumsq syncs (its result is on the host).  Parameter-gradient
 * "+=" is done with atomics where rows collide (embedding_backward), so
 * those sums are not bit-reproducible run to run; everything else is.
 * Memory comes from a caching allocator (lib/core/cache_alloc.h): a freed
 * buffer is kept for the next request of its size class, so a training
 * step, which allocates nothing new, never calls cudaMalloc. */
const kernel_ops *kernels_cuda_ops(void);
/* Make device `device` the current one of this thread (before the first
 * op): 0, or negative with the reason (no such device, no driver). */
int kernels_cuda_set_device(int device);

/* The CPU backend over fenced memory, a device for testing the device
 * path without a GPU: the CPU's ops, but its memory is mapped without
 * access except while an op, a copy or upload/download runs, so host code
 * that reads or writes device memory directly dies with SIGSEGV at the
 * access, as it would read garbage on a GPU.  Its ops are called from one
 * thread, as a GPU's stream is fed; not for speed. */
const kernel_ops *kernels_fenced_ops(void);

/* sgemm throughput of this machine in FLOP/s (square fp32 GEMMs of size n
 * through the same BLAS the CPU backend uses, best of a few runs): the
 * denominator of MFU on CPU.  Takes about a second. */
double kernels_cpu_sgemm_peak(int n);

/* The same measure through a backend's own matmul_forward (bf16:
 * matmul_forward_bf16 on operands cast beforehand, as the model's are) on
 * its memory (out[n,n] =
 * a[n,n] b[n,n]^T): the denominator of MFU on a device, for the GEMMs the
 * run uses; 0 when its memory cannot be had. */
double kernels_matmul_peak(const kernel_ops *ops, int n, bool bf16);

/* The rows of dout [N, OC] a device backend's bf16 backward GEMM casts at
 * a time: the bf16 copy of one chunk stays near KERNELS_BF16_CHUNK_BYTES,
 * so that the output head's dout [N, V] is never copied whole (2 N V
 * bytes: 4 GiB for llama3's vocabulary at 16K tokens).  The weight and
 * the input need no copy: they come in bf16. */
#define KERNELS_BF16_CHUNK_BYTES ((size_t)64 << 20)
/* ... but never fewer rows than this: each chunk's dweight GEMM reads and
 * writes the whole fp32 dweight [OC, IC], rows / 4 flops a byte, and an
 * H100 needs about 300 (990 TFLOP/s over 3.35 TB/s) not to wait on
 * memory.  The head's chunk is then 2048 V bf16 values (0.5 GB for
 * llama3), below what the tiled attention takes. */
#define KERNELS_BF16_CHUNK_MIN_ROWS 2048
static inline int kernels_bf16_chunk_rows(int N, int OC)
{
	size_t per_row = 2 * (size_t)OC;
	size_t rows = per_row ? KERNELS_BF16_CHUNK_BYTES / per_row : (size_t)N;

	if (rows < KERNELS_BF16_CHUNK_MIN_ROWS)
		rows = KERNELS_BF16_CHUNK_MIN_ROWS;
	return rows < (size_t)N ? (int)rows : N;
}

/* A device backend sums RMSNorm's weight gradient over N rows in this
 * many chunks side by side (at least 64 rows each, at most 128 chunks),
 * then the chunks' sums in order: one thread per column walking every
 * row would leave all but a few of the GPU's cores idle.  Its scratch is
 * chunks x C doubles. */
static inline int kernels_rmsnorm_dweight_chunks(int N)
{
	int chunks = N / 64 + (N % 64 != 0);

	return chunks < 1 ? 1 : chunks > 128 ? 128 : chunks;
}

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
