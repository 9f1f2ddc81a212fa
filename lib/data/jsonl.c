/* jsonl.c - one string field out of one JSON line (see jsonl.h).
 *
 * A single pass over the line.  The objects on the field path are walked
 * member by member; every other value is skipped by a validating skipper
 * that keeps its open containers on a bit stack instead of recursing, so a
 * line nested 2048 deep costs 256 bytes of stack.  String bodies, where the
 * bytes of a corpus line are, go 16 at a time (SSE2) or 8 at a time (SWAR)
 * until a quote, a backslash, a control byte or a non-ASCII byte; a run of
 * non-ASCII text is then checked a character at a time.
 *
 * The rules are jansson's, checked against it byte for byte by
 * tests/unit/test_jsonl.c and tests/fuzz/fuzz_jsonl.c:
 *   - the line is one object or array, with ' ', '\t', '\n', '\r' around;
 *   - every value, scalars included, counts one level; more than 2048 fail;
 *   - input bytes are strict UTF-8 (no overlongs, surrogates, > U+10FFFF);
 *   - "\uD800"-"\uDBFF" must pair with a following "\uDC00"-"\uDFFF";
 *   - "\u0000" is fine in a value (JSON_ALLOW_NUL), not in a key;
 *   - an integer must fit int64_t, a real must not overflow a double;
 *   - of duplicate keys the last one counts;
 *   - one NUL byte right after a number, true, false or null is skipped
 *     (jansson loses it when it puts the byte after the token back). */
#include "core/base.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "data/jsonl.h"

#define JSONL_MAX_DEPTH 2048  /* jansson's JSON_PARSER_MAX_DEPTH */

struct scan {
	const uint8_t *p, *end;
	size_t depth;       /* containers open around p */
	uint64_t is_object[JSONL_MAX_DEPTH / 64];  /* the skipper's containers */
	jsonl_scanner *s;
	const uint8_t *text;  /* the field, once found */
	size_t len;
};

void jsonl_init(jsonl_scanner *s, const char *const *path, size_t npath)
{
	memset(s, 0, sizeof *s);
	s->path = path;
	s->npath = npath;
}

void jsonl_free(jsonl_scanner *s)
{
	bytes_free(&s->text);
	bytes_free(&s->key);
}

static inline void skip_ws(struct scan *sc)
{
	const uint8_t *p = sc->p;
	while (p < sc->end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	sc->p = p;
}

static inline bool special(uint8_t c)
{
	return c < 0x20 || c >= 0x80 || c == '"' || c == '\\';
}

/* The first byte at or after p that ends a plain run of string bytes: '"',
 * '\\', a control byte or a non-ASCII byte; end if none. */
static const uint8_t *find_special(const uint8_t *p, const uint8_t *end)
{
#ifdef __SSE2__
	const __m128i quote = _mm_set1_epi8('"');
	const __m128i bslash = _mm_set1_epi8('\\');
	const __m128i space = _mm_set1_epi8(0x20);
	while (end - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)p);
		/* A signed compare: bytes >= 0x80 are negative, so "< 0x20"
		 * catches them along with the control bytes. */
		__m128i hit = _mm_or_si128(_mm_cmplt_epi8(v, space),
					   _mm_or_si128(_mm_cmpeq_epi8(v, quote),
							_mm_cmpeq_epi8(v, bslash)));
		unsigned mask = (unsigned)_mm_movemask_epi8(hit);
		if (mask)
			return p + __builtin_ctz(mask);
		p += 16;
	}
#else
	const uint64_t ones = 0x0101010101010101ull, high = ones * 0x80;
	while (end - p >= 8) {
		uint64_t x, q, b;
		memcpy(&x, p, 8);
		q = x ^ (ones * '"');
		b = x ^ (ones * '\\');
		/* Exact "has a zero byte" and "has a byte < 0x20" tests. */
		if ((((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x) | x) & high)
			break;
		p += 8;
	}
#endif
	while (p < end && !special(*p))
		p++;
	return p;
}

/* Length of the strict UTF-8 sequence at p (p[0] >= 0x80), 0 if invalid:
 * the well-formed sequences of Unicode's table 3-7, which leave out
 * overlongs, surrogates and code points past U+10FFFF. */
static size_t utf8_seq(const uint8_t *p, const uint8_t *end)
{
	size_t avail = (size_t)(end - p);
	uint8_t c = p[0];
	if (c < 0xC2)
		return 0;
	if (c < 0xE0)
		return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
	if (c < 0xF0) {
		if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
			return 0;
		return 3;
	}
	if (c > 0xF4 || avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
	    (p[3] & 0xC0) != 0x80)
		return 0;
	if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
		return 0;
	return 4;
}

static bool hex4(const uint8_t *p, uint32_t *out)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) {
		uint8_t c = p[i];
		if (c >= '0' && c <= '9')
			c -= '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			c = (uint8_t)((c | 0x20) - 'a' + 10);
		else
			return false;
		v = v << 4 | c;
	}
	*out = v;
	return true;
}

static uint8_t *put_utf8(uint8_t *w, uint32_t cp)
{
	if (cp < 0x80) {
		*w++ = (uint8_t)cp;
	} else if (cp < 0x800) {
		*w++ = (uint8_t)(0xC0 | cp >> 6);
		*w++ = (uint8_t)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*w++ = (uint8_t)(0xE0 | cp >> 12);
		*w++ = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
		*w++ = (uint8_t)(0x80 | (cp & 0x3F));
	} else {
		*w++ = (uint8_t)(0xF0 | cp >> 18);
		*w++ = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
		*w++ = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
		*w++ = (uint8_t)(0x80 | (cp & 0x3F));
	}
	return w;
}

/* The escape after a backslash at p[-1]: its code point in *cp and the
 * bytes it took, 0 if it is invalid.  A surrogate pair is one escape. */
static size_t escape(const uint8_t *p, const uint8_t *end, uint32_t *cp)
{
	static const uint8_t simple[128] = {
		['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b',
		['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t',
	};
	if (p == end)
		return 0;
	if (*p != 'u') {
		*cp = *p < 128 ? simple[*p] : 0;
		return *cp ? 1 : 0;
	}
	uint32_t hi, lo;
	if (end - p < 5 || !hex4(p + 1, &hi))
		return 0;
	if (hi >= 0xDC00 && hi <= 0xDFFF)
		return 0;
	if (hi < 0xD800 || hi > 0xDBFF) {
		*cp = hi;
		return 5;
	}
	if (end - p < 11 || p[5] != '\\' || p[6] != 'u' || !hex4(p + 7, &lo) ||
	    lo < 0xDC00 || lo > 0xDFFF)
		return 0;
	*cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
	return 11;
}

/* The string whose opening quote is just behind sc->p; sc->p ends past its
 * closing quote.  With out, *sp and *sn are its decoded bytes: in the line
 * when it has no escape, else in out.  A key (key true) may not hold
 * "\u0000". */
static int scan_string(struct scan *sc, titan_bytes *out, bool key,
		       const uint8_t **sp, size_t *sn)
{
	const uint8_t *p = sc->p, *end = sc->end, *start = p, *run = p;
	uint8_t *w = NULL;  /* where decoded bytes go, once there is an escape */

	for (;;) {
		p = find_special(p, end);
		if (p == end)
			return JSONL_INVALID;
		if (*p == '"')
			break;
		if (*p >= 0x80) {
			/* Non-ASCII text comes in runs with spaces and
			 * punctuation between: stay on it a byte at a time
			 * until a long ASCII stretch or a special byte. */
			size_t ascii = 0;
			while (p < end && ascii < 16) {
				if (*p < 0x80) {
					if (special(*p))
						break;
					p++;
					ascii++;
					continue;
				}
				size_t k = utf8_seq(p, end);
				if (!k)
					return JSONL_INVALID;
				p += k;
				ascii = 0;
			}
			continue;
		}
		if (*p != '\\')
			return JSONL_INVALID;  /* a raw control byte */
		uint32_t cp;
		size_t k = escape(p + 1, end, &cp);
		if (!k || (key && !cp))
			return JSONL_INVALID;
		if (out) {
			if (!w) {
				/* Decoding never grows: the rest of the line
				 * is room enough. */
				out->n = 0;
				if (bytes_reserve(out, (size_t)(end - start)))
					return titan_err_nomem();
				w = out->v;
			}
			memcpy(w, run, (size_t)(p - run));
			w = put_utf8(w + (p - run), cp);
		}
		p += 1 + k;
		run = p;
	}
	if (out) {
		if (w) {
			memcpy(w, run, (size_t)(p - run));
			w += p - run;
			out->n = (size_t)(w - out->v);
			*sp = out->v;
			*sn = out->n;
		} else {
			*sp = start;
			*sn = (size_t)(p - start);
		}
	}
	sc->p = p + 1;
	return 0;
}

/* jansson reads one byte past a number or a word and puts it back; a NUL
 * put back is lost, so one NUL right after such a token is skipped. */
static inline void skip_lost_nul(struct scan *sc)
{
	if (sc->p < sc->end && !*sc->p)
		sc->p++;
}

static inline bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* A number at sc->p, by the JSON grammar and jansson's limits: an integer
 * (no '.', no exponent) is a json_int_t, and strtoll fails past int64_t; a
 * real fails when strtod overflows. */
static int scan_number(struct scan *sc)
{
	const uint8_t *p = sc->p, *end = sc->end;
	bool neg = *p == '-';
	if (neg)
		p++;
	if (p == end || !is_digit(*p))
		return JSONL_INVALID;
	const uint8_t *digits = p;
	if (*p == '0') {
		p++;
		if (p < end && is_digit(*p))
			return JSONL_INVALID;
	} else {
		while (p < end && is_digit(*p))
			p++;
	}
	size_t nint = (size_t)(p - digits);
	bool real = false, zero = *digits == '0';
	/* The power of ten of the first nonzero digit, for the overflow test. */
	int64_t lead = zero ? 0 : (int64_t)nint - 1;
	if (p < end && *p == '.') {
		real = true;
		const uint8_t *frac = ++p;
		while (p < end && is_digit(*p)) {
			if (zero && *p != '0') {
				zero = false;
				lead = -(int64_t)(p - frac) - 1;
			}
			p++;
		}
		if (p == frac)
			return JSONL_INVALID;
	}
	int64_t exp = 0;
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = true;
		p++;
		bool eneg = p < end && *p == '-';
		if (p < end && (*p == '-' || *p == '+'))
			p++;
		if (p == end || !is_digit(*p))
			return JSONL_INVALID;
		while (p < end && is_digit(*p)) {
			if (exp < 100000000000000000)
				exp = exp * 10 + (*p - '0');
			p++;
		}
		if (eneg)
			exp = -exp;
	}
	sc->p = p;
	skip_lost_nul(sc);
	if (!real) {
		static const char max_pos[] = "9223372036854775807";
		static const char max_neg[] = "9223372036854775808";
		if (nint > 19 ||
		    (nint == 19 && memcmp(digits, neg ? max_neg : max_pos, 19) > 0))
			return JSONL_INVALID;
		return 0;
	}
	if (zero)
		return 0;
	/* The value is in [10^e, 10^(e+1)); DBL_MAX is about 1.8e308. */
	int64_t e = lead + exp;
	if (e >= 309)
		return JSONL_INVALID;
	return e == 308 ? JSONL_UNSURE : 0;
}

static int scan_word(struct scan *sc, const char *word, size_t n)
{
	if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n))
		return JSONL_INVALID;
	sc->p += n;
	skip_lost_nul(sc);
	return 0;
}

/* A key, the ':' and the whitespace to the value; sc->p at the key. */
static int scan_key(struct scan *sc, titan_bytes *out, const uint8_t **kp, size_t *kn)
{
	if (sc->p == sc->end || *sc->p != '"')
		return JSONL_INVALID;
	sc->p++;
	int rc = scan_string(sc, out, true, kp, kn);
	if (rc)
		return rc;
	skip_ws(sc);
	if (sc->p == sc->end || *sc->p != ':')
		return JSONL_INVALID;
	sc->p++;
	skip_ws(sc);
	return 0;
}

/* Skip the value at sc->p, whatever it holds. */
static int skip_value(struct scan *sc)
{
	const size_t base = sc->depth;
	int rc;

	for (;;) {
		/* A value, one level below the containers open around it. */
		if (sc->depth >= JSONL_MAX_DEPTH || sc->p == sc->end)
			return JSONL_INVALID;
		switch (*sc->p) {
		case '"':
			sc->p++;
			rc = scan_string(sc, NULL, false, NULL, NULL);
			break;
		case '{':
		case '[': {
			bool obj = *sc->p == '{';
			uint64_t bit = 1ull << (sc->depth % 64);
			if (obj)
				sc->is_object[sc->depth / 64] |= bit;
			else
				sc->is_object[sc->depth / 64] &= ~bit;
			sc->depth++;
			sc->p++;
			skip_ws(sc);
			if (sc->p < sc->end && *sc->p == (obj ? '}' : ']')) {
				sc->p++;
				sc->depth--;
				rc = 0;
				break;
			}
			if (obj && (rc = scan_key(sc, NULL, NULL, NULL)))
				return rc;
			continue;
		}
		case 't':
			rc = scan_word(sc, "true", 4);
			break;
		case 'f':
			rc = scan_word(sc, "false", 5);
			break;
		case 'n':
			rc = scan_word(sc, "null", 4);
			break;
		default:
			if (*sc->p != '-' && !is_digit(*sc->p))
				return JSONL_INVALID;
			rc = scan_number(sc);
			break;
		}
		if (rc)
			return rc;
		/* After a value: close what ends here, up to the next value. */
		for (;;) {
			if (sc->depth == base)
				return 0;
			skip_ws(sc);
			if (sc->p == sc->end)
				return JSONL_INVALID;
			size_t top = sc->depth - 1;
			bool obj = sc->is_object[top / 64] >> (top % 64) & 1;
			if (*sc->p == ',') {
				sc->p++;
				skip_ws(sc);
				if (obj && (rc = scan_key(sc, NULL, NULL, NULL)))
					return rc;
				break;
			}
			if (*sc->p != (obj ? '}' : ']'))
				return JSONL_INVALID;
			sc->p++;
			sc->depth--;
		}
	}
}

/* The value at sc->p, where path[level] is looked up: *res says what the
 * rest of the path leads to (the last duplicate key wins). */
static int walk(struct scan *sc, size_t level, int *res)
{
	jsonl_scanner *s = sc->s;
	int rc;

	*res = JSONL_MISSING;
	if (sc->depth >= JSONL_MAX_DEPTH || sc->p == sc->end)
		return JSONL_INVALID;
	if (*sc->p != '{')
		return skip_value(sc);
	sc->depth++;
	sc->p++;
	skip_ws(sc);
	if (sc->p < sc->end && *sc->p == '}') {
		sc->p++;
		sc->depth--;
		return 0;
	}
	const char *want = s->path[level];
	size_t nwant = strlen(want);
	bool last = level + 1 == s->npath;
	for (;;) {
		const uint8_t *k = NULL;
		size_t kn = 0;
		rc = scan_key(sc, &s->key, &k, &kn);
		if (rc)
			return rc;
		if (kn != nwant || memcmp(k, want, kn)) {
			rc = skip_value(sc);
		} else if (!last) {
			rc = walk(sc, level + 1, res);
		} else if (sc->p < sc->end && *sc->p == '"' && sc->depth < JSONL_MAX_DEPTH) {
			sc->p++;
			rc = scan_string(sc, &s->text, false, &sc->text, &sc->len);
			*res = JSONL_STRING;
		} else {
			rc = skip_value(sc);
			*res = JSONL_NOT_STRING;
		}
		if (rc)
			return rc;
		skip_ws(sc);
		if (sc->p == sc->end)
			return JSONL_INVALID;
		if (*sc->p == '}')
			break;
		if (*sc->p != ',')
			return JSONL_INVALID;
		sc->p++;
		skip_ws(sc);
	}
	sc->p++;
	sc->depth--;
	return 0;
}

int jsonl_field(jsonl_scanner *s, const uint8_t *line, size_t n,
		const uint8_t **text, size_t *len)
{
	struct scan sc;
	sc.p = line;
	sc.end = line + n;
	sc.depth = 0;
	sc.s = s;
	sc.text = NULL;
	sc.len = 0;
	if (!s->npath)
		return JSONL_UNSURE;
	skip_ws(&sc);
	/* jansson takes an object or an array, nothing else, at the top. */
	if (sc.p == sc.end || (*sc.p != '{' && *sc.p != '['))
		return JSONL_INVALID;
	int res;
	int rc = walk(&sc, 0, &res);
	if (rc)
		return rc;
	skip_ws(&sc);
	if (sc.p != sc.end)
		return JSONL_INVALID;
	if (res == JSONL_STRING) {
		*text = sc.text;
		*len = sc.len;
	}
	return res;
}
