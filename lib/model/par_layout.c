/* par_layout.c - which slice of every model tensor each rank of a parallel
 * layout holds (the rule is spelled out in shard.h). */
#include "core/base.h"
#include "model/shard.h"

/* The mesh's degrees, then pp_stages (not a dimension of the mesh) */
static const char *const dim_names[6] = { "pp", "dp_replicate", "dp_shard", "cp", "tp",
					   "pp_stages" };

static int *degree(par_layout *l, int i)
{
	int *d[6] = { &l->pp, &l->dp_replicate, &l->dp_shard, &l->cp, &l->tp, &l->pp_stages };
	return d[i];
}

par_layout par_layout_single(void)
{
	return (par_layout){ 1, 1, 1, 1, 1, 1 };
}

/* Stages a pp rank runs (0, from a struct built by hand, is 1). */
static int stages_of(const par_layout *l)
{
	return l->pp_stages > 1 ? l->pp_stages : 1;
}

int par_layout_parse(const char *s, par_layout *l)
{
	par_layout out = par_layout_single();
	bool seen[6] = { false };
	const char *p = s;
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		if (!eq || eq == p)
			return titan_err(TITAN_EUSAGE, "layout '%s': '%.*s': expected KEY=N", s,
					 (int)len, p);
		size_t klen = (size_t)(eq - p);
		int k = -1;
		for (int i = 0; i < 6; i++)
			if (strlen(dim_names[i]) == klen && !memcmp(dim_names[i], p, klen))
				k = i;
		if (k < 0)
			return titan_err(TITAN_EUSAGE,
					 "layout '%s': unknown key '%.*s' (keys: pp, dp_replicate, dp_shard, cp, tp, pp_stages)",
					 s, (int)klen, p);
		if (seen[k])
			return titan_err(TITAN_EUSAGE, "layout '%s': %s given twice", s,
					 dim_names[k]);
		seen[k] = true;
		const char *v = eq + 1, *vend = p + len;
		long n = 0;
		if (v == vend)
			return titan_err(TITAN_EUSAGE, "layout '%s': %s: expected a number", s,
					 dim_names[k]);
		for (const char *q = v; q < vend; q++) {
			if (*q < '0' || *q > '9')
				return titan_err(TITAN_EUSAGE,
						 "layout '%s': %s: '%.*s' is not a number", s,
						 dim_names[k], (int)(vend - v), v);
			if (n < 1000000)
				n = n * 10 + (*q - '0');
		}
		if (n < 1 || n > 99999)
			return titan_err(TITAN_EUSAGE,
					 "layout '%s': %s=%.*s: a degree is 1 to 99999", s,
					 dim_names[k], (int)(vend - v), v);
		*degree(&out, k) = (int)n;
		if (!end)
			break;
		p = end + 1;
		if (!*p)
			return titan_err(TITAN_EUSAGE, "layout '%s': trailing ','", s);
	}
	*l = out;
	return 0;
}

void par_layout_format(const par_layout *l, char *buf, size_t n)
{
	int len = snprintf(buf, n, "pp=%d,dp_replicate=%d,dp_shard=%d,cp=%d,tp=%d", l->pp,
			   l->dp_replicate, l->dp_shard, l->cp, l->tp);

	if (stages_of(l) > 1 && len >= 0 && (size_t)len < n)
		snprintf(buf + len, n - (size_t)len, ",pp_stages=%d", l->pp_stages);
}

int par_layout_world(const par_layout *l)
{
	return l->pp * l->dp_replicate * l->dp_shard * l->cp * l->tp;
}

int par_layout_check(const par_layout *l, const llama_config *c, int nranks)
{
	par_layout m = *l;
	for (int i = 0; i < 5; i++)
		if (*degree(&m, i) < 1)
			return titan_err(TITAN_EUSAGE, "%s=%d: a degree is at least 1",
					 dim_names[i], *degree(&m, i));
	const struct {
		const char *key;
		int v;
	} by_tp[] = {
		{ "n_heads", c->n_heads },
		{ "n_kv_heads", c->n_kv_heads },
		{ "ffn_hidden", c->ffn_hidden },
		{ "vocab_size", c->vocab_size },
	};
	for (size_t i = 0; i < ARRAY_SIZE(by_tp); i++)
		if (by_tp[i].v % l->tp)
			return titan_err(TITAN_EUSAGE, "tp=%d does not divide model.%s=%d", l->tp,
					 by_tp[i].key, by_tp[i].v);
	if (c->n_layers % l->pp)
		return titan_err(TITAN_EUSAGE, "pp=%d does not divide model.n_layers=%d", l->pp,
				 c->n_layers);
	if (c->n_layers % (l->pp * stages_of(l)))
		return titan_err(TITAN_EUSAGE, "pp=%d x pp_stages=%d does not divide "
				 "model.n_layers=%d", l->pp, l->pp_stages, c->n_layers);
	int64_t world = (int64_t)l->pp * l->dp_replicate * l->dp_shard * l->cp * l->tp;
	if (world > 99999)
		return titan_err(TITAN_EUSAGE, "layout of %lld ranks: at most 99999",
				 (long long)world);
	if (nranks > 0 && world != nranks) {
		char buf[128];
		par_layout_format(l, buf, sizeof buf);
		return titan_err(TITAN_EUSAGE, "layout %s needs %lld ranks, there are %d", buf,
				 (long long)world, nranks);
	}
	return 0;
}

int par_check_seq_len(int seq_len, int cp)
{
	if (cp > 1 && seq_len % (2 * cp))
		return titan_err(TITAN_EUSAGE, "context parallel: training.seq_len %d is not a "
				 "multiple of 2 x cp = %d (each cp rank holds two chunks of every "
				 "row)", seq_len, 2 * cp);
	return 0;
}

par_coord par_layout_coord(const par_layout *l, int rank)
{
	par_coord c;
	c.tp = rank % l->tp;
	rank /= l->tp;
	c.cp = rank % l->cp;
	rank /= l->cp;
	c.dp_shard = rank % l->dp_shard;
	rank /= l->dp_shard;
	c.dp_replicate = rank % l->dp_replicate;
	c.pp = rank / l->dp_replicate;
	return c;
}

bool par_rank_writes(const par_layout *l, int rank)
{
	return par_layout_coord(l, rank).dp_replicate == 0;
}

enum kind { K_EMBED, K_COL, K_ROW, K_NORM, K_FINAL_NORM, K_OUTPUT };

/* What the tensor is, from its name; *layer is -1 outside the layers. */
static enum kind kind_of(const char *name, int *layer)
{
	static const struct {
		const char *suffix;
		enum kind k;
	} parts[] = {
		{ ".attention.wq.weight", K_COL },    { ".attention.wk.weight", K_COL },
		{ ".attention.wv.weight", K_COL },    { ".attention.wo.weight", K_ROW },
		{ ".feed_forward.w1.weight", K_COL }, { ".feed_forward.w3.weight", K_COL },
		{ ".feed_forward.w2.weight", K_ROW }, { ".attention_norm.weight", K_NORM },
		{ ".ffn_norm.weight", K_NORM },
	};
	*layer = -1;
	if (!strcmp(name, "tok_embeddings.weight"))
		return K_EMBED;
	if (!strcmp(name, "output.weight"))
		return K_OUTPUT;
	if (!strcmp(name, "norm.weight"))
		return K_FINAL_NORM;
	if (!strncmp(name, "layers.", 7)) {
		char *end;
		long l = strtol(name + 7, &end, 10);
		for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
			if (!strcmp(end, parts[i].suffix)) {
				*layer = (int)l;
				return parts[i].k;
			}
	}
	/* Not a model tensor: treat it as a norm, whole on every stage 0
	 * rank; llama_tensors names nothing else. */
	return K_FINAL_NORM;
}

bool par_slice(const llama_config *c, const par_layout *l, int rank,
	       const llama_tensor_info *t, int64_t *start, int64_t *shape)
{
	par_coord at = par_layout_coord(l, rank);
	int layer;
	enum kind k = kind_of(t->name, &layer);

	/* the pp rank that runs the tensor's stage: stages go round the
	 * ranks pp_stages times */
	int rank_pp;
	if (k == K_EMBED)
		rank_pp = 0;
	else if (k == K_OUTPUT || k == K_FINAL_NORM)
		rank_pp = l->pp - 1;
	else
		rank_pp = layer / (c->n_layers / (l->pp * stages_of(l))) % l->pp;
	if (rank_pp != at.pp)
		return false;

	for (int d = 0; d < t->ndim; d++) {
		start[d] = 0;
		shape[d] = t->shape[d];
	}
	int split = -1;
	if (k == K_EMBED || k == K_COL || k == K_OUTPUT)
		split = 0;
	else if (k == K_ROW)
		split = 1;
	if (split >= 0 && split < t->ndim && l->tp > 1) {
		shape[split] = t->shape[split] / l->tp;
		start[split] = at.tp * shape[split];
	}
	if (t->ndim == 0)
		return true;

	/* FSDP: torch.chunk of the tp-local rows over dp_shard * cp. */
	int n = l->dp_shard * l->cp, i = at.dp_shard * l->cp + at.cp;
	int64_t rows = shape[0], piece = (rows + n - 1) / n;
	int64_t lo = TITAN_MIN((int64_t)i * piece, rows);
	int64_t hi = TITAN_MIN(lo + piece, rows);
	start[0] += lo;
	shape[0] = hi - lo;
	return shape[0] > 0;
}

bool par_ckpt_slice(const llama_config *c, const par_layout *l, int rank,
		    const llama_tensor_info *t, int64_t *start, int64_t *shape)
{
	par_coord at = par_layout_coord(l, rank);
	int layer;
	enum kind k = kind_of(t->name, &layer);
	if (at.dp_replicate || (at.tp && (k == K_NORM || k == K_FINAL_NORM)))
		return false;
	return par_slice(c, l, rank, t, start, shape);
}
