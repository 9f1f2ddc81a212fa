/* test_par_layout.c - parallel layouts: parsing, checks against a model,
 * rank coordinates, and the slicing rule: every tensor is tiled exactly
 * once by the ranks that write, FSDP pieces cut as torch.chunk does. */
#include "core/base.h"
#include "model/shard.h"
#include "check.h"

static llama_config small_config(void)
{
	llama_config c = {
		.dim = 48, .n_layers = 4, .n_heads = 6, .n_kv_heads = 2, .vocab_size = 50,
		.multiple_of = 16, .norm_eps = 1e-5, .rope_theta = 500000.0,
		.max_seq_len = 64,
	};
	return c;
}

static void test_parse(void)
{
	par_layout l;
	char buf[128];
	REQUIRE(par_layout_parse("dp_shard=4,tp=2,pp=1", &l) == 0, "%s", titan_errmsg());
	CHECK(l.dp_shard == 4 && l.tp == 2 && l.pp == 1 && l.cp == 1 && l.dp_replicate == 1,
	      "values");
	par_layout_format(&l, buf, sizeof buf);
	CHECK(!strcmp(buf, "pp=1,dp_replicate=1,dp_shard=4,cp=1,tp=2"), "format: %s", buf);
	CHECK(par_layout_world(&l) == 8, "world");
	par_layout back;
	CHECK(par_layout_parse(buf, &back) == 0 && !memcmp(&back, &l, sizeof l), "round trip");
	CHECK(par_layout_parse("", &l) == 0 && par_layout_world(&l) == 1, "empty: single");

	static const struct {
		const char *in, *msg;
	} bad[] = {
		{ "tp=2,foo=3", "layout 'tp=2,foo=3': unknown key 'foo' (keys: pp, dp_replicate, dp_shard, cp, tp, pp_stages)" },
		{ "tp=0", "layout 'tp=0': tp=0: a degree is 1 to 99999" },
		{ "tp=-1", "layout 'tp=-1': tp: '-1' is not a number" },
		{ "tp", "layout 'tp': 'tp': expected KEY=N" },
		{ "tp=", "layout 'tp=': tp: expected a number" },
		{ "tp=2,tp=2", "layout 'tp=2,tp=2': tp given twice" },
		{ "tp=2,", "layout 'tp=2,': trailing ','" },
		{ "=2", "layout '=2': '=2': expected KEY=N" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int rc = par_layout_parse(bad[i].in, &l);
		CHECK(rc == TITAN_EUSAGE && !strcmp(titan_errmsg(), bad[i].msg), "'%s': %d %s",
		      bad[i].in, rc, titan_errmsg());
	}
}

static void test_check(void)
{
	llama_config c = small_config();
	REQUIRE(llama_config_check(&c) == 0, "%s", titan_errmsg());
	REQUIRE(c.ffn_hidden == 128, "ffn_hidden %d", c.ffn_hidden);
	par_layout l = { .pp = 2, .dp_replicate = 1, .dp_shard = 3, .cp = 1, .tp = 2 };
	CHECK(par_layout_check(&l, &c, 0) == 0, "%s", titan_errmsg());
	CHECK(par_layout_check(&l, &c, 12) == 0, "%s", titan_errmsg());
	CHECK(par_layout_check(&l, &c, 8) == TITAN_EUSAGE &&
	      !strcmp(titan_errmsg(), "layout pp=2,dp_replicate=1,dp_shard=3,cp=1,tp=2 needs 12 ranks, there are 8"),
	      "%s", titan_errmsg());
	l.tp = 3;
	CHECK(par_layout_check(&l, &c, 0) == TITAN_EUSAGE &&
	      !strcmp(titan_errmsg(), "tp=3 does not divide model.n_kv_heads=2"), "%s",
	      titan_errmsg());
	l.tp = 4;
	CHECK(par_layout_check(&l, &c, 0) == TITAN_EUSAGE &&
	      !strcmp(titan_errmsg(), "tp=4 does not divide model.n_heads=6"), "%s",
	      titan_errmsg());
	l.tp = 1;
	l.pp = 3;
	CHECK(par_layout_check(&l, &c, 0) == TITAN_EUSAGE &&
	      !strcmp(titan_errmsg(), "pp=3 does not divide model.n_layers=4"), "%s",
	      titan_errmsg());
	c.n_kv_heads = 6;
	c.vocab_size = 51;
	l = (par_layout){ 1, 1, 1, 1, 3, 1 };
	CHECK(par_layout_check(&l, &c, 0) == TITAN_EUSAGE &&
	      !strcmp(titan_errmsg(), "tp=3 does not divide model.ffn_hidden=128"), "%s",
	      titan_errmsg());
}

static void test_coord(void)
{
	par_layout l = { .pp = 2, .dp_replicate = 2, .dp_shard = 3, .cp = 2, .tp = 2 };
	int world = par_layout_world(&l), writers = 0;
	for (int r = 0; r < world; r++) {
		par_coord c = par_layout_coord(&l, r);
		int back = (((c.pp * l.dp_replicate + c.dp_replicate) * l.dp_shard + c.dp_shard) *
				    l.cp + c.cp) * l.tp + c.tp;
		CHECK(back == r, "rank %d -> %d", r, back);
		writers += par_rank_writes(&l, r);
	}
	CHECK(writers == world / 2, "replica 0 writes: %d", writers);
	par_coord c = par_layout_coord(&l, 37);
	CHECK(c.pp == 1 && c.dp_replicate == 1 && c.dp_shard == 0 && c.cp == 0 && c.tp == 1,
	      "rank 37: %d %d %d %d %d", c.pp, c.dp_replicate, c.dp_shard, c.cp, c.tp);
}

/* Every writing rank's slices tile each tensor exactly once, and replicas
 * hold what replica 0 holds. */
static void check_tiling(const llama_config *c, const par_layout *l)
{
	llama_tensor_info *ti;
	int nt;
	REQUIRE(llama_tensors(c, &ti, &nt) == 0, "%s", titan_errmsg());
	char name[128];
	par_layout_format(l, name, sizeof name);
	for (int i = 0; i < nt; i++) {
		const llama_tensor_info *t = &ti[i];
		int64_t rows = t->shape[0], cols = t->ndim == 2 ? t->shape[1] : 1;
		unsigned char *seen = calloc((size_t)(rows * cols), 1);
		bool ok = true;
		for (int r = 0; r < par_layout_world(l); r++) {
			int64_t s0[2], sn[2], s1[2], sn1[2];
			bool has = par_slice(c, l, r, t, s0, sn);
			bool writes = par_ckpt_slice(c, l, r, t, s1, sn1);
			/* What a rank writes is what it holds, or nothing. */
			ok &= !writes || (has && !memcmp(s0, s1, sizeof(int64_t) * (size_t)t->ndim) &&
					  !memcmp(sn, sn1, sizeof(int64_t) * (size_t)t->ndim));
			ok &= !writes || par_rank_writes(l, r);
			if (!writes)
				continue;
			int64_t c0 = t->ndim == 2 ? s0[1] : 0, cn = t->ndim == 2 ? sn[1] : 1;
			for (int64_t a = s0[0]; a < s0[0] + sn[0]; a++)
				for (int64_t b = c0; b < c0 + cn; b++)
					ok &= seen[a * cols + b]++ == 0;
		}
		/* A replica holds what its replica-0 peer holds. */
		for (int r = 0; r < par_layout_world(l); r++) {
			par_coord pc = par_layout_coord(l, r);
			int peer = (((pc.pp * l->dp_replicate) * l->dp_shard + pc.dp_shard) * l->cp +
				    pc.cp) * l->tp + pc.tp;
			int64_t s0[2], sn[2], s1[2], sn1[2];
			bool a = par_slice(c, l, r, t, s0, sn), b = par_slice(c, l, peer, t, s1, sn1);
			ok &= a == b && (!a || (!memcmp(s0, s1, sizeof(int64_t) * (size_t)t->ndim) &&
						!memcmp(sn, sn1, sizeof(int64_t) * (size_t)t->ndim)));
		}
		for (int64_t k = 0; k < rows * cols; k++)
			ok &= seen[k] == 1;
		CHECK(ok, "%s: tensor %s not tiled exactly once", name, t->name);
		free(seen);
	}
	free(ti);
}

static void test_slices(void)
{
	llama_config c = small_config();
	REQUIRE(llama_config_check(&c) == 0, "%s", titan_errmsg());
	static const par_layout layouts[] = {
		{ 1, 1, 1, 1, 1, 1 }, { 2, 1, 3, 1, 2, 1 }, { 1, 2, 2, 2, 2, 1 }, { 4, 1, 1, 1, 1, 1 },
		{ 1, 1, 5, 1, 1, 1 }, { 2, 2, 1, 3, 1, 1 }, { 1, 1, 7, 1, 2, 1 },
		{ 2, 1, 1, 1, 1, 2 }, { 2, 1, 2, 1, 2, 2 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(layouts); i++)
		check_tiling(&c, &layouts[i]);
	c.tie_embeddings = true;
	check_tiling(&c, &layouts[1]);

	/* The rule by hand, pp=2 dp_shard=3 tp=2: rank = (pp * 3 + ds) * 2 + tp. */
	c.tie_embeddings = false;
	par_layout l = { 2, 1, 3, 1, 2, 1 };
	llama_tensor_info *ti;
	int nt;
	REQUIRE(llama_tensors(&c, &ti, &nt) == 0, "%s", titan_errmsg());
	const llama_tensor_info *w1 = NULL, *wo = NULL, *emb = &ti[0], *out = &ti[nt - 1];
	const llama_tensor_info *w1_3 = NULL, *norm = &ti[nt - 2];
	for (int i = 0; i < nt; i++) {
		if (!strcmp(ti[i].name, "layers.0.feed_forward.w1.weight"))
			w1 = &ti[i];
		if (!strcmp(ti[i].name, "layers.3.feed_forward.w1.weight"))
			w1_3 = &ti[i];
		if (!strcmp(ti[i].name, "layers.1.attention.wo.weight"))
			wo = &ti[i];
	}
	REQUIRE(w1 && wo && w1_3, "names");
	int64_t s0[2], sn[2];
	/* w1 [128, 48]: tp 1 holds rows 64..128, FSDP 3 pieces of 22: 22, 22, 20. */
	CHECK(par_slice(&c, &l, 5, w1, s0, sn) && s0[0] == 64 + 44 && sn[0] == 20 &&
	      s0[1] == 0 && sn[1] == 48, "w1 rank 5: %lld+%lld", (long long)s0[0],
	      (long long)sn[0]);
	CHECK(!par_slice(&c, &l, 6, w1, s0, sn), "layer 0 is not on stage 1");
	CHECK(par_slice(&c, &l, 6, w1_3, s0, sn) && s0[0] == 0 && sn[0] == 22, "layer 3 on stage 1");
	/* wo [48, 48] row-parallel: tp 1 holds columns 24..48; rows 16 each. */
	CHECK(par_slice(&c, &l, 3, wo, s0, sn) && s0[0] == 16 && sn[0] == 16 && s0[1] == 24 &&
	      sn[1] == 24, "wo rank 3");
	/* tok_embeddings [50, 48] on stage 0: 25 rows per tp rank, 9, 9, 7. */
	CHECK(par_slice(&c, &l, 4, emb, s0, sn) && s0[0] == 18 && sn[0] == 7, "emb rank 4");
	CHECK(!par_slice(&c, &l, 4, out, s0, sn) && !par_slice(&c, &l, 4, norm, s0, sn),
	      "output and norm on the last stage");
	CHECK(par_slice(&c, &l, 11, norm, s0, sn) && s0[0] == 32 && sn[0] == 16, "norm rank 11");
	/* 5 rows over 7 FSDP ranks: pieces of 1, the last two empty. */
	llama_tensor_info tiny = { .name = "layers.0.ffn_norm.weight", .ndim = 1, .shape = { 5 } };
	par_layout l7 = { 1, 1, 7, 1, 1, 1 };
	CHECK(par_slice(&c, &l7, 4, &tiny, s0, sn) && s0[0] == 4 && sn[0] == 1, "piece 4");
	CHECK(!par_slice(&c, &l7, 5, &tiny, s0, sn) && !par_slice(&c, &l7, 6, &tiny, s0, sn),
	      "empty pieces");
	/* Interleaved, pp=2 with 2 stages a rank: layers 0, 2 on pp rank 0,
	 * 1, 3 on pp rank 1 */
	par_layout lv = { 2, 1, 1, 1, 1, 2 };
	CHECK(par_slice(&c, &lv, 0, w1, s0, sn) && !par_slice(&c, &lv, 1, w1, s0, sn),
	      "layer 0 on pp rank 0");
	CHECK(par_slice(&c, &lv, 1, w1_3, s0, sn) && !par_slice(&c, &lv, 0, w1_3, s0, sn),
	      "layer 3 on pp rank 1");
	CHECK(par_slice(&c, &lv, 1, wo, s0, sn) && par_slice(&c, &lv, 1, out, s0, sn) &&
	      par_slice(&c, &lv, 0, emb, s0, sn), "layer 1, the head on 1, embeddings on 0");
	char text[96];
	par_layout_format(&lv, text, sizeof text);
	CHECK(!strcmp(text, "pp=2,dp_replicate=1,dp_shard=1,cp=1,tp=1,pp_stages=2"), "%s", text);
	free(ti);
}

int main(void)
{
	RUN(test_parse);
	RUN(test_check);
	RUN(test_coord);
	RUN(test_slices);
	return check_done();
}
