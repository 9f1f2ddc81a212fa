/* llama_decode.c - the KV cache, prefill and decode (see llama_decode.h).
 *
 * The math is llama_step.c's forward, token by token: the same ops from the
 * model's table for the norms, RoPE, SwiGLU and the large projections.  Two
 * kernels are this file's own.  Attention of a few queries over a cache
 * (the op table's attention wants q, k and v of the same T tokens).  And the
 * projections of a decode step, whose few rows make sgemm pack the whole
 * weight matrix for each call: below GEMV_ROWS rows a dot-product loop
 * reads each weight once, which is all a decode step can do, since it is
 * bound by the bytes of weights it reads. */
#include "core/base.h"

#include <math.h>
#include <omp.h>

#include "model/llama_decode.h"
#include "model/llama_internal.h"
#include "cpu/cpu.h"

/* Up to this many rows a projection is a loop of dot products on the CPU. */
#define GEMV_ROWS 8
/* Below this many multiply-adds a loop stays on one thread. */
#define PAR_MIN 32768


struct llama_decoder {
	const llama_model *m;
	int B, max_len, max_tokens, nthreads;
	int C, H, KV, D, F, V, L;  /* H, KV, F, V: a tp rank's share */
	int tp, tp_rank, Vfull;
	size_t q, kv;            /* H * D, KV * D */
	void *mem;               /* the one allocation below */
	size_t bytes;
	/* per layer, sequence and KV head: keys transposed, [D][max_len],
	 * so that the scores of one query are D axpys over contiguous
	 * positions; values [max_len][D] */
	float *kc, *vc;          /* [L][B][KV][D * max_len] */
	int *len;                /* [B] tokens held */
	float *cos_tab, *sin_tab;  /* [max_len, D/2] */
	/* scratch for max_tokens tokens */
	float *x, *xn, *rstd;    /* residual [N, C], norm out [N, C], [N] */
	float *qb, *kb, *vb;     /* [N, q], [N, kv], [N, kv] */
	float *att, *proj;       /* [N, q], [N, C] */
	float *a, *b, *g;        /* [N, F] each */
	float *scores;           /* [nthreads, max_len] */
	int32_t *pos;            /* [N] */
	uint32_t *ids;           /* [N] */
	int *seq;                /* [N] */
	/* tensor parallel: ids in this rank's vocabulary slice, and the
	 * logits of the slice and of every rank */
	uint32_t *lids;          /* [N] */
	float *lg_part, *lg_all; /* [N, V], [N, Vfull] */
};

static void *take(char *base, size_t *off, size_t n, size_t sz)
{
	void *p = base ? base + *off : NULL;

	*off += (n * sz + 63) & ~(size_t)63;
	return p;
}

static size_t carve(llama_decoder *d, char *base)
{
	size_t off = 0, N = (size_t)d->max_tokens, cache;

	cache = (size_t)d->L * d->B * d->max_len * d->kv;
	d->kc = take(base, &off, cache, sizeof(float));
	d->vc = take(base, &off, cache, sizeof(float));
	d->len = take(base, &off, (size_t)d->B, sizeof(int));
	d->cos_tab = take(base, &off, (size_t)d->max_len * (d->D / 2), sizeof(float));
	d->sin_tab = take(base, &off, (size_t)d->max_len * (d->D / 2), sizeof(float));
	d->x = take(base, &off, N * d->C, sizeof(float));
	d->xn = take(base, &off, N * d->C, sizeof(float));
	d->rstd = take(base, &off, N, sizeof(float));
	d->qb = take(base, &off, N * d->q, sizeof(float));
	d->kb = take(base, &off, N * d->kv, sizeof(float));
	d->vb = take(base, &off, N * d->kv, sizeof(float));
	d->att = take(base, &off, N * d->q, sizeof(float));
	d->proj = take(base, &off, N * d->C, sizeof(float));
	d->a = take(base, &off, N * d->F, sizeof(float));
	d->b = take(base, &off, N * d->F, sizeof(float));
	d->g = take(base, &off, N * d->F, sizeof(float));
	d->scores = take(base, &off, (size_t)d->nthreads * d->max_len, sizeof(float));
	d->pos = take(base, &off, N, sizeof(int32_t));
	d->ids = take(base, &off, N, sizeof(uint32_t));
	d->seq = take(base, &off, N, sizeof(int));
	if (d->tp > 1) {
		d->lids = take(base, &off, N, sizeof(uint32_t));
		d->lg_part = take(base, &off, N * d->V, sizeof(float));
		d->lg_all = take(base, &off, N * d->Vfull, sizeof(float));
	}
	return off;
}

int llama_decoder_new(llama_decoder **out, const llama_model *m, int B, int max_len,
		      int max_tokens)
{
	const llama_config *c = &m->cfg;
	llama_decoder *d;

	*out = NULL;
	if (B <= 0 || max_len <= 0 || max_tokens <= 0)
		return titan_err(TITAN_EUSAGE, "decoder shape: %d sequences of %d tokens, "
				 "%d tokens a call: all must be positive", B, max_len, max_tokens);
	if (m->tp > 1 && (!m->hooks || !m->hooks->tp_sum || !m->hooks->tp_all_gather))
		return titan_err(TITAN_EUSAGE, "decoder: a tensor-parallel model needs its tp "
				 "hooks");
	if (m->ops != &kernels_cpu)
		return titan_err(TITAN_EUSAGE, "decoder: the '%s' backend has no decoder yet "
				 "(the KV cache and its attention are CPU code)", m->ops->name);
	if (max_len > c->max_seq_len)
		return titan_err(TITAN_EUSAGE, "decoder length %d exceeds model.max_seq_len %d",
				 max_len, c->max_seq_len);
	if ((int64_t)max_tokens * TITAN_MAX(c->vocab_size, c->ffn_hidden) > INT_MAX)
		return titan_err(TITAN_EUSAGE, "decoder: %d tokens a call is too many",
				 max_tokens);
	d = calloc(1, sizeof *d);
	if (!d)
		return titan_err_nomem();
	*d = (llama_decoder){
		.m = m, .B = B, .max_len = max_len, .max_tokens = max_tokens,
		.nthreads = omp_get_max_threads(),
		.C = c->dim, .H = c->n_heads / m->tp, .KV = c->n_kv_heads / m->tp,
		.D = c->dim / c->n_heads, .F = c->ffn_hidden / m->tp, .V = c->vocab_size / m->tp,
		.L = c->n_layers, .tp = m->tp, .tp_rank = m->tp_rank, .Vfull = c->vocab_size,
	};
	d->q = (size_t)d->H * d->D;
	d->kv = (size_t)d->KV * d->D;
	d->bytes = carve(d, NULL);
	d->mem = mem_alloc(m->mem, d->bytes, "KV cache");
	if (!d->mem) {
		free(d);
		return TITAN_ENOMEM;
	}
	carve(d, d->mem);
	llama_rope_tables(c, max_len, d->cos_tab, d->sin_tab);
	*out = d;
	return 0;
}

void llama_decoder_free(llama_decoder *d)
{
	if (!d)
		return;
	mem_free(d->m->mem, d->mem, d->bytes);
	free(d);
}

size_t llama_decoder_bytes(const llama_decoder *d)
{
	return d->bytes;
}

int llama_decoder_max_len(const llama_decoder *d)
{
	return d->max_len;
}

int llama_decoder_max_tokens(const llama_decoder *d)
{
	return d->max_tokens;
}

int llama_decoder_len(const llama_decoder *d, int seq)
{
	return seq >= 0 && seq < d->B ? d->len[seq] : 0;
}

void llama_decoder_reset(llama_decoder *d, int seq)
{
	for (int s = 0; s < d->B; s++)
		if (seq < 0 || s == seq)
			d->len[s] = 0;
}

/* out[n, o] = inp[n] . w[o] for a few rows n: one weight row at a time,
 * dotted with every input row while it is in L1. */
CPU_WIDE static void gemv_block(float *out, const float *inp, const float *w, int N, int IC,
			    int OC, int o0, int o1)
{
	for (int o = o0; o < o1; o++) {
		const float *wr = w + (size_t)o * IC;

		for (int n = 0; n < N; n++) {
			const float *x = inp + (size_t)n * IC;
			float s = 0;

#pragma omp simd reduction(+ : s)
			for (int i = 0; i < IC; i++)
				s += wr[i] * x[i];
			out[(size_t)n * OC + o] = s;
		}
	}
}

/* One projection of a GEMV batch: out[N, OC] = inp[N, IC] @ w[OC, IC]^T. */
struct proj {
	float *out;
	const float *w;
	int OC;
};

/* Outputs go in blocks of 16: a fixed split, so that results do not depend
 * on the thread count. */
#define GEMV_BLOCK 16

/* Several projections of the same input in one parallel region (q, k and
 * v; w1 and w3): a decode step is short enough that each fork and join
 * shows. */
static void gemv_multi(const float *inp, int N, int IC, const struct proj *p, int np)
{
	int first[4], nblk = 0;

	for (int k = 0; k < np; k++) {
		first[k] = nblk;
		nblk += (p[k].OC + GEMV_BLOCK - 1) / GEMV_BLOCK;
	}
#pragma omp parallel for schedule(static) if ((size_t)N * IC * nblk * GEMV_BLOCK > PAR_MIN)
	for (int blk = 0; blk < nblk; blk++) {
		int k = np - 1, o0;

		while (first[k] > blk)
			k--;
		o0 = (blk - first[k]) * GEMV_BLOCK;
		gemv_block(p[k].out, inp, p[k].w, N, IC, p[k].OC, o0,
			   TITAN_MIN(p[k].OC, o0 + GEMV_BLOCK));
	}
}

static bool use_gemv(int N)
{
	return N <= GEMV_ROWS;
}

/* The projections p[0..np) of inp[N, IC]. */
static void project(const llama_decoder *d, const float *inp, int N, int IC,
		    const struct proj *p, int np)
{
	if (use_gemv(N)) {
		gemv_multi(inp, N, IC, p, np);
		return;
	}
	for (int k = 0; k < np; k++)
		d->m->ops->matmul_forward(p[k].out, inp, p[k].w, N, IC, p[k].OC, false);
}

static void matmul(const llama_decoder *d, float *out, const float *inp, const float *w,
		   int N, int IC, int OC)
{
	struct proj p = { out, w, OC };

	project(d, inp, N, IC, &p, 1);
}

/* One query head over the first len cached positions of its KV head: kt
 * is [D][stride] (keys transposed), v is [len][D].  sc holds len scores. */
CPU_WIDE static void attend(float *out, const float *q, const float *kt, const float *v, int len,
			int D, size_t stride, float scale, float *sc)
{
	float mx = -INFINITY, sum = 0, inv;

	for (int j = 0; j < len; j++)
		sc[j] = 0;
	for (int i = 0; i < D; i++) {
		const float *ki = kt + (size_t)i * stride;
		float qi = q[i] * scale;

#pragma omp simd
		for (int j = 0; j < len; j++)
			sc[j] += qi * ki[j];
	}
	for (int j = 0; j < len; j++)
		mx = sc[j] > mx ? sc[j] : mx;
	for (int j = 0; j < len; j++) {
		sc[j] = expf(sc[j] - mx);
		sum += sc[j];
	}
	inv = 1.0f / sum;
	for (int i = 0; i < D; i++)
		out[i] = 0;
	for (int j = 0; j < len; j++) {
		const float *vj = v + (size_t)j * D;
		float p = sc[j] * inv;

#pragma omp simd
		for (int i = 0; i < D; i++)
			out[i] += p * vj[i];
	}
}

/* Cache of layer l, sequence s, KV head h: D * max_len floats. */
static float *cache_head(const llama_decoder *d, float *base, int l, int s, int h)
{
	return base + (((size_t)l * d->B + s) * d->KV + h) * d->D * d->max_len;
}

/* x += the projection's output in proj, summed over the tp ranks first
 * (wo and w2 are row-parallel). */
static int add_projection(llama_decoder *d, int N)
{
	const llama_hooks *h = d->m->hooks;
	int rc;

	if (d->tp > 1 && (rc = h->tp_sum(h->arg, d->proj, (size_t)N * d->C)))
		return rc;
	d->m->ops->add_inplace(d->x, d->proj, (size_t)N * d->C);
	return 0;
}

/* Attention half of block l on the N tokens in x: x += wo(attention). */
static int attention_half(llama_decoder *d, int l, const llama_block_weights *w, int N)
{
	const kernel_ops *op = d->m->ops;
	const float scale = 1.0f / sqrtf((float)d->D);
	int group = d->H / d->KV;
	size_t work = 0;
	struct proj qkv[3] = {
		{ d->qb, w->wq, (int)d->q }, { d->kb, w->wk, (int)d->kv }, { d->vb, w->wv, (int)d->kv },
	};

	op->rmsnorm_forward(d->xn, d->rstd, d->x, w->attention_norm, N, d->C,
			    (float)d->m->cfg.norm_eps);
	project(d, d->xn, N, d->C, qkv, 3);
	op->rope_forward(d->qb, d->pos, d->cos_tab, d->sin_tab, N, d->H, d->D);
	op->rope_forward(d->kb, d->pos, d->cos_tab, d->sin_tab, N, d->KV, d->D);
	/* every key and value of this call first: a later token of the same
	 * sequence reads an earlier one's */
	for (int i = 0; i < N; i++) {
		for (int h = 0; h < d->KV; h++) {
			const float *k = d->kb + (size_t)i * d->kv + (size_t)h * d->D;
			float *kt = cache_head(d, d->kc, l, d->seq[i], h) + d->pos[i];

			for (int e = 0; e < d->D; e++)
				kt[(size_t)e * d->max_len] = k[e];
			memcpy(cache_head(d, d->vc, l, d->seq[i], h) + (size_t)d->pos[i] * d->D,
			       d->vb + (size_t)i * d->kv + (size_t)h * d->D, d->D * sizeof(float));
		}
		work += (size_t)(d->pos[i] + 1) * d->q;
	}
#pragma omp parallel num_threads(d->nthreads) if (work > PAR_MIN)
	{
		float *sc = d->scores + (size_t)omp_get_thread_num() * d->max_len;

#pragma omp for schedule(dynamic, 4) collapse(2)
		for (int i = 0; i < N; i++) {
			for (int h = 0; h < d->H; h++) {
				int s = d->seq[i], kvh = h / group;

				attend(d->att + (size_t)i * d->q + (size_t)h * d->D,
				       d->qb + (size_t)i * d->q + (size_t)h * d->D,
				       cache_head(d, d->kc, l, s, kvh),
				       cache_head(d, d->vc, l, s, kvh),
				       d->pos[i] + 1, d->D, (size_t)d->max_len, scale, sc);
			}
		}
	}
	matmul(d, d->proj, d->att, w->wo, N, (int)d->q, d->C);
	return add_projection(d, N);
}

/* FFN half of block l: x += w2(silu(w1 xn) * w3 xn). */
static int ffn_half(llama_decoder *d, const llama_block_weights *w, int N)
{
	const kernel_ops *op = d->m->ops;
	struct proj up[2] = { { d->a, w->w1, d->F }, { d->b, w->w3, d->F } };

	op->rmsnorm_forward(d->xn, d->rstd, d->x, w->ffn_norm, N, d->C,
			    (float)d->m->cfg.norm_eps);
	project(d, d->xn, N, d->C, up, 2);
	op->swiglu_forward(d->g, d->a, d->b, (size_t)N * d->F);
	matmul(d, d->proj, d->g, w->w2, N, d->F, d->C);
	return add_projection(d, N);
}

/* The embeddings of the N tokens into x; a tp rank holds a slice of the
 * vocabulary's rows, so it looks up the tokens in it and the ranks' rows
 * are summed. */
static int embed(llama_decoder *d, int N)
{
	const llama_model *m = d->m;
	uint32_t v0 = (uint32_t)d->tp_rank * (uint32_t)d->V;

	if (d->tp == 1) {
		m->ops->embedding_forward(d->x, d->ids, m->params[0], N, d->C);
		return 0;
	}
	for (int i = 0; i < N; i++)
		d->lids[i] = d->ids[i] - v0 < (uint32_t)d->V ? d->ids[i] - v0 : 0;
	m->ops->embedding_forward(d->x, d->lids, m->params[0], N, d->C);
	for (int i = 0; i < N; i++)
		if (d->ids[i] - v0 >= (uint32_t)d->V)
			memset(d->x + (size_t)i * d->C, 0, (size_t)d->C * sizeof(float));
	return m->hooks->tp_sum(m->hooks->arg, d->x, (size_t)N * d->C);
}

/* logits [rows, Vfull] from each tp rank's [rows, V] slice. */
static int gather_logits(llama_decoder *d, int rows, float *logits)
{
	const llama_hooks *h = d->m->hooks;
	size_t part = (size_t)rows * d->V;
	int rc = h->tp_all_gather(h->arg, d->lg_part, d->lg_all, part);

	if (rc)
		return rc;
	for (int t = 0; t < d->tp; t++)
		for (int r = 0; r < rows; r++)
			memcpy(logits + (size_t)r * d->Vfull + (size_t)t * d->V,
			       d->lg_all + t * part + (size_t)r * d->V, (size_t)d->V * sizeof(float));
	return 0;
}

int llama_decoder_forward(llama_decoder *d, const uint32_t *ids, const int *seq, int N,
			  const bool *want, float *logits)
{
	const llama_model *m = d->m;
	const kernel_ops *op = m->ops;
	const float *out_w;
	int rows = 0, rc;

	if (N <= 0 || N > d->max_tokens)
		return titan_err(TITAN_ERANGE, "decoder: %d tokens in one call (1..%d)", N,
				 d->max_tokens);
	for (int i = 0; i < N; i++) {
		if (seq[i] < 0 || seq[i] >= d->B)
			return titan_err(TITAN_ERANGE, "token %d: sequence slot %d is not in "
					 "0..%d", i, seq[i], d->B - 1);
		if (ids[i] >= (uint32_t)d->Vfull)
			return titan_err(TITAN_ERANGE, "token %d: id %u is past the vocabulary "
					 "(%d)", i, ids[i], d->Vfull);
	}
	for (int i = 0; i < N; i++) {
		d->pos[i] = d->len[seq[i]]++;
		d->seq[i] = seq[i];
		d->ids[i] = ids[i];
	}
	for (int i = 0; i < N; i++) {
		if (d->pos[i] >= d->max_len) {
			int s = seq[i], at = d->pos[i];

			/* undo, so that nothing is fed */
			for (int j = 0; j < N; j++)
				d->len[seq[j]]--;
			return titan_err(TITAN_ERANGE, "sequence %d: position %d is past the "
					 "context of %d tokens", s, at, d->max_len);
		}
	}

	if ((rc = embed(d, N)))
		return rc;
	for (int l = 0; l < d->L; l++) {
		llama_block_weights w;

		llama_block_view_tp(&m->cfg, d->tp, m->params[1 + l], &w);
		if ((rc = attention_half(d, l, &w, N)) || (rc = ffn_half(d, &w, N)))
			return rc;
	}
	/* every tp rank makes the same calls: none wants logits, or all */
	if (!logits)
		return 0;
	/* the final norm and the output projection only for the rows asked */
	for (int i = 0; i < N; i++) {
		if (want && !want[i])
			continue;
		if (rows != i)
			memcpy(d->x + (size_t)rows * d->C, d->x + (size_t)i * d->C,
			       d->C * sizeof(float));
		rows++;
	}
	if (!rows)
		return 0;
	op->rmsnorm_forward(d->xn, d->rstd, d->x, m->params[d->L + 1], rows, d->C,
			    (float)m->cfg.norm_eps);
	out_w = m->cfg.tie_embeddings ? m->params[0] : m->params[d->L + 1] + d->C;
	if (d->tp == 1) {
		matmul(d, logits, d->xn, out_w, rows, d->C, d->V);
		return 0;
	}
	matmul(d, d->lg_part, d->xn, out_w, rows, d->C, d->V);
	return gather_logits(d, rows, logits);
}

int llama_decoder_prefill(llama_decoder *d, int nseq, const int *slots,
			  const uint32_t *const *ids, const int *n, float *last_logits)
{
	uint32_t *cid = NULL;
	int *cseq = NULL, rc = 0, fill = 0, row = 0;
	bool *want = NULL;

	for (int j = 0; j < nseq; j++) {
		if (n[j] < 1)
			return titan_err(TITAN_ERANGE, "prompt %d is empty", j);
		if (slots[j] < 0 || slots[j] >= d->B)
			return titan_err(TITAN_ERANGE, "prompt %d: sequence slot %d is not in "
					 "0..%d", j, slots[j], d->B - 1);
		if (d->len[slots[j]] + (int64_t)n[j] > d->max_len)
			return titan_err(TITAN_ERANGE, "prompt %d: %d tokens after %d do not fit "
					 "the context of %d tokens", j, n[j], d->len[slots[j]],
					 d->max_len);
	}
	cid = malloc((size_t)d->max_tokens * sizeof *cid);
	cseq = malloc((size_t)d->max_tokens * sizeof *cseq);
	want = malloc((size_t)d->max_tokens * sizeof *want);
	if (!cid || !cseq || !want) {
		rc = titan_err_nomem();
		goto out;
	}
	/* fill calls of max_tokens with the prompts back to back; a call's
	 * logits rows are the prompts it finishes, in order */
	for (int j = 0; j < nseq && !rc; j++) {
		for (int t = 0; t < n[j]; t++) {
			cid[fill] = ids[j][t];
			cseq[fill] = slots[j];
			want[fill] = t == n[j] - 1;
			fill++;
			if (fill == d->max_tokens || (j == nseq - 1 && t == n[j] - 1)) {
				int done = 0;

				for (int i = 0; i < fill; i++)
					done += want[i];
				rc = llama_decoder_forward(d, cid, cseq, fill, want,
							   last_logits ? last_logits +
							   (size_t)row * d->V : NULL);
				row += done;
				fill = 0;
				if (rc)
					break;
			}
		}
	}
out:
	free(cid);
	free(cseq);
	free(want);
	return rc;
}
