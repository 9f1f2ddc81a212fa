/* hf.c - titan checkpoints to and from Hugging Face's Llama layout (hf.h).
 *
 * Export streams: each tensor is read from the checkpoint a block of rows at
 * a time, permuted (q and k), narrowed to the output dtype and handed to the
 * safetensors stream, so memory holds a few blocks whatever the model size.
 * Import reads the mapped safetensors files and hands each tensor, widened
 * to fp32 and unpermuted, to the checkpoint writer. */
#include "core/base.h"
#include "ckpt/hf.h"

#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "core/file.h"
#include "core/half.h"
#include "core/json.h"
#include "tok/tok.h"

/* Floats per block read from the checkpoint (16 MB). */
#define HF_BLOCK_FLOATS ((size_t)4 << 20)
#define HF_DEFAULT_SHARD ((uint64_t)5000000000)

static const struct name_pair {
	const char *titan, *hf;
} layer_names[] = {
	{ "attention.wq.weight", "self_attn.q_proj.weight" },
	{ "attention.wk.weight", "self_attn.k_proj.weight" },
	{ "attention.wv.weight", "self_attn.v_proj.weight" },
	{ "attention.wo.weight", "self_attn.o_proj.weight" },
	{ "feed_forward.w1.weight", "mlp.gate_proj.weight" },
	{ "feed_forward.w3.weight", "mlp.up_proj.weight" },
	{ "feed_forward.w2.weight", "mlp.down_proj.weight" },
	{ "attention_norm.weight", "input_layernorm.weight" },
	{ "ffn_norm.weight", "post_attention_layernorm.weight" },
}, top_names[] = {
	{ "tok_embeddings.weight", "model.embed_tokens.weight" },
	{ "norm.weight", "model.norm.weight" },
	{ "output.weight", "lm_head.weight" },
};

/* The layer number after prefix in name and the rest after its dot; false
 * unless name is prefix, a decimal without leading zeros, '.', more. */
static bool layer_of(const char *name, const char *prefix, long *layer, const char **rest)
{
	size_t n = strlen(prefix);
	const char *p;
	long v = 0;

	if (strncmp(name, prefix, n))
		return false;
	p = name + n;
	if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.'))
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (INT_MAX - 9) / 10)
			return false;
		v = v * 10 + (*p - '0');
	}
	if (*p != '.')
		return false;
	*layer = v;
	*rest = p + 1;
	return true;
}

static bool map_name(const char *in, char *out, size_t n, bool to_hf)
{
	const char *lprefix = to_hf ? "layers." : "model.layers.";
	const char *oprefix = to_hf ? "model.layers." : "layers.";
	const char *rest;
	long layer;
	int len = -1;

	for (size_t i = 0; i < ARRAY_SIZE(top_names); i++) {
		const char *from = to_hf ? top_names[i].titan : top_names[i].hf;
		if (!strcmp(in, from))
			len = snprintf(out, n, "%s", to_hf ? top_names[i].hf : top_names[i].titan);
	}
	if (len < 0 && layer_of(in, lprefix, &layer, &rest)) {
		for (size_t i = 0; i < ARRAY_SIZE(layer_names); i++) {
			const char *from = to_hf ? layer_names[i].titan : layer_names[i].hf;
			if (!strcmp(rest, from))
				len = snprintf(out, n, "%s%ld.%s", oprefix, layer,
					       to_hf ? layer_names[i].hf : layer_names[i].titan);
		}
	}
	return len >= 0 && (size_t)len < n;
}

bool hf_name_from_titan(const char *titan, char *out, size_t n)
{
	return map_name(titan, out, n, true);
}

bool hf_name_to_titan(const char *hf, char *out, size_t n)
{
	return map_name(hf, out, n, false);
}

void hf_rotary_permute(const float *src, float *dst, int heads, int head_dim,
		       int64_t cols, bool to_hf)
{
	int half = head_dim / 2;
	size_t row = (size_t)cols * sizeof(float);

	for (int h = 0; h < heads; h++) {
		const float *s = src + (size_t)h * head_dim * cols;
		float *d = dst + (size_t)h * head_dim * cols;
		for (int i = 0; i < half; i++) {
			/* interleaved row 2i (2i+1) is halves row i (half + i) */
			size_t pair = (size_t)(2 * i) * cols, lo = (size_t)i * cols,
			       hi = (size_t)(half + i) * cols;
			if (to_hf) {
				memcpy(d + lo, s + pair, row);
				memcpy(d + hi, s + pair + cols, row);
			} else {
				memcpy(d + pair, s + lo, row);
				memcpy(d + pair + cols, s + hi, row);
			}
		}
	}
}

/* Heads of a q or k projection (whose rows RoPE rotates), else 0. */
static int rotary_heads(const llama_config *c, const char *titan)
{
	const char *rest;
	long layer;

	if (!layer_of(titan, "layers.", &layer, &rest))
		return 0;
	if (!strcmp(rest, "attention.wq.weight"))
		return c->n_heads;
	if (!strcmp(rest, "attention.wk.weight"))
		return c->n_kv_heads;
	return 0;
}

/* --- files and directories --- */

static bool path_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* "BASE" + suffix, allocated. */
static char *path_suffix(const char *base, const char *suffix)
{
	size_t n = strlen(base) + strlen(suffix) + 1;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s%s", base, suffix);
	return p;
}

static int write_json_in(const char *dir, const char *name, json_t *j)
{
	char *p;
	int rc;

	if (!j)
		return titan_err_nomem();
	p = file_path_join(dir, name);
	rc = p ? json_write_path(j, p) : titan_err_nomem();
	free(p);
	json_decref(j);
	return rc;
}

/* --- export --- */

static const char *dtype_torch_name(st_dtype d)
{
	return d == ST_BF16 ? "bfloat16" : d == ST_F16 ? "float16" : "float32";
}

typedef struct export_tensor {
	const llama_tensor_info *ti;
	char hf[96];
	int rot_heads;               /* q or k projection: its heads; else 0 */
	uint64_t bytes;              /* in the output dtype */
	int shard;
} export_tensor;

typedef struct exporter {
	ckpt_reader *r;
	const hf_export_opts *o;
	train_config tc;
	llama_tensor_info *ti;
	int nt;
	export_tensor *et;
	int nshards;
	uint64_t total, done;
	float *in, *perm;            /* a block of rows, as read and permuted */
	void *narrow;                /* the block in a 16-bit dtype */
	size_t block_floats;
} exporter;

/* Rows per block of t: whole heads for q and k. */
static int64_t block_rows(const export_tensor *e, int head_dim)
{
	int64_t cols = e->ti->ndim == 2 ? e->ti->shape[1] : (int64_t)e->ti->numel;
	int64_t rows = (int64_t)(HF_BLOCK_FLOATS / (size_t)(cols ? cols : 1));

	if (e->rot_heads) {
		rows -= rows % head_dim;
		if (rows < head_dim)
			rows = head_dim;
	}
	return rows < 1 ? 1 : rows;
}

/* Check that the checkpoint holds every model tensor with the config's
 * shape and lay out the tensors in shards. */
static int export_plan(exporter *x)
{
	const llama_config *c = &x->tc.model;
	int head_dim = c->dim / c->n_heads;
	uint64_t esize = st_dtype_size(x->o->dtype), cur = 0;
	uint64_t max = x->o->max_shard_bytes ? x->o->max_shard_bytes : HF_DEFAULT_SHARD;
	const char *dir = ckpt_reader_dir(x->r);
	int rc;

	if ((rc = llama_tensors(c, &x->ti, &x->nt)))
		return rc;
	if (!(x->et = calloc((size_t)x->nt, sizeof *x->et)))
		return titan_err_nomem();
	x->nshards = 1;
	for (int i = 0; i < x->nt; i++) {
		export_tensor *e = &x->et[i];
		const llama_tensor_info *t = &x->ti[i];
		const ckpt_tensor_info *ci = ckpt_reader_find(x->r, t->name);
		bool same = ci && ci->ndim == t->ndim;

		for (int d = 0; same && d < t->ndim; d++)
			same = ci->shape[d] == t->shape[d];
		if (!ci)
			return titan_err(TITAN_EFORMAT, "'%s': no tensor '%s'", dir, t->name);
		if (!same) {
			char got[96], want[96];
			ckpt_shape_text(got, sizeof got, ci->ndim, ci->shape);
			ckpt_shape_text(want, sizeof want, t->ndim, t->shape);
			return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': shape %s but its config "
					 "gives %s", dir, t->name, got, want);
		}
		e->ti = t;
		if (!hf_name_from_titan(t->name, e->hf, sizeof e->hf))
			return titan_err(TITAN_EINTERNAL, "no Hugging Face name for '%s'", t->name);
		e->rot_heads = rotary_heads(c, t->name);
		e->bytes = (uint64_t)t->numel * esize;
		/* as save_pretrained: a tensor that would overflow the shard
		 * starts the next one; one larger than the limit sits alone */
		if (cur && cur + e->bytes > max) {
			x->nshards++;
			cur = 0;
		}
		cur += e->bytes;
		e->shard = x->nshards - 1;
		x->total += e->bytes;

		int64_t cols = t->ndim == 2 ? t->shape[1] : (int64_t)t->numel;
		size_t blk = (size_t)block_rows(e, head_dim) * (size_t)cols;
		if (blk > t->numel)
			blk = t->numel;
		if (blk > x->block_floats)
			x->block_floats = blk;
	}
	x->in = malloc(x->block_floats * sizeof(float));
	x->perm = malloc(x->block_floats * sizeof(float));
	x->narrow = malloc(x->block_floats * sizeof(uint16_t));
	if (!x->in || !x->perm || !x->narrow)
		return titan_err_nomem();
	return 0;
}

static void narrow(const float *src, uint16_t *dst, size_t n, st_dtype d)
{
	if (d == ST_BF16)
		for (size_t i = 0; i < n; i++)
			dst[i] = f32_to_bf16(src[i]);
	else
		for (size_t i = 0; i < n; i++)
			dst[i] = f32_to_f16(src[i]);
}

static int export_tensor_data(exporter *x, st_stream *w, const export_tensor *e)
{
	const llama_tensor_info *t = e->ti;
	int head_dim = x->tc.model.dim / x->tc.model.n_heads;
	int64_t rows = t->ndim == 2 ? t->shape[0] : 1;
	int64_t cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
	int64_t step = block_rows(e, head_dim);
	st_dtype d = x->o->dtype;
	int rc;

	for (int64_t r0 = 0; r0 < rows; r0 += step) {
		int64_t nr = TITAN_MIN(step, rows - r0);
		int64_t start[2] = { r0, 0 }, shape[2] = { nr, cols };
		size_t n = (size_t)nr * (size_t)cols;
		const float *src = x->in;

		rc = t->ndim == 2 ? ckpt_reader_read(x->r, t->name, start, shape, x->in)
				  : ckpt_reader_read(x->r, t->name, NULL, NULL, x->in);
		if (rc)
			return rc;
		if (e->rot_heads) {
			hf_rotary_permute(x->in, x->perm, (int)(nr / head_dim), head_dim, cols,
					  true);
			src = x->perm;
		}
		if (d == ST_F32) {
			rc = st_stream_put(w, src, n * sizeof(float));
		} else {
			narrow(src, x->narrow, n, d);
			rc = st_stream_put(w, x->narrow, n * sizeof(uint16_t));
		}
		if (rc)
			return rc;
		x->done += n * st_dtype_size(d);
		if (x->o->progress)
			x->o->progress(x->o->progress_arg, x->done, x->total);
	}
	return 0;
}

static void shard_name(char *out, size_t n, int k, int nshards)
{
	if (nshards == 1)
		snprintf(out, n, "model.safetensors");
	else
		snprintf(out, n, "model-%05d-of-%05d.safetensors", k + 1, nshards);
}

static int export_shard(exporter *x, const char *tmp, int k)
{
	st_stream *w = NULL;
	char name[64], *path = NULL;
	int rc;

	shard_name(name, sizeof name, k, x->nshards);
	if (!(path = file_path_join(tmp, name)))
		return titan_err_nomem();
	if ((rc = st_stream_new(&w)) || (rc = st_stream_meta(w, "format", "pt")))
		goto out;
	for (int i = 0; i < x->nt; i++) {
		const export_tensor *e = &x->et[i];
		if (e->shard == k &&
		    (rc = st_stream_declare(w, e->hf, x->o->dtype, e->ti->ndim, e->ti->shape)))
			goto out;
	}
	if ((rc = st_stream_begin(w, path)))
		goto out;
	for (int i = 0; i < x->nt; i++)
		if (x->et[i].shard == k && (rc = export_tensor_data(x, w, &x->et[i])))
			goto out;
	rc = st_stream_finish(w);
out:
	st_stream_free(w);
	free(path);
	return rc;
}

static int export_index(exporter *x, const char *tmp)
{
	json_t *map = json_object(), *idx;
	char name[64];

	if (!map)
		return titan_err_nomem();
	for (int i = 0; i < x->nt; i++) {
		shard_name(name, sizeof name, x->et[i].shard, x->nshards);
		if (json_object_set_new(map, x->et[i].hf, json_string(name))) {
			json_decref(map);
			return titan_err_nomem();
		}
	}
	idx = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)x->total,
			"weight_map", map);
	return write_json_in(tmp, "model.safetensors.index.json", idx);
}

/* The text of added token id, or NULL. */
static const char *added_text(const titan_tok *tok, int64_t id)
{
	for (size_t i = 0; id >= 0 && i < tok_added_count(tok); i++) {
		uint32_t aid;
		bool special;
		const char *s = tok_added(tok, i, &aid, &special);
		if ((int64_t)aid == id)
			return s;
	}
	return NULL;
}

static json_t *id_or_null(int64_t id)
{
	return id >= 0 ? json_integer(id) : json_null();
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static int export_config(exporter *x, const char *tmp, const titan_tok *tok)
{
	const llama_config *c = &x->tc.model;
	int64_t bos = tok ? tok_bos(tok) : -1, eos = tok ? tok_eos(tok) : -1;
	json_t *scaling = json_null(), *cfg, *gen;
	int rc;

	if (c->rope_scaling)
		scaling = json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3",
				    "factor", c->rope_scaling_factor,
				    "low_freq_factor", c->rope_low_freq_factor,
				    "high_freq_factor", c->rope_high_freq_factor,
				    "original_max_position_embeddings", c->rope_original_max_pos);
	cfg = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:o,"
			" s:b, s:s, s:b, s:b, s:f, s:s, s:o, s:o, s:b}",
			"architectures", "LlamaForCausalLM",
			"model_type", "llama",
			"hidden_size", c->dim,
			"intermediate_size", c->ffn_hidden,
			"num_hidden_layers", c->n_layers,
			"num_attention_heads", c->n_heads,
			"num_key_value_heads", c->n_kv_heads,
			"head_dim", c->dim / c->n_heads,
			"vocab_size", c->vocab_size,
			"max_position_embeddings", c->max_seq_len,
			"rms_norm_eps", c->norm_eps,
			"rope_theta", c->rope_theta,
			"rope_scaling", scaling,
			"tie_word_embeddings", c->tie_embeddings,
			"hidden_act", "silu",
			"attention_bias", 0,
			"mlp_bias", 0,
			"initializer_range", 0.02,
			"torch_dtype", dtype_torch_name(x->o->dtype),
			"bos_token_id", id_or_null(bos),
			"eos_token_id", id_or_null(eos),
			"use_cache", 1);
	if ((rc = write_json_in(tmp, "config.json", cfg)))
		return rc;
	gen = json_pack("{s:b, s:o, s:o}", "_from_model_config", 1,
			"bos_token_id", id_or_null(bos), "eos_token_id", id_or_null(eos));
	return write_json_in(tmp, "generation_config.json", gen);
}

static int export_tokenizer(exporter *x, const char *tmp, const char *src,
			    const titan_tok *tok)
{
	char *dst = file_path_join(tmp, "tokenizer.json");
	json_t *tc;
	int rc;

	if (!dst)
		return titan_err_nomem();
	rc = file_copy(src, dst);
	free(dst);
	if (rc)
		return rc;
	tc = json_pack("{s:s, s:o, s:o, s:i, s:b}",
		       "tokenizer_class", "PreTrainedTokenizerFast",
		       "bos_token", str_or_null(added_text(tok, tok_bos(tok))),
		       "eos_token", str_or_null(added_text(tok, tok_eos(tok))),
		       "model_max_length", x->tc.model.max_seq_len,
		       "clean_up_tokenization_spaces", 0);
	return write_json_in(tmp, "tokenizer_config.json", tc);
}

/* The model config a checkpoint was saved with: its manifest's
 * extra.config. */
static int reader_config(ckpt_reader *r, train_config *tc)
{
	const json_t *cfg = json_object_get(json_object_get(ckpt_reader_manifest(r), "extra"),
					    "config");
	char where[PATH_MAX + 32];

	snprintf(where, sizeof where, "%s/manifest.json", ckpt_reader_dir(r));
	if (!json_is_object(cfg)) {
		memset(tc, 0, sizeof *tc);
		return titan_err(TITAN_EFORMAT, "'%s': $.extra.config: no model config", where);
	}
	return config_from_json(tc, cfg, where);
}

static int check_dtype(st_dtype d)
{
	if (d != ST_F32 && d != ST_BF16 && d != ST_F16)
		return titan_err(TITAN_EUSAGE, "dtype %s: expected F32, BF16 or F16",
				 st_dtype_name(d));
	return 0;
}

static int check_outdir(const char *outdir, bool force)
{
	if (!*outdir)
		return titan_err(TITAN_EUSAGE, "empty output directory name");
	if (!force && path_exists(outdir))
		return titan_err(TITAN_EUSAGE, "'%s' already exists (use --force to replace it)",
				 outdir);
	return 0;
}

/* The tokenizer.json to ship: opts' (a file or a directory holding one),
 * else the checkpoint's; *path allocated, NULL for none. */
static int find_tokenizer(ckpt_reader *r, const char *given, char **path, titan_tok **tok)
{
	struct stat st;
	int rc;

	*tok = NULL;
	if (!given)
		*path = ckpt_reader_file(r, "tokenizer.json");
	else if (stat(given, &st) == 0 && S_ISDIR(st.st_mode))
		*path = file_path_join(given, "tokenizer.json");
	else
		*path = strdup(given);
	if (!*path)
		return given ? titan_err_nomem() : 0;
	if ((rc = tok_load(tok, *path, NULL)))
		return rc;
	if (strcmp(tok_source_format(*tok), "tokenizer.json"))
		return titan_err(TITAN_EUSAGE, "'%s': not a tokenizer.json (Hugging Face "
				 "needs one)", *path);
	return 0;
}

/* path without trailing slashes ("out/" and "out" are one directory, and
 * "out/.tmp" would land inside it), allocated. */
static char *strip_slashes(const char *path)
{
	size_t n = strlen(path);

	while (n > 1 && path[n - 1] == '/')
		n--;
	return strndup(path, n);
}

int hf_export(ckpt_reader *r, const char *outdir, const hf_export_opts *o)
{
	static const hf_export_opts defaults = { .dtype = ST_F32 };
	exporter x = { .r = r, .o = o ? o : &defaults };
	titan_tok *tok = NULL;
	char *dir = NULL, *tmp = NULL, *tok_path = NULL;
	bool made = false;
	int rc;

	if ((rc = check_dtype(x.o->dtype)) || (rc = check_outdir(outdir, x.o->force)))
		return rc;
	if ((rc = reader_config(r, &x.tc)))
		return rc;
	if ((rc = export_plan(&x)) ||
	    (rc = find_tokenizer(r, x.o->tokenizer, &tok_path, &tok)))
		goto out;
	dir = strip_slashes(outdir);
	if (!dir || !(tmp = path_suffix(dir, ".tmp"))) {
		rc = titan_err_nomem();
		goto out;
	}
	/* OUTDIR.tmp is what an interrupted export left: never complete */
	if ((rc = file_remove_tree(tmp)))
		goto out;
	if (mkdir(tmp, 0777) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", tmp);
		goto out;
	}
	made = true;
	for (int k = 0; k < x.nshards; k++)
		if ((rc = export_shard(&x, tmp, k)))
			goto out;
	if (x.nshards > 1 && (rc = export_index(&x, tmp)))
		goto out;
	if ((rc = export_config(&x, tmp, tok)))
		goto out;
	if (tok && (rc = export_tokenizer(&x, tmp, tok_path, tok)))
		goto out;
	if ((rc = file_install_dir(tmp, dir, x.o->force)))
		goto out;
	made = false;
out:
	if (made)
		file_discard_tree(tmp);
	tok_free(tok);
	free(tok_path);
	free(dir);
	free(tmp);
	free(x.in);
	free(x.perm);
	free(x.narrow);
	free(x.et);
	free(x.ti);
	config_free(&x.tc);
	return rc;
}

/* --- import --- */

typedef struct hf_src {
	const char *dir;
	char *cfg_path, *index_path;
	json_t *cfg, *weight_map;    /* weight_map NULL: one model.safetensors */
	st_file **files;
	char **names;
	size_t nfiles;
} hf_src;

static void src_free(hf_src *s)
{
	for (size_t i = 0; i < s->nfiles; i++) {
		st_close(s->files[i]);
		free(s->names[i]);
	}
	free(s->files);
	free(s->names);
	json_decref(s->cfg);
	json_decref(s->weight_map);
	free(s->cfg_path);
	free(s->index_path);
}

static int cfg_num(hf_src *s, const char *key, bool required, double def, double *out)
{
	json_t *v = json_object_get(s->cfg, key);

	if (!v || json_is_null(v)) {
		if (required)
			return titan_err(TITAN_EFORMAT, "'%s': $.%s: missing", s->cfg_path, key);
		*out = def;
		return 0;
	}
	if (!json_is_number(v))
		return titan_err(TITAN_EFORMAT, "'%s': $.%s: expected a number", s->cfg_path, key);
	*out = json_number_value(v);
	return 0;
}

static int cfg_int(hf_src *s, const char *key, bool required, int def, int *out)
{
	json_t *v = json_object_get(s->cfg, key);

	if (!v || json_is_null(v)) {
		if (required)
			return titan_err(TITAN_EFORMAT, "'%s': $.%s: missing", s->cfg_path, key);
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > INT_MAX)
		return titan_err(TITAN_EFORMAT, "'%s': $.%s: expected a non-negative integer",
				 s->cfg_path, key);
	*out = (int)json_integer_value(v);
	return 0;
}

static int cfg_false(hf_src *s, const char *key)
{
	json_t *v = json_object_get(s->cfg, key);

	if (v && !json_is_null(v) && !json_is_false(v))
		return titan_err(TITAN_EFORMAT, "'%s': $.%s: biases are not supported (a Llama "
				 "has none)", s->cfg_path, key);
	return 0;
}

static int check_arch(hf_src *s)
{
	json_t *arch = json_object_get(s->cfg, "architectures");
	const char *mt = NULL, *act = NULL;
	int rc;

	if (!json_is_object(s->cfg))
		return titan_err(TITAN_EFORMAT, "'%s': expected a JSON object", s->cfg_path);
	if ((rc = json_get_str(s->cfg, "model_type", &mt, s->cfg_path, "$")))
		return rc;
	if (strcmp(mt, "llama"))
		return titan_err(TITAN_EFORMAT, "'%s': $.model_type: \"%s\" is not supported "
				 "(only \"llama\")", s->cfg_path, mt);
	if (arch && !json_is_null(arch)) {
		size_t i;
		json_t *a;
		if (!json_is_array(arch))
			return titan_err(TITAN_EFORMAT, "'%s': $.architectures: expected an array",
					 s->cfg_path);
		json_array_foreach(arch, i, a)
			if (!json_is_string(a) || strcmp(json_string_value(a), "LlamaForCausalLM"))
				return titan_err(TITAN_EFORMAT, "'%s': $.architectures[%zu]: only "
						 "\"LlamaForCausalLM\" is supported", s->cfg_path, i);
	}
	if ((rc = json_opt_str(s->cfg, "hidden_act", &act, s->cfg_path, "$")))
		return rc;
	if (act && strcmp(act, "silu"))
		return titan_err(TITAN_EFORMAT, "'%s': $.hidden_act: \"%s\" is not supported "
				 "(only \"silu\")", s->cfg_path, act);
	if ((rc = cfg_false(s, "attention_bias")) || (rc = cfg_false(s, "mlp_bias")))
		return rc;
	return 0;
}

/* config.json as the model section of a titan config (every model key). */
static int import_model_json(hf_src *s, json_t **out)
{
	int dim, layers, heads, kv, vocab, ffn, maxpos, head_dim, orig = 8192;
	double eps, theta, factor = 8, low = 1, high = 4;
	bool tie = false, scaling = false;
	json_t *rs = json_object_get(s->cfg, "rope_scaling"), *tiev;
	int rc;

	if ((rc = check_arch(s)) ||
	    (rc = cfg_int(s, "hidden_size", true, 0, &dim)) ||
	    (rc = cfg_int(s, "intermediate_size", true, 0, &ffn)) ||
	    (rc = cfg_int(s, "num_hidden_layers", true, 0, &layers)) ||
	    (rc = cfg_int(s, "num_attention_heads", true, 0, &heads)) ||
	    (rc = cfg_int(s, "vocab_size", true, 0, &vocab)) ||
	    (rc = cfg_int(s, "max_position_embeddings", true, 0, &maxpos)) ||
	    (rc = cfg_int(s, "num_key_value_heads", false, heads, &kv)) ||
	    (rc = cfg_num(s, "rms_norm_eps", false, 1e-6, &eps)) ||
	    (rc = cfg_num(s, "rope_theta", false, 10000, &theta)))
		return rc;
	if (heads <= 0 || dim % heads)
		return titan_err(TITAN_EFORMAT, "'%s': $.num_attention_heads: %d does not divide "
				 "hidden_size %d", s->cfg_path, heads, dim);
	if ((rc = cfg_int(s, "head_dim", false, dim / heads, &head_dim)))
		return rc;
	if (head_dim != dim / heads)
		return titan_err(TITAN_EFORMAT, "'%s': $.head_dim: %d is not hidden_size / "
				 "num_attention_heads (%d): not supported", s->cfg_path, head_dim,
				 dim / heads);
	tiev = json_object_get(s->cfg, "tie_word_embeddings");
	if (tiev && !json_is_null(tiev)) {
		if (!json_is_boolean(tiev))
			return titan_err(TITAN_EFORMAT, "'%s': $.tie_word_embeddings: expected "
					 "true or false", s->cfg_path);
		tie = json_is_true(tiev);
	}
	if (rs && !json_is_null(rs)) {
		const char *type = NULL;
		double op = 0;
		if (!json_is_object(rs))
			return titan_err(TITAN_EFORMAT, "'%s': $.rope_scaling: expected an object "
					 "or null", s->cfg_path);
		if ((rc = json_opt_str(rs, "rope_type", &type, s->cfg_path, "$.rope_scaling")) ||
		    (!type && (rc = json_opt_str(rs, "type", &type, s->cfg_path,
						 "$.rope_scaling"))))
			return rc;
		if (!type)
			return titan_err(TITAN_EFORMAT, "'%s': $.rope_scaling.rope_type: missing",
					 s->cfg_path);
		if (!strcmp(type, "llama3")) {
			hf_src sub = { .cfg_path = s->cfg_path, .cfg = rs };
			scaling = true;
			if ((rc = cfg_num(&sub, "factor", true, 0, &factor)) ||
			    (rc = cfg_num(&sub, "low_freq_factor", true, 0, &low)) ||
			    (rc = cfg_num(&sub, "high_freq_factor", true, 0, &high)) ||
			    (rc = cfg_num(&sub, "original_max_position_embeddings", true, 0, &op)))
				return titan_err_prefix(rc, "rope_scaling");
			orig = (int)op;
		} else if (strcmp(type, "default")) {
			return titan_err(TITAN_EFORMAT, "'%s': $.rope_scaling.rope_type: \"%s\" is "
					 "not supported (only \"llama3\" or null)", s->cfg_path, type);
		}
	}
	*out = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:f, s:f, s:b, s:f, s:f,"
			 " s:f, s:i, s:i, s:b, s:b}",
			 "dim", dim, "n_layers", layers, "n_heads", heads, "n_kv_heads", kv,
			 "vocab_size", vocab, "multiple_of", 256, "ffn_dim_multiplier", 0.0,
			 "ffn_hidden", ffn, "norm_eps", eps, "rope_theta", theta,
			 "rope_scaling", scaling, "rope_scaling_factor", factor,
			 "rope_low_freq_factor", low, "rope_high_freq_factor", high,
			 "rope_original_max_pos", orig, "max_seq_len", maxpos,
			 "tie_embeddings", tie, "depth_init", 1);
	return *out ? 0 : titan_err_nomem();
}

static int open_src_file(hf_src *s, const char *name, st_file **out)
{
	for (size_t i = 0; i < s->nfiles; i++)
		if (!strcmp(s->names[i], name)) {
			*out = s->files[i];
			return 0;
		}
	if (!*name || strchr(name, '/') || !strcmp(name, "..") || !strcmp(name, "."))
		return titan_err(TITAN_EFORMAT, "'%s': $.weight_map: file name '%s' is not a "
				 "file in the directory", s->index_path, name);
	st_file **f = realloc(s->files, (s->nfiles + 1) * sizeof *f);
	if (!f)
		return titan_err_nomem();
	s->files = f;
	char **n = realloc(s->names, (s->nfiles + 1) * sizeof *n);
	if (!n)
		return titan_err_nomem();
	s->names = n;
	char *path = file_path_join(s->dir, name);
	char *copy = strdup(name);
	int rc = path && copy ? st_open(&s->files[s->nfiles], path) : titan_err_nomem();
	free(path);
	if (rc) {
		free(copy);
		return rc;
	}
	s->names[s->nfiles] = copy;
	*out = s->files[s->nfiles++];
	return 0;
}

static int open_src(hf_src *s, const char *dir)
{
	int rc;

	s->dir = dir;
	s->cfg_path = file_path_join(dir, "config.json");
	s->index_path = file_path_join(dir, "model.safetensors.index.json");
	if (!s->cfg_path || !s->index_path)
		return titan_err_nomem();
	if ((rc = json_load_path(&s->cfg, s->cfg_path)))
		return rc;
	if (path_exists(s->index_path)) {
		json_t *idx = NULL, *wm;
		if ((rc = json_load_path(&idx, s->index_path)))
			return rc;
		if (!json_is_object(idx) ||
		    (rc = json_get_obj(idx, "weight_map", &wm, s->index_path, "$"))) {
			json_decref(idx);
			return rc ? rc : titan_err(TITAN_EFORMAT, "'%s': expected a JSON object",
						   s->index_path);
		}
		s->weight_map = json_incref(wm);
		json_decref(idx);
	}
	return 0;
}

/* The safetensors tensor that holds HF tensor name, checked for dtype and
 * shape. */
static int find_src(hf_src *s, const char *name, const llama_tensor_info *t,
		    st_file **fo, const st_tensor **to)
{
	const char *fname = "model.safetensors";
	st_file *f = NULL;
	const st_tensor *st;
	int rc;

	if (s->weight_map) {
		json_t *v = json_object_get(s->weight_map, name);
		if (!v)
			return titan_err(TITAN_EFORMAT, "'%s': $.weight_map: no tensor '%s'",
					 s->index_path, name);
		if (!json_is_string(v))
			return titan_err(TITAN_EFORMAT, "'%s': $.weight_map.%s: expected a string",
					 s->index_path, name);
		fname = json_string_value(v);
	}
	if ((rc = open_src_file(s, fname, &f)))
		return rc;
	if (!(st = st_find(f, name)))
		return titan_err(TITAN_EFORMAT, "'%s': no tensor '%s'", f->path, name);
	if (st->dtype != ST_F32 && st->dtype != ST_BF16 && st->dtype != ST_F16)
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': dtype %s is not supported "
				 "(F32, BF16 or F16)", f->path, name, st_dtype_name(st->dtype));
	bool same = st->ndim == t->ndim;
	for (int d = 0; same && d < t->ndim; d++)
		same = st->shape[d] == t->shape[d];
	if (!same) {
		char got[96], want[96];
		ckpt_shape_text(got, sizeof got, st->ndim, st->shape);
		ckpt_shape_text(want, sizeof want, t->ndim, t->shape);
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': shape %s but config.json "
				 "gives %s", f->path, name, got, want);
	}
	*fo = f;
	*to = st;
	return 0;
}

static void widen(const st_file *f, const st_tensor *t, float *dst, size_t n)
{
	const uint8_t *p = st_data(f, t);
	uint16_t h;

	if (t->dtype == ST_F32) {
		memcpy(dst, p, n * sizeof(float));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		memcpy(&h, p + 2 * i, 2);
		dst[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
	}
}

/* model.json beside outdir (a flavor file: the model keys at top level),
 * for ckpt_writer_attach_file; *path allocated. */
static int write_flavor(const json_t *model, const char *outdir, char **path)
{
	json_t *flavor = json_deep_copy(model);
	char *p = path_suffix(outdir, ".model.json.XXXXXX");
	int fd = -1, rc = 0;
	char *text = NULL;

	*path = NULL;
	if (!flavor || !p) {
		rc = titan_err_nomem();
		goto out;
	}
	json_object_del(flavor, "flavor");
	if (!(text = json_dumps(flavor, JSON_SORT_KEYS | JSON_INDENT(2)))) {
		rc = titan_err_nomem();
		goto out;
	}
	if ((fd = mkstemp(p)) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", p);
		goto out;
	}
	size_t n = strlen(text);
	if (write(fd, text, n) != (ssize_t)n || write(fd, "\n", 1) != 1) {
		rc = titan_err_errno(TITAN_EIO, "cannot write '%s'", p);
		unlink(p);
		goto out;
	}
	*path = p;
	p = NULL;
out:
	if (fd >= 0)
		close(fd);
	free(text);
	free(p);
	json_decref(flavor);
	return rc;
}

int hf_import(const char *hf_dir, const char *outdir_arg, const hf_import_opts *o)
{
	char *outdir;
	static const hf_import_opts defaults = { 0 };
	hf_src s = { 0 };
	train_config tc = { 0 };
	llama_tensor_info *ti = NULL;
	int nt = 0, rc;
	json_t *model = NULL, *merged = NULL, *extra = NULL;
	ckpt_writer *w = NULL;
	st_file **tf = NULL;
	const st_tensor **tt = NULL;
	float *buf = NULL, *perm = NULL;
	char *flavor = NULL, *tok_path = NULL;
	titan_tok *tok = NULL;
	uint64_t total = 0, done = 0;
	size_t maxn = 1, maxqk = 1;
	int seq, head_dim;

	if (!o)
		o = &defaults;
	if ((rc = check_outdir(outdir_arg, o->force)))
		return rc;
	if (!(outdir = strip_slashes(outdir_arg)))
		return titan_err_nomem();
	if ((rc = open_src(&s, hf_dir)) || (rc = import_model_json(&s, &model)))
		goto out;
	seq = (int)json_integer_value(json_object_get(model, "max_seq_len"));
	merged = json_pack("{s:O, s:{s:i}}", "model", model, "training", "seq_len",
			   seq < 2048 ? seq : 2048);
	if (!merged) {
		rc = titan_err_nomem();
		goto out;
	}
	if ((rc = config_from_json(&tc, merged, s.cfg_path))) {
		rc = titan_err_prefix(TITAN_EFORMAT, "'%s'", s.cfg_path);
		goto out;
	}
	if ((rc = llama_tensors(&tc.model, &ti, &nt)))
		goto out;
	tf = calloc((size_t)nt, sizeof *tf);
	tt = calloc((size_t)nt, sizeof *tt);
	if (!tf || !tt) {
		rc = titan_err_nomem();
		goto out;
	}
	/* Check every tensor before writing anything. */
	for (int i = 0; i < nt; i++) {
		char hf[96];
		if (!hf_name_from_titan(ti[i].name, hf, sizeof hf)) {
			rc = titan_err(TITAN_EINTERNAL, "no Hugging Face name for '%s'", ti[i].name);
			goto out;
		}
		if ((rc = find_src(&s, hf, &ti[i], &tf[i], &tt[i])))
			goto out;
		total += ti[i].numel * sizeof(float);
		maxn = TITAN_MAX(maxn, ti[i].numel);
		if (rotary_heads(&tc.model, ti[i].name))
			maxqk = TITAN_MAX(maxqk, ti[i].numel);
	}

	tok_path = file_path_join(hf_dir, "tokenizer.json");
	if (!tok_path) {
		rc = titan_err_nomem();
		goto out;
	}
	/* A tokenizer titan cannot read (a normalizer, Unigram...) is left
	 * behind rather than failing the weights. */
	if (path_exists(tok_path) && tok_load(&tok, tok_path, NULL))
		tok = NULL;
	extra = json_pack("{s:O, s:{s:i, s:i, s:{s:i, s:i}, s:f, s:i, s:s, s:I}}",
			  "config", tc.json, "train_state", "step", 0, "tokens", 0,
			  "loader", "epoch", 0, "pos", 0, "lr", 0.0, "seed", 0,
			  "tokenizer_sha256", tok ? tok_hash(tok) : "",
			  "vocab_size", (json_int_t)(tok ? tok_vocab_size(tok)
							 : (uint32_t)tc.model.vocab_size));
	if (!extra) {
		rc = titan_err_nomem();
		goto out;
	}
	if ((rc = write_flavor(json_object_get(tc.json, "model"), outdir, &flavor)))
		goto out;

	buf = malloc(maxn * sizeof(float));
	perm = malloc(maxqk * sizeof(float));
	if (!buf || !perm) {
		rc = titan_err_nomem();
		goto out;
	}
	if ((rc = ckpt_writer_new(&w, outdir, 0, o->force)))
		goto out;
	for (int i = 0; i < nt; i++) {
		ckpt_tensor t = { .name = ti[i].name, .ndim = ti[i].ndim };
		for (int d = 0; d < ti[i].ndim; d++)
			t.shape[d] = t.slice_shape[d] = ti[i].shape[d];
		if ((rc = ckpt_writer_declare(w, 0, &t)))
			goto out;
	}
	head_dim = tc.model.dim / tc.model.n_heads;
	for (int i = 0; i < nt; i++) {
		const float *src = buf;
		int heads = rotary_heads(&tc.model, ti[i].name);
		widen(tf[i], tt[i], buf, ti[i].numel);
		if (heads) {
			hf_rotary_permute(buf, perm, heads, head_dim, ti[i].shape[1], false);
			src = perm;
		}
		if ((rc = ckpt_writer_put(w, src, ti[i].numel)))
			goto out;
		done += ti[i].numel * sizeof(float);
		if (o->progress)
			o->progress(o->progress_arg, done, total);
	}
	if ((rc = ckpt_writer_attach_file(w, "model.json", flavor)))
		goto out;
	if (tok && (rc = ckpt_writer_attach_file(w, "tokenizer.json", tok_path)))
		goto out;
	rc = ckpt_writer_commit(w, NULL, extra);
out:
	if (w)
		ckpt_writer_free(w);
	if (flavor)
		unlink(flavor);
	free(flavor);
	free(outdir);
	free(tok_path);
	tok_free(tok);
	free(buf);
	free(perm);
	free(tf);
	free(tt);
	free(ti);
	json_decref(extra);
	json_decref(merged);
	json_decref(model);
	config_free(&tc);
	src_free(&s);
	return rc;
}
