/* test_train.c - byte-level BPE training: merges, limits, specials, errors,
 * determinism across thread counts, and that the result loads and
 * round-trips. */
#include "core/base.h"

#include <jansson.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/pool.h"
#include "data/ingest.h"
#include "tok/pretok.h"
#include "tok/tok.h"
#include "tok/train.h"


/* Counts chosen so every merge is forced: hug 10, pug 5, pun 12, bun 4,
 * hugs 5 give (u g) 20, (u n) 16, (h ug) 15, (p un) 12, then a tie at 5
 * between (hug s) and (p ug) that the left token's bytes break ("hug" <
 * "p"), and (b un) 4. */
static const char *const words[][2] = {
	{ "hug", "10" }, { "pug", "5" }, { "pun", "12" }, { "bun", "4" }, { "hugs", "5" },
};
static const char *const expect_merges[][2] = {
	{ "u", "g" }, { "u", "n" }, { "h", "ug" }, { "p", "un" },
	{ "hug", "s" }, { "p", "ug" }, { "b", "un" },
};

static void path_in(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", check_scratch, name);
}

static int write_text(const char *name, const void *p, size_t n)
{
	char path[512];
	path_in(path, sizeof path, name);
	return atomic_write_file(path, p, n);
}

/* The hug/pug corpus, one word a line, interleaved. */
static void hug_text(titan_bytes *out)
{
	int left[ARRAY_SIZE(words)];
	bool more = true;

	for (size_t i = 0; i < ARRAY_SIZE(words); i++)
		left[i] = atoi(words[i][1]);
	while (more) {
		more = false;
		for (size_t i = 0; i < ARRAY_SIZE(words); i++) {
			if (!left[i])
				continue;
			left[i]--;
			more = true;
			bytes_append(out, words[i][0], strlen(words[i][0]));
			bytes_append(out, "\n", 1);
		}
	}
}

/* Train on the named check_scratch files (or absolute paths) into out. */
static int train(const char *const *inputs, size_t n, const tok_train_opts *o,
		 const char *out)
{
	char paths[4][512], outp[512];
	const char *in[4];
	ingest_opts io = { .format = INGEST_TEXT };
	ingest *ing;
	int rc;

	for (size_t i = 0; i < n; i++) {
		if (inputs[i][0] == '/')
			snprintf(paths[i], sizeof paths[i], "%s", inputs[i]);
		else
			path_in(paths[i], sizeof paths[i], inputs[i]);
		in[i] = paths[i];
	}
	path_in(outp, sizeof outp, out);
	if ((rc = ingest_open(&ing, in, n, &io)))
		return rc;
	rc = tok_train(o, ing, outp);
	ingest_close(ing);
	return rc;
}

static json_t *load_json(const char *name)
{
	char path[512];
	json_error_t e;
	path_in(path, sizeof path, name);
	return json_load_file(path, 0, &e);
}

static const char *merge_str(json_t *merges, size_t i, size_t side)
{
	return json_string_value(json_array_get(json_array_get(merges, i), side));
}

static long long vocab_id(json_t *root, const char *s)
{
	json_t *v = json_object_get(json_object_get(json_object_get(root, "model"), "vocab"), s);
	return v ? json_integer_value(v) : -1;
}

static void test_first_merges(void)
{
	titan_bytes text = { 0 };
	const char *specials[] = { "<|endoftext|>", "<|pad|>" };
	const char *in[] = { "hug.txt" };
	tok_train_opts o = { .vocab_size = 300, .pattern = "gpt2",
			     .specials = specials, .nspecials = 2 };

	hug_text(&text);
	REQUIRE(write_text("hug.txt", text.v, text.n) == 0, "%s", titan_errmsg());
	bytes_free(&text);
	REQUIRE(train(in, 1, &o, "hug.json") == 0, "%s", titan_errmsg());

	json_t *root = load_json("hug.json");
	REQUIRE(root, "output is not JSON");
	json_t *model = json_object_get(root, "model");
	json_t *merges = json_object_get(model, "merges");
	CHECK(json_array_size(merges) == ARRAY_SIZE(expect_merges), "%zu merges",
	      json_array_size(merges));
	for (size_t i = 0; i < ARRAY_SIZE(expect_merges) && i < json_array_size(merges); i++) {
		const char *l = merge_str(merges, i, 0), *r = merge_str(merges, i, 1);
		CHECK(l && r && !strcmp(l, expect_merges[i][0]) && !strcmp(r, expect_merges[i][1]),
		      "merge %zu is (%s %s), want (%s %s)", i, l ? l : "?", r ? r : "?",
		      expect_merges[i][0], expect_merges[i][1]);
	}
	CHECK(vocab_id(root, "ug") == 256 && vocab_id(root, "bun") == 262,
	      "ug %lld bun %lld", vocab_id(root, "ug"), vocab_id(root, "bun"));
	CHECK(vocab_id(root, "a") == 'a' && vocab_id(root, "\xc4\xa0") == ' ' &&
	      vocab_id(root, "\xc4\x80") == 0 && vocab_id(root, "\xc3\xbf") == 255,
	      "byte tokens: a %lld space %lld NUL %lld 0xff %lld", vocab_id(root, "a"),
	      vocab_id(root, "\xc4\xa0"), vocab_id(root, "\xc4\x80"),
	      vocab_id(root, "\xc3\xbf"));

	/* Specials: the ids after the merges, in added_tokens and model.vocab. */
	CHECK(vocab_id(root, "<|endoftext|>") == 263 && vocab_id(root, "<|pad|>") == 264,
	      "specials at %lld, %lld", vocab_id(root, "<|endoftext|>"),
	      vocab_id(root, "<|pad|>"));
	json_t *added = json_object_get(root, "added_tokens");
	CHECK(json_array_size(added) == 2, "%zu added tokens", json_array_size(added));
	json_t *a0 = json_array_get(added, 0);
	CHECK(json_integer_value(json_object_get(a0, "id")) == 263 &&
	      json_is_true(json_object_get(a0, "special")) &&
	      !strcmp(json_string_value(json_object_get(a0, "content")), "<|endoftext|>"),
	      "added_tokens[0] is not <|endoftext|> at 263");
	CHECK(json_object_size(json_object_get(model, "vocab")) == 265, "vocab of %zu",
	      json_object_size(json_object_get(model, "vocab")));
	json_t *split = json_array_get(json_object_get(json_object_get(root, "pre_tokenizer"),
						       "pretokenizers"), 0);
	CHECK(!strcmp(json_string_value(json_object_get(split, "behavior")), "Isolated"),
	      "pre_tokenizer is not an isolated split");
	json_decref(root);
}

static void test_min_frequency_and_size(void)
{
	const char *in[] = { "hug.txt" };
	tok_train_opts o = { .vocab_size = 300, .pattern = "gpt2", .min_frequency = 13 };

	REQUIRE(train(in, 1, &o, "minf.json") == 0, "%s", titan_errmsg());
	json_t *root = load_json("minf.json");
	REQUIRE(root, "output is not JSON");
	json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
	CHECK(json_array_size(merges) == 3, "min_frequency 13: %zu merges, want 3 (next is 12)",
	      json_array_size(merges));
	json_decref(root);

	o.min_frequency = 5;
	REQUIRE(train(in, 1, &o, "minf.json") == 0, "%s", titan_errmsg());
	root = load_json("minf.json");
	merges = json_object_get(json_object_get(root, "model"), "merges");
	CHECK(json_array_size(merges) == 6, "min_frequency 5: %zu merges, want 6",
	      json_array_size(merges));
	json_decref(root);

	/* The vocabulary size bounds the merges too, specials included. */
	const char *specials[] = { "<s>" };
	tok_train_opts s = { .vocab_size = 256 + 4 + 1, .pattern = "gpt2",
			     .specials = specials, .nspecials = 1 };
	REQUIRE(train(in, 1, &s, "size.json") == 0, "%s", titan_errmsg());
	root = load_json("size.json");
	merges = json_object_get(json_object_get(root, "model"), "merges");
	CHECK(json_array_size(merges) == 4, "vocab 261 with a special: %zu merges, want 4",
	      json_array_size(merges));
	CHECK(vocab_id(root, "<s>") == 260, "special at %lld", vocab_id(root, "<s>"));
	json_decref(root);
}

/* The split pattern is written as given: a name becomes its regex, a regex
 * stays as it is. */
static void test_pattern_and_special_clash(void)
{
	const char *in[] = { "hug.txt" };
	const char *regex = "[a-z]+|[^a-z]+";
	tok_train_opts o = { .vocab_size = 300, .pattern = regex };

	REQUIRE(train(in, 1, &o, "rx.json") == 0, "%s", titan_errmsg());
	json_t *root = load_json("rx.json");
	REQUIRE(root, "output is not JSON");
	json_t *split = json_array_get(json_object_get(json_object_get(root, "pre_tokenizer"),
						       "pretokenizers"), 0);
	const char *got = json_string_value(json_object_get(json_object_get(split, "pattern"),
							    "Regex"));
	CHECK(got && !strcmp(got, regex), "Regex is '%s'", got ? got : "?");
	CHECK(json_array_size(json_object_get(json_object_get(root, "model"), "merges")) ==
	      ARRAY_SIZE(expect_merges), "the regex gave other merges");
	json_decref(root);

	o.pattern = NULL;
	REQUIRE(train(in, 1, &o, "rx.json") == 0, "%s", titan_errmsg());
	root = load_json("rx.json");
	split = json_array_get(json_object_get(json_object_get(root, "pre_tokenizer"),
					       "pretokenizers"), 0);
	got = json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex"));
	CHECK(got && !strcmp(got, pretok_named_pattern("llama3")), "default Regex is '%s'",
	      got ? got : "?");
	json_decref(root);

	/* A special spelled like a token the text would learn keeps its
	 * spelling: the pair that would make "ug" is never merged. */
	const char *specials[] = { "ug" };
	tok_train_opts c = { .vocab_size = 300, .pattern = "gpt2", .specials = specials,
			     .nspecials = 1 };
	REQUIRE(train(in, 1, &c, "clash.json") == 0, "%s", titan_errmsg());
	root = load_json("clash.json");
	REQUIRE(root, "output is not JSON");
	json_t *model = json_object_get(root, "model");
	json_t *merges = json_object_get(model, "merges");
	size_t nmerges = json_array_size(merges);
	CHECK(vocab_id(root, "ug") == (long long)(256 + nmerges), "'ug' is %lld with %zu merges",
	      vocab_id(root, "ug"), nmerges);
	CHECK(json_object_size(json_object_get(model, "vocab")) == 256 + nmerges + 1,
	      "vocab of %zu", json_object_size(json_object_get(model, "vocab")));
	for (size_t i = 0; i < nmerges; i++)
		CHECK(strcmp(merge_str(merges, i, 0), "u") || strcmp(merge_str(merges, i, 1), "g"),
		      "merge %zu makes the special's spelling", i);
	json_decref(root);
}

static void test_errors(void)
{
	const char *in[] = { "hug.txt" };
	const char *specials[] = { "<a>", "<b>" };
	tok_train_opts o = { .vocab_size = 257, .specials = specials, .nspecials = 2 };
	int rc = train(in, 1, &o, "err.json");

	CHECK(rc == TITAN_EUSAGE && strstr(titan_errmsg(), "vocab size 257 is too small"),
	      "rc %d: %s", rc, titan_errmsg());

	const char *empty_special[] = { "<a>", "" };
	o.vocab_size = 1000;
	o.specials = empty_special;
	rc = train(in, 1, &o, "err.json");
	CHECK(rc == TITAN_EUSAGE && strstr(titan_errmsg(), "empty"), "rc %d: %s", rc,
	      titan_errmsg());

	const char *byte_special[] = { "a" };
	o.specials = byte_special;
	o.nspecials = 1;
	rc = train(in, 1, &o, "err.json");
	CHECK(rc == TITAN_EUSAGE, "a special that is a byte token: rc %d: %s", rc,
	      titan_errmsg());

	REQUIRE(write_text("empty.txt", "", 0) == 0, "%s", titan_errmsg());
	const char *none[] = { "empty.txt" };
	tok_train_opts e = { .vocab_size = 1000 };
	rc = train(none, 1, &e, "err.json");
	CHECK(rc == TITAN_EFORMAT && !strcmp(titan_errmsg(), "no text to train on"),
	      "rc %d: %s", rc, titan_errmsg());

	char path[512];
	path_in(path, sizeof path, "err.json");
	CHECK(access(path, F_OK) != 0, "a failed training left '%s'", path);
}

/* decode(encode(x)) == x through tok_load, and the hug words are one token. */
static void test_roundtrip(void)
{
	char path[512];
	titan_tok *t = NULL;
	tok_encoder *e = NULL;
	titan_u32s ids = { 0 };
	titan_bytes text = { 0 }, back = { 0 };

	path_in(path, sizeof path, "hug.json");
	REQUIRE(tok_load(&t, path, NULL) == 0, "%s", titan_errmsg());
	CHECK(tok_vocab_size(t) == 265, "vocab size %u", tok_vocab_size(t));
	REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());

	hug_text(&text);
	CHECK(tok_encode(e, text.v, text.n, &ids) == 0, "%s", titan_errmsg());
	CHECK(tok_decode(t, ids.v, ids.n, &back) == 0, "%s", titan_errmsg());
	CHECK(back.n == text.n && !memcmp(back.v, text.v, text.n), "training text changed");

	ids.n = 0;
	CHECK(tok_encode(e, (const uint8_t *)"hugs pun", 8, &ids) == 0, "%s", titan_errmsg());
	CHECK(ids.n == 3 && ids.v[0] == 260 && ids.v[1] == ' ' && ids.v[2] == 259,
	      "'hugs pun' -> %zu ids", ids.n);

	uint8_t rnd[4096];
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	for (size_t i = 0; i < sizeof rnd; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		rnd[i] = (uint8_t)x;
	}
	ids.n = back.n = 0;
	CHECK(tok_encode(e, rnd, sizeof rnd, &ids) == 0, "%s", titan_errmsg());
	CHECK(tok_decode(t, ids.v, ids.n, &back) == 0, "%s", titan_errmsg());
	CHECK(back.n == sizeof rnd && !memcmp(back.v, rnd, sizeof rnd), "random bytes changed");

	u32s_free(&ids);
	bytes_free(&text);
	bytes_free(&back);
	tok_encoder_free(e);
	tok_free(t);
}

static int read_file(const char *name, titan_bytes *out)
{
	char path[512];
	path_in(path, sizeof path, name);
	return file_read_all(path, out);
}

/* Same bytes out with 1 and 2 threads; then the result round-trips the
 * training text. */
static void test_determinism(void)
{
	const char *dir = check_data_dir();
	char corpus[512];
	titan_pool *p1 = NULL, *p2 = NULL;
	titan_bytes a = { 0 }, b = { 0 };

	if (!dir)
		SKIP("TITAN_DATA is not set");
	snprintf(corpus, sizeof corpus, "%s/corpus/tinyshakespeare.txt", dir);
	if (access(corpus, R_OK))
		SKIP("'corpus/tinyshakespeare.txt' is missing under TITAN_DATA");
	const char *in[] = { corpus };
	const char *specials[] = { "<|begin_of_text|>", "<|end_of_text|>" };
	tok_train_opts o = { .vocab_size = 2000, .pattern = "llama3",
			     .specials = specials, .nspecials = 2 };

	REQUIRE(pool_new(&p1, 1) == 0 && pool_new(&p2, 2) == 0, "%s", titan_errmsg());
	o.pool = p1;
	CHECK(train(in, 1, &o, "t1.json") == 0, "%s", titan_errmsg());
	o.pool = p2;
	CHECK(train(in, 1, &o, "t2.json") == 0, "%s", titan_errmsg());
	pool_free(p1);
	pool_free(p2);
	REQUIRE(read_file("t1.json", &a) == 0 && read_file("t2.json", &b) == 0, "%s",
		titan_errmsg());
	CHECK(a.n == b.n && !memcmp(a.v, b.v, a.n), "1 and 2 threads differ (%zu, %zu bytes)",
	      a.n, b.n);
	bytes_free(&a);
	bytes_free(&b);

	json_t *root = load_json("t1.json");
	REQUIRE(root, "output is not JSON");
	json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
	CHECK(json_object_size(vocab) == 2000, "vocab of %zu, want 2000", json_object_size(vocab));
	CHECK(vocab_id(root, "<|end_of_text|>") == 1999, "<|end_of_text|> at %lld",
	      vocab_id(root, "<|end_of_text|>"));
	json_decref(root);

	titan_tok *t = NULL;
	tok_encoder *e = NULL;
	titan_u32s ids = { 0 };
	titan_bytes text = { 0 }, back = { 0 };
	char path[512];
	path_in(path, sizeof path, "t1.json");
	REQUIRE(tok_load(&t, path, NULL) == 0, "%s", titan_errmsg());
	REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
	CHECK(file_read_all(corpus, &text) == 0, "%s", titan_errmsg());
	CHECK(tok_encode(e, text.v, text.n, &ids) == 0, "%s", titan_errmsg());
	CHECK(tok_decode(t, ids.v, ids.n, &back) == 0, "%s", titan_errmsg());
	CHECK(back.n == text.n && !memcmp(back.v, text.v, text.n), "corpus changed");
	CHECK(ids.n < text.n / 3, "%zu ids for %zu bytes", ids.n, text.n);
	u32s_free(&ids);
	bytes_free(&text);
	bytes_free(&back);
	tok_encoder_free(e);
	tok_free(t);
}

int main(void)
{
	if (check_scratch_open("test_train"))
		return 1;
	RUN(test_first_merges);
	RUN(test_min_frequency_and_size);
	RUN(test_pattern_and_special_clash);
	RUN(test_errors);
	RUN(test_roundtrip);
	RUN(test_determinism);
	check_rmtree(check_scratch);
	return check_done();
}
