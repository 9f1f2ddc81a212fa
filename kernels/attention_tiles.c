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

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The query rows [qa, qb) whose ranges meet the keys [k0, k1) in some batch
 * row; qa == qb when none does. */
static void query_span(const int32_t *lo, const int32_t *hi, int B, int Tq, int k0, int k1,
		       int *qa, int *qb)
{
	int a = Tq, b = 0;

	for (int r = 0; r < B; r++) {
		for (int t = 0; t < Tq; t++) {
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

/* The keys per tile: what keeps one [B*H, Tq, tile] score buffer (the
 * backward holds two) near the budget, a multiple of 64 keys (full tensor
 * core tiles), at least 64 and at most Tk. */
static int auto_key_tile(int B, int Tq, int Tk, int H)
{
	size_t per_key = (size_t)B * H * (size_t)(Tq > 0 ? Tq : 1) * sizeof(float) * 2;
	size_t keys = ATTENTION_TILES_BUDGET / per_key;

	keys -= keys % 64;
	if (keys < 64)
		keys = 64;
	return keys > (size_t)Tk ? Tk : (int)keys;
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

/* The shapes of one tile's GEMMs, and the buffers they address. */
typedef struct tile {
	int B, Tq, Tk, H, KV, D, rep;
	int qa, M, k0, N;
	float *s, *s2;         /* [B][H][M][N] score buffers */
} tile;

/* What a GEMM's operand is, for operand_at. */
enum operand {
	OP_Q, OP_K, OP_V, OP_OUT,   /* rows of a [B, T, heads, D] tensor at the tile */
	OP_S, OP_S2,                /* the score buffers */
};

typedef struct tensors {
	const float *q, *k, *v;
	float *o;                   /* OP_OUT: out, dq, or dout in a read-only view */
	float *k_out, *v_out;       /* dk, dv */
	const float *dout;
} tensors;

/* The address of operand `which` for batch row b, query head h. */
static const float *operand_at(const tile *t, const tensors *x, int which, int b, int h)
{
	int g = h / t->rep;
	size_t qrow = (size_t)b * t->Tq + (size_t)t->qa;
	size_t krow = (size_t)b * t->Tk + (size_t)t->k0;
	size_t sbuf = ((size_t)b * t->H + (size_t)h) * (size_t)t->M * (size_t)t->N;

	switch (which) {
	case OP_Q:
		return x->q + (qrow * t->H + (size_t)h) * t->D;
	case OP_K:
		return x->k + (krow * t->KV + (size_t)g) * t->D;
	case OP_V:
		return x->v + (krow * t->KV + (size_t)g) * t->D;
	case OP_OUT:
		return x->o + (qrow * t->H + (size_t)h) * t->D;
	case OP_S:
		return t->s + sbuf;
	case OP_S2:
		return t->s2 + sbuf;
	default:
		return NULL;
	}
}

/* A GEMM batched over every (b, h) of the tile, or (r >= 0) over the
 * (b, g) pairs with query head h = g * rep + r.  a, bm and c name the
 * operands; c_base, when given, is C instead: the key rows of dk or dv,
 * [B, Tk, KV, D], of KV head g. */
static void gemm(walk *w, const tile *t, const tensors *x, int r, bool ta, bool tb,
		 int M, int N, int K, float alpha, int a, int lda, int bm, int ldb, float beta,
		 int c, float *c_base, int ldc)
{
	int heads = r >= 0 ? t->KV : t->H;
	int batch = t->B * heads;
	size_t at = w->n;

	for (int kind = 0; kind < 3; kind++) {
		int which = kind == 0 ? a : kind == 1 ? bm : c;
		for (int b = 0; b < t->B; b++) {
			for (int i = 0; i < heads; i++) {
				int h = r >= 0 ? i * t->rep + r : i;
				if (kind == 2 && c_base)
					push(w, c_base + (((size_t)b * t->Tk + (size_t)t->k0) *
							  t->KV + (size_t)i) * t->D);
				else
					push(w, operand_at(t, x, which, b, h));
			}
		}
	}
	if (w->run)
		w->p->gemm(w->p->ctx, ta, tb, M, N, K, alpha, w->table + at, lda,
			   w->table + at + batch, ldb, beta, w->table + at + 2 * (size_t)batch,
			   ldc, batch);
}

typedef struct call {
	int B, Tq, Tk, H, KV, D, key_tile;
	const int32_t *lo, *hi, *host_lo, *host_hi;
	tensors x;
	float *s, *s2, *m, *l, *vec;   /* scratch: scores, running max/sum, D_i */
	float scale;
	bool backward;
} call;

static void walk_tiles(walk *w, const call *c)
{
	const attention_tile_prims *p = w->p;
	int qd = c->H * c->D, kd = c->KV * c->D;

	for (int k0 = 0; k0 < c->Tk; k0 += c->key_tile) {
		int k1 = k0 + c->key_tile < c->Tk ? k0 + c->key_tile : c->Tk;
		int qa, qb;
		query_span(c->host_lo, c->host_hi, c->B, c->Tq, k0, k1, &qa, &qb);
		if (qa == qb)
			continue;
		tile t = {c->B, c->Tq, c->Tk, c->H, c->KV, c->D, c->H / c->KV,
			  qa, qb - qa, k0, k1 - k0, c->s, c->s2};
		int M = t.M, N = t.N, D = c->D;

		/* S = scale Q K^T */
		gemm(w, &t, &c->x, -1, false, true, M, N, D, c->scale, OP_Q, qd, OP_K, kd,
		     0.0f, OP_S, NULL, N);
		if (!c->backward) {
			if (w->run)
				p->softmax_tile(p->ctx, c->s, c->m, c->l, c->x.o, c->lo, c->hi,
						c->B, c->H, c->Tq, qa, M, k0, N, D);
			/* out += P V */
			gemm(w, &t, &c->x, -1, false, false, M, D, N, 1.0f, OP_S, N, OP_V, kd,
			     1.0f, OP_OUT, NULL, qd);
			continue;
		}
		/* dP = dout V^T: dout's rows are addressed as OP_OUT of a view
		 * whose o is dout */
		tensors dview = c->x;
		dview.o = (float *)c->x.dout;
		gemm(w, &t, &dview, -1, false, true, M, N, D, 1.0f, OP_OUT, qd, OP_V, kd,
		     0.0f, OP_S2, NULL, N);
		if (w->run)
			p->grad_tile(p->ctx, c->s, c->s2, c->m, c->vec, c->lo, c->hi, c->B,
				     c->H, c->Tq, qa, M, k0, N, c->scale);
		/* dq += dS K */
		gemm(w, &t, &c->x, -1, false, false, M, D, N, 1.0f, OP_S2, N, OP_K, kd,
		     1.0f, OP_OUT, NULL, qd);
		/* dk += dS^T Q and dv += P^T dout, one query head of each group
		 * at a time: the heads of a group write the same rows */
		for (int r = 0; r < t.rep; r++) {
			gemm(w, &t, &c->x, r, true, false, N, D, M, 1.0f, OP_S2, N, OP_Q, qd,
			     1.0f, -1, c->x.k_out, kd);
			gemm(w, &t, &dview, r, true, false, N, D, M, 1.0f, OP_S, N, OP_OUT, qd,
			     1.0f, -1, c->x.v_out, kd);
		}
	}
}

/* Plan, hand the table over, run. */
static int run_call(const attention_tile_prims *p, call *c)
{
	walk w = {.p = p};
	int rc = -1;

	walk_tiles(&w, c);
	if (w.nomem || !w.n) {
		free(w.host);
		return w.nomem ? -1 : 0;
	}
	w.table = p->pointers(p->ctx, w.host, w.n);
	if (w.table) {
		w.run = true;
		w.n = 0;
		walk_tiles(&w, c);
		p->pointers_put(p->ctx, w.table);
		rc = 0;
	}
	free(w.host);
	return rc;
}

/* The score buffers, and n_small floats more after them (m, l or D_i). */
static float *take_scratch(const attention_tile_prims *p, call *c, int buffers, size_t n_small)
{
	size_t per = (size_t)c->B * c->H * (size_t)c->Tq * (size_t)c->key_tile;
	float *base = p->scratch_get(p->ctx, (per * buffers + n_small) * sizeof(float));

	if (!base)
		return NULL;
	c->s = base;
	c->s2 = buffers > 1 ? base + per : NULL;
	return base + per * buffers;
}

static void init_call(call *c, int B, int Tq, int Tk, int H, int KV, int D, int key_tile,
		      const int32_t *lo, const int32_t *hi, const int32_t *host_lo,
		      const int32_t *host_hi)
{
	*c = (call){.B = B, .Tq = Tq, .Tk = Tk, .H = H, .KV = KV, .D = D,
		    .key_tile = key_tile > 0 ? (key_tile < Tk ? key_tile : Tk)
					     : auto_key_tile(B, Tq, Tk, H),
		    .lo = lo, .hi = hi, .host_lo = host_lo, .host_hi = host_hi,
		    .scale = 1.0f / sqrtf((float)D)};
}

int attention_tiles_forward(const attention_tile_prims *p, float *out, float *lse,
			    const float *q, const float *k, const float *v,
			    const int32_t *lo, const int32_t *hi,
			    const int32_t *host_lo, const int32_t *host_hi,
			    int B, int Tq, int Tk, int H, int KV, int D, int key_tile)
{
	size_t rows = (size_t)B * H * Tq;
	call c;

	if (!rows)
		return 0;
	p->fill(p->ctx, out, 0.0f, rows * D);
	if (Tk <= 0) {
		p->fill(p->ctx, lse, -INFINITY, rows);
		return 0;
	}
	init_call(&c, B, Tq, Tk, H, KV, D, key_tile, lo, hi, host_lo, host_hi);
	c.x = (tensors){.q = q, .k = k, .v = v, .o = out};
	float *small = take_scratch(p, &c, 1, 2 * rows);
	if (!small)
		return -1;
	c.m = small;
	c.l = small + rows;
	p->fill(p->ctx, c.m, -INFINITY, rows);
	p->fill(p->ctx, c.l, 0.0f, rows);
	int rc = run_call(p, &c);
	if (!rc)
		p->finish(p->ctx, out, lse, c.m, c.l, B, Tq, H, D);
	p->scratch_put(p->ctx, c.s);
	return rc;
}

int attention_tiles_backward(const attention_tile_prims *p, float *dq, float *dk, float *dv,
			     const float *dout, const float *q, const float *k, const float *v,
			     const float *out, const float *lse,
			     const int32_t *lo, const int32_t *hi,
			     const int32_t *host_lo, const int32_t *host_hi,
			     int B, int Tq, int Tk, int H, int KV, int D, int key_tile)
{
	size_t rows = (size_t)B * H * Tq;
	call c;

	p->fill(p->ctx, dq, 0.0f, rows * D);
	p->fill(p->ctx, dk, 0.0f, (size_t)B * Tk * KV * D);
	p->fill(p->ctx, dv, 0.0f, (size_t)B * Tk * KV * D);
	if (!rows || Tk <= 0)
		return 0;
	init_call(&c, B, Tq, Tk, H, KV, D, key_tile, lo, hi, host_lo, host_hi);
	c.x = (tensors){.q = q, .k = k, .v = v, .o = dq, .k_out = dk, .v_out = dv,
			.dout = dout};
	float *small = take_scratch(p, &c, 2, rows);
	if (!small)
		return -1;
	c.vec = small;
	c.m = (float *)lse;   /* grad_tile reads the lse where forward kept m */
	c.backward = true;
	p->rowdot(p->ctx, c.vec, dout, out, B, Tq, H, D);
	int rc = run_call(p, &c);
	p->scratch_put(p->ctx, c.s);
	return rc;
}
