/* pretok.c - pre-tokenization (see pretok.h).
 *
 * Any pattern runs through PCRE2; the three patterns every tokenizer we read
 * uses (GPT-2, cl100k/Llama 3, o200k) also have hand-written matchers that
 * give the same pieces three to four times faster than PCRE2's JIT.  Each
 * matcher takes a start position and returns where the regex's match from
 * there ends, trying the alternatives in the regex's order and backtracking
 * the way a leftmost-first engine does.  Every character starts a match of
 * these patterns, so the fast paths have no gaps: a piece starts where the
 * last one ended.
 *
 * Invalid UTF-8 bytes are class 0 to the fast paths (like punctuation); to
 * PCRE2 (PCRE2_MATCH_INVALID_UTF) they match nothing and fall into gaps.
 * Either way the pieces tile the input. */
#include "core/base.h"
#include "core/buf.h"
#include "tok/pretok.h"
#include "tok/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

static const char gpt2_pattern[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
	"|\\s+(?!\\S)|\\s+";

static const char cl100k_pattern[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
	"|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
	"|\\s+(?!\\S)|\\s+";

static const char o200k_pattern[] =
	"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*"
	"[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
	"|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
	"[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
	"|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+"
	"|\\s+(?!\\S)|\\s+";

enum pretok_kind { KIND_REGEX, KIND_GPT2, KIND_CL100K, KIND_O200K };

struct pretok {
	char *pattern;
	enum pretok_kind kind;
	pcre2_code *re; /* NULL for the fast paths */
};

const char *pretok_named_pattern(const char *name)
{
	static const struct {
		const char *name, *pattern;
	} names[] = {
		{ "gpt2", gpt2_pattern },
		{ "r50k", gpt2_pattern },
		{ "r50k_base", gpt2_pattern },
		{ "cl100k", cl100k_pattern },
		{ "cl100k_base", cl100k_pattern },
		{ "llama3", cl100k_pattern },
		{ "o200k", o200k_pattern },
		{ "o200k_base", o200k_pattern },
	};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (!strcmp(name, names[i].name))
			return names[i].pattern;
	return NULL;
}

/* ---- the regex path ---- */

static int put(titan_bytes *b, const char *s, size_t n)
{
	return bytes_append(b, s, n);
}

/* Copy an escape sequence starting at src[i] == '\\' that needs no
 * rewriting; returns its length.  \Q...\E is copied whole and \cX is three
 * bytes, so neither is mistaken for a class bracket. */
static size_t escape_len(const char *src, size_t i)
{
	size_t n = strlen(src + i);

	if (n < 2)
		return n;
	if (src[i + 1] == 'c')
		return TITAN_MIN(n, (size_t)3);
	if (src[i + 1] == 'Q') {
		const char *e = strstr(src + i + 2, "\\E");
		return e ? (size_t)(e - (src + i)) + 2 : n;
	}
	return 2;
}

/* The White_Space property (the same in Unicode 6.3 through 15), as the
 * inside of a character class. */
#define WHITE_SPACE "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}" \
	"\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

/* Rust regex and Oniguruma read \s as Unicode White_Space.  PCRE2's \s
 * (with PCRE2_UCP) differs: it lacks U+0085 NEXT LINE and has U+180E
 * MONGOLIAN VOWEL SEPARATOR, a space before Unicode 6.3.  So spell the
 * property out: \s becomes [WHITE_SPACE] outside a class and WHITE_SPACE
 * inside one, \S becomes [^WHITE_SPACE].  (\S inside a class is left
 * alone: PCRE2 classes cannot subtract.) */
static int rewrite_spaces(const char *src, titan_bytes *out)
{
	static const char ws[] = WHITE_SPACE;
	static const char ws_class[] = "[" WHITE_SPACE "]";
	static const char non_ws_class[] = "[^" WHITE_SPACE "]";
	bool in_class = false;
	size_t i = 0;
	int rc = 0;

	while (src[i] && !rc) {
		char c = src[i];

		if (c == '\\' && (src[i + 1] == 's' || src[i + 1] == 'S')) {
			if (in_class && src[i + 1] == 's')
				rc = put(out, ws, strlen(ws));
			else if (in_class)
				rc = put(out, "\\S", 2);
			else if (src[i + 1] == 's')
				rc = put(out, ws_class, strlen(ws_class));
			else
				rc = put(out, non_ws_class, strlen(non_ws_class));
			i += 2;
		} else if (c == '\\') {
			size_t k = escape_len(src, i);
			rc = put(out, src + i, k);
			i += k;
		} else if (!in_class && c == '[') {
			/* "[]" and "[^]" start a class holding ']' */
			size_t k = 1;
			if (src[i + k] == '^')
				k++;
			if (src[i + k] == ']')
				k++;
			rc = put(out, src + i, k);
			i += k;
			in_class = true;
		} else if (in_class && c == '[' && src[i + 1] == ':') {
			const char *e = strstr(src + i + 2, ":]");
			size_t k = e ? (size_t)(e - (src + i)) + 2 : 1;
			rc = put(out, src + i, k);
			i += k;
		} else {
			if (in_class && c == ']')
				in_class = false;
			rc = put(out, src + i, 1);
			i++;
		}
	}
	if (!rc)
		rc = put(out, "", 1);
	return rc;
}

static int compile_error(int code, size_t offset)
{
	PCRE2_UCHAR msg[256];

	if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
		snprintf((char *)msg, sizeof msg, "error %d", code);
	return titan_err(TITAN_EFORMAT, "invalid pre-tokenizer regex at offset %zu: %s",
			 offset, (char *)msg);
}

static int compile_regex(pcre2_code **out, const char *regex)
{
	const uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
	titan_bytes src = { 0 };
	PCRE2_SIZE off;
	int code, rc;
	pcre2_code *re;

	/* Compile the source as given first, so that an error's offset points
	 * into what the user wrote rather than into the rewrite. */
	re = pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, opts, &code,
			   &off, NULL);
	if (!re)
		return compile_error(code, off);
	pcre2_code_free(re);

	rc = rewrite_spaces(regex, &src);
	if (rc)
		return rc;
	re = pcre2_compile(src.v, PCRE2_ZERO_TERMINATED, opts, &code, &off, NULL);
	bytes_free(&src);
	if (!re)
		return compile_error(code, off);
	/* Without JIT (not built in, or no executable memory) the interpreter
	 * gives the same matches, only slower. */
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	*out = re;
	return 0;
}

int pretok_new(pretok **out, const char *regex)
{
	pretok *p;
	int rc;

	*out = NULL;
	p = calloc(1, sizeof *p);
	if (!p)
		return titan_err_nomem();
	p->pattern = strdup(regex);
	if (!p->pattern) {
		free(p);
		return titan_err_nomem();
	}
	if (!strcmp(regex, gpt2_pattern)) {
		p->kind = KIND_GPT2;
	} else if (!strcmp(regex, cl100k_pattern)) {
		p->kind = KIND_CL100K;
	} else if (!strcmp(regex, o200k_pattern)) {
		p->kind = KIND_O200K;
	} else {
		p->kind = KIND_REGEX;
		rc = compile_regex(&p->re, regex);
		if (rc) {
			pretok_free(p);
			return rc;
		}
	}
	*out = p;
	return 0;
}

void pretok_free(pretok *p)
{
	if (!p)
		return;
	pcre2_code_free(p->re);
	free(p->pattern);
	free(p);
}

const char *pretok_pattern(const pretok *p)
{
	return p->pattern;
}

const char *pretok_kind(const pretok *p)
{
	switch (p->kind) {
	case KIND_GPT2:
		return "gpt2";
	case KIND_CL100K:
		return "cl100k";
	case KIND_O200K:
		return "o200k";
	default:
		return "regex";
	}
}

/* The next match at or after from: returns 1 and sets [*ms, *me), 0 when
 * there is none, < 0 on a matching error. */
static int regex_search(pretok_iter *it, size_t from, size_t *ms, size_t *me)
{
	pcre2_match_data *md = it->md;
	PCRE2_SIZE *ov;
	int rc;

	rc = pcre2_match(it->p->re, it->s, it->n, from, 0, md, NULL);
	if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
		rc = pcre2_match(it->p->re, it->s, it->n, from, PCRE2_NO_JIT, md, NULL);
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (rc < 0) {
		PCRE2_UCHAR msg[256];
		if (pcre2_get_error_message(rc, msg, sizeof msg) < 0)
			snprintf((char *)msg, sizeof msg, "error %d", rc);
		return titan_err(TITAN_EFORMAT, "pre-tokenizer regex failed at offset %zu: %s",
				 from, (char *)msg);
	}
	ov = pcre2_get_ovector_pointer(md);
	*ms = TITAN_MAX(ov[0], from);
	*me = TITAN_MAX(ov[1], *ms);
	return 1;
}

/* Pieces are cut at the start and the end of every match, as in Hugging
 * Face's Split (Isolated) over Oniguruma: an empty match cuts a gap in two
 * and the search goes on one character after it.  State: a match found
 * after a gap waits in [gap_end, match_end); after an empty match the next
 * search starts at gap_end > pos. */
static int regex_next(pretok_iter *it, size_t *start, size_t *end)
{
	size_t from, ms, me;
	int rc;

	if (it->match_end > it->pos) {
		*start = it->gap_end;
		*end = it->match_end;
		it->pos = it->match_end;
		return 1;
	}
	from = TITAN_MAX(it->pos, it->gap_end);
	while (it->pos < it->n) {
		rc = from <= it->n ? regex_search(it, from, &ms, &me) : 0;
		if (rc < 0)
			return rc;
		if (rc == 0)
			ms = me = it->n;
		*start = it->pos;
		if (ms == me) {
			uint32_t cp;
			from = ms < it->n ? ms + utf8_decode(it->s + ms, it->n - ms, &cp)
					  : it->n + 1;
			if (ms == it->pos)
				continue;
			*end = ms;
			it->pos = ms;
			it->gap_end = from;
			return 1;
		}
		if (ms > it->pos) {
			*end = ms;
			it->gap_end = ms;
			it->match_end = me;
		} else {
			*end = me;
		}
		it->pos = *end;
		return 1;
	}
	return 0;
}

/* ---- the fast paths ---- */

enum {
	C_CRLF = 1 << 6,     /* '\r' or '\n' */
	C_NONASCII = 1 << 7, /* a byte >= 0x80: decode and ask uc_class */
	C_LETTER_UP = UC_L | UC_UPPERISH,
	C_LETTER_LO = UC_L | UC_LOWERISH,
};

static const uint8_t byte_class[256] = {
	['\t'] = UC_WS, ['\n'] = UC_WS | C_CRLF, ['\v'] = UC_WS,
	['\f'] = UC_WS, ['\r'] = UC_WS | C_CRLF, [' '] = UC_WS,
	['0' ... '9'] = UC_N,
	['A' ... 'Z'] = C_LETTER_UP,
	['a' ... 'z'] = C_LETTER_LO,
	[0x80 ... 0xff] = C_NONASCII,
};

/* Class bits and length of the character at s[i], i < n. */
static inline uint8_t char_at(const uint8_t *s, size_t n, size_t i, size_t *len)
{
	uint8_t c = byte_class[s[i]];
	uint32_t cp;

	if (!(c & C_NONASCII)) {
		*len = 1;
		return c;
	}
	*len = utf8_decode(s + i, n - i, &cp);
	return uc_class(cp);
}

/* End of the run of characters from i that have some bit of mask. */
static inline size_t run_any(const uint8_t *s, size_t n, size_t i, uint8_t mask)
{
	size_t len;

	while (i < n && (char_at(s, n, i, &len) & mask))
		i += len;
	return i;
}

/* End of the run of characters from i that have no bit of mask. */
static inline size_t run_none(const uint8_t *s, size_t n, size_t i, uint8_t mask)
{
	size_t len;

	while (i < n && !(char_at(s, n, i, &len) & mask))
		i += len;
	return i;
}

/* \p{N}{1,3} at i (a number there). */
static inline size_t digits3(const uint8_t *s, size_t n, size_t i)
{
	size_t len;

	for (int k = 0; k < 3 && i < n && (char_at(s, n, i, &len) & UC_N); k++)
		i += len;
	return i;
}

static inline uint8_t fold_ascii(uint8_t c, bool caseless)
{
	return caseless && c >= 'A' && c <= 'Z' ? c | 0x20 : c;
}

/* Length of 's|'t|'re|'ve|'m|'ll|'d at s[i], 0 if none.  Caseless, as in
 * (?i:...), simple case folding also maps U+017F LATIN SMALL LETTER LONG S
 * to 's'. */
static size_t contraction(const uint8_t *s, size_t n, size_t i, bool caseless)
{
	if (i + 1 >= n || s[i] != '\'')
		return 0;
	uint8_t a = fold_ascii(s[i + 1], caseless);
	uint8_t b = i + 2 < n ? fold_ascii(s[i + 2], caseless) : 0;

	switch (a) {
	case 's': case 't': case 'm': case 'd':
		return 2;
	case 'r': case 'v':
		return b == 'e' ? 3 : 0;
	case 'l':
		return b == 'l' ? 3 : 0;
	case 0xc5:
		return caseless && i + 2 < n && s[i + 2] == 0xbf ? 3 : 0;
	default:
		return 0;
	}
}

/* \s+(?!\S)|\s+ at i (whitespace there): the run, less its last character
 * when a non-space follows and the run has more than one. */
static size_t space_run(const uint8_t *s, size_t n, size_t i)
{
	size_t j = i, last = i, len;

	while (j < n && (char_at(s, n, j, &len) & UC_WS)) {
		last = j;
		j += len;
	}
	if (j == n || last == i)
		return j;
	return last;
}

/* \s*[\r\n]+|\s+(?!\S)|\s+ at i (whitespace there).  \s* takes the whole
 * run and backs off to its last '\r' or '\n', so the first alternative ends
 * just after that one when the run has any. */
static size_t space_run_nl(const uint8_t *s, size_t n, size_t i)
{
	size_t j = i, last = i, nl_end = 0, len;
	uint8_t c;

	while (j < n && ((c = char_at(s, n, j, &len)) & UC_WS)) {
		last = j;
		j += len;
		if (c & C_CRLF)
			nl_end = j;
	}
	if (nl_end)
		return nl_end;
	if (j == n || last == i)
		return j;
	return last;
}

#define LNW (UC_L | UC_N | UC_WS)

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t gpt2_next(const uint8_t *s, size_t n, size_t i)
{
	size_t len, k;
	uint8_t c = char_at(s, n, i, &len);

	if (s[i] == '\'' && (k = contraction(s, n, i, false)))
		return i + k;
	if (s[i] == ' ' && i + 1 < n) {
		uint8_t next = char_at(s, n, i + 1, &len);
		if (!(next & UC_WS)) {
			i++;
			c = next;
		}
	}
	if (c & UC_L)
		return run_any(s, n, i, UC_L);
	if (c & UC_N)
		return run_any(s, n, i, UC_N);
	if (!(c & UC_WS))
		return run_none(s, n, i, LNW);
	return space_run(s, n, i);
}

/* ' ?[^\s\p{L}\p{N}]+' then [\r\n]* (cl100k) or [\r\n/]* (o200k) at i,
 * where c is the class of s[i]; 0 if it does not match there. */
static size_t punct_run(const uint8_t *s, size_t n, size_t i, uint8_t c, bool slash)
{
	size_t len;

	if (s[i] == ' ' && i + 1 < n) {
		uint8_t next = char_at(s, n, i + 1, &len);
		if (!(next & LNW)) {
			i++;
			c = next;
		}
	}
	if (c & LNW)
		return 0;
	i = run_none(s, n, i, LNW);
	while (i < n && (s[i] == '\r' || s[i] == '\n' || (slash && s[i] == '/')))
		i++;
	return i;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t cl100k_next(const uint8_t *s, size_t n, size_t i)
{
	size_t len, len2, k;
	uint8_t c = char_at(s, n, i, &len);

	if (c & UC_L)
		return run_any(s, n, i + len, UC_L);
	if (s[i] == '\'' && (k = contraction(s, n, i, true)))
		return i + k;
	if (!(c & (UC_N | C_CRLF)) && i + len < n &&
	    (char_at(s, n, i + len, &len2) & UC_L))
		return run_any(s, n, i + len + len2, UC_L);
	if (c & UC_N)
		return digits3(s, n, i);
	if ((k = punct_run(s, n, i, c, false)))
		return k;
	return space_run_nl(s, n, i);
}

/* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+ from q, then
 * the optional contraction; 0 if it does not match.  When the upper run is
 * not followed by a lower character, the engine backs off the upper run to
 * its last character that is also lower (Lm, Lo, M) and ends just after it. */
static size_t o200k_lower_word(const uint8_t *s, size_t n, size_t q)
{
	size_t j = q, e = 0, len;
	uint8_t c = 0;

	while (j < n && ((c = char_at(s, n, j, &len)) & UC_UPPERISH)) {
		if (c & UC_LOWERISH)
			e = j + len;
		j += len;
	}
	if (j < n && (c & UC_LOWERISH))
		e = run_any(s, n, j, UC_LOWERISH);
	if (!e)
		return 0;
	return e + contraction(s, n, e, true);
}

/* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]* from q, then
 * the optional contraction; 0 if it does not match. */
static size_t o200k_upper_word(const uint8_t *s, size_t n, size_t q)
{
	size_t j = run_any(s, n, q, UC_UPPERISH);

	if (j == q)
		return 0;
	j = run_any(s, n, j, UC_LOWERISH);
	return j + contraction(s, n, j, true);
}

/* [^\r\n\p{L}\p{N}]?UPPER*LOWER+(?i:'s|...)?|[^\r\n\p{L}\p{N}]?UPPER+LOWER*(?i:'s|...)?
 * |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * The optional prefix is tried present, then absent, for each word form in
 * turn: absent matters when the prefix candidate is a mark, which is also
 * UPPER and LOWER. */
static size_t o200k_next(const uint8_t *s, size_t n, size_t i)
{
	size_t len, k;
	uint8_t c = char_at(s, n, i, &len);
	bool prefix = !(c & (UC_L | UC_N | C_CRLF)) && i + len < n;

	if (c & UC_LOWERISH && !(c & UC_UPPERISH))
		return o200k_lower_word(s, n, i);
	if (prefix && (k = o200k_lower_word(s, n, i + len)))
		return k;
	if ((k = o200k_lower_word(s, n, i)))
		return k;
	if (prefix && (k = o200k_upper_word(s, n, i + len)))
		return k;
	if ((k = o200k_upper_word(s, n, i)))
		return k;
	if (c & UC_N)
		return digits3(s, n, i);
	if ((k = punct_run(s, n, i, c, true)))
		return k;
	return space_run_nl(s, n, i);
}

/* ---- iteration ---- */

int pretok_iter_init(pretok_iter *it, const pretok *p, const uint8_t *s, size_t n)
{
	memset(it, 0, sizeof *it);
	it->p = p;
	it->s = s;
	it->n = n;
	if (p->kind == KIND_REGEX) {
		it->md = pcre2_match_data_create_from_pattern(p->re, NULL);
		if (!it->md)
			return titan_err_nomem();
	}
	return 0;
}

int pretok_iter_next(pretok_iter *it, size_t *start, size_t *end)
{
	size_t i = it->pos, e;

	switch (it->p->kind) {
	case KIND_GPT2:
		if (i >= it->n)
			return 0;
		e = gpt2_next(it->s, it->n, i);
		break;
	case KIND_CL100K:
		if (i >= it->n)
			return 0;
		e = cl100k_next(it->s, it->n, i);
		break;
	case KIND_O200K:
		if (i >= it->n)
			return 0;
		e = o200k_next(it->s, it->n, i);
		break;
	default:
		return regex_next(it, start, end);
	}
	*start = i;
	*end = e;
	it->pos = e;
	return 1;
}

void pretok_iter_fini(pretok_iter *it)
{
	pcre2_match_data_free(it->md);
	it->md = NULL;
}

/* A piece never holds both a '\n' and a following letter in any of the
 * three patterns.  A cut there also leaves the pieces on each side as they
 * were, except in GPT-2, where \s+(?!\S) looks past the cut: "  \na" is
 * "  ", "\n", "a" but "  \n" alone is one piece.  A non-space before the
 * '\n' makes its run one character long, and then both readings agree. */
bool pretok_splittable(const pretok *p)
{
	return p->kind == KIND_CL100K || p->kind == KIND_O200K;
}

bool pretok_can_cut(const pretok *p, const uint8_t *s, size_t n, size_t pos)
{
	if (p->kind == KIND_REGEX || pos < 1 || pos >= n || s[pos - 1] != '\n')
		return false;
	if (byte_class[s[pos]] & UC_L)
		return p->kind != KIND_GPT2 ||
		       (pos >= 2 && !(byte_class[s[pos - 2]] & (UC_WS | C_NONASCII)));
	if (p->kind == KIND_GPT2)
		return false;
	/* cl100k and o200k: \s*[\r\n]+ and the punctuation rule's [\r\n]*
	 * end at the '\n' when blanks and then a printable ASCII byte follow
	 * it (no newline or Unicode space that could extend them), and
	 * nothing else reaches over a '\n'.  GPT-2's \s+(?!\S) would take
	 * the '\n' and the blanks together. */
	size_t i = pos;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	return i > pos && i < n && s[i] > 0x20 && s[i] < 0x7f;
}
