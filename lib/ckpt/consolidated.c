/* consolidated.c - every model parameter of a checkpoint in one safetensors
 * file under titan's names (hf.h), streamed a block of rows at a time. */
#include "core/base.h"
#include "ckpt/hf.h"

#include <sys/stat.h>

#include "config/config.h"
#include "core/half.h"

/* Floats per block read from the checkpoint (16 MB). */
#define BLOCK_FLOATS ((size_t)4 << 20)

static int put_tensor(ckpt_reader *r, st_stream *w, const llama_tensor_info *t,
		      st_dtype dtype, float *in, uint16_t *narrow, size_t block)
{
	int64_t rows = t->ndim == 2 ? t->shape[0] : 1;
	int64_t cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
	int64_t step = TITAN_MAX((int64_t)1, (int64_t)(block / (size_t)cols));
	int rc;

	for (int64_t r0 = 0; r0 < rows; r0 += step) {
		int64_t nr = TITAN_MIN(step, rows - r0);
		int64_t start[2] = { r0, 0 }, shape[2] = { nr, cols };
		size_t n = (size_t)nr * (size_t)cols;

		rc = t->ndim == 2 ? ckpt_reader_read(r, t->name, start, shape, in)
				  : ckpt_reader_read(r, t->name, NULL, NULL, in);
		if (rc)
			return rc;
		if (dtype == ST_F32)
			rc = st_stream_put(w, in, n * sizeof(float));
		else {
			for (size_t i = 0; i < n; i++)
				narrow[i] = dtype == ST_BF16 ? f32_to_bf16(in[i]) : f32_to_f16(in[i]);
			rc = st_stream_put(w, narrow, n * sizeof(uint16_t));
		}
		if (rc)
			return rc;
	}
	return 0;
}

int ckpt_export_consolidated(ckpt_reader *r, const char *path, st_dtype dtype,
			     bool force, ckpt_progress_fn progress, void *arg)
{
	const json_t *cfg = json_object_get(json_object_get(ckpt_reader_manifest(r), "extra"),
					    "config");
	char where[PATH_MAX + 32], step[24], *model = NULL;
	train_config tc = { 0 };
	llama_tensor_info *ti = NULL;
	st_stream *w = NULL;
	float *in = NULL;
	uint16_t *narrow = NULL;
	size_t block = 0;
	uint64_t total = 0, done = 0;
	struct stat st;
	int nt = 0, rc;

	if (dtype != ST_F32 && dtype != ST_BF16 && dtype != ST_F16)
		return titan_err(TITAN_EUSAGE, "dtype %s: expected F32, BF16 or F16",
				 st_dtype_name(dtype));
	if (!force && stat(path, &st) == 0)
		return titan_err(TITAN_EUSAGE, "'%s' exists (force replaces it)", path);
	snprintf(where, sizeof where, "%s/manifest.json", ckpt_reader_dir(r));
	if (!json_is_object(cfg))
		return titan_err(TITAN_EFORMAT, "'%s': $.extra.config: no model config", where);
	if ((rc = config_from_json(&tc, cfg, where)) ||
	    (rc = llama_tensors(&tc.model, &ti, &nt)))
		goto out;
	for (int i = 0; i < nt; i++) {
		const ckpt_tensor_info *ci = ckpt_reader_find(r, ti[i].name);
		bool same = ci && ci->ndim == ti[i].ndim;
		for (int d = 0; same && d < ti[i].ndim; d++)
			same = ci->shape[d] == ti[i].shape[d];
		if (!same) {
			rc = titan_err(TITAN_EFORMAT, "'%s': tensor '%s': %s", ckpt_reader_dir(r),
				       ti[i].name, ci ? "shape differs from its config's"
						      : "missing");
			goto out;
		}
		int64_t cols = ti[i].ndim == 2 ? ti[i].shape[1] : ti[i].shape[0];
		size_t b = TITAN_MAX((size_t)1, BLOCK_FLOATS / (size_t)cols) * (size_t)cols;
		block = TITAN_MAX(block, TITAN_MIN(b, ti[i].numel));
		total += ti[i].numel * st_dtype_size(dtype);
	}
	in = malloc(TITAN_MAX(block, (size_t)1) * sizeof *in);
	narrow = malloc(TITAN_MAX(block, (size_t)1) * sizeof *narrow);
	model = json_dumps(json_object_get(tc.json, "model"), JSON_SORT_KEYS | JSON_COMPACT);
	if (!in || !narrow || !model) {
		rc = titan_err_nomem();
		goto out;
	}
	snprintf(step, sizeof step, "%ld", ckpt_reader_step(r));
	if ((rc = st_stream_new(&w)) ||
	    (rc = st_stream_meta(w, "format", "titan-consolidated")) ||
	    (rc = st_stream_meta(w, "step", step)) ||
	    (rc = st_stream_meta(w, "config", model)))
		goto out;
	for (int i = 0; i < nt; i++)
		if ((rc = st_stream_declare(w, ti[i].name, dtype, ti[i].ndim, ti[i].shape)))
			goto out;
	if ((rc = st_stream_begin(w, path)))
		goto out;
	for (int i = 0; i < nt; i++) {
		if ((rc = put_tensor(r, w, &ti[i], dtype, in, narrow, block)))
			goto out;
		done += ti[i].numel * st_dtype_size(dtype);
		if (progress)
			progress(arg, done, total);
	}
	rc = st_stream_finish(w);
out:
	st_stream_free(w);
	free(model);
	free(in);
	free(narrow);
	free(ti);
	config_free(&tc);
	return rc;
}
