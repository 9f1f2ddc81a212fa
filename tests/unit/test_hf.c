/* test_hf.c - Hugging Face export and import, and the consolidated export:
 * names, the rotary permutation, bit-exact round trips, 16-bit values,
 * sharding, and the errors a user can hit. */
#include "core/base.h"
#include "ckpt/hf.h"
#include "ckpt/ckpt.h"
#include "ckpt/safetensors.h"
#include "config/config.h"
#include "core/half.h"
#include "core/json.h"
#include "check.h"

#include <sys/stat.h>
#include <unistd.h>

static uint32_t rng_state = 777;
static float rndf(void)
{
	rng_state = rng_state * 1664525u + 1013904223u;
	return (float)(rng_state >> 8) / (float)(1 << 24) - 0.5f;
}

static void path_in(char *out, size_t n, const char *name)
{
	if ((size_t)snprintf(out, n, "%s/%s", check_scratch, name) >= n)
		abort();
}

static bool exists(const char *dir, const char *name)
{
	char p[700];
	if ((size_t)snprintf(p, sizeof p, "%s%s%s", dir, name ? "/" : "",
			     name ? name : "") >= sizeof p)
		abort();
	return access(p, F_OK) == 0;
}

/* A source checkpoint: a small model with random weights, step 7, plus
 * optimizer state that exports must leave out. */
typedef struct src_ckpt {
	train_config tc;
	llama_tensor_info *ti;
	int nt;
	float **data;
	char dir[512];
} src_ckpt;

static int model_vocab = 64;

static const char *model_json(bool tied, bool scaling)
{
	static char buf[1024];
	snprintf(buf, sizeof buf,
		 "{\"model\": {\"dim\": 32, \"n_layers\": 2, \"n_heads\": 4, \"n_kv_heads\": 2,"
		 " \"vocab_size\": %d, \"multiple_of\": 16, \"ffn_dim_multiplier\": 1.3,"
		 " \"ffn_hidden\": 0, \"norm_eps\": 1e-5, \"rope_theta\": 500000.0,"
		 " \"rope_scaling\": %s, \"rope_scaling_factor\": 8.0,"
		 " \"rope_low_freq_factor\": 1.0, \"rope_high_freq_factor\": 4.0,"
		 " \"rope_original_max_pos\": 8192, \"max_seq_len\": 64,"
		 " \"tie_embeddings\": %s, \"depth_init\": true},"
		 " \"training\": {\"seq_len\": 16}}",
		 model_vocab, scaling ? "true" : "false", tied ? "true" : "false");
	return buf;
}

/* Write the checkpoint; skip names the tensor to leave out (NULL: none). */
static int src_make(src_ckpt *s, const char *name, bool tied, const char *skip,
		    const char *tokenizer)
{
	json_t *j = json_loads(model_json(tied, true), 0, NULL), *extra;
	ckpt_writer *w = NULL;
	int rc;

	memset(s, 0, sizeof *s);
	path_in(s->dir, sizeof s->dir, name);
	if ((rc = config_from_json(&s->tc, j, "test")))
		goto out;
	if ((rc = llama_tensors(&s->tc.model, &s->ti, &s->nt)))
		goto out;
	s->data = calloc((size_t)s->nt, sizeof *s->data);
	for (int i = 0; i < s->nt; i++) {
		s->data[i] = malloc(s->ti[i].numel * sizeof(float));
		for (size_t k = 0; k < s->ti[i].numel; k++)
			s->data[i][k] = rndf();
	}
	if ((rc = ckpt_writer_new(&w, s->dir, 7, false)))
		goto out;
	for (int i = 0; i < s->nt && !rc; i++) {
		ckpt_tensor t = { .name = s->ti[i].name, .ndim = s->ti[i].ndim };
		for (int d = 0; d < t.ndim; d++)
			t.shape[d] = t.slice_shape[d] = s->ti[i].shape[d];
		if (skip && !strcmp(skip, t.name))
			continue;
		rc = ckpt_writer_declare(w, 0, &t);
	}
	/* optimizer state after the weights, as the trainer saves it */
	ckpt_tensor m = { .name = "optim.exp_avg.norm.weight", .ndim = 1,
			  .shape = { 32 }, .slice_shape = { 32 } };
	if (!rc)
		rc = ckpt_writer_declare(w, 0, &m);
	for (int i = 0; i < s->nt && !rc; i++)
		if (!skip || strcmp(skip, s->ti[i].name))
			rc = ckpt_writer_put(w, s->data[i], s->ti[i].numel);
	float zeros[32] = { 0 };
	if (!rc)
		rc = ckpt_writer_put(w, zeros, 32);
	if (!rc && tokenizer)
		rc = ckpt_writer_attach_file(w, "tokenizer.json", tokenizer);
	extra = json_pack("{s:O}", "config", s->tc.json);
	if (!rc)
		rc = ckpt_writer_commit(w, NULL, extra);
	json_decref(extra);
out:
	ckpt_writer_free(w);
	json_decref(j);
	return rc;
}

static void src_free(src_ckpt *s)
{
	for (int i = 0; s->data && i < s->nt; i++)
		free(s->data[i]);
	free(s->data);
	free(s->ti);
	config_free(&s->tc);
}

static int rot_heads(const src_ckpt *s, const char *name)
{
	if (strstr(name, ".attention.wq."))
		return s->tc.model.n_heads;
	if (strstr(name, ".attention.wk."))
		return s->tc.model.n_kv_heads;
	return 0;
}

static int export_to(const src_ckpt *s, const char *out, const hf_export_opts *o)
{
	ckpt_reader *r;
	int rc = ckpt_reader_open(&r, s->dir);

	if (rc)
		return rc;
	rc = hf_export(r, out, o);
	ckpt_reader_close(r);
	return rc;
}

static void test_permute(void)
{
	enum { H = 2, D = 6, COLS = 3 };
	float src[H * D * COLS], dst[H * D * COLS], back[H * D * COLS];

	for (int i = 0; i < H * D * COLS; i++)
		src[i] = (float)i;
	hf_rotary_permute(src, dst, H, D, COLS, true);
	for (int h = 0; h < H; h++)
		for (int i = 0; i < D / 2; i++)
			for (int c = 0; c < COLS; c++) {
				CHECK(dst[(h * D + i) * COLS + c] == src[(h * D + 2 * i) * COLS + c],
				      "head %d row %d", h, i);
				CHECK(dst[(h * D + D / 2 + i) * COLS + c] ==
				      src[(h * D + 2 * i + 1) * COLS + c], "head %d row %d", h, D / 2 + i);
			}
	hf_rotary_permute(dst, back, H, D, COLS, false);
	CHECK(!memcmp(src, back, sizeof src), "to_hf then back is not the identity");
}

static void test_names(void)
{
	train_config tc;
	json_t *j = json_loads(model_json(false, false), 0, NULL);
	llama_tensor_info *ti;
	int n;
	char hf[96], back[96];

	REQUIRE(!config_from_json(&tc, j, "test"), "%s", titan_errmsg());
	json_decref(j);
	REQUIRE(!llama_tensors(&tc.model, &ti, &n), "%s", titan_errmsg());
	for (int i = 0; i < n; i++) {
		CHECK(hf_name_from_titan(ti[i].name, hf, sizeof hf), "%s", ti[i].name);
		CHECK(hf_name_to_titan(hf, back, sizeof back), "%s", hf);
		CHECK(!strcmp(back, ti[i].name), "%s -> %s -> %s", ti[i].name, hf, back);
		for (int k = 0; k < i; k++) {
			char other[96];
			hf_name_from_titan(ti[k].name, other, sizeof other);
			CHECK(strcmp(other, hf), "'%s' and '%s' both become '%s'", ti[k].name,
			      ti[i].name, hf);
		}
	}
	free(ti);
	config_free(&tc);
	static const char *const pairs[][2] = {
		{ "tok_embeddings.weight", "model.embed_tokens.weight" },
		{ "layers.0.attention.wq.weight", "model.layers.0.self_attn.q_proj.weight" },
		{ "layers.11.attention.wo.weight", "model.layers.11.self_attn.o_proj.weight" },
		{ "layers.3.feed_forward.w1.weight", "model.layers.3.mlp.gate_proj.weight" },
		{ "layers.3.feed_forward.w2.weight", "model.layers.3.mlp.down_proj.weight" },
		{ "layers.3.feed_forward.w3.weight", "model.layers.3.mlp.up_proj.weight" },
		{ "layers.1.attention_norm.weight", "model.layers.1.input_layernorm.weight" },
		{ "layers.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight" },
		{ "norm.weight", "model.norm.weight" },
		{ "output.weight", "lm_head.weight" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(pairs); i++) {
		CHECK(hf_name_from_titan(pairs[i][0], hf, sizeof hf) && !strcmp(hf, pairs[i][1]),
		      "%s", pairs[i][0]);
		CHECK(hf_name_to_titan(pairs[i][1], back, sizeof back) &&
		      !strcmp(back, pairs[i][0]), "%s", pairs[i][1]);
	}
	static const char *const not_titan[] = {
		"optim.exp_avg.norm.weight", "layers.01.attention.wq.weight",
		"layers.x.attention.wq.weight", "layers.1.attention.wq", "norm.bias",
		"layers..ffn_norm.weight", "model.norm.weight",
	};
	for (size_t i = 0; i < ARRAY_SIZE(not_titan); i++)
		CHECK(!hf_name_from_titan(not_titan[i], hf, sizeof hf), "%s", not_titan[i]);
	CHECK(!hf_name_to_titan("model.layers.0.self_attn.q_proj.bias", back, sizeof back),
	      "a bias has no titan name");
	CHECK(!hf_name_to_titan("model.layers.0.self_attn.rotary_emb.inv_freq", back,
				sizeof back), "inv_freq has no titan name");
	CHECK(!hf_name_from_titan("layers.0.attention.wq.weight", hf, 10), "truncation");
}

/* Every tensor of the checkpoint at dir equals the source's, bit for bit,
 * after f (identity, or a round through a 16-bit type). */
static void check_same(const src_ckpt *s, const char *dir, float (*f)(float))
{
	ckpt_reader *r;
	REQUIRE(!ckpt_reader_open(&r, dir), "%s", titan_errmsg());
	CHECK(ckpt_reader_count(r) == (size_t)s->nt, "%zu tensors, want %d",
	      ckpt_reader_count(r), s->nt);
	CHECK(ckpt_reader_step(r) == 0, "step %ld", ckpt_reader_step(r));
	for (int i = 0; i < s->nt; i++) {
		float *got = malloc(s->ti[i].numel * sizeof *got);
		int rc = ckpt_reader_read(r, s->ti[i].name, NULL, NULL, got);
		CHECK(!rc, "%s", titan_errmsg());
		size_t bad = 0;
		for (size_t k = 0; !rc && k < s->ti[i].numel; k++) {
			float want = f ? f(s->data[i][k]) : s->data[i][k];
			bad += memcmp(&want, &got[k], sizeof want) != 0;
		}
		CHECK(!bad, "%s: %zu of %zu values differ", s->ti[i].name, bad, s->ti[i].numel);
		free(got);
	}
	ckpt_reader_close(r);
}

static void test_roundtrip_f32(void)
{
	src_ckpt s;
	char out[600], imp[600], p[700];
	json_t *cfg = NULL, *man = NULL;
	st_file *f = NULL;

	REQUIRE(!src_make(&s, "rt-src", false, NULL, NULL), "%s", titan_errmsg());
	path_in(out, sizeof out, "rt-hf");
	path_in(imp, sizeof imp, "rt-imp");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	CHECK(exists(out, "config.json") && exists(out, "generation_config.json") &&
	      exists(out, "model.safetensors") && !exists(out, "model.safetensors.index.json") &&
	      !exists(out, "tokenizer.json"), "files of the export");
	snprintf(p, sizeof p, "%s.tmp", out);
	CHECK(!exists(p, NULL), "'%s' left behind", p);

	/* config.json */
	snprintf(p, sizeof p, "%s/config.json", out);
	REQUIRE(!json_load_path(&cfg, p), "%s", titan_errmsg());
	CHECK(!strcmp(json_string_value(json_array_get(json_object_get(cfg, "architectures"), 0)),
		      "LlamaForCausalLM"), "architectures");
	CHECK(json_integer_value(json_object_get(cfg, "intermediate_size")) == s.tc.model.ffn_hidden,
	      "intermediate_size");
	CHECK(json_integer_value(json_object_get(cfg, "head_dim")) == 8, "head_dim");
	CHECK(json_integer_value(json_object_get(cfg, "num_key_value_heads")) == 2, "kv heads");
	CHECK(json_integer_value(json_object_get(cfg, "max_position_embeddings")) == 64, "max pos");
	CHECK(json_is_false(json_object_get(cfg, "tie_word_embeddings")), "tie");
	CHECK(!strcmp(json_string_value(json_object_get(cfg, "torch_dtype")), "float32"), "dtype");
	json_t *rs = json_object_get(cfg, "rope_scaling");
	CHECK(!strcmp(json_string_value(json_object_get(rs, "rope_type")), "llama3") &&
	      json_number_value(json_object_get(rs, "factor")) == 8.0 &&
	      json_integer_value(json_object_get(rs, "original_max_position_embeddings")) == 8192,
	      "rope_scaling");
	CHECK(json_is_null(json_object_get(cfg, "bos_token_id")), "no tokenizer: no bos");
	json_decref(cfg);

	/* the weights under HF names, q and k permuted, no optimizer state */
	snprintf(p, sizeof p, "%s/model.safetensors", out);
	REQUIRE(!st_open(&f, p), "%s", titan_errmsg());
	CHECK(f->n == (size_t)s.nt, "%zu tensors, want %d", f->n, s.nt);
	CHECK(st_meta(f, "format") && !strcmp(st_meta(f, "format"), "pt"), "format pt");
	for (int i = 0; i < s.nt; i++) {
		char hf[96];
		hf_name_from_titan(s.ti[i].name, hf, sizeof hf);
		const st_tensor *t = st_find(f, hf);
		CHECK(t && t->dtype == ST_F32, "%s", hf);
		if (!t)
			continue;
		float *want = s.data[i], *perm = NULL;
		int heads = rot_heads(&s, s.ti[i].name);
		if (heads) {
			perm = malloc(s.ti[i].numel * sizeof *perm);
			hf_rotary_permute(want, perm, heads, 8, s.ti[i].shape[1], true);
			want = perm;
			CHECK(memcmp(s.data[i], st_data(f, t), 4 * s.ti[i].numel),
			      "%s not permuted", hf);
		}
		CHECK(!memcmp(want, st_data(f, t), 4 * s.ti[i].numel), "%s differs", hf);
		free(perm);
	}
	st_close(f);

	/* import gives back every tensor bit for bit, and a usable config */
	hf_import_opts io = { 0 };
	REQUIRE(!hf_import(out, imp, &io), "%s", titan_errmsg());
	check_same(&s, imp, NULL);
	CHECK(exists(imp, "model.json") && !exists(imp, "tokenizer.json"), "attached files");
	REQUIRE(!ckpt_read_manifest(imp, &man), "%s", titan_errmsg());
	json_t *mcfg = json_object_get(json_object_get(man, "extra"), "config");
	train_config tc;
	REQUIRE(!config_from_json(&tc, mcfg, "imported"), "%s", titan_errmsg());
	CHECK(tc.model.dim == 32 && tc.model.n_layers == 2 && tc.model.n_heads == 4 &&
	      tc.model.n_kv_heads == 2 && tc.model.vocab_size == 64 &&
	      tc.model.ffn_hidden == s.tc.model.ffn_hidden && tc.model.rope_scaling &&
	      tc.model.rope_theta == 500000.0 && tc.model.norm_eps == 1e-5 &&
	      tc.model.max_seq_len == 64 && !tc.model.tie_embeddings, "imported model config");
	config_free(&tc);
	json_t *st = json_object_get(json_object_get(man, "extra"), "train_state");
	CHECK(json_integer_value(json_object_get(st, "step")) == 0 &&
	      json_is_object(json_object_get(st, "loader")), "train_state");
	json_decref(man);

	/* model.json loads as a flavor file */
	snprintf(p, sizeof p, "model.flavor=%s/model.json", imp);
	char *ov[] = { p, "training.seq_len=16" };
	REQUIRE(!config_load(&tc, NULL, 2, ov), "%s", titan_errmsg());
	CHECK(tc.model.ffn_hidden == s.tc.model.ffn_hidden && tc.model.dim == 32, "flavor");
	config_free(&tc);

	/* an existing OUTDIR is a usage error unless forced */
	CHECK(export_to(&s, out, NULL) == TITAN_EUSAGE, "export over an existing dir");
	CHECK(hf_import(out, imp, &io) == TITAN_EUSAGE, "import over an existing dir");
	hf_export_opts eo = { .dtype = ST_F32, .force = true };
	CHECK(!export_to(&s, out, &eo), "%s", titan_errmsg());
	io.force = true;
	CHECK(!hf_import(out, imp, &io), "%s", titan_errmsg());
	check_same(&s, imp, NULL);
	src_free(&s);
}

static float via_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }
static float via_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

static void check_16bit(st_dtype dtype)
{
	src_ckpt s;
	char out[600], imp[600], p[700];
	st_file *f = NULL;
	hf_export_opts o = { .dtype = dtype };
	const char *tag = dtype == ST_BF16 ? "bf16" : "f16";

	snprintf(p, sizeof p, "%s-src", tag);
	REQUIRE(!src_make(&s, p, true, NULL, NULL), "%s", titan_errmsg());
	snprintf(p, sizeof p, "%s-hf", tag);
	path_in(out, sizeof out, p);
	snprintf(p, sizeof p, "%s-imp", tag);
	path_in(imp, sizeof imp, p);
	REQUIRE(!export_to(&s, out, &o), "%s", titan_errmsg());
	snprintf(p, sizeof p, "%s/model.safetensors", out);
	REQUIRE(!st_open(&f, p), "%s", titan_errmsg());
	CHECK(!st_find(f, "lm_head.weight"), "tied: no lm_head");
	CHECK(f->n == (size_t)s.nt, "%zu tensors", f->n);
	for (int i = 0; i < s.nt; i++) {
		char hf[96];
		hf_name_from_titan(s.ti[i].name, hf, sizeof hf);
		const st_tensor *t = st_find(f, hf);
		CHECK(t && t->dtype == dtype, "%s", hf);
		if (!t)
			continue;
		const uint8_t *d = st_data(f, t);
		float *want = s.data[i], *perm = NULL;
		int heads = rot_heads(&s, s.ti[i].name);
		if (heads) {
			perm = malloc(s.ti[i].numel * sizeof *perm);
			hf_rotary_permute(want, perm, heads, 8, s.ti[i].shape[1], true);
			want = perm;
		}
		size_t bad = 0;
		for (size_t k = 0; k < s.ti[i].numel; k++) {
			uint16_t h;
			memcpy(&h, d + 2 * k, 2);
			bad += h != (dtype == ST_BF16 ? f32_to_bf16(want[k]) : f32_to_f16(want[k]));
		}
		CHECK(!bad, "%s: %zu values", hf, bad);
		free(perm);
	}
	st_close(f);
	snprintf(p, sizeof p, "%s/config.json", out);
	json_t *cfg;
	REQUIRE(!json_load_path(&cfg, p), "%s", titan_errmsg());
	CHECK(!strcmp(json_string_value(json_object_get(cfg, "torch_dtype")),
		      dtype == ST_BF16 ? "bfloat16" : "float16"), "torch_dtype");
	CHECK(json_is_true(json_object_get(cfg, "tie_word_embeddings")), "tied");
	json_decref(cfg);
	REQUIRE(!hf_import(out, imp, NULL), "%s", titan_errmsg());
	check_same(&s, imp, dtype == ST_BF16 ? via_bf16 : via_f16);
	src_free(&s);
}

static void test_bf16(void) { check_16bit(ST_BF16); }
static void test_f16(void) { check_16bit(ST_F16); }

static void test_sharded(void)
{
	src_ckpt s;
	char out[600], imp[600], p[700];
	json_t *idx = NULL;
	hf_export_opts o = { .dtype = ST_F32, .max_shard_bytes = 20000 };

	REQUIRE(!src_make(&s, "sh-src", false, NULL, NULL), "%s", titan_errmsg());
	path_in(out, sizeof out, "sh-hf");
	path_in(imp, sizeof imp, "sh-imp");
	REQUIRE(!export_to(&s, out, &o), "%s", titan_errmsg());
	CHECK(!exists(out, "model.safetensors"), "one file despite the limit");
	snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
	REQUIRE(!json_load_path(&idx, p), "%s", titan_errmsg());
	json_t *wm = json_object_get(idx, "weight_map");
	CHECK(json_object_size(wm) == (size_t)s.nt, "%zu names in weight_map", json_object_size(wm));
	uint64_t total = 0;
	int nfiles = 0;
	for (int i = 0; i < s.nt; i++) {
		char hf[96];
		st_file *f;
		hf_name_from_titan(s.ti[i].name, hf, sizeof hf);
		const char *file = json_string_value(json_object_get(wm, hf));
		total += 4 * s.ti[i].numel;
		CHECK(file, "%s not in the weight_map", hf);
		if (!file)
			continue;
		int k, n;
		CHECK(sscanf(file, "model-%05d-of-%05d.safetensors", &k, &n) == 2 && k >= 1 &&
		      k <= n, "file name '%s'", file);
		nfiles = n;
		snprintf(p, sizeof p, "%s/%s", out, file);
		REQUIRE(!st_open(&f, p), "%s", titan_errmsg());
		CHECK(st_find(f, hf), "%s not in %s", hf, file);
		st_close(f);
	}
	CHECK(nfiles > 2, "%d shards", nfiles);
	snprintf(p, sizeof p, "model-%05d-of-%05d.safetensors", nfiles, nfiles);
	CHECK(exists(out, p), "%s", p);
	CHECK((uint64_t)json_integer_value(json_object_get(json_object_get(idx, "metadata"),
							   "total_size")) == total, "total_size");
	json_decref(idx);
	REQUIRE(!hf_import(out, imp, NULL), "%s", titan_errmsg());
	check_same(&s, imp, NULL);
	src_free(&s);
}

/* Rewrite DIR/model.safetensors without tensor drop, or with tensor
 * reshape given one row less. */
static int rewrite_weights(const char *dir, const char *drop, const char *reshape)
{
	char p[700];
	st_file *f = NULL;
	st_writer *w = NULL;
	int rc;

	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	if ((rc = st_open(&f, p)) || (rc = st_writer_new(&w)))
		goto out;
	for (size_t i = 0; i < f->n && !rc; i++) {
		st_tensor *t = &f->tensors[i];
		int64_t shape[ST_MAX_DIMS];
		memcpy(shape, t->shape, sizeof shape);
		if (drop && !strcmp(t->name, drop))
			continue;
		if (reshape && !strcmp(t->name, reshape))
			shape[0]--;
		rc = st_writer_add(w, t->name, t->dtype, t->ndim, shape, st_data(f, t));
	}
	/* st_writer_write replaces the file the map still reads: fine, the
	 * old inode lives on until st_close */
	if (!rc)
		rc = st_writer_write(w, p);
out:
	st_writer_free(w);
	st_close(f);
	return rc;
}

static int edit_config(const char *dir, const char *key, json_t *v)
{
	char p[700];
	json_t *cfg;
	int rc;

	snprintf(p, sizeof p, "%s/config.json", dir);
	if ((rc = json_load_path(&cfg, p)))
		return rc;
	if (v)
		json_object_set_new(cfg, key, v);
	else
		json_object_del(cfg, key);
	rc = json_write_path(cfg, p);
	json_decref(cfg);
	return rc;
}

/* import of dir fails with code, a message holding want1 and want2, and
 * nothing at the output. */
static void expect_import_error(const char *dir, int code, const char *want1,
				const char *want2)
{
	char out[600], tmp[700];
	int rc;

	path_in(out, sizeof out, "err-imp");
	snprintf(tmp, sizeof tmp, "%s.tmp", out);
	rc = hf_import(dir, out, NULL);
	CHECK(rc == code, "got %d (%s), want %d", rc, titan_errmsg(), code);
	CHECK(strstr(titan_errmsg(), want1) && strstr(titan_errmsg(), want2),
	      "message '%s' lacks '%s' or '%s'", titan_errmsg(), want1, want2);
	CHECK(!exists(out, NULL) && !exists(tmp, NULL), "output left after a failed import");
}

/* Tensors larger than one block of the streaming export (4M floats): the
 * embeddings and output of a 140000-token vocabulary (dim 32) come in two
 * blocks. */
static void count_call(void *arg, uint64_t done, uint64_t total)
{
	uint64_t *calls = arg;
	(void)done;
	(void)total;
	++*calls;
}

static void test_blocks(void)
{
	src_ckpt s;
	char out[600], imp[600];
	uint64_t calls = 0;
	hf_export_opts o = { .dtype = ST_F32, .progress = count_call, .progress_arg = &calls };

	model_vocab = 140000;
	int rc = src_make(&s, "blk-src", false, NULL, NULL);
	model_vocab = 64;
	REQUIRE(!rc, "%s", titan_errmsg());
	path_in(out, sizeof out, "blk-hf");
	path_in(imp, sizeof imp, "blk-imp");
	REQUIRE(!export_to(&s, out, &o), "%s", titan_errmsg());
	/* progress comes once a block */
	CHECK(calls == (uint64_t)s.nt + 2, "%llu blocks for %d tensors",
	      (unsigned long long)calls, s.nt);
	REQUIRE(!hf_import(out, imp, NULL), "%s", titan_errmsg());
	check_same(&s, imp, NULL);
	o.dtype = ST_BF16;
	o.force = true;
	hf_import_opts io = { .force = true };
	REQUIRE(!export_to(&s, out, &o), "%s", titan_errmsg());
	REQUIRE(!hf_import(out, imp, &io), "%s", titan_errmsg());
	check_same(&s, imp, via_bf16);
	src_free(&s);
}

/* config.json as other tools write it: keys left to their defaults, an
 * integer rope_theta, rope_scaling's older "type", lists of EOS ids. */
static void test_config_variants(void)
{
	src_ckpt s;
	char out[600], imp[600];
	json_t *man;

	REQUIRE(!src_make(&s, "var-src", false, NULL, NULL), "%s", titan_errmsg());
	path_in(out, sizeof out, "var-hf");
	path_in(imp, sizeof imp, "var-imp");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	REQUIRE(!edit_config(out, "head_dim", NULL) && !edit_config(out, "architectures", NULL) &&
		!edit_config(out, "hidden_act", NULL) && !edit_config(out, "mlp_bias", NULL) &&
		!edit_config(out, "tie_word_embeddings", NULL) &&
		!edit_config(out, "rope_theta", json_integer(500000)) &&
		!edit_config(out, "eos_token_id", json_pack("[i, i]", 1, 2)) &&
		!edit_config(out, "pretraining_tp", json_integer(1)) &&
		!edit_config(out, "rope_scaling",
			     json_pack("{s:s, s:f, s:f, s:f, s:i}", "type", "llama3", "factor", 8.0,
				       "low_freq_factor", 1.0, "high_freq_factor", 4.0,
				       "original_max_position_embeddings", 8192)),
		"%s", titan_errmsg());
	REQUIRE(!hf_import(out, imp, NULL), "%s", titan_errmsg());
	check_same(&s, imp, NULL);
	REQUIRE(!ckpt_read_manifest(imp, &man), "%s", titan_errmsg());
	train_config tc;
	REQUIRE(!config_from_json(&tc, json_object_get(json_object_get(man, "extra"), "config"),
				  "imported"), "%s", titan_errmsg());
	CHECK(tc.model.rope_scaling && tc.model.rope_theta == 500000.0 &&
	      tc.model.rope_scaling_factor == 8.0 && !tc.model.tie_embeddings, "config");
	config_free(&tc);
	json_decref(man);
	src_free(&s);
}

static void test_errors(void)
{
	src_ckpt s, bad;
	char out[600], base[600], tmp[700];

	REQUIRE(!src_make(&s, "err-src", false, NULL, NULL), "%s", titan_errmsg());
	path_in(base, sizeof base, "err-hf");
	REQUIRE(!export_to(&s, base, NULL), "%s", titan_errmsg());

	path_in(out, sizeof out, "err-missing");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	REQUIRE(!rewrite_weights(out, "model.layers.1.mlp.up_proj.weight", NULL), "%s",
		titan_errmsg());
	expect_import_error(out, TITAN_EFORMAT, "model.safetensors",
			    "model.layers.1.mlp.up_proj.weight");

	path_in(out, sizeof out, "err-shape");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	REQUIRE(!rewrite_weights(out, NULL, "model.layers.0.self_attn.k_proj.weight"), "%s",
		titan_errmsg());
	expect_import_error(out, TITAN_EFORMAT, "model.safetensors",
			    "model.layers.0.self_attn.k_proj.weight");
	CHECK(strstr(titan_errmsg(), "[15, 32]") && strstr(titan_errmsg(), "[16, 32]"),
	      "shapes in '%s'", titan_errmsg());

	path_in(out, sizeof out, "err-bias");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	REQUIRE(!edit_config(out, "attention_bias", json_true()), "%s", titan_errmsg());
	expect_import_error(out, TITAN_EFORMAT, "config.json", "attention_bias");

	path_in(out, sizeof out, "err-mistral");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	REQUIRE(!edit_config(out, "model_type", json_string("mistral")), "%s", titan_errmsg());
	expect_import_error(out, TITAN_EFORMAT, "config.json", "model_type");

	path_in(out, sizeof out, "err-rope");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	REQUIRE(!edit_config(out, "rope_scaling", json_pack("{s:s, s:f}", "rope_type", "yarn",
							   "factor", 4.0)), "%s", titan_errmsg());
	expect_import_error(out, TITAN_EFORMAT, "config.json", "rope_scaling");

	path_in(out, sizeof out, "err-headdim");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	REQUIRE(!edit_config(out, "head_dim", json_integer(16)), "%s", titan_errmsg());
	expect_import_error(out, TITAN_EFORMAT, "config.json", "head_dim");

	path_in(out, sizeof out, "err-nocfg");
	expect_import_error(out, TITAN_EIO, "config.json", "err-nocfg");

	/* export of a checkpoint that lacks a tensor: nothing at OUTDIR */
	REQUIRE(!src_make(&bad, "err-src2", false, "layers.1.ffn_norm.weight", NULL), "%s",
		titan_errmsg());
	path_in(out, sizeof out, "err-export");
	snprintf(tmp, sizeof tmp, "%s.tmp", out);
	int rc = export_to(&bad, out, NULL);
	CHECK(rc == TITAN_EFORMAT && strstr(titan_errmsg(), "layers.1.ffn_norm.weight"),
	      "got %d: %s", rc, titan_errmsg());
	CHECK(!exists(out, NULL) && !exists(tmp, NULL), "output left after a failed export");
	src_free(&bad);

	/* a failed forced export leaves the old OUTDIR alone */
	REQUIRE(!src_make(&bad, "err-src3", false, "norm.weight", NULL), "%s", titan_errmsg());
	hf_export_opts o = { .dtype = ST_F32, .force = true };
	CHECK(export_to(&bad, base, &o) == TITAN_EFORMAT, "%s", titan_errmsg());
	CHECK(exists(base, "model.safetensors") && exists(base, "config.json"), "old dir gone");
	o.dtype = ST_I32;
	CHECK(export_to(&s, base, &o) == TITAN_EUSAGE, "dtype I32");
	src_free(&bad);
	src_free(&s);
}

static void test_tokenizer(void)
{
	const char *data = check_data_dir();
	char tokp[600], out[600], imp[600], p[700];
	src_ckpt s;
	json_t *j;

	if (!data)
		SKIP("TITAN_DATA unset");
	snprintf(tokp, sizeof tokp, "%s/tokenizers/llama3/tokenizer.json", data);
	if (access(tokp, R_OK))
		SKIP("tokenizers/llama3/tokenizer.json not found in TITAN_DATA");
	/* the checkpoint carries the tokenizer; export finds it there */
	REQUIRE(!src_make(&s, "tok-src", false, NULL, tokp), "%s", titan_errmsg());
	path_in(out, sizeof out, "tok-hf");
	path_in(imp, sizeof imp, "tok-imp");
	REQUIRE(!export_to(&s, out, NULL), "%s", titan_errmsg());
	CHECK(exists(out, "tokenizer.json") && exists(out, "tokenizer_config.json"), "files");
	snprintf(p, sizeof p, "%s/tokenizer_config.json", out);
	REQUIRE(!json_load_path(&j, p), "%s", titan_errmsg());
	const char *bos = json_string_value(json_object_get(j, "bos_token"));
	const char *eos = json_string_value(json_object_get(j, "eos_token"));
	CHECK(bos && !strcmp(bos, "<|begin_of_text|>"), "bos_token %s", bos ? bos : "null");
	CHECK(eos && !strcmp(eos, "<|end_of_text|>"), "eos_token %s", eos ? eos : "null");
	CHECK(!strcmp(json_string_value(json_object_get(j, "tokenizer_class")),
		      "PreTrainedTokenizerFast"), "tokenizer_class");
	json_decref(j);
	snprintf(p, sizeof p, "%s/config.json", out);
	REQUIRE(!json_load_path(&j, p), "%s", titan_errmsg());
	CHECK(json_integer_value(json_object_get(j, "bos_token_id")) == 128000 &&
	      json_integer_value(json_object_get(j, "eos_token_id")) == 128001, "token ids");
	json_decref(j);
	/* a directory holding tokenizer.json, and OUTDIR with a trailing '/' */
	char dirarg[800], tokdir[600];
	snprintf(tokdir, sizeof tokdir, "%s/tokenizers/llama3", data);
	hf_export_opts o = { .dtype = ST_BF16, .tokenizer = tokdir };
	path_in(p, sizeof p, "tok-hf2");
	snprintf(dirarg, sizeof dirarg, "%s/", p);
	CHECK(!export_to(&s, dirarg, &o), "%s", titan_errmsg());
	CHECK(exists(p, "tokenizer.json") && exists(p, "model.safetensors"), "export to DIR/");
	/* a tiktoken file is no tokenizer.json */
	snprintf(tokdir, sizeof tokdir, "%s/tokenizers/llama3/tokenizer.model", data);
	path_in(p, sizeof p, "tok-hf3");
	CHECK(export_to(&s, p, &o) == TITAN_EUSAGE && !exists(p, NULL), "%s", titan_errmsg());

	REQUIRE(!hf_import(out, imp, NULL), "%s", titan_errmsg());
	CHECK(exists(imp, "tokenizer.json"), "import attaches the tokenizer");
	json_t *man;
	REQUIRE(!ckpt_read_manifest(imp, &man), "%s", titan_errmsg());
	json_t *st = json_object_get(json_object_get(man, "extra"), "train_state");
	const char *sha = json_string_value(json_object_get(st, "tokenizer_sha256"));
	CHECK(sha && strlen(sha) == 64, "tokenizer_sha256");
	json_decref(man);
	src_free(&s);
}

static void test_consolidated(void)
{
	src_ckpt s;
	char out[600];
	ckpt_reader *r;
	st_file *f;

	REQUIRE(!src_make(&s, "cons-src", false, NULL, NULL), "%s", titan_errmsg());
	path_in(out, sizeof out, "cons.safetensors");
	REQUIRE(!ckpt_reader_open(&r, s.dir), "%s", titan_errmsg());
	CHECK(!ckpt_export_consolidated(r, out, ST_F32, false, NULL, NULL), "%s", titan_errmsg());
	CHECK(ckpt_export_consolidated(r, out, ST_F32, false, NULL, NULL) == TITAN_EUSAGE,
	      "over an existing file");
	REQUIRE(!st_open(&f, out), "%s", titan_errmsg());
	CHECK(f->n == (size_t)s.nt, "%zu tensors (no optimizer state)", f->n);
	CHECK(!strcmp(st_meta(f, "format"), "titan-consolidated") &&
	      !strcmp(st_meta(f, "step"), "7"), "metadata");
	json_t *cfg = json_loads(st_meta(f, "config"), 0, NULL);
	CHECK(json_integer_value(json_object_get(cfg, "dim")) == 32, "config");
	json_decref(cfg);
	for (int i = 0; i < s.nt; i++) {
		const st_tensor *t = st_find(f, s.ti[i].name);
		CHECK(t && !memcmp(st_data(f, t), s.data[i], 4 * s.ti[i].numel), "%s",
		      s.ti[i].name);
	}
	st_close(f);
	CHECK(!ckpt_export_consolidated(r, out, ST_BF16, true, NULL, NULL), "%s", titan_errmsg());
	REQUIRE(!st_open(&f, out), "%s", titan_errmsg());
	const st_tensor *t = st_find(f, "norm.weight");
	uint16_t h;
	CHECK(t && t->dtype == ST_BF16, "bf16");
	if (t) {
		memcpy(&h, st_data(f, t), 2);
		CHECK(h == f32_to_bf16(s.data[s.nt - 2][0]), "bf16 value of %s", s.ti[s.nt - 2].name);
	}
	st_close(f);
	ckpt_reader_close(r);
	src_free(&s);
}

int main(void)
{
	if (check_scratch_open("test_hf"))
		return 1;
	RUN(test_permute);
	RUN(test_names);
	RUN(test_roundtrip_f32);
	RUN(test_bf16);
	RUN(test_f16);
	RUN(test_sharded);
	RUN(test_blocks);
	RUN(test_config_variants);
	RUN(test_errors);
	RUN(test_tokenizer);
	RUN(test_consolidated);
	check_rmtree(check_scratch);
	return check_done();
}
