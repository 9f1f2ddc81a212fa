/* ckpt_logits.c - the logits a checkpoint's model gives for one sequence,
 * for comparison with a reference implementation:
 *
 *   ckpt_logits CKPT IDS_FILE OUT.safetensors
 *
 * CKPT is a step directory or a checkpoint folder (its latest step);
 * IDS_FILE holds token ids as decimal numbers separated by white space;
 * OUT gets "logits", F32 [T, V], the forward pass with the causal mask on
 * the CPU backend. */
#include "core/base.h"

#include <jansson.h>

#include "ckpt/ckpt.h"
#include "ckpt/safetensors.h"
#include "config/config.h"
#include "core/buf.h"
#include "core/file.h"
#include "model/llama.h"

static int read_ids(const char *path, titan_u32s *ids)
{
	titan_bytes b = { 0 };
	int rc = file_read_all(path, &b);
	char *p, *end;

	if (rc)
		return rc;
	if ((rc = bytes_append(&b, "", 1)))
		goto out;
	for (p = (char *)b.v;;) {
		while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
			p++;
		if (!*p)
			break;
		errno = 0;
		unsigned long v = strtoul(p, &end, 10);
		if (end == p || errno || v > UINT32_MAX) {
			rc = titan_err(TITAN_EFORMAT, "'%s': offset %zu: expected a token id",
				       path, (size_t)(p - (char *)b.v));
			goto out;
		}
		if ((rc = u32s_push(ids, (uint32_t)v)))
			goto out;
		p = end;
	}
	if (!ids->n)
		rc = titan_err(TITAN_EFORMAT, "'%s': no token ids", path);
out:
	bytes_free(&b);
	return rc;
}

static int load_model(ckpt_reader *r, const train_config *tc, llama_model *m)
{
	llama_tensor_info *ti;
	int n, rc;

	if ((rc = llama_tensors(&tc->model, &ti, &n)))
		return rc;
	for (int i = 0; i < n && !rc; i++)
		rc = ckpt_reader_read(r, ti[i].name, NULL, NULL,
				      m->params[ti[i].chunk] + ti[i].offset);
	free(ti);
	return rc;
}

static int run(const char *ckpt, const char *ids_file, const char *out)
{
	ckpt_reader *r = NULL;
	train_config tc = { 0 };
	llama_model *m = NULL;
	mem_tracker mem = { .device = "cpu" };
	titan_u32s ids = { 0 };
	st_writer *w = NULL;
	char where[PATH_MAX + 32];
	const json_t *cfg;
	int rc;

	if ((rc = read_ids(ids_file, &ids)) || (rc = ckpt_reader_open(&r, ckpt)))
		goto out;
	snprintf(where, sizeof where, "%s/manifest.json", ckpt_reader_dir(r));
	cfg = json_object_get(json_object_get(ckpt_reader_manifest(r), "extra"), "config");
	if (!json_is_object(cfg)) {
		rc = titan_err(TITAN_EFORMAT, "'%s': $.extra.config: no model config", where);
		goto out;
	}
	if ((rc = config_from_json(&tc, cfg, where)) ||
	    (rc = llama_new(&m, &tc.model, &kernels_cpu, &mem)) ||
	    (rc = load_model(r, &tc, m)) ||
	    (rc = llama_plan(m, 1, (int)ids.n, LLAMA_AC_NONE, 0)) ||
	    (rc = llama_forward(m, ids.v, NULL, NULL, 0, NULL)))
		goto out;
	int64_t shape[2] = { (int64_t)ids.n, tc.model.vocab_size };
	if ((rc = st_writer_new(&w)) ||
	    (rc = st_writer_add(w, "logits", ST_F32, 2, shape, llama_logits(m))) ||
	    (rc = st_writer_write(w, out)))
		goto out;
out:
	st_writer_free(w);
	llama_free(m);
	config_free(&tc);
	if (r)
		ckpt_reader_close(r);
	u32s_free(&ids);
	return rc;
}

int main(int argc, char **argv)
{
	int rc;

	if (argc != 4) {
		fprintf(stderr, "usage: ckpt_logits CKPT IDS_FILE OUT.safetensors\n");
		return 2;
	}
	if ((rc = run(argv[1], argv[2], argv[3]))) {
		fprintf(stderr, "ckpt_logits: %s\n", titan_errmsg());
		return 1;
	}
	return 0;
}
