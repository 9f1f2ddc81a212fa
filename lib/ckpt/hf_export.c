/* hf_export.c - a titan checkpoint as a Hugging Face Llama directory
 * (hf_export in hf.h).
 *
 * Export streams: each tensor is read from the checkpoint a block of rows at
 * a time, permuted (q and k), narrowed to the output dtype and handed to the
 * safetensors stream, so memory holds a few blocks whatever the model size. */
#include "core/base.h"
#include "ckpt/hf.h"

#include <sys/stat.h>

#include "ckpt/hf_priv.h"
#include "config/config.h"
#include "core/file.h"
#include "core/half.h"
#include "core/json.h"
#include "tok/tok.h"

/* Floats per block read from the checkpoint (16 MB). */
#define HF_BLOCK_FLOATS ((size_t)4 << 20)
#define HF_DEFAULT_SHARD ((uint64_t)5000000000)

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
		e->rot_heads = hf_rotary_heads(c, t->name);
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

int hf_export(ckpt_reader *r, const char *outdir, const hf_export_opts *o)
{
	static const hf_export_opts defaults = { .dtype = ST_F32 };
	exporter x = { .r = r, .o = o ? o : &defaults };
	titan_tok *tok = NULL;
	char *dir = NULL, *tmp = NULL, *tok_path = NULL;
	bool made = false;
	int rc;

	if ((rc = check_dtype(x.o->dtype)) || (rc = hf_check_outdir(outdir, x.o->force)))
		return rc;
	if ((rc = reader_config(r, &x.tc)))
		return rc;
	if ((rc = export_plan(&x)) ||
	    (rc = find_tokenizer(r, x.o->tokenizer, &tok_path, &tok)))
		goto out;
	dir = hf_strip_slashes(outdir);
	if (!dir || !(tmp = hf_path_suffix(dir, ".tmp"))) {
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
