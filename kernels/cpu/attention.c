/* attention.c - fp32 flash attention on the CPU (FlashAttention-2 order).
 *
 * Forward: one task per (row, query head, block of BQ queries); the task
 * walks the key blocks its queries can see, keeps a running max and sum per
 * query (online softmax) and never holds more than a BQ x BK score tile.
 *
 * Backward: one task per (row, KV head).  It owns dk and dv of that KV head
 * and dq of the query heads that read it, so every gradient element is
 * written by one thread in a fixed order: the results are bit-identical
 * whatever the number of threads.  For each key block it rebuilds the
 * probabilities from q, k and lse (P = exp(S - lse)), and with
 * D_i = rowsum(dout_i * out_i), dS = P * (dP - D_i).  When there are too
 * few (row, KV head) pairs for the threads, two passes instead: dk, dv per
 * key block, then dq per query block, adding the same terms in the same
 * order, so the bits do not change.  out and lse may be those of a larger
 * attention this call computes one block of keys of (context parallel
 * merges the blocks' partial results): P is rebuilt for the keys in range
 * only, and is then this block's share of the whole softmax.
 *
 * Masks: a row has Tq queries and Tk keys, and query t sees the keys
 * kv_lo[t] .. kv_hi[t] (inclusive; none when lo > hi: out 0, lse -inf, no
 * gradient).  Causal is lo = 0, hi = t; document masks move lo up to the
 * document's start; a rank's queries against another rank's keys see any
 * contiguous part of them.  A key block none of a query block's rows can
 * see is skipped whole, which is where those masks save their half (or
 * more) of the work: the forward walks only the key blocks between the
 * query block's least lo and greatest hi, and the backward computes that
 * span for every query block once per call, so a key block passes over the
 * query blocks that cannot see it with one comparison each.
 *
 * The tile products keep a fixed order of summation (mac below), the other
 * loops over tiles are element-wise or sum in fixed lanes, and no loop's
 * vector code depends on which thread runs it: the rounding is the same in
 * every thread.  The exponential is a vectorisable polynomial (exp_fast). */
#include "core/base.h"
#include <math.h>
#include <omp.h>
#include "cpu/cpu.h"

enum { BQ = 64, BK = 64, LANES = 8 };

/* The task functions are built three times on x86-64 (AVX-512, AVX2+FMA,
 * baseline) with all helpers inlined, and the entry points pick one by what
 * the CPU has.  Elsewhere the baseline build is the only one. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ATTN_X86 1
#endif
#define INLINE static inline __attribute__((always_inline))

/* exp(x) to about 2 ulp (1e-7 relative) for -87 <= x <= 88, and 1.6e-38
 * (exp(-87)) below: Cody-Waite reduction x = k ln2 + r, then a degree-7
 * Taylor polynomial on |r| <= ln2/2 (truncation error 6e-9).  The loops
 * calling it vectorise, where they would not with expf.  The clamp is an
 * unsigned min on the bits (a float select under -ftrapping-math keeps gcc
 * from vectorising): positive floats and negative ones above -87 have bits
 * below those of -87.0f, those below -87 (and -inf) above. */
INLINE float exp_fast(float x)
{
	const uint32_t minus87 = 0xC2AE0000u;
	uint32_t ux;
	float xc;

	memcpy(&ux, &x, sizeof ux);
	ux = ux < minus87 ? ux : minus87;
	memcpy(&xc, &ux, sizeof xc);
	/* k = round(x / ln2) by the 1.5 * 2^23 trick: t holds k in its low
	 * mantissa bits */
	float t = xc * 1.44269504088896341f + 12582912.0f;
	float kf = t - 12582912.0f;
	float r = xc - kf * 0.693359375f;
	r = r + kf * 2.12194440e-4f;
	float p = exp_taylor7(r);
	uint32_t tb, bits;
	float two_k;

	memcpy(&tb, &t, sizeof tb);
	bits = (tb - 0x4B400000u + 127u) << 23;
	memcpy(&two_k, &bits, sizeof two_k);
	return p * two_k;
}

/* One thread's tiles.  Rows of BK floats; D-wide rows are padded to dpad
 * floats so every row starts 64-byte aligned. */
struct tiles {
	int dpad;
	float *q;       /* [BQ][dpad] queries, times the softmax scale */
	float *kt;      /* [D][BK] keys, transposed */
	float *k;       /* [BK][dpad] keys (backward: dq += dS k) */
	float *v;       /* [BK][dpad] values (forward) */
	float *vt;      /* [D][BK] values, transposed (backward: dP) */
	float *s;       /* [BQ][BK] scores, then probabilities */
	float *dp;      /* [BQ][BK] dP, then dS */
	float *o;       /* [BQ][dpad] forward accumulator / backward dout */
	float *dq;      /* [BQ][dpad] one key block's share of dq */
	float *dkt;     /* [D][BK] */
	float *dvt;     /* [D][BK] */
	float m[BQ], l[BQ], di[BQ];
	int lo[BQ], hi[BQ];
	void *mem;
};

static int tiles_alloc(struct tiles *w, int D)
{
	size_t dpad = ((size_t)D + 15) & ~(size_t)15;
	size_t dbk = (size_t)D * BK, dq = BQ * dpad, dk = BK * dpad;
	size_t n = 3 * dq + 2 * dk + 4 * dbk + 2 * (size_t)BQ * BK;
	size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
	float *p = aligned_alloc(64, bytes);

	memset(w, 0, sizeof *w);
	if (!p)
		return -1;
	/* zero once: padding columns stay finite forever */
	memset(p, 0, bytes);
	w->mem = p;
	w->dpad = (int)dpad;
	w->q = p, p += dq;
	w->k = p, p += dk;
	w->v = p, p += dk;
	w->kt = p, p += dbk;
	w->vt = p, p += dbk;
	w->s = p, p += (size_t)BQ * BK;
	w->dp = p, p += (size_t)BQ * BK;
	w->o = p, p += dq;
	w->dq = p, p += dq;
	w->dkt = p, p += dbk;
	w->dvt = p;
	return 0;
}

/* The keys [*first, *last] that queries i0 .. i0 + nq - 1 see between
 * them, clipped to the row's Tk keys; *first > *last when none sees any.
 * Key blocks outside it need not be visited at all. */
INLINE void block_span(const int32_t *lo, const int32_t *hi, int i0, int nq,
		       int Tk, int *first, int *last)
{
	int f = Tk, l = -1;

	for (int t = i0; t < i0 + nq; t++) {
		int a = TITAN_MAX(lo[t], 0), z = TITAN_MIN(hi[t], Tk - 1);

		if (a <= z) {
			f = TITAN_MIN(f, a);
			l = TITAN_MAX(l, z);
		}
	}
	*first = f;
	*last = l;
}

/* The visible key range [lo, hi] of each query row, relative to the key
 * block at j0 of nk keys; returns how many rows see at least one key.
 * Clipping keeps an empty range empty. */
INLINE int block_ranges(struct tiles *w, const int32_t *kv_lo,
			const int32_t *kv_hi, int i0, int nq, int j0, int nk)
{
	int live = 0;

	for (int i = 0; i < nq; i++) {
		int t = i0 + i;
		int lo = kv_lo[t] - j0, hi = kv_hi[t] - j0;

		if (lo < 0)
			lo = 0;
		if (hi > nk - 1)
			hi = nk - 1;
		w->lo[i] = lo;
		w->hi[i] = hi;
		live += lo <= hi;
	}
	return live;
}

/* dst[i][0..D) = src row i (token stride ld) times mul, for nrows rows;
 * rows nrows..maxrows are zeroed. */
INLINE void load_rows(float *dst, int dpad, const float *src, size_t ld,
		      int nrows, int maxrows, int D, float mul)
{
	for (int i = 0; i < nrows; i++) {
		const float *x = src + i * ld;
		float *y = dst + (size_t)i * dpad;
		for (int d = 0; d < D; d++)
			y[d] = x[d] * mul;
	}
	for (int i = nrows; i < maxrows; i++)
		memset(dst + (size_t)i * dpad, 0, D * sizeof(float));
}

/* dst[d][j] = src row j, column d; columns nrows..BK zeroed. */
INLINE void load_cols(float *dst, const float *src, size_t ld, int nrows, int D)
{
	for (int j = 0; j < nrows; j++) {
		const float *x = src + j * ld;
		for (int d = 0; d < D; d++)
			dst[(size_t)d * BK + j] = x[d];
	}
	for (int d = 0; d < D; d++)
		for (int j = nrows; j < BK; j++)
			dst[(size_t)d * BK + j] = 0;
}

/* The one tile product: c[r][col] += sum over k0 <= k < k1 of
 * x[r * xr + k * xk] * y[k * ys + col], for r < nr and col < ncol (a
 * multiple of 16).  A block of 4 rows by one or two vectors of c stays in
 * registers over the whole k loop; the strides let the same code do A B,
 * A^T B and A B^T tiles.  The order of the sum is fixed, and so is the
 * rounding.  The vector width W is that of the build that inlines it: gcc
 * splits a wider vector type through memory on every operation.  Loads go
 * through memcpy as y's rows need not be aligned. */
#define VLOAD(v, p) memcpy(&(v), (p), sizeof(v))
#define VSTORE(p, v) memcpy((p), &(v), sizeof(v))

/* One vector per row of the 4-row block: for AVX-512, W = 16. */
#define DEFINE_MAC1(name, W)                                                    \
typedef float name##_v __attribute__((vector_size(4 * (W)), aligned(4)));       \
INLINE void name(float *c, size_t cs, int nr, int ncol, const float *x,        \
		 size_t xr, size_t xk, int k0, int k1, const float *y,          \
		 size_t ys)                                                     \
{                                                                               \
	int r = 0;                                                              \
                                                                                \
	for (; r + 4 <= nr; r += 4) {                                           \
		for (int col = 0; col < ncol; col += (W)) {                     \
			float *cr = c + r * cs + col;                           \
			const float *xp = x + r * xr;                           \
			name##_v a0, a1, a2, a3, y0;                            \
                                                                                \
			VLOAD(a0, cr);                                          \
			VLOAD(a1, cr + cs);                                     \
			VLOAD(a2, cr + 2 * cs);                                 \
			VLOAD(a3, cr + 3 * cs);                                 \
			for (int k = k0; k < k1; k++) {                         \
				const float *xkp = xp + k * xk;                 \
									\
				VLOAD(y0, y + k * ys + col);                    \
				a0 += xkp[0] * y0;                              \
				a1 += xkp[xr] * y0;                             \
				a2 += xkp[2 * xr] * y0;                         \
				a3 += xkp[3 * xr] * y0;                         \
			}                                                       \
			VSTORE(cr, a0);                                         \
			VSTORE(cr + cs, a1);                                    \
			VSTORE(cr + 2 * cs, a2);                                \
			VSTORE(cr + 3 * cs, a3);                                \
		}                                                               \
	}                                                                       \
	MAC_TAIL(name, W)                                                       \
}

/* Two vectors per row: for AVX2 and SSE, where one is 8 or 4 floats. */
#define DEFINE_MAC2(name, W)                                                    \
typedef float name##_v __attribute__((vector_size(4 * (W)), aligned(4)));       \
INLINE void name(float *c, size_t cs, int nr, int ncol, const float *x,        \
		 size_t xr, size_t xk, int k0, int k1, const float *y,          \
		 size_t ys)                                                     \
{                                                                               \
	int r = 0;                                                              \
                                                                                \
	for (; r + 4 <= nr; r += 4) {                                           \
		for (int col = 0; col < ncol; col += 2 * (W)) {                 \
			float *cr = c + r * cs + col;                           \
			const float *xp = x + r * xr;                           \
			name##_v a0, a1, a2, a3, b0, b1, b2, b3, y0, y1;        \
                                                                                \
			VLOAD(a0, cr);                                          \
			VLOAD(a1, cr + cs);                                     \
			VLOAD(a2, cr + 2 * cs);                                 \
			VLOAD(a3, cr + 3 * cs);                                 \
			VLOAD(b0, cr + (W));                                    \
			VLOAD(b1, cr + cs + (W));                               \
			VLOAD(b2, cr + 2 * cs + (W));                           \
			VLOAD(b3, cr + 3 * cs + (W));                           \
			for (int k = k0; k < k1; k++) {                         \
				const float *xkp = xp + k * xk;                 \
				float x0 = xkp[0], x1 = xkp[xr];                \
				float x2 = xkp[2 * xr], x3 = xkp[3 * xr];       \
									\
				VLOAD(y0, y + k * ys + col);                    \
				VLOAD(y1, y + k * ys + col + (W));              \
				a0 += x0 * y0;                                  \
				a1 += x1 * y0;                                  \
				a2 += x2 * y0;                                  \
				a3 += x3 * y0;                                  \
				b0 += x0 * y1;                                  \
				b1 += x1 * y1;                                  \
				b2 += x2 * y1;                                  \
				b3 += x3 * y1;                                  \
			}                                                       \
			VSTORE(cr, a0);                                         \
			VSTORE(cr + cs, a1);                                    \
			VSTORE(cr + 2 * cs, a2);                                \
			VSTORE(cr + 3 * cs, a3);                                \
			VSTORE(cr + (W), b0);                                   \
			VSTORE(cr + cs + (W), b1);                              \
			VSTORE(cr + 2 * cs + (W), b2);                          \
			VSTORE(cr + 3 * cs + (W), b3);                          \
		}                                                               \
	}                                                                       \
	MAC_TAIL(name, W)                                                       \
}

/* The rows left over when nr is not a multiple of 4. */
#define MAC_TAIL(name, W)                                                       \
	for (; r < nr; r++) {                                                   \
		for (int col = 0; col < ncol; col += (W)) {                     \
			float *cr = c + r * cs + col;                           \
			name##_v a0, y0;                                        \
                                                                                \
			VLOAD(a0, cr);                                          \
			for (int k = k0; k < k1; k++) {                         \
				VLOAD(y0, y + k * ys + col);                    \
				a0 += x[r * xr + k * xk] * y0;                  \
			}                                                       \
			VSTORE(cr, a0);                                         \
		}                                                               \
	}

DEFINE_MAC2(mac4, 4)
DEFINE_MAC2(mac8, 8)
DEFINE_MAC1(mac16, 16)

/* vw, the vector width in floats, is a constant in each build of a task. */
#define mac(vw, ...) ((vw) == 16 ? mac16(__VA_ARGS__) :                         \
		      (vw) == 8 ? mac8(__VA_ARGS__) : mac4(__VA_ARGS__))

/* Sum of a BK-wide row in a fixed order. */
INLINE float row_sum(const float *x)
{
	float acc[LANES] = { 0 };

	for (int j = 0; j < BK; j += LANES)
		for (int u = 0; u < LANES; u++)
			acc[u] += x[j + u];
	float s = 0;
	for (int u = 0; u < LANES; u++)
		s += acc[u];
	return s;
}

/* p[j] = exp(s[j] - m) for lo <= j <= hi, 0 elsewhere, in place. */
INLINE void row_exp(float *p, float m, int lo, int hi)
{
#pragma omp simd
	for (int j = 0; j < BK; j++)
		p[j] = exp_fast(p[j] - m);
	/* a mask in the loop above would keep it from vectorising */
	memset(p, 0, lo * sizeof(float));
	memset(p + hi + 1, 0, (BK - 1 - hi) * sizeof(float));
}

/* Everything a task needs, so each build of the tasks is one small
 * function of (tiles, args, task number). */
struct attn_args {
	float *out, *lse, *dq, *dk, *dv;
	const float *q, *k, *v, *dout, *o, *lse_in;
	const int32_t *kv_lo, *kv_hi;   /* [B * Tq] */
	/* backward: block_span() of each query block, [B * nqb][2] */
	const int32_t *span;
	int B, Tq, Tk, H, KV, D;
	int nqb, nkb;   /* query and key blocks per row */
};

/* Forward of query block i0 of head h in row b. */
INLINE void forward_task(int vw, struct tiles *w, const struct attn_args *a,
			 int b, int h, int i0)
{
	int Tq = a->Tq, Tk = a->Tk, H = a->H, D = a->D;
	size_t ldq = (size_t)H * D, ldk = (size_t)a->KV * D;
	int nq = TITAN_MIN(BQ, Tq - i0), dpad = w->dpad;
	int g = h / (H / a->KV), first, last;
	const float *kb = a->k + (size_t)b * Tk * ldk + (size_t)g * D;
	const float *vb = a->v + (size_t)b * Tk * ldk + (size_t)g * D;
	const int32_t *lob = a->kv_lo + (size_t)b * Tq;
	const int32_t *hib = a->kv_hi + (size_t)b * Tq;
	float scale = 1.0f / sqrtf((float)D);

	load_rows(w->q, dpad, a->q + ((size_t)b * Tq + i0) * ldq +
		  (size_t)h * D, ldq, nq, nq, D, scale);
	for (int i = 0; i < nq; i++) {
		w->m[i] = -INFINITY;
		w->l[i] = 0;
		memset(w->o + (size_t)i * dpad, 0, D * sizeof(float));
	}
	block_span(lob, hib, i0, nq, Tk, &first, &last);
	for (int j0 = first / BK * BK; j0 <= last; j0 += BK) {
		int nk = TITAN_MIN(BK, Tk - j0);

		if (!block_ranges(w, lob, hib, i0, nq, j0, nk))
			continue;
		load_cols(w->kt, kb + (size_t)j0 * ldk, ldk, nk, D);
		load_rows(w->v, dpad, vb + (size_t)j0 * ldk, ldk, nk, nk, D,
			  1.0f);
		memset(w->s, 0, (size_t)nq * BK * sizeof(float));
		mac(vw, w->s, BK, nq, BK, w->q, dpad, 1, 0, D, w->kt, BK);
		int kmin = BK, kmax = -1;
		for (int i = 0; i < nq; i++) {
			int lo = w->lo[i], hi = w->hi[i];
			float *p = w->s + (size_t)i * BK;
			float *o = w->o + (size_t)i * dpad;
			float mx = w->m[i];

			if (lo > hi) {
				memset(p, 0, BK * sizeof(float));
				continue;
			}
			kmin = TITAN_MIN(kmin, lo);
			kmax = TITAN_MAX(kmax, hi);
			for (int j = lo; j <= hi; j++)
				mx = p[j] > mx ? p[j] : mx;
			row_exp(p, mx, lo, hi);
			float alpha = expf(w->m[i] - mx);
			w->l[i] = w->l[i] * alpha + row_sum(p);
			w->m[i] = mx;
			if (alpha != 1.0f)
#pragma omp simd
				for (int d = 0; d < D; d++)
					o[d] *= alpha;
		}
		mac(vw, w->o, dpad, nq, dpad, w->s, BK, 1, kmin, kmax + 1, w->v,
		    dpad);
	}
	for (int i = 0; i < nq; i++) {
		float *y = a->out + ((size_t)b * Tq + i0 + i) * ldq +
			   (size_t)h * D;
		float *l = a->lse + ((size_t)b * H + h) * Tq + i0 + i;
		const float *o = w->o + (size_t)i * dpad;

		/* no key seen: the sum is 0, and o / l would be NaN */
		if (w->l[i] == 0) {
			memset(y, 0, D * sizeof(float));
			*l = -INFINITY;
			continue;
		}
		float inv = 1.0f / w->l[i];
		for (int d = 0; d < D; d++)
			y[d] = o[d] * inv;
		*l = w->m[i] + logf(w->l[i]);
	}
}

/* Load query block i0 of head h (row b) for the backward: q times the
 * scale, dout, D_i = rowsum(dout_i * out_i) and lse. */
INLINE void load_query_block(struct tiles *w, const struct attn_args *a,
			     int b, int h, int i0, int nq)
{
	size_t ldq = (size_t)a->H * a->D;
	size_t row0 = ((size_t)b * a->Tq + i0) * ldq + (size_t)h * a->D;
	int D = a->D, dpad = w->dpad;

	load_rows(w->q, dpad, a->q + row0, ldq, nq, BQ, D,
		  1.0f / sqrtf((float)D));
	load_rows(w->o, dpad, a->dout + row0, ldq, nq, BQ, D, 1.0f);
	for (int i = 0; i < nq; i++) {
		const float *y = a->o + row0 + i * ldq;
		const float *dy = w->o + (size_t)i * dpad;
		float s = 0;

		for (int d = 0; d < D; d++)
			s += dy[d] * y[d];
		w->di[i] = s;
		w->m[i] = a->lse_in[((size_t)b * a->H + h) * a->Tq + i0 + i];
	}
}

/* Load key block j0 of KV head g (row b): k transposed and not, v
 * transposed. */
INLINE void load_key_block(struct tiles *w, const struct attn_args *a,
			   int b, int g, int j0, int nk)
{
	size_t ldk = (size_t)a->KV * a->D;
	size_t row0 = ((size_t)b * a->Tk + j0) * ldk + (size_t)g * a->D;

	load_cols(w->kt, a->k + row0, ldk, nk, a->D);
	load_cols(w->vt, a->v + row0, ldk, nk, a->D);
	load_rows(w->k, w->dpad, a->k + row0, ldk, nk, BK, a->D, 1.0f);
}

/* With a query and a key block loaded and block_ranges() set: P in s and
 * dS in dp (0 where masked), and the key columns [*k0, *k1) any row sees. */
INLINE void pair_grads(int vw, struct tiles *w, int nq, int D, int *k0,
		       int *k1)
{
	int dpad = w->dpad, kmin = BK, kmax = -1;

	memset(w->s, 0, (size_t)nq * BK * sizeof(float));
	memset(w->dp, 0, (size_t)nq * BK * sizeof(float));
	mac(vw, w->s, BK, nq, BK, w->q, dpad, 1, 0, D, w->kt, BK);
	mac(vw, w->dp, BK, nq, BK, w->o, dpad, 1, 0, D, w->vt, BK);
	for (int i = 0; i < nq; i++) {
		float *p = w->s + (size_t)i * BK;
		float *ds = w->dp + (size_t)i * BK;
		float di = w->di[i];

		if (w->lo[i] > w->hi[i]) {
			memset(p, 0, BK * sizeof(float));
			memset(ds, 0, BK * sizeof(float));
			continue;
		}
		kmin = TITAN_MIN(kmin, w->lo[i]);
		kmax = TITAN_MAX(kmax, w->hi[i]);
		row_exp(p, w->m[i], w->lo[i], w->hi[i]);
#pragma omp simd
		for (int j = 0; j < BK; j++)
			ds[j] = p[j] * (ds[j] - di);
	}
	*k0 = kmin;
	*k1 = kmax + 1;
}

/* dv += P^T dout and dk += dS^T (q * scale), into the tiles dvt, dkt. */
INLINE void add_dkv(int vw, struct tiles *w, int nq, int D)
{
	mac(vw, w->dvt, BK, D, BK, w->o, 1, w->dpad, 0, nq, w->s, BK);
	mac(vw, w->dkt, BK, D, BK, w->q, 1, w->dpad, 0, nq, w->dp, BK);
}

/* dq rows of query block i0, head h += (dS k) * scale.  Both backward
 * schedules add each key block's share the same way, in the same order of
 * key blocks, so they give the same bits. */
INLINE void add_dq(int vw, struct tiles *w, const struct attn_args *a,
		   int b, int h, int i0, int nq, int k0, int k1)
{
	size_t ldq = (size_t)a->H * a->D;
	float *dq = a->dq + ((size_t)b * a->Tq + i0) * ldq + (size_t)h * a->D;
	float scale = 1.0f / sqrtf((float)a->D);
	int D = a->D, dpad = w->dpad;

	memset(w->dq, 0, (size_t)nq * dpad * sizeof(float));
	mac(vw, w->dq, dpad, nq, dpad, w->dp, BK, 1, k0, k1, w->k, dpad);
	for (int i = 0; i < nq; i++) {
		float *restrict g = dq + i * ldq;
		const float *restrict t = w->dq + (size_t)i * dpad;

		if (w->lo[i] > w->hi[i])
			continue;
#pragma omp simd
		for (int d = 0; d < D; d++)
			g[d] += scale * t[d];
	}
}

/* dk and dv of key block j0 of KV head g in row b, overwritten; with
 * with_dq, also dq of the query heads of g (added: zeroed beforehand).
 * Only the query blocks whose span meets the key block are visited. */
INLINE void backward_key_block(int vw, struct tiles *w,
			       const struct attn_args *a, int b, int g,
			       int j0, bool with_dq)
{
	int Tq = a->Tq, Tk = a->Tk, D = a->D, rep = a->H / a->KV;
	int nk = TITAN_MIN(BK, Tk - j0);
	const int32_t *lob = a->kv_lo + (size_t)b * Tq;
	const int32_t *hib = a->kv_hi + (size_t)b * Tq;
	const int32_t *span = a->span + (size_t)b * a->nqb * 2;
	size_t ldk = (size_t)a->KV * D;

	load_key_block(w, a, b, g, j0, nk);
	memset(w->dkt, 0, (size_t)D * BK * sizeof(float));
	memset(w->dvt, 0, (size_t)D * BK * sizeof(float));
	for (int h = g * rep; h < (g + 1) * rep; h++) {
		for (int ib = 0; ib < a->nqb; ib++) {
			int i0 = ib * BQ, nq = TITAN_MIN(BQ, Tq - i0), k0, k1;

			if (span[2 * ib] >= j0 + nk || span[2 * ib + 1] < j0 ||
			    !block_ranges(w, lob, hib, i0, nq, j0, nk))
				continue;
			load_query_block(w, a, b, h, i0, nq);
			pair_grads(vw, w, nq, D, &k0, &k1);
			add_dkv(vw, w, nq, D);
			if (with_dq)
				add_dq(vw, w, a, b, h, i0, nq, k0, k1);
		}
	}
	for (int j = 0; j < nk; j++) {
		size_t row = ((size_t)b * Tk + j0 + j) * ldk + (size_t)g * D;

		for (int d = 0; d < D; d++) {
			a->dk[row + d] = w->dkt[(size_t)d * BK + j];
			a->dv[row + d] = w->dvt[(size_t)d * BK + j];
		}
	}
}

/* One pass: all of row b, KV head g.  The task owns dk, dv of g and dq of
 * its query heads. */
INLINE void backward_one(int vw, struct tiles *w, const struct attn_args *a,
			 long task)
{
	int b = (int)(task / a->KV), g = (int)(task % a->KV);
	int rep = a->H / a->KV;
	size_t ldq = (size_t)a->H * a->D;

	for (int t = 0; t < a->Tq; t++)
		memset(a->dq + ((size_t)b * a->Tq + t) * ldq +
		       (size_t)g * rep * a->D, 0,
		       (size_t)rep * a->D * sizeof(float));
	for (int j0 = 0; j0 < a->Tk; j0 += BK)
		backward_key_block(vw, w, a, b, g, j0, true);
}

/* Two passes, for more tasks than (row, KV head) pairs: dk and dv per
 * (row, KV head, key block), then dq per (row, head, query block).  The
 * second pass rebuilds P and dS: 7 tile products per tile pair, not 5. */
INLINE void backward_dkv_one(int vw, struct tiles *w,
			     const struct attn_args *a, long task)
{
	long bg = task / a->nkb;

	backward_key_block(vw, w, a, (int)(bg / a->KV), (int)(bg % a->KV),
			   (int)(task % a->nkb) * BK, false);
}

/* dq of one query block: the key blocks of its span in increasing order,
 * as the one-pass schedule adds them. */
INLINE void backward_dq_one(int vw, struct tiles *w,
			    const struct attn_args *a, long task)
{
	int ib = a->nqb - 1 - (int)(task % a->nqb);
	long bh = task / a->nqb;
	int b = (int)(bh / a->H), h = (int)(bh % a->H);
	int Tq = a->Tq, Tk = a->Tk, D = a->D;
	int i0 = ib * BQ, nq = TITAN_MIN(BQ, Tq - i0), g = h / (a->H / a->KV);
	const int32_t *lob = a->kv_lo + (size_t)b * Tq;
	const int32_t *hib = a->kv_hi + (size_t)b * Tq;
	const int32_t *span = a->span + ((size_t)b * a->nqb + ib) * 2;
	size_t ldq = (size_t)a->H * D;

	for (int i = 0; i < nq; i++)
		memset(a->dq + ((size_t)b * Tq + i0 + i) * ldq + (size_t)h * D,
		       0, D * sizeof(float));
	if (span[0] > span[1])
		return;
	load_query_block(w, a, b, h, i0, nq);
	for (int j0 = span[0] / BK * BK; j0 <= span[1]; j0 += BK) {
		int nk = TITAN_MIN(BK, Tk - j0), k0, k1;

		if (!block_ranges(w, lob, hib, i0, nq, j0, nk))
			continue;
		load_key_block(w, a, b, g, j0, nk);
		pair_grads(vw, w, nq, D, &k0, &k1);
		add_dq(vw, w, a, b, h, i0, nq, k0, k1);
	}
}

typedef void task_fn(struct tiles *w, const struct attn_args *a, long task);

/* Forward tasks run from the last query block of each (row, head) down:
 * under a causal mask later blocks see more keys, and dynamic scheduling
 * does best when the long tasks are handed out first. */
INLINE void forward_one(int vw, struct tiles *w, const struct attn_args *a,
			long task)
{
	int ib = a->nqb - 1 - (int)(task % a->nqb);
	long bh = task / a->nqb;

	forward_task(vw, w, a, (int)(bh / a->H), (int)(bh % a->H), ib * BQ);
}

#define DEFINE_BUILD(suffix, attr, vw)                                          \
attr static void forward_##suffix(struct tiles *w, const struct attn_args *a,  \
				  long task)                                    \
{                                                                               \
	forward_one(vw, w, a, task);                                            \
}                                                                               \
attr static void backward_##suffix(struct tiles *w, const struct attn_args *a, \
				   long task)                                   \
{                                                                               \
	backward_one(vw, w, a, task);                                           \
}                                                                               \
attr static void backward_dkv_##suffix(struct tiles *w,                        \
				       const struct attn_args *a, long task)    \
{                                                                               \
	backward_dkv_one(vw, w, a, task);                                       \
}                                                                               \
attr static void backward_dq_##suffix(struct tiles *w,                         \
				      const struct attn_args *a, long task)     \
{                                                                               \
	backward_dq_one(vw, w, a, task);                                        \
}

DEFINE_BUILD(generic, , 4)
#ifdef ATTN_X86
DEFINE_BUILD(avx2, __attribute__((target("arch=x86-64-v3"))), 8)
DEFINE_BUILD(avx512, __attribute__((target("arch=x86-64-v4"))), 16)
#endif

struct build {
	task_fn *fwd, *bwd, *bwd_dkv, *bwd_dq;
};

#define BUILD(suffix) { forward_##suffix, backward_##suffix,                    \
			backward_dkv_##suffix, backward_dq_##suffix }

/* The widest build this CPU runs.  Results differ in the last bits from one
 * build to another (FMA, order of vector lanes), never from one run or one
 * thread count to another on the same machine. */
static struct build pick_build(void)
{
#ifdef ATTN_X86
	static const struct build avx512 = BUILD(avx512), avx2 = BUILD(avx2);

	__builtin_cpu_init();
	if (__builtin_cpu_supports("x86-64-v4"))
		return avx512;
	if (__builtin_cpu_supports("x86-64-v3"))
		return avx2;
#endif
	static const struct build generic = BUILD(generic);
	return generic;
}

/* Runs ntask tasks over OpenMP threads, each with its own tiles; -1 when a
 * thread could not get its tiles. */
static int run_tasks(task_fn *fn, const struct attn_args *a, long ntask)
{
	int failed = 0;

#pragma omp parallel reduction(| : failed)
	{
		struct tiles w;

		if (tiles_alloc(&w, a->D) < 0) {
			failed = 1;
		} else {
#pragma omp for schedule(dynamic, 1)
			for (long task = 0; task < ntask; task++)
				fn(&w, a, task);
		}
		free(w.mem);
	}
	return failed ? -1 : 0;
}

/* A failed scratch allocation leaves NaN outputs, which the loss will show:
 * the op table's kernels have no error return. */
static void fill_nan(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = NAN;
}

void cpu_attention_forward(float *out, float *lse, const float *q,
			   const float *k, const float *v,
			   const int32_t *kv_lo, const int32_t *kv_hi,
			   int B, int Tq, int Tk, int H, int KV, int D)
{
	struct attn_args a = {
		.out = out, .lse = lse, .q = q, .k = k, .v = v,
		.kv_lo = kv_lo, .kv_hi = kv_hi,
		.B = B, .Tq = Tq, .Tk = Tk, .H = H, .KV = KV, .D = D,
		.nqb = (Tq + BQ - 1) / BQ,
	};
	if (run_tasks(pick_build().fwd, &a, (long)B * H * a.nqb) < 0) {
		fill_nan(out, (size_t)B * Tq * H * D);
		fill_nan(lse, (size_t)B * H * Tq);
	}
}

void cpu_attention_backward(float *dq, float *dk, float *dv,
			    const float *dout, const float *q,
			    const float *k, const float *v,
			    const float *out, const float *lse,
			    const int32_t *kv_lo, const int32_t *kv_hi,
			    int B, int Tq, int Tk, int H, int KV, int D)
{
	struct attn_args a = {
		.dq = dq, .dk = dk, .dv = dv, .dout = dout, .q = q, .k = k,
		.v = v, .o = out, .lse_in = lse, .kv_lo = kv_lo, .kv_hi = kv_hi,
		.B = B, .Tq = Tq, .Tk = Tk, .H = H, .KV = KV, .D = D,
		.nqb = (Tq + BQ - 1) / BQ, .nkb = (Tk + BK - 1) / BK,
	};
	struct build fn = pick_build();
	size_t nspan = (size_t)B * a.nqb;
	int32_t *span = malloc((nspan ? nspan : 1) * 2 * sizeof(int32_t));
	int failed = -1;

	/* Each key block asks every query block whether it can see it: the
	 * span of each query block, once per call, makes that a comparison
	 * rather than a walk over the block's queries. */
	if (span) {
		for (size_t n = 0; n < nspan; n++) {
			int b = (int)(n / a.nqb), i0 = (int)(n % a.nqb) * BQ;

			block_span(kv_lo + (size_t)b * Tq, kv_hi + (size_t)b * Tq,
				   i0, TITAN_MIN(BQ, Tq - i0), Tk, &span[2 * n],
				   &span[2 * n + 1]);
		}
		a.span = span;

		/* One task per (row, KV head) is the least work, but runs
		 * in ceil(n / threads) rounds; the two passes do 7/5 of the
		 * work spread evenly.  Both give the same bits, so the
		 * choice may depend on the thread count. */
		long n = (long)B * KV, p = omp_get_max_threads();
		if (5 * p * ((n + p - 1) / p) <= 7 * n)
			failed = run_tasks(fn.bwd, &a, n);
		else
			failed = run_tasks(fn.bwd_dkv, &a, (long)B * KV * a.nkb) |
				 run_tasks(fn.bwd_dq, &a, (long)B * H * a.nqb);
	}
	free(span);
	if (failed < 0) {
		fill_nan(dq, (size_t)B * Tq * H * D);
		fill_nan(dk, (size_t)B * Tk * KV * D);
		fill_nan(dv, (size_t)B * Tk * KV * D);
	}
}
