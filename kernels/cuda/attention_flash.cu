/* attention_flash.cu - the CUDA backend's bf16 attention as fused
 * FlashAttention-2 kernels (attention_flash.h says which calls): one kernel
 * for the forward (blocks of 64 queries, 128 for head dims up to 64), two
 * for the backward (dq over blocks of 64 queries; dk and dv over blocks of
 * 64 keys, in rounds of 64 queries, 32 for wider heads), each tile of
 * scores living in registers only.
 *
 * The tensor cores are driven with mma.sync m16n8k16 (bf16 in, fp32
 * sums), which exists from sm_80 on.  A warp owns 16 rows of a tile.  Its
 * accumulator fragment of S (lane 4 g + quad holds rows g and g + 8,
 * columns 2 quad and 2 quad + 1 of each 8-column slice) is, two slices side by
 * side, exactly the A fragment of the next MMA, so P and dS go from one
 * product to the next without leaving the registers.  Operands that sit in
 * shared memory are read with ldmatrix (.trans where the MMA needs them
 * column-major); every row there is padded by 8 values (16 bytes), which
 * puts the 8 rows one ldmatrix phase reads in 8 different bank groups.
 *
 * The numbers are those attention_tiles.h gives the bf16 ops: q, k, v and
 * dout rounded to bf16 once (into the call's scratch); scores, the running
 * max and sum, lse and every output fp32; P and dS rounded where they
 * become MMA operands, l summing the unrounded P.  The softmax works in
 * base 2 (scores times scale * log2 e, exp2f), as FlashAttention does: the
 * same values up to fp32 rounding.  Key tiles are ATTENTION_FLASH_KEYS
 * from key 0, the tiles the CPU backend's bf16 schedule uses, so P is
 * rounded against the same running maxima on both.  The sums run in an
 * order fixed by the shapes alone: results are the same run to run.
 *
 * Masks come as ranges (kernels.h): each thread tests its elements against
 * its rows' [lo, hi], and a block skips the tiles none of its rows' ranges
 * meets, from a table of each 16-row group's smallest lo and largest hi
 * made first (query_groups_kernel).  Rows and keys past the ends load as
 * zeros (cp.async's zero fill) and are masked; a masked element's P and dS
 * are set to 0 outright, never computed from what the padding holds, so no
 * garbage meets a product.
 *
 * The key and query tiles stream through two shared-memory buffers: each
 * round commits one group of copies, empty when there is nothing left to
 * load, so that cp.async.wait_group 1 always means "the buffer this round
 * reads has landed". */
#include "cuda/cuda.h"
#include "attention_flash.h"
#include "attention_tiles.h"
#include <climits>
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>

typedef __nv_bfloat16 bf16;
typedef uint32_t u32;

enum {
	FLASH_WARPS = 4,
	FLASH_THREADS = 32 * FLASH_WARPS,
	BLOCK_ROWS = 16 * FLASH_WARPS,   /* queries (forward, dq) or keys (dk, dv) */
	TILE = ATTENTION_FLASH_KEYS,
	GROUP = ATTENTION_FLASH_ROWS,
};

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* d += a b for one 16x8x16 step. */
__device__ static inline void mma(float d[4], const u32 a[4], u32 b0, u32 b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 matrices of 16-bit values, lane 8 i + r giving row r of
 * matrix i; .trans hands each lane the transposed element pairs. */
__device__ static inline void ldsm4(u32 r[4], const bf16 *row)
{
	u32 a = (u32)__cvta_generic_to_shared(row);

	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}

__device__ static inline void ldsm4_trans(u32 r[4], const bf16 *row)
{
	u32 a = (u32)__cvta_generic_to_shared(row);

	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}

/* 16 bytes global to shared, or 16 zero bytes when !valid. */
__device__ static inline void copy16(bf16 *dst, const bf16 *src, bool valid)
{
	u32 a = (u32)__cvta_generic_to_shared(dst);

	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
		     :: "r"(a), "l"(src), "r"(valid ? 16 : 0) : "memory");
}

__device__ static inline void copy_commit(void)
{
	asm volatile("cp.async.commit_group;" ::: "memory");
}

template <int N>
__device__ static inline void copy_wait(void)
{
	asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
}

__device__ static inline u32 pack(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);

	return *(u32 *)&v;
}

/* rows x D values of a [.., D] head slice whose rows are stride apart, to
 * shared rows of D + 8; rows at or past `valid` are zeros. */
template <int D>
__device__ static inline void load_rows(bf16 *dst, const bf16 *src, size_t stride, int rows,
					int valid)
{
	constexpr int CHUNKS = D / 8, LDS = D + 8;

	for (int c = threadIdx.x; c < rows * CHUNKS; c += FLASH_THREADS) {
		int r = c / CHUNKS, col = c % CHUNKS * 8;
		bool ok = r < valid;

		copy16(dst + r * LDS + col, ok ? src + (size_t)r * stride + col : src, ok);
	}
}

/* The A fragments of a warp's 16 rows of a head slice (k steps of 16
 * columns), straight from global memory; rows past Tq are zeros. */
template <int D>
__device__ static inline void load_a_rows(u32 a[D / 16][4], const bf16 *row0, const bf16 *row8,
					  bool ok0, bool ok8)
{
	int quad = threadIdx.x % 4;

	#pragma unroll
	for (int ks = 0; ks < D / 16; ks++) {
		int c = ks * 16 + 2 * quad;

		a[ks][0] = ok0 ? *(const u32 *)(row0 + c) : 0;
		a[ks][1] = ok8 ? *(const u32 *)(row8 + c) : 0;
		a[ks][2] = ok0 ? *(const u32 *)(row0 + c + 8) : 0;
		a[ks][3] = ok8 ? *(const u32 *)(row8 + c + 8) : 0;
	}
}

/* acc[r][16 x NT*8] += A[r] (16 x D, fragments) times rows^T for each of RT
 * row tiles of 16, rows NT*8 x D in shared memory (row stride D + 8), each
 * fragment of rows read once for all RT: S = Q K^T, dP = dout V^T. */
template <int D, int NT, int RT>
__device__ static inline void mma_rows_t(float (*acc)[NT][4], const u32 (*a)[D / 16][4],
					 const bf16 *rows)
{
	int lane = threadIdx.x % 32;
	/* lanes 0-7: n rows 0-7, k 0-7; 8-15: k 8-15; 16-31: n rows 8-15 */
	const bf16 *p = rows + ((lane >> 4) * 8 + lane % 8) * (D + 8) + (lane >> 3 & 1) * 8;

	#pragma unroll
	for (int ks = 0; ks < D / 16; ks++)
		#pragma unroll
		for (int nt = 0; nt < NT; nt += 2) {
			u32 b[4];

			ldsm4(b, p + nt * 8 * (D + 8) + ks * 16);
			#pragma unroll
			for (int rt = 0; rt < RT; rt++) {
				mma(acc[rt][nt], a[rt][ks], b[0], b[1]);
				mma(acc[rt][nt + 1], a[rt][ks], b[2], b[3]);
			}
		}
}

/* acc[r][16 x D] += X[r] (16 x KT*16, as accumulator fragments x[r][2 KT][4],
 * rounded to bf16 here) times rows, KT*16 x D in shared memory, for each of
 * RT row tiles: out += P V, dq += dS K, dv += P^T dout, dk += dS^T q. */
template <int D, int KT, int RT>
__device__ static inline void mma_x_rows(float (*acc)[D / 8][4], const float (*x)[2 * KT][4],
					 const bf16 *rows)
{
	int lane = threadIdx.x % 32;
	/* lanes 0-7: k rows 0-7, n 0-7; 8-15: k rows 8-15; 16-31: n 8-15 */
	const bf16 *p = rows + ((lane >> 3 & 1) * 8 + lane % 8) * (D + 8) + (lane >> 4) * 8;

	#pragma unroll
	for (int kk = 0; kk < KT; kk++) {
		u32 a[RT][4];

		#pragma unroll
		for (int rt = 0; rt < RT; rt++) {
			const float (*y)[4] = x[rt];

			a[rt][0] = pack(y[2 * kk][0], y[2 * kk][1]);
			a[rt][1] = pack(y[2 * kk][2], y[2 * kk][3]);
			a[rt][2] = pack(y[2 * kk + 1][0], y[2 * kk + 1][1]);
			a[rt][3] = pack(y[2 * kk + 1][2], y[2 * kk + 1][3]);
		}
		#pragma unroll
		for (int dt = 0; dt < D / 8; dt += 2) {
			u32 b[4];

			ldsm4_trans(b, p + kk * 16 * (D + 8) + dt * 8);
			#pragma unroll
			for (int rt = 0; rt < RT; rt++) {
				mma(acc[rt][dt], a[rt], b[0], b[1]);
				mma(acc[rt][dt + 1], a[rt], b[2], b[3]);
			}
		}
	}
}

/* The A fragments of 16 rows x D in shared memory (stride D + 8). */
template <int D>
__device__ static inline void ldsm_a(u32 a[D / 16][4], const bf16 *rows)
{
	int lane = threadIdx.x % 32;
	/* lanes 0-7: rows 0-7, k 0-7; 8-15: rows 8-15; 16-31: k 8-15 */
	const bf16 *p = rows + ((lane >> 3 & 1) * 8 + lane % 8) * (D + 8) + (lane >> 4) * 8;

	#pragma unroll
	for (int ks = 0; ks < D / 16; ks++)
		ldsm4(a[ks], p + ks * 16);
}

/* The keys [lo, hi] seen by the queries of the 16-row groups g0 .. g0 +
 * n - 1 of one batch row's table; lo > hi when none.  Clipped to [0, Tk). */
__device__ static inline int2 keys_seen(const int2 *groups, int ngroups, int g0, int n, int Tk)
{
	int2 r = make_int2(INT_MAX, INT_MIN);

	for (int i = g0; i < g0 + n && i < ngroups; i++) {
		int2 x = groups[i];

		if (x.x <= x.y) {
			r.x = min(r.x, x.x);
			r.y = max(r.y, x.y);
		}
	}
	r.x = max(r.x, 0);
	r.y = min(r.y, Tk - 1);
	return r;
}

/* groups[b][i] = (smallest lo, largest hi) over the non-empty ranges of
 * query rows 16 i .. 16 i + 15 of batch row b; (INT_MAX, INT_MIN) if none. */
__global__ static void query_groups_kernel(int2 *groups, const int32_t *lo, const int32_t *hi,
					   int B, int Tq, int ngroups)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;

	if (i >= (int64_t)B * ngroups)
		return;
	int b = (int)(i / ngroups), g = (int)(i % ngroups);
	int2 r = make_int2(INT_MAX, INT_MIN);

	for (int t = g * GROUP; t < (g + 1) * GROUP && t < Tq; t++) {
		int32_t l = lo[(size_t)b * Tq + t], h = hi[(size_t)b * Tq + t];

		if (l <= h) {
			r.x = min(r.x, l);
			r.y = max(r.y, h);
		}
	}
	groups[i] = r;
}

/* The rows (g and g + 8 of the warp's 16) a thread's fragments hold. */
struct rows2 {
	int t[2];          /* query index */
	int lo[2], hi[2];  /* its range; lo > hi past Tq */
};

__device__ static inline rows2 thread_rows(int first, const int32_t *lo, const int32_t *hi,
					   int b, int Tq)
{
	rows2 r;

	#pragma unroll
	for (int i = 0; i < 2; i++) {
		int t = first + threadIdx.x % 32 / 4 + 8 * i;
		bool ok = t < Tq;

		r.t[i] = t;
		r.lo[i] = ok ? lo[(size_t)b * Tq + t] : 1;
		r.hi[i] = ok ? hi[(size_t)b * Tq + t] : 0;
	}
	return r;
}

/* Whether any of the warp's rows (RT tiles of 16) sees a key of [k0, k0 +
 * TILE), and whether all of them see all of it (no mask needed). */
template <int RT>
__device__ static inline void tile_seen(const rows2 *r, int k0, int Tk, bool *any, bool *all)
{
	int k1 = min(k0 + TILE, Tk) - 1;
	bool some = false, every = k0 + TILE <= Tk;

	#pragma unroll
	for (int rt = 0; rt < RT; rt++)
		#pragma unroll
		for (int i = 0; i < 2; i++) {
			some |= r[rt].lo[i] <= r[rt].hi[i] && r[rt].lo[i] <= k1 && r[rt].hi[i] >= k0;
			every &= r[rt].lo[i] <= k0 && r[rt].hi[i] >= k1;
		}
	*any = __any_sync(0xffffffffu, some);
	*all = __all_sync(0xffffffffu, every);
}

/* s (16 x TILE scores of the warp, raw products) to scale-log2 units with
 * the masked ones -inf. */
__device__ static inline void mask_scores(float s[TILE / 8][4], const rows2 &r, int k0, int Tk,
					  bool all, float scale_log2)
{
	int quad = threadIdx.x % 4;

	#pragma unroll
	for (int nt = 0; nt < TILE / 8; nt++)
		#pragma unroll
		for (int e = 0; e < 4; e++) {
			int key = k0 + nt * 8 + 2 * quad + (e & 1), i = e >> 1;
			bool seen = all || (key >= r.lo[i] && key <= r.hi[i] && key < Tk);

			s[nt][e] = seen ? s[nt][e] * scale_log2 : -INFINITY;
		}
}

/* The block's key tiles [j0, j1] (j0 > j1: none) for queries q0 ..
 * q0 + rows - 1 of batch row b. */
__device__ static inline void block_tiles(const int2 *groups, int ngroups, int b, int q0,
					  int rows, int Tk, int *j0, int *j1)
{
	int2 k = keys_seen(groups + (size_t)b * ngroups, ngroups, q0 / GROUP, rows / GROUP, Tk);

	*j0 = k.x <= k.y ? k.x / TILE : 1;
	*j1 = k.x <= k.y ? k.y / TILE : 0;
}

/* Key tile j of one head (its rows kstride apart in kb, vb) into buffer
 * buf of the two in ks and vs. */
template <int D>
__device__ static inline void load_kv_tile(bf16 *ks, bf16 *vs, int buf, const bf16 *kb,
					   const bf16 *vb, size_t kstride, int j, int Tk)
{
	size_t at = (size_t)buf * TILE * (D + 8), k0 = (size_t)j * TILE;

	load_rows<D>(ks + at, kb + k0 * kstride, kstride, TILE, Tk - (int)k0);
	load_rows<D>(vs + at, vb + k0 * kstride, kstride, TILE, Tk - (int)k0);
}

/* The forward's and dq's walk over the key tiles j0 .. j1: each tile into
 * shared memory (two buffers, the next tile loading while this one is
 * used), then, when a row of the warp's RT row tiles r sees a key of it,
 * body(k0, all, kt, vt): its first key, whether every row sees every key
 * (no mask needed), its K and V.  Every thread of the block calls it. */
template <int D, int RT, typename Body>
__device__ static inline void for_each_kv_tile(bf16 *ks, bf16 *vs, const bf16 *kb, const bf16 *vb,
					       size_t kstride, int j0, int j1, int Tk,
					       const rows2 *r, Body &&body)
{
	if (j0 <= j1) {
		load_kv_tile<D>(ks, vs, 0, kb, vb, kstride, j0, Tk);
		copy_commit();
	}
	for (int j = j0; j <= j1; j++) {
		int k0 = j * TILE, cur = (j - j0) & 1;
		bool any, all;

		if (j < j1)
			load_kv_tile<D>(ks, vs, cur ^ 1, kb, vb, kstride, j + 1, Tk);
		copy_commit();
		copy_wait<1>();
		__syncthreads();
		tile_seen<RT>(r, k0, Tk, &any, &all);
		if (any)
			body(k0, all, ks + cur * TILE * (D + 8), vs + cur * TILE * (D + 8));
		__syncthreads();   /* before the next round's load overwrites this buffer */
	}
}

/* Row tiles of 16 a warp of the forward takes: two where the registers
 * hold them, so that each fragment of K and V read from shared memory
 * feeds two MMAs (the tile's reads from shared memory per flop halve). */
__host__ __device__ static constexpr int forward_row_tiles(int D)
{
	return D <= 64 ? 2 : 1;
}

/* Forward: block (query block of 64 RT rows, head, batch row); the query
 * blocks run last first, the causal mask's longest first. */
template <int D>
__global__ static void __launch_bounds__(FLASH_THREADS)
flash_forward_kernel(float *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
		     const int32_t *lo, const int32_t *hi, const int2 *groups, int Tq, int Tk,
		     int H, int KV, float scale_log2)
{
	constexpr int RT = forward_row_tiles(D), ROWS = BLOCK_ROWS * RT;
	constexpr int LDS = D + 8, NT = TILE / 8, DT = D / 8;
	extern __shared__ __align__(16) unsigned char smem[];
	bf16 *ks = (bf16 *)smem, *vs = ks + 2 * TILE * LDS;   /* two tiles each */
	int q0 = (gridDim.x - 1 - blockIdx.x) * ROWS, h = blockIdx.y, b = blockIdx.z;
	int warp = threadIdx.x / 32, quad = threadIdx.x % 4, ngroups = (Tq + GROUP - 1) / GROUP;
	size_t kstride = (size_t)KV * D, qstride = (size_t)H * D;
	const bf16 *kb = k + (size_t)b * Tk * kstride + (size_t)(h / (H / KV)) * D;
	const bf16 *vb = v + (size_t)b * Tk * kstride + (size_t)(h / (H / KV)) * D;
	const bf16 *qb = q + (size_t)b * Tq * qstride + (size_t)h * D;
	rows2 r[RT];
	u32 qa[RT][D / 16][4];
	float o[RT][DT][4] = {}, m[RT][2], l[RT][2] = {};
	int j0, j1;

	#pragma unroll
	for (int rt = 0; rt < RT; rt++) {
		r[rt] = thread_rows(q0 + (warp * RT + rt) * 16, lo, hi, b, Tq);
		load_a_rows<D>(qa[rt], qb + (size_t)r[rt].t[0] * qstride,
			       qb + (size_t)r[rt].t[1] * qstride, r[rt].t[0] < Tq, r[rt].t[1] < Tq);
		m[rt][0] = m[rt][1] = -INFINITY;
	}
	block_tiles(groups, ngroups, b, q0, ROWS, Tk, &j0, &j1);
	for_each_kv_tile<D, RT>(ks, vs, kb, vb, kstride, j0, j1, Tk, r,
				[&](int k0, bool all, const bf16 *kt, const bf16 *vt) {
			float s[RT][NT][4] = {};

			mma_rows_t<D, NT, RT>(s, qa, kt);
			#pragma unroll
			for (int rt = 0; rt < RT; rt++) {
				float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0, 0};

				mask_scores(s[rt], r[rt], k0, Tk, all, scale_log2);
				#pragma unroll
				for (int nt = 0; nt < NT; nt++)
					#pragma unroll
					for (int e = 0; e < 4; e++)
						mx[e >> 1] = fmaxf(mx[e >> 1], s[rt][nt][e]);
				#pragma unroll
				for (int i = 0; i < 2; i++) {
					mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
					mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
					float mn = fmaxf(m[rt][i], mx[i]);
					/* no -inf - -inf */
					float base = mn == -INFINITY ? 0.0f : mn;
					float alpha = exp2f(m[rt][i] - base);

					m[rt][i] = mn;
					mx[i] = base;
					l[rt][i] *= alpha;
					#pragma unroll
					for (int dt = 0; dt < DT; dt++) {
						o[rt][dt][2 * i] *= alpha;
						o[rt][dt][2 * i + 1] *= alpha;
					}
				}
				#pragma unroll
				for (int nt = 0; nt < NT; nt++)
					#pragma unroll
					for (int e = 0; e < 4; e++) {
						s[rt][nt][e] = exp2f(s[rt][nt][e] - mx[e >> 1]);
						sum[e >> 1] += s[rt][nt][e];
					}
				l[rt][0] += sum[0];
				l[rt][1] += sum[1];
			}
			mma_x_rows<D, TILE / 16, RT>(o, s, vt);
		});
	#pragma unroll
	for (int rt = 0; rt < RT; rt++)
		#pragma unroll
		for (int i = 0; i < 2; i++) {
			float sum = l[rt][i];

			sum += __shfl_xor_sync(0xffffffffu, sum, 1);
			sum += __shfl_xor_sync(0xffffffffu, sum, 2);
			if (r[rt].t[i] >= Tq)
				continue;
			float inv = sum > 0 ? 1.0f / sum : 0.0f;
			float *orow = out + (((size_t)b * Tq + r[rt].t[i]) * H + h) * D;

			#pragma unroll
			for (int dt = 0; dt < DT; dt++)
				*(float2 *)(orow + dt * 8 + 2 * quad) =
					make_float2(o[rt][dt][2 * i] * inv, o[rt][dt][2 * i + 1] * inv);
			if (quad == 0)
				lse[((size_t)b * H + h) * Tq + r[rt].t[i]] =
					sum > 0 ? m[rt][i] * LN2 + logf(sum) : -INFINITY;
		}
}

/* P = exp(s - lse) of the seen keys (s masked to -inf already, in log2
 * units like lse2), 0 where lse is -inf. */
__device__ static inline float prob(float s, float lse2)
{
	return lse2 == -INFINITY ? 0.0f : exp2f(s - lse2);
}

/* Backward, dq: block (query block, head, batch row), over key tiles as
 * the forward: dq = sum over tiles of dS K, dS = scale P (dP - D_i). */
template <int D>
__global__ static void __launch_bounds__(FLASH_THREADS)
flash_dq_kernel(float *dq, const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *dout,
		const float *lse, const float *dvec, const int32_t *lo, const int32_t *hi,
		const int2 *groups, int Tq, int Tk, int H, int KV, float scale_log2, float scale)
{
	constexpr int LDS = D + 8, NT = TILE / 8, DT = D / 8;
	extern __shared__ __align__(16) unsigned char smem[];
	bf16 *ks = (bf16 *)smem, *vs = ks + 2 * TILE * LDS;
	int q0 = (gridDim.x - 1 - blockIdx.x) * BLOCK_ROWS, h = blockIdx.y, b = blockIdx.z;
	int warp = threadIdx.x / 32, quad = threadIdx.x % 4, ngroups = (Tq + GROUP - 1) / GROUP;
	size_t kstride = (size_t)KV * D, qstride = (size_t)H * D;
	const bf16 *kb = k + (size_t)b * Tk * kstride + (size_t)(h / (H / KV)) * D;
	const bf16 *vb = v + (size_t)b * Tk * kstride + (size_t)(h / (H / KV)) * D;
	rows2 r = thread_rows(q0 + warp * 16, lo, hi, b, Tq);
	u32 qa[D / 16][4], da[D / 16][4];
	float acc[DT][4] = {}, lse2[2], di[2];
	int j0, j1;

	#pragma unroll
	for (int i = 0; i < 2; i++) {
		size_t at = ((size_t)b * H + h) * Tq + r.t[i];

		lse2[i] = r.t[i] < Tq ? lse[at] * LOG2E : -INFINITY;
		di[i] = r.t[i] < Tq ? dvec[at] : 0.0f;
	}
	load_a_rows<D>(qa, q + ((size_t)b * Tq + r.t[0]) * qstride + (size_t)h * D,
		       q + ((size_t)b * Tq + r.t[1]) * qstride + (size_t)h * D, r.t[0] < Tq,
		       r.t[1] < Tq);
	load_a_rows<D>(da, dout + ((size_t)b * Tq + r.t[0]) * qstride + (size_t)h * D,
		       dout + ((size_t)b * Tq + r.t[1]) * qstride + (size_t)h * D, r.t[0] < Tq,
		       r.t[1] < Tq);
	block_tiles(groups, ngroups, b, q0, BLOCK_ROWS, Tk, &j0, &j1);
	for_each_kv_tile<D, 1>(ks, vs, kb, vb, kstride, j0, j1, Tk, &r,
			       [&](int k0, bool all, const bf16 *kt, const bf16 *vt) {
			float s[NT][4] = {}, dp[NT][4] = {};

			mma_rows_t<D, NT, 1>(&s, &qa, kt);
			mma_rows_t<D, NT, 1>(&dp, &da, vt);
			mask_scores(s, r, k0, Tk, all, scale_log2);
			#pragma unroll
			for (int nt = 0; nt < NT; nt++)
				#pragma unroll
				for (int e = 0; e < 4; e++) {
					/* -inf: masked (mask_scores); dS is 0 */
					float p = prob(s[nt][e], lse2[e >> 1]);

					dp[nt][e] = s[nt][e] == -INFINITY ? 0.0f :
						    scale * p * (dp[nt][e] - di[e >> 1]);
				}
			mma_x_rows<D, TILE / 16, 1>(&acc, &dp, kt);
		});
	#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (r.t[i] >= Tq)
			continue;
		float *row = dq + (((size_t)b * Tq + r.t[i]) * H + h) * D;

		#pragma unroll
		for (int dt = 0; dt < DT; dt++)
			*(float2 *)(row + dt * 8 + 2 * quad) = make_float2(acc[dt][2 * i], acc[dt][2 * i + 1]);
	}
}

/* Backward, dk and dv: block (key block, query head, batch row), each
 * warp 16 keys, over the rounds of QB queries whose ranges meet the
 * block's keys, the next round's q and dout loading while this one
 * computes.  The products run transposed (keys x queries): S^T = K Q^T,
 * dP^T = V dout^T, dv += P^T dout, dk += dS^T q.  A block writes its query
 * head's share; with grouped heads the shares go to scratch and
 * group_sum_kernel adds each group's in head order.  One block per query
 * head rather than per KV group, so that no block does rep times the work
 * of the rest (the causal mask's first key block would).  Fewer queries a
 * round for wide heads: the accumulators of dk and dv take D / 2
 * registers each. */
template <int D>
struct dkdv_shape {
	static constexpr int QB = D > 64 ? 32 : 64;
	static constexpr int LDS = D + 8;
	/* K, V: BLOCK_ROWS rows; two rounds of q and dout, QB rows each; two
	 * rounds of the four per-query arrays (lse, D_i, lo, hi) */
	static constexpr size_t SMEM = (size_t)(2 * BLOCK_ROWS + 4 * QB) * LDS * sizeof(bf16) +
				       (size_t)2 * 4 * QB * sizeof(float);
};

/* One round's per-query values in shared memory. */
struct round_rows {
	float *lse, *dvec;
	int *lo, *hi;
};

/* 4 bytes global to shared, asynchronously. */
__device__ static inline void copy4(void *dst, const void *src)
{
	u32 a = (u32)__cvta_generic_to_shared(dst);

	asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(a), "l"(src) : "memory");
}

/* The first round from q0 on whose queries' ranges meet keys [k0, kend];
 * Tq when none is left.  The same for every thread of the block. */
__device__ static inline int next_round(const int2 *groups, int ngroups, int q0, int qb, int Tq,
					int Tk, int k0, int kend)
{
	for (; q0 < Tq; q0 += qb) {
		int2 seen = keys_seen(groups, ngroups, q0 / GROUP, qb / GROUP, Tk);

		if (seen.x <= seen.y && seen.x <= kend && seen.y >= k0)
			return q0;
	}
	return Tq;
}

template <int D>
__global__ static void __launch_bounds__(FLASH_THREADS)
flash_dkdv_kernel(float *dk, float *dv, const bf16 *q, const bf16 *k, const bf16 *v,
		  const bf16 *dout, const float *lse, const float *dvec, const int32_t *lo,
		  const int32_t *hi, const int2 *groups, int Tq, int Tk, int H, int KV,
		  float scale_log2, float scale)
{
	typedef dkdv_shape<D> Shape;
	constexpr int LDS = Shape::LDS, QB = Shape::QB, NT = QB / 8, DT = D / 8;
	extern __shared__ __align__(16) unsigned char smem[];
	bf16 *ks = (bf16 *)smem, *vs = ks + BLOCK_ROWS * LDS;
	bf16 *qs = vs + BLOCK_ROWS * LDS, *dos = qs + 2 * QB * LDS;   /* two rounds each */
	float *small = (float *)(dos + 2 * QB * LDS);
	int k0 = blockIdx.x * BLOCK_ROWS, h = blockIdx.y, b = blockIdx.z, rep = H / KV;
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32, quad = lane % 4;
	int ngroups = (Tq + GROUP - 1) / GROUP;
	int kw = k0 + warp * 16, kend = min(k0 + BLOCK_ROWS, Tk) - 1, kwend = min(kw + 15, Tk - 1);
	size_t kstride = (size_t)KV * D, qstride = (size_t)H * D;
	const int2 *grp = groups + (size_t)b * ngroups;
	const bf16 *qb = q + (size_t)b * Tq * qstride + (size_t)h * D;
	const bf16 *db = dout + (size_t)b * Tq * qstride + (size_t)h * D;
	const float *lseb = lse + ((size_t)b * H + h) * Tq, *dvecb = dvec + ((size_t)b * H + h) * Tq;
	const int32_t *lob = lo + (size_t)b * Tq, *hib = hi + (size_t)b * Tq;
	float ak[DT][4] = {}, av[DT][4] = {};
	/* buffer c's per-query values (computed, not indexed: an array of
	 * the two would live in local memory) */
	auto rows_of = [&](int c) {
		float *base = small + 4 * QB * c;

		return round_rows{base, base + QB, (int *)(base + 2 * QB), (int *)(base + 3 * QB)};
	};
	/* a round's q, dout and per-query values into buffer c */
	auto issue = [&](int q0, int c) {
		round_rows r = rows_of(c);

		load_rows<D>(qs + c * QB * LDS, qb + (size_t)q0 * qstride, qstride, QB, Tq - q0);
		load_rows<D>(dos + c * QB * LDS, db + (size_t)q0 * qstride, qstride, QB, Tq - q0);
		for (int i = threadIdx.x; i < QB && q0 + i < Tq; i += FLASH_THREADS) {
			copy4(r.lse + i, lseb + q0 + i);
			copy4(r.dvec + i, dvecb + q0 + i);
			copy4(r.lo + i, lob + q0 + i);
			copy4(r.hi + i, hib + q0 + i);
		}
	};

	int q0 = next_round(grp, ngroups, 0, QB, Tq, Tk, k0, kend), cur = 0;

	if (q0 < Tq) {   /* else no query sees these keys: the shares are 0 */
		load_rows<D>(ks, k + ((size_t)b * Tk + k0) * kstride + (size_t)(h / rep) * D,
			     kstride, BLOCK_ROWS, Tk - k0);
		load_rows<D>(vs, v + ((size_t)b * Tk + k0) * kstride + (size_t)(h / rep) * D,
			     kstride, BLOCK_ROWS, Tk - k0);
		issue(q0, 0);
	}
	copy_commit();
	while (q0 < Tq) {
		int qn = next_round(grp, ngroups, q0 + QB, QB, Tq, Tk, k0, kend);

		if (qn < Tq)
			issue(qn, cur ^ 1);
		copy_commit();
		copy_wait<1>();
		__syncthreads();
		round_rows r = rows_of(cur);
		const bf16 *qt = qs + cur * QB * LDS, *dout_t = dos + cur * QB * LDS;
		int valid = min(QB, Tq - q0);
		/* does a query of the round see a key of this warp, and do all
		 * of them see all its keys?  (A warp past Tk has none.) */
		bool some = false, every = kw + 15 < Tk && valid == QB;

		for (int i = lane; i < QB && kw < Tk; i += 32) {
			bool in = i < valid;

			some |= in && r.lo[i] <= r.hi[i] && r.lo[i] <= kwend && r.hi[i] >= kw;
			every &= in && r.lo[i] <= kw && r.hi[i] >= kwend;
		}
		if (__any_sync(0xffffffffu, some)) {
			bool all = __all_sync(0xffffffffu, every);
			float st[NT][4] = {}, dpt[NT][4] = {};
			u32 kf[D / 16][4], vf[D / 16][4];

			/* read again each round: held across it they would
			 * take the registers the accumulators need */
			ldsm_a<D>(kf, ks + warp * 16 * LDS);
			ldsm_a<D>(vf, vs + warp * 16 * LDS);
			mma_rows_t<D, NT, 1>(&st, &kf, qt);
			mma_rows_t<D, NT, 1>(&dpt, &vf, dout_t);
			#pragma unroll
			for (int nt = 0; nt < NT; nt++)
				#pragma unroll
				for (int e = 0; e < 4; e++) {
					int key = kw + lane / 4 + 8 * (e >> 1);
					int qi = nt * 8 + 2 * quad + (e & 1);
					bool ok = all || (qi < valid && key < Tk && key >= r.lo[qi] &&
							  key <= r.hi[qi]);
					float p = ok ? prob(st[nt][e] * scale_log2, r.lse[qi] * LOG2E)
						     : 0.0f;

					/* the round's tail past Tq holds stale
					 * values: masked, nothing is read there */
					st[nt][e] = p;
					dpt[nt][e] = ok ? scale * p * (dpt[nt][e] - r.dvec[qi]) : 0.0f;
				}
			mma_x_rows<D, QB / 16, 1>(&av, &st, dout_t);
			mma_x_rows<D, QB / 16, 1>(&ak, &dpt, qt);
		}
		__syncthreads();   /* before the next round's load overwrites this buffer */
		q0 = qn;
		cur ^= 1;
	}
	/* this head's share, rows of [B, Tk, H, D]: the whole gradient when a
	 * KV head has one query head (KV == H), else the scratch */
	#pragma unroll
	for (int i = 0; i < 2; i++) {
		int key = kw + lane / 4 + 8 * i;

		if (key >= Tk)
			continue;
		size_t at = (((size_t)b * Tk + key) * H + h) * D;

		#pragma unroll
		for (int dt = 0; dt < DT; dt++) {
			*(float2 *)(dk + at + dt * 8 + 2 * quad) = make_float2(ak[dt][2 * i], ak[dt][2 * i + 1]);
			*(float2 *)(dv + at + dt * 8 + 2 * quad) = make_float2(av[dt][2 * i], av[dt][2 * i + 1]);
		}
	}
}

/* dst[b, t, g, :] = the sum over r < rep, in order, of part[b, t, g rep + r, :]. */
__global__ static void group_sum_kernel(float *dst, const float *part, int rep, int D,
					int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t row = i / D;   /* b, t, g */
		const float *p = part + (row * rep) * D + i % D;
		float s = 0;

		for (int r = 0; r < rep; r++)
			s += p[(int64_t)r * D];
		dst[i] = s;
	}
}

/* Host side. */

/* A kernel's dynamic shared memory, allowed past the 48 KiB default. */
template <typename K>
static bool allow_smem(K kernel, size_t bytes, const char *what)
{
	cudaError_t e = cudaSuccess;

	if (bytes > 48 * 1024)
		e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
					 (int)bytes);
	if (e != cudaSuccess)
		cuda_note_error(what, (int)e);
	return e == cudaSuccess;
}

/* One call's scratch, sections of attention_flash_layout. */
struct flash_scratch {
	char *base;
	bf16 *q, *k, *v, *dout;
	int2 *groups;
	float *dvec, *dk_heads, *dv_heads;
};

static bool take_scratch(flash_scratch *f, int B, int Tq, int Tk, int H, int KV, int D,
			 bool backward)
{
	size_t at[FLASH_SECTIONS + 1];

	attention_flash_layout(B, Tq, Tk, H, KV, D, backward, at);
	f->base = (char *)cuda_scratch_get(at[FLASH_SECTIONS]);
	if (!f->base)
		return false;
	f->q = (bf16 *)(f->base + at[FLASH_Q]);
	f->k = (bf16 *)(f->base + at[FLASH_K]);
	f->v = (bf16 *)(f->base + at[FLASH_V]);
	f->groups = (int2 *)(f->base + at[FLASH_RANGES]);
	f->dout = (bf16 *)(f->base + at[FLASH_DOUT]);
	f->dvec = (float *)(f->base + at[FLASH_DVEC]);
	f->dk_heads = (float *)(f->base + at[FLASH_DK_HEADS]);
	f->dv_heads = (float *)(f->base + at[FLASH_DV_HEADS]);
	return true;
}

/* The inputs rounded, and the key-range table. */
static void prepare(const flash_scratch *f, const float *q, const float *k, const float *v,
		    const int32_t *lo, const int32_t *hi, int B, int Tq, int Tk, int H, int KV,
		    int D)
{
	size_t nq = (size_t)B * Tq * H * D, nk = (size_t)B * Tk * KV * D;
	int ngroups = (Tq + GROUP - 1) / GROUP;
	int64_t n = (int64_t)B * ngroups;

	cuda_cast_bf16((kernel_bf16 *)f->q, q, nq);
	cuda_cast_bf16((kernel_bf16 *)f->k, k, nk);
	cuda_cast_bf16((kernel_bf16 *)f->v, v, nk);
	query_groups_kernel<<<(unsigned)((n + RED_THREADS - 1) / RED_THREADS), RED_THREADS, 0,
			      cuda_stream()>>>(f->groups, lo, hi, B, Tq, ngroups);
	cuda_check_launch("attention query groups");
}

template <int D>
static void forward_d(float *out, float *lse, const flash_scratch *f, const int32_t *lo,
		      const int32_t *hi, int B, int Tq, int Tk, int H, int KV)
{
	constexpr int rows = BLOCK_ROWS * forward_row_tiles(D);
	size_t smem = (size_t)4 * TILE * (D + 8) * 2;
	dim3 grid((unsigned)((Tq + rows - 1) / rows), (unsigned)H, (unsigned)B);
	float scale_log2 = 1.0f / sqrtf((float)D) * LOG2E;

	if (!allow_smem(flash_forward_kernel<D>, smem, "attention_forward_bf16 shared memory"))
		return;
	flash_forward_kernel<D><<<grid, FLASH_THREADS, smem, cuda_stream()>>>(
		out, lse, f->q, f->k, f->v, lo, hi, f->groups, Tq, Tk, H, KV, scale_log2);
	cuda_check_launch("attention_forward_bf16");
}

template <int D>
static void backward_d(float *dq, float *dk, float *dv, const float *lse,
		       const flash_scratch *f, const int32_t *lo, const int32_t *hi, int B,
		       int Tq, int Tk, int H, int KV)
{
	size_t smem_q = (size_t)4 * TILE * (D + 8) * 2, smem_k = dkdv_shape<D>::SMEM;
	dim3 qgrid((unsigned)((Tq + BLOCK_ROWS - 1) / BLOCK_ROWS), (unsigned)H, (unsigned)B);
	dim3 kgrid((unsigned)((Tk + BLOCK_ROWS - 1) / BLOCK_ROWS), (unsigned)H, (unsigned)B);
	float scale = 1.0f / sqrtf((float)D), scale_log2 = scale * LOG2E;
	bool grouped = H != KV;
	size_t nk = (size_t)B * Tk * KV * D;

	if (!allow_smem(flash_dq_kernel<D>, smem_q, "attention_backward_bf16 shared memory") ||
	    !allow_smem(flash_dkdv_kernel<D>, smem_k, "attention_backward_bf16 shared memory"))
		return;
	flash_dq_kernel<D><<<qgrid, FLASH_THREADS, smem_q, cuda_stream()>>>(
		dq, f->q, f->k, f->v, f->dout, lse, f->dvec, lo, hi, f->groups, Tq, Tk, H, KV,
		scale_log2, scale);
	cuda_check_launch("attention_backward_bf16 dq");
	flash_dkdv_kernel<D><<<kgrid, FLASH_THREADS, smem_k, cuda_stream()>>>(
		grouped ? f->dk_heads : dk, grouped ? f->dv_heads : dv, f->q, f->k, f->v, f->dout,
		lse, f->dvec, lo, hi, f->groups, Tq, Tk, H, KV, scale_log2, scale);
	cuda_check_launch("attention_backward_bf16 dk dv");
	if (grouped) {
		group_sum_kernel<<<cuda_grid_for(nk), RED_THREADS, 0, cuda_stream()>>>(
			dk, f->dk_heads, H / KV, D, (int64_t)nk);
		group_sum_kernel<<<cuda_grid_for(nk), RED_THREADS, 0, cuda_stream()>>>(
			dv, f->dv_heads, H / KV, D, (int64_t)nk);
		cuda_check_launch("attention_backward_bf16 group sums");
	}
}

/* Every head dim attention_flash_fits takes. */
#define FLASH_DISPATCH(fn, D, ...)                     \
	switch (D) {                                   \
	case 16: fn<16>(__VA_ARGS__); break;           \
	case 32: fn<32>(__VA_ARGS__); break;           \
	case 48: fn<48>(__VA_ARGS__); break;           \
	case 64: fn<64>(__VA_ARGS__); break;           \
	case 80: fn<80>(__VA_ARGS__); break;           \
	case 96: fn<96>(__VA_ARGS__); break;           \
	case 112: fn<112>(__VA_ARGS__); break;         \
	case 128: fn<128>(__VA_ARGS__); break;         \
	}

void cuda_flash_forward(float *out, float *lse, const float *q, const float *k, const float *v,
			const int32_t *lo, const int32_t *hi, int B, int Tq, int Tk, int H, int KV,
			int D)
{
	flash_scratch f;

	if (!cuda_ready() || !take_scratch(&f, B, Tq, Tk, H, KV, D, false))
		return;
	prepare(&f, q, k, v, lo, hi, B, Tq, Tk, H, KV, D);
	FLASH_DISPATCH(forward_d, D, out, lse, &f, lo, hi, B, Tq, Tk, H, KV);
	cuda_scratch_put(f.base);
}

void cuda_flash_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
			 const float *k, const float *v, const float *out, const float *lse,
			 const int32_t *lo, const int32_t *hi, int B, int Tq, int Tk, int H,
			 int KV, int D)
{
	const attention_tile_prims *tiles = cuda_attention_tile_prims();
	flash_scratch f;

	if (!cuda_ready() || !take_scratch(&f, B, Tq, Tk, H, KV, D, true))
		return;
	prepare(&f, q, k, v, lo, hi, B, Tq, Tk, H, KV, D);
	cuda_cast_bf16((kernel_bf16 *)f.dout, dout, (size_t)B * Tq * H * D);
	/* D_i as the tiled attention's backward makes it */
	tiles->rowdot(tiles->ctx, f.dvec, dout, out, B, Tq, H, D);
	FLASH_DISPATCH(backward_d, D, dq, dk, dv, lse, &f, lo, hi, B, Tq, Tk, H, KV);
	cuda_scratch_put(f.base);
}
