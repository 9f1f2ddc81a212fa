/* llama.c - Llama 3 configuration, parameter layout, allocation and
 * torchtitan's weight initialisation.  The forward and backward passes are in
 * llama_step.c. */
#include "core/base.h"

#include <math.h>

#include "core/rng.h"
#include "model/llama_internal.h"

static int positive(int v, const char *key)
{
	if (v <= 0)
		return titan_err(TITAN_EUSAGE, "model.%s: %d must be positive", key, v);
	return 0;
}

/* torchtitan's FeedForward sizing, with Python's int() truncations. */
static int ffn_hidden(const llama_config *c, int64_t *out)
{
	double hidden = (double)(int64_t)(2.0 * (4.0 * c->dim) / 3.0);

	if (c->ffn_dim_multiplier > 0)
		hidden = (double)(int64_t)(c->ffn_dim_multiplier * hidden);
	*out = (int64_t)ceil(hidden / c->multiple_of) * c->multiple_of;
	return 0;
}

int llama_config_check(llama_config *c)
{
	int64_t hidden;
	int rc, hd;

	if ((rc = positive(c->dim, "dim")) || (rc = positive(c->n_layers, "n_layers")) ||
	    (rc = positive(c->n_heads, "n_heads")) ||
	    (rc = positive(c->vocab_size, "vocab_size")) ||
	    (rc = positive(c->multiple_of, "multiple_of")) ||
	    (rc = positive(c->max_seq_len, "max_seq_len")))
		return rc;
	/* the tensor list counts layers * 9 in an int */
	if (c->n_layers > 65536)
		return titan_err(TITAN_EUSAGE, "model.n_layers: %d is more than 65536",
				 c->n_layers);
	/* torchtitan: n_kv_heads None means one KV head per query head */
	if (c->n_kv_heads == 0)
		c->n_kv_heads = c->n_heads;
	if ((rc = positive(c->n_kv_heads, "n_kv_heads")))
		return rc;
	if (c->dim % c->n_heads)
		return titan_err(TITAN_EUSAGE, "model.n_heads: %d does not divide model.dim %d",
				 c->n_heads, c->dim);
	if (c->n_heads % c->n_kv_heads)
		return titan_err(TITAN_EUSAGE, "model.n_kv_heads: %d does not divide "
				 "model.n_heads %d", c->n_kv_heads, c->n_heads);
	hd = c->dim / c->n_heads;
	if (hd % 2)
		return titan_err(TITAN_EUSAGE, "model.n_heads: head dim %d (model.dim / "
				 "model.n_heads) must be even for RoPE", hd);
	if (!(c->ffn_dim_multiplier >= 0))
		return titan_err(TITAN_EUSAGE, "model.ffn_dim_multiplier: %g must not be "
				 "negative", c->ffn_dim_multiplier);
	if (!(c->norm_eps > 0))
		return titan_err(TITAN_EUSAGE, "model.norm_eps: %g must be positive", c->norm_eps);
	if (!(c->rope_theta > 1))
		return titan_err(TITAN_EUSAGE, "model.rope_theta: %g must be greater than 1",
				 c->rope_theta);
	if (c->rope_scaling) {
		if (!(c->rope_scaling_factor > 0))
			return titan_err(TITAN_EUSAGE, "model.rope_scaling_factor: %g must be "
					 "positive", c->rope_scaling_factor);
		if (!(c->rope_low_freq_factor > 0))
			return titan_err(TITAN_EUSAGE, "model.rope_low_freq_factor: %g must be "
					 "positive", c->rope_low_freq_factor);
		if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
			return titan_err(TITAN_EUSAGE, "model.rope_high_freq_factor: %g must be "
					 "greater than model.rope_low_freq_factor %g",
					 c->rope_high_freq_factor, c->rope_low_freq_factor);
		if ((rc = positive(c->rope_original_max_pos, "rope_original_max_pos")))
			return rc;
	}
	if (c->ffn_hidden < 0)
		return titan_err(TITAN_EUSAGE, "model.ffn_hidden: %d must not be negative "
				 "(0: derived from model.multiple_of)", c->ffn_hidden);
	if (c->ffn_hidden > 0)
		return 0;  /* given outright, as an imported model's intermediate_size */
	ffn_hidden(c, &hidden);
	if (hidden <= 0 || hidden > INT_MAX)
		return titan_err(TITAN_EUSAGE, "model.ffn_dim_multiplier: FFN hidden size %lld "
				 "is out of range", (long long)hidden);
	c->ffn_hidden = (int)hidden;
	return 0;
}

/* Element counts of one layer's tensors, in chunk order. */
enum { T_WQ, T_WK, T_WV, T_WO, T_W1, T_W2, T_W3, T_ATTN_NORM, T_FFN_NORM, T_NLAYER };

static const char *const layer_tensor_name[T_NLAYER] = {
	"attention.wq", "attention.wk", "attention.wv", "attention.wo",
	"feed_forward.w1", "feed_forward.w2", "feed_forward.w3",
	"attention_norm", "ffn_norm",
};

/* The dimension tensor parallelism cuts: rows of the column-parallel
 * projections, columns of the row-parallel ones; norms stay whole. */
static const int layer_tp_dim[T_NLAYER] = { 0, 0, 0, 1, 0, 1, 0, -1, -1 };

/* PyTorch shapes [out, in] (norms: [C], second dimension 0) of one tp
 * rank's pieces (tp = 1: the whole tensors). */
static void layer_shapes(const llama_config *c, int tp, int64_t shape[T_NLAYER][2])
{
	int64_t C = c->dim, hd = c->dim / c->n_heads;
	int64_t q = c->n_heads * hd / tp, kv = c->n_kv_heads * hd / tp, F = c->ffn_hidden / tp;
	const int64_t s[T_NLAYER][2] = {
		{ q, C }, { kv, C }, { kv, C }, { C, q },
		{ F, C }, { C, F }, { F, C },
		{ C, 0 }, { C, 0 },
	};

	memcpy(shape, s, sizeof s);
}

static size_t layer_numel(const llama_config *c, int tp)
{
	int64_t shape[T_NLAYER][2];
	size_t n = 0;

	layer_shapes(c, tp, shape);
	for (int i = 0; i < T_NLAYER; i++)
		n += (size_t)shape[i][0] * (size_t)(shape[i][1] ? shape[i][1] : 1);
	return n;
}

uint64_t llama_param_count(const llama_config *c)
{
	uint64_t emb = (uint64_t)c->vocab_size * (uint64_t)c->dim;

	return emb + (uint64_t)c->n_layers * layer_numel(c, 1) + (uint64_t)c->dim +
	       (c->tie_embeddings ? 0 : emb);
}

double llama_flops_per_token(const llama_config *c, int seq_len)
{
	double emb = (double)c->vocab_size * c->dim;
	double hd = (double)(c->dim / c->n_heads);

	return 6.0 * ((double)llama_param_count(c) - emb) +
	       12.0 * c->n_layers * c->n_heads * hd * seq_len;
}

bool llama_chunk_has_gemm_weights(const llama_config *c, int chunk)
{
	if (chunk == 0)
		return c->tie_embeddings;
	return chunk <= c->n_layers || !c->tie_embeddings;
}

int llama_nchunks(const llama_config *c)
{
	return c->n_layers + 2;
}

size_t llama_chunk_numel_tp(const llama_config *c, int tp, int chunk)
{
	size_t emb = (size_t)(c->vocab_size / tp) * (size_t)c->dim;

	if (chunk == 0)
		return emb;
	if (chunk <= c->n_layers)
		return layer_numel(c, tp);
	return (size_t)c->dim + (c->tie_embeddings ? 0 : emb);
}

size_t llama_chunk_numel(const llama_config *c, int chunk)
{
	return llama_chunk_numel_tp(c, 1, chunk);
}

static void set_tensor(llama_tensor_info *t, int chunk, size_t offset, int64_t rows,
		       int64_t cols, int tp_dim)
{
	t->chunk = chunk;
	t->tp_dim = tp_dim;
	t->offset = offset;
	t->ndim = cols ? 2 : 1;
	t->shape[0] = rows;
	t->shape[1] = cols;
	t->numel = (size_t)rows * (size_t)(cols ? cols : 1);
}

int llama_tensors(const llama_config *c, llama_tensor_info **out, int *n)
{
	return llama_tensors_tp(c, 1, out, n);
}

int llama_tensors_tp(const llama_config *c, int tp, llama_tensor_info **out, int *n)
{
	int nt = 1 + c->n_layers * T_NLAYER + 1 + !c->tie_embeddings, k = 0;
	int64_t shape[T_NLAYER][2], V = c->vocab_size / tp;
	llama_tensor_info *t = calloc((size_t)nt, sizeof *t);

	if (!t)
		return titan_err_nomem();
	layer_shapes(c, tp, shape);
	snprintf(t[k].name, sizeof t[k].name, "tok_embeddings.weight");
	set_tensor(&t[k], 0, 0, V, c->dim, 0);
	t[k++].is_embedding = true;
	for (int l = 0; l < c->n_layers; l++) {
		size_t off = 0;

		for (int i = 0; i < T_NLAYER; i++, k++) {
			snprintf(t[k].name, sizeof t[k].name, "layers.%d.%s.weight", l,
				 layer_tensor_name[i]);
			set_tensor(&t[k], 1 + l, off, shape[i][0], shape[i][1], layer_tp_dim[i]);
			t[k].is_norm = i >= T_ATTN_NORM;
			off += t[k].numel;
		}
	}
	snprintf(t[k].name, sizeof t[k].name, "norm.weight");
	set_tensor(&t[k], c->n_layers + 1, 0, c->dim, 0, -1);
	t[k++].is_norm = true;
	if (!c->tie_embeddings) {
		snprintf(t[k].name, sizeof t[k].name, "output.weight");
		set_tensor(&t[k], c->n_layers + 1, (size_t)c->dim, V, c->dim, 0);
		k++;
	}
	*out = t;
	*n = k;
	return 0;
}

void llama_block_view(const llama_config *c, float *chunk, llama_block_weights *w)
{
	llama_block_view_tp(c, 1, chunk, w);
}

void llama_block_view_tp(const llama_config *c, int tp, float *chunk, llama_block_weights *w)
{
	int64_t shape[T_NLAYER][2];
	float *p[T_NLAYER];

	layer_shapes(c, tp, shape);
	for (int i = 0; i < T_NLAYER; i++) {
		p[i] = chunk;
		chunk += (size_t)shape[i][0] * (size_t)(shape[i][1] ? shape[i][1] : 1);
	}
	*w = (llama_block_weights){
		.wq = p[T_WQ], .wk = p[T_WK], .wv = p[T_WV], .wo = p[T_WO],
		.w1 = p[T_W1], .w2 = p[T_W2], .w3 = p[T_W3],
		.attention_norm = p[T_ATTN_NORM], .ffn_norm = p[T_FFN_NORM],
	};
}

int llama_new(llama_model **out, const llama_config *c, const kernel_ops *ops,
	      mem_tracker *mem)
{
	return llama_new_tp(out, c, ops, mem, true, 1, 0);
}

/* The model's tables, every buffer pointer NULL. */
static int model_alloc(llama_model **out, const llama_config *c, const kernel_ops *ops,
		       mem_tracker *mem, bool with_grads, bool views, int tp, int tp_rank)
{
	llama_model *m = calloc(1, sizeof *m);
	int n = llama_nchunks(c);

	*out = NULL;
	if (!m)
		return titan_err_nomem();
	*m = (llama_model){ .cfg = *c, .ops = ops, .mem = mem, .nchunks = n,
			    .with_grads = with_grads, .views = views, .tp = tp, .tp_rank = tp_rank,
			    .cp = 1, .pp_ranks = 1, .pp_stages = 1 };
	m->chunk_numel = calloc((size_t)n, sizeof *m->chunk_numel);
	m->params = calloc((size_t)n, sizeof *m->params);
	m->grads = calloc((size_t)n, sizeof *m->grads);
	m->params_bf16 = calloc((size_t)n, sizeof *m->params_bf16);
	if (!m->chunk_numel || !m->params || !m->grads || !m->params_bf16) {
		llama_free(m);
		return titan_err_nomem();
	}
	for (int i = 0; i < n; i++)
		m->chunk_numel[i] = llama_chunk_numel_tp(c, tp, i);
	*out = m;
	return 0;
}

/* tp must divide what tensor parallelism splits. */
static int check_tp(const llama_config *c, int tp, int tp_rank)
{
	if (tp < 1 || tp_rank < 0 || tp_rank >= tp || c->n_heads % tp || c->n_kv_heads % tp ||
	    c->ffn_hidden % tp || c->vocab_size % tp)
		return titan_err(TITAN_EUSAGE, "tensor parallel: rank %d of %d does not divide "
				 "the model (heads %d, kv heads %d, ffn %d, vocab %d)", tp_rank, tp,
				 c->n_heads, c->n_kv_heads, c->ffn_hidden, c->vocab_size);
	return 0;
}

int llama_new_tp(llama_model **out, const llama_config *c, const kernel_ops *ops,
		 mem_tracker *mem, bool with_grads, int tp, int tp_rank)
{
	llama_model *m;
	int rc;

	*out = NULL;
	if ((rc = check_tp(c, tp, tp_rank)) ||
	    (rc = model_alloc(&m, c, ops, mem, with_grads, false, tp, tp_rank)))
		return rc;
	for (int i = 0; i < m->nchunks; i++) {
		size_t bytes = m->chunk_numel[i] * sizeof(float);

		m->params[i] = mem_alloc(mem, bytes, "model parameters");
		if (m->params[i] && with_grads)
			m->grads[i] = mem_alloc(mem, bytes, "model gradients");
		if (!m->params[i] || (with_grads && !m->grads[i])) {
			rc = titan_err_prefix(TITAN_ENOMEM, "chunk %d", i);
			llama_free(m);
			return rc;
		}
	}
	*out = m;
	return 0;
}

int llama_new_views(llama_model **out, const llama_config *c, const kernel_ops *ops,
		    mem_tracker *mem, int tp, int tp_rank)
{
	int rc = check_tp(c, tp, tp_rank);

	return rc ? rc : model_alloc(out, c, ops, mem, true, true, tp, tp_rank);
}

void llama_free(llama_model *m)
{
	if (!m)
		return;
	llama_acts_free(m);
	for (int i = 0; !m->views && m->chunk_numel && i < m->nchunks; i++) {
		size_t bytes = m->chunk_numel[i] * sizeof(float);

		if (m->params)
			mem_free(m->mem, m->params[i], bytes);
		if (m->grads)
			mem_free(m->mem, m->grads[i], bytes);
	}
	free(m->chunk_numel);
	free(m->params);
	free(m->grads);
	free(m->params_bf16);
	free(m);
}

void llama_zero_grads(llama_model *m)
{
	for (int i = 0; i < m->nchunks; i++)
		if (m->grads[i])
			m->ops->zero(m->grads[i], m->chunk_numel[i] * sizeof(float));
}

/* Initialisation.  Each tensor draws from its own stream (core/rng.h)
 * seeded from (seed, tensor index), so the weights depend on neither the
 * thread count nor the order in which tensors are filled.  Normals come in
 * Box-Muller pairs. */
struct normal_rng {
	titan_rng r;
	bool have_spare;
	double spare;
};

static double rng_normal(struct normal_rng *r)
{
	double u, v, rad;

	if (r->have_spare) {
		r->have_spare = false;
		return r->spare;
	}
	/* u in (0, 1]: never 0, so log() stays finite */
	u = ((rng_next(&r->r) >> 11) + 1) * 0x1.0p-53;
	v = ((rng_next(&r->r) >> 11) + 1) * 0x1.0p-53;
	rad = sqrt(-2.0 * log(u));
	r->spare = rad * sin(2.0 * M_PI * v);
	r->have_spare = true;
	return rad * cos(2.0 * M_PI * v);
}

/* N(0, std) redrawn until it lies in [-bound, bound] (bound 0: no cut). */
static void fill_normal(float *w, size_t n, double std, double bound, uint64_t seed,
			uint64_t stream)
{
	struct normal_rng r = {0};

	rng_seed(&r.r, seed, stream);
	for (size_t i = 0; i < n; i++) {
		double x;

		do
			x = std * rng_normal(&r);
		while (bound > 0 && fabs(x) > bound);
		w[i] = (float)x;
	}
}

/* Tensor i (llama_tensors order) of chunk into w, from its own stream. */
static void init_tensor(const llama_config *c, const llama_tensor_info *t, int i,
			uint64_t seed, float *w)
{
	double std = 0.02, bound = 2.0;  /* torch's trunc_normal_ default a, b */
	int layer = t->chunk - 1;

	if (t->is_norm) {
		for (size_t j = 0; j < t->numel; j++)
			w[j] = 1.0f;
		return;
	}
	if (t->is_embedding) {
		std = 1.0;
		bound = 0;
		/* Tied: output.weight is this tensor, and torchtitan's output
		 * init runs last. */
		if (c->tie_embeddings) {
			std = 1.0 / sqrt((double)c->dim);
			bound = 3.0 * std;
		}
	} else if (layer >= c->n_layers) {
		std = 1.0 / sqrt((double)c->dim);
		bound = 3.0 * std;
	} else {
		int k = (i - 1) % T_NLAYER;

		if (k == T_WO || k == T_W2 || k == T_W3)
			std = 0.02 / sqrt(2.0 * (c->depth_init ? layer + 1 : c->n_layers));
	}
	fill_normal(w, t->numel, std, bound, seed, (uint64_t)i);
}

int llama_init_weights(llama_model *m, uint64_t seed)
{
	const llama_config *c = &m->cfg;
	llama_tensor_info *t;
	int nt, rc;

	if (!m->ops->host_memory) {
		/* chunk by chunk on the host, then to the device */
		for (int i = 0; i < m->nchunks; i++)
			if ((rc = llama_init_chunk_to(m->ops, c, seed, i, m->tp, m->tp_rank,
						      m->params[i])))
				return rc;
		return 0;
	}
	if ((rc = llama_tensors(c, &t, &nt)))
		return rc;
#pragma omp parallel for schedule(dynamic, 1)
	for (int i = 0; i < nt; i++)
		init_tensor(c, &t[i], i, seed, m->params[t[i].chunk] + t[i].offset);
	free(t);
	return 0;
}

int llama_init_chunk_to(const kernel_ops *ops, const llama_config *c, uint64_t seed,
			int chunk, int tp, int tp_rank, float *dst)
{
	size_t n = llama_chunk_numel_tp(c, tp, chunk);
	float *h;
	int rc;

	if (ops->host_memory)
		return llama_init_chunk(c, seed, chunk, tp, tp_rank, dst);
	if (!(h = malloc(n ? n * sizeof *h : 1)))
		return titan_err_nomem();
	rc = llama_init_chunk(c, seed, chunk, tp, tp_rank, h);
	if (!rc)
		rc = ops->upload(dst, h, n * sizeof *h);
	free(h);
	return rc;
}

int llama_init_chunk(const llama_config *c, uint64_t seed, int chunk, int tp, int tp_rank,
		     float *dst)
{
	llama_tensor_info *t, *lt;
	int nt, rc;

	if ((rc = llama_tensors(c, &t, &nt)))
		return rc;
	if ((rc = llama_tensors_tp(c, tp, &lt, &nt))) {
		free(t);
		return rc;
	}
#pragma omp parallel for schedule(dynamic, 1)
	for (int i = 0; i < nt; i++) {
		float *whole;

		if (t[i].chunk != chunk)
			continue;
		if (tp == 1 || lt[i].tp_dim < 0) {
			init_tensor(c, &t[i], i, seed, dst + lt[i].offset);
			continue;
		}
		/* the whole tensor from its stream, then this rank's rows or
		 * columns of it */
		whole = malloc(t[i].numel * sizeof *whole);
		if (!whole) {
			rc = TITAN_ENOMEM;
			continue;
		}
		init_tensor(c, &t[i], i, seed, whole);
		if (lt[i].tp_dim == 0) {
			memcpy(dst + lt[i].offset, whole + (size_t)tp_rank * lt[i].numel,
			       lt[i].numel * sizeof *whole);
		} else {
			int64_t cols = lt[i].shape[1];

			for (int64_t r = 0; r < lt[i].shape[0]; r++)
				memcpy(dst + lt[i].offset + (size_t)(r * cols),
				       whole + (size_t)(r * t[i].shape[1] + tp_rank * cols),
				       (size_t)cols * sizeof *whole);
		}
		free(whole);
	}
	free(t);
	free(lt);
	return rc ? titan_err_nomem() : 0;
}
