/* load.c - a checkpoint's model and tokenizer for inference. */
#include "core/base.h"

#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt.h"
#include "config/config.h"
#include "data/dataset.h"
#include "gen/load.h"
#include "model/shard.h"

/* A path that is not there gets a message naming the checkpoint. */
static int open_reader(const char *path, ckpt_reader **r)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return titan_err_errno(TITAN_EIO, "cannot open checkpoint '%s'", path);
	if (!S_ISDIR(st.st_mode))
		return titan_err(TITAN_EIO, "'%s': not a checkpoint (a step-N directory or a "
				 "folder of them)", path);
	return ckpt_reader_open(r, path);
}

/* Every parameter from the checkpoint, whatever its shard layout, into the
 * model's buffers: the whole tensors, or under tensor parallelism this
 * rank's slices of them (lib/model/shard.h's cut). */
static int load_params(gen_model *g, ckpt_reader *r)
{
	llama_model *m = g->model;
	par_layout l = par_layout_single();
	llama_tensor_info *ti, *lt;
	int nt, rc;

	l.tp = m->tp;
	if ((rc = llama_tensors(&m->cfg, &ti, &nt)))
		return rc;
	if ((rc = llama_tensors_tp(&m->cfg, m->tp, &lt, &nt))) {
		free(ti);
		return rc;
	}
	for (int i = 0; i < nt && !rc; i++) {
		int64_t start[2], shape[2];
		const ckpt_tensor_info *ct = ckpt_reader_find(r, ti[i].name);
		bool same;

		if (!ct) {
			rc = titan_err(TITAN_EFORMAT, "checkpoint '%s': no tensor '%s'", g->dir,
				       ti[i].name);
			break;
		}
		same = ct->ndim == ti[i].ndim;
		for (int k = 0; same && k < ct->ndim; k++)
			same = ct->shape[k] == ti[i].shape[k];
		if (!same) {
			rc = titan_err(TITAN_EFORMAT, "checkpoint '%s': tensor '%s' has another "
				       "shape than its config gives ([%lld, %lld])", g->dir,
				       ti[i].name, (long long)ti[i].shape[0],
				       (long long)ti[i].shape[1]);
			break;
		}
		par_slice(&m->cfg, &l, m->tp_rank, &ti[i], start, shape);
		rc = ckpt_reader_read(r, ti[i].name, start, shape,
				      m->params[lt[i].chunk] + lt[i].offset);
	}
	free(ti);
	free(lt);
	return rc;
}

/* extra.train_state's tokenizer facts, when the trainer recorded them. */
static void read_tok_facts(gen_model *g)
{
	json_t *st = json_object_get(json_object_get(g->manifest, "extra"), "train_state");
	json_t *sha = json_object_get(st, "tokenizer_sha256");
	json_t *vocab = json_object_get(st, "vocab_size");

	g->tok_sha256[0] = 0;
	g->tok_vocab = -1;
	if (json_is_string(sha) && strlen(json_string_value(sha)) == 64)
		memcpy(g->tok_sha256, json_string_value(sha), 65);
	if (json_is_integer(vocab))
		g->tok_vocab = json_integer_value(vocab);
}

int gen_model_load(gen_model **out, const char *path, int tp, int tp_rank)
{
	gen_model *g = calloc(1, sizeof *g);
	ckpt_reader *r = NULL;
	json_t *config;
	train_config cfg;
	int rc;

	*out = NULL;
	if (!g)
		return titan_err_nomem();
	g->mem.device = "cpu";
	if ((rc = open_reader(path, &r)))
		goto fail;
	g->dir = strdup(ckpt_reader_dir(r));
	g->manifest = json_deep_copy(ckpt_reader_manifest(r));
	if (!g->dir || !g->manifest) {
		rc = titan_err_nomem();
		goto fail;
	}
	g->tokenizer = ckpt_reader_file(r, "tokenizer.json");
	config = json_object_get(json_object_get(g->manifest, "extra"), "config");
	if (!json_is_object(config)) {
		rc = titan_err(TITAN_EFORMAT, "'%s/manifest.json': $.extra.config: missing (not "
			       "a titan-train checkpoint?)", g->dir);
		goto fail;
	}
	if ((rc = config_from_json(&cfg, config, g->dir))) {
		/* a bad config in a checkpoint is bad input, not a bad flag */
		rc = titan_err_prefix(TITAN_EFORMAT, "checkpoint '%s'", g->dir);
		goto fail;
	}
	/* inference needs no gradients */
	rc = llama_new_tp(&g->model, &cfg.model, &kernels_cpu, &g->mem, false, tp, tp_rank);
	config_free(&cfg);
	if (rc)
		goto fail;
	if ((rc = load_params(g, r)))
		goto fail;
	ckpt_reader_close(r);
	read_tok_facts(g);
	*out = g;
	return 0;
fail:
	ckpt_reader_close(r);
	gen_model_free(g);
	return rc;
}

void gen_model_free(gen_model *g)
{
	if (!g)
		return;
	llama_free(g->model);
	json_decref(g->manifest);
	free(g->tokenizer);
	free(g->dir);
	free(g);
}

int gen_model_tokenizer(const gen_model *g, char **path)
{
	json_t *config = json_object_get(json_object_get(g->manifest, "extra"), "config");
	json_t *ds = json_object_get(json_object_get(config, "data"), "dataset");
	dataset *d;

	*path = NULL;
	if (g->tokenizer)
		return (*path = strdup(g->tokenizer)) ? 0 : titan_err_nomem();
	/* the dataset path is as the trainer was given it; it still names
	 * the tokenizer when run from the same place */
	if (json_is_string(ds) && *json_string_value(ds) &&
	    dataset_open(&d, json_string_value(ds)) == 0) {
		const char *src = dataset_tok(d)->source;

		if (*src && access(src, R_OK) == 0)
			*path = strdup(src);
		dataset_close(d);
		if (*path)
			return 0;
	}
	return titan_err(TITAN_EUSAGE, "checkpoint '%s' carries no tokenizer.json and its "
			 "dataset's tokenizer is not found: pass one with -t TOK", g->dir);
}

int gen_check_tokenizer(const gen_model *g, const titan_tok *t, const char *name)
{
	uint32_t tv = tok_vocab_size(t);
	int mv = g->model->cfg.vocab_size;

	if (tv > (uint32_t)mv)
		return titan_err(TITAN_EUSAGE, "tokenizer '%s' has %u tokens but the model's "
				 "vocabulary is %d: it is not the tokenizer of checkpoint '%s'",
				 name, tv, mv, g->dir);
	if (*g->tok_sha256 && strcmp(g->tok_sha256, tok_hash(t)))
		return titan_err(TITAN_EUSAGE, "tokenizer '%s' is not the one checkpoint '%s' "
				 "was trained with (sha256 %.12s... vs %.12s...)", name, g->dir,
				 tok_hash(t), g->tok_sha256);
	return 0;
}
