/* memmodel.c - the analytical memory model (memmodel.h).
 *
 * Sizes follow the code that allocates: llama_new (parameters and
 * gradients, one buffer per chunk), adamw_new (two moments per chunk) and
 * llama_plan's carve (one allocation, every buffer rounded up to 64 bytes),
 * and under FSDP dp_new's shards, gathered chunks and staging buffers
 * (lib/dist/dp.c).  Where the design has no code yet (bf16, interleaved
 * pipelines), the same buffers are cut the way lib/model/shard.h cuts
 * tensors. */
#include "core/base.h"

#include <sched.h>

#include "attention_flash.h"
#include "attention_tiles.h"
#include "core/cache_alloc.h"
#include "kernels.h"
#include "dist/pp.h"
#include "mem/memmodel.h"

const mem_row_info mem_row_infos[MEM_NROWS] = {
	[MEM_ROW_PARAMS] = { "params", "parameters", true, false },
	[MEM_ROW_MASTER] = { "master_weights", "fp32 master weights", false, false },
	[MEM_ROW_BF16_WEIGHTS] = { "bf16_weights", "bf16 GEMM weight copies", true, false },
	[MEM_ROW_GRADS] = { "grads", "gradients", true, false },
	[MEM_ROW_OPTIM] = { "optimizer", "AdamW moments", true, false },
	[MEM_ROW_ACTS] = { "activations", "activations", true, false },
	[MEM_ROW_LOGITS] = { "logits_loss", "logits and loss", true, false },
	[MEM_ROW_SCRATCH] = { "backward_scratch", "backward scratch", true, false },
	[MEM_ROW_ATTN] = { "attention_workspace", "attention workspace", false, false },
	[MEM_ROW_OP_SCRATCH] = { "op_scratch", "op scratch (largest op)", false, false },
	[MEM_ROW_ALLGATHER] = { "fsdp_all_gather", "FSDP gathered params + prefetch", true, false },
	[MEM_ROW_REDUCE] = { "fsdp_reduce_scatter", "FSDP unsharded grads + reduce", true, false },
	[MEM_ROW_TP] = { "tp_sequence_parallel", "TP sequence-parallel gather", false, false },
	[MEM_ROW_CP] = { "cp_ring", "CP ring attention K/V", true, false },
	[MEM_ROW_PP] = { "pp_send_recv", "PP send/recv", false, false },
	[MEM_ROW_LOADER] = { "loader", "loader batches", false, true },
	[MEM_ROW_CKPT] = { "checkpoint_staging", "async checkpoint staging", false, true },
};

/* What llama_plan's take() charges for n elements of size sz. */
static size_t r64(size_t n, size_t sz)
{
	return (n * sz + 63) & ~(size_t)63;
}

static size_t ceil_div(size_t a, size_t b)
{
	return (a + b - 1) / b;
}

/* What one rank cuts from the model: tp-local sizes, and the FSDP degree
 * the tp-local pieces are split over. */
struct cut {
	size_t C, H, KV, D, q, kv, F, V;  /* H, KV, q, kv, F, V: tp-local */
	size_t fsdp;                       /* dp_shard * cp */
};

static struct cut cut_of(const mem_model_opts *o)
{
	const llama_config *c = &o->model;
	size_t tp = (size_t)o->par.tp, D = (size_t)(c->dim / c->n_heads);
	struct cut k = {
		.C = (size_t)c->dim, .H = (size_t)c->n_heads / tp,
		.KV = (size_t)c->n_kv_heads / tp, .D = D,
		.F = (size_t)c->ffn_hidden / tp, .V = (size_t)c->vocab_size / tp,
		.fsdp = (size_t)o->par.dp_shard * (size_t)o->par.cp,
	};

	k.q = k.H * D;
	k.kv = k.KV * D;
	return k;
}

/* The largest FSDP piece of a [rows, cols] tensor: torch.chunk's
 * ceil(rows / n) rows, which rank 0 of the shard group holds. */
static size_t piece(const struct cut *k, size_t rows, size_t cols)
{
	return ceil_div(rows, k->fsdp) * cols;
}

/* One block: its tp-local (gathered) numel and its largest shard. */
static void block_numel(const struct cut *k, size_t *whole, size_t *shard)
{
	size_t C = k->C;

	*whole = 2 * k->q * C + 2 * k->kv * C + 3 * k->F * C + 2 * C;
	*shard = piece(k, k->q, C) + 2 * piece(k, k->kv, C) + piece(k, C, k->q) +
		 2 * piece(k, k->F, C) + piece(k, C, k->F) + 2 * piece(k, C, 1);
}

/* The chunks a stage holds: their largest shards summed and the largest
 * shard; the gathered (tp-local) size of one block, of the embeddings
 * (stage 0, else 0) and of the head (last stage, else 0). */
struct stage_chunks {
	size_t shard_sum, max_shard, block, emb, head;
};

static void stage_chunks(const mem_model_opts *o, const struct cut *k, int s, int layers,
			 struct stage_chunks *sc)
{
	const llama_config *c = &o->model;
	size_t bs;

	block_numel(k, &sc->block, &bs);
	sc->shard_sum = (size_t)layers * bs;
	sc->max_shard = layers ? bs : 0;
	sc->emb = sc->head = 0;
	if (s == 0) {
		size_t e = piece(k, k->V, k->C);

		sc->shard_sum += e;
		sc->max_shard = TITAN_MAX(sc->max_shard, e);
		sc->emb = k->V * k->C;
	}
	if (s == o->par.pp - 1) {
		size_t h = piece(k, k->C, 1) + (c->tie_embeddings ? 0 : piece(k, k->V, k->C));

		sc->shard_sum += h;
		sc->max_shard = TITAN_MAX(sc->max_shard, h);
		sc->head = k->C + (c->tie_embeddings ? 0 : k->V * k->C);
	}
}

/* Activation bytes of one microbatch of mb sequences, split the way the
 * table shows them; the formulas are llama_plan's carve with tp-local
 * widths, sequence-parallel rows and the activation element size es. */
struct acts {
	size_t held;       /* per microbatch in flight: residuals, kept layer sets */
	size_t shared;     /* once: the recomputed layers' shared set, tables, ids */
	size_t final;      /* per microbatch in flight on the last stage: xf, rstdf */
	size_t logits;     /* logits and losses (last stage) */
	size_t scratch;    /* dresid, dx, gradient scratch */
	size_t ring;       /* context parallel: ring attention's blocks */
};

/* Whether the trainer's bf16 GEMMs shape the buffers: the trainer's fp32
 * precision with training.matmul_dtype=bfloat16 (--precision bf16 is a
 * plan of its own, whose parameters are bf16 already). */
static bool gemm16_of(const mem_model_opts *o)
{
	return o->matmul_bf16 && o->prec != MEM_PREC_BF16;
}

/* Stages a pp rank runs. */
static int stages_of(const mem_model_opts *o)
{
	return o->par.pp > 1 && o->pp_schedule == MEM_PP_INTERLEAVED && o->pp_virtual > 1
		       ? o->pp_virtual : 1;
}

/* The residual stream's rows a tp rank holds of N: its share under
 * sequence parallel, else all of them. */
static size_t rows_here(const mem_model_opts *o, size_t N)
{
	size_t tp = (size_t)o->par.tp;

	return o->sequence_parallel && tp > 1 ? ceil_div(N, tp) : N;
}

/* One activation set of pp rank s (llama_plan_sets' carve): every layer
 * of its stages, one residual gradient per stage, and its own tables and
 * scratch. */
static struct acts acts_of(const mem_model_opts *o, const struct cut *k, int s, int mb,
			   llama_ac_mode ac)
{
	int v = stages_of(o), per = o->model.n_layers / (o->par.pp * v);
	bool last = s == o->par.pp - 1;
	size_t es = o->prec == MEM_PREC_BF16 ? 2 : 4;
	bool gemm16 = gemm16_of(o);
	size_t T = (size_t)o->seq_len, N = (size_t)mb * T / (size_t)o->par.cp;
	size_t Ns = rows_here(o, N);
	size_t set, shared, resid = r64(Ns * k->C, es);
	int kept = 0, recomputed = 0;
	struct acts a = { 0 };

	/* xn1, xn2 are the matmuls' inputs: gathered under sequence
	 * parallel.  With bf16 GEMMs (the trainer's fp32 otherwise) the
	 * inputs only GEMMs read, xn1, xn2 and g, are kept in bf16 alone,
	 * and the attention's output in both (its backward reads it) */
	set = 2 * r64(N * k->C, es) + 2 * r64(Ns, 4) + 2 * r64(N * k->q, es) +
	      2 * r64(N * k->kv, es) + r64(N * k->H, 4) + r64(Ns * k->C, es) +
	      3 * r64(N * k->F, es);
	if (gemm16)
		set = 2 * r64(N * k->C, 2) + 2 * r64(Ns, 4) + 2 * r64(N * k->q, 4) +
		      r64(N * k->q, 2) + 2 * r64(N * k->kv, 4) + r64(N * k->H, 4) +
		      r64(Ns * k->C, 4) + 2 * r64(N * k->F, 4) + r64(N * k->F, 2);
	for (int j = 0; j < v; j++)
		for (int l = (j * o->par.pp + s) * per; l < (j * o->par.pp + s + 1) * per; l++) {
			bool re = ac == LLAMA_AC_FULL ||
				  (ac == LLAMA_AC_SELECTIVE && l % o->ac_every == o->ac_every - 1);

			if (re)
				recomputed++;
			else
				kept++;
		}
	a.held = (size_t)v * (per + 1) * resid + (size_t)kept * set;
	/* RoPE tables of the whole row; positions, ids, labels; a key range
	 * per query and ring step */
	a.shared = (recomputed ? set : 0) + 2 * r64(T * (k->D / 2), 4) + 3 * r64(N, 4) +
		   2 * r64((size_t)o->par.cp * N, 4);
	/* tensor parallel: each token's id in the rank's vocabulary slice */
	if (o->par.tp > 1)
		a.shared += r64(N, 4);
	if (last) {
		a.final = r64(N * k->C, gemm16 ? 2 : es) + r64(Ns, 4);
		a.logits = r64(N * k->V, 4) + r64(N, 4);
	}
	shared = TITAN_MAX(3 * N * k->F, 2 * N * k->q + 2 * N * k->kv);
	/* bf16 GEMMs: forward makes their inputs there, [N, C] ones too */
	if (gemm16)
		shared = TITAN_MAX(shared, N * k->C);
	a.scratch = (size_t)v * r64(Ns * k->C, es) + r64(N * k->C, es) + r64(shared, es);
	/* sequence parallel: a gathered gradient and a shard of one */
	if (Ns < N)
		a.scratch += r64(N * k->C, es) + r64(Ns * k->C, es);
	/* forward: the block held, the one arriving, a partial output and
	 * its lse; backward: two blocks with their gradients, a block's dq,
	 * dk, dv */
	if (o->par.cp > 1)
		a.ring = r64(TITAN_MAX(4 * N * k->kv + N * k->q + N * k->H,
				       10 * N * k->kv + N * k->q), es);
	return a;
}

/* The CPU attention kernel's tiles, one set per thread (kernels/cpu). */
static size_t attention_tiles(size_t D)
{
	const size_t BQ = 64, BK = 64;
	size_t dpad = (D + 15) & ~(size_t)15;
	size_t n = 3 * BQ * dpad + 2 * BK * dpad + 4 * D * BK + 2 * BQ * BK;

	return r64(n, sizeof(float));
}

/* A GPU op's own scratch from the backend's caching allocator, each block
 * rounded as the cache rounds it; ops run one at a time and give theirs
 * back, so only the largest op's counts.  That is the attention's: the
 * fused kernels' bf16 copies and tables (attention_flash.h) where they
 * run, else the tiled attention's scratch (bf16 copies in 2 bytes a value)
 * and pointer table, forward or backward, by the rule the schedule
 * allocates by (attention_tiles.h); or
 * with bf16 GEMMs a backward GEMM's bf16 copy of dout [n,OC] for a chunk of
 * n rows (kernels_bf16_chunk_rows; the weight and the input come in bf16,
 * kept); the largest is the head's.  RMSNorm's weight gradient takes a
 * double per column and chunk of its rows (kernels_rmsnorm_dweight_chunks),
 * this rank's rows under sequence parallel. */
static size_t gpu_op_scratch(const mem_model_opts *o, const struct cut *k, int mb, size_t N,
			     bool last)
{
	int T = o->seq_len / o->par.cp;
	attention_tiles_shape sh = {mb, T, T, (int)k->H, (int)k->KV, (int)k->D, 0,
				    o->matmul_bf16, 0, 0};
	size_t Ns = rows_here(o, N);
	size_t worst = cache_alloc_round((size_t)kernels_rmsnorm_dweight_chunks((int)Ns) *
					 k->C * sizeof(double));

	for (int backward = 0; backward < 2; backward++) {
		size_t scratch, pointers = 0;

		if (sh.bf16 && attention_flash_fits(sh.D))
			scratch = attention_flash_scratch(mb, T, T, sh.H, sh.KV, sh.D, backward);
		else
			attention_tiles_scratch(&sh, backward, 2, &scratch, &pointers);
		worst = TITAN_MAX(worst, cache_alloc_round(scratch) +
					 (pointers ? cache_alloc_round(pointers) : 0));
	}
	if (o->matmul_bf16) {
		/* OC of wq, wk and wv, wo and w2, w1 and w3, the head */
		const size_t outs[] = { k->q, k->kv, k->C, k->F, last ? k->V : 0 };

		for (size_t i = 0; i < sizeof outs / sizeof *outs; i++) {
			size_t n = (size_t)kernels_bf16_chunk_rows((int)N, (int)outs[i]);

			if (outs[i])
				worst = TITAN_MAX(worst, cache_alloc_round(2 * n * outs[i]));
		}
	}
	return worst;
}

/* Microbatch count and size under pp (1 and the whole batch without). */
static void microbatches(const mem_model_opts *o, int *n, int *mb)
{
	*n = 1;
	if (o->par.pp > 1)
		*n = o->pp_microbatches > 0 ? o->pp_microbatches : o->batch;
	*mb = o->batch / *n;
}

static pp_schedule_kind schedule_kind(mem_pp_schedule s)
{
	return s == MEM_PP_GPIPE ? PP_GPIPE : s == MEM_PP_INTERLEAVED ? PP_INTERLEAVED_1F1B
								      : PP_1F1B;
}

/* Activation sets pp rank s holds: one per micro-batch in flight, as the
 * trainer's schedule table assigns them (1 without pp).  The table is
 * small; if it cannot be allocated, every micro-batch is counted. */
static int in_flight(const mem_model_opts *o, int s, int nmb)
{
	int v = stages_of(o), sets;
	pp_op *ops;

	if (o->par.pp == 1)
		return 1;
	ops = malloc((size_t)2 * nmb * v * sizeof *ops);
	if (!ops)
		return nmb;
	sets = pp_schedule(schedule_kind(o->pp_schedule), o->par.pp, s, nmb, v, ops);
	free(ops);
	return sets;
}

static void estimate_stage(const mem_model_opts *o, int s, mem_stage *st)
{
	const struct cut k = cut_of(o);
	int pp = o->par.pp, layers = o->model.n_layers / pp, nmb, mb;
	bool last = s == pp - 1, bf16 = o->prec == MEM_PREC_BF16;
	size_t es = bf16 ? 2 : 4, S, N;
	struct stage_chunks sc;
	struct acts a, none;
	size_t fl;

	memset(st, 0, sizeof *st);
	microbatches(o, &nmb, &mb);
	fl = (size_t)in_flight(o, s, nmb);
	stage_chunks(o, &k, s, layers, &sc);
	S = sc.shard_sum;
	N = (size_t)mb * (size_t)o->seq_len / (size_t)o->par.cp;

	st->params = S;
	st->layers = layers;
	st->micro_batch = mb;
	st->in_flight = (int)fl;

	/* FSDP2's policy: the shard is fp32 and is the master copy; without
	 * sharding, a bf16 copy of it is what the model computes with */
	if (bf16) {
		st->row[MEM_ROW_MASTER] = S * 4;
		st->row[MEM_ROW_PARAMS] = k.fsdp > 1 ? 0 : S * 2;
	} else {
		st->row[MEM_ROW_PARAMS] = S * 4;
	}
	st->row[MEM_ROW_GRADS] = S * 4;
	st->row[MEM_ROW_OPTIM] = S * 8;
	/* dp_new: a bf16 copy of each buffer the GEMMs read weights from,
	 * the chunks themselves or, under FSDP, the gathered buffers (the
	 * layers' one when freed after forward); the embeddings only when
	 * tied (then the head's norm alone is no GEMM's) */
	if (gemm16_of(o)) {
		size_t layer_bufs = k.fsdp > 1 && o->reshard_after_forward ? 1 : (size_t)layers;
		bool tied = o->model.tie_embeddings;

		st->row[MEM_ROW_BF16_WEIGHTS] = 2 * (layer_bufs * sc.block + (tied ? sc.emb : 0) +
						     (tied ? 0 : sc.head));
	}

	/* every activation set is a whole carve */
	a = acts_of(o, &k, s, mb, o->ac);
	none = acts_of(o, &k, s, mb, LLAMA_AC_NONE);
	st->row[MEM_ROW_ACTS] = fl * (a.held + a.final + a.shared);
	st->row[MEM_ROW_LOGITS] = fl * a.logits;
	st->row[MEM_ROW_SCRATCH] = fl * a.scratch;
	if (o->par.tp > 1) {
		mem_model_opts flip = *o;
		struct acts f;

		flip.sequence_parallel = !o->sequence_parallel;
		f = acts_of(&flip, &k, s, mb, o->ac);
		st->act_other_sp = fl * (f.held + f.final + f.logits + f.shared + f.scratch +
					 f.ring);
	}
	st->act_none = fl * (none.held + none.final + none.logits + none.shared + none.scratch +
			     none.ring);
	if (!o->cuda)
		st->row[MEM_ROW_ATTN] = (size_t)TITAN_MAX(o->threads, 1) * attention_tiles(k.D);
	else
		st->row[MEM_ROW_OP_SCRATCH] = gpu_op_scratch(o, &k, mb, N, last);

	if (k.fsdp > 1) {
		/* dp_new: whole embeddings, head and layer(s) to compute with,
		 * and the all-gather's receive buffer (the prefetched chunk);
		 * whole gradients of the embeddings, the head and one layer,
		 * and the reduce-scatter's send and receive buffers (fp32) */
		size_t n = k.fsdp, layer_bufs = o->reshard_after_forward ? 1 : (size_t)layers;

		st->row[MEM_ROW_ALLGATHER] = (sc.emb + sc.head + layer_bufs * sc.block +
					      n * sc.max_shard) * es;
		st->row[MEM_ROW_REDUCE] = (sc.emb + sc.head + sc.block + (n + 1) * sc.max_shard) * 4;
	}
	if (o->par.tp > 1 && o->sequence_parallel)
		st->row[MEM_ROW_TP] = 2 * N * k.C * es;
	st->row[MEM_ROW_CP] = fl * a.ring;
	if (pp > 1)
		st->row[MEM_ROW_PP] = (size_t)((s > 0) + !last) * (size_t)mb *
				      (size_t)o->seq_len / (size_t)o->par.cp * k.C * es;
	st->row[MEM_ROW_LOADER] = 2 * (r64((size_t)o->batch * o->seq_len, 4) * 2 +
				       (size_t)o->batch * 16) + ((size_t)o->seq_len + 1) * 4;
	if (o->async_checkpoint)
		st->row[MEM_ROW_CKPT] = S * 4 * 3;

	for (int i = 0; i < MEM_NROWS; i++) {
		const mem_row_info *ri = &mem_row_infos[i];

		/* what no trainer allocates yet is the design's, not a
		 * measurement's */
		st->model_only[i] = bf16 || (pp > 1 && i == MEM_ROW_PP);
		if (!(o->cuda && ri->host))
			st->total += st->row[i];
		if (ri->tracked)
			st->tracked += st->row[i];
	}
}

int mem_model_check(const mem_model_opts *o, int world_size)
{
	const par_layout *p = &o->par;
	int v = o->pp_schedule == MEM_PP_INTERLEAVED && o->pp_virtual > 0 ? o->pp_virtual : 1;
	int nmb, mb, rc;

	/* degrees, tp and pp against the model, the world size */
	if ((rc = par_layout_check(p, &o->model, world_size)))
		return rc;
	if ((rc = par_check_seq_len(o->seq_len, p->cp)))
		return rc;
	if (v > 1 && o->model.n_layers % (p->pp * v))
		return titan_err(TITAN_EUSAGE, "pp=%d x %d virtual stages does not divide "
				 "model.n_layers=%d", p->pp, v, o->model.n_layers);
	if (p->tp > 1 && o->sequence_parallel && (o->seq_len / p->cp) % p->tp)
		return titan_err(TITAN_EUSAGE, "sequence parallel: tp=%d does not divide the "
				 "rank's sequence training.seq_len / cp = %d", p->tp,
				 o->seq_len / p->cp);
	if (o->batch < 1 || o->seq_len < 1)
		return titan_err(TITAN_EUSAGE, "batch shape %d x %d: both must be positive",
				 o->batch, o->seq_len);
	microbatches(o, &nmb, &mb);
	if (nmb < 1 || o->batch % nmb)
		return titan_err(TITAN_EUSAGE, "pp microbatches=%d does not divide "
				 "training.local_batch_size=%d", nmb, o->batch);
	if (p->pp > 1 && (rc = pp_check(schedule_kind(o->pp_schedule), p->pp, nmb, v)))
		return rc;
	if (o->ac == LLAMA_AC_SELECTIVE && o->ac_every < 1)
		return titan_err(TITAN_EUSAGE, "activation_checkpoint.selective_every: %d must "
				 "be at least 1", o->ac_every);
	return 0;
}

static int cpu_threads(const train_config *c)
{
	const char *env = getenv("OMP_NUM_THREADS");
	cpu_set_t set;

	if (c->training.threads > 0)
		return c->training.threads;
	if (env && atoi(env) > 0)
		return atoi(env);
	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	return 1;
}

int mem_model_from_config(mem_model_opts *o, const train_config *c, int world_size)
{
	par_layout *p = &o->par;
	int rc;

	memset(o, 0, sizeof *o);
	o->model = c->model;
	o->batch = c->training.local_batch_size;
	o->seq_len = c->training.seq_len;
	o->ac = c->activation_checkpoint.mode;
	o->ac_every = c->activation_checkpoint.selective_every;
	o->cuda = c->training.device && !strcmp(c->training.device, "cuda");
	o->matmul_bf16 = c->training.matmul_dtype == MATMUL_BF16;
	/* the trainer computes in fp32 on every device in this version;
	 * bf16 is titan-mem's --precision, a plan ahead of the trainer */
	o->prec = MEM_PREC_FP32;
	o->sequence_parallel = c->parallelism.sequence_parallel;
	/* the trainer's pipeline: its schedule, stages a rank and
	 * micro-batches (pipeline_parallel_microbatch_size sequences each) */
	o->pp_schedule = c->parallelism.pipeline_parallel_schedule == PP_GPIPE ? MEM_PP_GPIPE
			 : c->parallelism.pipeline_parallel_schedule == PP_INTERLEAVED_1F1B
				 ? MEM_PP_INTERLEAVED : MEM_PP_1F1B;
	if (c->parallelism.pipeline_parallel_microbatch_size > 0 &&
	    o->batch % c->parallelism.pipeline_parallel_microbatch_size == 0)
		o->pp_microbatches = o->batch / c->parallelism.pipeline_parallel_microbatch_size;
	o->async_checkpoint = c->checkpoint.enable && c->checkpoint.async;
	o->threads = o->cuda ? 0 : cpu_threads(c);
	/* torchtitan's default: reshard after forward, except under pp, where
	 * every microbatch's backward would gather the block again */
	o->reshard_after_forward = config_reshard_after_forward(c);
	if ((rc = config_layout(c, world_size, p)))
		return rc;
	o->pp_virtual = p->pp_stages;
	return mem_model_check(o, world_size);
}

int mem_model_estimate(const mem_model_opts *o, mem_model_report *r)
{
	int rc;

	memset(r, 0, sizeof *r);
	if ((rc = mem_model_check(o, 0)))
		return rc;
	r->nstages = o->par.pp;
	r->stage = calloc((size_t)r->nstages, sizeof *r->stage);
	if (!r->stage)
		return titan_err_nomem();
	for (int s = 0; s < r->nstages; s++) {
		estimate_stage(o, s, &r->stage[s]);
		if (r->stage[s].total > r->stage[r->worst].total)
			r->worst = s;
	}
	r->total = r->stage[r->worst].total;
	return 0;
}

void mem_model_report_free(mem_model_report *r)
{
	free(r->stage);
	r->stage = NULL;
	r->nstages = 0;
}

/* Worst stage's total for a batch; SIZE_MAX when the shape is impossible. */
static size_t total_for(const mem_model_opts *o, int batch)
{
	mem_model_opts b = *o;
	size_t worst = 0;
	int nmb, mb;

	b.batch = batch;
	microbatches(&b, &nmb, &mb);
	if (nmb < 1 || batch % nmb)
		return SIZE_MAX;
	for (int s = 0; s < b.par.pp; s++) {
		mem_stage st;

		estimate_stage(&b, s, &st);
		worst = TITAN_MAX(worst, st.total);
	}
	return worst;
}

int mem_model_max_batch(const mem_model_opts *o, size_t device_bytes, int *batch)
{
	int step = o->par.pp > 1 && o->pp_microbatches > 0 ? o->pp_microbatches : 1;
	long lo = 0, hi = step, cap = 1L << 24;
	bool capped = false;
	int rc;

	*batch = 0;
	if ((rc = mem_model_check(o, 0)))
		return rc;
	/* the CPU kernels index one microbatch's logits with an int */
	if (!o->cuda) {
		int64_t per = (int64_t)o->seq_len / o->par.cp *
			      TITAN_MAX(o->model.vocab_size / o->par.tp,
					o->model.ffn_hidden / o->par.tp);

		long most = (long)(INT_MAX / TITAN_MAX(per, 1)) * (long)step;

		capped = most < cap;
		cap = TITAN_MIN(cap, most);
	}
	cap = cap / step * step;
	/* totals grow with the batch: double, then bisect on multiples of step */
	while (hi <= cap && total_for(o, (int)hi) <= device_bytes) {
		lo = hi;
		hi *= 2;
	}
	/* under pp with fixed microbatches, a larger batch is more
	 * microbatches, not more memory */
	if (hi > cap && !capped) {
		*batch = -1;
		return 0;
	}
	hi = TITAN_MIN(hi, cap + step);
	while (hi - lo > step) {
		long mid = lo + (hi - lo) / 2 / step * step;

		if (total_for(o, (int)mid) <= device_bytes)
			lo = mid;
		else
			hi = mid;
	}
	*batch = (int)lo;
	return 0;
}

int mem_model_predict_tracked(const train_config *c, int world_size, size_t *bytes)
{
	mem_model_opts o;
	mem_model_report r;
	int rc;

	*bytes = 0;
	if ((rc = mem_model_from_config(&o, c, world_size)))
		return rc;
	if ((rc = mem_model_estimate(&o, &r)))
		return rc;
	*bytes = r.stage[r.worst].tracked;
	mem_model_report_free(&r);
	return 0;
}

int mem_model_plan_bytes(const train_config *c, llama_ac_mode ac, size_t *bytes)
{
	mem_model_opts o;
	mem_model_report r;
	const mem_stage *st;
	int rc;

	*bytes = 0;
	if ((rc = mem_model_from_config(&o, c, 0)))
		return rc;
	o.ac = ac;
	if ((rc = mem_model_estimate(&o, &r)))
		return rc;
	st = &r.stage[r.worst];
	*bytes = st->row[MEM_ROW_ACTS] + st->row[MEM_ROW_LOGITS] + st->row[MEM_ROW_SCRATCH];
	mem_model_report_free(&r);
	return 0;
}
