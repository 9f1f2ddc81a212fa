/* test_jsonl.c - the JSONL scanner against jansson, which is the reference:
 * for every line and field path both must agree on valid or not, on whether
 * the field is there and a string, and on the string's bytes. */
#include "core/base.h"

#include <jansson.h>

#include "check.h"
#include "core/buf.h"
#include "data/jsonl.h"
#include "jsonl_reference.h"


static int unsure;

/* Compare scanner and jansson on one line; 1 when they agree. */
static int agree(const uint8_t *line, size_t n, const char *const *path, size_t npath)
{
	jsonl_scanner s;
	jsonl_init(&s, path, npath);
	const uint8_t *t = NULL;
	size_t tn = 0;
	int got = jsonl_field(&s, line, n, &t, &tn);
	json_t *root;
	const char *rt = NULL;
	size_t rn = 0;
	int want = reference(line, n, path, npath, &root, &rt, &rn);
	int ok = got == want || got == JSONL_UNSURE;
	if (got == JSONL_UNSURE)
		unsure++;
	if (ok && got == JSONL_STRING)
		ok = tn == rn && (!tn || !memcmp(t, rt, tn));
	if (!ok)
		printf("#   '%.*s' (%zu bytes), path[0] '%s': scanner %d, jansson %d\n",
		       (int)TITAN_MIN(n, 200u), (const char *)line, n, path[0], got, want);
	json_decref(root);
	jsonl_free(&s);
	return ok;
}

static const char *const text_path[] = { "text" };
static const char *const meta_path[] = { "meta", "body" };
static const char *const empty_path[] = { "text", "" };

static int agree_all(const char *line, size_t n)
{
	const uint8_t *p = (const uint8_t *)line;
	return agree(p, n, text_path, 1) & agree(p, n, meta_path, 2) &
	       agree(p, n, empty_path, 2);
}

#define L(s) { s, sizeof(s) - 1 }

static const struct {
	const char *s;
	size_t n;
} lines[] = {
	L("{\"text\": \"hello\"}"),
	L("{\"text\":\"\"}"),
	L("  {  \"text\"  :  \"a b\"  ,  \"x\" : 1 }  "),
	L("\t\r\n{\"text\"\n:\r\"a\"\t}\r\n "),
	L("{\"text\": \"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"}"),
	L("{\"text\": \"\\u0041\\u00e9\\u20AC\\uD83D\\uDE00 end\"}"),
	L("{\"text\": \"nul \\u0000 inside\"}"),
	L("{\"text\": \"\\ud800\"}"),
	L("{\"text\": \"\\udc00\"}"),
	L("{\"text\": \"\\ud800\\u0041\"}"),
	L("{\"text\": \"\\ud800\\udbff\"}"),
	L("{\"text\": \"\\ud800x\"}"),
	L("{\"text\": \"\\ud83d\\ude00\\ud83d\"}"),
	L("{\"text\": \"\\u12\"}"),
	L("{\"text\": \"\\u12G4\"}"),
	L("{\"text\": \"\\x\"}"),
	L("{\"text\": \"\\\"}"),
	L("{\"text\": \"tab\there\"}"),
	L("{\"text\": \"ctl \x01\"}"),
	L("{\"text\": \"del \x7f ok\"}"),
	L("{\"text\": \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}"),
	L("{\"text\": \"bad \xc3\"}"),
	L("{\"text\": \"bad \xc0\xaf\"}"),
	L("{\"text\": \"bad \xe0\x80\xaf\"}"),
	L("{\"text\": \"bad \xed\xa0\x80\"}"),
	L("{\"text\": \"bad \xf4\x90\x80\x80\"}"),
	L("{\"text\": \"bad \xff\"}"),
	L("{\"text\": \"bad \x80\"}"),
	L("{\"x\": \"bad \xc3\", \"text\": \"a\"}"),
	L("{\"text\": \"a\"} \xc3\xa9"),
	L("{\"text\": \"a\", \"text\": \"b\"}"),
	L("{\"text\": \"a\", \"text\": 1}"),
	L("{\"text\": 1, \"text\": \"b\\n\"}"),
	L("{\"text\": \"a\\n\", \"text\": \"b\\t\", \"x\": \"c\\r\"}"),
	L("{\"te\\u0078t\": \"escaped key\"}"),
	L("{\"te\\u0000xt\": \"nul key\"}"),
	L("{\"x\": {\"a\\u0000\": 1}, \"text\": \"nul key deeper\"}"),
	L("{\"text\": 5}"),
	L("{\"text\": null}"),
	L("{\"text\": [\"a\"]}"),
	L("{\"text\": {\"\": \"empty key\"}}"),
	L("{\"other\": \"a\"}"),
	L("{}"),
	L("[]"),
	L("[{\"text\": \"in array\"}]"),
	L("\"text\""),
	L("1"),
	L("null"),
	L(""),
	L("\r"),
	L("{"),
	L("{\"text\""),
	L("{\"text\":"),
	L("{\"text\":\"a\""),
	L("{\"text\":\"a\",}"),
	L("{,\"text\":\"a\"}"),
	L("{\"text\" \"a\"}"),
	L("{\"text\"::\"a\"}"),
	L("{'text': 'a'}"),
	L("{text: \"a\"}"),
	L("{\"text\": \"a\"} x"),
	L("{\"text\": \"a\"}{}"),
	L("{\"text\": \"a\"}\f"),
	L("\xef\xbb\xbf{\"text\": \"bom\"}"),
	L("{\"text\": \"a\", \"n\": [1, -0, -0.5e+10, 0.0, 1E5, 2e-7, 12.5E+3, -1]}"),
	L("{\"text\": \"a\", \"n\": 01}"),
	L("{\"text\": \"a\", \"n\": -01}"),
	L("{\"text\": \"a\", \"n\": 1.}"),
	L("{\"text\": \"a\", \"n\": .5}"),
	L("{\"text\": \"a\", \"n\": +1}"),
	L("{\"text\": \"a\", \"n\": -}"),
	L("{\"text\": \"a\", \"n\": 1e}"),
	L("{\"text\": \"a\", \"n\": 1e+}"),
	L("{\"text\": \"a\", \"n\": 1.5.3}"),
	L("{\"text\": \"a\", \"n\": 0x10}"),
	L("{\"text\": \"a\", \"n\": NaN}"),
	L("{\"text\": \"a\", \"n\": Infinity}"),
	L("{\"text\": \"a\", \"n\": 9223372036854775807}"),
	L("{\"text\": \"a\", \"n\": 9223372036854775808}"),
	L("{\"text\": \"a\", \"n\": -9223372036854775808}"),
	L("{\"text\": \"a\", \"n\": -9223372036854775809}"),
	L("{\"text\": \"a\", \"n\": 12345678901234567890123}"),
	L("{\"text\": \"a\", \"n\": 1e308}"),
	L("{\"text\": \"a\", \"n\": 1.7976931348623157e308}"),
	L("{\"text\": \"a\", \"n\": 1.8e308}"),
	L("{\"text\": \"a\", \"n\": 1e309}"),
	L("{\"text\": \"a\", \"n\": 1e-400}"),
	L("{\"text\": \"a\", \"n\": 0e999999999999999999999}"),
	L("{\"text\": \"a\", \"n\": 0.0001e311}"),
	L("{\"text\": \"a\", \"n\": 100e307}"),
	L("{\"text\": \"a\", \"n\": 1.0e307}"),
	L("{\"text\": \"a\", \"b\": [true, false, null]}"),
	L("{\"text\": \"a\", \"b\": tru}"),
	L("{\"text\": \"a\", \"b\": truex}"),
	L("{\"text\": \"a\", \"b\": True}"),
	L("{\"text\": \"a\", \"b\": nulll}"),
	L("{\"x\": [\"]\", \"}\", \"\\\"]\", {\"y\": [[], {}, [{}]]}], \"text\": \"after\"}"),
	L("{\"x\": [1, 2,], \"text\": \"a\"}"),
	L("{\"x\": [1 2], \"text\": \"a\"}"),
	L("{\"x\": {\"a\" 1}, \"text\": \"a\"}"),
	L("{\"x\": {\"a\": 1,}, \"text\": \"a\"}"),
	L("{\"x\": {1: 2}, \"text\": \"a\"}"),
	L("{\"x\": [}, \"text\": \"a\"}"),
	L("{\"x\": {]}, \"text\": \"a\"}"),
	L("{\"meta\": {\"body\": \"nested\"}}"),
	L("{\"meta\": {\"body\": \"n1\"}, \"meta\": {\"body\": \"n2\\n\"}}"),
	L("{\"meta\": {\"body\": \"n1\\n\"}, \"meta\": {\"other\": 1}}"),
	L("{\"meta\": {\"body\": \"n1\"}, \"meta\": 5}"),
	L("{\"meta\": \"body\"}"),
	L("{\"meta\": [\"body\"]}"),
	L("{\"meta\": {\"body\": {\"body\": \"x\"}}}"),
	L("{\"meta\": {\"body\": \"x\", \"body\": \"y\"}, \"text\": \"t\"}"),
	L("{\"text\": \"a\"}\0"),
	L("{\"text\": \"a\0b\"}"),
	L("{\"text\":\0\"a\"}"),
	L("{\"text\": \"a\", \"n\": [1\0, null\0, true\0 , -0.5e3\0]}"),
	L("{\"text\": \"a\", \"n\": 1\0}"),
	L("{\"text\": \"a\", \"n\": [1\0\0]}"),
	L("{\"text\": \"a\", \"n\": [\"s\"\0]}"),
	L("{\"text\": \"a\", \"n\": [[]\0]}"),
	L("{\"text\"\0: \"a\"}"),
	L("{\"text\": \"a\"\0}"),
};

static void test_lines(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(lines); i++)
		CHECK(agree_all(lines[i].s, lines[i].n), "line %zu", i);
}

/* What a line decodes to, by the scanner. */
static void test_decoded(void)
{
	static const char line[] = "{\"a\": [\"x\"], \"text\": \"q\\\"\\n\\u00e9\\ud83d\\ude00\\u0000!\", \"z\": 0}";
	jsonl_scanner s;
	jsonl_init(&s, text_path, 1);
	const uint8_t *t;
	size_t n;
	int rc = jsonl_field(&s, (const uint8_t *)line, sizeof line - 1, &t, &n);
	static const char want[] = "q\"\n\xc3\xa9\xf0\x9f\x98\x80\0!";
	CHECK(rc == JSONL_STRING && n == sizeof want - 1 && !memcmp(t, want, n),
	      "rc %d n %zu", rc, n);
	/* Without escapes the string is not copied. */
	static const char plain[] = "{\"text\": \"plain\"}";
	rc = jsonl_field(&s, (const uint8_t *)plain, sizeof plain - 1, &t, &n);
	CHECK(rc == JSONL_STRING && n == 5 && t == (const uint8_t *)plain + 10, "rc %d", rc);
	jsonl_free(&s);
}

/* n containers deep, opened with open, with inner in the middle. */
static char *nested(size_t n, char open, const char *inner, size_t *len)
{
	static const char head[] = "{\"text\": \"deep\", \"x\": ";
	size_t k = strlen(inner), total = sizeof head - 1 + 6 * n + k + 1;
	char *b = malloc(total);
	if (!b)
		abort();
	char close = open == '[' ? ']' : '}';
	memcpy(b, head, sizeof head - 1);
	size_t w = sizeof head - 1;
	for (size_t i = 0; i < n; i++) {
		if (open == '[') {
			b[w++] = '[';
		} else {
			memcpy(b + w, "{\"k\":", 5);
			w += 5;
		}
	}
	memcpy(b + w, inner, k);
	w += k;
	for (size_t i = 0; i < n; i++)
		b[w++] = close;
	b[w++] = '}';
	*len = w;
	return b;
}

/* jansson counts every value, scalars too, against its 2048 levels. */
static void test_depth(void)
{
	static const size_t depths[] = { 1, 100, 2045, 2046, 2047, 2048, 3000 };
	static const char *const inners[] = { "", "1", "\"s\"" };
	for (size_t i = 0; i < ARRAY_SIZE(depths); i++) {
		for (size_t j = 0; j < ARRAY_SIZE(inners); j++) {
			size_t n;
			char *b = nested(depths[i], '[', inners[j], &n);
			CHECK(agree_all(b, n), "arrays %zu deep, '%s'", depths[i], inners[j]);
			free(b);
			if (!*inners[j])
				continue;
			b = nested(depths[i], '{', inners[j], &n);
			CHECK(agree_all(b, n), "objects %zu deep, '%s'", depths[i], inners[j]);
			free(b);
		}
	}
	/* The path itself deep down. */
	static const char *const deep_path[] = { "a", "a", "a", "a" };
	static const char deep[] = "{\"a\": {\"a\": {\"a\": {\"a\": \"found\"}}}}";
	CHECK(agree((const uint8_t *)deep, sizeof deep - 1, deep_path, 4), "deep path");
}

/* A tiny deterministic generator, so failures reproduce. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 11);
}

/* Mutate the table's lines: byte flips, insertions of JSON-significant
 * bytes, deletions.  Most results are invalid, many are not. */
static void test_mutations(void)
{
	static const char alphabet[] = "\"\\{}[],:0123456789-+.eEtrufalsn u \t\r\n\x01\x80\xc3\xa9\xed\xf0\0";
	uint8_t buf[512];
	int bad = 0;
	unsure = 0;
	for (int iter = 0; iter < 200000 && bad < 10; iter++) {
		size_t i = rng() % ARRAY_SIZE(lines);
		size_t n = TITAN_MIN(lines[i].n, sizeof buf - 8);
		memcpy(buf, lines[i].s, n);
		int edits = 1 + rng() % 3;
		for (int e = 0; e < edits; e++) {
			size_t at = n ? rng() % (n + 1) : 0;
			uint8_t c = (uint8_t)alphabet[rng() % (sizeof alphabet - 1)];
			switch (rng() % 3) {
			case 0:
				if (at < n)
					buf[at] = c;
				break;
			case 1:
				if (n < sizeof buf) {
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = c;
					n++;
				}
				break;
			default:
				if (at < n) {
					memmove(buf + at, buf + at + 1, n - at - 1);
					n--;
				}
				break;
			}
		}
		if (!agree_all((const char *)buf, n))
			bad++;
	}
	CHECK(bad == 0, "%d mutated lines disagree", bad);
	printf("# mutations: %d lines left to jansson (unsure)\n", unsure);
}

/* Every line of tinyshakespeare.jsonl. */
static void test_shakespeare(void)
{
	const char *data = check_data_dir();
	if (!data)
		SKIP("TITAN_DATA not set");
	char path[4096];
	snprintf(path, sizeof path, "%s/corpus/tinyshakespeare.jsonl", data);
	FILE *f = fopen(path, "rb");
	if (!f)
		SKIP("%.200s missing", path);
	char *line = NULL;
	size_t cap = 0, lines_seen = 0, bytes = 0;
	ssize_t n;
	int bad = 0;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			n--;
		jsonl_scanner s;
		jsonl_init(&s, text_path, 1);
		const uint8_t *t;
		size_t tn;
		if (jsonl_field(&s, (const uint8_t *)line, (size_t)n, &t, &tn) != JSONL_STRING)
			bad++;
		jsonl_free(&s);
		if (!agree((const uint8_t *)line, (size_t)n, text_path, 1))
			bad++;
		lines_seen++;
		bytes += (size_t)n;
	}
	free(line);
	fclose(f);
	CHECK(lines_seen == 7222 && bad == 0, "%zu lines, %d bad", lines_seen, bad);
	(void)bytes;
}

int main(void)
{
	RUN(test_lines);
	RUN(test_decoded);
	RUN(test_depth);
	RUN(test_mutations);
	RUN(test_shakespeare);
	return check_done();
}
