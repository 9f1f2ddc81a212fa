/* reshard.c - rewrite a checkpoint for another parallel layout, one slice
 * in memory at a time. (man 5 titan-checkpoint) */
#include "core/base.h"
#include "ckpt/reshard.h"

#include "ckpt/ckpt_priv.h"
#include "config/config.h"
#include "core/file.h"

/* A tensor to write: a model tensor or one of its moments. */
struct item {
	char name[96];
	const llama_tensor_info *t;    /* its parameter, for the slicing rule */
};

static const char *const moment_prefix[2] = { "optim.exp_avg.", "optim.exp_avg_sq." };

/* The source's tensor name, checked against the model's shape. */
static int check_source(const ckpt_reader *r, const char *name, const llama_tensor_info *t,
			bool *present)
{
	const ckpt_tensor_info *e = ckpt_reader_find(r, name);
	*present = e != NULL;
	if (!e)
		return 0;
	bool same = e->ndim == t->ndim;
	for (int d = 0; same && d < t->ndim; d++)
		same = e->shape[d] == t->shape[d];
	if (!same)
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s' does not have the shape its model config gives",
				 ckpt_reader_dir(r), name);
	return 0;
}

/* The model tensors, then both moments when the source has them (all of
 * them or none: a checkpoint with only some is damaged). */
static int plan(const ckpt_reader *r, const llama_tensor_info *ti, int nt,
		struct item **out, size_t *n)
{
	struct item *it = calloc((size_t)nt * 3, sizeof *it);
	if (!it)
		return titan_err_nomem();
	*out = it;
	*n = 0;
	size_t have[3] = {0};
	const char *missing[3] = {0};
	for (int k = 0; k < 3; k++) {
		const char *prefix = k ? moment_prefix[k - 1] : "";
		for (int i = 0; i < nt; i++) {
			struct item *e = &it[(size_t)k * nt + i];
			snprintf(e->name, sizeof e->name, "%s%s", prefix, ti[i].name);
			e->t = &ti[i];
			bool present;
			int rc = check_source(r, e->name, &ti[i], &present);
			if (rc)
				return rc;
			if (present)
				have[k]++;
			else if (!missing[k])
				missing[k] = e->name;
		}
	}
	for (int k = 0; k < 3; k++)
		if (have[k] != (size_t)nt && (k == 0 || have[1] || have[2]))
			return titan_err(TITAN_EFORMAT, "'%s': tensor '%s' not in the checkpoint",
					 ckpt_reader_dir(r), missing[k]);
	*n = have[1] ? (size_t)nt * 3 : (size_t)nt;
	return 0;
}

json_t *ckpt_layout_json(const par_layout *l)
{
	json_t *j = json_pack("{s:i, s:i, s:i, s:i, s:i}", "pp", l->pp, "dp_replicate",
			      l->dp_replicate, "dp_shard", l->dp_shard, "cp", l->cp, "tp", l->tp);

	/* interleaved pipelines only: the five degrees are the usual record */
	if (j && l->pp_stages > 1 &&
	    json_object_set_new(j, "pp_stages", json_integer(l->pp_stages))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static int write_all(ckpt_reader *r, ckpt_writer *w, const llama_config *c,
		     const par_layout *l, const struct item *items, size_t n,
		     ckpt_progress_fn progress, void *arg)
{
	int world = par_layout_world(l);
	int64_t biggest = 0;
	uint64_t total = 0, done = 0;
	int rc = 0;

	/* Declare everything first: the writer streams in this order. */
	for (int rank = 0; rank < world; rank++) {
		for (size_t i = 0; !rc && i < n; i++) {
			ckpt_tensor t = { .name = items[i].name, .ndim = items[i].t->ndim };
			memcpy(t.shape, items[i].t->shape, sizeof items[i].t->shape);
			if (!par_ckpt_slice(c, l, rank, items[i].t, t.slice_start, t.slice_shape))
				continue;
			int64_t k = ckpt_numel(t.ndim, t.slice_shape);
			biggest = TITAN_MAX(biggest, k);
			total += (uint64_t)k * sizeof(float);
			rc = ckpt_writer_declare(w, rank, &t);
		}
	}
	float *buf = rc ? NULL : malloc((size_t)(biggest ? biggest : 1) * sizeof *buf);
	if (!rc && !buf)
		rc = titan_err_nomem();
	for (int rank = 0; !rc && rank < world; rank++) {
		for (size_t i = 0; !rc && i < n; i++) {
			int64_t start[CKPT_MAX_DIMS] = {0}, shape[CKPT_MAX_DIMS] = {0};
			if (!par_ckpt_slice(c, l, rank, items[i].t, start, shape))
				continue;
			int64_t k = ckpt_numel(items[i].t->ndim, shape);
			rc = ckpt_reader_read(r, items[i].name, start, shape, buf);
			if (!rc)
				rc = ckpt_writer_put(w, buf, (size_t)k);
			done += (uint64_t)k * sizeof(float);
			if (!rc && progress)
				progress(arg, done, total);
		}
	}
	free(buf);
	return rc;
}

int ckpt_reshard(ckpt_reader *r, const char *outdir, const par_layout *l, bool force,
		 ckpt_progress_fn progress, void *arg)
{
	const json_t *m = ckpt_reader_manifest(r);
	json_t *extra = json_object_get(m, "extra");
	json_t *config = json_object_get(extra, "config");
	if (!json_is_object(config))
		return titan_err(TITAN_EFORMAT,
				 "'%s/manifest.json': $.extra.config: no model config, cannot reshard",
				 ckpt_reader_dir(r));

	char *where = file_path_join(ckpt_reader_dir(r), "manifest.json");
	train_config cfg;
	int rc = where ? config_from_json(&cfg, config, where) : titan_err_nomem();
	free(where);
	if (rc)
		return rc;

	llama_tensor_info *ti = NULL;
	struct item *items = NULL;
	size_t n = 0;
	int nt = 0;
	ckpt_writer *w = NULL;
	json_t *layout = NULL;
	char *tok = NULL;
	if ((rc = par_layout_check(l, &cfg.model, 0)) ||
	    (rc = llama_tensors(&cfg.model, &ti, &nt)) ||
	    (rc = plan(r, ti, nt, &items, &n)) ||
	    (rc = ckpt_writer_new(&w, outdir, ckpt_reader_step(r), force)))
		goto out;
	if ((rc = write_all(r, w, &cfg.model, l, items, n, progress, arg)))
		goto out;
	tok = ckpt_reader_file(r, "tokenizer.json");
	if (tok && (rc = ckpt_writer_attach_file(w, "tokenizer.json", tok)))
		goto out;
	if (!(layout = ckpt_layout_json(l))) {
		rc = titan_err_nomem();
		goto out;
	}
	rc = ckpt_writer_commit(w, layout, extra);
out:
	ckpt_writer_free(w);
	json_decref(layout);
	free(tok);
	free(items);
	free(ti);
	config_free(&cfg);
	return rc;
}
