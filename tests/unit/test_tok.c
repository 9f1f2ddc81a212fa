/* test_tok.c - the BPE engine and the tokenizer loaders against Hugging Face
 * tokenizers / tiktoken reference ids (tokvectors/), plus round trips,
 * parallel encoding, malformed inputs and long pieces. */
#include "core/base.h"

#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "core/file.h"
#include "tok/tok.h"
#include "check.h"

static const char *const names[] = { "gpt2", "llama3", "cl100k_base", "o200k_base" };
static const char *const rankfiles[] = {
	"gpt2/r50k_base.tiktoken", "llama3/tokenizer.model",
	"cl100k_base/cl100k_base.tiktoken", "o200k_base/o200k_base.tiktoken",
};

/* Pieces of small tokenizer.json texts, with ' standing for ". */
#define BL "'pre_tokenizer':{'type':'ByteLevel','add_prefix_space':false},"
#define HEAD "{'normalizer':null," BL "'decoder':{'type':'ByteLevel'},"
#define MODEL "'model':{'type':'BPE','vocab':{'a':0,'b':1,'ab':2,'Ġ':3},"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static bool data_path(char *buf, size_t n, const char *rel)
{
	const char *d = check_data_dir();
	if (!d)
		return false;
	snprintf(buf, n, "%s/%s", d, rel);
	return access(buf, R_OK) == 0;
}

/* memcmp that accepts empty (possibly NULL) buffers. */
static bool same(const void *a, size_t an, const void *b, size_t bn)
{
	return an == bn && (!an || !memcmp(a, b, an));
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Every line of tokvectors/NAME.tricky.jsonl encodes to its ids and back. */
static int check_vectors(const titan_tok *t, const char *name, const char *how)
{
	char path[4096], rel[256];
	snprintf(rel, sizeof rel, "tokvectors/%s.tricky.jsonl", name);
	if (!data_path(path, sizeof path, rel))
		return -1;
	titan_bytes text = {0}, dec = {0};
	titan_u32s ids = {0};
	tok_encoder *e;
	int bad = 0, lines = 0;
	CHECK(file_read_all(path, &text) == 0, "%s", titan_errmsg());
	CHECK(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
	char *s = (char *)text.v, *end = s + text.n;
	while (s < end) {
		char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t len = nl ? (size_t)(nl - s) : (size_t)(end - s);
		json_error_t jerr;
		json_t *j = json_loadb(s, len, JSON_ALLOW_NUL, &jerr);
		s += len + 1;
		if (!j)
			continue;
		lines++;
		json_t *jt = json_object_get(j, "text"), *ji = json_object_get(j, "ids");
		const uint8_t *txt = (const uint8_t *)json_string_value(jt);
		size_t tn = json_string_length(jt);
		ids.n = 0;
		dec.n = 0;
		int rc = tok_encode(e, txt, tn, &ids);
		bool eq = !rc && ids.n == json_array_size(ji);
		for (size_t i = 0; eq && i < ids.n; i++)
			eq = ids.v[i] == (uint32_t)json_integer_value(json_array_get(ji, i));
		if (!eq && bad++ < 3) {
			printf("# %s (%s) line %d: ids differ (%zu vs %zu)\n", name, how, lines,
			       ids.n, json_array_size(ji));
			for (size_t i = 0; i < ids.n && i < 40; i++)
				printf("#   %zu: got %u want %lld\n", i, ids.v[i],
				       (long long)json_integer_value(json_array_get(ji, i)));
		}
		rc = tok_decode(t, ids.v, ids.n, &dec);
		if (rc || !same(dec.v, dec.n, txt, tn)) {
			if (bad++ < 3)
				printf("# %s (%s) line %d: decode differs\n", name, how, lines);
		}
		json_decref(j);
	}
	CHECK(bad == 0, "%s (%s): %d mismatches over %d lines", name, how, bad, lines);
	CHECK(lines == 104, "%s: %d lines", name, lines);
	tok_encoder_free(e);
	bytes_free(&text);
	bytes_free(&dec);
	u32s_free(&ids);
	return 0;
}

static void test_vectors_json(void)
{
	char path[4096], rel[256];
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", names[i]);
		if (!data_path(path, sizeof path, rel))
			SKIP("TITAN_DATA unset or %.100s missing", rel);
		titan_tok *t;
		double t0 = now();
		int rc = tok_load(&t, path, NULL);
		REQUIRE(rc == 0, "%s: %s", path, titan_errmsg());
		printf("# %s: tokenizer.json loaded in %.3f s, vocab %u, bos %lld eos %lld\n",
		       names[i], now() - t0, tok_vocab_size(t), (long long)tok_bos(t),
		       (long long)tok_eos(t));
		CHECK(!strcmp(tok_source_format(t), "tokenizer.json"), "%s", tok_source_format(t));
		CHECK(strlen(tok_hash(t)) == 64, "hash '%s'", tok_hash(t));
		check_vectors(t, names[i], "tokenizer.json");
		if (i == 0) {
			CHECK(tok_bos(t) == 50256 && tok_eos(t) == 50256, "gpt2 bos/eos");
			CHECK(!tok_ignore_merges(t), "gpt2 ignore_merges");
		}
		if (i == 1) {
			CHECK(tok_bos(t) == 128000 && tok_eos(t) == 128001, "llama3 bos/eos");
			CHECK(tok_vocab_size(t) == 128256, "llama3 vocab %u", tok_vocab_size(t));
			CHECK(tok_added_count(t) == 256, "llama3 added");
		}
		tok_free(t);
	}
}

static void test_vectors_tiktoken(void)
{
	char path[4096], rel[256];
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(rel, sizeof rel, "tokenizers/%s", rankfiles[i]);
		if (!data_path(path, sizeof path, rel))
			SKIP("TITAN_DATA unset or %.100s missing", rel);
		titan_tok *t;
		double t0 = now();
		int rc = tok_load(&t, path, NULL);
		REQUIRE(rc == 0, "%s: %s", path, titan_errmsg());
		printf("# %s: rank file loaded in %.3f s\n", names[i], now() - t0);
		CHECK(!strcmp(tok_source_format(t), "tiktoken"), "%s", tok_source_format(t));
		check_vectors(t, names[i], "tiktoken");
		if (i == 1)
			CHECK(tok_bos(t) == 128000 && tok_eos(t) == 128001, "llama3 bos/eos");
		tok_free(t);
	}
}

static void test_legacy_merges(void)
{
	char path[4096];
	if (!data_path(path, sizeof path, "tokenizers/gpt2/tokenizer.legacy-merges.json"))
		SKIP("TITAN_DATA unset or gpt2 legacy file missing");
	titan_tok *t, *u;
	REQUIRE(tok_load(&t, path, NULL) == 0, "%s", titan_errmsg());
	check_vectors(t, "gpt2", "legacy merges");
	data_path(path, sizeof path, "tokenizers/gpt2/tokenizer.json");
	REQUIRE(tok_load(&u, path, NULL) == 0, "%s", titan_errmsg());
	CHECK(!strcmp(tok_hash(t), tok_hash(u)), "same tokenizer, two merge spellings: %s vs %s",
	      tok_hash(t), tok_hash(u));
	tok_free(t);
	tok_free(u);
}

/* Pattern and specials given as options rather than files beside. */
static void test_tiktoken_opts(void)
{
	char path[4096];
	if (!data_path(path, sizeof path, "tokenizers/cl100k_base/cl100k_base.tiktoken"))
		SKIP("TITAN_DATA unset or cl100k rank file missing");
	/* A copy without the files beside it. */
	char dir[] = "/tmp/test_tok.XXXXXX", copy[4200];
	REQUIRE(mkdtemp(dir), "mkdtemp");
	snprintf(copy, sizeof copy, "%s/cl100k.tiktoken", dir);
	titan_bytes b = {0};
	REQUIRE(file_read_all(path, &b) == 0, "%s", titan_errmsg());
	REQUIRE(atomic_write_file(copy, b.v, b.n) == 0, "%s", titan_errmsg());
	bytes_free(&b);

	titan_tok *t = NULL;
	int rc = tok_load(&t, copy, NULL);
	CHECK(rc == TITAN_EUSAGE && strstr(titan_errmsg(), "--pattern"), "rc %d: %s", rc,
	      titan_errmsg());
	const char *specials[] = { "<|endoftext|>=100257", "<|fim_prefix|>=100258",
				   "<|fim_middle|>=100259", "<|fim_suffix|>=100260",
				   "<|endofprompt|>=100276" };
	tok_load_opts o = { "cl100k", specials, ARRAY_SIZE(specials) };
	rc = tok_load(&t, copy, &o);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	check_vectors(t, "cl100k_base", "tiktoken + options");
	CHECK(tok_eos(t) == 100257, "eos %lld", (long long)tok_eos(t));
	tok_free(t);
	unlink(copy);
	rmdir(dir);
}

/* Added tokens: leftmost-longest, raw-text tokens (normalized=false) found
 * before the others as Hugging Face does, BOS/EOS from names and from
 * tokenizer_config.json, and loading a directory. */
static void test_added_tokens(void)
{
	char dir[] = "/tmp/test_tok.XXXXXX", file[4200], conf[4200];
	REQUIRE(mkdtemp(dir), "mkdtemp");
	const char *json =
		"{'added_tokens':["
		"{'id':6,'content':'xa','normalized':true,'special':false},"
		"{'id':7,'content':'a>','normalized':false,'special':true},"
		"{'id':8,'content':'<s>','normalized':false,'special':true},"
		"{'id':9,'content':'</s>','normalized':false,'special':true},"
		"{'id':10,'content':'<s>>','normalized':false,'special':false}],"
		"'normalizer':null," BL "'decoder':{'type':'ByteLevel'},"
		"'model':{'type':'BPE','merges':['a b'],"
		"'vocab':{'a':0,'b':1,'>':2,'<':3,'ab':4,'x':5,'/':11,'s':12}}}";
	char *quoted = strdup(json);
	REQUIRE(quoted, "strdup");
	for (char *q = quoted; *q; q++)
		*q = *q == '\'' ? '"' : *q;
	snprintf(file, sizeof file, "%s/tokenizer.json", dir);
	int wrc = atomic_write_file(file, quoted, strlen(quoted));
	free(quoted);
	REQUIRE(wrc == 0, "%s", titan_errmsg());
	titan_tok *t;
	REQUIRE(tok_load(&t, dir, NULL) == 0, "%s", titan_errmsg());
	CHECK(tok_bos(t) == 8 && tok_eos(t) == 9, "bos %lld eos %lld", (long long)tok_bos(t),
	      (long long)tok_eos(t));
	CHECK(tok_vocab_size(t) == 13, "vocab size %u", tok_vocab_size(t));
	CHECK(tok_added_count(t) == 5, "added %zu", tok_added_count(t));
	uint32_t id;
	bool special;
	const char *c = tok_added(t, 0, &id, &special);
	CHECK(c && !strcmp(c, "xa") && id == 6 && !special, "first added token");
	struct {
		const char *text;
		uint32_t ids[8];
		size_t n;
	} cases[] = {
		{ "xa>", { 5, 7 }, 2 },               /* a> (raw) before xa (normalized) */
		{ "xab", { 6, 1 }, 2 },
		{ "ab<s>ab", { 4, 8, 4 }, 3 },
		{ "</s><s>", { 9, 8 }, 2 },
		{ "<</s>", { 3, 9 }, 2 },
		{ "<s>>a", { 10, 0 }, 2 },            /* longest at the leftmost start */
		{ "<s<s>", { 3, 12, 8 }, 3 },
		{ "", { 0 }, 0 },
	};
	tok_encoder *e;
	REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		titan_u32s ids = {0};
		titan_bytes dec = {0};
		const char *text = cases[i].text;
		CHECK(tok_encode(e, (const uint8_t *)text, strlen(text), &ids) == 0, "%s",
		      titan_errmsg());
		CHECK(same(ids.v, ids.n * 4, cases[i].ids, cases[i].n * 4),
		      "'%s': %zu ids, first %u", text, ids.n, ids.n ? ids.v[0] : 0);
		CHECK(tok_decode(t, ids.v, ids.n, &dec) == 0 &&
		      same(dec.v, dec.n, cases[i].text, strlen(cases[i].text)), "'%s': decode",
		      cases[i].text);
		u32s_free(&ids);
		bytes_free(&dec);
	}
	tok_encoder_free(e);
	tok_free(t);

	const char *config = "{\"bos_token\":{\"content\":\"</s>\"},\"eos_token\":\"<s>\"}";
	snprintf(conf, sizeof conf, "%s/tokenizer_config.json", dir);
	REQUIRE(atomic_write_file(conf, config, strlen(config)) == 0, "%s", titan_errmsg());
	REQUIRE(tok_load(&t, dir, NULL) == 0, "%s", titan_errmsg());
	CHECK(tok_bos(t) == 9 && tok_eos(t) == 8, "config: bos %lld eos %lld",
	      (long long)tok_bos(t), (long long)tok_eos(t));
	tok_free(t);
	config = "{\"bos_token\":\"<nope>\"}";
	REQUIRE(atomic_write_file(conf, config, strlen(config)) == 0, "%s", titan_errmsg());
	int rc = tok_load(&t, dir, NULL);
	CHECK(rc == TITAN_EFORMAT && strstr(titan_errmsg(), "$.bos_token") &&
	      strstr(titan_errmsg(), "tokenizer_config.json"), "rc %d: %s", rc, titan_errmsg());
	unlink(conf);
	unlink(file);
	rmdir(dir);
}

/* lstrip/rstrip as Hugging Face applies them, overlaps included: gpt2 plus
 * added tokens; the ids are what tokenizers 0.23 gives for the same file. */
static void test_strip(void)
{
	char path[4096];
	if (!data_path(path, sizeof path, "tokenizers/gpt2/tokenizer.json"))
		SKIP("TITAN_DATA unset or gpt2 tokenizer.json missing");
	json_error_t jerr;
	json_t *j = json_load_file(path, 0, &jerr);
	REQUIRE(j, "%s", jerr.text);
	static const struct {
		const char *content;
		bool lstrip, rstrip, normalized;
	} specs[] = {
		{ "<mask>", true, false, false }, { "<r>", false, true, false },
		{ "<both>", true, true, true }, { "<plain>", false, false, false },
		{ "\xe3\x80\x80", false, false, false },
	};
	json_t *list = json_object_get(j, "added_tokens");
	for (size_t i = 0; i < ARRAY_SIZE(specs); i++)
		json_array_append_new(list, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}",
			"id", (int)(50257 + i), "content", specs[i].content, "lstrip", specs[i].lstrip,
			"rstrip", specs[i].rstrip, "normalized", specs[i].normalized,
			"special", 0, "single_word", 0));
	char dir[] = "/tmp/test_tok.XXXXXX", file[4200];
	REQUIRE(mkdtemp(dir), "mkdtemp");
	snprintf(file, sizeof file, "%s/strip.json", dir);
	REQUIRE(json_dump_file(j, file, 0) == 0, "cannot write '%s'", file);
	json_decref(j);
	titan_tok *t;
	tok_encoder *e;
	REQUIRE(tok_load(&t, file, NULL) == 0, "%s", titan_errmsg());
	REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
	static const struct {
		const char *text;
		uint32_t ids[8];
		size_t n;
	} cases[] = {
		{ "a <mask> b", { 64, 50257, 275 }, 3 },
		{ "a   <mask>b", { 64, 50257, 65 }, 3 },
		{ "x<r>   y", { 87, 50258, 88 }, 3 },
		{ " \t<both>\xc2\xa0 z", { 50259, 89 }, 2 },
		{ "<r> <mask>", { 50258, 50257 }, 2 },
		{ "<r>\xe3\x80\x80\xe3\x80\x80x", { 50258, 50261, 50261, 87 }, 4 },
		{ "<r> \xe3\x80\x80 \xe3\x80\x80x", { 50258, 50261, 220, 50261, 87 }, 5 },
		{ "\xe2\x80\xa8<mask>\xc2\x85", { 50257, 126, 227 }, 3 },
		{ "text<plain>  <mask>  <r>", { 5239, 50260, 50257, 220, 220, 50258 }, 6 },
		{ " <|endoftext|> <mask> <|endoftext|>", { 220, 50256, 50257, 220, 50256 }, 5 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		titan_u32s ids = {0};
		const char *text = cases[i].text;
		CHECK(tok_encode(e, (const uint8_t *)text, strlen(text), &ids) == 0, "%s",
		      titan_errmsg());
		CHECK(same(ids.v, ids.n * 4, cases[i].ids, cases[i].n * 4),
		      "case %zu: %zu ids, first %u", i, ids.n, ids.n ? ids.v[0] : 0);
		u32s_free(&ids);
	}
	tok_encoder_free(e);
	tok_free(t);
	unlink(file);
	rmdir(dir);
}

static void test_roundtrip_random(void)
{
	char path[4096], rel[256];
	enum { N = 1 << 16 };
	uint8_t *x = malloc(N);
	REQUIRE(x, "malloc");
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", names[i]);
		if (!data_path(path, sizeof path, rel)) {
			free(x);
			SKIP("TITAN_DATA unset or %.100s missing", rel);
		}
		titan_tok *t;
		tok_encoder *e;
		REQUIRE(tok_load(&t, path, NULL) == 0, "%s", titan_errmsg());
		REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
		for (int round = 0; round < 4; round++) {
			for (size_t k = 0; k < N; k++) {
				uint64_t r = rnd();
				/* Mix raw bytes with runs of spaces, letters and
				 * UTF-8 lead/continuation bytes. */
				uint8_t letter = (uint8_t)('a' + (r >> 8) % 26);
				x[k] = round == 0 ? (uint8_t)r : (r & 3) == 0 ? ' ' :
				       (r & 3) == 1 ? (uint8_t)(0x80 | (r >> 8 & 0x7f)) :
				       (r & 3) == 2 ? letter : (uint8_t)(r >> 16);
			}
			titan_u32s ids = {0};
			titan_bytes dec = {0};
			CHECK(tok_encode(e, x, N, &ids) == 0, "%s", titan_errmsg());
			CHECK(tok_decode(t, ids.v, ids.n, &dec) == 0, "%s", titan_errmsg());
			CHECK(dec.n == N && !memcmp(dec.v, x, N), "%s round %d: round trip differs",
			      names[i], round);
			u32s_free(&ids);
			bytes_free(&dec);
		}
		tok_encoder_free(e);
		tok_free(t);
	}
	free(x);
}

/* Cut text where tok_next_cut allows, at pieces of step bytes or more:
 * the pieces, encoded apart, give serial's ids; returns the piece count. */
static size_t check_cuts(const char *what, const titan_tok *t, tok_encoder *e,
			 const titan_bytes *text, const titan_u32s *serial, size_t step)
{
	titan_u32s cut = {0};
	size_t at = 0, pieces = 0;
	bool after_nl = true;
	while (at < text->n) {
		size_t end = tok_next_cut(t, text->v + at, text->n - at, step);
		after_nl = after_nl && (end == text->n - at || text->v[at + end - 1] == '\n');
		CHECK(tok_encode(e, text->v + at, end, &cut) == 0, "%s", titan_errmsg());
		at += end;
		pieces++;
	}
	CHECK(cut.n == serial->n && !memcmp(cut.v, serial->v, cut.n * 4),
	      "%s: pieces of %zu bytes or more: %zu vs %zu tokens", what, step, cut.n, serial->n);
	CHECK(after_nl, "%s: a cut not after a newline", what);
	u32s_free(&cut);
	return pieces;
}

/* Text cut where tok_next_cut allows encodes, piece by piece, to the ids of
 * the whole, for long and short pieces: kjv.txt as it is (its verses start
 * with blanks and a number, where GPT-2's pattern cannot be cut) and with
 * its verses unnumbered (a '\n' and a letter: every pattern can); prints
 * one-thread MB/s. */
static void test_cut_kjv(void)
{
	char path[4096], rel[256], what[128];
	if (!data_path(path, sizeof path, "corpus/kjv.txt"))
		SKIP("TITAN_DATA unset or corpus/kjv.txt missing");
	titan_bytes text[2] = {{0}};
	REQUIRE(file_read_all(path, &text[0]) == 0 && file_read_all(path, &text[1]) == 0, "%s",
		titan_errmsg());
	text[1].n = check_unnumber_verses(text[1].v, text[1].n);
	static const char *const form[] = { "kjv.txt", "kjv.txt unnumbered" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", names[i]);
		if (!data_path(path, sizeof path, rel))
			continue;
		titan_tok *t;
		REQUIRE(tok_load(&t, path, NULL) == 0, "%s", titan_errmsg());
		tok_encoder *e;
		REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
		bool gpt2 = !strcmp(pretok_kind(tok_pretok(t)), "gpt2");
		for (int f = 0; f < 2; f++) {
			titan_u32s serial = {0};
			double t0 = now();
			CHECK(tok_encode(e, text[f].v, text[f].n, &serial) == 0, "%s", titan_errmsg());
			double dt = now() - t0;
			printf("# %s: %s, %zu bytes -> %zu tokens, %.1f MB/s one thread (pretok %s)\n",
			       names[i], form[f], text[f].n, serial.n, text[f].n / dt / 1e6,
			       pretok_kind(tok_pretok(t)));
			snprintf(what, sizeof what, "%s, %s", names[i], form[f]);
			static const size_t steps[] = { 64u << 10, 700 };
			for (size_t k = 0; k < ARRAY_SIZE(steps); k++) {
				size_t pieces = check_cuts(what, t, e, &text[f], &serial, steps[k]);
				bool cuts = f == 1 || !gpt2;
				CHECK(!cuts || pieces > text[f].n / steps[k] / 4,
				      "%s: only %zu pieces of %zu bytes or more", what, pieces, steps[k]);
			}
			u32s_free(&serial);
		}
		/* Nothing to cut before the end, and no place without a byte after it. */
		CHECK(tok_next_cut(t, (const uint8_t *)"ab\ncd", 6, 0) == 3, "cut after the newline");
		CHECK(tok_next_cut(t, (const uint8_t *)"ab\ncd", 6, 4) == 6, "none past it");
		CHECK(tok_next_cut(t, (const uint8_t *)"ab\n", 3, 0) == 3, "no byte after");
		/* Blanks after the '\n': a cut for cl100k and o200k unless a
		 * newline or a non-ASCII byte (maybe a Unicode space) ends them. */
		CHECK(tok_next_cut(t, (const uint8_t *)"a.\n \tx", 7, 0) == (gpt2 ? 7 : 3),
		      "%s: blanks then x", names[i]);
		CHECK(tok_next_cut(t, (const uint8_t *)"a.\n  \nx", 7, 0) == (gpt2 ? 7 : 6),
		      "%s: blanks then a newline", names[i]);
		CHECK(tok_next_cut(t, (const uint8_t *)"a.\n \xc2\xa0", 6, 0) == 6,
		      "blanks then a no-break space");
		tok_encoder_free(e);
		tok_free(t);
	}
	bytes_free(&text[0]);
	bytes_free(&text[1]);
}

/* tiktoken's rule spelled out naively: merge the leftmost adjacent pair
 * whose concatenation has the lowest rank (= id). */
static size_t naive_merge(const titan_tok *t, const uint8_t *p, size_t n, uint32_t *out)
{
	size_t start[512], m = n;
	for (size_t i = 0; i <= n; i++)
		start[i] = i;
	int64_t whole = tok_token_id(t, p, n);
	if (whole >= 0) {
		out[0] = (uint32_t)whole;
		return 1;
	}
	for (;;) {
		int64_t best = -1;
		size_t at = 0;
		for (size_t i = 0; i + 1 < m; i++) {
			int64_t id = tok_token_id(t, p + start[i], start[i + 2] - start[i]);
			if (id >= 0 && (best < 0 || id < best)) {
				best = id;
				at = i;
			}
		}
		if (best < 0)
			break;
		memmove(start + at + 1, start + at + 2, (m - at - 1) * sizeof *start);
		m--;
	}
	for (size_t i = 0; i < m; i++)
		out[i] = (uint32_t)tok_token_id(t, p + start[i], start[i + 1] - start[i]);
	return m;
}

static void test_merge_paths(void)
{
	char path[4096];
	if (!data_path(path, sizeof path, "tokenizers/cl100k_base/cl100k_base.tiktoken"))
		SKIP("TITAN_DATA unset or cl100k rank file missing");
	titan_tok *t;
	tok_encoder *e;
	REQUIRE(tok_load(&t, path, NULL) == 0, "%s", titan_errmsg());
	REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
	int bad = 0;
	for (int round = 0; round < 300; round++) {
		uint8_t s[400];
		uint32_t want[400];
		size_t n = 2 + rnd() % (round < 150 ? 90 : 398);
		/* Few letters, so merges collide and ranks tie. */
		int alpha = 1 + (int)(rnd() % 6);
		for (size_t i = 0; i < n; i++)
			s[i] = (uint8_t)('a' + rnd() % (uint64_t)alpha);
		titan_u32s ids = {0};
		CHECK(tok_encode(e, s, n, &ids) == 0, "%s", titan_errmsg());
		size_t m = naive_merge(t, s, n, want);
		if (ids.n != m || memcmp(ids.v, want, m * 4))
			if (bad++ < 3)
				printf("# piece of %zu letters: %zu ids vs naive %zu\n", n,
				       ids.n, m);
		u32s_free(&ids);
	}
	CHECK(bad == 0, "%d pieces differ from the naive merge", bad);
	tok_encoder_free(e);
	tok_free(t);
}

static void test_long_piece(void)
{
	char path[4096];
	const char *rel[] = { "tokenizers/gpt2/tokenizer.json",
			      "tokenizers/o200k_base/tokenizer.json" };
	enum { N = 1 << 20 };
	uint8_t *x = malloc(N);
	REQUIRE(x, "malloc");
	for (size_t f = 0; f < 2; f++) {
		if (!data_path(path, sizeof path, rel[f])) {
			free(x);
			SKIP("TITAN_DATA unset or %.100s missing", rel[f]);
		}
		titan_tok *t;
		tok_encoder *e;
		REQUIRE(tok_load(&t, path, NULL) == 0, "%s", titan_errmsg());
		REQUIRE(tok_encoder_new(&e, t) == 0, "%s", titan_errmsg());
		for (int kind = 0; kind < 2; kind++) {
			for (size_t i = 0; i < N; i++)
				x[i] = kind ? (uint8_t)('a' + rnd() % 26) : 'a';
			titan_u32s ids = {0};
			titan_bytes dec = {0};
			double t0 = now();
			CHECK(tok_encode(e, x, N, &ids) == 0, "%s", titan_errmsg());
			printf("# %s: 1 MB of %s: %zu tokens in %.3f s\n", rel[f],
			       kind ? "random letters" : "'a'", ids.n, now() - t0);
			CHECK(tok_decode(t, ids.v, ids.n, &dec) == 0 && dec.n == N &&
			      !memcmp(dec.v, x, N), "round trip");
			u32s_free(&ids);
			bytes_free(&dec);
		}
		tok_encoder_free(e);
		tok_free(t);
	}
	free(x);
}

static void test_decode_range(void)
{
	char path[4096];
	if (!data_path(path, sizeof path, "tokenizers/cl100k_base/tokenizer.json"))
		SKIP("TITAN_DATA unset or cl100k tokenizer.json missing");
	titan_tok *t;
	REQUIRE(tok_load(&t, path, NULL) == 0, "%s", titan_errmsg());
	titan_bytes out = {0};
	uint32_t ids[] = { 15339, 100256 };
	int rc = tok_decode(t, ids, 2, &out);
	CHECK(rc == TITAN_ERANGE && strstr(titan_errmsg(), "100256") &&
	      strstr(titan_errmsg(), "index 1"), "rc %d: %s", rc, titan_errmsg());
	uint32_t far = 1u << 30;
	CHECK(tok_decode(t, &far, 1, &out) == TITAN_ERANGE, "far id");
	size_t len;
	CHECK(tok_token_bytes(t, 100256, &len) == NULL, "unused id has bytes");
	CHECK(tok_token_id(t, "<|endoftext|>", 13) == 100257, "endoftext id");
	CHECK(tok_token_id(t, " the", 4) == 279, "' the' id %lld",
	      (long long)tok_token_id(t, " the", 4));
	bytes_free(&out);
	tok_free(t);
}

/* Write to DIR/name text in which ' stands for " (JSON that reads), then
 * try to load it. */
static int load_text(const char *dir, const char *name, const char *text, char *file, size_t n)
{
	snprintf(file, n, "%s/%s", dir, name);
	size_t len = strlen(text);
	char *json = malloc(len + 1);
	if (!json)
		return -100;
	for (size_t i = 0; i <= len; i++)
		json[i] = text[i] == '\'' ? '"' : text[i];
	int rc = atomic_write_file(file, json, len);
	free(json);
	if (rc)
		return -100;
	titan_tok *t = NULL;
	rc = tok_load(&t, file, NULL);
	tok_free(t);
	return rc;
}


static void test_errors(void)
{
	char dir[] = "/tmp/test_tok.XXXXXX", file[4200];
	REQUIRE(mkdtemp(dir), "mkdtemp");
	struct {
		const char *name, *text, *want1, *want2;
		int code;
	} cases[] = {
		{ "ok.json", HEAD MODEL "'merges':['a b']}}", NULL, NULL, 0 },
		{ "wordpiece.json", HEAD "'model':{'type':'WordPiece','vocab':{}}}",
		  "$.model.type", "WordPiece", TITAN_EFORMAT },
		{ "norm.json", "{'normalizer':{'type':'NFC'}," MODEL "'merges':[]}}",
		  "$.normalizer", "NFC", TITAN_EFORMAT },
		{ "pretok.json", "{'pre_tokenizer':{'type':'Whitespace'}," MODEL "'merges':[]}}",
		  "$.pre_tokenizer.type", "Whitespace", TITAN_EFORMAT },
		{ "seq.json", "{'pre_tokenizer':{'type':'Sequence',"
			      "'pretokenizers':[{'type':'Digits'}]}," MODEL "'merges':[]}}",
		  "$.pre_tokenizer.pretokenizers[0].type", "Digits", TITAN_EFORMAT },
		{ "split.json", "{'pre_tokenizer':{'type':'Split','pattern':{'Regex':' '},"
				"'behavior':'Removed'}," MODEL "'merges':[]}}",
		  "$.pre_tokenizer", "Removed", TITAN_EFORMAT },
		{ "merge.json", HEAD MODEL "'merges':['a b',['b','c']]}}",
		  "$.model.merges[1]", "'c'", TITAN_EFORMAT },
		{ "merged.json", HEAD MODEL "'merges':['b a']}}",
		  "$.model.merges[0]", "'ba'", TITAN_EFORMAT },
		{ "trunc.json", HEAD MODEL "'merges':['a b'", "line 1", NULL, TITAN_EFORMAT },
		{ "alpha.json", HEAD "'model':{'type':'BPE','merges':[],"
				"'vocab':{'a':0,'\xc3\xa9\xe2\x82\xac':1}}}",
		  "$.model.vocab", "alphabet", TITAN_EFORMAT },
		{ "prefix.json", "{'pre_tokenizer':{'type':'ByteLevel','add_prefix_space':true},"
				 MODEL "'merges':[]}}", "add_prefix_space", NULL, TITAN_EFORMAT },
		{ "dropout.json", HEAD "'model':{'type':'BPE','dropout':0.1,'vocab':{},"
				  "'merges':[]}}",
		  "$.model.dropout", NULL, TITAN_EFORMAT },
		{ "single.json", HEAD "'added_tokens':[{'id':4,'content':'<x>','single_word':true}],"
				 MODEL "'merges':[]}}",
		  "$.added_tokens[0].single_word", NULL, TITAN_EFORMAT },
		{ "addedid.json", HEAD "'added_tokens':[{'id':7,'content':'ab'}],"
				  MODEL "'merges':[]}}",
		  "$.added_tokens[0].id", "id 2", TITAN_EFORMAT },
		{ "dupid.json", HEAD "'model':{'type':'BPE','vocab':{'a':0,'b':0},'merges':[]}}",
		  "$.model.vocab", "id 0", TITAN_EFORMAT },
		{ "notobj.json", "[1,2]", "$", NULL, TITAN_EFORMAT },
		{ "bad.tiktoken", "YQ== 0\nYg== 1\nY!== 2\n", "line 3", "base64", TITAN_EFORMAT },
		{ "rank.tiktoken", "YQ== 0\nYg== x\n", "line 2", "rank", TITAN_EFORMAT },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int rc = load_text(dir, cases[i].name, cases[i].text, file, sizeof file);
		const char *msg = titan_errmsg();
		CHECK(rc == cases[i].code, "%s: rc %d want %d: %s", cases[i].name, rc,
		      cases[i].code, msg);
		if (!cases[i].code)
			continue;
		CHECK(strstr(msg, cases[i].name), "%s: message does not name the file: %s",
		      cases[i].name, msg);
		CHECK(strstr(msg, cases[i].want1), "%s: message lacks '%s': %s", cases[i].name,
		      cases[i].want1, msg);
		CHECK(!cases[i].want2 || strstr(msg, cases[i].want2), "%s: message lacks '%s': %s",
		      cases[i].name, cases[i].want2, msg);
		printf("# %s: %s\n", cases[i].name, msg);
		unlink(file);
	}
	unlink(file);   /* ok.json */
	snprintf(file, sizeof file, "%s/ok.json", dir);
	unlink(file);
	titan_tok *t = NULL;
	int rc = tok_load(&t, dir, NULL);
	CHECK(rc == TITAN_EFORMAT && strstr(titan_errmsg(), "tokenizer.json"), "empty dir: %d %s",
	      rc, titan_errmsg());
	rmdir(dir);
}

int main(void)
{
	RUN(test_vectors_json);
	RUN(test_vectors_tiktoken);
	RUN(test_legacy_merges);
	RUN(test_tiktoken_opts);
	RUN(test_decode_range);
	RUN(test_added_tokens);
	RUN(test_strip);
	RUN(test_roundtrip_random);
	RUN(test_merge_paths);
	RUN(test_long_piece);
	RUN(test_cut_kjv);
	RUN(test_errors);
	return check_done();
}
