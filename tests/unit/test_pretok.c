/* test_pretok.c - the pre-tokenizer and the Unicode tables.
 *
 * The fast paths are checked against PCRE2 running the same pattern (wrapped
 * in "(?:...)" so pretok_new does not recognise it): on the tricky strings of
 * the token vectors, on two corpora, and on random strings of awkward code
 * points.  PCRE2 10.42 carries Unicode 14 tables while ours may be newer, so
 * random strings only use code points on which both agree (computed here). */
#include "core/base.h"
#include "core/buf.h"
#include "tok/pretok.h"
#include "tok/unicode.h"
#include "check.h"

#include <jansson.h>
#include <time.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

static const char *const kinds[] = { "gpt2", "cl100k", "o200k" };

/* ---- helpers ---- */

static uint64_t rng_next(uint64_t *st)
{
	/* splitmix64 */
	uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static size_t put_utf8(uint8_t *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (uint8_t)(0xc0 | cp >> 6);
		out[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (uint8_t)(0xe0 | cp >> 12);
		out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (uint8_t)(0xf0 | cp >> 18);
	out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

/* Piece ends of s[0..n) into ends; checks that the pieces tile s (each
 * non-empty, each starting where the last ended, the last ending at n). */
static int split(const pretok *p, const uint8_t *s, size_t n, titan_u32s *ends,
		 bool *tiles)
{
	pretok_iter it;
	size_t a, b, pos = 0;
	int rc;

	ends->n = 0;
	*tiles = true;
	rc = pretok_iter_init(&it, p, s, n);
	if (rc)
		return rc;
	while ((rc = pretok_iter_next(&it, &a, &b)) > 0) {
		if (a != pos || b <= a || b > n)
			*tiles = false;
		pos = b;
		if ((rc = u32s_push(ends, (uint32_t)b)))
			break;
	}
	pretok_iter_fini(&it);
	if (pos != n)
		*tiles = false;
	return rc < 0 ? rc : 0;
}

static void show(const char *what, const uint8_t *s, size_t n, const titan_u32s *e)
{
	size_t pos = 0;

	printf("#   %s:", what);
	for (size_t i = 0; i < e->n && i < 40; i++) {
		printf(" [");
		for (; pos < e->v[i]; pos++)
			printf(s[pos] >= 0x20 && s[pos] < 0x7f ? "%c" : "\\x%02x", s[pos]);
		printf("]");
	}
	printf("\n");
}

/* The fast path and PCRE2 for one pattern. */
struct pair {
	pretok *fast, *re;
	titan_u32s a, b;
	long compared, mismatches;
};

static int pair_open(struct pair *pr, const char *kind)
{
	char wrapped[1024];
	const char *pat = pretok_named_pattern(kind);
	int rc;

	memset(pr, 0, sizeof *pr);
	if (!pat)
		return -1;
	snprintf(wrapped, sizeof wrapped, "(?:%s)", pat);
	rc = pretok_new(&pr->fast, pat);
	if (!rc)
		rc = pretok_new(&pr->re, wrapped);
	return rc;
}

static void pair_close(struct pair *pr)
{
	pretok_free(pr->fast);
	pretok_free(pr->re);
	u32s_free(&pr->a);
	u32s_free(&pr->b);
}

/* Compare both on s; report the first few mismatches. */
static bool pair_same(struct pair *pr, const uint8_t *s, size_t n, const char *where)
{
	bool t1, t2;
	int r1 = split(pr->fast, s, n, &pr->a, &t1);
	int r2 = split(pr->re, s, n, &pr->b, &t2);
	bool same = !r1 && !r2 && t1 && t2 && pr->a.n == pr->b.n &&
		    (!pr->a.n || !memcmp(pr->a.v, pr->b.v, pr->a.n * sizeof *pr->a.v));

	pr->compared++;
	if (!same && pr->mismatches++ < 5) {
		printf("#   %s: %s differs from pcre2 (rc %d %d, tiles %d %d)\n",
		       where, pretok_kind(pr->fast), r1, r2, t1, t2);
		if (n < 300) {
			show("fast ", s, n, &pr->a);
			show("pcre2", s, n, &pr->b);
		}
	}
	return same;
}

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long len;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1))) {
		*n = fread(buf, 1, (size_t)len, f);
		buf[*n] = 0;
	}
	fclose(f);
	return buf;
}

static char *data_file(const char *rel, size_t *n)
{
	char path[4096];
	const char *dir = check_data_dir();

	if (!dir)
		return NULL;
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	return slurp(path, n);
}

/* ---- Unicode: tables against PCRE2, and the decoder ---- */

/* Bit per code point: our classes agree with PCRE2's on it.  Filled by
 * test_tables_vs_pcre2, used to pick random code points. */
static uint8_t agree[0x110000 / 8];
static bool agree_ready;

static bool agrees(uint32_t cp)
{
	return agree_ready && (agree[cp >> 3] >> (cp & 7) & 1);
}

static void test_tables_vs_pcre2(void)
{
	static const char *const props[] = {
		"\\p{L}", "\\p{N}", "[\\p{Z}\\t-\\r\\x{85}]", "\\p{M}",
		"[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]", "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]",
		"\\p{Cn}",
	};
	pcre2_code *re[ARRAY_SIZE(props)];
	pcre2_match_data *md;
	long differ = 0, differ_assigned = 0;
	int code;
	PCRE2_SIZE off;

	for (size_t k = 0; k < ARRAY_SIZE(props); k++) {
		re[k] = pcre2_compile((PCRE2_SPTR)props[k], PCRE2_ZERO_TERMINATED,
				      PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &code, &off, NULL);
		REQUIRE(re[k], "compile %s", props[k]);
		pcre2_jit_compile(re[k], PCRE2_JIT_COMPLETE);
	}
	md = pcre2_match_data_create(4, NULL);
	memset(agree, 0, sizeof agree);
	for (uint32_t cp = 0; cp < 0x110000; cp++) {
		uint8_t buf[4], want = 0;
		size_t n;

		if (cp >= 0xd800 && cp <= 0xdfff)
			continue;
		n = put_utf8(buf, cp);
		for (int k = 0; k < 6; k++)
			if (pcre2_match(re[k], buf, n, 0, 0, md, NULL) > 0)
				want |= (uint8_t)(1 << k);
		if (want == uc_class(cp)) {
			agree[cp >> 3] |= (uint8_t)(1 << (cp & 7));
			continue;
		}
		differ++;
		/* what PCRE2 does not know yet is fine; anything else is not */
		if (pcre2_match(re[6], buf, n, 0, 0, md, NULL) <= 0 && differ_assigned++ < 5)
			printf("#   U+%04X: class %#x, pcre2 says %#x\n", cp, uc_class(cp), want);
	}
	agree_ready = true;
	printf("# unicode %s tables vs pcre2 %d.%d: %ld code points differ, "
	       "%ld of them assigned in pcre2's tables\n", uc_version(),
	       PCRE2_MAJOR, PCRE2_MINOR, differ, differ_assigned);
	CHECK(differ_assigned == 0, "%ld code points classed differently", differ_assigned);
	CHECK(differ < 6000, "%ld code points differ", differ);
	pcre2_match_data_free(md);
	for (size_t k = 0; k < ARRAY_SIZE(props); k++)
		pcre2_code_free(re[k]);
}

static void test_unicode_classes(void)
{
	CHECK(uc_class('a') == (UC_L | UC_LOWERISH), "a %#x", uc_class('a'));
	CHECK(uc_class('Z') == (UC_L | UC_UPPERISH), "Z");
	CHECK(uc_class('7') == UC_N, "7");
	CHECK(uc_class(' ') == UC_WS && uc_class('\n') == UC_WS, "space");
	CHECK(uc_class(0x85) == UC_WS, "U+0085 is White_Space");
	CHECK(uc_class(0x1c) == 0, "U+001C is not White_Space");
	CHECK(uc_class(0x200b) == 0 && uc_class(0xfeff) == 0, "ZWSP, BOM");
	CHECK(uc_class(0x3000) == UC_WS && uc_class(0x2028) == UC_WS, "U+3000 U+2028");
	CHECK(uc_class(0x4e00) == (UC_L | UC_UPPERISH | UC_LOWERISH), "CJK first");
	CHECK(uc_class(0x9fa5) & UC_L, "CJK inside a First/Last range");
	CHECK(uc_class(0xac01) & UC_L, "Hangul");
	CHECK(uc_class(0x301) == (UC_M | UC_UPPERISH | UC_LOWERISH), "U+0301");
	CHECK(uc_class(0x1c5) == (UC_L | UC_UPPERISH), "Lt");
	CHECK(uc_class(0x2b0) == (UC_L | UC_UPPERISH | UC_LOWERISH), "Lm");
	CHECK(uc_class(0x2160) == UC_N && uc_class(0xb2) == UC_N, "Nl No");
	CHECK(uc_class(0xe000) == 0 && uc_class(0x10ffff) == 0, "private use");
	CHECK(uc_class(UC_INVALID) == 0 && uc_class(0xffffffff) == 0, "invalid");
	CHECK(strlen(uc_version()) >= 5, "version '%s'", uc_version());
}

static void test_utf8_decode(void)
{
	static const struct {
		const char *s;
		size_t len;
		uint32_t cp;
	} cases[] = {
		{ "A", 1, 'A' },
		{ "\xc2\x85", 2, 0x85 },
		{ "\xdf\xbf", 2, 0x7ff },
		{ "\xe0\xa0\x80", 3, 0x800 },
		{ "\xed\x9f\xbf", 3, 0xd7ff },
		{ "\xee\x80\x80", 3, 0xe000 },
		{ "\xef\xbf\xbf", 3, 0xffff },
		{ "\xf0\x90\x80\x80", 4, 0x10000 },
		{ "\xf4\x8f\xbf\xbf", 4, 0x10ffff },
		{ "\xc0\x80", 1, UC_INVALID },         /* overlong NUL */
		{ "\xc1\xbf", 1, UC_INVALID },
		{ "\xe0\x9f\xbf", 1, UC_INVALID },     /* overlong */
		{ "\xf0\x8f\xbf\xbf", 1, UC_INVALID }, /* overlong */
		{ "\xed\xa0\x80", 1, UC_INVALID },     /* surrogate D800 */
		{ "\xed\xbf\xbf", 1, UC_INVALID },     /* surrogate DFFF */
		{ "\xf4\x90\x80\x80", 1, UC_INVALID }, /* U+110000 */
		{ "\xf5\x80\x80\x80", 1, UC_INVALID },
		{ "\xff", 1, UC_INVALID },
		{ "\x80", 1, UC_INVALID },             /* stray continuation */
		{ "\xc3", 1, UC_INVALID },             /* truncated */
		{ "\xe2\x82", 1, UC_INVALID },
		{ "\xf0\x9f\x98", 1, UC_INVALID },
		{ "\xc3(", 1, UC_INVALID },
		{ "\xe2(\xa1", 1, UC_INVALID },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint32_t cp = 0;
		size_t n = strlen(cases[i].s);
		size_t len = utf8_decode((const uint8_t *)cases[i].s, n, &cp);
		CHECK(len == cases[i].len && cp == cases[i].cp,
		      "case %zu: len %zu cp %#x, want %zu %#x", i, len, cp,
		      cases[i].len, cases[i].cp);
	}
	/* A length limit cuts a sequence short: truncated. */
	uint32_t cp;
	CHECK(utf8_decode((const uint8_t *)"\xe2\x82\xac", 2, &cp) == 1 && cp == UC_INVALID,
	      "n limits the sequence");
	/* Every code point round trips. */
	long bad = 0;
	for (uint32_t c = 0; c < 0x110000; c++) {
		uint8_t buf[4];
		size_t n;
		if (c >= 0xd800 && c <= 0xdfff)
			continue;
		n = put_utf8(buf, c);
		if (utf8_decode(buf, n, &cp) != n || cp != c)
			bad++;
	}
	CHECK(bad == 0, "%ld code points do not round trip", bad);
}

/* ---- named patterns, construction, errors ---- */

static void test_named_patterns(void)
{
	static const struct {
		const char *name, *file;
	} files[] = {
		{ "gpt2", "tokenizers/gpt2/r50k_base.pattern.txt" },
		{ "cl100k", "tokenizers/cl100k_base/cl100k_base.pattern.txt" },
		{ "llama3", "tokenizers/llama3/pattern.txt" },
		{ "o200k", "tokenizers/o200k_base/o200k_base.pattern.txt" },
	};
	static const struct {
		const char *name, *file;
	} jsons[] = {
		{ "cl100k", "tokenizers/cl100k_base/tokenizer.json" },
		{ "llama3", "tokenizers/llama3/tokenizer.json" },
		{ "o200k", "tokenizers/o200k_base/tokenizer.json" },
	};

	CHECK(pretok_named_pattern("r50k") == pretok_named_pattern("gpt2"), "r50k");
	CHECK(pretok_named_pattern("llama3") == pretok_named_pattern("cl100k"), "llama3");
	CHECK(pretok_named_pattern("bert") == NULL, "unknown name");
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		pretok *p;
		REQUIRE(pretok_new(&p, pretok_named_pattern(kinds[i])) == 0, "%s", titan_errmsg());
		CHECK(!strcmp(pretok_kind(p), kinds[i]), "kind %s", pretok_kind(p));
		CHECK(!strcmp(pretok_pattern(p), pretok_named_pattern(kinds[i])), "pattern");
		pretok_free(p);
	}
	if (!check_data_dir())
		SKIP("TITAN_DATA not set");
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		size_t n;
		char *text = data_file(files[i].file, &n);
		if (!text)
			SKIP("cannot read '%s'", files[i].file);
		CHECK(!strcmp(text, pretok_named_pattern(files[i].name)),
		      "'%s' differs from pretok_named_pattern(\"%s\")", files[i].file,
		      files[i].name);
		free(text);
	}
	for (size_t i = 0; i < ARRAY_SIZE(jsons); i++) {
		char path[4096];
		json_error_t jerr;
		snprintf(path, sizeof path, "%s/%s", check_data_dir(), jsons[i].file);
		json_t *root = json_load_file(path, 0, &jerr);
		if (!root)
			SKIP("cannot read '%s': %s", jsons[i].file, jerr.text);
		json_t *pre = json_object_get(root, "pre_tokenizer");
		json_t *list = json_object_get(pre, "pretokenizers");
		json_t *first = json_array_get(list, 0);
		const char *rx = json_string_value(
			json_object_get(json_object_get(first, "pattern"), "Regex"));
		CHECK(rx && !strcmp(rx, pretok_named_pattern(jsons[i].name)),
		      "'%s': pre_tokenizer regex differs", jsons[i].file);
		json_decref(root);
	}
}

static void test_invalid_regex(void)
{
	pretok *p = (pretok *)1;
	int rc = pretok_new(&p, "ab(c|d");

	CHECK(rc == TITAN_EFORMAT, "rc %d", rc);
	CHECK(p == NULL, "out cleared");
	CHECK(strstr(titan_errmsg(), "invalid pre-tokenizer regex at offset 6: "),
	      "message '%s'", titan_errmsg());
	rc = pretok_new(&p, "[\\p{Bogus}]");
	CHECK(rc == TITAN_EFORMAT && strstr(titan_errmsg(), "at offset"), "'%s'",
	      titan_errmsg());
	rc = pretok_new(&p, "a\xff");
	CHECK(rc == TITAN_EFORMAT, "invalid UTF-8 in the pattern: rc %d", rc);
}

/* Pieces of text under pattern kind (or a regex), joined with '|'. */
static bool split_is(const char *regex, const char *text, const char *want)
{
	pretok *p;
	titan_u32s e = { 0 };
	char got[1024];
	size_t pos = 0, k = 0, n = strlen(text);
	bool tiles = false, ok;

	if (pretok_new(&p, regex))
		return false;
	if (split(p, (const uint8_t *)text, n, &e, &tiles) == 0) {
		for (size_t i = 0; i < e.n && k + 2 < sizeof got; i++) {
			if (i)
				got[k++] = '|';
			for (; pos < e.v[i] && k + 1 < sizeof got; pos++)
				got[k++] = text[pos];
		}
	}
	got[k] = 0;
	ok = tiles && !strcmp(got, want);
	if (!ok)
		printf("#   %s on \"%s\": got \"%s\" want \"%s\"\n", pretok_kind(p),
		       text, got, want);
	pretok_free(p);
	u32s_free(&e);
	return ok;
}

static void test_expected_splits(void)
{
	static const struct {
		const char *kind, *text, *want;
	} cases[] = {
		{ "gpt2", "Hello world's  \n\n  x", "Hello| world|'s|  \n\n | x" },
		{ "cl100k", "Hello world's  \n\n  x", "Hello| world|'s|  \n\n| | x" },
		{ "o200k", "Hello world's  \n\n  x", "Hello| world's|  \n\n| | x" },
		{ "gpt2", "DON'T 12345", "DON|'|T| 12345" },
		{ "cl100k", "DON'T 12345", "DON|'T| |123|45" },
		{ "o200k", "DON'T 12345", "DON'T| |123|45" },
		{ "o200k", "HELLOworld helloWORLD", "HELLOworld| hello|WORLD" },
		{ "gpt2", "x'\xc5\xbf", "x|'|\xc5\xbf" },
		{ "cl100k", "x'\xc5\xbf", "x|'\xc5\xbf" },
		{ "o200k", "x'\xc5\xbf", "x'\xc5\xbf" },
		{ "gpt2", "a\xc2\x85" "b", "a|\xc2\x85|b" },
		{ "cl100k", "a\xc2\x85" "b", "a|\xc2\x85" "b" },
		{ "cl100k", "hi!!\n\nthere", "hi|!!\n\n|there" },
		{ "o200k", "a/b\n/\n", "a|/b|\n|/\n" },
		{ "gpt2", "x  \na", "x|  |\n|a" },
		{ "gpt2", "  ", "  " },
		{ "cl100k", "'sup 'LL", "'s|up| '|LL" },
		{ "cl100k", "\t\tfoo", "\t|\tfoo" },
		{ "o200k", "\xe0\xb8\x81\xe0\xb8\xb1!", "\xe0\xb8\x81\xe0\xb8\xb1|!" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char wrapped[1024];
		const char *pat = pretok_named_pattern(cases[i].kind);
		snprintf(wrapped, sizeof wrapped, "(?:%s)", pat);
		CHECK(split_is(pat, cases[i].text, cases[i].want), "case %zu fast", i);
		CHECK(split_is(wrapped, cases[i].text, cases[i].want), "case %zu pcre2", i);
	}
}

static void test_regex_path(void)
{
	/* U+0085 is \s, as in Rust regex and Oniguruma */
	CHECK(split_is("\\s+", "a\xc2\x85 b", "a|\xc2\x85 |b"), "\\s");
	CHECK(split_is("[\\s]+", "a\xc2\x85 b", "a|\xc2\x85 |b"), "[\\s]");
	CHECK(split_is("\\S+", "a\xc2\x85" "b", "a|\xc2\x85|b"), "\\S");
	CHECK(split_is("[^\\s]+", "a\xc2\x85" "b", "a|\xc2\x85|b"), "[^\\s]");
	CHECK(split_is("[]\\s]+", "a] \xc2\x85" "b", "a|] \xc2\x85|b"), "[]...]");
	CHECK(split_is("\\Q\\s\\E", "x\\sy", "x|\\s|y"), "\\Q...\\E stays literal");
	CHECK(split_is("[[:alpha:]]+", "ab1", "ab|1"), "posix class");
	/* gaps are pieces; empty matches advance */
	CHECK(split_is("b+", "abbcb", "a|bb|c|b"), "gaps");
	CHECK(split_is("x*", "abxxc", "a|b|xx|c"), "empty matches");
	/* after an empty match the search goes on one character later */
	CHECK(split_is("(?=b)|b", "abab", "a|ba|b"), "empty match hides a longer one");
	CHECK(split_is("\\s", "a\xe1\xa0\x8e" "b", "a\xe1\xa0\x8e" "b"),
	      "U+180E is not White_Space");
	CHECK(split_is("z", "abc", "abc"), "no match");
	CHECK(split_is("z", "", ""), "empty input");
	/* invalid UTF-8 never matches and never crashes */
	CHECK(split_is("\\p{L}+", "ab\xff\xfe" "cd\xc3", "ab|\xff\xfe|cd|\xc3"), "invalid");

	pretok *p;
	REQUIRE(pretok_new(&p, "\\w+") == 0, "%s", titan_errmsg());
	CHECK(!strcmp(pretok_kind(p), "regex") && !pretok_splittable(p), "regex kind");
	pretok_free(p);

	/* a long whitespace run backtracked by (?!\S) does not overflow */
	size_t n = 1 << 20;
	uint8_t *s = malloc(n);
	REQUIRE(s, "malloc");
	memset(s, ' ', n);
	s[n - 1] = 'x';
	titan_u32s e = { 0 };
	bool tiles;
	REQUIRE(pretok_new(&p, "(?:\\s+(?!\\S)|\\s+|x)") == 0, "%s", titan_errmsg());
	CHECK(split(p, s, n, &e, &tiles) == 0 && tiles, "%s", titan_errmsg());
	CHECK(e.n == 3 && e.v[0] == n - 2, "pieces %zu", e.n);
	pretok_free(p);
	u32s_free(&e);
	free(s);
}

/* ---- differential: fast paths against PCRE2 ---- */

static void test_tricky_vectors(void)
{
	static const char *const files[] = {
		"tokvectors/gpt2.tricky.jsonl", "tokvectors/cl100k_base.tricky.jsonl",
		"tokvectors/llama3.tricky.jsonl", "tokvectors/o200k_base.tricky.jsonl",
	};
	struct pair pr[3];
	long texts = 0;

	if (!check_data_dir())
		SKIP("TITAN_DATA not set");
	for (int k = 0; k < 3; k++)
		REQUIRE(pair_open(&pr[k], kinds[k]) == 0, "%s", titan_errmsg());
	for (size_t f = 0; f < ARRAY_SIZE(files); f++) {
		size_t n;
		char *buf = data_file(files[f], &n), *save = NULL;
		if (!buf) {
			for (int k = 0; k < 3; k++)
				pair_close(&pr[k]);
			SKIP("cannot read '%s'", files[f]);
		}
		int lineno = 0;
		for (char *line = strtok_r(buf, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save)) {
			json_error_t jerr;
			json_t *o = json_loads(line, JSON_ALLOW_NUL, &jerr);
			lineno++;
			CHECK(o, "%s:%d: %s", files[f], lineno, jerr.text);
			if (!o)
				continue;
			json_t *t = json_object_get(o, "text");
			const uint8_t *s = (const uint8_t *)json_string_value(t);
			size_t len = json_string_length(t);
			char where[256];
			snprintf(where, sizeof where, "%s:%d", files[f], lineno);
			for (int k = 0; k < 3; k++)
				CHECK(pair_same(&pr[k], s, len, where), "%s", where);
			texts++;
			json_decref(o);
		}
		free(buf);
	}
	printf("# tricky vectors: %ld texts x 3 patterns agree with pcre2\n", texts);
	CHECK(texts >= 400, "only %ld texts", texts);
	for (int k = 0; k < 3; k++)
		pair_close(&pr[k]);
}

static void test_corpora(void)
{
	static const char *const files[] = { "corpus/kjv.txt", "corpus/tinyshakespeare.txt" };

	if (!check_data_dir())
		SKIP("TITAN_DATA not set");
	for (int k = 0; k < 3; k++) {
		struct pair pr;
		REQUIRE(pair_open(&pr, kinds[k]) == 0, "%s", titan_errmsg());
		for (size_t f = 0; f < ARRAY_SIZE(files); f++) {
			size_t n, lines = 0;
			char *buf = data_file(files[f], &n);
			if (!buf) {
				pair_close(&pr);
				SKIP("cannot read '%s'", files[f]);
			}
			CHECK(pair_same(&pr, (uint8_t *)buf, n, files[f]), "%s whole", files[f]);
			for (size_t a = 0, b; a < n; a = b + 1) {
				char where[256];
				for (b = a; b < n && buf[b] != '\n'; b++)
					;
				snprintf(where, sizeof where, "%s:%zu", files[f], ++lines);
				/* each line with its newline */
				if (!pair_same(&pr, (uint8_t *)buf + a, TITAN_MIN(b + 1, n) - a, where))
					CHECK(0, "%s", where);
			}
			free(buf);
		}
		printf("# %s: %ld corpus texts agree with pcre2\n", kinds[k], pr.compared);
		pair_close(&pr);
	}
}

static const uint32_t tricky_cps[] = {
	0x17f, 0x85, 0xa0, 0x2028, 0x2029, 0x3000, 0x200b, 0xfeff, 0x301, 0x300,
	0x2b0, 0x4e00, 0x1c5, 0x660, 0x2160, 0xb2, 0x1f600, 0x1f44d, 0x1f3fd,
	0x200d, 0x1680, 0x2000, 0x202f, 0x205f, 0x0e01, 0x0e31, 0x0903, 0x20dd,
	0xe9, 0xc9, 0x3b1, 0x391, 0x10400, 0x10428, 0x1d7ce, 0xff21, 0x2f800,
	0x1c, 0x0, 0x7f, 0x9f, 0xad, 0xe000, 0xfffd, 0xffff, 0x212a, 0x1e9e,
	0xdf, 0x130, 0x131, 0x3c2, 0x1f1fa, 0xe0041, 0x0b, 0x0c, 0x2c6, 0xaa,
};
static const char *const tricky_frags[] = {
	"'s", "'S", "'ll", "'LL", "'lL", "'Re", "'rE", "'ve", "'VE", "'d", "'D",
	"'m", "'M", "'t", "'T", "'\xc5\xbf", "'", "\r\n", "  ", "\n\n", "123",
	"https://a/b", "//", "\r\r",
};

/* A random string of awkward pieces, valid UTF-8 of code points both
 * tables agree on. */
static size_t random_text(uint64_t *st, uint8_t *out, size_t cap)
{
	static const char ascii[] = "aZ9 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\t\r\nsStTmdlLrRveE";
	size_t n = 0, count = rng_next(st) % 24;

	for (size_t i = 0; i < count && n + 16 < cap; i++) {
		uint64_t r = rng_next(st);
		uint32_t cp;
		switch (r % 8) {
		case 0: case 1: /* ASCII */
			out[n++] = (uint8_t)ascii[(r >> 8) % (sizeof ascii - 1)];
			break;
		case 2: /* a letter or digit of any ASCII kind */
			cp = (uint32_t)((r >> 8) % 95) + 0x20;
			out[n++] = (uint8_t)cp;
			break;
		case 3: case 4:
			n += put_utf8(out + n, tricky_cps[(r >> 8) % ARRAY_SIZE(tricky_cps)]);
			break;
		case 5: {
			const char *f = tricky_frags[(r >> 8) % ARRAY_SIZE(tricky_frags)];
			memcpy(out + n, f, strlen(f));
			n += strlen(f);
			break;
		}
		case 6: /* anywhere in the BMP */
			cp = (uint32_t)((r >> 8) % 0x10000);
			if ((cp < 0xd800 || cp > 0xdfff) && agrees(cp))
				n += put_utf8(out + n, cp);
			break;
		default: /* anywhere */
			cp = (uint32_t)((r >> 8) % 0x110000);
			if ((cp < 0xd800 || cp > 0xdfff) && agrees(cp))
				n += put_utf8(out + n, cp);
			break;
		}
	}
	return n;
}

static void test_random_strings(void)
{
	enum { COUNT = 250000 };
	struct pair pr[3];
	uint64_t st = 20261127;
	uint8_t buf[512];

	if (!agree_ready)
		SKIP("table comparison did not run");
	for (int k = 0; k < 3; k++)
		REQUIRE(pair_open(&pr[k], kinds[k]) == 0, "%s", titan_errmsg());
	for (long i = 0; i < COUNT; i++) {
		size_t n = random_text(&st, buf, sizeof buf);
		char where[64];
		snprintf(where, sizeof where, "random string %ld", i);
		for (int k = 0; k < 3; k++)
			pair_same(&pr[k], buf, n, where);
	}
	for (int k = 0; k < 3; k++) {
		printf("# %s: %ld random strings, %ld differ from pcre2\n", kinds[k],
		       pr[k].compared, pr[k].mismatches);
		CHECK(pr[k].mismatches == 0, "%s: %ld mismatches", kinds[k], pr[k].mismatches);
		pair_close(&pr[k]);
	}
}

/* Random bytes, mostly invalid UTF-8: every path still tiles. */
static void test_tiling_random_bytes(void)
{
	static const uint8_t alphabet[] = { 'a', 'Z', '1', ' ', '\n', '\r', '\'', 's',
					    '!', 0x80, 0xbf, 0xc2, 0x85, 0xc5, 0xe0, 0xe3,
					    0xed, 0xf0, 0xf4, 0xff, 0xcc, 0x81 };
	pretok *p[4];
	uint64_t st = 7;
	uint8_t buf[64];
	titan_u32s e = { 0 };
	long bad = 0;

	for (int k = 0; k < 3; k++)
		REQUIRE(pretok_new(&p[k], pretok_named_pattern(kinds[k])) == 0, "new");
	char wrapped[1024];
	snprintf(wrapped, sizeof wrapped, "(?:%s)", pretok_named_pattern("o200k"));
	REQUIRE(pretok_new(&p[3], wrapped) == 0, "%s", titan_errmsg());
	for (int i = 0; i < 100000; i++) {
		size_t n = rng_next(&st) % sizeof buf;
		for (size_t j = 0; j < n; j++) {
			uint64_t r = rng_next(&st);
			buf[j] = r & 1 ? (uint8_t)(r >> 8) : alphabet[(r >> 8) % sizeof alphabet];
		}
		for (int k = 0; k < 4; k++) {
			bool tiles;
			if (split(p[k], buf, n, &e, &tiles) || !tiles)
				bad++;
		}
	}
	CHECK(bad == 0, "%ld splits do not tile", bad);
	for (int k = 0; k < 4; k++)
		pretok_free(p[k]);
	u32s_free(&e);
}

/* ---- cutting after a '\n' ---- */

/* Pieces of s equal the pieces of s[0..cut) followed by those of s[cut..n). */
static bool cut_holds(const pretok *p, const uint8_t *s, size_t n, size_t cut,
		      titan_u32s *whole, titan_u32s *part)
{
	bool tiles;
	size_t i = 0;

	if (split(p, s, n, whole, &tiles))
		return false;
	if (split(p, s, cut, part, &tiles))
		return false;
	for (size_t k = 0; k < part->n; k++, i++)
		if (i >= whole->n || whole->v[i] != part->v[k])
			return false;
	if (split(p, s + cut, n - cut, part, &tiles))
		return false;
	for (size_t k = 0; k < part->n; k++, i++)
		if (i >= whole->n || whole->v[i] != part->v[k] + cut)
			return false;
	return i == whole->n;
}

static void test_splittable(void)
{
	titan_u32s w = { 0 }, q = { 0 };
	uint64_t st = 99;
	uint8_t buf[600];

	for (int k = 0; k < 3; k++) {
		pretok *p;
		long cuts = 0, broken = 0, allowed = 0, allowed_broken = 0;
		REQUIRE(pretok_new(&p, pretok_named_pattern(kinds[k])) == 0, "new");
		CHECK(pretok_splittable(p) == (k != 0), "%s splittable", kinds[k]);
		long blank_cuts = 0;
		for (int i = 0; i < 100000; i++) {
			size_t n = random_text(&st, buf, 256);
			/* text, maybe a non-space, '\n', maybe blanks, a letter
			 * or other printable byte, text */
			if (i & 1)
				buf[n++] = (uint8_t)".x)"[i % 3];
			buf[n++] = '\n';
			for (int b = 0; b < (i >> 1) % 3; b++)
				buf[n++] = (uint8_t)" \t"[(i >> 2) & 1];
			buf[n++] = (uint8_t)("aZq(7"[i % 5]);
			n += random_text(&st, buf + n, 256);
			for (size_t c = 1; c < n; c++) {
				bool can = pretok_can_cut(p, buf, n, c);
				bool nl_letter = buf[c - 1] == '\n' &&
						 (buf[c] | 0x20) >= 'a' && (buf[c] | 0x20) <= 'z';
				bool nl_blank = buf[c - 1] == '\n' && (buf[c] == ' ' || buf[c] == '\t');
				if (!nl_letter && !nl_blank && !can)
					continue;
				bool holds = cut_holds(p, buf, n, c, &w, &q);
				CHECK(nl_letter || nl_blank || !can,
				      "can_cut away from '\\n' + letter or blank");
				CHECK(!(k == 0 && nl_blank && can), "gpt2 cut before a blank");
				if (nl_letter) {
					cuts++;
					broken += !holds;
				}
				blank_cuts += nl_blank && can;
				allowed += can && nl_letter;
				if (can && !holds && allowed_broken++ < 3)
					show(kinds[k], buf, n, &w);
			}
		}
		printf("# %s: %ld cuts at '\\n' + letter, %ld change the pieces; "
		       "%ld allowed by pretok_can_cut, and %ld before blanks; %ld allowed "
		       "change the pieces\n",
		       kinds[k], cuts, broken, allowed, blank_cuts, allowed_broken);
		CHECK(allowed_broken == 0, "%s: %ld allowed cuts change the pieces",
		      kinds[k], allowed_broken);
		CHECK(allowed > cuts / 4, "%s: only %ld of %ld cuts allowed", kinds[k],
		      allowed, cuts);
		if (k != 0)
			CHECK(broken == 0 && allowed == cuts && blank_cuts > 10000, "%s", kinds[k]);
		pretok_free(p);
	}
	pretok *re;
	REQUIRE(pretok_new(&re, "\\w+") == 0, "new");
	CHECK(!pretok_can_cut(re, (const uint8_t *)"a\nb", 3, 2), "regex never cuts");
	pretok_free(re);
	u32s_free(&w);
	u32s_free(&q);
}

/* ---- throughput ---- */

/* This thread's CPU time: steadier than the wall clock on a busy machine. */
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_throughput(void)
{
	size_t n1, n2;
	char *a = data_file("corpus/kjv.txt", &n1);
	char *b = data_file("corpus/tinyshakespeare.txt", &n2);

	if (!a || !b) {
		free(a);
		free(b);
		SKIP("corpora not found (TITAN_DATA)");
	}
	uint8_t *s = malloc(n1 + n2);
	REQUIRE(s, "malloc");
	memcpy(s, a, n1);
	memcpy(s + n1, b, n2);
	free(a);
	free(b);
	for (int k = 0; k < 4; k++) {
		char wrapped[1024];
		const char *pat = pretok_named_pattern(kinds[k < 3 ? k : 1]);
		pretok *p;
		snprintf(wrapped, sizeof wrapped, "(?:%s)", pat);
		REQUIRE(pretok_new(&p, k < 3 ? pat : wrapped) == 0, "new");
		double best = 1e30;
		size_t pieces = 0;
		for (int rep = 0; rep < (k < 3 ? 5 : 1); rep++) {
			pretok_iter it;
			size_t x, y;
			double t0 = now();
			pieces = 0;
			pretok_iter_init(&it, p, s, n1 + n2);
			while (pretok_iter_next(&it, &x, &y) > 0)
				pieces++;
			pretok_iter_fini(&it);
			best = TITAN_MIN(best, now() - t0);
		}
		printf("# %s %s path: %.0f MB/s (%zu pieces, %.1f MB, CPU time)\n",
		       kinds[k < 3 ? k : 1], k < 3 ? "fast" : "pcre2",
		       (n1 + n2) / best / 1e6, pieces, (n1 + n2) / 1e6);
		pretok_free(p);
	}
	free(s);
}

int main(void)
{
	RUN(test_unicode_classes);
	RUN(test_utf8_decode);
	RUN(test_tables_vs_pcre2);
	RUN(test_named_patterns);
	RUN(test_invalid_regex);
	RUN(test_expected_splits);
	RUN(test_regex_path);
	RUN(test_tricky_vectors);
	RUN(test_corpora);
	RUN(test_random_strings);
	RUN(test_tiling_random_bytes);
	RUN(test_splittable);
	RUN(test_throughput);
	return check_done();
}
