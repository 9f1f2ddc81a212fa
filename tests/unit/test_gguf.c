/* test_gguf.c - GGUF export: the header, metadata, alignment and tensor
 * bytes read back by a small parser written here, the tokenizer metadata
 * of the shared Llama 3 and GPT-2 tokenizers (padded vocabularies, both
 * spellings of merges), and the errors that must leave nothing behind.
 * tests/golden/gguf_reader.py is the independent, complete check. */
#include "core/base.h"
#include "ckpt/gguf.h"
#include "config/config.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/half.h"
#include "model/llama.h"
#include "check.h"

#include <dirent.h>
#include <unistd.h>

static uint32_t rng_state = 2024;
static float rndf(void)
{
	rng_state = rng_state * 1664525u + 1013904223u;
	return (float)(rng_state >> 8) / (float)(1 << 24) - 0.5f;
}

static void path_in(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", check_scratch, name);
}

/* Entries of check_scratch whose name starts with prefix. */
static int count_prefix(const char *prefix)
{
	DIR *d = opendir(check_scratch);
	struct dirent *e;
	int n = 0;
	while (d && (e = readdir(d)))
		n += !strncmp(e->d_name, prefix, strlen(prefix));
	if (d)
		closedir(d);
	return n;
}

/* --- a checkpoint of a small model with random weights --- */

/* Save FOLDER/step-1 for a model built from the overrides, with tokenizer
 * (NULL: none) attached.  *cfg receives the model config. */
static int make_ckpt(const char *folder, const char *tokenizer, int nov,
		     const char **ov, llama_config *cfg)
{
	train_config tc;
	llama_tensor_info *info = NULL;
	ckpt_tensor *t = NULL;
	ckpt_saver *s = NULL;
	json_t *extra = NULL;
	int n = 0, rc;

	if ((rc = config_load(&tc, NULL, nov, (char **)ov)))
		return rc;
	*cfg = tc.model;
	rc = llama_tensors(&tc.model, &info, &n);
	t = rc ? NULL : calloc((size_t)n, sizeof *t);
	for (int i = 0; t && i < n; i++) {
		t[i].name = info[i].name;
		t[i].ndim = info[i].ndim;
		for (int d = 0; d < info[i].ndim; d++)
			t[i].shape[d] = t[i].slice_shape[d] = info[i].shape[d];
		t[i].data = malloc(info[i].numel * sizeof(float));
		for (size_t j = 0; t[i].data && j < info[i].numel; j++)
			t[i].data[j] = info[i].is_norm ? 1 + 0.1f * rndf() : rndf();
	}
	extra = json_pack("{s:O}", "config", tc.json);
	if (!rc)
		rc = ckpt_saver_new(&s, folder, 0, false, NULL, NULL);
	if (!rc && tokenizer)
		rc = ckpt_saver_attach_file(s, "tokenizer.json", tokenizer);
	if (!rc)
		rc = ckpt_save(s, 1, t, (size_t)n, extra);
	ckpt_saver_free(s);
	for (int i = 0; t && i < n; i++)
		free(t[i].data);
	free(t);
	free(info);
	json_decref(extra);
	config_free(&tc);
	return rc;
}

/* --- reading GGUF back, just enough to check it --- */

struct kv {
	char key[64];
	uint32_t type;
	size_t at;              /* offset of the value */
};

struct tinfo {
	char name[64];
	uint32_t ndim, type;
	uint64_t ne[4], offset;
};

struct gguf {
	titan_bytes f;
	size_t pos;
	bool bad;
	uint64_t nt, nkv;
	struct kv kv[64];
	struct tinfo t[64];
	size_t hdr_end, data;
};

static uint64_t rd(struct gguf *g, int bytes)
{
	uint64_t v = 0;
	if (g->pos + (size_t)bytes > g->f.n) {
		g->bad = true;
		return 0;
	}
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)g->f.v[g->pos + i] << (8 * i);
	g->pos += (size_t)bytes;
	return v;
}

/* A string into out (truncated), or skipped when out is NULL. */
static void rd_str(struct gguf *g, char *out, size_t n)
{
	uint64_t len = rd(g, 8);
	if (g->bad || len > g->f.n - g->pos) {
		g->bad = true;
		return;
	}
	if (out)
		snprintf(out, n, "%.*s", (int)TITAN_MIN(len, (uint64_t)n - 1),
			 (const char *)g->f.v + g->pos);
	g->pos += len;
}

static int type_size(uint32_t t)
{
	static const int size[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
	return t < ARRAY_SIZE(size) ? size[t] : 0;
}

static void skip_value(struct gguf *g, uint32_t t)
{
	if (t == 8) {
		rd_str(g, NULL, 0);
	} else if (t == 9) {
		uint32_t et = (uint32_t)rd(g, 4);
		uint64_t n = rd(g, 8);
		for (uint64_t i = 0; i < n && !g->bad; i++)
			skip_value(g, et);
	} else if (type_size(t)) {
		rd(g, type_size(t));
	} else {
		g->bad = true;
	}
}

static bool gguf_read(struct gguf *g, const char *path)
{
	memset(g, 0, sizeof *g);
	if (file_read_all(path, &g->f) || g->f.n < 24 || memcmp(g->f.v, "GGUF", 4))
		return false;
	g->pos = 4;
	if (rd(g, 4) != 3)
		return false;
	g->nt = rd(g, 8);
	g->nkv = rd(g, 8);
	if (g->nt > ARRAY_SIZE(g->t) || g->nkv > ARRAY_SIZE(g->kv))
		return false;
	for (uint64_t i = 0; i < g->nkv && !g->bad; i++) {
		rd_str(g, g->kv[i].key, sizeof g->kv[i].key);
		g->kv[i].type = (uint32_t)rd(g, 4);
		g->kv[i].at = g->pos;
		skip_value(g, g->kv[i].type);
	}
	for (uint64_t i = 0; i < g->nt && !g->bad; i++) {
		struct tinfo *t = &g->t[i];
		rd_str(g, t->name, sizeof t->name);
		t->ndim = (uint32_t)rd(g, 4);
		if (t->ndim > 4)
			return false;
		for (uint32_t d = 0; d < t->ndim; d++)
			t->ne[d] = rd(g, 8);
		t->type = (uint32_t)rd(g, 4);
		t->offset = rd(g, 8);
	}
	g->hdr_end = g->pos;
	g->data = (g->pos + 31) / 32 * 32;
	return !g->bad;
}

static void gguf_free(struct gguf *g)
{
	bytes_free(&g->f);
}

static const struct kv *find_kv(const struct gguf *g, const char *key)
{
	for (uint64_t i = 0; i < g->nkv; i++)
		if (!strcmp(g->kv[i].key, key))
			return &g->kv[i];
	return NULL;
}

static const struct tinfo *find_t(const struct gguf *g, const char *name)
{
	for (uint64_t i = 0; i < g->nt; i++)
		if (!strcmp(g->t[i].name, name))
			return &g->t[i];
	return NULL;
}

/* u32 value of key, or ~0 when absent or of another type. */
static uint32_t kv_u32(struct gguf *g, const char *key)
{
	const struct kv *k = find_kv(g, key);
	if (!k || k->type != 4)
		return ~0u;
	g->pos = k->at;
	return (uint32_t)rd(g, 4);
}

/* 0 or 1, or -1 when absent or not a bool. */
static int kv_bool(struct gguf *g, const char *key)
{
	const struct kv *k = find_kv(g, key);
	if (!k || k->type != 7)
		return -1;
	g->pos = k->at;
	return (int)rd(g, 1);
}

static void kv_str(struct gguf *g, const char *key, char *out, size_t n)
{
	const struct kv *k = find_kv(g, key);
	out[0] = 0;
	if (!k || k->type != 8)
		return;
	g->pos = k->at;
	rd_str(g, out, n);
}

/* Element i of the string array key into out; its count in *count. */
static bool kv_arr_str(struct gguf *g, const char *key, uint64_t i, char *out, size_t n,
		       uint64_t *count)
{
	const struct kv *k = find_kv(g, key);
	if (!k || k->type != 9)
		return false;
	g->pos = k->at;
	if (rd(g, 4) != 8)
		return false;
	*count = rd(g, 8);
	for (uint64_t j = 0; j < i && !g->bad; j++)
		rd_str(g, NULL, 0);
	rd_str(g, out, n);
	return i < *count && !g->bad;
}

static bool kv_arr_i32(struct gguf *g, const char *key, uint64_t i, int32_t *out,
		       uint64_t *count)
{
	const struct kv *k = find_kv(g, key);
	if (!k || k->type != 9)
		return false;
	g->pos = k->at;
	if (rd(g, 4) != 5)
		return false;
	*count = rd(g, 8);
	if (i >= *count)
		return false;
	g->pos += 4 * i;
	*out = (int32_t)rd(g, 4);
	return !g->bad;
}

/* Every tensor starts on the alignment inside the file, and the file ends
 * at the end of the last padded tensor. */
static void check_layout(struct gguf *g)
{
	uint64_t end = 0;
	for (uint64_t i = 0; i < g->nt; i++) {
		const struct tinfo *t = &g->t[i];
		uint64_t n = 1;
		for (uint32_t d = 0; d < t->ndim; d++)
			n *= t->ne[d];
		CHECK(t->offset % 32 == 0, "'%s' offset %llu", t->name, (unsigned long long)t->offset);
		end = TITAN_MAX(end, t->offset + n * (t->type == 0 ? 4 : 2));
	}
	CHECK(g->data % 32 == 0 && g->data + (end + 31) / 32 * 32 == g->f.n,
	      "data at %zu, tensors end at %llu, file %zu bytes", g->data,
	      (unsigned long long)end, g->f.n);
	for (size_t i = g->hdr_end; i < g->data && i < g->f.n; i++)
		CHECK(g->f.v[i] == 0, "header padding byte %zu is %u", i, g->f.v[i]);
}

/* The bytes of GGUF tensor name equal ckpt tensor titan converted to type. */
static bool same_bytes(struct gguf *g, ckpt_reader *r, const char *name, const char *titan)
{
	const struct tinfo *t = find_t(g, name);
	const ckpt_tensor_info *ci = ckpt_reader_find(r, titan);
	if (!t || !ci)
		return false;
	size_t n = 1;
	for (int d = 0; d < ci->ndim; d++)
		n *= (size_t)ci->shape[d];
	float *ref = malloc(n * sizeof *ref);
	bool ok = ref && !ckpt_reader_read(r, titan, NULL, NULL, ref);
	const uint8_t *p = g->f.v + g->data + t->offset;
	for (size_t i = 0; ok && i < n; i++) {
		if (t->type == 0) {
			ok = !memcmp(p + 4 * i, &ref[i], 4);
		} else {
			uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
			ok = h == (t->type == 1 ? f32_to_f16(ref[i]) : f32_to_bf16(ref[i]));
		}
	}
	free(ref);
	return ok;
}

/* --- tests --- */

static const char *small_model[] = {
	"model.dim=16", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
	"model.multiple_of=16", "model.max_seq_len=64", "training.seq_len=32", "model.vocab_size=64",
};

static const char *tok_path(char *out, size_t n, const char *name, const char *file)
{
	const char *data = check_data_dir();
	if (!data)
		return NULL;
	snprintf(out, n, "%s/tokenizers/%s/%s", data, name, file);
	return access(out, R_OK) ? NULL : out;
}

static void test_llama3(void)
{
	char tok[512], folder[512], out[600];
	const char *ov[] = {
		"model.dim=16", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
		"model.multiple_of=16", "model.max_seq_len=64", "training.seq_len=32", "model.vocab_size=128256",
		"model.rope_scaling=true", "model.rope_theta=500000",
	};
	llama_config c;
	ckpt_reader *r = NULL;

	if (!tok_path(tok, sizeof tok, "llama3", "tokenizer.json"))
		SKIP("TITAN_DATA unset or no tokenizers/llama3/tokenizer.json");
	path_in(folder, sizeof folder, "llama3");
	REQUIRE(make_ckpt(folder, tok, (int)ARRAY_SIZE(ov), ov, &c) == 0, "%s", titan_errmsg());
	REQUIRE(ckpt_reader_open(&r, folder) == 0, "%s", titan_errmsg());

	static const st_dtype dt[] = { ST_F32, ST_F16, ST_BF16 };
	static const uint32_t ggml[] = { 0, 1, 30 }, ftype[] = { 0, 1, 32 };
	for (size_t k = 0; k < ARRAY_SIZE(dt); k++) {
		gguf_export_opts o = { .dtype = dt[k], .name = "tiny" };
		struct gguf g;
		char s[64];
		uint64_t n;
		int32_t ty;

		snprintf(out, sizeof out, "%s/llama3-%s.gguf", check_scratch, st_dtype_name(dt[k]));
		CHECK(gguf_export(r, out, &o) == 0, "%s", titan_errmsg());
		if (!gguf_read(&g, out)) {
			CHECK(0, "'%s' does not parse", out);
			gguf_free(&g);
			continue;
		}
		/* 9 per layer, embeddings, norm, output, rope_freqs */
		CHECK(g.nt == 2 * 9 + 4, "%llu tensors", (unsigned long long)g.nt);
		check_layout(&g);
		CHECK(kv_u32(&g, "general.file_type") == ftype[k], "file_type");
		CHECK(kv_u32(&g, "general.alignment") == 32, "alignment");
		CHECK(kv_u32(&g, "llama.vocab_size") == 128256, "vocab_size");
		CHECK(kv_u32(&g, "llama.block_count") == 2, "block_count");
		CHECK(kv_u32(&g, "llama.context_length") == 64, "context_length");
		CHECK(kv_u32(&g, "llama.feed_forward_length") == (uint32_t)c.ffn_hidden, "ffn");
		CHECK(kv_u32(&g, "llama.attention.head_count_kv") == 1, "kv heads");
		CHECK(kv_u32(&g, "llama.rope.dimension_count") == 8, "rope dims");
		CHECK(kv_u32(&g, "tokenizer.ggml.bos_token_id") == 128000, "bos");
		CHECK(kv_u32(&g, "tokenizer.ggml.eos_token_id") == 128001, "eos");
		CHECK(kv_bool(&g, "tokenizer.ggml.add_bos_token") == 1, "add_bos");
		CHECK(kv_bool(&g, "tokenizer.ggml.clean_spaces") == 0, "clean_spaces");
		kv_str(&g, "general.architecture", s, sizeof s);
		CHECK(!strcmp(s, "llama"), "architecture '%s'", s);
		kv_str(&g, "general.name", s, sizeof s);
		CHECK(!strcmp(s, "tiny"), "name '%s'", s);
		kv_str(&g, "tokenizer.ggml.pre", s, sizeof s);
		CHECK(!strcmp(s, "llama-bpe"), "pre '%s'", s);
		CHECK(kv_arr_str(&g, "tokenizer.ggml.tokens", 128000, s, sizeof s, &n) &&
		      !strcmp(s, "<|begin_of_text|>") && n == 128256, "token 128000 '%s'", s);
		CHECK(kv_arr_str(&g, "tokenizer.ggml.tokens", 1, s, sizeof s, &n) &&
		      !strcmp(s, "\""), "token 1 '%s'", s);
		CHECK(kv_arr_i32(&g, "tokenizer.ggml.token_type", 128009, &ty, &n) && ty == 3 &&
		      n == 128256, "type of 128009: %d", ty);
		CHECK(kv_arr_i32(&g, "tokenizer.ggml.token_type", 100, &ty, &n) && ty == 1,
		      "type of 100: %d", ty);
		CHECK(kv_arr_str(&g, "tokenizer.ggml.merges", 0, s, sizeof s, &n) &&
		      !strcmp(s, "Ġ Ġ") && n == 280147, "merge 0 '%s' of %llu", s,
		      (unsigned long long)n);

		const struct tinfo *t = find_t(&g, "blk.1.attn_k.weight");
		CHECK(t && t->ndim == 2 && t->ne[0] == 16 && t->ne[1] == 8 && t->type == ggml[k],
		      "attn_k info");
		t = find_t(&g, "blk.0.ffn_norm.weight");
		CHECK(t && t->ndim == 1 && t->ne[0] == 16 && t->type == 0, "ffn_norm info");
		t = find_t(&g, "rope_freqs.weight");
		CHECK(t && t->ndim == 1 && t->ne[0] == 4 && t->type == 0, "rope_freqs info");
		CHECK(find_t(&g, "output.weight"), "no output tensor");
		CHECK(same_bytes(&g, r, "token_embd.weight", "tok_embeddings.weight"),
		      "token_embd bytes (%s)", st_dtype_name(dt[k]));
		CHECK(same_bytes(&g, r, "blk.1.ffn_down.weight", "layers.1.feed_forward.w2.weight"),
		      "ffn_down bytes (%s)", st_dtype_name(dt[k]));
		CHECK(same_bytes(&g, r, "output_norm.weight", "norm.weight"), "output_norm bytes");
		gguf_free(&g);
	}
	ckpt_reader_close(r);
}

/* GPT-2's 50257 tokens in a model of 50304: placeholders fill the rest;
 * tied embeddings: no output tensor; both spellings of merges give the
 * same file. */
static void test_gpt2_padded(void)
{
	char tok[512], legacy[512], folder[512], a[600], b[600];
	const char *ov[] = {
		"model.dim=8", "model.n_layers=1", "model.n_heads=1", "model.n_kv_heads=1",
		"model.multiple_of=8", "model.max_seq_len=32", "training.seq_len=32", "model.vocab_size=50304",
		"model.tie_embeddings=true",
	};
	llama_config c;
	ckpt_reader *r = NULL;
	struct gguf g;
	char s[64];
	uint64_t n;
	int32_t ty;

	if (!tok_path(tok, sizeof tok, "gpt2", "tokenizer.json") ||
	    !tok_path(legacy, sizeof legacy, "gpt2", "tokenizer.legacy-merges.json"))
		SKIP("TITAN_DATA unset or no tokenizers/gpt2");
	path_in(folder, sizeof folder, "gpt2");
	REQUIRE(make_ckpt(folder, tok, (int)ARRAY_SIZE(ov), ov, &c) == 0, "%s", titan_errmsg());
	REQUIRE(ckpt_reader_open(&r, folder) == 0, "%s", titan_errmsg());
	path_in(a, sizeof a, "gpt2.gguf");
	path_in(b, sizeof b, "gpt2-legacy.gguf");
	gguf_export_opts o = { .dtype = ST_BF16 };
	CHECK(gguf_export(r, a, &o) == 0, "%s", titan_errmsg());
	o.tokenizer = legacy;
	CHECK(gguf_export(r, b, &o) == 0, "%s", titan_errmsg());
	ckpt_reader_close(r);

	REQUIRE(gguf_read(&g, a), "'%s' does not parse", a);
	check_layout(&g);
	CHECK(g.nt == 9 + 2, "%llu tensors", (unsigned long long)g.nt);
	CHECK(!find_t(&g, "output.weight") && !find_t(&g, "rope_freqs.weight"),
	      "tied: no output, no rope_freqs");
	kv_str(&g, "tokenizer.ggml.pre", s, sizeof s);
	CHECK(!strcmp(s, "gpt-2"), "pre '%s'", s);
	kv_str(&g, "general.name", s, sizeof s);
	CHECK(!strcmp(s, "titan"), "name '%s'", s);
	CHECK(kv_arr_str(&g, "tokenizer.ggml.tokens", 50303, s, sizeof s, &n) &&
	      !strcmp(s, "[PAD50303]") && n == 50304, "token 50303 '%s' of %llu", s,
	      (unsigned long long)n);
	CHECK(kv_arr_str(&g, "tokenizer.ggml.tokens", 50256, s, sizeof s, &n) &&
	      !strcmp(s, "<|endoftext|>"), "token 50256 '%s'", s);
	CHECK(kv_arr_i32(&g, "tokenizer.ggml.token_type", 50257, &ty, &n) && ty == 5,
	      "type of 50257: %d", ty);
	CHECK(kv_arr_i32(&g, "tokenizer.ggml.token_type", 50256, &ty, &n) && ty == 3,
	      "type of 50256: %d", ty);
	CHECK(kv_arr_str(&g, "tokenizer.ggml.merges", 0, s, sizeof s, &n) &&
	      !strcmp(s, "Ġ t") && n == 50000, "merge 0 '%s' of %llu", s,
	      (unsigned long long)n);
	CHECK(kv_u32(&g, "tokenizer.ggml.eos_token_id") == 50256, "eos");
	CHECK(kv_bool(&g, "tokenizer.ggml.add_bos_token") == 0, "add_bos");

	titan_bytes fb = { 0 };
	CHECK(file_read_all(b, &fb) == 0 && fb.n == g.f.n && !memcmp(fb.v, g.f.v, fb.n),
	      "string and pair merges give different files");
	bytes_free(&fb);
	gguf_free(&g);
}

static void test_errors(void)
{
	char folder[512], out[600], bad[600];
	llama_config c;
	ckpt_reader *r = NULL;
	gguf_export_opts o = { .dtype = ST_F32 };

	path_in(folder, sizeof folder, "notok");
	REQUIRE(make_ckpt(folder, NULL, (int)ARRAY_SIZE(small_model), small_model, &c) == 0,
		"%s", titan_errmsg());
	REQUIRE(ckpt_reader_open(&r, folder) == 0, "%s", titan_errmsg());
	path_in(out, sizeof out, "err.gguf");

	/* the checkpoint carries no tokenizer and none is named */
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "no tokenizer: %s", titan_errmsg());
	CHECK(strstr(titan_errmsg(), "tokenizer"), "message '%s'", titan_errmsg());

	/* a WordPiece tokenizer */
	path_in(bad, sizeof bad, "wordpiece.json");
	static const char wp[] = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
	REQUIRE(atomic_write_file(bad, wp, sizeof wp - 1) == 0, "%s", titan_errmsg());
	o.tokenizer = bad;
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "wordpiece: %s", titan_errmsg());
	CHECK(strstr(titan_errmsg(), "WordPiece") && strstr(titan_errmsg(), "BPE"),
	      "message '%s'", titan_errmsg());

	/* BPE but not byte-level */
	static const char nb[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
				 "\"merges\": []}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}";
	REQUIRE(atomic_write_file(bad, nb, sizeof nb - 1) == 0, "%s", titan_errmsg());
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "not byte-level: %s", titan_errmsg());
	CHECK(strstr(titan_errmsg(), "byte-level"), "message '%s'", titan_errmsg());

	/* not JSON at all */
	REQUIRE(atomic_write_file(bad, "Zm9v 0\n", 7) == 0, "%s", titan_errmsg());
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "not JSON: %s", titan_errmsg());

	/* a missing file */
	o.tokenizer = "/nonexistent/tokenizer.json";
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "missing: %s", titan_errmsg());

	/* an unsupported dtype */
	o.dtype = ST_I32;
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "I32: %s", titan_errmsg());

	CHECK(count_prefix("err.gguf") == 0, "a failed export left something behind");

	/* an existing output stays as it was unless forced */
	REQUIRE(atomic_write_file(out, "keep", 4) == 0, "%s", titan_errmsg());
	o.dtype = ST_F32;
	o.tokenizer = NULL;
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "existing: %s", titan_errmsg());
	CHECK(strstr(titan_errmsg(), "exists"), "message '%s'", titan_errmsg());
	titan_bytes fb = { 0 };
	CHECK(file_read_all(out, &fb) == 0 && fb.n == 4 && !memcmp(fb.v, "keep", 4),
	      "existing file changed");
	bytes_free(&fb);
	o.force = true;           /* forced, but no tokenizer: still untouched */
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "forced: %s", titan_errmsg());
	CHECK(file_read_all(out, &fb) == 0 && fb.n == 4, "failed forced export replaced it");
	bytes_free(&fb);
	CHECK(count_prefix("err.gguf") == 1, "a failed export left something behind");
	ckpt_reader_close(r);
}

/* force replaces an existing file; progress reaches the total. */
static void progress(void *arg, uint64_t done, uint64_t total)
{
	uint64_t *p = arg;
	CHECK(done <= total && done >= p[0], "progress %llu of %llu",
	      (unsigned long long)done, (unsigned long long)total);
	p[0] = done;
	p[1] = total;
}

static void test_force(void)
{
	char tok[512], folder[512], out[600];
	llama_config c;
	ckpt_reader *r = NULL;
	uint64_t prog[2] = { 0, 1 };

	if (!tok_path(tok, sizeof tok, "gpt2", "tokenizer.json"))
		SKIP("TITAN_DATA unset or no tokenizers/gpt2");
	path_in(folder, sizeof folder, "small");
	const char *ov[] = {
		"model.dim=16", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
		"model.multiple_of=16", "model.max_seq_len=64", "training.seq_len=32", "model.vocab_size=50257",
	};
	REQUIRE(make_ckpt(folder, NULL, (int)ARRAY_SIZE(ov), ov, &c) == 0, "%s", titan_errmsg());
	REQUIRE(ckpt_reader_open(&r, folder) == 0, "%s", titan_errmsg());
	path_in(out, sizeof out, "forced.gguf");
	REQUIRE(atomic_write_file(out, "old", 3) == 0, "%s", titan_errmsg());
	gguf_export_opts o = { .dtype = ST_F16, .tokenizer = tok, .force = true,
			       .progress = progress, .progress_arg = prog };
	CHECK(gguf_export(r, out, &o) == 0, "%s", titan_errmsg());
	CHECK(prog[0] == prog[1] && prog[0] > 0, "progress ended at %llu of %llu",
	      (unsigned long long)prog[0], (unsigned long long)prog[1]);
	struct gguf g;
	CHECK(gguf_read(&g, out) && g.nt == 2 * 9 + 3, "forced export did not replace the file");
	gguf_free(&g);

	/* a directory holding tokenizer.json names it too */
	char dir[512];
	snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(tok, '/') - tok), tok);
	o.tokenizer = dir;
	o.progress = NULL;
	CHECK(gguf_export(r, out, &o) == 0, "tokenizer directory: %s", titan_errmsg());
	o.tokenizer = tok;

	/* a model smaller than the tokenizer */
	path_in(folder, sizeof folder, "tiny");
	REQUIRE(make_ckpt(folder, NULL, (int)ARRAY_SIZE(small_model), small_model, &c) == 0,
		"%s", titan_errmsg());
	ckpt_reader_close(r);
	REQUIRE(ckpt_reader_open(&r, folder) == 0, "%s", titan_errmsg());
	path_in(out, sizeof out, "toosmall.gguf");
	CHECK(gguf_export(r, out, &o) == TITAN_EUSAGE, "vocab 64: %s", titan_errmsg());
	CHECK(strstr(titan_errmsg(), "vocab_size"), "message '%s'", titan_errmsg());
	CHECK(count_prefix("toosmall.gguf") == 0, "a failed export left something behind");
	ckpt_reader_close(r);
}

int main(void)
{
	/* a binary built outside build/ finds the flavors from the tree's root */
	if (!getenv("TITAN_SHARE") && !access("share/titan/flavors", R_OK))
		setenv("TITAN_SHARE", "share/titan", 1);
	if (check_scratch_open("test_gguf"))
		return 1;
	RUN(test_errors);
	RUN(test_force);
	RUN(test_llama3);
	RUN(test_gpt2_padded);
	/* TEST_GGUF_KEEP=1 keeps the checkpoints and exports, for
	 * tests/golden/gguf_reader.py */
	if (getenv("TEST_GGUF_KEEP"))
		printf("# kept %s\n", check_scratch);
	else
		check_rmtree(check_scratch);
	return check_done();
}
