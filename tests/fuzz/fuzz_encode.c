/* fuzz_encode.c - libFuzzer target: encode and decode arbitrary bytes.
 *
 * A small byte-level tokenizer is built in memory: all 256 bytes, merges
 * that chain and overlap ("a a", "aa a", "aa aa", "a b", "ab ab", ...) so
 * ranks tie and long pieces go through the heap, and added tokens (one
 * matched on raw text, one on normalized text, with a tab in it).  With TITAN_DATA set,
 * gpt2, llama3 (cl100k's pattern) and o200k_base are loaded too.  For each input: encode must succeed,
 * decode(encode(x)) == x, and the two halves of the input cut where
 * a long document may be cut (tok_next_cut) must encode to the ids of
 * the whole. */
#include "core/base.h"
#include "core/file.h"
#include "tok/tok_internal.h"

/* GPT-2's byte-level character for byte b, as a JSON \u escape. */
static void bl_escape(uint8_t b, char out[8])
{
	uint32_t cp;
	if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae)
		cp = b;
	else if (b <= 0x20)
		cp = 0x100 + b;
	else if (b >= 0x7f && b <= 0xa0)
		cp = 0x121 + (b - 0x7f);
	else
		cp = 0x143;
	snprintf(out, 8, "\\u%04x", cp);
}

static titan_tok *build_small(void)
{
	static const char *const merged[][2] = {
		{ "a", "a" }, { "aa", "a" }, { "aa", "aa" }, { "a", "b" }, { "b", "a" },
		{ "ab", "ab" }, { "aaaa", "aaaa" }, { "\\u0120", "a" }, { "\\u0120a", "b" },
		{ "b", "b" }, { "bb", "bb" }, { "ab", "a" },
	};
	static const char head[] =
		"{\"added_tokens\":[{\"id\":300,\"content\":\"<|x|>\",\"special\":true,"
		"\"normalized\":false},{\"id\":301,\"content\":\"ab\\tab\",\"normalized\":true}],"
		"\"normalizer\":null,"
		"\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},"
		"\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{";
	titan_bytes j = {0};
	char esc[8], line[256];
	int rc = bytes_append(&j, head, strlen(head));
	for (int b = 0; b < 256 && !rc; b++) {
		bl_escape((uint8_t)b, esc);
		snprintf(line, sizeof line, "%s\"%s\":%d", b ? "," : "", esc, b);
		rc = bytes_append(&j, line, strlen(line));
	}
	for (size_t i = 0; i < ARRAY_SIZE(merged) && !rc; i++) {
		snprintf(line, sizeof line, ",\"%s%s\":%zu", merged[i][0], merged[i][1], 256 + i);
		rc = bytes_append(&j, line, strlen(line));
	}
	if (!rc)
		rc = bytes_append(&j, "},\"merges\":[", 12);
	for (size_t i = 0; i < ARRAY_SIZE(merged) && !rc; i++) {
		snprintf(line, sizeof line, "%s[\"%s\",\"%s\"]", i ? "," : "", merged[i][0],
			 merged[i][1]);
		rc = bytes_append(&j, line, strlen(line));
	}
	if (!rc)
		rc = bytes_append(&j, "]}}", 3);
	titan_tok *t = NULL;
	if (!rc && tok_load_json_buf(&t, "small.json", j.v, j.n)) {
		fprintf(stderr, "fuzz_encode: %s\n", titan_errmsg());
		abort();
	}
	bytes_free(&j);
	return t;
}

struct fuzz_state {
	titan_tok *tok[4];
	tok_encoder *enc[4];
	int n;
};

static struct fuzz_state *state;

static void setup(void)
{
	state = calloc(1, sizeof *state);
	if (!state)
		abort();
	state->tok[state->n++] = build_small();
	const char *d = getenv("TITAN_DATA");
	static const char *const rel[] = { "tokenizers/gpt2/tokenizer.json",
					   "tokenizers/llama3/tokenizer.json",
					   "tokenizers/o200k_base/tokenizer.json" };
	for (size_t i = 0; d && i < ARRAY_SIZE(rel); i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", d, rel[i]);
		if (!tok_load(&state->tok[state->n], path, NULL))
			state->n++;
	}
	for (int i = 0; i < state->n; i++)
		if (tok_encoder_new(&state->enc[i], state->tok[i]))
			abort();
}

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_encode: %s (%s)\n", what, titan_errmsg());
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!state)
		setup();
	for (int k = 0; k < state->n; k++) {
		const titan_tok *t = state->tok[k];
		tok_encoder *e = state->enc[k];
		titan_u32s ids = {0}, par = {0};
		titan_bytes dec = {0};
		if (tok_encode(e, data, size, &ids))
			fail("encode");
		if (tok_decode(t, ids.v, ids.n, &dec))
			fail("decode");
		if (dec.n != size || (size && memcmp(dec.v, data, size)))
			fail("decode(encode(x)) != x");
		size_t cut = tok_next_cut(t, data, size, size / 3);
		if (cut < size) {
			if (tok_encode(e, data, cut, &par) ||
			    tok_encode(e, data + cut, size - cut, &par))
				fail("encode halves");
			if (par.n != ids.n || memcmp(par.v, ids.v, ids.n * 4))
				fail("halves and whole encode differently");
		}
		u32s_free(&ids);
		u32s_free(&par);
		bytes_free(&dec);
	}
	return 0;
}
