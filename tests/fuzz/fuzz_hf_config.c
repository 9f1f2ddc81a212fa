/* fuzz_hf_config.c - libFuzzer target: arbitrary bytes as config.json of a
 * Hugging Face Llama directory.
 *
 * The directory is made once per process in TMPDIR: config.json is a link
 * to the in-memory input file, and model.safetensors holds a tiny Llama
 * (dim 8, 1 layer, 2 heads, 1 key/value head, intermediate 16, vocab 16;
 * the norms in BF16, the rest F32, lm_head included).  Each input is
 * imported with hf_import into a fresh output directory, removed
 * afterwards.  The import must succeed or fail with a message, never crash;
 * a checkpoint it writes must open and verify.
 *
 * The first byte picks a mode: odd, the rest is taken as it is; even, when
 * the rest parses as a JSON object, "model_type" is set to "llama" and each
 * key that shapes the model and is missing gets the tiny model's value, so
 * that mutated configs get past those checks to the ones behind them. */
#include "core/base.h"
#include "ckpt/ckpt.h"
#include "ckpt/hf.h"
#include "ckpt/safetensors.h"
#include "core/file.h"

#include "memfile.h"
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct tiny_tensor {
	const char *name;
	int64_t rows, cols;          /* cols 0: a vector of rows */
} tiny[] = {
	{ "model.embed_tokens.weight", 16, 8 },
	{ "model.layers.0.self_attn.q_proj.weight", 8, 8 },
	{ "model.layers.0.self_attn.k_proj.weight", 4, 8 },
	{ "model.layers.0.self_attn.v_proj.weight", 4, 8 },
	{ "model.layers.0.self_attn.o_proj.weight", 8, 8 },
	{ "model.layers.0.mlp.gate_proj.weight", 16, 8 },
	{ "model.layers.0.mlp.up_proj.weight", 16, 8 },
	{ "model.layers.0.mlp.down_proj.weight", 8, 16 },
	{ "model.layers.0.input_layernorm.weight", 8, 0 },
	{ "model.layers.0.post_attention_layernorm.weight", 8, 0 },
	{ "model.norm.weight", 8, 0 },
	{ "lm_head.weight", 16, 8 },
};

/* The keys that shape the model, with the tiny model's values. */
static const struct tiny_key {
	const char *key;
	int value;
} tiny_keys[] = {
	{ "hidden_size", 8 },
	{ "intermediate_size", 16 },
	{ "num_hidden_layers", 1 },
	{ "num_attention_heads", 2 },
	{ "num_key_value_heads", 1 },
	{ "vocab_size", 16 },
	{ "max_position_embeddings", 64 },
};

static char dir[256], out[300];

static void remove_dir(void)
{
	file_remove_tree(dir);
}

static void write_model(void)
{
	static float f32[ARRAY_SIZE(tiny)][16 * 8];
	static uint16_t bf16[ARRAY_SIZE(tiny)][8];
	char *path = file_path_join(dir, "model.safetensors");
	st_writer *w;

	if (!path || st_writer_new(&w))
		abort();
	for (size_t i = 0; i < ARRAY_SIZE(tiny); i++) {
		const struct tiny_tensor *t = &tiny[i];
		int64_t shape[2] = { t->rows, t->cols };
		int rc;
		if (t->cols) {
			for (int64_t k = 0; k < t->rows * t->cols; k++)
				f32[i][k] = (float)((int)(i * 31 + (size_t)k * 7) % 17 - 8) / 16;
			rc = st_writer_add(w, t->name, ST_F32, 2, shape, f32[i]);
		} else {
			for (int64_t k = 0; k < t->rows; k++)
				bf16[i][k] = 0x3f80;    /* 1.0 */
			rc = st_writer_add(w, t->name, ST_BF16, 1, shape, bf16[i]);
		}
		if (rc)
			abort();
	}
	if (st_writer_meta(w, "format", "pt") || st_writer_write(w, path)) {
		fprintf(stderr, "fuzz_hf_config: %s\n", titan_errmsg());
		abort();
	}
	st_writer_free(w);
	free(path);
}

/* The Hugging Face directory, made on the first call and removed at exit. */
static void make_dir(void)
{
	const char *tmp = getenv("TMPDIR");
	char *cfg;

	if (dir[0])
		return;
	snprintf(dir, sizeof dir, "%s/fuzz_hf_config.%ld", tmp && *tmp ? tmp : "/tmp",
		 (long)getpid());
	snprintf(out, sizeof out, "%s/out", dir);
	if (file_remove_tree(dir) || mkdir(dir, 0777) < 0)
		abort();
	write_model();
	if (!(cfg = file_path_join(dir, "config.json")) ||
	    symlink(fuzz_memfile("", 0), cfg) < 0)
		abort();
	free(cfg);
	atexit(remove_dir);
}

static void repair(uint8_t **p, size_t *size)
{
	json_t *c = json_loadb((const char *)*p, *size, 0, NULL);
	char *text;

	if (!json_is_object(c) || json_object_set_new(c, "model_type", json_string("llama"))) {
		json_decref(c);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(tiny_keys); i++)
		if (!json_object_get(c, tiny_keys[i].key) &&
		    json_object_set_new(c, tiny_keys[i].key, json_integer(tiny_keys[i].value)))
			abort();
	text = json_dumps(c, JSON_COMPACT);
	json_decref(c);
	if (!text)
		abort();
	free(*p);
	*p = (uint8_t *)text;
	*size = strlen(text);
}

/* What an import wrote opens as a checkpoint and verifies. */
static void check_output(void)
{
	ckpt_reader *r;

	if (ckpt_reader_open(&r, out) || ckpt_reader_verify(r, NULL, NULL)) {
		fprintf(stderr, "fuzz_hf_config: imported checkpoint: %s\n", titan_errmsg());
		abort();
	}
	ckpt_reader_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool fix;
	uint8_t *copy;

	make_dir();
	if (!(copy = fuzz_take(data, &size, &fix)))
		return 0;
	if (fix)
		repair(&copy, &size);
	fuzz_memfile(copy, size);
	free(copy);

	if (hf_import(dir, out, NULL)) {
		if (!*titan_errmsg())
			abort();
	} else {
		check_output();
	}
	if (file_remove_tree(out))
		abort();
	return 0;
}
