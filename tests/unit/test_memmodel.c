/* test_memmodel.c - the memory model against what the CPU trainer's
 * allocations count: for each config, build the model, the AdamW moments
 * and the activation plan on a mem_tracker exactly as train_run does, and
 * compare the tracker's peak with mem_model_predict_tracked (the bar is 5%;
 * the model is meant to be exact).  Also the parallel rows' arithmetic,
 * the layout errors and the largest batch that fits. */
#include "core/base.h"
#include <inttypes.h>
#include "attention_flash.h"
#include "attention_tiles.h"
#include "check.h"
#include "config/config.h"
#include "core/cache_alloc.h"
#include "mem/memmodel.h"
#include "model/llama.h"
#include "train/optim.h"

static int load(train_config *c, int n, const char **ov)
{
	return config_load(c, NULL, n, (char **)ov);
}

/* What train_run's setup leaves on the tracker once the peak is reset:
 * parameters, gradients, moments and the plan of the chosen AC mode, after
 * a plan without AC (which it frees) when the mode is not none. */
static int measure(const train_config *c, size_t *peak, size_t *setup_peak,
		   size_t *plan_none, size_t *plan_mode)
{
	mem_tracker mem = { .device = "cpu" };
	adamw_config ac = { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8 };
	llama_model *m = NULL;
	adamw *o = NULL;
	int rc;

	if ((rc = llama_new(&m, &c->model, &kernels_cpu, &mem)) ||
	    (rc = adamw_new(&o, m, &ac, &mem)))
		goto out;
	if (c->activation_checkpoint.mode != LLAMA_AC_NONE &&
	    (rc = llama_plan(m, c->training.local_batch_size, c->training.seq_len,
			     LLAMA_AC_NONE, 1)))
		goto out;
	*plan_none = m->act_bytes;
	if ((rc = llama_plan(m, c->training.local_batch_size, c->training.seq_len,
			     c->activation_checkpoint.mode,
			     c->activation_checkpoint.selective_every)))
		goto out;
	*plan_mode = m->act_bytes;
	if (c->activation_checkpoint.mode == LLAMA_AC_NONE)
		*plan_none = m->act_bytes;
	*setup_peak = mem.peak;
	mem_reset_peak(&mem);
	*peak = mem.peak;
out:
	adamw_free(o);
	llama_free(m);
	return rc;
}

static const char *const configs[][10] = {
	{ "model.flavor=debugmodel", "training.local_batch_size=1", "training.seq_len=64" },
	{ "model.flavor=debugmodel", "training.local_batch_size=4", "training.seq_len=256" },
	{ "model.flavor=debugmodel", "training.local_batch_size=8", "training.seq_len=256",
	  "activation_checkpoint.mode=full" },
	{ "model.flavor=debugmodel", "training.local_batch_size=8", "training.seq_len=256",
	  "activation_checkpoint.mode=selective" },
	{ "model.flavor=debugmodel", "training.local_batch_size=2", "training.seq_len=1024",
	  "activation_checkpoint.mode=selective", "activation_checkpoint.selective_every=3" },
	{ "model.flavor=debugmodel", "training.local_batch_size=3", "training.seq_len=100",
	  "model.tie_embeddings=true" },
	{ "model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2",
	  "model.vocab_size=512", "training.seq_len=64", "training.local_batch_size=4" },
	{ "model.dim=512", "model.n_layers=8", "model.n_heads=8", "model.n_kv_heads=4",
	  "model.vocab_size=8192", "training.seq_len=512", "training.local_batch_size=4" },
	{ "model.dim=512", "model.n_layers=8", "model.n_heads=8", "model.n_kv_heads=4",
	  "model.vocab_size=8192", "training.seq_len=512", "training.local_batch_size=4",
	  "activation_checkpoint.mode=full" },
	{ "model.dim=384", "model.n_layers=5", "model.n_heads=6", "model.n_kv_heads=2",
	  "model.vocab_size=4000", "training.seq_len=200", "training.local_batch_size=3",
	  "activation_checkpoint.mode=selective" },
	{ "model.dim=768", "model.n_layers=4", "model.n_heads=12", "model.n_kv_heads=12",
	  "model.vocab_size=16384", "training.seq_len=128", "training.local_batch_size=2",
	  "model.ffn_dim_multiplier=1.3" },
	{ "model.dim=128", "model.n_layers=12", "model.n_heads=2", "model.n_kv_heads=1",
	  "model.vocab_size=1000", "training.seq_len=2048", "training.local_batch_size=1",
	  "activation_checkpoint.mode=full" },
	{ "model.dim=256", "model.n_layers=3", "model.n_heads=4", "model.n_kv_heads=4",
	  "model.vocab_size=300", "training.seq_len=33", "training.local_batch_size=5",
	  "activation_checkpoint.mode=selective", "activation_checkpoint.selective_every=1" },
};

static void test_matches_the_tracker(void)
{
	printf("# %-4s %14s %14s %8s  %s\n", "cfg", "predicted", "measured", "diff %",
	       "overrides");
	for (size_t i = 0; i < ARRAY_SIZE(configs); i++) {
		const char *ov[10];
		int n = 0;
		train_config c;
		size_t pred = 0, peak = 0, setup_peak = 0, none = 0, mode = 0, want;
		double diff;
		int rc;

		for (int k = 0; k < 10 && configs[i][k]; k++)
			ov[n++] = configs[i][k];
		rc = load(&c, n, ov);
		CHECK(rc == 0, "config %zu: %s", i, titan_errmsg());
		if (rc)
			continue;
		rc = mem_model_predict_tracked(&c, 1, &pred);
		CHECK(rc == 0, "config %zu: predict: %s", i, titan_errmsg());
		rc = measure(&c, &peak, &setup_peak, &none, &mode);
		CHECK(rc == 0, "config %zu: measure: %s", i, titan_errmsg());
		diff = peak ? 100.0 * ((double)pred - (double)peak) / (double)peak : 100;
		printf("# %-4zu %14zu %14zu %8.3f ", i, pred, peak, diff);
		for (int k = 0; k < n; k++)
			printf(" %s", ov[k]);
		printf("\n");
		CHECK(diff < 5 && diff > -5, "config %zu: predicted %zu, measured %zu (%.2f%%)",
		      i, pred, peak, diff);
		/* the model is the allocator's own arithmetic: exact */
		CHECK(pred == peak, "config %zu: predicted %zu != measured %zu", i, pred, peak);
		CHECK(!mem_model_plan_bytes(&c, LLAMA_AC_NONE, &want) && want == none,
		      "config %zu: plan without AC %zu, model %zu", i, none, want);
		CHECK(!mem_model_plan_bytes(&c, c.activation_checkpoint.mode, &want) &&
		      want == mode, "config %zu: plan %zu, model %zu", i, mode, want);
		/* the setup's peak is the larger of the two plans */
		{
			mem_model_opts o;
			mem_model_report r;

			if (!mem_model_from_config(&o, &c, 0) && !mem_model_estimate(&o, &r)) {
				const mem_stage *st = &r.stage[0];
				size_t state = st->row[MEM_ROW_PARAMS] + st->row[MEM_ROW_GRADS] +
					       st->row[MEM_ROW_OPTIM];
				size_t acts = st->row[MEM_ROW_ACTS] + st->row[MEM_ROW_LOGITS] +
					      st->row[MEM_ROW_SCRATCH];

				CHECK(state + TITAN_MAX(acts, st->act_none) == setup_peak,
				      "config %zu: setup peak %zu, model %zu", i, setup_peak,
				      state + TITAN_MAX(acts, st->act_none));
				mem_model_report_free(&r);
			}
		}
		config_free(&c);
	}
}

static void opts_8b(mem_model_opts *o, train_config *c, int world, const char **extra, int n)
{
	const char *ov[16] = { "model.flavor=llama3_8b", "training.seq_len=8192",
			       "training.local_batch_size=2", "training.device=cuda",
			       "activation_checkpoint.mode=selective" };
	int k = 5, rc;

	for (int i = 0; i < n; i++)
		ov[k++] = extra[i];
	memset(o, 0, sizeof *o);
	rc = load(c, k, ov);
	CHECK(rc == 0, "%s", titan_errmsg());
	if (!rc) {
		rc = mem_model_from_config(o, c, world);
		CHECK(rc == 0, "%s", titan_errmsg());
		/* the plan these checks are about: FSDP2's bf16 policy */
		o->prec = MEM_PREC_BF16;
		config_free(c);
	}
}

static void test_parallel_rows(void)
{
	mem_model_opts o;
	mem_model_report one, eight;
	train_config c;
	uint64_t P;

	opts_8b(&o, &c, 1, NULL, 0);
	REQUIRE(mem_model_estimate(&o, &one) == 0, "%s", titan_errmsg());
	P = llama_param_count(&o.model);
	/* one rank holds everything: fp32 master, grads, 2 moments, bf16 copy */
	CHECK(one.stage[0].params == P, "%" PRIu64 " != %" PRIu64, one.stage[0].params, P);
	CHECK(one.stage[0].row[MEM_ROW_MASTER] == P * 4, "master");
	CHECK(one.stage[0].row[MEM_ROW_PARAMS] == P * 2, "bf16 copy");
	CHECK(one.stage[0].row[MEM_ROW_ALLGATHER] == 0, "no FSDP buffers on one rank");

	opts_8b(&o, &c, 8, NULL, 0);
	REQUIRE(o.par.dp_shard == 8, "dp_shard -1 takes the 8 ranks: %d", o.par.dp_shard);
	REQUIRE(mem_model_estimate(&o, &eight) == 0, "%s", titan_errmsg());
	/* the shards are an eighth, give or take torch.chunk's rounding */
	CHECK(eight.stage[0].params >= P / 8 && eight.stage[0].params < P / 8 + 8 * 4096 * 34,
	      "%" PRIu64, eight.stage[0].params);
	CHECK(eight.stage[0].row[MEM_ROW_PARAMS] == 0, "no persistent bf16 copy under FSDP");
	CHECK(eight.stage[0].row[MEM_ROW_ALLGATHER] > 0, "gathered blocks");
	/* activations do not shard over FSDP */
	CHECK(eight.stage[0].row[MEM_ROW_ACTS] == one.stage[0].row[MEM_ROW_ACTS], "acts");
	CHECK(eight.stage[0].model_only[MEM_ROW_ACTS], "bf16 rows are model only");
	mem_model_report_free(&one);
	mem_model_report_free(&eight);

	/* tp=8 with sequence parallel: activations shrink, the gather row appears */
	{
		const char *tp[] = { "parallelism.tensor_parallel_degree=8" };
		mem_model_report r;

		opts_8b(&o, &c, 8, tp, 1);
		REQUIRE(mem_model_estimate(&o, &r) == 0, "%s", titan_errmsg());
		CHECK(r.stage[0].row[MEM_ROW_TP] == 2ull * 2 * 8192 * 4096 * 2, "%zu",
		      r.stage[0].row[MEM_ROW_TP]);
		CHECK(r.stage[0].params < P / 7, "tp cuts the parameters");
		mem_model_report_free(&r);
	}
	/* pp=4 with 1F1B: stage 0 holds 4 microbatches, the last one 1 */
	{
		const char *pp[] = { "parallelism.pipeline_parallel_degree=4",
				     "training.local_batch_size=8" };
		mem_model_report r;

		opts_8b(&o, &c, 4, pp, 2);
		REQUIRE(mem_model_estimate(&o, &r) == 0, "%s", titan_errmsg());
		REQUIRE(r.nstages == 4, "%d stages", r.nstages);
		CHECK(r.stage[0].in_flight == 4 && r.stage[3].in_flight == 1, "%d %d",
		      r.stage[0].in_flight, r.stage[3].in_flight);
		CHECK(r.stage[0].layers == 8, "%d", r.stage[0].layers);
		CHECK(r.stage[3].row[MEM_ROW_LOGITS] > 0 && r.stage[0].row[MEM_ROW_LOGITS] == 0,
		      "logits live on the last stage");
		mem_model_report_free(&r);
	}
}

/* On a GPU the largest op's scratch: the tiled attention's, or with bf16
 * GEMMs the output head's bf16 operand copies, which only the last pipeline
 * stage holds.  None on the CPU, whose ops allocate outside the tracker.
 * With bf16 GEMMs, the weights' kept copies too. */
static void test_gpu_op_scratch(void)
{
	mem_model_opts o;
	mem_model_report r;
	train_config c;
	size_t scratch, pointers;

	opts_8b(&o, &c, 1, NULL, 0);
	REQUIRE(mem_model_estimate(&o, &r) == 0, "%s", titan_errmsg());
	/* fp32: the attention backward's scores, dP and D_i, and its table */
	attention_tiles_shape sh = {2, 8192, 8192, 32, 8, 128, 0, false, 0, 0};
	attention_tiles_scratch(&sh, true, 2, &scratch, &pointers);
	CHECK(r.stage[0].row[MEM_ROW_OP_SCRATCH] == cache_alloc_round(scratch) + cache_alloc_round(pointers),
	      "fp32: %zu, attention backward %zu + %zu", r.stage[0].row[MEM_ROW_OP_SCRATCH],
	      scratch, pointers);
	/* the tile keeps the two score buffers near the 512 MiB budget */
	CHECK(scratch > ((size_t)400 << 20) && scratch < ((size_t)640 << 20), "%zu", scratch);
	mem_model_report_free(&r);

	/* bf16 GEMMs: the head's chunk copy of dout [n, V] for a chunk of
	 * n = 2048 of the 16384 rows (64 MiB / (2 V) = 261 rows would be
	 * fewer than KERNELS_BF16_CHUNK_MIN_ROWS; the weight and the input
	 * come in bf16, kept), or the bf16 attention's scratch, whichever is
	 * larger; the trainer's precision (fp32 master weights are the
	 * parameters, the bf16 copies their own row) */
	o.matmul_bf16 = true;
	o.prec = MEM_PREC_FP32;
	REQUIRE(mem_model_estimate(&o, &r) == 0, "%s", titan_errmsg());
	size_t n = 2048, V = 128256, C = 4096, F = 14336;
	size_t head = cache_alloc_round(2 * n * V), att = 0;
	size_t block = 2 * C * C + 2 * 1024 * C + 3 * F * C + 2 * C;

	/* bf16 attention with 128-wide heads runs the fused kernels: their
	 * backward's bf16 copies of q, k, v and dout, D_i, and each query
	 * head's fp32 share of dk and dv (grouped heads) */
	att = cache_alloc_round(attention_flash_scratch(2, 8192, 8192, 32, 8, 128, true));
	size_t copies = 2 * (size_t)2 * 8192 * (32 + 8 + 8 + 32) * 128;
	size_t shares = 2 * 4 * (size_t)2 * 8192 * 32 * 128;
	CHECK(att > copies + shares && att < copies + shares + ((size_t)8 << 20), "%zu", att);
	CHECK(r.stage[0].row[MEM_ROW_OP_SCRATCH] == TITAN_MAX(head, att),
	      "bf16: %zu, head %zu, attention %zu", r.stage[0].row[MEM_ROW_OP_SCRATCH], head, att);
	/* the kept copies: every layer and the head (untied embeddings are
	 * no GEMM's) */
	CHECK(r.stage[0].row[MEM_ROW_BF16_WEIGHTS] == 2 * (32 * block + C + V * C),
	      "bf16 weights: %zu", r.stage[0].row[MEM_ROW_BF16_WEIGHTS]);
	mem_model_report_free(&r);

	{
		const char *pp[] = { "parallelism.pipeline_parallel_degree=4",
				     "training.local_batch_size=8",
				     "training.matmul_dtype=bfloat16" };

		opts_8b(&o, &c, 4, pp, 3);
		REQUIRE(o.matmul_bf16, "training.matmul_dtype=bfloat16 reaches the model");
		o.prec = MEM_PREC_FP32;
		REQUIRE(mem_model_estimate(&o, &r) == 0, "%s", titan_errmsg());
		CHECK(r.stage[3].row[MEM_ROW_OP_SCRATCH] >= head,
		      "the last stage runs the head: %zu", r.stage[3].row[MEM_ROW_OP_SCRATCH]);
		CHECK(r.stage[0].row[MEM_ROW_BF16_WEIGHTS] == 2 * 8 * block &&
		      r.stage[3].row[MEM_ROW_BF16_WEIGHTS] == 2 * (8 * block + C + V * C),
		      "each stage copies its own weights: %zu, %zu",
		      r.stage[0].row[MEM_ROW_BF16_WEIGHTS], r.stage[3].row[MEM_ROW_BF16_WEIGHTS]);
		mem_model_report_free(&r);
	}
	{
		const char *ov[] = { "model.flavor=debugmodel" };

		REQUIRE(load(&c, 1, ov) == 0, "%s", titan_errmsg());
		REQUIRE(mem_model_from_config(&o, &c, 1) == 0, "%s", titan_errmsg());
		config_free(&c);
		REQUIRE(mem_model_estimate(&o, &r) == 0, "%s", titan_errmsg());
		CHECK(r.stage[0].row[MEM_ROW_OP_SCRATCH] == 0, "cpu: %zu",
		      r.stage[0].row[MEM_ROW_OP_SCRATCH]);
		mem_model_report_free(&r);
	}
}

static void expect_layout_error(int world, const char **extra, int n, const char *want)
{
	const char *ov[16] = { "model.flavor=debugmodel" };
	train_config c;
	mem_model_opts o;
	int rc;

	for (int i = 0; i < n; i++)
		ov[1 + i] = extra[i];
	REQUIRE(load(&c, n + 1, ov) == 0, "%s", titan_errmsg());
	rc = mem_model_from_config(&o, &c, world);
	config_free(&c);
	CHECK(rc == TITAN_EUSAGE, "rc %d", rc);
	CHECK(strstr(titan_errmsg(), want), "message '%s' lacks '%s'", titan_errmsg(), want);
}

static void test_bad_layouts(void)
{
	const char *tp3[] = { "parallelism.tensor_parallel_degree=3" };
	const char *pp4[] = { "parallelism.pipeline_parallel_degree=4" };
	const char *dp2[] = { "parallelism.data_parallel_shard_degree=2" };
	const char *tp4[] = { "parallelism.tensor_parallel_degree=4" };

	expect_layout_error(0, tp3, 1, "tp=3 does not divide model.n_heads=16");
	expect_layout_error(0, pp4, 1, "pp=4 does not divide model.n_layers=6");
	expect_layout_error(8, dp2, 1, "needs 2 ranks, there are 8");
	expect_layout_error(6, tp4, 1, "world size 6 is not a multiple of");
}

static void test_max_batch(void)
{
	const char *ov[] = { "model.flavor=debugmodel", "training.seq_len=256",
			     "training.local_batch_size=4", "training.threads=1" };
	train_config c;
	mem_model_opts o;
	mem_model_report r;
	int best;

	REQUIRE(load(&c, 4, ov) == 0, "%s", titan_errmsg());
	REQUIRE(mem_model_from_config(&o, &c, 0) == 0, "%s", titan_errmsg());
	config_free(&c);
	REQUIRE(mem_model_max_batch(&o, (size_t)1 << 30, &best) == 0, "%s", titan_errmsg());
	CHECK(best > 4, "%d", best);
	o.batch = best;
	REQUIRE(mem_model_estimate(&o, &r) == 0, "%s", titan_errmsg());
	CHECK(r.total <= (size_t)1 << 30, "batch %d: %zu", best, r.total);
	mem_model_report_free(&r);
	o.batch = best + 1;
	REQUIRE(mem_model_estimate(&o, &r) == 0, "%s", titan_errmsg());
	CHECK(r.total > (size_t)1 << 30, "batch %d: %zu fits too", best + 1, r.total);
	mem_model_report_free(&r);
	REQUIRE(mem_model_max_batch(&o, 1 << 20, &best) == 0, "%s", titan_errmsg());
	CHECK(best == 0, "nothing fits 1 MiB: %d", best);
}

int main(void)
{
	RUN(test_matches_the_tracker);
	RUN(test_parallel_rows);
	RUN(test_gpu_op_scratch);
	RUN(test_bad_layouts);
	RUN(test_max_batch);
	return check_done();
}
