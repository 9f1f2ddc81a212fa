/* dp.c - FSDP, DDP and HSDP through the model's hooks (dp.h).
 *
 * Buffers with dp_shard = n > 1: the shards (parameters, gradients), whole
 * parameter buffers for chunk 0, the head and the layers (one shared by
 * every layer when layers are freed after forward, else one each), whole
 * gradient buffers for chunk 0, the head and one layer, and three staging
 * buffers: the all-gather's receive side (n shards, rank-major, the
 * prefetched chunk lands there), the reduce-scatter's send side (rank-major)
 * and its receive side (one shard).  With n = 1 there are only the shards,
 * which are the chunks: memory is what one rank holds.
 *
 * With bf16 GEMMs (the model's matmul_bf16) each buffer the model reads
 * GEMM weights from (a chunk's shard with n = 1, a whole buffer with
 * n > 1, shared the same way) has a bf16 copy, cast at the first acquire
 * after its values change (after a gather, or a dp_params_changed that did
 * not write it); with n = 1 the optimizer writes it as it updates the
 * shard (dp_shard_bf16). */
#include "core/base.h"
#include "dist/dp.h"
#include "dist/tp.h"

enum { NONE = -1 };

struct dp {
	llama_model *m;
	const kernel_ops *ops;
	mem_tracker *mem;
	comm *shard, *rep, *tp, *pp, *cp;
	int n, rank, R;              /* shard group size and rank, replicas */
	bool reshard;
	int nchunks, L;
	llama_hooks hooks;
	llama_hooks tp_hooks;        /* tp.c's, over the tp group */

	size_t *whole, *numel;       /* [nchunks] chunk floats, shard floats */
	size_t max_shard;
	dp_piece *pieces;            /* llama_tensors order */
	int npieces;
	int *first_piece, *npiece;   /* [nchunks] pieces of each chunk */
	size_t *chunk_off;           /* [npieces] the tensor's offset in its chunk */
	int64_t *trows;              /* [npieces] the tensor's rows (dim 0) */
	float **params, **grads;     /* [nchunks] shards */

	/* n > 1 */
	float **wparam;              /* [nchunks] whole parameter buffer of each chunk */
	float **wgrad;               /* [nchunks] whole gradient buffer */
	float *gather_stage, *rs_send, *rs_recv;
	bool *gathered;              /* [nchunks] wparam holds the current values */
	bool *grad_live;             /* [nchunks] wgrad is being accumulated */
	/* bf16 GEMMs: the copy of the buffer the model reads chunk c from
	 * (NULL for a chunk without GEMM weights), and whether it holds that
	 * buffer's current values */
	kernel_bf16 **wbf16;         /* [nchunks] */
	bool *bf16_current;          /* [nchunks] */
	int gather_chunk;            /* the chunk whose all-gather is in flight */
	comm_req *gather_req;
	int rs_chunk;                /* the chunk whose reduce-scatter is in flight */
	comm_req *rs_req;

	comm_req **ar_req;           /* [nchunks] replicate all-reduces in flight */
	comm_req **pp_req;           /* pipeline sends in flight */
	int *pp_req_set;             /* the activation set each was sent from */
	int npp_req, cap_pp_req;
	int accum;                   /* micro-batches in this step */
	int *backs;                  /* [nchunks] backward passes done in this step */
	double comm_seen;            /* busy seconds already reported */
	void **allocs;               /* every buffer, for dp_free */
	size_t *alloc_bytes;
	int nallocs, cap_allocs;
};

static void *dp_alloc_bytes(dp *d, size_t bytes, const char *what)
{
	void *p;

	if (d->nallocs == d->cap_allocs) {
		int cap = d->cap_allocs ? 2 * d->cap_allocs : 32;
		void **a = realloc(d->allocs, cap * sizeof *a);
		size_t *b = a ? realloc(d->alloc_bytes, cap * sizeof *b) : NULL;

		if (a)
			d->allocs = a;
		if (!b) {
			titan_err_nomem();
			return NULL;
		}
		d->alloc_bytes = b;
		d->cap_allocs = cap;
	}
	p = mem_alloc(d->mem, bytes, what);
	if (p) {
		d->allocs[d->nallocs] = p;
		d->alloc_bytes[d->nallocs++] = bytes;
	}
	return p;
}

static float *dp_alloc(dp *d, size_t floats, const char *what)
{
	return dp_alloc_bytes(d, floats * sizeof(float), what);
}

static bool is_layer(const dp *d, int c)
{
	return c >= 1 && c <= d->L;
}

/* Whether this rank's pipeline stages hold chunk c (every chunk without
 * pp). */
static bool holds(const dp *d, int c)
{
	const llama_model *m = d->m;

	if (c == 0)
		return llama_holds_embeddings(m);
	if (c == d->L + 1)
		return llama_holds_head(m);
	return llama_holds_layer(m, c - 1);
}

/* The first layer chunk this rank holds (L + 1 when none): whose buffers
 * the others share when they share one. */
static int first_held_layer(const dp *d)
{
	int c = 1;

	while (c <= d->L && !holds(d, c))
		c++;
	return c;
}

/* The rows rank i holds of a tensor with rows rows cut n ways. */
static int64_t rows_of(int64_t rows, int n, int i, int64_t *row0)
{
	int64_t p = (rows + n - 1) / n, r0 = TITAN_MIN((int64_t)i * p, rows);

	if (row0)
		*row0 = r0;
	return TITAN_MIN(p, rows - r0);
}

static int make_pieces(dp *d)
{
	llama_tensor_info *t;
	int nt, rc;

	if ((rc = llama_tensors_tp(&d->m->cfg, d->m->tp, &t, &nt)))
		return rc;
	d->pieces = calloc((size_t)nt, sizeof *d->pieces);
	d->chunk_off = calloc((size_t)nt, sizeof *d->chunk_off);
	d->trows = calloc((size_t)nt, sizeof *d->trows);
	if (!d->pieces || !d->chunk_off || !d->trows) {
		free(t);
		return titan_err_nomem();
	}
	d->npieces = nt;
	for (int c = 0; c < d->nchunks; c++)
		d->first_piece[c] = NONE;
	for (int i = 0; i < nt; i++) {
		dp_piece *p = &d->pieces[i];
		int64_t rows = t[i].shape[0], cols = t[i].ndim == 2 ? t[i].shape[1] : 1;
		int c = t[i].chunk;

		p->tensor = i;
		p->chunk = c;
		p->cols = cols;
		/* another pipeline stage's tensors: no piece */
		if (!holds(d, c))
			rows = 0;
		p->rows = rows_of(rows, d->n, d->rank, &p->row0);
		p->padded = (size_t)((rows + d->n - 1) / d->n) * (size_t)cols;
		p->offset = d->numel[c];
		d->numel[c] += p->padded;
		d->chunk_off[i] = t[i].offset;
		d->trows[i] = rows;
		p->tp_whole = t[i].tp_dim < 0;
		if (d->first_piece[c] == NONE)
			d->first_piece[c] = i;
		d->npiece[c]++;
	}
	free(t);
	for (int c = 0; c < d->nchunks; c++)
		d->max_shard = TITAN_MAX(d->max_shard, d->numel[c]);
	return 0;
}

/* Rank-major shards (n of numel[c], as the all-gather delivers them) into
 * the chunk layout. */
static void shards_to_whole(const dp *d, int c, const float *shards, float *whole)
{
	for (int k = d->first_piece[c]; k < d->first_piece[c] + d->npiece[c]; k++) {
		const dp_piece *p = &d->pieces[k];

		for (int i = 0; i < d->n; i++) {
			int64_t r0, nr = rows_of(d->trows[k], d->n, i, &r0);

			d->ops->copy(whole + d->chunk_off[k] + (size_t)r0 * p->cols,
				     shards + (size_t)i * d->numel[c] + p->offset,
				     (size_t)nr * p->cols * sizeof(float));
		}
	}
}

/* The chunk layout into rank-major shards (the reduce-scatter's input);
 * padding rows are zeroed so they reduce to zero. */
static void whole_to_shards(const dp *d, int c, const float *whole, float *shards)
{
	for (int k = d->first_piece[c]; k < d->first_piece[c] + d->npiece[c]; k++) {
		const dp_piece *p = &d->pieces[k];

		for (int i = 0; i < d->n; i++) {
			int64_t r0, nr = rows_of(d->trows[k], d->n, i, &r0);
			float *dst = shards + (size_t)i * d->numel[c] + p->offset;
			size_t got = (size_t)nr * p->cols;

			d->ops->copy(dst, whole + d->chunk_off[k] + (size_t)r0 * p->cols,
				     got * sizeof(float));
			d->ops->zero(dst + got, (p->padded - got) * sizeof(float));
		}
	}
}

/* This rank's pieces of a whole chunk into its shard. */
static void whole_to_own_shard(const dp *d, int c, const float *whole, float *shard)
{
	for (int k = d->first_piece[c]; k < d->first_piece[c] + d->npiece[c]; k++) {
		const dp_piece *p = &d->pieces[k];

		d->ops->copy(shard + p->offset,
			     whole + d->chunk_off[k] + (size_t)p->row0 * p->cols,
			     (size_t)p->rows * p->cols * sizeof(float));
	}
}

/* A collective reads and writes what the ops queued before it; where
 * communication runs on a stream of its own (NCCL beside the backend's
 * compute stream) the ops must be done first.  Nothing to wait for on the
 * CPU.  Later ops may run while the collective does: that is the overlap. */
static int device_ready(dp *d)
{
	return d->ops->sync();
}

/* --- gathering parameters --- */

static int start_gather(dp *d, int c)
{
	int rc;

	if ((rc = device_ready(d)))
		return rc;
	d->gather_chunk = c;
	return comm_iall_gather(d->shard, d->params[c], d->gather_stage, d->numel[c],
				COMM_F32, &d->gather_req);
}

/* Wait for the gather in flight; with land, copy it into its chunk's
 * whole buffer (else it is dropped). */
static int finish_gather(dp *d, bool land)
{
	int c = d->gather_chunk, rc;

	d->gather_chunk = NONE;
	rc = comm_wait(d->gather_req);
	d->gather_req = NULL;
	if (rc || !land)
		return rc;
	shards_to_whole(d, c, d->gather_stage, d->wparam[c]);
	/* the layers share one buffer when they are freed after forward */
	if (is_layer(d, c) && d->reshard)
		for (int l = 1; l <= d->L; l++)
			d->gathered[l] = false;
	d->gathered[c] = true;
	d->bf16_current[c] = false;
	return 0;
}

static int gather(dp *d, int c, llama_pass pass)
{
	int rc, next;

	if (!d->gathered[c]) {
		/* A prefetch of another chunk is dropped: the staging buffer
		 * is needed now (the pass order did not go as predicted). */
		if (d->gather_chunk != NONE && d->gather_chunk != c &&
		    (rc = finish_gather(d, false)))
			return rc;
		if (d->gather_chunk == NONE && (rc = start_gather(d, c)))
			return rc;
		if ((rc = finish_gather(d, true)))
			return rc;
	}
	/* Prefetch what the pass reads next while this chunk computes. */
	next = pass == LLAMA_PASS_BACKWARD ? c - 1 : c + 1;
	if (next >= 0 && next < d->nchunks && holds(d, next) && !d->gathered[next] &&
	    d->gather_chunk == NONE && (rc = start_gather(d, next)))
		return rc;
	return 0;
}

/* --- reducing gradients --- */

static int start_replicate(dp *d, int c)
{
	int rc;

	if (d->R <= 1 || d->backs[c] < d->accum)
		return 0;
	if ((rc = device_ready(d)))
		return rc;
	return comm_iall_reduce(d->rep, d->grads[c], d->numel[c], COMM_F32, COMM_SUM,
				&d->ar_req[c]);
}

/* Finish the reduce-scatter in flight: add it to the shard's gradient and,
 * after the chunk's last backward of the step, start the replicas'
 * all-reduce. */
static int land_reduce(dp *d)
{
	int c = d->rs_chunk, rc;

	if (c == NONE)
		return 0;
	d->rs_chunk = NONE;
	rc = comm_wait(d->rs_req);
	d->rs_req = NULL;
	if (rc)
		return rc;
	d->ops->add_inplace(d->grads[c], d->rs_recv, d->numel[c]);
	return start_replicate(d, c);
}

static int reduce(dp *d, int c)
{
	int rc;

	if (d->n == 1)
		return start_replicate(d, c);
	if ((rc = land_reduce(d)))
		return rc;
	whole_to_shards(d, c, d->wgrad[c], d->rs_send);
	if ((rc = device_ready(d)))
		return rc;
	d->rs_chunk = c;
	return comm_ireduce_scatter(d->shard, d->rs_send, d->rs_recv, d->numel[c], COMM_F32,
				    COMM_SUM, &d->rs_req);
}

/* --- the hooks --- */

/* Point the model at chunk c's bf16 copy, cast from params[c] first
 * unless it is current (the model reads it only in the GEMMs' ranges, but
 * casting the whole chunk is one call and costs little more). */
static void point_bf16(dp *d, llama_model *m, int c)
{
	if (!d->wbf16[c])
		return;
	if (!d->bf16_current[c]) {
		d->ops->cast_bf16(d->wbf16[c], m->params[c], d->whole[c]);
		d->bf16_current[c] = true;
	}
	m->params_bf16[c] = d->wbf16[c];
}

static int hook_acquire(void *arg, llama_model *m, int c, llama_pass pass)
{
	dp *d = arg;
	int rc;

	if (d->n == 1) {
		m->params[c] = d->params[c];
		m->grads[c] = d->grads[c];
		point_bf16(d, m, c);
		return 0;
	}
	if ((rc = gather(d, c, pass)))
		return titan_err_prefix(rc, "fsdp: gathering chunk %d", c);
	m->params[c] = d->wparam[c];
	point_bf16(d, m, c);
	if (pass == LLAMA_PASS_BACKWARD && !d->grad_live[c]) {
		d->ops->zero(d->wgrad[c], d->whole[c] * sizeof(float));
		d->grad_live[c] = true;
	}
	m->grads[c] = pass == LLAMA_PASS_BACKWARD ? d->wgrad[c] : NULL;
	return 0;
}

static int hook_release(void *arg, llama_model *m, int c, llama_pass pass)
{
	dp *d = arg;
	bool keep;
	int rc;

	if (pass == LLAMA_PASS_BACKWARD) {
		d->backs[c]++;
		if ((rc = reduce(d, c)))
			return titan_err_prefix(rc, "fsdp: reducing chunk %d", c);
		if (d->n > 1) {
			d->gathered[c] = false;
			d->grad_live[c] = false;
			m->params[c] = m->grads[c] = NULL;
			m->params_bf16[c] = NULL;
		}
		return 0;
	}
	if (d->n == 1)
		return 0;
	/* After forward the head (and the embeddings it reads when tied) is
	 * needed again at once; layers as configured. */
	keep = pass == LLAMA_PASS_FORWARD &&
	       (c == d->L + 1 || (c == 0 && m->cfg.tie_embeddings) || !d->reshard);
	if (!keep) {
		d->gathered[c] = false;
		m->params[c] = NULL;
		m->params_bf16[c] = NULL;
	}
	return 0;
}

/* Tensor parallel: tp.c's hooks over the tp group, reached through this
 * layer's hooks (the model has one hooks table, whose arg is the dp). */
static int hook_tp_sum(void *arg, float *buf, size_t n)
{
	dp *d = arg;
	int rc = device_ready(d);

	if (rc)
		return rc;
	return d->tp_hooks.tp_sum(d->tp_hooks.arg, buf, n);
}

static int hook_tp_max(void *arg, float *buf, size_t n)
{
	dp *d = arg;
	int rc = device_ready(d);

	if (rc)
		return rc;
	return d->tp_hooks.tp_max(d->tp_hooks.arg, buf, n);
}

static int hook_tp_all_gather(void *arg, const float *send, float *recv, size_t n)
{
	dp *d = arg;
	int rc = device_ready(d);

	if (rc)
		return rc;
	return d->tp_hooks.tp_all_gather(d->tp_hooks.arg, send, recv, n);
}

static int hook_tp_reduce_scatter(void *arg, const float *send, float *recv, size_t n)
{
	dp *d = arg;
	int rc = device_ready(d);

	if (rc)
		return rc;
	return d->tp_hooks.tp_reduce_scatter(d->tp_hooks.arg, send, recv, n);
}

/* Pipeline parallel: activations go to the next stage and gradients to
 * the previous one, round the ranks (an interleaved rank's next stage
 * after the last rank's is rank 0's); sends are non-blocking (a stage may
 * send micro-batches ahead of its neighbour's receive), each remembered
 * with the activation set it was sent from; receives wait.  The tag keeps
 * activations and gradients of each micro-batch and stage apart. */
static int hook_pp_send(void *arg, const float *buf, size_t n, bool grad, int tag)
{
	dp *d = arg;
	int rc, size = comm_size(d->pp), peer = (comm_rank(d->pp) + (grad ? size - 1 : 1)) % size;

	if (d->npp_req == d->cap_pp_req) {
		int cap = d->cap_pp_req ? 2 * d->cap_pp_req : 16;
		comm_req **r = realloc(d->pp_req, (size_t)cap * sizeof *r);
		int *set = realloc(d->pp_req_set, (size_t)cap * sizeof *set);

		if (r)
			d->pp_req = r;
		if (set)
			d->pp_req_set = set;
		if (!r || !set)
			return titan_err_nomem();
		d->cap_pp_req = cap;
	}
	if ((rc = device_ready(d)))
		return rc;
	d->pp_req_set[d->npp_req] = d->m->set;
	return comm_isend(d->pp, buf, n, COMM_F32, peer, 2 * tag + grad,
			  &d->pp_req[d->npp_req++]);
}

static int hook_pp_recv(void *arg, float *buf, size_t n, bool grad, int tag)
{
	dp *d = arg;
	int size = comm_size(d->pp), peer = (comm_rank(d->pp) + (grad ? 1 : size - 1)) % size;
	int rc = device_ready(d);

	if (rc)
		return rc;
	return comm_recv(d->pp, buf, n, COMM_F32, peer, 2 * tag + grad);
}

/* Context parallel: one step of ring attention's ring, the send and the
 * receive both in flight so that no rank waits for its neighbour's
 * receive to start.  Even ranks post the send first, odd ranks the
 * receive: where a backend runs point-to-point operations one after the
 * other on one stream (NCCL), a receive posted first everywhere would wait
 * on a send queued behind the neighbour's own receive, round the ring. */
static int hook_cp_shift(void *arg, const float *send, float *recv, size_t n)
{
	dp *d = arg;
	int me = comm_rank(d->cp), size = comm_size(d->cp), rc, rc2;
	comm_req *rq = NULL, *sq = NULL;

	if ((rc = device_ready(d)))
		return rc;
	if (me % 2 == 0)
		rc = comm_isend(d->cp, send, n, COMM_F32, (me + 1) % size, 0, &sq);
	if (!rc)
		rc = comm_irecv(d->cp, recv, n, COMM_F32, (me + size - 1) % size, 0, &rq);
	if (!rc && me % 2)
		rc = comm_isend(d->cp, send, n, COMM_F32, (me + 1) % size, 0, &sq);
	rc2 = rq ? comm_wait(rq) : 0;
	if (sq) {
		int rc3 = comm_wait(sq);

		if (!rc2)
			rc2 = rc3;
	}
	return rc ? rc : rc2;
}

/* --- setup --- */

/* bf16 GEMMs: a copy of each buffer the model reads GEMM weights from,
 * shared as the buffers are (the layers' one gathered buffer when they
 * are freed after forward). */
static int alloc_bf16_copies(dp *d)
{
	const llama_config *cfg = &d->m->cfg;

	int first_layer = first_held_layer(d);

	for (int c = 0; c < d->nchunks; c++) {
		bool shared = d->n > 1 && is_layer(d, c) && d->reshard;
		int owner = shared ? first_layer : c;

		if (!holds(d, c) || !llama_chunk_has_gemm_weights(cfg, c))
			continue;
		if (owner != c)
			d->wbf16[c] = d->wbf16[owner];
		else if (!(d->wbf16[c] = dp_alloc_bytes(d, d->whole[c] * sizeof(kernel_bf16),
							 "bf16 weight copies")))
			return TITAN_ENOMEM;
	}
	return 0;
}

int dp_new(dp **out, llama_model *m, const dp_opts *o, mem_tracker *mem)
{
	dp *d;
	int rc, nc = m->nchunks;

	*out = NULL;
	if (m->tp > 1 && (!o->tp || comm_size(o->tp) != m->tp))
		return titan_err(TITAN_EUSAGE, "dp_new: a model of tp degree %d needs a tp "
				 "communicator of that size", m->tp);
	if (!(d = calloc(1, sizeof *d)))
		return titan_err_nomem();
	*d = (dp){ .m = m, .ops = m->ops, .mem = mem, .shard = o->shard, .rep = o->replicate,
		   .tp = o->tp, .pp = o->pp, .cp = o->cp,
		   .n = o->shard ? comm_size(o->shard) : 1,
		   .rank = o->shard ? comm_rank(o->shard) : 0,
		   .R = o->replicate ? comm_size(o->replicate) : 1,
		   .reshard = o->reshard_after_forward, .nchunks = nc, .L = m->cfg.n_layers,
		   .gather_chunk = NONE, .rs_chunk = NONE, .accum = 1 };
	d->whole = calloc(nc, sizeof *d->whole);
	d->numel = calloc(nc, sizeof *d->numel);
	d->first_piece = calloc(nc, sizeof *d->first_piece);
	d->npiece = calloc(nc, sizeof *d->npiece);
	d->params = calloc(nc, sizeof *d->params);
	d->grads = calloc(nc, sizeof *d->grads);
	d->wparam = calloc(nc, sizeof *d->wparam);
	d->wgrad = calloc(nc, sizeof *d->wgrad);
	d->gathered = calloc(nc, sizeof *d->gathered);
	d->grad_live = calloc(nc, sizeof *d->grad_live);
	d->ar_req = calloc(nc, sizeof *d->ar_req);
	d->backs = calloc(nc, sizeof *d->backs);
	d->wbf16 = calloc(nc, sizeof *d->wbf16);
	d->bf16_current = calloc(nc, sizeof *d->bf16_current);
	if (!d->whole || !d->numel || !d->first_piece || !d->npiece || !d->params ||
	    !d->grads || !d->wparam || !d->wgrad || !d->gathered || !d->grad_live || !d->backs ||
	    !d->ar_req || !d->wbf16 || !d->bf16_current) {
		rc = titan_err_nomem();
		goto fail;
	}
	for (int c = 0; c < nc; c++)
		d->whole[c] = 0;
	for (int c = 0; c < nc; c++)
		if (holds(d, c))
			d->whole[c] = m->chunk_numel[c];
	if ((rc = make_pieces(d)))
		goto fail;
	rc = TITAN_ENOMEM;
	for (int c = 0; c < nc; c++) {
		if (!(d->params[c] = dp_alloc(d, d->numel[c], "model parameters")) ||
		    !(d->grads[c] = dp_alloc(d, d->numel[c], "model gradients")))
			goto fail;
	}
	if (d->n > 1) {
		/* the stage's layers freed after forward share one gathered
		 * buffer; all of them share one gradient buffer */
		int first_layer = first_held_layer(d);

		for (int c = 0; c < nc; c++) {
			bool shared = is_layer(d, c) && c > first_layer;

			if (!holds(d, c))
				continue;
			if (shared && d->reshard)
				d->wparam[c] = d->wparam[first_layer];
			else if (!(d->wparam[c] = dp_alloc(d, d->whole[c],
							   "fsdp gathered parameters")))
				goto fail;
			if (shared)
				d->wgrad[c] = d->wgrad[first_layer];
			else if (!(d->wgrad[c] = dp_alloc(d, d->whole[c],
							  "fsdp unsharded gradients")))
				goto fail;
		}
		if (!(d->gather_stage = dp_alloc(d, d->max_shard * d->n,
						 "fsdp all-gather buffer")) ||
		    !(d->rs_send = dp_alloc(d, d->max_shard * d->n,
					    "fsdp reduce-scatter buffer")) ||
		    !(d->rs_recv = dp_alloc(d, d->max_shard, "fsdp reduce-scatter buffer")))
			goto fail;
	}
	if (m->matmul_bf16 && (rc = alloc_bf16_copies(d)))
		goto fail;
	d->hooks = (llama_hooks){ .arg = d, .acquire = hook_acquire, .release = hook_release,
				  .tp_sum = hook_tp_sum, .tp_max = hook_tp_max,
				  .tp_all_gather = hook_tp_all_gather,
				  .tp_reduce_scatter = hook_tp_reduce_scatter,
				  .pp_send = hook_pp_send, .pp_recv = hook_pp_recv,
				  .cp_shift = hook_cp_shift };
	if (d->tp)
		tp_hooks_init(&d->tp_hooks, d->tp);
	m->hooks = &d->hooks;
	*out = d;
	return 0;
fail:
	dp_free(d);
	return rc;
}

void dp_free(dp *d)
{
	if (!d)
		return;
	/* operations in flight finish first: their buffers are freed next */
	if (d->gather_req)
		comm_wait(d->gather_req);
	if (d->rs_req)
		comm_wait(d->rs_req);
	for (int c = 0; d->ar_req && c < d->nchunks; c++)
		if (d->ar_req[c])
			comm_wait(d->ar_req[c]);
	dp_pp_flush(d, -1);
	free(d->pp_req);
	free(d->pp_req_set);
	if (d->m && d->m->hooks == &d->hooks) {
		d->m->hooks = NULL;
		for (int c = 0; c < d->nchunks; c++) {
			d->m->params[c] = d->m->grads[c] = NULL;
			d->m->params_bf16[c] = NULL;
		}
	}
	for (int i = 0; i < d->nallocs; i++)
		mem_free(d->mem, d->allocs[i], d->alloc_bytes[i]);
	free(d->allocs);
	free(d->alloc_bytes);
	free(d->whole);
	free(d->numel);
	free(d->first_piece);
	free(d->npiece);
	free(d->pieces);
	free(d->chunk_off);
	free(d->trows);
	free(d->params);
	free(d->grads);
	free(d->wparam);
	free(d->wgrad);
	free(d->gathered);
	free(d->grad_live);
	free(d->ar_req);
	free(d->backs);
	free(d->wbf16);
	free(d->bf16_current);
	free(d);
}

int dp_init_weights(dp *d, uint64_t seed)
{
	const llama_model *m = d->m;
	int rc;

	for (int c = 0; c < d->nchunks; c++) {
		if (!holds(d, c))
			continue;
		if (d->n == 1) {
			if ((rc = llama_init_chunk_to(d->ops, &m->cfg, seed, c, m->tp, m->tp_rank,
						      d->params[c])))
				return rc;
			continue;
		}
		/* the whole chunk, then this rank's pieces of it */
		if ((rc = llama_init_chunk_to(d->ops, &m->cfg, seed, c, m->tp, m->tp_rank,
					      d->wparam[c])))
			return rc;
		whole_to_own_shard(d, c, d->wparam[c], d->params[c]);
	}
	dp_params_changed(d, false);
	return 0;
}

int dp_nchunks(const dp *d)
{
	return d->nchunks;
}

const size_t *dp_shard_numel(const dp *d)
{
	return d->numel;
}

float **dp_params(dp *d)
{
	return d->params;
}

float **dp_grads(dp *d)
{
	return d->grads;
}

const dp_piece *dp_pieces(const dp *d, int *n)
{
	*n = d->npieces;
	return d->pieces;
}

void dp_begin_step(dp *d, int accum)
{
	d->accum = accum;
	memset(d->backs, 0, (size_t)d->nchunks * sizeof *d->backs);
	for (int c = 0; c < d->nchunks; c++)
		d->ops->zero(d->grads[c], d->numel[c] * sizeof(float));
}

kernel_bf16 **dp_shard_bf16(dp *d)
{
	return d->n == 1 && d->m->matmul_bf16 ? d->wbf16 : NULL;
}

void dp_params_changed(dp *d, bool bf16_written)
{
	bool kept = bf16_written && dp_shard_bf16(d);

	for (int c = 0; c < d->nchunks; c++) {
		d->gathered[c] = false;
		if (!kept)
			d->bf16_current[c] = false;
	}
}

int dp_end_backward(dp *d)
{
	int rc = land_reduce(d);

	return rc ? titan_err_prefix(rc, "fsdp: reducing gradients") : 0;
}

int dp_pp_flush(dp *d, int set)
{
	int rc = 0, kept = 0;

	for (int i = 0; i < d->npp_req; i++) {
		int r;

		if (set >= 0 && d->pp_req_set[i] != set) {
			d->pp_req[kept] = d->pp_req[i];
			d->pp_req_set[kept++] = d->pp_req_set[i];
			continue;
		}
		r = comm_wait(d->pp_req[i]);
		if (!rc)
			rc = r;
	}
	d->npp_req = kept;
	return rc ? titan_err_prefix(rc, "pipeline: sending to a neighbour stage") : 0;
}

int dp_finish_grads(dp *d)
{
	int rc = land_reduce(d);

	for (int c = 0; c < d->nchunks; c++) {
		int r = d->ar_req[c] ? comm_wait(d->ar_req[c]) : 0;

		d->ar_req[c] = NULL;
		if (!rc)
			rc = r;
	}
	/* Under sequence parallel each tp rank saw its rows only: the norms'
	 * gradients (whole on every tp rank) are partial sums. */
	for (int i = 0; !rc && d->m->sp && d->m->tp > 1 && i < d->npieces; i++) {
		const dp_piece *p = &d->pieces[i];

		if (p->tp_whole && p->rows && !(rc = device_ready(d)))
			rc = comm_all_reduce(d->tp, d->grads[p->chunk] + p->offset,
					     (size_t)(p->rows * p->cols), COMM_F32, COMM_SUM);
	}
	return rc ? titan_err_prefix(rc, "data parallel: reducing gradients") : 0;
}

double dp_comm_seconds(dp *d)
{
	double t = (d->shard ? comm_busy_seconds(d->shard) : 0) +
		   (d->rep ? comm_busy_seconds(d->rep) : 0) +
		   (d->tp ? comm_busy_seconds(d->tp) : 0) +
		   (d->pp ? comm_busy_seconds(d->pp) : 0) +
		   (d->cp ? comm_busy_seconds(d->cp) : 0);
	double delta = t - d->comm_seen;

	d->comm_seen = t;
	return delta;
}
