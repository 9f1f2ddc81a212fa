/* hf_import.c - a Hugging Face Llama directory as a titan checkpoint
 * (hf_import in hf.h).
 *
 * Import reads the mapped safetensors files and hands each tensor, widened
 * to fp32 and unpermuted, to the checkpoint writer. */
#include "core/base.h"
#include "ckpt/hf.h"

#include <unistd.h>

#include "ckpt/hf_priv.h"
#include "config/config.h"
#include "core/file.h"
#include "core/half.h"
#include "core/json.h"
#include "tok/tok.h"

#define HF_MAX_LAYERS (1 << 16)

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
	/* The tensor list is built before the files are searched: a layer
	 * count no model has would only exhaust memory there. */
	if (layers > HF_MAX_LAYERS)
		return titan_err(TITAN_EFORMAT, "'%s': $.num_hidden_layers: %d is more than %d",
				 s->cfg_path, layers, HF_MAX_LAYERS);
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
			if (!(op >= 0 && op <= INT_MAX) || op != (int)op)
				return titan_err(TITAN_EFORMAT, "'%s': $.rope_scaling."
						 "original_max_position_embeddings: expected a "
						 "non-negative integer", s->cfg_path);
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
	if (hf_path_exists(s->index_path)) {
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
	} else {
		for (size_t i = 0; i < n; i++) {
			memcpy(&h, p + 2 * i, 2);
			dst[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
		}
	}
	st_release(f, p, t->end - t->begin);
}

/* model.json beside outdir (a flavor file: the model keys at top level),
 * for ckpt_writer_attach_file; *path allocated. */
static int write_flavor(const json_t *model, const char *outdir, char **path)
{
	json_t *flavor = json_deep_copy(model);
	char *p = hf_path_suffix(outdir, ".model.json.XXXXXX");
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
	if ((rc = hf_check_outdir(outdir_arg, o->force)))
		return rc;
	if (!(outdir = hf_strip_slashes(outdir_arg)))
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
		if (hf_rotary_heads(&tc.model, ti[i].name))
			maxqk = TITAN_MAX(maxqk, ti[i].numel);
	}

	tok_path = file_path_join(hf_dir, "tokenizer.json");
	if (!tok_path) {
		rc = titan_err_nomem();
		goto out;
	}
	/* A tokenizer titan cannot read (a normalizer, Unigram...) is left
	 * behind rather than failing the weights. */
	if (hf_path_exists(tok_path) && tok_load(&tok, tok_path, NULL))
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
		int heads = hf_rotary_heads(&tc.model, ti[i].name);
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
