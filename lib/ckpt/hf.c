/* hf.c - what export and import to Hugging Face's Llama layout share
 * (hf.h): the name mapping, the rotary permutation and the output directory
 * rules.  hf_export.c writes a Hugging Face directory, hf_import.c reads
 * one. */
#include "core/base.h"
#include "ckpt/hf.h"
#include "core/file.h"

#include <sys/stat.h>

#include "ckpt/hf_priv.h"

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

int hf_rotary_heads(const llama_config *c, const char *titan)
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

bool hf_path_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

char *hf_path_suffix(const char *base, const char *suffix)
{
	size_t n = strlen(base) + strlen(suffix) + 1;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s%s", base, suffix);
	return p;
}

int hf_check_outdir(const char *outdir, bool force)
{
	if (!*outdir)
		return titan_err(TITAN_EUSAGE, "empty output directory name");
	return file_check_new(outdir, force);
}

char *hf_strip_slashes(const char *path)
{
	size_t n = strlen(path);

	while (n > 1 && path[n - 1] == '/')
		n--;
	return strndup(path, n);
}
