/* loop.c - the training loop of one rank (loop.h). */
#include "core/base.h"
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <sys/stat.h>
#include "ckpt/ckpt.h"
#include "ckpt/reshard.h"
#include "core/file.h"
#include "core/json.h"
#include "core/mem.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "dist/dp.h"
#include "dist/mesh.h"
#include "dist/pp.h"
#include "mem/memmodel.h"
#include "model/llama.h"
#include "tok/tok.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "train/loop.h"

typedef struct run {
	const train_config *cfg;
	titan_log *log;
	comm *world;
	comm *ckpt_comm;         /* the world's ranks, for checkpoint saves */
	mesh *mesh;
	mem_tracker mem;
	const kernel_ops *ops;   /* the device's backend */
	char device[32];         /* "cpu", "cuda:0", "cpu-fenced" */
	/* When the device's memory is not the host's: host copies of the
	 * shards (parameters, both moments; [3][nchunks]) that checkpoints
	 * are written from and read into. */
	float **mirror[3];
	/* The mesh's communicators for the device's buffers (the model's
	 * collectives): the mesh's own on the CPU, NCCL's on CUDA, staged
	 * through the host on cpu-fenced; NULL where the mesh has none.  The
	 * mesh's own keep carrying the host's figures (losses, norms). */
	comm *dev_comm[MESH_NCOMM];
	llama_model *model;
	dp *dp;
	adamw *opt;
	lr_schedule sched;
	loader *train;
	dataset_tokinfo tok;
	int B, T, accum;
	int mb, nmb;             /* pipeline: micro-batches of mb sequences, nmb a batch */
	pp_op *pipe;             /* [2 nmb pp_stages] this rank's schedule */
	int32_t *seg;            /* [B*T] document starts (block_causal) */
	metrics *met;
	ckpt_saver *saver;
	ckpt_tensor *ct;         /* this rank's slices: parameters, both AdamW moments */
	char **ct_names;
	size_t nct;
	ckpt_tensor *cs;         /* the slices of ct this rank writes */
	size_t ncs;
	long step;               /* optimizer steps done */
	uint64_t tokens;         /* tokens trained on */
	double flops_per_token, peak_flops;
	sigset_t stop_signals;
} run;

int train_threads(const train_config *cfg)
{
	const char *env = getenv("OMP_NUM_THREADS");
	cpu_set_t set;

	if (cfg->training.threads > 0)
		return cfg->training.threads;
	if (env && atoi(env) > 0)
		return atoi(env);
	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	return 1;
}

/* seg[t] = the start of the document token t belongs to, from the starts
 * the loader reports for each row (causal: all zero). */
static void fill_seg_start(int32_t *seg, const loader_batch *b)
{
	for (uint32_t i = 0; i < b->batch; i++) {
		const titan_u32s *s = &b->doc_starts[i];
		int32_t cur = 0;
		size_t k = 0;
		for (uint32_t t = 0; t < b->seq_len; t++) {
			while (k < s->n && s->v[k] <= t)
				cur = (int32_t)s->v[k++];
			seg[(size_t)i * b->seq_len + t] = cur;
		}
	}
}

static const int32_t *batch_seg(run *r, const loader_batch *b)
{
	if (r->cfg->data.mask != MASK_BLOCK_CAUSAL)
		return NULL;
	fill_seg_start(r->seg, b);
	return r->seg;
}

static int open_loader(run *r, loader **l, int split, bool shuffle, loader_cursor at)
{
	loader_opts o = {
		.dir = r->cfg->data.dataset, .split = split,
		.seq_len = (uint32_t)r->T, .batch = (uint32_t)r->B,
		.dp_rank = r->mesh->dp_rank, .dp_size = r->mesh->dp_size,
		.seed = r->cfg->training.seed,
		.shuffle = shuffle, .doc_starts = r->cfg->data.mask == MASK_BLOCK_CAUSAL,
		.prefetch = shuffle,
	};
	return loader_open(l, &o, at);
}

/* The dataset must speak the model's vocabulary. */
static int check_dataset(run *r)
{
	const train_config *c = r->cfg;
	dataset *d;
	int rc;

	if (!c->data.dataset || !*c->data.dataset)
		return titan_err(TITAN_EUSAGE, "data.dataset is not set: pack a corpus with "
				 "titan-pack and pass --data.dataset=DIR");
	if ((rc = dataset_open(&d, c->data.dataset)))
		return rc;
	r->tok = *dataset_tok(d);
	dataset_close(d);
	if (r->tok.vocab_size > (uint32_t)c->model.vocab_size)
		return titan_err(TITAN_EUSAGE, "dataset '%s' was packed with a tokenizer of "
				 "%u tokens but model.vocab_size is %d (set --model.vocab_size=%u "
				 "or pack with a smaller tokenizer)", c->data.dataset,
				 r->tok.vocab_size, c->model.vocab_size, r->tok.vocab_size);
	if (r->tok.vocab_size < (uint32_t)c->model.vocab_size)
		log_info(r->log, "note: the dataset's tokenizer has %u tokens, model.vocab_size "
			 "is %d: the rest of the embedding stays unused", r->tok.vocab_size,
			 c->model.vocab_size);
	return 0;
}

/* The device's shards: parameters (k 0) and AdamW's moments (1, 2). */
static float **shard_buffers(run *r, int k)
{
	return k == 0 ? dp_params(r->dp) : k == 1 ? r->opt->m : r->opt->v;
}

/* Host mirrors of the shards, when the device's memory is not the host's. */
static int make_mirrors(run *r)
{
	int nc = dp_nchunks(r->dp);
	const size_t *numel = dp_shard_numel(r->dp);

	if (r->ops->host_memory)
		return 0;
	for (int k = 0; k < 3; k++) {
		if (!(r->mirror[k] = calloc((size_t)nc, sizeof *r->mirror[k])))
			return titan_err_nomem();
		for (int c = 0; c < nc; c++)
			if (!(r->mirror[k][c] = calloc(numel[c] ? numel[c] : 1, sizeof(float))))
				return titan_err_nomem();
	}
	return 0;
}

static void free_mirrors(run *r, int nc)
{
	for (int k = 0; k < 3; k++) {
		for (int c = 0; r->mirror[k] && c < nc; c++)
			free(r->mirror[k][c]);
		free(r->mirror[k]);
	}
}

/* Shards to their mirrors (before a save: to_host) or back (after a
 * load); nothing to do when the device is the host. */
static int sync_mirrors(run *r, bool to_host)
{
	int nc = dp_nchunks(r->dp), rc;
	const size_t *numel = dp_shard_numel(r->dp);

	for (int k = 0; k < 3 && r->mirror[k]; k++) {
		float **dev = shard_buffers(r, k);

		for (int c = 0; c < nc; c++) {
			size_t bytes = numel[c] * sizeof(float);

			rc = to_host ? r->ops->download(r->mirror[k][c], dev[c], bytes)
				     : r->ops->upload(dev[c], r->mirror[k][c], bytes);
			if (rc)
				return titan_err_prefix(rc, "%s the checkpoint's tensors",
							to_host ? "copying out" : "copying in");
		}
	}
	return 0;
}

/* Checkpoint entries: this rank's slice of every parameter and of both
 * AdamW moments, as views of its shards (lib/model/shard.h's slices, which
 * are the pieces dp cut); a piece with no rows (more ranks than rows) is no
 * entry.  ct is what this rank loads, cs what it saves: a replica other
 * than the first saves nothing, and a tensor whole on every tp rank (a
 * norm) is saved by tp rank 0. */
static int build_ckpt_tensors(run *r)
{
	const llama_config *cfg = &r->model->cfg;
	int rank = comm_rank(r->world), nt, np, rc;
	llama_tensor_info *ti;
	const dp_piece *pc;
	static const char *const prefix[3] = { "", "optim.exp_avg.", "optim.exp_avg_sq." };

	if ((rc = llama_tensors(cfg, &ti, &nt)))
		return rc;
	pc = dp_pieces(r->dp, &np);
	r->ct = calloc((size_t)nt * 3, sizeof *r->ct);
	r->cs = calloc((size_t)nt * 3, sizeof *r->cs);
	r->ct_names = calloc((size_t)nt * 3, sizeof *r->ct_names);
	if (!r->ct || !r->cs || !r->ct_names) {
		free(ti);
		return titan_err_nomem();
	}
	for (int k = 0; k < 3; k++) {
		float **base = r->mirror[k] ? r->mirror[k] : shard_buffers(r, k);

		for (int i = 0; i < np; i++) {
			const dp_piece *p = &pc[i];
			const llama_tensor_info *t = &ti[p->tensor];
			int64_t start[2], shape[2], s2[2], n2[2];
			size_t len = strlen(prefix[k]) + strlen(t->name) + 1;
			ckpt_tensor *e;
			char *name;

			if (!par_slice(cfg, &r->mesh->layout, rank, t, start, shape))
				continue;
			if (shape[0] != p->rows)
				return titan_err(TITAN_EINTERNAL, "'%s': the checkpoint slice has %lld "
						 "rows, the shard %lld", t->name, (long long)shape[0],
						 (long long)p->rows);
			if (!(name = malloc(len))) {
				free(ti);
				return titan_err_nomem();
			}
			snprintf(name, len, "%s%s", prefix[k], t->name);
			r->ct_names[r->nct] = name;
			e = &r->ct[r->nct++];
			e->name = name;
			e->ndim = t->ndim;
			for (int d = 0; d < t->ndim; d++) {
				e->shape[d] = t->shape[d];
				e->slice_start[d] = start[d];
				e->slice_shape[d] = shape[d];
			}
			e->data = base[p->chunk] + p->offset;
			if (par_ckpt_slice(cfg, &r->mesh->layout, rank, t, s2, n2))
				r->cs[r->ncs++] = *e;
		}
	}
	free(ti);
	return 0;
}

static int save_checkpoint(run *r, double lr)
{
	loader_cursor cur = loader_state(r->train);
	json_t *extra;
	int rc;

	extra = json_pack("{s:O, s:{s:I, s:I, s:{s:I, s:I}, s:f, s:I, s:s, s:I}}",
			  "config", r->cfg->json, "train_state",
			  "step", (json_int_t)r->step, "tokens", (json_int_t)r->tokens,
			  "loader", "epoch", (json_int_t)cur.epoch, "pos", (json_int_t)cur.pos,
			  "lr", lr, "seed", (json_int_t)r->cfg->training.seed,
			  "tokenizer_sha256", r->tok.sha256,
			  "vocab_size", (json_int_t)r->tok.vocab_size);
	if (!extra)
		return titan_err_nomem();
	rc = sync_mirrors(r, true);
	if (!rc)
		rc = ckpt_save(r->saver, r->step, r->cs, r->ncs, extra);
	json_decref(extra);
	if (rc)
		return titan_err_prefix(rc, "checkpoint step %ld", r->step);
	log_info(r->log, "checkpoint: step %ld %s %s/step-%ld", r->step,
		 r->cfg->checkpoint.async ? "saving in the background to" : "saved to",
		 r->cfg->checkpoint.folder, r->step);
	return 0;
}

/* Which optimizer tensors the checkpoint has: all (a training checkpoint),
 * none (a model imported from elsewhere: the moments stay zero), or some,
 * which is an error. */
static int optim_present(run *r, const char *dir, bool *all)
{
	ckpt_reader *rd;
	size_t nt = r->nct / 3, have = 0;   /* parameters, then the two moments */
	const char *missing = NULL;
	int rc = ckpt_reader_open(&rd, dir);
	if (rc)
		return rc;
	for (size_t i = nt; i < r->nct; i++) {
		if (ckpt_reader_find(rd, r->ct[i].name))
			have++;
		else if (!missing)
			missing = r->ct[i].name;
	}
	if (have && have < r->nct - nt)
		rc = titan_err(TITAN_EFORMAT, "'%s': the checkpoint holds %zu of the %zu optimizer "
			       "tensors (no '%s')", dir, have, r->nct - nt, missing);
	ckpt_reader_close(rd);
	*all = have > 0;
	return rc;
}

/* Restore weights, moments, step, tokens and the loader cursor.  A
 * checkpoint of the weights alone (titan-ckpt import) starts training from
 * them at step 0 unless it carries a train state. */
static int load_checkpoint(run *r, loader_cursor *cur)
{
	const train_config *c = r->cfg;
	const char *want = c->checkpoint.load;
	char *dir = NULL;
	json_t *man = NULL, *st;
	long long step = 0, tokens = 0, epoch = 0, pos = 0;
	const char *sha = "";
	bool with_optim = false;
	int rc;

	*cur = (loader_cursor){ 0, 0 };
	if (!*want) {
		/* Checkpointing on and a checkpoint there: resume from it, which
		 * is what a requeued (preempted) job needs. */
		if (!c->checkpoint.enable || ckpt_resolve(c->checkpoint.folder, "latest", &dir))
			return 0;
	} else if ((rc = ckpt_resolve(c->checkpoint.folder, want, &dir))) {
		return rc;
	}
	if ((rc = ckpt_read_manifest(dir, &man)) || (rc = optim_present(r, dir, &with_optim)))
		goto out;
	st = json_object_get(json_object_get(man, "extra"), "train_state");
	if (!json_is_object(st) && with_optim) {
		rc = titan_err(TITAN_EFORMAT, "'%s': manifest.json: no extra.train_state", dir);
		goto out;
	}
	if (json_is_object(st)) {
		json_t *ld = json_object_get(st, "loader");
		if ((rc = json_get_int(st, "step", &step, dir, "$.extra.train_state")) ||
		    (rc = json_get_int(st, "tokens", &tokens, dir, "$.extra.train_state")) ||
		    (rc = json_opt_str(st, "tokenizer_sha256", &sha, dir, "$.extra.train_state")) ||
		    (rc = json_get_int(ld, "epoch", &epoch, dir, "$.extra.train_state.loader")) ||
		    (rc = json_get_int(ld, "pos", &pos, dir, "$.extra.train_state.loader")))
			goto out;
	}
	if (*sha && strcmp(sha, r->tok.sha256)) {
		rc = titan_err(TITAN_EUSAGE, "checkpoint '%s' was trained on data from another "
			       "tokenizer than dataset '%s' (tokenizer sha256 %.12s... vs %.12s...)",
			       dir, c->data.dataset, sha, r->tok.sha256);
		goto out;
	}
	if ((rc = ckpt_load(dir, r->ct, with_optim ? r->nct : r->nct / 3)) ||
	    (rc = sync_mirrors(r, false)))
		goto out;
	dp_params_changed(r->dp, false);
	r->step = (long)step;
	r->tokens = (uint64_t)tokens;
	r->opt->step = (long)step;
	*cur = (loader_cursor){ (uint64_t)epoch, (uint64_t)pos };
	if (!with_optim)
		log_info(r->log, "loaded model weights only (no optimizer state) from %s", dir);
	if (json_is_object(st))
		log_info(r->log, "resumed from %s: step %lld, %lld tokens", dir, step, tokens);
out:
	json_decref(man);
	free(dir);
	return rc;
}

/* Every checkpoint carries the dataset's tokenizer as tokenizer.json when
 * the file the dataset was packed with is still there and is that very
 * tokenizer (the hash the dataset recorded); otherwise a note says why
 * not, and training goes on. */
static int attach_tokenizer(run *r)
{
	const char *src = r->tok.source;
	struct stat st;
	char *path = NULL;
	titan_tok *t = NULL;
	int rc = 0;

	if (!*src || stat(src, &st) < 0) {
		log_info(r->log, "note: checkpoints will not carry the tokenizer: '%s' is not "
			 "there", src);
		return 0;
	}
	path = S_ISDIR(st.st_mode) ? file_path_join(src, "tokenizer.json") : strdup(src);
	if (!path)
		return titan_err_nomem();
	if (tok_load(&t, path, NULL))
		log_info(r->log, "note: checkpoints will not carry the tokenizer: %s",
			 titan_errmsg());
	else if (strcmp(tok_source_format(t), "tokenizer.json"))
		log_info(r->log, "note: checkpoints will not carry the tokenizer: '%s' is a "
			 "tiktoken file, not a tokenizer.json", path);
	else if (strcmp(tok_hash(t), r->tok.sha256))
		log_info(r->log, "note: checkpoints will not carry the tokenizer: '%s' is not "
			 "the tokenizer the dataset was packed with (sha256 %.12s... vs %.12s...)",
			 path, tok_hash(t), r->tok.sha256);
	else
		rc = ckpt_saver_attach_file(r->saver, "tokenizer.json", path);
	tok_free(t);
	free(path);
	return rc;
}

/* The mean of v over the data-parallel and context-parallel ranks (every
 * rank gets it): each holds as many tokens as the others. */
static int dp_mean(run *r, double *v)
{
	int rc;

	if (r->mesh->dp && (rc = comm_all_reduce(r->mesh->dp, v, 1, COMM_F64, COMM_SUM)))
		return rc;
	if (r->mesh->cp && (rc = comm_all_reduce(r->mesh->cp, v, 1, COMM_F64, COMM_SUM)))
		return rc;
	*v /= (double)r->mesh->dp_size * r->mesh->layout.cp;
	return 0;
}

/* Evaluation's k-th pass: each micro-batch through every local stage
 * before the next, sets taken in turn. */
static pp_op eval_op(const run *r, int k)
{
	int mb = k / r->model->pp_stages, nsets = r->model->nsets;

	return (pp_op){ .mb = mb, .stage = k % r->model->pp_stages, .set = mb % nsets,
			.reuse = mb >= nsets && k % r->model->pp_stages == 0 };
}

/* One batch through this rank's stages of the pipeline (the whole model
 * without pp): each micro-batch's forward and, when training, backward
 * on each stage, in the schedule's order.  *loss_sum gains the
 * micro-batches' losses on the last stage (0 elsewhere). */
static int run_batch(run *r, const loader_batch *b, bool train, float dloss, double *loss_sum)
{
	const int32_t *seg = batch_seg(r, b);
	size_t rows = (size_t)r->mb * r->T;
	int rc;

	for (int k = 0; k < (train ? 2 : 1) * r->nmb * r->model->pp_stages; k++) {
		pp_op op = train ? r->pipe[k] : eval_op(r, k);
		size_t at = (size_t)op.mb * rows;
		float l = 0;

		/* A set comes back for a later micro-batch once the last
		 * backward of the one before is done; what this rank sent
		 * from it must have left. */
		if (op.reuse && (rc = dp_pp_flush(r->dp, op.set)))
			return rc;
		llama_use_set(r->model, op.set);
		r->model->pp_stage = op.stage;
		r->model->pp_tag = op.mb;
		if (op.backward) {
			if ((rc = llama_backward(r->model)) || (rc = dp_end_backward(r->dp)))
				return rc;
			continue;
		}
		if ((rc = llama_forward(r->model, b->inputs + at, b->labels + at,
					seg ? seg + at : NULL, train ? dloss : 0.0f, &l)))
			return rc;
		if (llama_holds_head(r->model) && op.stage == r->model->pp_stages - 1)
			*loss_sum += l;
	}
	return dp_pp_flush(r->dp, -1);
}

/* The mean of the micro-batches' losses, n of them on the last stage, on
 * every stage and data-parallel rank. */
static int step_loss(run *r, double sum, int n, double *loss)
{
	int rc;

	*loss = sum / n;
	if (r->mesh->pp && (rc = comm_all_reduce(r->mesh->pp, loss, 1, COMM_F64, COMM_SUM)))
		return rc;
	return dp_mean(r, loss);
}

static int validate(run *r, double *val_loss)
{
	const train_config *c = r->cfg;
	loader *l = NULL;
	loader_batch *b;
	long n = c->validation.steps, most;
	double sum = 0;
	int rc;

	if ((rc = open_loader(r, &l, SPLIT_VAL, false, (loader_cursor){ 0, 0 })))
		return titan_err_prefix(rc, "validation");
	most = (long)(loader_windows_per_epoch(l) / ((uint64_t)r->B * r->mesh->dp_size));
	if (most < 1)
		most = 1;
	if (n < 0 || n > most)
		n = most;
	for (long i = 0; i < n; i++)
		if ((rc = loader_next(l, &b)) || (rc = run_batch(r, b, false, 0, &sum)))
			goto out;
	rc = step_loss(r, sum, (int)(n * r->nmb), val_loss);
out:
	loader_close(l);
	return rc;
}

static bool signal_pending(run *r)
{
	sigset_t pending;
	struct timespec zero = { 0, 0 };

	if (sigpending(&pending) || (!sigismember(&pending, SIGINT) &&
				     !sigismember(&pending, SIGTERM)))
		return false;
	sigtimedwait(&r->stop_signals, NULL, &zero);
	/* A second signal now ends the process the usual way. */
	pthread_sigmask(SIG_UNBLOCK, &r->stop_signals, NULL);
	return true;
}

/* Whether any rank got SIGINT or SIGTERM: the ranks see a signal at
 * different steps, and all must stop (and save) at the same one. */
static int stop_requested(run *r, bool *stop)
{
	int flag = signal_pending(r), rc = 0;

	if (comm_size(r->world) > 1)
		rc = comm_all_reduce(r->world, &flag, 1, COMM_I32, COMM_MAX);
	*stop = flag;
	return rc;
}

static void log_setup(run *r, const train_result *res)
{
	const train_config *c = r->cfg;
	const double mib = 1024.0 * 1024.0;
	size_t params = 0;
	static const char *const ac_name[] = { "none", "full", "selective" };

	/* this rank's shards */
	for (int i = 0; i < dp_nchunks(r->dp); i++)
		params += dp_shard_numel(r->dp)[i];
	log_info(r->log, "model %s: %" PRIu64 " parameters (%d layers, dim %d, %d heads, "
		 "%d kv heads, ffn %d, vocab %d), %.1f MFLOP per token", c->flavor,
		 llama_param_count(&c->model), c->model.n_layers, c->model.dim,
		 c->model.n_heads, c->model.n_kv_heads, c->model.ffn_hidden,
		 c->model.vocab_size, r->flops_per_token / 1e6);
	log_info(r->log, "memory: parameters %.1f MiB, gradients %.1f MiB, AdamW %.1f MiB, "
		 "activations %.1f MiB (activation_checkpoint.mode=%s; none would hold "
		 "%.1f MiB)", params * 4 / mib, params * 4 / mib, params * 8 / mib,
		 res->act_bytes / mib, ac_name[c->activation_checkpoint.mode],
		 res->act_bytes_none / mib);
	if (comm_size(r->world) > 1) {
		const par_layout *l = &r->mesh->layout;
		bool fsdp = l->dp_shard * l->cp > 1;
		const char *kind = fsdp ? (l->dp_replicate > 1 ? "HSDP" : "FSDP")
			       : l->dp_replicate > 1 ? "DDP" : "no data parallelism";
		char tp[64] = "", pp[128] = "", cp[96] = "";

		if (l->tp > 1)
			snprintf(tp, sizeof tp, ", tensor parallel over %d ranks%s", l->tp,
				 r->model->sp ? " with sequence parallel" : "");
		if (l->pp > 1)
			snprintf(pp, sizeof pp, ", %d pipeline stages over %d ranks (%s, %d "
				 "micro-batches of %d)", l->pp * l->pp_stages, l->pp,
				 pp_schedule_name((pp_schedule_kind)
						  c->parallelism.pipeline_parallel_schedule),
				 r->nmb, r->mb);
		if (l->cp > 1)
			snprintf(cp, sizeof cp, ", ring attention over %d ranks (%d tokens each)",
				 l->cp, r->T / l->cp);
		log_info(r->log, "parallelism: %d ranks (%s), pp=%d x dp_replicate=%d x "
			 "dp_shard=%d x cp=%d x tp=%d: %s%s%s%s%s", comm_size(r->world),
			 comm_backend(r->world), l->pp, l->dp_replicate, l->dp_shard, l->cp, l->tp,
			 kind, fsdp ? (config_reshard_after_forward(c)
				       ? ", layers resharded after forward"
				       : ", layers kept gathered to backward") : "", cp, tp, pp);
	}
	log_info(r->log, "training %ld steps: %d x %d tokens per micro-batch, %d micro-batches "
		 "per step, %d threads, peak %.1f GFLOP/s%s", c->training.steps, r->B, r->T,
		 r->accum, omp_get_max_threads(), r->peak_flops / 1e9,
		 c->metrics.peak_flops > 0 ? ""
		 : r->ops == &kernels_cpu ? " (measured sgemm)"
		 : r->model->matmul_bf16 ? " (measured bf16 matmul)" : " (measured matmul)");
}

/* The device mesh: the layout the config asks for on the ranks launched. */
static int make_mesh(run *r)
{
	const train_config *c = r->cfg;
	par_layout l;
	int rc;

	if ((rc = config_layout(c, comm_size(r->world), &l)))
		return rc;
	if ((rc = par_check_seq_len(c->training.seq_len, l.cp)))
		return rc;
	if (l.pp > 1 && c->model.tie_embeddings)
		return titan_err(TITAN_EUSAGE, "parallelism: pipeline parallel needs untied "
				 "embeddings (model.tie_embeddings: the first and last stages would "
				 "share a weight)");
	if ((rc = par_layout_check(&l, &c->model, comm_size(r->world))))
		return rc;
	comm_set_timeout(r->world, c->comm.init_timeout_seconds);
	if ((rc = mesh_new(&r->mesh, r->world, &l)))
		return rc;
	/* from here on a wait that long means a rank died or hangs */
	comm_set_timeout(r->world, c->comm.train_timeout_seconds);
	if (r->mesh->dp)
		comm_set_timeout(r->mesh->dp, c->comm.train_timeout_seconds);
	for (int i = 0; i < MESH_NCOMM; i++)
		if (mesh_comm(r->mesh, (mesh_comm_kind)i))
			comm_set_timeout(mesh_comm(r->mesh, (mesh_comm_kind)i),
					 c->comm.train_timeout_seconds);
	return 0;
}

/* The model as data-parallel shards, and AdamW over them. */
static int make_model(run *r, const adamw_config *ac)
{
	const train_config *c = r->cfg;
	dp_opts o = {
		.shard = r->dev_comm[MESH_DP_SHARD], .replicate = r->dev_comm[MESH_DP_REPLICATE],
		.tp = r->dev_comm[MESH_TP], .pp = r->dev_comm[MESH_PP], .cp = r->dev_comm[MESH_CP],
		.reshard_after_forward = config_reshard_after_forward(c),
	};
	llama_tensor_info *ti;
	struct adamw_run *runs;
	const dp_piece *pc;
	int nt, np, rc;

	if ((rc = llama_new_views(&r->model, &c->model, r->ops, &r->mem,
				  r->mesh->layout.tp, r->mesh->me.tp)))
		return rc;
	r->model->sp = r->mesh->layout.tp > 1 && c->parallelism.sequence_parallel;
	r->model->matmul_bf16 = c->training.matmul_dtype == MATMUL_BF16;
	r->model->cp = r->mesh->layout.cp;
	r->model->cp_rank = r->mesh->me.cp;
	/* this rank's pipeline stages (every layer without pp) */
	r->model->pp_rank = r->mesh->me.pp;
	r->model->pp_ranks = r->mesh->layout.pp;
	r->model->pp_stages = r->mesh->layout.pp_stages;
	if ((rc = dp_new(&r->dp, r->model, &o, &r->mem)) ||
	    (rc = dp_init_weights(r->dp, c->training.seed)))
		return rc;
	if ((rc = llama_tensors(&c->model, &ti, &nt)))
		return rc;
	pc = dp_pieces(r->dp, &np);
	runs = calloc((size_t)np, sizeof *runs);
	if (!runs) {
		free(ti);
		return titan_err_nomem();
	}
	for (int i = 0; i < np; i++)
		runs[i] = (struct adamw_run){ pc[i].chunk, pc[i].offset,
					      (size_t)(pc[i].rows * pc[i].cols),
					      adamw_decays(ac, &ti[pc[i].tensor]) };
	rc = adamw_new_flat(&r->opt, dp_nchunks(r->dp), dp_shard_numel(r->dp), runs, np, ac,
			    &r->mem);
	free(runs);
	free(ti);
	return rc;
}

/* The backend training.device names, and the memory tracker over it.  The
 * device of a rank is its local rank's (one process per GPU), as
 * torchrun's LOCAL_RANK picks it. */
static int open_device(run *r)
{
	const char *dev = r->cfg->training.device;
	int rc;

	if (!strcmp(dev, "cpu")) {
		r->ops = &kernels_cpu;
		snprintf(r->device, sizeof r->device, "cpu");
	} else if (!strcmp(dev, "cpu-fenced")) {
		r->ops = kernels_fenced_ops();
		snprintf(r->device, sizeof r->device, "cpu-fenced");
	} else {
		int local = comm_local_rank(r->world), D = r->cfg->model.dim / r->cfg->model.n_heads;

		if (!kernels_cuda_built())
			return titan_err(TITAN_EUSAGE, "training.device=cuda: this build has no "
					 "CUDA backend (rebuild with make CUDA=1)");
		/* the tensor cores' batched GEMMs want 16-byte rows of fp32 */
		if (r->cfg->training.matmul_dtype == MATMUL_BF16 && D % 4)
			return titan_err(TITAN_EUSAGE, "training.matmul_dtype=bfloat16 on cuda: head "
					 "dim %d (model.dim / model.n_heads) must be a multiple of 4",
					 D);
		if ((rc = kernels_cuda_set_device(local)))
			return titan_err_prefix(rc, "training.device=cuda");
		r->ops = kernels_cuda_ops();
		snprintf(r->device, sizeof r->device, "cuda:%d", local);
	}
	r->mem.device = r->device;
	if (!r->ops->host_memory) {
		r->mem.dev_alloc = r->ops->alloc;
		r->mem.dev_free = r->ops->free;
	}
	return 0;
}

/* The communicators the model's buffers travel on (run's dev_comm).  On
 * CUDA the collectives go over NCCL; the pipeline's point-to-point
 * messages go through the host (staged over MPI), where a send never waits
 * behind another: NCCL runs a communicator's sends and receives one after
 * the other on its stream, and 1F1B's activations going down while
 * gradients come up would deadlock there (stage 0 queues its second
 * activation's send before its first gradient's receive, stage 1 the
 * first gradient's send before the second activation's receive) unless
 * each schedule step's pair is grouped, which is not done yet. */
static int open_device_comms(run *r)
{
	const comm_device dev = { .download = r->ops->download, .upload = r->ops->upload };
	int local = comm_local_rank(r->world), rc;

	for (int i = 0; i < MESH_NCOMM; i++) {
		comm *g = mesh_comm(r->mesh, (mesh_comm_kind)i);

		if (!g || r->ops->host_memory) {
			r->dev_comm[i] = g;
			continue;
		}
		rc = !strcmp(r->ops->name, "cuda") && i != MESH_PP
			     ? comm_nccl_new(g, local, comm_name(g), &r->dev_comm[i])
			     : comm_staged_new(g, &dev, comm_name(g), &r->dev_comm[i]);
		if (rc)
			return titan_err_prefix(rc, "%s: the '%s' communicator", r->device,
						comm_name(g));
		comm_set_timeout(r->dev_comm[i], r->cfg->comm.train_timeout_seconds);
	}
	return 0;
}

static void close_device_comms(run *r)
{
	for (int i = 0; i < MESH_NCOMM; i++)
		if (r->dev_comm[i] && r->dev_comm[i] != mesh_comm(r->mesh, (mesh_comm_kind)i))
			comm_free(r->dev_comm[i]);
}

static int setup(run *r, train_result *res, loader_cursor *cur)
{
	const train_config *c = r->cfg;
	adamw_config ac = {
		.lr = c->optimizer.lr, .beta1 = c->optimizer.beta1, .beta2 = c->optimizer.beta2,
		.eps = c->optimizer.eps, .weight_decay = c->optimizer.weight_decay,
		.decay_embeddings_and_norms = c->optimizer.decay_embeddings_and_norms,
	};
	pp_schedule_kind kind = (pp_schedule_kind)c->parallelism.pipeline_parallel_schedule;
	int rc, ndp, nsets, v;

	if ((rc = make_mesh(r)) || (rc = open_device(r)) || (rc = open_device_comms(r)))
		return rc;
	ndp = r->mesh->dp_size;
	r->B = c->training.local_batch_size;
	r->T = c->training.seq_len;
	if (c->training.global_batch_size > 0) {
		if (c->training.global_batch_size % (r->B * ndp))
			return titan_err(TITAN_EUSAGE, "training.global_batch_size %d is not a "
					 "multiple of local_batch_size %d x %d data-parallel ranks",
					 c->training.global_batch_size, r->B, ndp);
		r->accum = c->training.global_batch_size / (r->B * ndp);
	} else {
		r->accum = 1;
	}
	if ((rc = check_dataset(r)))
		return rc;
	omp_set_num_threads(train_threads(c));

	if ((rc = make_model(r, &ac)) || (rc = make_mirrors(r)))
		return rc;
	/* What checkpointing saves, from the memory model: planning without
	 * it would touch memory the run never needs. */
	if ((rc = mem_model_plan_bytes(c, LLAMA_AC_NONE, &res->act_bytes_none)))
		return rc;
	/* Micro-batches: a pipeline splits each batch; one activation set
	 * per micro-batch in flight: all of them under GPipe, at most
	 * pp - rank under 1F1B, what the table says in general */
	r->mb = r->mesh->layout.pp > 1 ? c->parallelism.pipeline_parallel_microbatch_size : r->B;
	if (r->B % r->mb)
		return titan_err(TITAN_EUSAGE, "parallelism.pipeline_parallel_microbatch_size %d "
				 "does not divide training.local_batch_size %d", r->mb, r->B);
	r->nmb = r->B / r->mb;
	v = r->model->pp_stages;
	if ((rc = pp_check(kind, r->mesh->layout.pp, r->nmb, v)))
		return rc;
	r->pipe = calloc((size_t)r->nmb * v * 2, sizeof *r->pipe);
	if (!r->pipe)
		return titan_err_nomem();
	nsets = pp_schedule(kind, r->mesh->layout.pp, r->mesh->me.pp, r->nmb, v, r->pipe);
	if (r->mesh->layout.pp > 1 && r->log->verbosity >= 2) {
		size_t nops = (size_t)r->nmb * v * 2, cap = 16 * nops + 1;
		char *table = malloc(cap);

		if (table) {
			pp_schedule_format(r->pipe, (int)nops, v, table, cap);
			log_debug(r->log, "pipeline rank %d of %d, %d activation sets: %s",
				  r->mesh->me.pp, r->mesh->layout.pp, nsets, table);
		}
		free(table);
	}
	if ((rc = llama_plan_sets(r->model, r->mb, r->T, c->activation_checkpoint.mode,
				  c->activation_checkpoint.selective_every, nsets)))
		return rc;
	res->act_bytes = r->model->act_bytes;
	mem_reset_peak(&r->mem);
	r->seg = calloc((size_t)r->B * r->T, sizeof *r->seg);
	if (!r->seg)
		return titan_err_nomem();
	if ((rc = build_ckpt_tensors(r)))
		return rc;
	if (c->checkpoint.enable) {
		json_t *layout = ckpt_layout_json(&r->mesh->layout);

		if (!layout)
			return titan_err_nomem();
		/* Its own communicator, so that a save's waits (one rank
		 * writing a large shard while the others wait for it) are
		 * bounded like start-up, not like one step's collectives. */
		rc = comm_dup(r->world, "checkpoint", &r->ckpt_comm);
		if (!rc) {
			comm_set_timeout(r->ckpt_comm, TITAN_MAX(c->comm.init_timeout_seconds,
								 c->comm.train_timeout_seconds));
			rc = ckpt_saver_new(&r->saver, c->checkpoint.folder,
					    c->checkpoint.keep_latest_k, c->checkpoint.async,
					    r->ckpt_comm, layout);
		}
		json_decref(layout);
		if (rc)
			return rc;
	}
	if (r->saver && (rc = attach_tokenizer(r)))
		return rc;
	if ((rc = load_checkpoint(r, cur)))
		return rc;
	r->sched = (lr_schedule){
		.steps = c->training.steps, .warmup_steps = c->lr_scheduler.warmup_steps,
		.decay_ratio = c->lr_scheduler.decay_ratio,
		.decay_type = (lr_decay_type)c->lr_scheduler.decay_type,
		.min_lr_factor = c->lr_scheduler.min_lr_factor,
	};
	r->flops_per_token = llama_flops_per_token(&c->model, r->T);
	r->peak_flops = c->metrics.peak_flops;
	if (r->peak_flops <= 0)
		r->peak_flops = r->ops == &kernels_cpu
					 ? kernels_cpu_sgemm_peak(1024)
					 : kernels_matmul_peak(r->ops, strcmp(r->ops->name, "cuda") ? 1024 : 4096,
							       r->model->matmul_bf16);
	/* -q keeps stderr for errors; the JSONL and events are rank 0's */
	if (comm_rank(r->world) > 0)
		return metrics_open(&r->met, r->log->verbosity > 0 ? stderr : NULL, NULL, NULL);
	return metrics_open(&r->met, r->log->verbosity > 0 ? stderr : NULL,
			    c->metrics.jsonl, c->metrics.tensorboard);
}

/* The squared L2 norm of the whole gradient, on every rank.  The shard
 * group covers the model once (replicas hold the same shards); so does
 * the tp group, except for the tensors every tp rank holds whole (the
 * norms), which each tp rank counts 1/tp of. */
static int grad_sumsq(run *r, double *out)
{
	int tp = r->mesh->layout.tp, np, rc;
	float **g = dp_grads(r->dp);
	const dp_piece *pc = dp_pieces(r->dp, &np);
	double sum = 0, whole = 0;

	if (tp == 1) {
		sum = grad_sumsq_flat(r->ops, g, dp_shard_numel(r->dp), dp_nchunks(r->dp));
	} else {
		for (int i = 0; i < np; i++) {
			double s = r->ops->sumsq(g[pc[i].chunk] + pc[i].offset,
						     (size_t)(pc[i].rows * pc[i].cols));

			if (pc[i].tp_whole)
				whole += s;
			else
				sum += s;
		}
		sum += whole / tp;
		if ((rc = comm_all_reduce(r->mesh->tp, &sum, 1, COMM_F64, COMM_SUM)))
			return rc;
	}
	/* replicas hold the same shards: the shard group covers the model */
	if (r->mesh->dp_shard &&
	    (rc = comm_all_reduce(r->mesh->dp_shard, &sum, 1, COMM_F64, COMM_SUM)))
		return rc;
	/* each pipeline stage holds its own layers */
	if (r->mesh->pp && (rc = comm_all_reduce(r->mesh->pp, &sum, 1, COMM_F64, COMM_SUM)))
		return rc;
	*out = sum;
	return 0;
}

/* One optimizer step over accum batches; the mean loss in *loss. */
static int train_step(run *r, double *loss, double *norm, double *data_s)
{
	/* summed over the ranks and micro-batches, the gradients are the
	 * global batch's mean */
	float dloss = 1.0f / ((float)r->accum * r->nmb * r->mesh->dp_size *
			      r->mesh->layout.cp);
	loader_batch *b;
	double sum = 0, sumsq;
	int rc;

	dp_begin_step(r->dp, r->accum * r->nmb);
	for (int i = 0; i < r->accum; i++) {
		double t0 = titan_now();
		if ((rc = loader_next(r->train, &b)))
			return rc;
		*data_s += titan_now() - t0;
		if ((rc = run_batch(r, b, true, dloss, &sum)))
			return rc;
	}
	/* sync: a failure the ops noted (a GPU's, or scratch they could not
	 * get) stops the step here, before the update uses what they left */
	if ((rc = dp_finish_grads(r->dp)) || (rc = r->ops->sync()) ||
	    (rc = step_loss(r, sum, r->accum * r->nmb, loss)))
		return rc;
	if ((rc = grad_sumsq(r, &sumsq)))
		return rc;
	*norm = sqrt(sumsq);
	if (!isfinite(*loss) || !isfinite(*norm))
		return titan_err(TITAN_ERANGE, "step %ld: %s is %g; stopping before the update "
				 "(the last checkpoint is the last good state)", r->step + 1,
				 isfinite(*loss) ? "gradient norm" : "loss",
				 isfinite(*loss) ? *norm : *loss);
	return 0;
}

/* What the device's allocator holds against what the trainer counted, and
 * what the driver says is in use: the three should tell one story (the
 * cache rounds sizes up; the driver adds its context). */
static void log_device_memory(run *r)
{
	const double mib = 1024.0 * 1024.0;
	kernel_mem_stats st = { 0 };
	char driver[96] = "";

	if (!r->ops->mem_stats)
		return;
	r->ops->mem_stats(&st);
	if (st.device_total)
		snprintf(driver, sizeof driver, "; the driver reports %.1f of %.1f MiB in use",
			 (st.device_total - st.device_free) / mib, st.device_total / mib);
	log_info(r->log, "memory: device %s: %.1f MiB counted, %.1f MiB reserved (peak %.1f) "
		 "in %ld device allocations%s", r->device, r->mem.peak / mib,
		 st.reserved / mib, st.reserved_peak / mib, st.device_allocs, driver);
}

static int loop(run *r, train_result *res)
{
	const train_config *c = r->cfg;
	const long steps = c->training.steps;
	double start = titan_now(), busy = 0, data_s = 0, lr = 0;
	uint64_t tokens_at_log = r->tokens;
	long saved = -1;
	int rc = 0;

	res->first_step = r->step + 1;
	res->last_step = r->step;
	while (r->step < steps) {
		double t0 = titan_now(), loss = 0, norm = 0;
		if ((rc = train_step(r, &loss, &norm, &data_s)))
			return rc;
		lr = c->optimizer.lr * lr_factor(&r->sched, r->step + 1);
		/* clipping is the step's: it scales the gradients as it reads them */
		adamw_step_flat(r->opt, r->ops, dp_params(r->dp), dp_grads(r->dp),
				dp_shard_bf16(r->dp), lr,
				grad_clip_coef(norm, c->training.max_norm));
		dp_params_changed(r->dp, true);
		r->step++;
		r->tokens += (uint64_t)r->B * r->T * r->accum * r->mesh->dp_size;
		busy += titan_now() - t0;
		res->last_step = r->step;
		res->last_loss = loss;

		if (r->step == res->first_step || r->step % c->metrics.log_freq == 0 ||
		    r->step == steps) {
			double global = (r->tokens - tokens_at_log) / busy;
			double tps = global / r->mesh->dp_size;
			int64_t peak = (int64_t)r->mem.peak;
			metrics_row row = {
				.step = r->step, .loss = loss, .grad_norm = norm, .lr = lr,
				.tps = tps, .tflops = tps * r->flops_per_token / 1e12,
				.mfu = 100.0 * tps * r->flops_per_token / r->peak_flops,
				.data_share = data_s / busy,
				.elapsed_s = titan_now() - start,
				.ranks = comm_size(r->world), .tps_global = global,
				.comm_share = dp_comm_seconds(r->dp) / busy,
			};
			/* the largest rank's peak is what must fit */
			if (comm_size(r->world) > 1 &&
			    (rc = comm_all_reduce(r->world, &peak, 1, COMM_I64, COMM_MAX)))
				return rc;
			row.mem_peak_gib = peak / (1024.0 * 1024.0 * 1024.0);
			if ((rc = metrics_log(r->met, &row)))
				return rc;
			size_t predicted;
			if (r->step == res->first_step &&
			    !mem_model_predict_tracked(c, comm_size(r->world), &predicted))
				log_info(r->log, "memory: predicted %.1f MiB (titan-mem), measured "
					 "%.1f MiB", predicted / (1024.0 * 1024.0),
					 peak / (1024.0 * 1024.0));
			if (r->step == res->first_step)
				log_device_memory(r);
			busy = data_s = 0;
			tokens_at_log = r->tokens;
		}
		if (c->validation.freq > 0 && (r->step % c->validation.freq == 0 || r->step == steps)) {
			double vl = 0;
			if ((rc = validate(r, &vl)) || (rc = metrics_log_val(r->met, r->step, vl)))
				return rc;
		}
		if ((rc = stop_requested(r, &res->interrupted)))
			return rc;
		if (r->saver && (r->step % c->checkpoint.interval == 0 || r->step == steps ||
				 res->interrupted)) {
			if ((rc = save_checkpoint(r, lr)))
				return rc;
			saved = r->step;
		}
		if (res->interrupted) {
			log_info(r->log, "stopped by a signal after step %ld%s", r->step,
				 saved == r->step ? "; checkpoint saved" :
				 " (checkpoint.enable is off: nothing saved)");
			break;
		}
	}
	return r->saver ? ckpt_wait(r->saver) : 0;
}

static void run_free(run *r)
{
	ckpt_saver_free(r->saver);
	comm_free(r->ckpt_comm);
	metrics_close(r->met);
	loader_close(r->train);
	for (size_t i = 0; r->ct_names && i < r->nct; i++)
		free(r->ct_names[i]);
	free(r->ct_names);
	free(r->ct);
	free(r->cs);
	free(r->seg);
	free(r->pipe);
	if (r->dp)
		free_mirrors(r, dp_nchunks(r->dp));
	adamw_free(r->opt);
	dp_free(r->dp);
	llama_free(r->model);
	if (r->mesh)
		close_device_comms(r);
	mesh_free(r->mesh);
}

int train_run(const train_config *cfg, comm *world, titan_log *log, train_result *res)
{
	run r = { .cfg = cfg, .log = log, .world = world };
	loader_cursor cur;
	sigset_t old;
	int rc;

	memset(res, 0, sizeof *res);
	/* Held before any thread starts, so every thread inherits the mask and
	 * the loop alone decides when to stop. */
	sigemptyset(&r.stop_signals);
	sigaddset(&r.stop_signals, SIGINT);
	sigaddset(&r.stop_signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &r.stop_signals, &old);

	if ((rc = setup(&r, res, &cur)))
		goto out;
	if (r.step >= cfg->training.steps) {
		log_info(log, "nothing to do: the checkpoint is at step %ld and training.steps "
			 "is %ld", r.step, cfg->training.steps);
		goto out;
	}
	if ((rc = open_loader(&r, &r.train, SPLIT_TRAIN, true, cur)))
		goto out;
	if (cfg->validation.freq > 0) {
		loader *probe;
		if ((rc = open_loader(&r, &probe, SPLIT_VAL, false, (loader_cursor){ 0, 0 }))) {
			titan_err_prefix(rc, "validation");
			goto out;
		}
		loader_close(probe);
	}
	log_setup(&r, res);
	rc = loop(&r, res);
out:
	res->mem_peak = r.mem.peak;
	if (!rc && comm_size(world) > 1) {
		int64_t peak = (int64_t)r.mem.peak;

		if (!(rc = comm_all_reduce(world, &peak, 1, COMM_I64, COMM_MAX)))
			res->mem_peak = (size_t)peak;
	}
	run_free(&r);   /* a save in flight completes first */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}
