/* llama_step.c - the activation plan, forward and backward of the Llama 3
 * model over a backend's op table.
 *
 * The residual stream resid[l] (layer l's input, resid[L] the last layer's
 * output) is always kept: it is what activation checkpointing saves.  Every
 * other activation a layer's backward needs lives in a layer_acts set; a
 * layer that is recomputed writes into one set shared by all such layers and
 * rebuilds it from resid[l] just before its backward.  Gradient scratch is
 * shared by all layers, and the attention and FFN halves of a layer share it
 * too, since they run one after the other.
 *
 * Context parallel: the model holds T / cp tokens of each row (two chunks,
 * llama.h) and knows each one's place in the row: RoPE positions and the
 * attention masks are those of the whole row, so every op but attention
 * runs unchanged on fewer tokens. */
#include "core/base.h"

#include <math.h>

#include "model/llama_internal.h"
#include "model/shard.h"

/* With bf16 GEMMs (matmul_bf16) the GEMMs' inputs that only GEMMs read,
 * xn1, xn2 and g, are kept as bf16 alone (their fp32 pointers are NULL:
 * forward makes them in the scratch buffer, then casts them), and the
 * attention's output in both (its backward reads the fp32 one). */
struct layer_acts {
	float *xn1, *rstd1;      /* attention_norm out [N, C], [N] */
	float *q, *k, *v;        /* [N, H*D], [N, KV*D], [N, KV*D]; q, k rotated */
	float *att, *lse;        /* attention out [N, H*D], [B, H, T] */
	float *h_mid;            /* residual after attention [N, C] */
	float *xn2, *rstd2;      /* ffn_norm out [N, C], [N] */
	float *a, *b, *g;        /* w1 out, w3 out, silu(a) * b: [N, F] each */
	kernel_bf16 *xn1_16, *att16, *xn2_16, *g16;  /* bf16 GEMMs: the bf16 ones */
};

struct llama_acts {
	void *mem;               /* the one allocation everything below is in */
	size_t bytes;
	float **resid;           /* [L + 1] of [N, C] */
	struct layer_acts *layer;  /* [L]; recomputed layers share one set */
	bool *recompute;         /* [L] */
	int shared_holds;        /* layer whose activations the shared set holds, or -1 */
	float *xf, *rstdf;       /* final norm out [N, C], [N] */
	kernel_bf16 *xf16;       /* bf16 GEMMs: xf in bf16 (xf is then NULL) */
	float *logits;           /* [N, V], overwritten by its gradient */
	float *losses;           /* [N] */
	float *cos_tab, *sin_tab;  /* [Tg, D/2] */
	int32_t *pos;            /* [N] RoPE positions */
	/* [cp][N]: ring step i's keys (cp rank cp_rank - i's block) that each
	 * query sees, kernels.h's kv_lo..kv_hi; one step without cp */
	int32_t *kv_lo, *kv_hi;
	uint32_t *ids, *labels;  /* [N] inputs and labels of the last forward */
	/* What the host writes each forward (positions, key ranges, ids,
	 * labels) and reads back (losses): the arrays above when the
	 * backend's memory is the host's, else host copies in host_mem that
	 * forward uploads and downloads. */
	void *host_mem;
	int32_t *h_pos, *h_kv_lo, *h_kv_hi;
	uint32_t *h_ids, *h_labels, *h_lids;
	float *h_losses;
	bool *in_vocab;          /* [N] tensor parallel: the id falls in the slice (host) */
	uint32_t *lids;          /* [N] tensor parallel: ids in this rank's vocabulary slice */
	float **dresids;         /* [pp_stages] of [Ns, C]: each local stage's residual
	                            gradient (a stage's send may still be in flight
	                            when the next one receives) */
	float *dresid, *dx;      /* the pass's dresids[], [N, C] norm output gradient */
	float *full, *dxs;       /* sequence parallel: [N, C] gathered gradient, [Ns, C] shard */
	float *scratch;          /* max(3 N F, 2 N H D + 2 N KV D), and with bf16
	                            GEMMs at least N C (gemm_input) */
	float *ring;             /* context parallel: ring attention's buffers */
	/* bit j: local stage j's last forward had labels and dloss != 0 */
	uint64_t backward_ready;
};

struct dims {
	int B, T, N, C, H, KV, D, F, V, L;  /* T: this rank's tokens of a row */
	int Tg, cp;              /* tokens of a row, context parallel degree */
	int tp;                  /* H, KV, F, V are a tp rank's share */
	int Ns;                  /* rows of the residual stream here: N / tp under
	                            sequence parallel, else N */
	int l0, l1;              /* the pass's pipeline stage's layers */
	bool first, last;        /* it embeds; it has the head */
	int g, S;                /* that stage, of S */
	size_t q, kv;            /* H * D, KV * D */
	bool gemm16;             /* the GEMMs take bf16 operands (matmul_bf16) */
};

static struct dims dims_of(const llama_model *m)
{
	const llama_config *c = &m->cfg;
	int tp = m->tp > 0 ? m->tp : 1;
	/* a tp rank's share: heads, FFN hidden and vocabulary divide */
	int cp = m->cp > 0 ? m->cp : 1;
	struct dims d = {
		.B = m->B, .T = m->T / cp, .N = m->B * (m->T / cp), .Tg = m->T, .cp = cp,
		.C = c->dim, .H = c->n_heads / tp,
		.KV = c->n_kv_heads / tp, .D = c->dim / c->n_heads, .F = c->ffn_hidden / tp,
		.V = c->vocab_size / tp, .L = c->n_layers, .tp = tp,
	};

	d.Ns = m->sp && tp > 1 ? d.N / tp : d.N;
	llama_stage_layers(m, m->pp_stage, &d.l0, &d.l1);
	d.S = m->pp_ranks * m->pp_stages;
	d.g = m->pp_stage * m->pp_ranks + m->pp_rank;
	d.first = d.g == 0;
	d.last = d.g == d.S - 1;

	d.q = (size_t)d.H * d.D;
	d.kv = (size_t)d.KV * d.D;
	d.gemm16 = m->matmul_bf16;
	return d;
}

static void acts_free(llama_model *m, llama_acts *a)
{
	if (!a)
		return;
	if (m->ops->attention_ranges && a->kv_lo)
		m->ops->attention_ranges(a->kv_lo, a->kv_hi, NULL, NULL, 0);
	mem_free(m->mem, a->mem, a->bytes);
	free(a->host_mem);
	free(a->resid);
	free(a->dresids);
	free(a->layer);
	free(a->recompute);
	free(a);
}

void llama_acts_free(llama_model *m)
{
	for (int i = 0; i < m->nsets; i++)
		acts_free(m, m->sets[i]);
	free(m->sets);
	m->sets = NULL;
	m->nsets = m->set = 0;
	m->acts = NULL;
	m->act_bytes = 0;
}

void llama_use_set(llama_model *m, int i)
{
	m->set = i;
	m->acts = m->sets[i];
}

void llama_stage_layers(const llama_model *m, int j, int *l0, int *l1)
{
	int per = m->cfg.n_layers / (m->pp_ranks * m->pp_stages);

	*l0 = (j * m->pp_ranks + m->pp_rank) * per;
	*l1 = *l0 + per;
}

bool llama_holds_layer(const llama_model *m, int l)
{
	int per = m->cfg.n_layers / (m->pp_ranks * m->pp_stages);

	return l >= 0 && l < m->cfg.n_layers && l / per % m->pp_ranks == m->pp_rank;
}

bool llama_holds_embeddings(const llama_model *m)
{
	return m->pp_rank == 0;
}

bool llama_holds_head(const llama_model *m)
{
	return m->pp_rank == m->pp_ranks - 1;
}

/* Carve n elements of size sz from the plan's allocation: with base NULL it
 * only counts, so the same code sizes and then places every buffer. */
static void *take(char *base, size_t *off, size_t n, size_t sz)
{
	void *p = base ? base + *off : NULL;

	*off += (n * sz + 63) & ~(size_t)63;
	return p;
}

static void carve_layer(struct layer_acts *s, char *base, size_t *off, const struct dims *d)
{
	size_t N = (size_t)d->N, F = (size_t)d->F, Ns = (size_t)d->Ns;
	bool f32 = !d->gemm16;

	*s = (struct layer_acts){ 0 };
	if (f32)
		s->xn1 = take(base, off, N * d->C, sizeof(float));
	else
		s->xn1_16 = take(base, off, N * d->C, sizeof(kernel_bf16));
	s->rstd1 = take(base, off, Ns, sizeof(float));
	s->q = take(base, off, N * d->q, sizeof(float));
	s->k = take(base, off, N * d->kv, sizeof(float));
	s->v = take(base, off, N * d->kv, sizeof(float));
	s->att = take(base, off, N * d->q, sizeof(float));
	if (!f32)
		s->att16 = take(base, off, N * d->q, sizeof(kernel_bf16));
	s->lse = take(base, off, N * d->H, sizeof(float));
	s->h_mid = take(base, off, Ns * d->C, sizeof(float));
	if (f32)
		s->xn2 = take(base, off, N * d->C, sizeof(float));
	else
		s->xn2_16 = take(base, off, N * d->C, sizeof(kernel_bf16));
	s->rstd2 = take(base, off, Ns, sizeof(float));
	s->a = take(base, off, N * F, sizeof(float));
	s->b = take(base, off, N * F, sizeof(float));
	if (f32)
		s->g = take(base, off, N * F, sizeof(float));
	else
		s->g16 = take(base, off, N * F, sizeof(kernel_bf16));
}

/* Ring attention's buffers: forward, the key/value block held and the one
 * arriving, a block's partial output and log-sum-exp; backward, the block
 * held and arriving with their gradients travelling along, and a block's
 * share of dq, dk, dv. */
static size_t ring_floats(const struct dims *d)
{
	size_t N = (size_t)d->N, kv = N * d->kv, q = N * d->q;

	return TITAN_MAX(4 * kv + q + N * d->H, 8 * kv + q + 2 * kv);
}

/* Every local stage's layers (m's), the head's buffers when it holds it. */
static size_t carve(const llama_model *m, llama_acts *a, char *base, const struct dims *d)
{
	size_t off = 0, N = (size_t)d->N, C = (size_t)d->C, Ns = (size_t)d->Ns;
	size_t scratch = TITAN_MAX(3 * N * d->F, 2 * N * d->q + 2 * N * d->kv);
	/* forward makes the bf16 GEMMs' inputs there, the norms' [N, C] ones
	 * too, which a tensor-parallel rank's share of F, q and kv may not
	 * cover */
	if (d->gemm16)
		scratch = TITAN_MAX(scratch, N * C);
	struct layer_acts shared;
	bool any_shared = false;
	int l0, l1;

	for (int j = 0; j < m->pp_stages; j++) {
		llama_stage_layers(m, j, &l0, &l1);
		for (int l = l0; l <= l1; l++)
			a->resid[l] = take(base, &off, Ns * C, sizeof(float));
		for (int l = l0; l < l1; l++) {
			if (a->recompute[l])
				any_shared = true;
			else
				carve_layer(&a->layer[l], base, &off, d);
		}
	}
	if (any_shared) {
		carve_layer(&shared, base, &off, d);
		for (int l = 0; l < d->L; l++)
			if (a->recompute[l] && llama_holds_layer(m, l))
				a->layer[l] = shared;
	}
	if (llama_holds_head(m)) {
		if (d->gemm16)
			a->xf16 = take(base, &off, N * C, sizeof(kernel_bf16));
		else
			a->xf = take(base, &off, N * C, sizeof(float));
		a->rstdf = take(base, &off, Ns, sizeof(float));
		a->logits = take(base, &off, N * d->V, sizeof(float));
		a->losses = take(base, &off, N, sizeof(float));
	}
	a->cos_tab = take(base, &off, (size_t)d->Tg * (d->D / 2), sizeof(float));
	a->sin_tab = take(base, &off, (size_t)d->Tg * (d->D / 2), sizeof(float));
	a->pos = take(base, &off, N, sizeof(int32_t));
	a->kv_lo = take(base, &off, (size_t)d->cp * N, sizeof(int32_t));
	a->kv_hi = take(base, &off, (size_t)d->cp * N, sizeof(int32_t));
	a->ids = take(base, &off, N, sizeof(uint32_t));
	a->labels = take(base, &off, N, sizeof(uint32_t));
	if (d->tp > 1)
		a->lids = take(base, &off, N, sizeof(uint32_t));
	for (int j = 0; j < m->pp_stages; j++)
		a->dresids[j] = take(base, &off, Ns * C, sizeof(float));
	a->dx = take(base, &off, N * C, sizeof(float));
	if (Ns < N) {
		a->full = take(base, &off, N * C, sizeof(float));
		a->dxs = take(base, &off, Ns * C, sizeof(float));
	}
	a->scratch = take(base, &off, scratch, sizeof(float));
	if (d->cp > 1)
		a->ring = take(base, &off, ring_floats(d), sizeof(float));
	return off;
}

/* torchtitan's precompute_freqs_cis, in fp32 as torch computes it, with
 * Llama 3.1's apply_scaling; then cos and sin of pos * freq for pos < T. */
void llama_rope_tables(const llama_config *c, int T, float *cos_tab, float *sin_tab)
{
	int D = c->dim / c->n_heads, half = D / 2;

	for (int i = 0; i < half; i++) {
		float freq = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)D);

		if (c->rope_scaling) {
			/* Python computes the thresholds in double; torch
			 * compares them with the fp32 wavelengths in fp32 */
			float low_wavelen = (float)(c->rope_original_max_pos /
						    c->rope_low_freq_factor);
			float high_wavelen = (float)(c->rope_original_max_pos /
						     c->rope_high_freq_factor);
			float orig = (float)c->rope_original_max_pos;
			float low = (float)c->rope_low_freq_factor;
			float factor = (float)c->rope_scaling_factor;
			/* torch evaluates scalar / tensor as reciprocal * scalar */
			float wavelen = (1.0f / freq) * (float)(2 * M_PI);

			if (wavelen > low_wavelen) {
				freq = freq / factor;
			} else if (!(wavelen < high_wavelen)) {
				float smooth = ((1.0f / wavelen) * orig - low) /
					       (float)(c->rope_high_freq_factor -
						       c->rope_low_freq_factor);

				freq = (1.0f - smooth) * freq / factor + smooth * freq;
			}
		}
		for (int t = 0; t < T; t++) {
			float angle = (float)t * freq;

			cos_tab[(size_t)t * half + i] = cosf(angle);
			sin_tab[(size_t)t * half + i] = sinf(angle);
		}
	}
}

/* The host's side of the per-forward arrays (llama_acts' h_*). */
static int host_arrays(llama_model *m, llama_acts *a, const struct dims *d)
{
	size_t N = (size_t)d->N, kv = (size_t)d->cp * N;
	bool copies = !m->ops->host_memory;
	char *h;

	/* the copies (pos, kv_lo, kv_hi, ids, labels, lids, losses: 4 bytes
	 * each), then in_vocab */
	size_t words = copies ? 5 * N + 2 * kv : 0;

	if (!(a->host_mem = h = malloc(words * 4 + N)))
		return titan_err_nomem();
	a->in_vocab = (bool *)(h + words * 4);
	if (!copies) {
		a->h_pos = a->pos;
		a->h_kv_lo = a->kv_lo;
		a->h_kv_hi = a->kv_hi;
		a->h_ids = a->ids;
		a->h_labels = a->labels;
		a->h_lids = a->lids;
		a->h_losses = a->losses;
		return 0;
	}
	a->h_pos = (int32_t *)h;
	a->h_kv_lo = a->h_pos + N;
	a->h_kv_hi = a->h_kv_lo + kv;
	a->h_ids = (uint32_t *)(a->h_kv_hi + kv);
	a->h_labels = a->h_ids + N;
	a->h_lids = a->h_labels + N;
	a->h_losses = (float *)(a->h_lids + N);
	return 0;
}

/* Host memory to a buffer of the backend's (nothing to do when they are
 * the same). */
static int to_device(const llama_model *m, void *dst, const void *src, size_t bytes)
{
	return dst == src ? 0 : m->ops->upload(dst, src, bytes);
}

/* The RoPE tables of positions 0..T-1, computed on the host. */
static int rope_upload(llama_model *m, llama_acts *a, int T)
{
	const llama_config *c = &m->cfg;
	size_t n = (size_t)T * (c->dim / c->n_heads / 2);
	float *h;
	int rc;

	if (m->ops->host_memory) {
		llama_rope_tables(c, T, a->cos_tab, a->sin_tab);
		return 0;
	}
	if (!(h = malloc(2 * n * sizeof *h)))
		return titan_err_nomem();
	llama_rope_tables(c, T, h, h + n);
	rc = m->ops->upload(a->cos_tab, h, n * sizeof *h);
	if (!rc)
		rc = m->ops->upload(a->sin_tab, h + n, n * sizeof *h);
	free(h);
	return rc;
}

int llama_plan_sets(llama_model *m, int B, int T, llama_ac_mode ac, int selective_every,
		    int n)
{
	const llama_config *c = &m->cfg;
	llama_acts *a;
	struct dims d;
	int rc;

	if (B <= 0 || T <= 0)
		return titan_err(TITAN_EUSAGE, "batch shape %d x %d: both must be positive", B, T);
	if (T > c->max_seq_len)
		return titan_err(TITAN_EUSAGE, "training.seq_len: %d exceeds model.max_seq_len %d",
				 T, c->max_seq_len);
	if ((int64_t)B * T > INT_MAX / TITAN_MAX(c->vocab_size, c->ffn_hidden))
		return titan_err(TITAN_EUSAGE, "batch shape %d x %d: too many tokens for one "
				 "micro-batch", B, T);
	if ((rc = par_check_seq_len(T, m->cp)))
		return rc;
	if (m->cp > 1 && (!m->hooks || !m->hooks->cp_shift))
		return titan_err(TITAN_EUSAGE, "context parallel: cp=%d needs the cp_shift hook",
				 m->cp);
	if (m->sp && m->tp > 1 && ((int64_t)B * (T / TITAN_MAX(m->cp, 1))) % m->tp)
		return titan_err(TITAN_EUSAGE, "sequence parallel: tp=%d does not divide the %d x "
				 "%d tokens of a micro-batch%s", m->tp, B, T / TITAN_MAX(m->cp, 1),
				 m->cp > 1 ? " on a cp rank" : "");
	if (ac == LLAMA_AC_SELECTIVE && selective_every < 1)
		return titan_err(TITAN_EUSAGE, "activation_checkpoint.selective_every: %d must "
				 "be at least 1", selective_every);
	if (ac != LLAMA_AC_NONE && ac != LLAMA_AC_FULL && ac != LLAMA_AC_SELECTIVE)
		return titan_err(TITAN_EUSAGE, "activation_checkpoint.mode: unknown mode %d",
				 (int)ac);

	if (n < 1)
		return titan_err(TITAN_EUSAGE, "llama_plan_sets: %d activation sets", n);
	if (m->pp_ranks < 1 || m->pp_stages < 1 || m->pp_stages > 64 ||
	    m->pp_rank < 0 || m->pp_rank >= m->pp_ranks ||
	    c->n_layers % (m->pp_ranks * m->pp_stages))
		return titan_err(TITAN_EUSAGE, "pipeline: %d ranks x %d stages (rank %d) do not "
				 "cut model.n_layers=%d evenly", m->pp_ranks, m->pp_stages,
				 m->pp_rank, c->n_layers);

	llama_acts_free(m);
	m->B = B;
	m->T = T;
	m->ac = ac;
	m->ac_every = selective_every;
	d = dims_of(m);
	m->sets = calloc((size_t)n, sizeof *m->sets);
	if (!m->sets)
		return titan_err_nomem();
	m->nsets = n;
	for (int i = 0; i < n; i++) {
		a = calloc(1, sizeof *a);
		if (!a) {
			llama_acts_free(m);
			return titan_err_nomem();
		}
		m->sets[i] = a;
		a->resid = calloc((size_t)d.L + 1, sizeof *a->resid);
		a->dresids = calloc((size_t)m->pp_stages, sizeof *a->dresids);
		a->layer = calloc((size_t)d.L, sizeof *a->layer);
		a->recompute = calloc((size_t)d.L, sizeof *a->recompute);
		if (!a->resid || !a->dresids || !a->layer || !a->recompute) {
			llama_acts_free(m);
			return titan_err_nomem();
		}
		for (int l = 0; l < d.L; l++)
			a->recompute[l] = ac == LLAMA_AC_FULL ||
					  (ac == LLAMA_AC_SELECTIVE &&
					   l % selective_every == selective_every - 1);
		a->bytes = carve(m, a, NULL, &d);
		a->mem = mem_alloc(m->mem, a->bytes, "activations");
		if (!a->mem) {
			llama_acts_free(m);
			return TITAN_ENOMEM;
		}
		carve(m, a, a->mem, &d);
		if ((rc = host_arrays(m, a, &d)) || (rc = rope_upload(m, a, T))) {
			llama_acts_free(m);
			return rc;
		}
		m->act_bytes += a->bytes;
	}
	llama_use_set(m, 0);
	return 0;
}

int llama_plan(llama_model *m, int B, int T, llama_ac_mode ac, int selective_every)
{
	return llama_plan_sets(m, B, T, ac, selective_every, 1);
}

/* Tensor parallel: the sum (maximum) over the tp ranks of a partial
 * result, in place; nothing to do on one rank. */
static int tp_sum(llama_model *m, float *buf, size_t n)
{
	return m->tp > 1 ? m->hooks->tp_sum(m->hooks->arg, buf, n) : 0;
}

static int tp_max(llama_model *m, float *buf, size_t n)
{
	return m->tp > 1 ? m->hooks->tp_max(m->hooks->arg, buf, n) : 0;
}

/* RMS norm of the residual stream's rows into out, whole: under sequence
 * parallel each tp rank normalises its rows and the results are
 * all-gathered (the column-parallel matmuls read every row). */
static int norm_gather(llama_model *m, float *out, float *rstd, const float *x, const float *w)
{
	llama_acts *a = m->acts;
	struct dims d = dims_of(m);
	float eps = (float)m->cfg.norm_eps;

	if (d.Ns == d.N) {
		m->ops->rmsnorm_forward(out, rstd, x, w, d.N, d.C, eps);
		return 0;
	}
	m->ops->rmsnorm_forward(a->dxs, rstd, x, w, d.Ns, d.C, eps);
	return m->hooks->tp_all_gather(m->hooks->arg, a->dxs, out, (size_t)d.Ns * d.C);
}

/* The partial output of a row-parallel matmul (or the vocab-parallel
 * embedding), in part: summed over the tp ranks into out, or under
 * sequence parallel reduce-scattered into out's rows.  part and out may
 * be the same buffer without sequence parallel. */
static int reduce_rows(llama_model *m, float *part, float *out)
{
	struct dims d = dims_of(m);

	if (d.Ns == d.N)
		return tp_sum(m, out, (size_t)d.N * d.C);
	return m->hooks->tp_reduce_scatter(m->hooks->arg, part, out, (size_t)d.Ns * d.C);
}

/* Where a row-parallel matmul writes its partial output for out. */
static float *partial_for(llama_model *m, float *out)
{
	return dims_of(m).Ns == dims_of(m).N ? out : m->acts->dx;
}

/* Backward's mirror images: the residual gradient with every row (for the
 * matmuls that read it), and the partial gradient of a norm's output
 * reduced to this rank's rows. */
static int gather_grad(llama_model *m, float *dr, float **whole)
{
	struct dims d = dims_of(m);
	llama_acts *a = m->acts;

	*whole = dr;
	if (d.Ns == d.N)
		return 0;
	*whole = a->full;
	return m->hooks->tp_all_gather(m->hooks->arg, dr, a->full, (size_t)d.Ns * d.C);
}

static int scatter_grad(llama_model *m, float *dx, float **rows)
{
	struct dims d = dims_of(m);
	llama_acts *a = m->acts;

	*rows = dx;
	if (d.Ns == d.N)
		return tp_sum(m, dx, (size_t)d.N * d.C);
	*rows = a->dxs;
	return m->hooks->tp_reduce_scatter(m->hooks->arg, dx, a->dxs, (size_t)d.Ns * d.C);
}

/* Context parallel's zigzag: a row of Tg tokens is cut into 2 cp chunks of
 * Tg / (2 cp) and cp rank r holds chunks r and 2 cp - 1 - r, in that order.
 * The row position of rank r's i-th token: */
static int row_pos(const struct dims *d, int r, int i)
{
	int L = d->Tg / (2 * d->cp);

	if (d->cp == 1)
		return i;
	return i < L ? r * L + i : (2 * d->cp - 1 - r) * L + i - L;
}

/* How many of rank r's tokens sit before row position p: the index of its
 * first token at or after p (positions increase with the index). */
static int tokens_before(const struct dims *d, int r, int p)
{
	int L = d->Tg / (2 * d->cp), c0 = r * L, c1 = (2 * d->cp - 1 - r) * L;

	if (d->cp == 1)
		return TITAN_MIN(TITAN_MAX(p, 0), d->Tg);
	if (p <= c0)
		return 0;
	if (p < c0 + L)
		return p - c0;
	if (p <= c1)
		return L;
	return p < c1 + L ? L + p - c1 : 2 * L;
}

/* The bf16 copy of weight w, which lies in params[chunk]. */
static const kernel_bf16 *weight_bf16(const llama_model *m, int chunk, const float *w)
{
	return m->params_bf16[chunk] + (w - m->params[chunk]);
}

/* The GEMMs in the precision the run asked for (llama.h: matmul_bf16):
 * the input is inp, or with bf16 GEMMs its bf16 copy inp16; the weight w
 * lies in params[chunk]. */
static void mm_forward(const llama_model *m, float *out, const float *inp,
		       const kernel_bf16 *inp16, int chunk, const float *w, int N, int IC,
		       int OC, bool accumulate)
{
	if (m->matmul_bf16)
		m->ops->matmul_forward_bf16(out, inp16, weight_bf16(m, chunk, w), N, IC, OC,
					    accumulate);
	else
		m->ops->matmul_forward(out, inp, w, N, IC, OC, accumulate);
}

static void mm_backward(const llama_model *m, float *dinp, float *dw, const float *dout,
			const float *inp, const kernel_bf16 *inp16, int chunk, const float *w,
			int N, int IC, int OC, bool accumulate_dinp)
{
	if (m->matmul_bf16)
		m->ops->matmul_backward_bf16(dinp, dw, dout, inp16, weight_bf16(m, chunk, w), N,
					     IC, OC, accumulate_dinp);
	else
		m->ops->matmul_backward(dinp, dw, dout, inp, w, N, IC, OC, accumulate_dinp);
}

/* Where forward makes a GEMM input: the buffer it is kept in (fp32 GEMMs),
 * or with bf16 GEMMs the scratch buffer, where it only passes through on
 * its way to its bf16 copy (backward alone uses the scratch otherwise). */
static float *gemm_input(const llama_model *m, float *kept)
{
	return m->matmul_bf16 ? m->acts->scratch : kept;
}

/* With bf16 GEMMs, x[0..n) into its bf16 copy, once for every GEMM that
 * reads it, forward and backward. */
static void keep_bf16(const llama_model *m, kernel_bf16 *copy, const float *x, size_t n)
{
	if (m->matmul_bf16)
		m->ops->cast_bf16(copy, x, n);
}

/* Attention in the precision of the GEMMs (attention's own GEMMs are
 * GEMMs too: bf16 operands with matmul_bf16, as autocast gives PyTorch's
 * scaled_dot_product_attention). */
static void att_forward(const llama_model *m, float *out, float *lse, const float *q,
			const float *k, const float *v, const int32_t *lo, const int32_t *hi,
			const struct dims *d)
{
	(m->matmul_bf16 ? m->ops->attention_forward_bf16 : m->ops->attention_forward)(
		out, lse, q, k, v, lo, hi, d->B, d->T, d->T, d->H, d->KV, d->D);
}

static void att_backward(const llama_model *m, float *dq, float *dk, float *dv,
			 const float *dout, const float *q, const float *k, const float *v,
			 const float *out, const float *lse, const int32_t *lo, const int32_t *hi,
			 const struct dims *d)
{
	(m->matmul_bf16 ? m->ops->attention_backward_bf16 : m->ops->attention_backward)(
		dq, dk, dv, dout, q, k, v, out, lse, lo, hi, d->B, d->T, d->T, d->H, d->KV,
		d->D);
}

/* Ring attention's first block: this rank's keys and values, one after
 * the other, as they travel. */
static void ring_load(const kernel_ops *ops, const struct dims *d, float *held,
		      const struct layer_acts *s)
{
	size_t nkv = (size_t)d->N * d->kv;

	ops->copy(held, s->k, nkv * sizeof(float));
	ops->copy(held + nkv, s->v, nkv * sizeof(float));
}

/* Attention of this rank's queries: over its own keys, or under context
 * parallel ring attention: cp steps, each attending to the key/value block
 * held and passing it on to the next rank, merging as it goes. */
static int attend(llama_model *m, struct layer_acts *s)
{
	const kernel_ops *op = m->ops;
	llama_acts *a = m->acts;
	struct dims d = dims_of(m);
	size_t N = (size_t)d.N, nkv = N * d.kv;
	float *held = a->ring, *next = held + 2 * nkv, *o = next + 2 * nkv, *lse = o + N * d.q;
	int rc;

	if (d.cp == 1) {
		att_forward(m, s->att, s->lse, s->q, s->k, s->v, a->kv_lo, a->kv_hi, &d);
		return 0;
	}
	ring_load(op, &d, held, s);
	for (int i = 0; i < d.cp; i++) {
		const int32_t *lo = a->kv_lo + i * N, *hi = a->kv_hi + i * N;

		if (i == 0) {
			att_forward(m, s->att, s->lse, s->q, held, held + nkv, lo, hi, &d);
		} else {
			att_forward(m, o, lse, s->q, held, held + nkv, lo, hi, &d);
			op->attention_merge(s->att, s->lse, o, lse, d.B, d.T, d.H, d.D);
		}
		if (i + 1 < d.cp) {
			if ((rc = m->hooks->cp_shift(m->hooks->arg, held, next, 2 * nkv)))
				return rc;
			float *t = held;

			held = next;
			next = t;
		}
	}
	return 0;
}

/* Its backward into dq, dk, dv.  Ring attention's: the key/value blocks go
 * round again, each with the gradient of its keys and values, which every
 * rank adds its queries' share to; after the last step one more shift
 * brings each block's gradients home. */
static int attend_backward(llama_model *m, struct layer_acts *s, const float *datt, float *dq,
			   float *dk, float *dv)
{
	const kernel_ops *op = m->ops;
	llama_acts *a = m->acts;
	struct dims d = dims_of(m);
	size_t N = (size_t)d.N, nkv = N * d.kv;
	float *held = a->ring, *next = held + 4 * nkv;
	float *pdq = next + 4 * nkv, *pdk = pdq + N * d.q, *pdv = pdk + nkv;
	int rc;

	if (d.cp == 1) {
		att_backward(m, dq, dk, dv, datt, s->q, s->k, s->v, s->att, s->lse, a->kv_lo,
			     a->kv_hi, &d);
		return 0;
	}
	ring_load(op, &d, held, s);
	for (int i = 0; i < d.cp; i++) {
		const int32_t *lo = a->kv_lo + i * N, *hi = a->kv_hi + i * N;

		if (i == 0) {
			att_backward(m, dq, held + 2 * nkv, held + 3 * nkv, datt, s->q, held,
				     held + nkv, s->att, s->lse, lo, hi, &d);
		} else {
			att_backward(m, pdq, pdk, pdv, datt, s->q, held, held + nkv, s->att,
				     s->lse, lo, hi, &d);
			op->add_inplace(dq, pdq, N * d.q);
			op->add_inplace(held + 2 * nkv, pdk, nkv);
			op->add_inplace(held + 3 * nkv, pdv, nkv);
		}
		if (i + 1 < d.cp)
			rc = m->hooks->cp_shift(m->hooks->arg, held, next, 4 * nkv);
		else
			rc = m->hooks->cp_shift(m->hooks->arg, held + 2 * nkv, next + 2 * nkv,
						2 * nkv);
		if (rc)
			return rc;
		float *t = held;

		held = next;
		next = t;
	}
	op->copy(dk, held + 2 * nkv, nkv * sizeof(float));
	op->copy(dv, held + 3 * nkv, nkv * sizeof(float));
	return 0;
}

/* One block's forward from resid[l] into its activation set; with
 * write_out, also its output resid[l + 1] (a recomputation skips it: the
 * value is already there and backward does not read it). */
static int block_forward(llama_model *m, int l, bool write_out)
{
	const kernel_ops *op = m->ops;
	llama_acts *a = m->acts;
	struct layer_acts *s = &a->layer[l];
	struct dims d = dims_of(m);
	float *x = a->resid[l];
	llama_block_weights w;
	size_t NsC = (size_t)d.Ns * d.C, NC = (size_t)d.N * d.C, NF = (size_t)d.N * d.F;
	float *part, *xn, *g;
	int rc;

	llama_block_view_tp(&m->cfg, m->tp, m->params[1 + l], &w);
	xn = gemm_input(m, s->xn1);
	if ((rc = norm_gather(m, xn, s->rstd1, x, w.attention_norm)))
		return rc;
	keep_bf16(m, s->xn1_16, xn, NC);
	mm_forward(m, s->q, xn, s->xn1_16, 1 + l, w.wq, d.N, d.C, (int)d.q, false);
	mm_forward(m, s->k, xn, s->xn1_16, 1 + l, w.wk, d.N, d.C, (int)d.kv, false);
	mm_forward(m, s->v, xn, s->xn1_16, 1 + l, w.wv, d.N, d.C, (int)d.kv, false);
	op->rope_forward(s->q, a->pos, a->cos_tab, a->sin_tab, d.N, d.H, d.D);
	op->rope_forward(s->k, a->pos, a->cos_tab, a->sin_tab, d.N, d.KV, d.D);
	if ((rc = attend(m, s)))
		return rc;
	keep_bf16(m, s->att16, s->att, (size_t)d.N * d.q);
	/* wo is row-parallel: each tp rank's heads give a partial sum */
	part = partial_for(m, s->h_mid);
	mm_forward(m, part, s->att, s->att16, 1 + l, w.wo, d.N, (int)d.q, d.C, false);
	if ((rc = reduce_rows(m, part, s->h_mid)))
		return rc;
	op->add_inplace(s->h_mid, x, NsC);

	xn = gemm_input(m, s->xn2);
	if ((rc = norm_gather(m, xn, s->rstd2, s->h_mid, w.ffn_norm)))
		return rc;
	keep_bf16(m, s->xn2_16, xn, NC);
	mm_forward(m, s->a, xn, s->xn2_16, 1 + l, w.w1, d.N, d.C, d.F, false);
	mm_forward(m, s->b, xn, s->xn2_16, 1 + l, w.w3, d.N, d.C, d.F, false);
	/* xn is spent: g may take the scratch buffer in its turn */
	g = gemm_input(m, s->g);
	op->swiglu_forward(g, s->a, s->b, NF);
	keep_bf16(m, s->g16, g, NF);
	if (write_out) {
		part = partial_for(m, a->resid[l + 1]);
		mm_forward(m, part, g, s->g16, 1 + l, w.w2, d.N, d.F, d.C, false);
		if ((rc = reduce_rows(m, part, a->resid[l + 1])))
			return rc;
		op->add_inplace(a->resid[l + 1], s->h_mid, NsC);
	}
	return 0;
}

/* dresid holds the gradient of the block's output on entry and of its input
 * on return; the block's parameter gradients accumulate into grads[1 + l]. */
static int block_backward(llama_model *m, int l)
{
	const kernel_ops *op = m->ops;
	llama_acts *a = m->acts;
	struct layer_acts *s = &a->layer[l];
	struct dims d = dims_of(m);
	size_t NF = (size_t)d.N * d.F;
	float *dr = a->dresid, *dx = a->dx, *drw, *dxr;
	float *dg = a->scratch, *da = dg + NF, *db = da + NF;
	float *datt = a->scratch, *dq = datt + (size_t)d.N * d.q;
	float *dk = dq + (size_t)d.N * d.q, *dv = dk + (size_t)d.N * d.kv;
	llama_block_weights w, dw;
	int rc;

	llama_block_view_tp(&m->cfg, m->tp, m->params[1 + l], &w);
	llama_block_view_tp(&m->cfg, m->tp, m->grads[1 + l], &dw);

	/* feed forward: out = h_mid + w2(silu(w1 xn2) * w3 xn2) */
	if ((rc = gather_grad(m, dr, &drw)))
		return rc;
	mm_backward(m, dg, dw.w2, drw, s->g, s->g16, 1 + l, w.w2, d.N, d.F, d.C, false);
	op->swiglu_backward(da, db, dg, s->a, s->b, NF);
	mm_backward(m, dx, dw.w1, da, s->xn2, s->xn2_16, 1 + l, w.w1, d.N, d.C, d.F, false);
	mm_backward(m, dx, dw.w3, db, s->xn2, s->xn2_16, 1 + l, w.w3, d.N, d.C, d.F, true);
	/* w1, w3 are column-parallel: their input gradient is partial */
	if ((rc = scatter_grad(m, dx, &dxr)))
		return rc;
	op->rmsnorm_backward(dr, dw.ffn_norm, dxr, s->h_mid, w.ffn_norm, s->rstd2, d.Ns, d.C);

	/* attention: h_mid = x + wo(attention(rope(wq xn1), rope(wk xn1), wv xn1)) */
	if ((rc = gather_grad(m, dr, &drw)))
		return rc;
	mm_backward(m, datt, dw.wo, drw, s->att, s->att16, 1 + l, w.wo, d.N, (int)d.q, d.C,
		    false);
	if ((rc = attend_backward(m, s, datt, dq, dk, dv)))
		return rc;
	op->rope_backward(dq, a->pos, a->cos_tab, a->sin_tab, d.N, d.H, d.D);
	op->rope_backward(dk, a->pos, a->cos_tab, a->sin_tab, d.N, d.KV, d.D);
	mm_backward(m, dx, dw.wq, dq, s->xn1, s->xn1_16, 1 + l, w.wq, d.N, d.C, (int)d.q, false);
	mm_backward(m, dx, dw.wk, dk, s->xn1, s->xn1_16, 1 + l, w.wk, d.N, d.C, (int)d.kv, true);
	mm_backward(m, dx, dw.wv, dv, s->xn1, s->xn1_16, 1 + l, w.wv, d.N, d.C, (int)d.kv, true);
	if ((rc = scatter_grad(m, dx, &dxr)))
		return rc;
	op->rmsnorm_backward(dr, dw.attention_norm, dxr, a->resid[l], w.attention_norm,
			     s->rstd1, d.Ns, d.C);
	return 0;
}

/* The chunk holding the output projection's weight, and the weight
 * within params or grads. */
static int output_chunk(const llama_model *m)
{
	return m->cfg.tie_embeddings ? 0 : m->cfg.n_layers + 1;
}

static float *output_weight(const llama_model *m, float *const *chunks)
{
	int c = output_chunk(m);

	return chunks[c] + (c ? m->cfg.dim : 0);
}

static int acquire(llama_model *m, int chunk, llama_pass pass)
{
	int rc = m->hooks ? m->hooks->acquire(m->hooks->arg, m, chunk, pass) : 0;

	if (!rc && m->matmul_bf16 && llama_chunk_has_gemm_weights(&m->cfg, chunk) &&
	    !m->params_bf16[chunk])
		rc = titan_err(TITAN_EUSAGE, "bf16 GEMMs: chunk %d has no bf16 copy of its "
			       "weights (params_bf16; the hooks' acquire points it)", chunk);
	return rc;
}

static int release(llama_model *m, int chunk, llama_pass pass)
{
	return m->hooks ? m->hooks->release(m->hooks->arg, m, chunk, pass) : 0;
}

/* A stage boundary's residual rows (or their gradient), tagged with the
 * micro-batch and the boundary (stage g's output is boundary g). */
static int pp_send(llama_model *m, const float *buf, bool grad)
{
	struct dims d = dims_of(m);
	int boundary = grad ? d.g - 1 : d.g;

	return m->hooks->pp_send(m->hooks->arg, buf, (size_t)d.Ns * d.C, grad,
				 m->pp_tag * d.S + boundary);
}

static int pp_recv(llama_model *m, float *buf, bool grad)
{
	struct dims d = dims_of(m);
	int boundary = grad ? d.g : d.g - 1;

	return m->hooks->pp_recv(m->hooks->arg, buf, (size_t)d.Ns * d.C, grad,
				 m->pp_tag * d.S + boundary);
}

/* The embedding lookup.  Under tensor parallelism each rank holds a slice
 * of the vocabulary's rows: it looks up the tokens that fall in it, zero
 * rows for the rest, and the sum over the tp ranks is every token's row. */
static int embed(llama_model *m)
{
	llama_acts *a = m->acts;
	struct dims d = dims_of(m);
	uint32_t v0 = (uint32_t)(m->tp_rank * d.V);
	float *part;
	int rc;

	if (m->tp <= 1) {
		m->ops->embedding_forward(a->resid[0], a->ids, m->params[0], d.N, d.C);
		return 0;
	}
	for (int n = 0; n < d.N; n++) {
		a->in_vocab[n] = a->h_ids[n] >= v0 && a->h_ids[n] - v0 < (uint32_t)d.V;
		a->h_lids[n] = a->in_vocab[n] ? a->h_ids[n] - v0 : 0;
	}
	if ((rc = to_device(m, a->lids, a->h_lids, (size_t)d.N * sizeof *a->lids)))
		return rc;
	part = partial_for(m, a->resid[0]);
	m->ops->embedding_forward(part, a->lids, m->params[0], d.N, d.C);
	for (int n = 0; n < d.N; n++)
		if (!a->in_vocab[n])
			m->ops->zero(part + (size_t)n * d.C, (size_t)d.C * sizeof(float));
	return reduce_rows(m, part, a->resid[0]);
}

/* Loss-parallel cross-entropy: each tp rank holds the logits of its slice
 * of the vocabulary and no rank builds a row of all of them.  The row's
 * maximum, its sum of exponentials and the label's logit are combined
 * across the ranks; losses land in a->losses and, with scale != 0, the
 * logits are overwritten by scale * (softmax - onehot) as the fused kernel
 * does.  The scratch buffer holds the three per-row figures (it is at
 * least 3 N floats and free between passes). */
static int cross_entropy_tp(llama_model *m, const uint32_t *labels, float scale)
{
	llama_acts *a = m->acts;
	struct dims d = dims_of(m);
	float *rmax = a->scratch, *rsum = rmax + d.N, *rlab = rsum + d.N;
	uint32_t v0 = (uint32_t)(m->tp_rank * d.V);
	int rc;

	m->ops->vocab_max(rmax, a->logits, d.N, d.V);
	if ((rc = tp_max(m, rmax, (size_t)d.N)))
		return rc;
	m->ops->vocab_sumexp(rsum, rlab, a->logits, rmax, labels, v0, d.N, d.V);
	if ((rc = tp_sum(m, rsum, (size_t)d.N)) || (rc = tp_sum(m, rlab, (size_t)d.N)))
		return rc;
	m->ops->vocab_finish(a->losses, a->logits, rmax, rsum, rlab, labels, v0, d.N, d.V, scale);
	return 0;
}

int llama_forward(llama_model *m, const uint32_t *inputs, const uint32_t *labels,
		  const int32_t *seg_start, float dloss, float *loss)
{
	const kernel_ops *op = m->ops;
	llama_acts *a = m->acts;
	struct dims d;
	const float *norm_w;
	float *xf;
	bool train, tied;
	llama_pass pass;
	int rc;

	if (!a)
		return titan_err(TITAN_EUSAGE, "llama_forward: no plan (call llama_plan first)");
	d = dims_of(m);
	a->backward_ready &= ~(UINT64_C(1) << m->pp_stage);
	/* every row whole, so that all cp ranks agree on what is wrong */
	for (int n = 0; n < d.B * d.Tg; n++) {
		int t = n % d.Tg, s = seg_start ? seg_start[n] : 0;

		if (inputs[n] >= (uint32_t)m->cfg.vocab_size)
			return titan_err(TITAN_ERANGE, "input token %d: id %u is past the "
					 "vocabulary (%d)", n, inputs[n], m->cfg.vocab_size);
		if (labels && labels[n] >= (uint32_t)m->cfg.vocab_size)
			return titan_err(TITAN_ERANGE, "label %d: id %u is past the vocabulary "
					 "(%d)", n, labels[n], m->cfg.vocab_size);
		if (s < 0 || s > t)
			return titan_err(TITAN_ERANGE, "seg_start[%d]: %d is not in 0..%d "
					 "(row %d, token %d)", n, s, t, n / d.Tg, t);
	}
	for (int n = 0; n < d.N; n++) {
		int b = n / d.T, t = row_pos(&d, m->cp_rank, n % d.T);
		size_t g = (size_t)b * d.Tg + t;
		int s = seg_start ? seg_start[g] : 0;

		a->h_ids[n] = inputs[g];
		a->h_labels[n] = labels ? labels[g] : 0;
		a->h_pos[n] = t - s;
		/* ring step i holds cp rank (cp_rank - i)'s keys: those of
		 * row positions s..t that it has */
		for (int i = 0; i < d.cp; i++) {
			int r = (m->cp_rank - i + d.cp) % d.cp;

			a->h_kv_lo[(size_t)i * d.N + n] = tokens_before(&d, r, s);
			a->h_kv_hi[(size_t)i * d.N + n] = tokens_before(&d, r, t + 1) - 1;
		}
	}
	/* the device's ranges change now: a failed upload must not leave
	 * the backend their old host copy */
	if (m->ops->attention_ranges)
		m->ops->attention_ranges(a->kv_lo, a->kv_hi, NULL, NULL, 0);
	if ((rc = to_device(m, a->ids, a->h_ids, (size_t)d.N * sizeof *a->ids)) ||
	    (rc = to_device(m, a->labels, a->h_labels, (size_t)d.N * sizeof *a->labels)) ||
	    (rc = to_device(m, a->pos, a->h_pos, (size_t)d.N * sizeof *a->pos)) ||
	    (rc = to_device(m, a->kv_lo, a->h_kv_lo, (size_t)d.cp * d.N * sizeof *a->kv_lo)) ||
	    (rc = to_device(m, a->kv_hi, a->h_kv_hi, (size_t)d.cp * d.N * sizeof *a->kv_hi)))
		return rc;
	if (m->ops->attention_ranges)
		m->ops->attention_ranges(a->kv_lo, a->kv_hi, a->h_kv_lo, a->h_kv_hi,
					 (size_t)d.cp * d.N);
	train = labels && dloss != 0;
	pass = train ? LLAMA_PASS_FORWARD : LLAMA_PASS_EVAL;
	tied = m->cfg.tie_embeddings;

	if (d.first) {
		if ((rc = acquire(m, 0, pass)) || (rc = embed(m)))
			return rc;
		if (!tied && (rc = release(m, 0, pass)))
			return rc;
	} else if ((rc = pp_recv(m, a->resid[d.l0], false))) {
		return rc;
	}
	for (int l = d.l0; l < d.l1; l++) {
		if ((rc = acquire(m, 1 + l, pass)) || (rc = block_forward(m, l, true)) ||
		    (rc = release(m, 1 + l, pass)))
			return rc;
	}
	a->shared_holds = -1;
	for (int l = d.l1 - 1; l >= d.l0 && a->shared_holds < 0; l--)
		if (a->recompute[l])
			a->shared_holds = l;
	if (!d.last) {
		/* the next stage has the head: loss is left alone */
		if ((rc = pp_send(m, a->resid[d.l1], false)))
			return rc;
		if (train)
			a->backward_ready |= UINT64_C(1) << m->pp_stage;
		return 0;
	}
	if ((rc = acquire(m, d.L + 1, pass)) || (tied && (rc = acquire(m, 0, pass))))
		return rc;
	norm_w = m->params[d.L + 1];
	xf = gemm_input(m, a->xf);
	if ((rc = norm_gather(m, xf, a->rstdf, a->resid[d.L], norm_w)))
		return rc;
	keep_bf16(m, a->xf16, xf, (size_t)d.N * d.C);
	mm_forward(m, a->logits, xf, a->xf16, output_chunk(m), output_weight(m, m->params),
		   d.N, d.C, d.V, false);
	if ((rc = release(m, d.L + 1, pass)) || (tied && (rc = release(m, 0, pass))))
		return rc;
	if (labels) {
		double sum = 0;

		rc = 0;
		if (m->tp > 1)
			rc = cross_entropy_tp(m, a->labels, train ? dloss / (float)d.N : 0.0f);
		else
			op->cross_entropy(a->losses, a->logits, a->labels, d.N, d.V,
					  train ? dloss / (float)d.N : 0.0f);
		if (rc)
			return rc;
		if (a->h_losses != a->losses &&
		    (rc = op->download(a->h_losses, a->losses, (size_t)d.N * sizeof *a->losses)))
			return rc;
		for (int n = 0; n < d.N; n++)
			sum += a->h_losses[n];
		if (loss)
			*loss = (float)(sum / d.N);
	}
	if (train)
		a->backward_ready |= UINT64_C(1) << m->pp_stage;
	return 0;
}

int llama_backward(llama_model *m)
{
	const kernel_ops *op = m->ops;
	const llama_pass B = LLAMA_PASS_BACKWARD;
	llama_acts *a = m->acts;
	struct dims d;
	float *dxr, *drw;
	bool tied;
	int rc;

	if (!a || !(a->backward_ready >> m->pp_stage & 1))
		return titan_err(TITAN_EUSAGE, "llama_backward: the last forward did not "
				 "prepare a backward (it needs labels and dloss != 0)");
	if (!m->with_grads)
		return titan_err(TITAN_EUSAGE, "llama_backward: the model was made without "
				 "gradients (llama_new_tp)");
	d = dims_of(m);
	a->backward_ready &= ~(UINT64_C(1) << m->pp_stage);
	a->dresid = a->dresids[m->pp_stage];
	tied = m->cfg.tie_embeddings;

	if (!d.last) {
		/* the gradient of this stage's output, from the next stage */
		if ((rc = pp_recv(m, a->dresid, true)))
			return rc;
		goto layers;
	}
	if ((rc = acquire(m, d.L + 1, B)) || (tied && (rc = acquire(m, 0, B))))
		return rc;
	/* logits now hold dloss/N * (softmax - onehot) */
	mm_backward(m, a->dx, output_weight(m, m->grads), a->logits, a->xf, a->xf16,
		    output_chunk(m), output_weight(m, m->params), d.N, d.C, d.V, false);
	/* the output is column-parallel over the vocabulary */
	if ((rc = scatter_grad(m, a->dx, &dxr)))
		return rc;
	/* rmsnorm_backward adds into its input gradient, and nothing else
	 * reaches the last residual */
	op->zero(a->dresid, (size_t)d.Ns * d.C * sizeof(float));
	op->rmsnorm_backward(a->dresid, m->grads[d.L + 1], dxr, a->resid[d.L],
			     m->params[d.L + 1], a->rstdf, d.Ns, d.C);
	if ((rc = release(m, d.L + 1, B)))
		return rc;
layers:
	for (int l = d.l1 - 1; l >= d.l0; l--) {
		if ((rc = acquire(m, 1 + l, B)))
			return rc;
		/* the last recomputed layer's forward is still in the
		 * shared set */
		if (a->recompute[l] && a->shared_holds != l) {
			if ((rc = block_forward(m, l, false)))
				return rc;
			a->shared_holds = l;
		}
		if ((rc = block_backward(m, l)) || (rc = release(m, 1 + l, B)))
			return rc;
	}
	if (!d.first)
		return pp_send(m, a->dresid, true);
	if (!tied && (rc = acquire(m, 0, B)))
		return rc;
	if (m->tp > 1) {
		/* rows of tokens another tp rank holds add nothing here */
		if ((rc = gather_grad(m, a->dresid, &drw)))
			return rc;
		for (int n = 0; n < d.N; n++)
			if (!a->in_vocab[n])
				op->zero(drw + (size_t)n * d.C, (size_t)d.C * sizeof(float));
		op->embedding_backward(m->grads[0], drw, a->lids, d.N, d.C);
	} else {
		op->embedding_backward(m->grads[0], a->dresid, a->ids, d.N, d.C);
	}
	return release(m, 0, B);
}

const float *llama_logits(const llama_model *m)
{
	return m->acts ? m->acts->logits : NULL;
}
