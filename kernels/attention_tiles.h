/* attention_tiles.h - the attention ops of kernels.h as batched GEMMs over
 * key tiles: FlashAttention's online softmax, with the two products of each
 * tile done by a backend's batched GEMM (tensor cores, cuBLAS) and only the
 * softmax left to small elementwise kernels.
 *
 * The schedule (which tiles, which GEMMs, what pointers) is plain C, the
 * same for every backend, and a backend supplies the primitives below.  The
 * CPU backend's primitives exist so that the schedule is tested without a
 * GPU against the CPU's own attention (kernels/cpu/attention.c, the
 * reference); the CUDA backend runs the same schedule over cuBLAS.
 *
 * Forward, for each key tile [k0, k1) (the queries that see none of its keys
 * are not computed, see below), per batch row b and query head h (KV head
 * g = h / (H / KV)), over the query rows [qa, qb) that see any key of the
 * tile:
 *   S   = scale * Q[qa:qb] K[k0:k1]^T                           (GEMM)
 *   softmax_tile: masked keys out, running max m and sum l per query,
 *         out rows rescaled by exp(m_old - m_new), S turned into P
 *   out[qa:qb] += P V[k0:k1]                                     (GEMM)
 * then finish: out /= l, lse = m + log l.  So memory holds one tile of
 * scores per head, [qb - qa, k1 - k0], never Tq x Tk.  Where all the
 * queries' scores against a tile of TILE_KEYS keys (attention_tiles.c)
 * would not fit the budget, the batch rows go in chunks, one call of the
 * schedule each, and where one batch row does not fit, its queries go in
 * chunks of rows, each chunk over the key tiles in order: a row still
 * meets its keys tile by tile in the same order, and tiles stay wide.
 *
 * Backward, with D_i = rowsum(dout_i * out_i) first (rowdot), per key tile:
 *   S   = scale * Q K^T,  dP = dout V^T                          (GEMMs)
 *   grad_tile: P = exp(S - lse) (masked), dS = scale * P * (dP - D_i)
 *   dq[qa:qb] += dS K,  dk[k0:k1] += dS^T Q,  dv[k0:k1] += P^T dout  (GEMMs)
 * dk and dv of a KV head sum over its H / KV query heads: one batched GEMM
 * over every query head writes each head's share to rows of its own
 * (scratch), and group_sum adds each group's shares in head order (no two
 * GEMMs of a batch may write the same output).
 *
 * Every GEMM is row-major: C[M,N] = alpha op(A) op(B) + beta C, op(A) A
 * [M,K] (row stride lda) or, with ta, the transpose of A stored [K,M]; op(B)
 * B [K,N] or, with tb, the transpose of B stored [N,K].  A batch is given as
 * three pointer lists (A, B, C) of `batch` entries each, consecutive in the
 * call's pointer table (see pointers).
 *
 * In bf16 (attention_tiles_shape.bf16) every GEMM reads bfloat16 operands
 * and sums in fp32, as tensor cores do and as FlashAttention does with
 * bf16 inputs: q, k, v (and dout) are rounded once per call into copies
 * whose rows are padded to a multiple of 8 elements (16 bytes, so every
 * operand a GEMM is given is aligned for the tensor cores), and P and dS
 * are rounded where the softmax steps write them, next to the fp32 values
 * (row sums, m, l stay fp32).  C (scores, out, dq, dk, dv) is always fp32.
 * Score rows, fp32 and bf16, are ld16 elements apart (N rounded up to 8),
 * so that every (b, h) block of a tile starts 32-byte aligned too: a
 * batched bf16 GEMM cannot check the pointers of its table, and its
 * tensor-core kernels want each A, B and C 16-byte aligned.  The same
 * holds for out, dq, dk and dv when D is a multiple of 4.
 * The CPU runs the same schedule over primitives that round the same way,
 * which is the CPU twin of the GPU's bf16 attention. */
#ifndef TITAN_KERNELS_ATTENTION_TILES_H
#define TITAN_KERNELS_ATTENTION_TILES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct attention_tile_prims {
	void *ctx;   /* passed to every primitive */
	/* Bytes a bf16 value takes in the backend's copies: 2, or 4 for a
	 * backend that keeps bf16 values widened to fp32 (exactly), whose
	 * GEMM then is its fp32 one (the CPU's: no widening per GEMM). */
	int bf16_size;
	/* Memory of the backend for the op's own buffers (scores, m, l,
	 * D_i), not zero-filled; NULL when there is none (the op then
	 * returns -1).  put takes NULL. */
	void *(*scratch_get)(void *ctx, size_t bytes);
	void (*scratch_put)(void *ctx, void *p);
	/* The op's pointer table, n entries, built on the host before the
	 * first GEMM: the table where the backend's GEMMs can read it (the
	 * host table itself on the CPU, a device copy on a GPU, in a block
	 * with room for `room` >= n entries: what any mask could need, so
	 * that the op's memory does not depend on the mask), valid until
	 * pointers_put; NULL on failure. */
	void *const *(*pointers)(void *ctx, void *const *host, size_t n, size_t room);
	void (*pointers_put)(void *ctx, void *const *table);
	/* x[0..n) = value */
	void (*fill)(void *ctx, float *x, float value, size_t n);
	/* bf16 only: dst row r (ld elements apart) = src row r (w floats, rows
	 * back to back) rounded to bfloat16, to nearest, ties to even; the
	 * ld - w padding elements are not read by any GEMM and may hold
	 * anything. */
	void (*to_bf16)(void *ctx, void *dst, const float *src, size_t rows, int w, int ld);
	/* The batched GEMM (above); A, B and C point into the table from
	 * pointers, each `batch` entries.  bf16: A and B hold bfloat16 values
	 * (bf16_size bytes each), C fp32, products summed in fp32. */
	void (*gemm)(void *ctx, bool bf16, bool ta, bool tb, int M, int N, int K, float alpha,
		     void *const *A, int lda, void *const *B, int ldb, float beta,
		     void *const *C, int ldc, int batch);
	/* One key tile of the forward.  s is [B][H][M][ld16], ld16 =
	 * attention_tiles_ld16(N), the scaled scores of query rows
	 * qa .. qa+M-1 against keys k0 .. k0+N-1 (the ld16 - N columns past
	 * them are neither read nor written); m, l are
	 * [B][H][Tq]; out is [B][Tq][H][D]; lo, hi [B*Tq] the op's key
	 * ranges.  For each row (b, h, t = qa + i): key k0 + j is seen iff
	 * lo <= k0 + j <= hi.  A row that sees no key of the tile keeps its
	 * m, l and out and gets P = 0.  Otherwise, with m' = max(m, max of the
	 * seen scores): P_j = exp(s_j - m') for seen keys, 0 for the others;
	 * l = l * exp(m - m') + sum_j P_j (exp(-inf) = 0 when m was -inf); the
	 * row out[b, t, h, :] *= exp(m - m'); m = m'.  P replaces s, or when
	 * p16 is not NULL goes, rounded to bf16, there instead (s is then left
	 * as it is: no GEMM reads it), laid out as s; l sums the unrounded
	 * P. */
	void (*softmax_tile)(void *ctx, float *s, void *p16, float *m, float *l, float *out,
			     const int32_t *lo, const int32_t *hi, int B, int H, int Tq,
			     int qa, int M, int k0, int N, int D);
	/* out[b, t, h, :] /= l and lse = m + log(l) for rows with l > 0;
	 * out 0 and lse -inf for the others.  lse is [B][H][Tq]. */
	void (*finish)(void *ctx, float *out, float *lse, const float *m, const float *l,
		       int B, int Tq, int H, int D);
	/* dvec[b][h][t] = sum_d dout[b, t, h, d] * out[b, t, h, d] */
	void (*rowdot)(void *ctx, float *dvec, const float *dout, const float *out,
		       int B, int Tq, int H, int D);
	/* One key tile of the backward.  s (scaled scores) and dp are
	 * [B][H][M][ld16] as in softmax_tile.  For a seen key with lse > -inf:
	 * P = exp(s - lse), dS = scale * P * (dp - dvec); else P = 0, dS = 0.
	 * P replaces s and dS replaces dp; or, when p16 and ds16 are not
	 * NULL, both go there instead, rounded to bf16 and laid out as
	 * softmax_tile's p16. */
	void (*grad_tile)(void *ctx, float *s, float *dp, void *p16, void *ds16,
			  const float *lse, const float *dvec, const int32_t *lo,
			  const int32_t *hi, int B, int H, int Tq, int qa, int M, int k0, int N,
			  float scale);
	/* GQA's dk and dv: for every KV head g, dst[b, k0 + j, g, :] (rows of
	 * [B][Tk][KV][D]) += part[b, g rep + r, j, :] for r = 0 .. rep-1 in
	 * order, part [B][KV rep][N][D]. */
	void (*group_sum)(void *ctx, float *dst, const float *part, int B, int Tk, int KV,
			  int rep, int k0, int N, int D);
} attention_tile_prims;

/* The shape of one call, as kernels.h's attention ops take it, and how to
 * run it: key_tile keys per tile, query_chunk query rows and batch_chunk
 * batch rows per chunk (0 picks them so that the score buffers stay within
 * ATTENTION_TILES_BUDGET bytes with wide tiles; with a key_tile given, 0
 * for a chunk is all the rows), bf16 operands or fp32. */
typedef struct attention_tiles_shape {
	int B, Tq, Tk, H, KV, D;
	int key_tile;
	bool bf16;
	int query_chunk, batch_chunk;
} attention_tiles_shape;

#define ATTENTION_TILES_BUDGET ((size_t)512 << 20)

/* The row stride of a bf16 copy of rows n elements wide, and of a tile's
 * score rows of n keys. */
static inline int attention_tiles_ld16(int n)
{
	return (n + 7) / 8 * 8;
}

/* The keys per tile, batch rows per chunk and query rows per chunk a call
 * of this shape runs with (see attention_tiles.c). */
void attention_tiles_blocking(const attention_tiles_shape *shape, int *key_tile,
			      int *batch_chunk, int *query_chunk);

/* What one call takes from the backend at once, for a memory model: the
 * scratch block (scores, softmax state, bf16 copies of bf16_size bytes a
 * value, see attention_tile_prims) and the pointer table's block (room
 * for every pair of query chunk and key tile, whatever the mask). */
void attention_tiles_scratch(const attention_tiles_shape *shape, bool backward, int bf16_size,
			     size_t *scratch, size_t *pointers);

/* kernels.h's attention_forward and attention_backward over prims (bf16:
 * with bf16 operands, see the top).  lo and hi are the ranges where the
 * backend's kernels read them; host_lo and host_hi the same values on the
 * host, which plan the tiles.  0, or -1 when scratch or the host's memory
 * ran out (nothing is then computed: the outputs are undefined). */
int attention_tiles_forward(const attention_tile_prims *p, const attention_tiles_shape *shape,
			    float *out, float *lse, const float *q, const float *k,
			    const float *v, const int32_t *lo, const int32_t *hi,
			    const int32_t *host_lo, const int32_t *host_hi);
int attention_tiles_backward(const attention_tile_prims *p, const attention_tiles_shape *shape,
			     float *dq, float *dk, float *dv, const float *dout,
			     const float *q, const float *k, const float *v,
			     const float *out, const float *lse,
			     const int32_t *lo, const int32_t *hi,
			     const int32_t *host_lo, const int32_t *host_hi);

/* The CPU's primitives (kernels/cpu/tile_prims.c): OpenBLAS and plain
 * loops over host memory; ctx is unused. */
extern const attention_tile_prims attention_tile_prims_cpu;

#ifdef __cplusplus
}
#endif
#endif
