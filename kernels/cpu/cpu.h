/* cpu.h - the fp32 CPU backend's kernels, one function per entry of the
 * op table (kernels.h documents each contract); table.c gathers them into
 * kernels_cpu.  Loops are OpenMP; GEMMs go through OpenBLAS's cblas_sgemm,
 * which shares OpenMP's thread pool. */
#ifndef TITAN_KERNELS_CPU_H
#define TITAN_KERNELS_CPU_H
#include "kernels.h"

/* Hot loops are compiled three times and the widest version the CPU runs
 * is picked at load time: the x86-64 baseline is SSE2, whose lack of packed
 * integer min/max and FMA makes exp_f32 cost 4.2 ns a float, against 0.52
 * with AVX2+FMA and 0.39 with AVX-512.  Each version is deterministic;
 * versions differ from each other in the last bits (FMA contraction,
 * reduction width). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_WIDE __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CPU_WIDE
#endif

/* e^r for |r| <= ln2/2 by its Taylor series to r^7 (remainder under 5e-9):
 * the core both fast exps (ops.c, attention.c) put their range reduction
 * around.  Plain arithmetic, so the loops calling it vectorise. */
static inline __attribute__((always_inline)) float exp_taylor7(float r)
{
	float p = 1.0f / 5040;
	p = p * r + 1.0f / 720;
	p = p * r + 1.0f / 120;
	p = p * r + 1.0f / 24;
	p = p * r + 1.0f / 6;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	return p * r + 1.0f;
}

void cpu_matmul_forward(float *out, const float *inp, const float *weight,
			int N, int IC, int OC, bool accumulate);
void cpu_matmul_backward(float *dinp, float *dweight, const float *dout,
			 const float *inp, const float *weight,
			 int N, int IC, int OC, bool accumulate_dinp);
void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp,
			 const float *weight, int N, int C, float eps);
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout,
			  const float *inp, const float *weight,
			  const float *rstd, int N, int C);
void cpu_rope_forward(float *x, const int32_t *pos, const float *cos_tab,
		      const float *sin_tab, int N, int heads, int D);
void cpu_rope_backward(float *dx, const int32_t *pos, const float *cos_tab,
		       const float *sin_tab, int N, int heads, int D);
/* attention.c */
void cpu_attention_forward(float *out, float *lse, const float *q,
			   const float *k, const float *v,
			   const int32_t *kv_lo, const int32_t *kv_hi,
			   int B, int Tq, int Tk, int H, int KV, int D);
void cpu_attention_backward(float *dq, float *dk, float *dv,
			    const float *dout, const float *q,
			    const float *k, const float *v,
			    const float *out, const float *lse,
			    const int32_t *kv_lo, const int32_t *kv_hi,
			    int B, int Tq, int Tk, int H, int KV, int D);
void cpu_swiglu_forward(float *out, const float *a, const float *b, size_t n);
void cpu_swiglu_backward(float *da, float *db, const float *dout,
			 const float *a, const float *b, size_t n);
void cpu_embedding_forward(float *out, const uint32_t *ids,
			   const float *table, int N, int C);
void cpu_embedding_backward(float *dtable, const float *dout,
			    const uint32_t *ids, int N, int C);
void cpu_cross_entropy(float *loss, float *logits, const uint32_t *labels,
		       int N, int V, float dscale);
void cpu_matmul_forward_bf16(float *out, const kernel_bf16 *inp, const kernel_bf16 *weight,
			     int N, int IC, int OC, bool accumulate);
void cpu_matmul_backward_bf16(float *dinp, float *dweight, const float *dout,
			      const kernel_bf16 *inp, const kernel_bf16 *weight,
			      int N, int IC, int OC, bool accumulate_dinp);
void cpu_cast_bf16(kernel_bf16 *dst, const float *src, size_t n);
/* Scratch for one call of an op (free() it): large blocks in huge pages. */
void *cpu_scratch_alloc(size_t bytes);
/* table.c: an op that cannot run (out of memory for its own scratch)
 * notes why; the table's sync reports the first such failure and clears
 * it, as on a GPU. */
void cpu_note_failure(const char *what);

/* parallel.c */
void cpu_vocab_max(float *rmax, const float *logits, int N, int V);
void cpu_vocab_sumexp(float *rsum, float *rlab, const float *logits, const float *rmax,
		      const uint32_t *labels, uint32_t v0, int N, int V);
void cpu_vocab_finish(float *loss, float *logits, const float *rmax, const float *rsum,
		      const float *rlab, const uint32_t *labels, uint32_t v0, int N, int V,
		      float dscale);
/* tile_prims.c: kernels.h's bf16 attention, the tile schedule over the
 * CPU's primitives */
void cpu_attention_forward_bf16(float *out, float *lse, const float *q,
				const float *k, const float *v,
				const int32_t *kv_lo, const int32_t *kv_hi,
				int B, int Tq, int Tk, int H, int KV, int D);
void cpu_attention_backward_bf16(float *dq, float *dk, float *dv,
				 const float *dout, const float *q,
				 const float *k, const float *v,
				 const float *out, const float *lse,
				 const int32_t *kv_lo, const int32_t *kv_hi,
				 int B, int Tq, int Tk, int H, int KV, int D);
void cpu_attention_merge(float *out, float *lse_out, const float *o, const float *lse,
			 int B, int T, int H, int D);
void cpu_add_inplace(float *y, const float *x, size_t n);
double cpu_sumsq(const float *x, size_t n);
void cpu_adamw(const kernel_adamw_tensor *t, int nt, double lr, double beta1, double beta2,
	       double eps, long step, float grad_scale);

#endif
