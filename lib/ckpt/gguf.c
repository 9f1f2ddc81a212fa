/* gguf.c - export a titan checkpoint as a GGUF file for llama.cpp.
 *
 * The file is: "GGUF", version 3, tensor count, key/value count, the
 * key/values, the tensor infos (name, dims innermost first, ggml type,
 * offset into the data section), zero padding to the alignment, then the
 * tensors' bytes, each starting at a multiple of the alignment.  All of it
 * little-endian.  The header (with the tokenizer, a few MB) is built in
 * memory first, since every offset follows from the shapes; the tensors
 * then stream one at a time from the checkpoint reader. */
#include "core/base.h"
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include "ckpt/gguf.h"
#include "config/config.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/half.h"
#include "core/json.h"
#include "model/llama.h"
#include "tok/tok.h"

#define GGUF_VERSION 3
#define GGUF_ALIGN 32

enum gguf_value_type {
	GGUF_UINT32 = 4, GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8,
	GGUF_ARRAY = 9,
};

enum ggml_type { GGML_F32 = 0, GGML_F16 = 1, GGML_BF16 = 30 };

/* llama.cpp's token types (llama_token_type) */
enum { TOK_NORMAL = 1, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5 };

/* The header under construction.  Appends are sticky on failure, so a run
 * of them needs one check at the end. */
struct enc {
	titan_bytes b;
	uint64_t count;       /* key/values or tensor infos added */
	int rc;
};

static void put(struct enc *e, const void *p, size_t n)
{
	if (!e->rc)
		e->rc = bytes_append(&e->b, p, n);
}

static void put_u32(struct enc *e, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
	put(e, b, 4);
}

static void put_u64(struct enc *e, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(e, b, 8);
}

static void put_str(struct enc *e, const char *s, size_t n)
{
	put_u64(e, n);
	put(e, s, n);
}

static void put_cstr(struct enc *e, const char *s)
{
	put_str(e, s, strlen(s));
}

static void kv_key(struct enc *e, const char *key, uint32_t type)
{
	put_cstr(e, key);
	put_u32(e, type);
	e->count++;
}

static void kv_u32(struct enc *e, const char *key, uint32_t v)
{
	kv_key(e, key, GGUF_UINT32);
	put_u32(e, v);
}

static void kv_f32(struct enc *e, const char *key, float v)
{
	kv_key(e, key, GGUF_FLOAT32);
	put_u32(e, half_f32_bits(v));
}

static void kv_bool(struct enc *e, const char *key, bool v)
{
	uint8_t b = v;
	kv_key(e, key, GGUF_BOOL);
	put(e, &b, 1);
}

static void kv_str(struct enc *e, const char *key, const char *v)
{
	kv_key(e, key, GGUF_STRING);
	put_cstr(e, v);
}

static void kv_array(struct enc *e, const char *key, uint32_t elem_type, uint64_t n)
{
	kv_key(e, key, GGUF_ARRAY);
	put_u32(e, elem_type);
	put_u64(e, n);
}

static uint64_t align_up(uint64_t x)
{
	return (x + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
}

/* --- the tokenizer --- */

struct vocab {
	json_t *root;           /* the tokenizer.json */
	uint32_t n;             /* tokens = the model's vocab_size */
	const char **text;      /* [n] borrowed from root; NULL: unused id */
	size_t *len;            /* [n] */
	int32_t *type;          /* [n] */
	json_t *merges;         /* borrowed from root */
	int64_t bos, eos;
	bool add_bos;           /* the post-processor prepends a special token */
	const char *pre;        /* llama.cpp's pre-tokenizer name */
};

static void vocab_free(struct vocab *v)
{
	json_decref(v->root);
	free(v->text);
	free(v->len);
	free(v->type);
	memset(v, 0, sizeof *v);
}

static bool is_type(json_t *o, const char *type)
{
	const char *t = json_string_value(json_object_get(o, "type"));
	return t && !strcmp(t, type);
}

/* A ByteLevel pre-tokenizer (alone or in a Sequence) or decoder. */
static bool byte_level(json_t *root)
{
	json_t *pt = json_object_get(root, "pre_tokenizer");
	if (is_type(pt, "ByteLevel") || is_type(json_object_get(root, "decoder"), "ByteLevel"))
		return true;
	if (is_type(pt, "Sequence")) {
		json_t *list = json_object_get(pt, "pretokenizers");
		for (size_t i = 0; i < json_array_size(list); i++)
			if (is_type(json_array_get(list, i), "ByteLevel"))
				return true;
	}
	return false;
}

/* Hugging Face adds BOS through a TemplateProcessing post-processor whose
 * single-sequence template starts with a special token. */
static bool template_adds_bos(json_t *pp)
{
	if (is_type(pp, "Sequence")) {
		json_t *list = json_object_get(pp, "processors");
		for (size_t i = 0; i < json_array_size(list); i++)
			if (template_adds_bos(json_array_get(list, i)))
				return true;
		return false;
	}
	if (!is_type(pp, "TemplateProcessing"))
		return false;
	json_t *first = json_array_get(json_object_get(pp, "single"), 0);
	return json_object_get(first, "SpecialToken") != NULL;
}

/* llama.cpp names the pre-tokenizers it implements; the regex decides. */
static const char *pre_name(const char *pattern)
{
	static const struct { const char *titan, *gguf; } known[] = {
		{ "llama3", "llama-bpe" }, { "gpt2", "gpt-2" }, { "o200k", "gpt-4o" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
		const char *p = pretok_named_pattern(known[i].titan);
		if (p && !strcmp(p, pattern))
			return known[i].gguf;
	}
	return "default";
}

static int set_token(struct vocab *v, const char *file, const char *where,
		     long long id, const char *text, size_t len, int32_t type)
{
	if (id < 0 || id >= v->n)
		return titan_err(TITAN_EUSAGE, "'%s': %s: token '%s' has id %lld, past the "
				 "model's vocab_size %u", file, where, text, id, v->n);
	if (v->text[id] && (v->len[id] != len || memcmp(v->text[id], text, len)))
		return titan_err(TITAN_EFORMAT, "'%s': %s: id %lld is both '%s' and '%s'",
				 file, where, id, v->text[id], text);
	v->text[id] = text;
	v->len[id] = len;
	v->type[id] = type;
	return 0;
}

static int vocab_tokens(struct vocab *v, const char *file)
{
	json_t *model = json_object_get(v->root, "model"), *map, *added;
	const char *key;
	json_t *val;
	int rc;

	if ((rc = json_get_obj(model, "vocab", &map, file, "$.model")) ||
	    (rc = json_get_arr(model, "merges", &v->merges, file, "$.model")))
		return rc;
	json_object_foreach(map, key, val) {
		if (!json_is_integer(val))
			return titan_err(TITAN_EFORMAT, "'%s': $.model.vocab: token '%s': "
					 "expected an integer id", file, key);
		rc = set_token(v, file, "$.model.vocab", json_integer_value(val), key,
			       strlen(key), TOK_NORMAL);
		if (rc)
			return rc;
	}
	added = json_object_get(v->root, "added_tokens");
	for (size_t i = 0; i < json_array_size(added); i++) {
		json_t *a = json_array_get(added, i);
		char where[64];
		const char *text;
		long long id;
		bool special = false;
		snprintf(where, sizeof where, "$.added_tokens[%zu]", i);
		if ((rc = json_get_str(a, "content", &text, file, where)) ||
		    (rc = json_get_int(a, "id", &id, file, where)) ||
		    (rc = json_opt_bool(a, "special", &special, file, where)))
			return rc;
		rc = set_token(v, file, where, id, text,
			       json_string_length(json_object_get(a, "content")),
			       special ? TOK_CONTROL : TOK_USER_DEFINED);
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < json_array_size(v->merges); i++) {
		json_t *m = json_array_get(v->merges, i);
		if (json_is_string(m) || (json_array_size(m) == 2 &&
		    json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))))
			continue;
		return titan_err(TITAN_EFORMAT, "'%s': $.model.merges[%zu]: expected \"a b\" "
				 "or [\"a\", \"b\"]", file, i);
	}
	return 0;
}

/* Read tokenizer.json for a model of n_vocab tokens.  titan's own loader
 * checks the tokenizer through and finds BOS, EOS and the split regex; the
 * strings GGUF stores come from the JSON as written. */
static int vocab_load(struct vocab *v, const char *file, uint32_t n_vocab)
{
	titan_tok *tok = NULL;
	const char *type;
	int rc;

	memset(v, 0, sizeof *v);
	if ((rc = json_load_path(&v->root, file)))
		return titan_err_prefix(TITAN_EUSAGE, "not a tokenizer.json");
	type = json_string_value(json_object_get(json_object_get(v->root, "model"), "type"));
	if (!type || strcmp(type, "BPE"))
		return titan_err(TITAN_EUSAGE, "'%s': $.model.type: '%s': GGUF export needs a "
				 "byte-level BPE tokenizer", file, type ? type : "(none)");
	if (!byte_level(v->root))
		return titan_err(TITAN_EUSAGE, "'%s': no ByteLevel pre-tokenizer or decoder: "
				 "GGUF export needs a byte-level BPE tokenizer", file);
	if ((rc = tok_load(&tok, file, NULL)))
		return rc;
	v->bos = tok_bos(tok);
	v->eos = tok_eos(tok);
	v->pre = pre_name(pretok_pattern(tok_pretok(tok)));
	v->add_bos = v->bos >= 0 && template_adds_bos(json_object_get(v->root, "post_processor"));
	tok_free(tok);

	v->n = n_vocab;
	v->text = calloc(n_vocab, sizeof *v->text);
	v->len = calloc(n_vocab, sizeof *v->len);
	v->type = calloc(n_vocab, sizeof *v->type);
	if (!v->text || !v->len || !v->type)
		return titan_err_nomem();
	if ((rc = vocab_tokens(v, file)))
		return rc;
	for (uint32_t i = 0; i < n_vocab; i++)
		if (!v->text[i])
			v->type[i] = TOK_UNUSED;
	return 0;
}

static void put_vocab(struct enc *e, const struct vocab *v)
{
	kv_str(e, "tokenizer.ggml.model", "gpt2");
	kv_str(e, "tokenizer.ggml.pre", v->pre);

	/* Ids no token holds (a vocab_size rounded up) get placeholders, so
	 * the token count equals llama.vocab_size as llama.cpp requires. */
	kv_array(e, "tokenizer.ggml.tokens", GGUF_STRING, v->n);
	for (uint32_t i = 0; i < v->n; i++) {
		if (v->text[i]) {
			put_str(e, v->text[i], v->len[i]);
		} else {
			char pad[32];
			put_str(e, pad, (size_t)snprintf(pad, sizeof pad, "[PAD%u]", i));
		}
	}
	kv_array(e, "tokenizer.ggml.token_type", GGUF_INT32, v->n);
	for (uint32_t i = 0; i < v->n; i++)
		put_u32(e, (uint32_t)v->type[i]);

	size_t nm = json_array_size(v->merges);
	kv_array(e, "tokenizer.ggml.merges", GGUF_STRING, nm);
	for (size_t i = 0; i < nm; i++) {
		json_t *m = json_array_get(v->merges, i);
		if (json_is_string(m)) {
			put_str(e, json_string_value(m), json_string_length(m));
			continue;
		}
		json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
		size_t la = json_string_length(a), lb = json_string_length(b);
		put_u64(e, la + 1 + lb);
		put(e, json_string_value(a), la);
		put(e, " ", 1);
		put(e, json_string_value(b), lb);
	}
	if (v->bos >= 0)
		kv_u32(e, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
	if (v->eos >= 0)
		kv_u32(e, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
	kv_bool(e, "tokenizer.ggml.add_bos_token", v->add_bos);
	/* decode to the exact bytes, as the ByteLevel decoder and titan do,
	 * without transformers' clean-up of spaces before punctuation */
	kv_bool(e, "tokenizer.ggml.clean_spaces", false);
}

/* --- tensors --- */

struct gtensor {
	char titan[64];         /* checkpoint name; "" for rope_freqs */
	char name[64];          /* GGUF name */
	int ndim;
	uint64_t ne[2];         /* innermost first */
	uint32_t type;
	uint64_t numel, offset, bytes;
};

/* llama.cpp's name of a titan parameter; false when it has none. */
static bool gguf_name(const char *titan, char *out, size_t n)
{
	static const struct { const char *titan, *gguf; } layer[] = {
		{ "attention.wq.weight", "attn_q.weight" },
		{ "attention.wk.weight", "attn_k.weight" },
		{ "attention.wv.weight", "attn_v.weight" },
		{ "attention.wo.weight", "attn_output.weight" },
		{ "feed_forward.w1.weight", "ffn_gate.weight" },
		{ "feed_forward.w2.weight", "ffn_down.weight" },
		{ "feed_forward.w3.weight", "ffn_up.weight" },
		{ "attention_norm.weight", "attn_norm.weight" },
		{ "ffn_norm.weight", "ffn_norm.weight" },
	};
	static const struct { const char *titan, *gguf; } top[] = {
		{ "tok_embeddings.weight", "token_embd.weight" },
		{ "norm.weight", "output_norm.weight" },
		{ "output.weight", "output.weight" },
	};
	int l, off = 0;

	for (size_t i = 0; i < ARRAY_SIZE(top); i++)
		if (!strcmp(titan, top[i].titan))
			return (size_t)snprintf(out, n, "%s", top[i].gguf) < n;
	if (sscanf(titan, "layers.%d.%n", &l, &off) != 1 || !off)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(layer); i++)
		if (!strcmp(titan + off, layer[i].titan))
			return (size_t)snprintf(out, n, "blk.%d.%s", l, layer[i].gguf) < n;
	return false;
}

static uint32_t ggml_type_of(st_dtype d)
{
	return d == ST_F16 ? GGML_F16 : d == ST_BF16 ? GGML_BF16 : GGML_F32;
}

static size_t ggml_type_size(uint32_t t)
{
	return t == GGML_F32 ? 4 : 2;
}

/* torchtitan's Llama 3.1 frequency scaling as llama.cpp takes it: one
 * divisor per rotary frequency (1 keeps it, the scaling factor divides it,
 * and in between a smooth blend). */
static void rope_factors(const llama_config *c, float *out, int half)
{
	int head_dim = c->dim / c->n_heads;
	double low_wavelen = c->rope_original_max_pos / c->rope_low_freq_factor;
	double high_wavelen = c->rope_original_max_pos / c->rope_high_freq_factor;

	for (int i = 0; i < half; i++) {
		double freq = 1.0 / pow(c->rope_theta, (double)(2 * i) / head_dim);
		double wavelen = 2 * M_PI / freq;
		if (wavelen < high_wavelen) {
			out[i] = 1.0f;
		} else if (wavelen > low_wavelen) {
			out[i] = (float)c->rope_scaling_factor;
		} else {
			double smooth = (c->rope_original_max_pos / wavelen - c->rope_low_freq_factor) /
					(c->rope_high_freq_factor - c->rope_low_freq_factor);
			out[i] = (float)(1.0 / ((1 - smooth) / c->rope_scaling_factor + smooth));
		}
	}
}

/* The tensors to write, in the model's chunk order after rope_freqs, each
 * checked against the checkpoint. */
static int plan_tensors(ckpt_reader *r, const llama_config *c, st_dtype dtype,
			struct gtensor **out, size_t *nout)
{
	llama_tensor_info *info = NULL;
	struct gtensor *g;
	int n, rc;
	size_t k = 0;
	uint64_t off = 0;

	if ((rc = llama_tensors(c, &info, &n)))
		return rc;
	g = calloc((size_t)n + 1, sizeof *g);
	if (!g) {
		free(info);
		return titan_err_nomem();
	}
	if (c->rope_scaling) {
		snprintf(g[k].name, sizeof g[k].name, "rope_freqs.weight");
		g[k].ndim = 1;
		g[k].ne[0] = (uint64_t)(c->dim / c->n_heads / 2);
		g[k].type = GGML_F32;
		k++;
	}
	for (int i = 0; i < n && !rc; i++, k++) {
		const ckpt_tensor_info *t = ckpt_reader_find(r, info[i].name);
		struct gtensor *x = &g[k];
		if (!t) {
			rc = titan_err(TITAN_EFORMAT, "'%s': no tensor '%s'",
				       ckpt_reader_dir(r), info[i].name);
			break;
		}
		bool same = t->ndim == info[i].ndim;
		for (int d = 0; same && d < t->ndim; d++)
			same = t->shape[d] == info[i].shape[d];
		if (!same) {
			rc = titan_err(TITAN_EFORMAT, "'%s': tensor '%s': shape does not match "
				       "the model config", ckpt_reader_dir(r), info[i].name);
			break;
		}
		snprintf(x->titan, sizeof x->titan, "%s", info[i].name);
		if (!gguf_name(x->titan, x->name, sizeof x->name))
			rc = titan_err(TITAN_EINTERNAL, "no GGUF name for '%s'", x->titan);
		x->ndim = info[i].ndim;
		for (int d = 0; d < x->ndim; d++)
			x->ne[d] = (uint64_t)info[i].shape[x->ndim - 1 - d];
		x->type = x->ndim == 2 ? ggml_type_of(dtype) : GGML_F32;
	}
	free(info);
	if (rc) {
		free(g);
		return rc;
	}
	for (size_t i = 0; i < k; i++) {
		g[i].numel = g[i].ndim == 2 ? g[i].ne[0] * g[i].ne[1] : g[i].ne[0];
		g[i].bytes = g[i].numel * ggml_type_size(g[i].type);
		g[i].offset = off;
		off = align_up(off + g[i].bytes);
	}
	*out = g;
	*nout = k;
	return 0;
}

static void put_model(struct enc *e, const llama_config *c, const char *name,
		      st_dtype dtype)
{
	kv_str(e, "general.architecture", "llama");
	kv_str(e, "general.name", name);
	kv_u32(e, "general.alignment", GGUF_ALIGN);
	kv_u32(e, "general.file_type", dtype == ST_F16 ? 1 : dtype == ST_BF16 ? 32 : 0);
	kv_u32(e, "llama.context_length", (uint32_t)c->max_seq_len);
	kv_u32(e, "llama.embedding_length", (uint32_t)c->dim);
	kv_u32(e, "llama.block_count", (uint32_t)c->n_layers);
	kv_u32(e, "llama.feed_forward_length", (uint32_t)c->ffn_hidden);
	kv_u32(e, "llama.attention.head_count", (uint32_t)c->n_heads);
	kv_u32(e, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
	kv_u32(e, "llama.rope.dimension_count", (uint32_t)(c->dim / c->n_heads));
	kv_f32(e, "llama.rope.freq_base", (float)c->rope_theta);
	kv_f32(e, "llama.attention.layer_norm_rms_epsilon", (float)c->norm_eps);
	kv_u32(e, "llama.vocab_size", (uint32_t)c->vocab_size);
}

static void put_infos(struct enc *e, const struct gtensor *g, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		put_cstr(e, g[i].name);
		put_u32(e, (uint32_t)g[i].ndim);
		for (int d = 0; d < g[i].ndim; d++)
			put_u64(e, g[i].ne[d]);
		put_u32(e, g[i].type);
		put_u64(e, g[i].offset);
		e->count++;
	}
}

/* --- writing --- */

static int write_zeros(FILE *fp, const char *path, size_t n)
{
	static const uint8_t zeros[GGUF_ALIGN];
	return n ? file_write(fp, path, zeros, n) : 0;
}

/* Narrow src to 16 bits a block at a time, so memory stays one fp32 tensor. */
static int write_half(FILE *fp, const char *path, const float *src, size_t n, bool bf16)
{
	enum { BLOCK = 16384 };
	uint16_t buf[BLOCK];
	int rc = 0;

	for (size_t i = 0; i < n && !rc; i += BLOCK) {
		size_t m = TITAN_MIN((size_t)BLOCK, n - i);
		for (size_t j = 0; j < m; j++)
			buf[j] = bf16 ? f32_to_bf16(src[i + j]) : f32_to_f16(src[i + j]);
		rc = file_write(fp, path, buf, m * sizeof *buf);
	}
	return rc;
}

static int write_tensors(ckpt_reader *r, const llama_config *c, const struct gtensor *g,
			 size_t n, titan_atomic *a, const gguf_export_opts *o)
{
	uint64_t max = 0, total = 0, done = 0;
	float *buf;
	int rc = 0;

	for (size_t i = 0; i < n; i++) {
		max = TITAN_MAX(max, g[i].numel);
		total += g[i].bytes;
	}
	buf = malloc((size_t)max * sizeof *buf);
	if (!buf)
		return titan_err_nomem();
	for (size_t i = 0; i < n && !rc; i++) {
		if (g[i].titan[0])
			rc = ckpt_reader_read(r, g[i].titan, NULL, NULL, buf);
		else
			rope_factors(c, buf, (int)g[i].numel);
		if (rc)
			break;
		if (g[i].type == GGML_F32)
			rc = file_write(a->fp, a->tmp, buf, g[i].bytes);
		else
			rc = write_half(a->fp, a->tmp, buf, g[i].numel, g[i].type == GGML_BF16);
		if (!rc)
			rc = write_zeros(a->fp, a->tmp, align_up(g[i].bytes) - g[i].bytes);
		done += g[i].bytes;
		if (!rc && o->progress)
			o->progress(o->progress_arg, done, total);
	}
	free(buf);
	return rc;
}

static int model_config(ckpt_reader *r, train_config *tc)
{
	const json_t *cfg = json_object_get(ckpt_reader_manifest(r), "extra");
	char where[PATH_MAX + 32];

	snprintf(where, sizeof where, "%s/manifest.json", ckpt_reader_dir(r));
	cfg = json_object_get(cfg, "config");
	if (!json_is_object(cfg)) {
		memset(tc, 0, sizeof *tc);
		return titan_err(TITAN_EFORMAT, "'%s': $.extra.config: no model configuration",
				 where);
	}
	return config_from_json(tc, cfg, where);
}

/* The tokenizer to use: the one named (a tokenizer.json or a directory
 * holding one) or the checkpoint's.  *path allocated. */
static int tokenizer_path(ckpt_reader *r, const char *given, char **path)
{
	struct stat st;

	if (!given) {
		*path = ckpt_reader_file(r, "tokenizer.json");
		if (!*path)
			return titan_err(TITAN_EUSAGE, "'%s': the checkpoint carries no "
					 "tokenizer.json; GGUF export needs one",
					 ckpt_reader_dir(r));
		return 0;
	}
	if (stat(given, &st) < 0)
		return titan_err_errno(TITAN_EUSAGE, "cannot open tokenizer '%s'", given);
	*path = S_ISDIR(st.st_mode) ? file_path_join(given, "tokenizer.json") : strdup(given);
	return *path ? 0 : titan_err_nomem();
}

int gguf_export(ckpt_reader *r, const char *out_path, const gguf_export_opts *o)
{
	static const gguf_export_opts defaults = { .dtype = ST_F32 };
	train_config tc;
	struct vocab v;
	struct enc kv = { 0 }, info = { 0 }, head = { 0 };
	struct gtensor *g = NULL;
	size_t ng = 0;
	uint64_t hbytes;
	char *tokfile = NULL;
	titan_atomic a;
	bool open = false;
	int rc;

	if (!o)
		o = &defaults;
	memset(&v, 0, sizeof v);
	memset(&tc, 0, sizeof tc);
	if (o->dtype != ST_F32 && o->dtype != ST_F16 && o->dtype != ST_BF16)
		return titan_err(TITAN_EUSAGE, "GGUF export: unsupported dtype '%s' "
				 "(F32, F16 or BF16)", st_dtype_name(o->dtype));
	if (!o->force && access(out_path, F_OK) == 0)
		return titan_err(TITAN_EUSAGE, "'%s' already exists (force replaces it)",
				 out_path);
	if ((rc = model_config(r, &tc)))
		goto out;
	if ((rc = tokenizer_path(r, o->tokenizer, &tokfile)) ||
	    (rc = vocab_load(&v, tokfile, (uint32_t)tc.model.vocab_size)) ||
	    (rc = plan_tensors(r, &tc.model, o->dtype, &g, &ng)))
		goto out;

	put_model(&kv, &tc.model, o->name ? o->name : "titan", o->dtype);
	put_vocab(&kv, &v);
	put_infos(&info, g, ng);
	if ((rc = kv.rc) || (rc = info.rc))
		goto out;
	/* The tokenizer's JSON is the largest thing held: drop it before the
	 * tensors stream. */
	vocab_free(&v);

	put(&head, "GGUF", 4);
	put_u32(&head, GGUF_VERSION);
	put_u64(&head, info.count);
	put_u64(&head, kv.count);
	if ((rc = head.rc) || (rc = atomic_open(&a, out_path)))
		goto out;
	open = true;
	hbytes = head.b.n + kv.b.n + info.b.n;
	rc = file_write(a.fp, a.tmp, head.b.v, head.b.n);
	if (!rc)
		rc = file_write(a.fp, a.tmp, kv.b.v, kv.b.n);
	if (!rc)
		rc = file_write(a.fp, a.tmp, info.b.v, info.b.n);
	if (!rc)
		rc = write_zeros(a.fp, a.tmp, align_up(hbytes) - hbytes);
	if (!rc)
		rc = write_tensors(r, &tc.model, g, ng, &a, o);
	if (!rc) {
		open = false;
		rc = atomic_commit(&a);
	}
out:
	if (open)
		atomic_abort(&a);
	vocab_free(&v);
	bytes_free(&head.b);
	bytes_free(&kv.b);
	bytes_free(&info.b);
	free(g);
	free(tokfile);
	config_free(&tc);
	return rc;
}
