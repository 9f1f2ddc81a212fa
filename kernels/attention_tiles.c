/* attention_tiles.c - the tile schedule of attention_tiles.h: which key
 * tiles, which query rows each needs, and the GEMMs and softmax steps over
 * them, in the order the header gives.  It touches no tensor itself: every
 * read and write of q, k, v, out and the scores is a primitive's, so the same
 * schedule runs over host memory or a GPU's.
 *
 * The pointer lists of every batched GEMM of a call are written first into
 * one host table, which the backend takes once (pointers), then the same
 * schedule runs again and launches: one walk of the code (walk) with two
 * modes, so the lists a GEMM reads are by construction the ones it was
 * planned with. */
#include "attention_tiles.h"
#include "attention_flash.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The query rows [qa, qb) of the chunk [q0, q1) whose ranges meet the keys
 * [k0, k1) in some batch row; qa == qb when none does. */
static void query_span(const int32_t *lo, const int32_t *hi, int B, int Tq, int q0, int q1,
		       int k0, int k1, int *qa, int *qb)
{
	int a = q1, b = q0;

	for (int r = 0; r < B; r++) {
		for (int t = q0; t < q1; t++) {
			int32_t l = lo[(size_t)r * Tq + t], h = hi[(size_t)r * Tq + t];
			if (l <= h && l < k1 && h >= k0) {
				if (t < a)
					a = t;
				if (t + 1 > b)
					b = t + 1;
			}
		}
	}
	*qa = a < b ? a : 0;
	*qb = a < b ? b : 0;
}

/* Keys per tile, batch rows per chunk and query rows per chunk.  Score
 * buffers are [batch rows of a chunk * H, query rows of a chunk, keys of a
 * tile] (fp32 counts the backward's scores and dP, bf16 adds their bf16
 * copies) and stay within the budget.  The tile is TILE_KEYS keys (all of
 * them when there are fewer): every tile a query row sees reads and
 * rewrites its out (dq) row, so with 64 keys a tile moves as many bytes
 * as it does flops over ten; but under a causal mask a row's last tile is
 * computed whole, on average half a tile of keys it does not see, so wider
 * is not better.  Chunks of batch rows cost nothing (their rows are apart
 * in every tensor); chunks of query rows make the backward add into dk and
 * dv once per chunk.  So: as many batch rows as fit, and where one does
 * not, one batch row and as many query rows (a multiple of 64) as fit.
 * key_tile, query_chunk and batch_chunk given (tests) are kept.
 *
 * In bf16 the tile is the fused kernels' (attention_flash.h), whose P is
 * rounded against the running maximum over tiles of that many keys: with
 * the same tiles every backend rounds P against the same maxima, and the
 * CPU stays the GPU's twin up to the order of the sums (on the CPU, 64
 * keys a tile costs no more than 512: its GEMMs are big enough). */
#define TILE_KEYS 512

typedef struct blocking {
	int key_tile, b_chunk, q_chunk;
} blocking;

static blocking blocking_of(const attention_tiles_shape *sh)
{
	size_t bytes = sh->bf16 ? 12 : 8, H = (size_t)sh->H;
	int Tq = sh->Tq > 0 ? sh->Tq : 1, B = sh->B > 0 ? sh->B : 1;
	int keys = sh->bf16 ? ATTENTION_FLASH_KEYS : TILE_KEYS;
	blocking b = {keys < sh->Tk ? keys : sh->Tk, B, Tq};

	if (sh->key_tile > 0)
		b.key_tile = sh->key_tile < sh->Tk ? sh->key_tile : sh->Tk;
	/* a key of the tile, for one query row of every head */
	size_t per_query = H * (size_t)attention_tiles_ld16(b.key_tile) * bytes;
	size_t rows = ATTENTION_TILES_BUDGET / (per_query * (size_t)Tq);

	if (sh->key_tile <= 0 && rows >= 1) {
		b.b_chunk = rows < (size_t)B ? (int)rows : B;
	} else if (sh->key_tile <= 0) {
		b.b_chunk = 1;
		rows = ATTENTION_TILES_BUDGET / per_query;
		rows -= rows % 64;
		b.q_chunk = rows < 64 ? 64 : rows < (size_t)Tq ? (int)rows : Tq;
	}
	if (sh->query_chunk > 0)
		b.q_chunk = sh->query_chunk < Tq ? sh->query_chunk : Tq;
	if (sh->batch_chunk > 0)
		b.b_chunk = sh->batch_chunk < B ? sh->batch_chunk : B;
	return b;
}

void attention_tiles_blocking(const attention_tiles_shape *sh, int *key_tile, int *batch_chunk,
			      int *query_chunk)
{
	blocking b = blocking_of(sh);

	*key_tile = b.key_tile;
	*batch_chunk = b.b_chunk;
	*query_chunk = b.q_chunk;
}

/* (query chunk, key tile) pairs of a call, computed or not. */
static size_t tile_pairs(const attention_tiles_shape *sh, blocking b)
{
	return (size_t)((sh->Tq + b.q_chunk - 1) / b.q_chunk) *
	       (size_t)((sh->Tk + b.key_tile - 1) / b.key_tile);
}

/* One walk of the schedule.  In the planning walk (run false) the pointer
 * lists are appended to the host table; in the running walk they are only
 * counted again, and the primitives are called with the backend's copy of
 * the table at the same offsets. */
typedef struct walk {
	const attention_tile_prims *p;
	bool run;
	void **host;           /* the table, planning walk */
	size_t n, cap;
	void *const *table;    /* the backend's copy, running walk */
	bool nomem;
} walk;

static void push(walk *w, const void *ptr)
{
	if (!w->run) {
		if (w->n == w->cap) {
			size_t cap = w->cap ? 2 * w->cap : 1024;
			void **v = realloc(w->host, cap * sizeof *v);
			if (!v) {
				w->nomem = true;
				return;
			}
			w->host = v;
			w->cap = cap;
		}
		w->host[w->n] = (void *)ptr;
	}
	w->n++;
}

/* What a GEMM's operand is. */
enum operand {
	OP_Q, OP_K, OP_V,   /* rows of a [B, T, heads, D] tensor at the tile */
	OP_OUT,             /* as A or B: dout's rows; as C: out's or dq's */
	OP_S, OP_S2,        /* score buffers: as A, P and dS; as C, S and dP */
	OP_PK, OP_PV,       /* as C only: each query head's share of dk, dv */
	OP_COUNT,
};

/* The tensors a call's GEMMs address.  The inputs (A and B) are fp32, or
 * in bf16 the rounded copies, with their own row strides; the outputs (C)
 * are fp32. */
typedef struct tensors {
	bool bf16;
	int bf16_size;              /* bytes of a bf16 copy's value */
	const void *in[OP_COUNT];
	int in_ld[OP_COUNT];        /* q, k, v, dout: the rows' stride, D or D8 (0: D) */
	float *acc[OP_COUNT];       /* OP_OUT (out or dq), OP_S, OP_S2, OP_PK, OP_PV */
	float *k_out, *v_out;       /* dk, dv */
} tensors;

/* One tile's shape. */
typedef struct tile {
	int B, Tq, Tk, H, KV, rep;
	int qa, M, k0, N;
} tile;

/* Where operand `which` starts for batch row b, query head h, in elements
 * of a tensor whose rows (of one head, or of one score row) are ld apart. */
static size_t operand_offset(const tile *t, int which, int b, int h, int ld)
{
	int g = h / t->rep;
	size_t qrow = (size_t)b * t->Tq + (size_t)t->qa;
	size_t krow = (size_t)b * t->Tk + (size_t)t->k0;

	switch (which) {
	case OP_Q:
	case OP_OUT:
		return (qrow * t->H + (size_t)h) * ld;
	case OP_K:
	case OP_V:
		return (krow * t->KV + (size_t)g) * ld;
	case OP_PK:
	case OP_PV:   /* [B][H][N][ld] */
		return ((size_t)b * t->H + (size_t)h) * (size_t)t->N * ld;
	default:   /* OP_S, OP_S2: [B][H][M][ld] */
		return ((size_t)b * t->H + (size_t)h) * (size_t)t->M * ld;
	}
}

static bool is_scores(int which)
{
	return which == OP_S || which == OP_S2;
}

/* The elements between a tile's score rows, fp32 or bf16 (see the
 * header: every (b, h) block then starts aligned). */
static int score_ld(const tile *t)
{
	return attention_tiles_ld16(t->N);
}

/* The elements between an input's rows of one head (or score rows). */
static int input_row(const tile *t, const tensors *x, int which, int D)
{
	if (is_scores(which))
		return score_ld(t);
	return x->in_ld[which] ? x->in_ld[which] : D;
}

static const void *input_at(const tile *t, const tensors *x, int which, int b, int h, int D)
{
	size_t off = operand_offset(t, which, b, h, input_row(t, x, which, D));

	if (x->bf16)
		return (const char *)x->in[which] + off * (size_t)x->bf16_size;
	return (const float *)x->in[which] + off;
}

/* A GEMM batched over every (b, h) of the tile, or (r >= 0) over the
 * (b, g) pairs with query head h = g * rep + r.  a and bm name the input
 * operands (their row strides are the tensors', lda and ldb follow from
 * them), c the output; c_base, when given, is C instead: the key rows of
 * dk or dv, [B, Tk, KV, D], of KV head g. */
static void gemm(walk *w, const tile *t, const tensors *x, int D, int r, bool ta, bool tb,
		 int M, int N, int K, float alpha, int a, int bm, float beta,
		 int c, float *c_base, int ldc)
{
	int heads = r >= 0 ? t->KV : t->H;
	int batch = t->B * heads;
	size_t at = w->n;
	int ld[2];

	for (int kind = 0; kind < 2; kind++) {
		int which = kind ? bm : a;
		int row = input_row(t, x, which, D);
		/* q, k, v and dout rows hold all heads: the GEMM steps over them */
		ld[kind] = is_scores(which) ? row
					    : row * (which == OP_K || which == OP_V ? t->KV : t->H);
		for (int b = 0; b < t->B; b++)
			for (int i = 0; i < heads; i++)
				push(w, input_at(t, x, which, b, r >= 0 ? i * t->rep + r : i, D));
	}
	for (int b = 0; b < t->B; b++) {
		for (int i = 0; i < heads; i++) {
			int h = r >= 0 ? i * t->rep + r : i;
			if (c_base)
				push(w, c_base + (((size_t)b * t->Tk + (size_t)t->k0) * t->KV +
						  (size_t)i) * D);
			else
				push(w, x->acc[c] + operand_offset(t, c, b, h,
								   is_scores(c) ? score_ld(t) : D));
		}
	}
	if (w->run)
		w->p->gemm(w->p->ctx, x->bf16, ta, tb, M, N, K, alpha, w->table + at, ld[0],
			   w->table + at + batch, ld[1], beta,
			   w->table + at + 2 * (size_t)batch, ldc, batch);
}

/* One call: its shape, the tensors, and the scratch (scores, running max
 * and sum or D_i, and in bf16 the rounded copies). */
typedef struct call {
	attention_tiles_shape sh;
	blocking blk;
	int *spans;            /* [qa, qb) of each pair, from the planning walk */
	const int32_t *lo, *hi, *host_lo, *host_hi;
	tensors x;
	float *s, *s2, *m, *l, *vec;
	void *s16, *s2_16;
	float scale;
	bool backward;
} call;

static void walk_tiles(walk *w, const call *c)
{
	const attention_tile_prims *p = w->p;
	const attention_tiles_shape *sh = &c->sh;
	int qd = sh->H * sh->D, kd = sh->KV * sh->D, D = sh->D, kt = c->blk.key_tile;
	int *span = c->spans;

	for (int q0 = 0; q0 < sh->Tq; q0 += c->blk.q_chunk) {
	for (int k0 = 0; k0 < sh->Tk; k0 += kt, span += 2) {
		int k1 = k0 + kt < sh->Tk ? k0 + kt : sh->Tk;
		int q1 = q0 + c->blk.q_chunk < sh->Tq ? q0 + c->blk.q_chunk : sh->Tq;
		if (!w->run)
			query_span(c->host_lo, c->host_hi, sh->B, sh->Tq, q0, q1, k0, k1,
				   &span[0], &span[1]);
		int qa = span[0], qb = span[1];
		if (qa == qb)
			continue;
		tile t = {sh->B, sh->Tq, sh->Tk, sh->H, sh->KV, sh->H / sh->KV,
			  qa, qb - qa, k0, k1 - k0};
		const tensors x = c->x;
		int M = t.M, N = t.N, ld = score_ld(&t);

		/* S = scale Q K^T */
		gemm(w, &t, &x, D, -1, false, true, M, N, D, c->scale, OP_Q, OP_K, 0.0f,
		     OP_S, NULL, ld);
		if (!c->backward) {
			if (w->run)
				p->softmax_tile(p->ctx, c->s, c->s16, c->m, c->l, x.acc[OP_OUT],
						c->lo, c->hi, sh->B, sh->H, sh->Tq, qa, M, k0, N, D);
			/* out += P V */
			gemm(w, &t, &x, D, -1, false, false, M, D, N, 1.0f, OP_S, OP_V, 1.0f,
			     OP_OUT, NULL, qd);
			continue;
		}
		/* dP = dout V^T */
		gemm(w, &t, &x, D, -1, false, true, M, N, D, 1.0f, OP_OUT, OP_V, 0.0f,
		     OP_S2, NULL, ld);
		if (w->run)
			p->grad_tile(p->ctx, c->s, c->s2, c->s16, c->s2_16, c->m, c->vec, c->lo,
				     c->hi, sh->B, sh->H, sh->Tq, qa, M, k0, N, c->scale);
		/* dq += dS K */
		gemm(w, &t, &x, D, -1, false, false, M, D, N, 1.0f, OP_S2, OP_K, 1.0f,
		     OP_OUT, NULL, qd);
		/* dk += dS^T Q and dv += P^T dout */
		if (t.rep == 1) {
			gemm(w, &t, &x, D, 0, true, false, N, D, M, 1.0f, OP_S2, OP_Q, 1.0f,
			     -1, x.k_out, kd);
			gemm(w, &t, &x, D, 0, true, false, N, D, M, 1.0f, OP_S, OP_OUT, 1.0f,
			     -1, x.v_out, kd);
			continue;
		}
		/* the heads of a group would write the same rows: each query
		 * head's share into rows of its own, in one GEMM over every
		 * head, then each group's shares summed in head order */
		gemm(w, &t, &x, D, -1, true, false, N, D, M, 1.0f, OP_S2, OP_Q, 0.0f, OP_PK,
		     NULL, D);
		gemm(w, &t, &x, D, -1, true, false, N, D, M, 1.0f, OP_S, OP_OUT, 0.0f, OP_PV,
		     NULL, D);
		if (w->run) {
			p->group_sum(p->ctx, x.k_out, x.acc[OP_PK], sh->B, sh->Tk, sh->KV, t.rep,
				     k0, N, D);
			p->group_sum(p->ctx, x.v_out, x.acc[OP_PV], sh->B, sh->Tk, sh->KV, t.rep,
				     k0, N, D);
		}
	}
	}
}

/* The pointer table's entries for every pair of a call: what the backend
 * sets aside whatever the mask, so that the op's memory is the same for
 * every batch (per pair, three lists of B * H for each GEMM: forward's
 * two, backward's five, those of dk and dv over KV heads when a KV head
 * has one query head). */
static size_t pointer_room(const attention_tiles_shape *sh, blocking b, bool backward)
{
	return (size_t)(backward ? 5 : 2) * 3 * sh->B * sh->H * tile_pairs(sh, b);
}

/* Plan, hand the table over, run. */
static int run_call(const attention_tile_prims *p, call *c)
{
	walk w = {.p = p};
	int rc = -1;

	c->spans = malloc(2 * tile_pairs(&c->sh, c->blk) * sizeof *c->spans);
	if (!c->spans)
		return -1;
	walk_tiles(&w, c);
	if (w.nomem || !w.n) {
		free(w.host);
		free(c->spans);
		return w.nomem ? -1 : 0;
	}
	w.table = p->pointers(p->ctx, w.host, w.n, pointer_room(&c->sh, c->blk, c->backward));
	if (w.table) {
		w.run = true;
		w.n = 0;
		walk_tiles(&w, c);
		p->pointers_put(p->ctx, w.table);
		rc = 0;
	}
	free(w.host);
	free(c->spans);
	return rc;
}

/* The scratch of a call, in one block: sections of whole 256-byte units,
 * so that every one starts aligned for any kernel or GEMM. */
enum section {
	SEC_S, SEC_S2, SEC_SMALL,            /* fp32 scores, dP; m and l, or D_i */
	SEC_PK, SEC_PV,                      /* GQA's per-head shares of dk, dv */
	SEC_Q16, SEC_K16, SEC_V16, SEC_DOUT16, SEC_S16, SEC_S2_16,
	SEC_COUNT,
};

static size_t round256(size_t n)
{
	return (n + 255) / 256 * 256;
}

/* Each section's bytes, and the total. */
static size_t layout(const attention_tiles_shape *sh, blocking blk, bool backward,
		     int bf16_size, size_t bytes[SEC_COUNT])
{
	size_t rows = (size_t)sh->B * sh->H * (size_t)sh->Tq;
	size_t scores = (size_t)sh->B * sh->H * (size_t)blk.q_chunk *
			(size_t)attention_tiles_ld16(blk.key_tile);
	size_t d8 = (size_t)attention_tiles_ld16(sh->D);
	size_t total = 0;

	for (int i = 0; i < SEC_COUNT; i++)
		bytes[i] = 0;
	bytes[SEC_S] = scores * 4;
	bytes[SEC_S2] = backward ? scores * 4 : 0;
	bytes[SEC_SMALL] = (backward ? 1 : 2) * rows * 4;
	if (backward && sh->KV > 0 && sh->H / sh->KV > 1) {
		bytes[SEC_PK] = (size_t)sh->B * sh->H * (size_t)blk.key_tile * sh->D * 4;
		bytes[SEC_PV] = bytes[SEC_PK];
	}
	if (sh->bf16) {
		size_t e = (size_t)bf16_size;
		size_t scores16 = scores * e;
		size_t kv = (size_t)sh->B * sh->Tk * (size_t)sh->KV * d8 * e;

		bytes[SEC_Q16] = rows * d8 * e;
		bytes[SEC_K16] = kv;
		bytes[SEC_V16] = kv;
		bytes[SEC_DOUT16] = backward ? rows * d8 * e : 0;
		bytes[SEC_S16] = scores16;
		bytes[SEC_S2_16] = backward ? scores16 : 0;
	}
	for (int i = 0; i < SEC_COUNT; i++) {
		bytes[i] = round256(bytes[i]);
		total += bytes[i];
	}
	return total;
}

void attention_tiles_scratch(const attention_tiles_shape *sh, bool backward, int bf16_size,
			     size_t *scratch, size_t *pointers)
{
	size_t bytes[SEC_COUNT];
	blocking blk;

	*scratch = *pointers = 0;
	if (sh->B <= 0 || sh->Tq <= 0 || sh->H <= 0 || sh->Tk <= 0)
		return;
	blk = blocking_of(sh);
	attention_tiles_shape chunk = *sh;   /* the largest chunk's */
	chunk.B = blk.b_chunk;
	*scratch = layout(&chunk, blk, backward, bf16_size, bytes);
	*pointers = pointer_room(&chunk, blk, backward) * sizeof(void *);
}

/* Take the call's scratch and point c's buffers into it; the base, for
 * scratch_put, or NULL. */
static void *take_scratch(const attention_tile_prims *p, call *c)
{
	size_t bytes[SEC_COUNT], at[SEC_COUNT], total;

	total = layout(&c->sh, c->blk, c->backward, p->bf16_size, bytes);
	char *base = p->scratch_get(p->ctx, total);
	if (!base)
		return NULL;
	at[0] = 0;
	for (int i = 1; i < SEC_COUNT; i++)
		at[i] = at[i - 1] + bytes[i - 1];
	size_t rows = (size_t)c->sh.B * c->sh.H * (size_t)c->sh.Tq;
	c->s = (float *)(base + at[SEC_S]);
	c->s2 = c->backward ? (float *)(base + at[SEC_S2]) : NULL;
	float *small = (float *)(base + at[SEC_SMALL]);
	if (c->backward) {
		c->vec = small;
	} else {
		c->m = small;
		c->l = small + rows;
	}
	c->x.acc[OP_S] = c->s;
	c->x.acc[OP_S2] = c->s2;
	c->x.acc[OP_PK] = bytes[SEC_PK] ? (float *)(base + at[SEC_PK]) : NULL;
	c->x.acc[OP_PV] = bytes[SEC_PV] ? (float *)(base + at[SEC_PV]) : NULL;
	c->x.in[OP_S] = c->s;
	c->x.in[OP_S2] = c->s2;
	if (c->sh.bf16) {
		c->s16 = base + at[SEC_S16];
		c->s2_16 = c->backward ? base + at[SEC_S2_16] : NULL;
		c->x.in[OP_S] = c->s16;
		c->x.in[OP_S2] = c->s2_16;
		c->x.in[OP_Q] = base + at[SEC_Q16];
		c->x.in[OP_K] = base + at[SEC_K16];
		c->x.in[OP_V] = base + at[SEC_V16];
		c->x.in[OP_OUT] = c->backward ? base + at[SEC_DOUT16] : NULL;
	}
	return base;
}

/* In bf16, round the call's inputs into their copies (rows of D padded to
 * D8); src[] are the fp32 q, k, v and dout. */
static void round_inputs(const attention_tile_prims *p, call *c, const float *const src[4])
{
	const attention_tiles_shape *sh = &c->sh;
	int d8 = attention_tiles_ld16(sh->D);
	size_t qrows = (size_t)sh->B * sh->Tq * sh->H, krows = (size_t)sh->B * sh->Tk * sh->KV;
	static const int which[4] = {OP_Q, OP_K, OP_V, OP_OUT};

	for (int i = 0; i < 4; i++) {
		if (!src[i])
			continue;
		c->x.in_ld[which[i]] = d8;
		p->to_bf16(p->ctx, (void *)c->x.in[which[i]], src[i],
			   which[i] == OP_K || which[i] == OP_V ? krows : qrows, sh->D, d8);
	}
}

static void init_call(call *c, const attention_tile_prims *p, const attention_tiles_shape *sh,
		      blocking blk, bool backward, const int32_t *lo, const int32_t *hi,
		      const int32_t *host_lo, const int32_t *host_hi)
{
	*c = (call){.sh = *sh, .blk = blk, .lo = lo, .hi = hi,
		    .host_lo = host_lo, .host_hi = host_hi,
		    .scale = 1.0f / sqrtf((float)sh->D), .backward = backward};
	c->x.bf16 = sh->bf16;
	c->x.bf16_size = p->bf16_size;
}

/* A call's tensors: forward writes out and lse; backward writes dq, dk
 * and dv and reads dout and the forward's out and lse. */
typedef struct att_io {
	float *out, *lse, *dq, *dk, *dv;
	const float *q, *k, *v, *dout, *fwd_out, *fwd_lse;
	const int32_t *lo, *hi, *host_lo, *host_hi;
} att_io;

static float *plus(float *x, size_t n)
{
	return x ? x + n : NULL;
}

static const float *cplus(const float *x, size_t n)
{
	return x ? x + n : NULL;
}

/* io for the chunk of batch rows from b0: element offsets of its first
 * row in [B, Tq, H, D] (q, out, dout, dq), [B, Tk, KV, D] (k, v, dk, dv),
 * [B, H, Tq] (lse) and [B, Tq] (the ranges). */
static att_io rows_from(const att_io *io, const attention_tiles_shape *sh, int b0)
{
	size_t b = (size_t)b0, q = b * sh->Tq * sh->H * sh->D, k = b * sh->Tk * sh->KV * sh->D;
	size_t lse = b * sh->H * sh->Tq, range = b * sh->Tq;

	return (att_io){plus(io->out, q), plus(io->lse, lse), plus(io->dq, q), plus(io->dk, k),
			plus(io->dv, k), cplus(io->q, q), cplus(io->k, k), cplus(io->v, k),
			cplus(io->dout, q), cplus(io->fwd_out, q), cplus(io->fwd_lse, lse),
			io->lo + range, io->hi + range, io->host_lo + range, io->host_hi + range};
}

/* Set c up for one chunk of batch rows (sh its shape): its tensors, its
 * scratch (returned, for scratch_put; NULL when there is none) and in bf16
 * the rounded copies of its inputs. */
static void *begin_rows(const attention_tile_prims *p, const attention_tiles_shape *sh,
			blocking blk, bool backward, const att_io *io, call *c)
{
	init_call(c, p, sh, blk, backward, io->lo, io->hi, io->host_lo, io->host_hi);
	c->x.in[OP_Q] = io->q;
	c->x.in[OP_K] = io->k;
	c->x.in[OP_V] = io->v;
	c->x.in[OP_OUT] = backward ? io->dout : NULL;
	c->x.acc[OP_OUT] = backward ? io->dq : io->out;
	c->x.k_out = io->dk;
	c->x.v_out = io->dv;
	void *scratch = take_scratch(p, c);
	if (scratch && sh->bf16)
		round_inputs(p, c, (const float *const[4]){io->q, io->k, io->v,
							   backward ? io->dout : NULL});
	return scratch;
}

static int forward_rows(const attention_tile_prims *p, const attention_tiles_shape *sh,
			blocking blk, const att_io *io)
{
	size_t rows = (size_t)sh->B * sh->H * sh->Tq;
	call c;
	void *scratch = begin_rows(p, sh, blk, false, io, &c);

	if (!scratch)
		return -1;
	p->fill(p->ctx, c.m, -INFINITY, rows);
	p->fill(p->ctx, c.l, 0.0f, rows);
	int rc = run_call(p, &c);
	if (!rc)
		p->finish(p->ctx, io->out, io->lse, c.m, c.l, sh->B, sh->Tq, sh->H, sh->D);
	p->scratch_put(p->ctx, scratch);
	return rc;
}

static int backward_rows(const attention_tile_prims *p, const attention_tiles_shape *sh,
			 blocking blk, const att_io *io)
{
	call c;
	void *scratch = begin_rows(p, sh, blk, true, io, &c);

	if (!scratch)
		return -1;
	c.m = (float *)io->fwd_lse;   /* grad_tile reads the lse where forward kept m */
	p->rowdot(p->ctx, c.vec, io->dout, io->fwd_out, sh->B, sh->Tq, sh->H, sh->D);
	int rc = run_call(p, &c);
	p->scratch_put(p->ctx, scratch);
	return rc;
}

/* Each chunk of batch rows in turn (blocking_of). */
static int run_chunks(const attention_tile_prims *p, const attention_tiles_shape *sh,
		      bool backward, const att_io *io)
{
	blocking blk = blocking_of(sh);
	int rc = 0;

	for (int b0 = 0; b0 < sh->B && !rc; b0 += blk.b_chunk) {
		attention_tiles_shape chunk = *sh;
		att_io at = rows_from(io, sh, b0);

		chunk.B = sh->B - b0 < blk.b_chunk ? sh->B - b0 : blk.b_chunk;
		rc = backward ? backward_rows(p, &chunk, blk, &at) : forward_rows(p, &chunk, blk, &at);
	}
	return rc;
}

int attention_tiles_forward(const attention_tile_prims *p, const attention_tiles_shape *sh,
			    float *out, float *lse, const float *q, const float *k,
			    const float *v, const int32_t *lo, const int32_t *hi,
			    const int32_t *host_lo, const int32_t *host_hi)
{
	size_t rows = (size_t)sh->B * sh->H * sh->Tq;
	att_io io = {.out = out, .lse = lse, .q = q, .k = k, .v = v, .lo = lo, .hi = hi,
		     .host_lo = host_lo, .host_hi = host_hi};

	if (!rows)
		return 0;
	p->fill(p->ctx, out, 0.0f, rows * sh->D);
	if (sh->Tk <= 0) {
		p->fill(p->ctx, lse, -INFINITY, rows);
		return 0;
	}
	return run_chunks(p, sh, false, &io);
}

int attention_tiles_backward(const attention_tile_prims *p, const attention_tiles_shape *sh,
			     float *dq, float *dk, float *dv, const float *dout,
			     const float *q, const float *k, const float *v,
			     const float *out, const float *lse,
			     const int32_t *lo, const int32_t *hi,
			     const int32_t *host_lo, const int32_t *host_hi)
{
	size_t rows = (size_t)sh->B * sh->H * sh->Tq;
	size_t kvn = (size_t)sh->B * sh->Tk * sh->KV * sh->D;
	att_io io = {.dq = dq, .dk = dk, .dv = dv, .q = q, .k = k, .v = v, .dout = dout,
		     .fwd_out = out, .fwd_lse = lse, .lo = lo, .hi = hi, .host_lo = host_lo,
		     .host_hi = host_hi};

	p->fill(p->ctx, dq, 0.0f, rows * sh->D);
	p->fill(p->ctx, dk, 0.0f, kvn);
	p->fill(p->ctx, dv, 0.0f, kvn);
	if (!rows || sh->Tk <= 0)
		return 0;
	return run_chunks(p, sh, true, &io);
}
