/* fuzz_tokjson.c - libFuzzer target: the tokenizer.json loader.
 *
 * Any input must load or fail with a message, never crash or leak.  When it
 * loads, encoding the input itself must succeed, and decoding must give the
 * text back whenever every byte of it has a token (a byte without one is
 * dropped, as Hugging Face does) and no added token strips whitespace. */
#include "core/base.h"
#include "tok/tok_internal.h"

static void check_roundtrip(const titan_tok *t, const uint8_t *data, size_t size)
{
	tok_encoder *e;
	if (tok_encoder_new(&e, t))
		return;
	titan_u32s ids = {0};
	titan_bytes dec = {0};
	size_t n = TITAN_MIN(size, (size_t)4096);
	int rc = tok_encode(e, data, n, &ids);
	if (rc && rc != TITAN_ENOMEM && rc != TITAN_EFORMAT) {
		fprintf(stderr, "fuzz_tokjson: encode: %s\n", titan_errmsg());
		abort();
	}
	bool every_byte = true;
	for (size_t i = 0; i < t->nadded; i++)
		every_byte &= !t->added[i].lstrip && !t->added[i].rstrip;
	for (size_t i = 0; i < n; i++)
		every_byte &= tok_token_id(t, data + i, 1) >= 0;
	if (!rc && tok_decode(t, ids.v, ids.n, &dec)) {
		fprintf(stderr, "fuzz_tokjson: decode: %s\n", titan_errmsg());
		abort();
	}
	if (!rc && every_byte && (dec.n != n || (n && memcmp(dec.v, data, n)))) {
		fprintf(stderr, "fuzz_tokjson: decode(encode(x)) != x\n");
		abort();
	}
	u32s_free(&ids);
	bytes_free(&dec);
	tok_encoder_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	titan_tok *t;
	if (tok_load_json_buf(&t, "fuzz.json", data, size)) {
		if (!*titan_errmsg())
			abort();        /* a failure must say why */
		return 0;
	}
	check_roundtrip(t, data, size);
	tok_free(t);
	return 0;
}
