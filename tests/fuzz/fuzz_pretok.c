/* fuzz_pretok.c - libFuzzer target: the pre-tokenizer fast paths.
 *
 * For each of the three known patterns the fast path must tile any input
 * (invalid UTF-8 included).  When the input is valid UTF-8 made of code
 * points that PCRE2's Unicode tables class the same way as ours (they may be
 * a version older), the fast path must also give exactly the pieces PCRE2
 * gives for the same pattern.  Any failure aborts. */
#include "core/base.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/buf.h"
#include "tok/pretok.h"
#include "tok/unicode.h"

static const char *const kinds[] = { "gpt2", "cl100k", "o200k" };

static const char *const alphabet[] = {
	"a", "Z", "s", "S", "t", "T", "l", "L", "r", "e", "E", "v", "m", "d",
	"D", "x", "1", "9", " ", "  ", "\t", "\r", "\n", "\v", "\f", "'",
	"!", ".", "/", "(", "\"", "-", "\x1c", "\xc5\xbf", "\xc2\x85",
	"\xc2\xa0", "\xe2\x80\xa8", "\xe3\x80\x80", "\xe2\x80\x8b",
	"\xef\xbb\xbf", "\xcc\x81", "\xe0\xb8\xb1", "\xe0\xa4\x83",
	"\xe2\x83\x9d", "\xca\xb0", "\xe4\xb8\x80", "\xc7\x85",
	"\xd9\xa0", "\xe2\x85\xa0", "\xc2\xb2", "\xf0\x9f\x98\x80",
	"\xe2\x80\x8d", "\xe1\xa0\x8e", "\xc3\xa9", "\xc3\x89",
	"\xce\xb1", "\xce\x91", "\xf0\x90\x90\x80", "\xf0\x90\x90\xa8",
	"\xe1\x9a\x80", "\xe2\x80\x80", "\xef\xbf\xbd", "\xe2\x84\xaa",
	"\xc3\x9f",
};

struct fuzz_state {
	pretok *fast[3], *re[3];
	pcre2_code *props[6];
	pcre2_match_data *md;
	uint8_t known[0x110000 / 8], agree[0x110000 / 8];
};

static struct fuzz_state *state;

static void fail(const char *what, const char *kind)
{
	fprintf(stderr, "fuzz_pretok: %s: %s\n", kind, what);
	abort();
}

static void setup(void)
{
	static const char *const props[] = {
		"\\p{L}", "\\p{N}", "[\\p{Z}\\t-\\r\\x{85}]", "\\p{M}",
		"[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]", "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]",
	};
	char wrapped[1024];
	PCRE2_SIZE off;
	int code;

	state = calloc(1, sizeof *state);
	if (!state)
		fail("out of memory", "setup");
	for (int k = 0; k < 3; k++) {
		const char *pat = pretok_named_pattern(kinds[k]);
		/* the same regex, not recognised as a fast path */
		snprintf(wrapped, sizeof wrapped, "(?:%s)", pat);
		if (pretok_new(&state->fast[k], pat) || pretok_new(&state->re[k], wrapped))
			fail(titan_errmsg(), kinds[k]);
	}
	for (int k = 0; k < 6; k++) {
		state->props[k] = pcre2_compile((PCRE2_SPTR)props[k], PCRE2_ZERO_TERMINATED,
						PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED,
						&code, &off, NULL);
		if (!state->props[k])
			fail("cannot compile a property", props[k]);
	}
	state->md = pcre2_match_data_create(4, NULL);
	if (!state->md)
		fail("out of memory", "setup");
}

/* Our class of cp is the one PCRE2's tables give. */
static bool agrees(uint32_t cp)
{
	uint8_t bit = (uint8_t)(1 << (cp & 7)), buf[4], want = 0;
	size_t n;

	if (state->known[cp >> 3] & bit)
		return state->agree[cp >> 3] & bit;
	if (cp < 0x80) {
		buf[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		buf[0] = (uint8_t)(0xc0 | cp >> 6);
		buf[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		buf[0] = (uint8_t)(0xe0 | cp >> 12);
		buf[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		buf[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		buf[0] = (uint8_t)(0xf0 | cp >> 18);
		buf[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		buf[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		buf[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	for (int k = 0; k < 6; k++)
		if (pcre2_match(state->props[k], buf, n, 0, 0, state->md, NULL) > 0)
			want |= (uint8_t)(1 << k);
	state->known[cp >> 3] |= bit;
	if (want == uc_class(cp))
		state->agree[cp >> 3] |= bit;
	return want == uc_class(cp);
}

static bool comparable(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		i += utf8_decode(s + i, n - i, &cp);
		if (cp == UC_INVALID || !agrees(cp))
			return false;
	}
	return true;
}

/* Piece ends of s into ends; aborts unless the pieces tile s. */
static void split(const pretok *p, const uint8_t *s, size_t n, titan_u32s *ends)
{
	pretok_iter it;
	size_t a, b, pos = 0;
	int rc;

	ends->n = 0;
	if (pretok_iter_init(&it, p, s, n))
		fail(titan_errmsg(), pretok_kind(p));
	while ((rc = pretok_iter_next(&it, &a, &b)) > 0) {
		if (a != pos || b <= a || b > n)
			fail("pieces do not tile the input", pretok_kind(p));
		pos = b;
		if (u32s_push(ends, (uint32_t)b))
			fail("out of memory", pretok_kind(p));
	}
	pretok_iter_fini(&it);
	if (rc < 0)
		fail(titan_errmsg(), pretok_kind(p));
	if (pos != n)
		fail("pieces stop short of the end", pretok_kind(p));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	titan_u32s a = { 0 }, b = { 0 };
	uint8_t *text = NULL;

	if (!state)
		setup();
	if (size > 0 && data[0] == 0xff) {
		size_t n = 0;
		text = malloc(4 * size);
		if (!text)
			fail("out of memory", "alphabet");
		for (size_t i = 1; i < size; i++) {
			const char *c = alphabet[data[i] % ARRAY_SIZE(alphabet)];
			memcpy(text + n, c, strlen(c));
			n += strlen(c);
		}
		data = text;
		size = n;
	}
	bool compare = comparable(data, size);
	for (int k = 0; k < 3; k++) {
		split(state->fast[k], data, size, &a);
		split(state->re[k], data, size, &b);
		if (compare && (a.n != b.n || (a.n && memcmp(a.v, b.v, a.n * sizeof *a.v))))
			fail("fast path and pcre2 give different pieces", kinds[k]);
	}
	u32s_free(&a);
	u32s_free(&b);
	free(text);
	return 0;
}
