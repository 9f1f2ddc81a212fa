/* load_json.c - Hugging Face tokenizer.json (byte-level BPE only).
 *
 * The vocabulary and merges are spelled in GPT-2's byte-level alphabet
 * (every byte is one printable character: printable Latin-1 bytes stand for
 * themselves, the 68 others for U+0100.. in byte order); they are turned
 * back into raw bytes here.  Added tokens are raw text.  Whatever the file
 * asks for that titan cannot do exactly as Hugging Face would (normalizers,
 * other models and pre-tokenizers, dropout, lstrip/rstrip/single_word) is
 * refused with a message naming the JSON path. */
#include "core/base.h"

#include <ctype.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "core/json.h"
#include "tok/tok_internal.h"

#define PRETOK_SUPPORTED \
	"(titan supports ByteLevel, Split with behavior Isolated, and Sequence of those)"

/* The byte a code point of the byte-level alphabet stands for, or -1. */
static int byte_of(uint32_t cp)
{
	if ((cp >= 0x21 && cp <= 0x7e) || (cp >= 0xa1 && cp <= 0xac) || (cp >= 0xae && cp <= 0xff))
		return (int)cp;
	if (cp >= 0x100 && cp <= 0x120)         /* bytes 0x00..0x20 */
		return (int)(cp - 0x100);
	if (cp >= 0x121 && cp <= 0x142)         /* bytes 0x7f..0xa0 */
		return (int)(cp - 0x121 + 0x7f);
	if (cp == 0x143)                        /* byte 0xad */
		return 0xad;
	return -1;
}

/* Append the raw bytes a byte-level string stands for; -1 when a character
 * is outside the alphabet. */
static int bl_decode(const char *s, size_t n, titan_bytes *out)
{
	if (bytes_reserve(out, n))
		return -2;
	const uint8_t *p = (const uint8_t *)s;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		int b;
		if (p[i] < 0x80) {
			cp = p[i++];
		} else if ((p[i] & 0xe0) == 0xc0 && i + 1 < n && (p[i + 1] & 0xc0) == 0x80) {
			cp = (uint32_t)(p[i] & 0x1f) << 6 | (p[i + 1] & 0x3f);
			i += 2;
		} else {
			return -1;
		}
		if ((b = byte_of(cp)) < 0)
			return -1;
		out->v[out->n++] = (uint8_t)b;
	}
	return 0;
}

/* The vocabulary and merges are nearly all of a tokenizer.json (12 MB for
 * o200k_base), and building a jansson tree for them costs more than the
 * rest of loading together.  So a small scanner finds $.model.vocab and
 * $.model.merges, reads them straight into the token tables, and jansson
 * parses the rest with those two values blanked to {} and []. */
struct jscan {
	const char *file;
	const char *s, *p, *end;
	titan_bytes str;        /* the last string read, NUL-terminated */
};

static int scan_fail(struct jscan *J, const char *what)
{
	size_t line = 1, col = 1;
	for (const char *q = J->s; q < J->p && q < J->end; q++, col++)
		if (*q == '\n') {
			line++;
			col = 0;
		}
	if (J->p >= J->end)
		return titan_err(TITAN_EFORMAT,
				 "'%s': line %zu column %zu: unexpected end of input",
				 J->file, line, col);
	return titan_err(TITAN_EFORMAT, "'%s': line %zu column %zu: %s", J->file, line, col, what);
}

static void scan_ws(struct jscan *J)
{
	while (J->p < J->end && (*J->p == ' ' || *J->p == '\n' || *J->p == '\r' || *J->p == '\t'))
		J->p++;
}

static bool scan_char(struct jscan *J, char c)
{
	scan_ws(J);
	if (J->p < J->end && *J->p == c) {
		J->p++;
		return true;
	}
	return false;
}

static int hex4(const char *p, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ?
			(c | 0x20) - 'a' + 10 : -1;
		if (d < 0)
			return -1;
		*v = *v << 4 | (uint32_t)d;
	}
	return 0;
}

static void put_utf8(titan_bytes *b, uint32_t cp)
{
	uint8_t *o = b->v + b->n;
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		b->n += 1;
	} else if (cp < 0x800) {
		o[0] = (uint8_t)(0xc0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3f));
		b->n += 2;
	} else if (cp < 0x10000) {
		o[0] = (uint8_t)(0xe0 | cp >> 12);
		o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp & 0x3f));
		b->n += 3;
	} else {
		o[0] = (uint8_t)(0xf0 | cp >> 18);
		o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		o[3] = (uint8_t)(0x80 | (cp & 0x3f));
		b->n += 4;
	}
}

/* A JSON string into J->str (UTF-8, escapes resolved, NUL-terminated). */
static int scan_string(struct jscan *J)
{
	if (!scan_char(J, '"'))
		return scan_fail(J, "expected a string");
	J->str.n = 0;
	for (;;) {
		const char *q = J->p;
		while (q < J->end && *q != '"' && *q != '\\' && (uint8_t)*q >= 0x20)
			q++;
		if (bytes_append(&J->str, J->p, (size_t)(q - J->p)) || bytes_reserve(&J->str, 8))
			return titan_err_nomem();
		J->p = q;
		if (q >= J->end)
			return scan_fail(J, "");
		if (*q == '"') {
			J->p++;
			J->str.v[J->str.n] = 0;
			return 0;
		}
		if (*q != '\\')
			return scan_fail(J, "control character in a string");
		if (q + 1 >= J->end) {
			J->p = J->end;
			return scan_fail(J, "");
		}
		char c = q[1];
		const char *simple = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
		const char *k = c ? strchr(simple, c) : NULL;
		if (k) {
			J->str.v[J->str.n++] = (uint8_t)to[k - simple];
			J->p = q + 2;
			continue;
		}
		uint32_t cp, lo;
		if (c != 'u' || J->end - q < 6 || hex4(q + 2, &cp))
			return scan_fail(J, "invalid escape in a string");
		J->p = q + 6;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return scan_fail(J, "invalid \\u escape (lone low surrogate)");
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (J->end - J->p < 6 || J->p[0] != '\\' || J->p[1] != 'u' ||
			    hex4(J->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
				return scan_fail(J, "invalid \\u escape (lone high surrogate)");
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			J->p += 6;
		}
		put_utf8(&J->str, cp);
	}
}

static int scan_value(struct jscan *J, int depth);

/* Skip a value, checking its syntax. */
static int scan_value(struct jscan *J, int depth)
{
	if (depth > 128)
		return scan_fail(J, "nested too deeply");
	scan_ws(J);
	if (J->p >= J->end)
		return scan_fail(J, "");
	char c = *J->p;
	int rc = 0;
	if (c == '"')
		return scan_string(J);
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		J->p++;
		if (scan_char(J, close))
			return 0;
		do {
			if (c == '{') {
				if ((rc = scan_string(J)))
					return rc;
				if (!scan_char(J, ':'))
					return scan_fail(J, "expected ':'");
			}
			if ((rc = scan_value(J, depth + 1)))
				return rc;
		} while (scan_char(J, ','));
		return scan_char(J, close) ? 0 : scan_fail(J, close == '}' ? "expected ',' or '}'" :
							   "expected ',' or ']'");
	}
	const char *q = J->p;
	while (q < J->end && (isalnum((unsigned char)*q) || *q == '-' || *q == '+' || *q == '.'))
		q++;
	if (q == J->p)
		return scan_fail(J, "unexpected character");
	J->p = q;
	return 0;
}

struct span {
	const char *a, *b;      /* [a, b) of the original text; a == NULL: absent */
};

/* Find the values of $.model.vocab and $.model.merges. */
static int scan_model(struct jscan *J, struct span *vocab, struct span *merges)
{
	if (!scan_char(J, '{'))
		return 1;       /* not an object: let jansson say so */
	if (scan_char(J, '}'))
		return 0;
	int rc;
	do {
		if ((rc = scan_string(J)))
			return rc;
		bool model = !strcmp((char *)J->str.v, "model");
		if (!scan_char(J, ':'))
			return scan_fail(J, "expected ':'");
		scan_ws(J);
		if (!model || J->p >= J->end || *J->p != '{') {
			if ((rc = scan_value(J, 1)))
				return rc;
			continue;
		}
		J->p++;
		if (scan_char(J, '}'))
			continue;
		do {
			if ((rc = scan_string(J)))
				return rc;
			struct span *sp = !strcmp((char *)J->str.v, "vocab") ? vocab :
					  !strcmp((char *)J->str.v, "merges") ? merges : NULL;
			if (!scan_char(J, ':'))
				return scan_fail(J, "expected ':'");
			scan_ws(J);
			const char *a = J->p;
			if ((rc = scan_value(J, 2)))
				return rc;
			if (sp && *a == (sp == vocab ? '{' : '['))
				*sp = (struct span){ a, J->p };
		} while (scan_char(J, ','));
		if (!scan_char(J, '}'))
			return scan_fail(J, "expected ',' or '}'");
	} while (scan_char(J, ','));
	if (!scan_char(J, '}'))
		return scan_fail(J, "expected ',' or '}'");
	return 0;
}

/* The text with the two spans replaced by {} and []. */
static int blank_spans(const char *s, size_t n, struct span v, struct span m, titan_bytes *out)
{
	struct span first = v, second = m;
	const char *fill1 = "{}", *fill2 = "[]";
	if (!v.a || (m.a && m.a < v.a)) {
		first = m;
		second = v;
		fill1 = "[]";
		fill2 = "{}";
	}
	const char *p = s;
	int rc = 0;
	if (first.a) {
		rc = bytes_append(out, p, (size_t)(first.a - p));
		if (!rc)
			rc = bytes_append(out, fill1, 2);
		p = first.b;
	}
	if (second.a && !rc) {
		rc = bytes_append(out, p, (size_t)(second.a - p));
		if (!rc)
			rc = bytes_append(out, fill2, 2);
		p = second.b;
	}
	if (!rc)
		rc = bytes_append(out, p, (size_t)(s + n - p));
	return rc;
}

struct jload {
	const char *file;
	json_t *root;
	struct jscan J;
	struct span vocab, merges;  /* of $.model.vocab and $.model.merges */
	char *pattern;          /* owned */
	bool byte_level;        /* a ByteLevel pre-tokenizer or decoder */
};

static const char *type_of(json_t *obj)
{
	json_t *t = json_object_get(obj, "type");
	return json_is_string(t) ? json_string_value(t) : NULL;
}

static int unsupported_pretok(const struct jload *L, const char *path, json_t *pt)
{
	const char *type = json_is_object(pt) ? type_of(pt) : NULL;
	return titan_err(TITAN_EFORMAT,
			 "'%s': %s.type: unsupported pre-tokenizer '%s' " PRETOK_SUPPORTED,
			 L->file, path, type ? type : json_is_null(pt) ? "null" : "?");
}

static int set_pattern(struct jload *L, const char *path, const char *regex)
{
	if (L->pattern)
		return titan_err(TITAN_EFORMAT, "'%s': %s: a second split pattern is not supported "
				 PRETOK_SUPPORTED, L->file, path);
	L->pattern = strdup(regex);
	return L->pattern ? 0 : titan_err_nomem();
}

static int byte_level_pretok(struct jload *L, const char *path, json_t *pt)
{
	bool prefix = true, use_regex = true;
	int rc = json_opt_bool(pt, "add_prefix_space", &prefix, L->file, path);
	if (!rc)
		rc = json_opt_bool(pt, "use_regex", &use_regex, L->file, path);
	if (rc)
		return rc;
	if (prefix)
		return titan_err(TITAN_EFORMAT, "'%s': %s.add_prefix_space: unsupported: "
				 "titan needs add_prefix_space=false", L->file, path);
	L->byte_level = true;
	return use_regex ? set_pattern(L, path, pretok_named_pattern("gpt2")) : 0;
}

static int split_pretok(struct jload *L, const char *path, json_t *pt)
{
	json_t *pat;
	const char *behavior, *regex = NULL, *literal = NULL;
	bool invert = false;
	char sub[256];
	int rc = json_get_obj(pt, "pattern", &pat, L->file, path);
	if (!rc)
		rc = json_get_str(pt, "behavior", &behavior, L->file, path);
	if (!rc)
		rc = json_opt_bool(pt, "invert", &invert, L->file, path);
	snprintf(sub, sizeof sub, "%s.pattern", path);
	if (!rc)
		rc = json_opt_str(pat, "Regex", &regex, L->file, sub);
	if (!rc)
		rc = json_opt_str(pat, "String", &literal, L->file, sub);
	if (rc)
		return rc;
	if (strcmp(behavior, "Isolated") || invert)
		return titan_err(TITAN_EFORMAT,
				 "'%s': %s: unsupported Split with behavior '%s'%s "
				 PRETOK_SUPPORTED,
				 L->file, path, behavior, invert ? " and invert" : "");
	if (L->byte_level)
		return titan_err(TITAN_EFORMAT,
				 "'%s': %s: a Split after ByteLevel is not supported "
				 PRETOK_SUPPORTED, L->file, path);
	if (regex)
		return set_pattern(L, path, regex);
	if (!literal || !*literal || strstr(literal, "\\E"))
		return titan_err(TITAN_EFORMAT,
				 "'%s': %s: expected a Regex or String pattern", L->file, sub);
	/* A literal splits like the same text quoted as a regex. */
	size_t n = strlen(literal) + 5;
	char *q = malloc(n);
	if (!q)
		return titan_err_nomem();
	snprintf(q, n, "\\Q%s\\E", literal);
	rc = set_pattern(L, path, q);
	free(q);
	return rc;
}

static int one_pretok(struct jload *L, const char *path, json_t *pt)
{
	const char *type = json_is_object(pt) ? type_of(pt) : NULL;
	if (type && !strcmp(type, "ByteLevel"))
		return byte_level_pretok(L, path, pt);
	if (type && !strcmp(type, "Split"))
		return split_pretok(L, path, pt);
	return unsupported_pretok(L, path, pt);
}

static int read_pretok(struct jload *L)
{
	const char *path = "$.pre_tokenizer";
	json_t *pt = json_object_get(L->root, "pre_tokenizer");
	const char *type = json_is_object(pt) ? type_of(pt) : NULL;
	int rc;
	if (type && !strcmp(type, "Sequence")) {
		json_t *list;
		rc = json_get_arr(pt, "pretokenizers", &list, L->file, path);
		for (size_t i = 0; !rc && i < json_array_size(list); i++) {
			char sub[96];
			snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", path, i);
			rc = one_pretok(L, sub, json_array_get(list, i));
		}
	} else {
		rc = one_pretok(L, path, pt);
	}
	if (rc)
		return rc;
	if (!L->pattern)
		return titan_err(TITAN_EFORMAT,
				 "'%s': %s: no split pattern (ByteLevel with use_regex=false "
				 "alone is not supported) " PRETOK_SUPPORTED, L->file, path);
	if (!L->byte_level) {
		json_t *dec = json_object_get(L->root, "decoder");
		const char *dt = json_is_object(dec) ? type_of(dec) : NULL;
		if (!dt || strcmp(dt, "ByteLevel"))
			return titan_err(TITAN_EFORMAT,
					 "'%s': $.decoder: expected a ByteLevel decoder "
					 "(titan supports byte-level BPE only)", L->file);
		L->byte_level = true;
	}
	return 0;
}

static int check_model(struct jload *L, json_t *model)
{
	const char *file = L->file, *type = NULL, *s = NULL;
	int rc = json_opt_str(model, "type", &type, file, "$.model");
	if (rc)
		return rc;
	if (type ? strcmp(type, "BPE") : !json_object_get(model, "merges"))
		return titan_err(TITAN_EFORMAT, "'%s': $.model.type: unsupported model '%s' "
				 "(titan supports byte-level BPE only)", file, type ? type : "?");
	json_t *d = json_object_get(model, "dropout");
	if (d && !json_is_null(d) && !(json_is_number(d) && json_number_value(d) == 0))
		return titan_err(TITAN_EFORMAT,
				 "'%s': $.model.dropout: BPE dropout is not supported", file);
	static const char *const affixes[] = { "continuing_subword_prefix", "end_of_word_suffix" };
	for (size_t i = 0; i < ARRAY_SIZE(affixes); i++) {
		s = NULL;
		rc = json_opt_str(model, affixes[i], &s, file, "$.model");
		if (rc)
			return rc;
		if (s && *s)
			return titan_err(TITAN_EFORMAT, "'%s': $.model.%s: '%s' is not supported "
					 "(must be empty or null)", file, affixes[i], s);
	}
	bool fallback = false;
	rc = json_opt_bool(model, "byte_fallback", &fallback, file, "$.model");
	if (!rc && fallback)
		rc = titan_err(TITAN_EFORMAT, "'%s': $.model.byte_fallback: byte fallback is not "
			       "supported (titan supports byte-level BPE only)", file);
	return rc;
}

static int read_added(struct jload *L, struct tok_added **out, size_t *nout)
{
	json_t *list = json_object_get(L->root, "added_tokens");
	*out = NULL;
	*nout = 0;
	if (!list || json_is_null(list))
		return 0;
	if (!json_is_array(list))
		return titan_err(TITAN_EFORMAT, "'%s': $.added_tokens: expected an array", L->file);
	size_t n = json_array_size(list);
	struct tok_added *a = calloc(n ? n : 1, sizeof *a);
	if (!a)
		return titan_err_nomem();
	int rc = 0;
	size_t i;
	for (i = 0; i < n && !rc; i++) {
		json_t *o = json_array_get(list, i);
		char path[64];
		const char *content;
		long long id;
		bool special = false, normalized = true, lstrip = false, rstrip = false;
		bool single = false;
		snprintf(path, sizeof path, "$.added_tokens[%zu]", i);
		rc = json_get_int(o, "id", &id, L->file, path);
		if (!rc)
			rc = json_get_str(o, "content", &content, L->file, path);
		if (!rc)
			rc = json_opt_bool(o, "special", &special, L->file, path);
		if (!rc)
			rc = json_opt_bool(o, "normalized", &normalized, L->file, path);
		if (!rc)
			rc = json_opt_bool(o, "lstrip", &lstrip, L->file, path);
		if (!rc)
			rc = json_opt_bool(o, "rstrip", &rstrip, L->file, path);
		if (!rc)
			rc = json_opt_bool(o, "single_word", &single, L->file, path);
		/* single_word asks Rust's Unicode \w, which titan's tables do not
		 * spell exactly: refuse rather than differ. */
		if (!rc && single)
			rc = titan_err(TITAN_EFORMAT, "'%s': %s.single_word: true is not supported",
				       L->file, path);
		if (rc)
			break;
		size_t len = json_string_length(json_object_get(o, "content"));
		if (id < 0 || id >= TOK_MAX_ID)
			rc = titan_err(TITAN_EFORMAT,
				       "'%s': %s.id: %lld is out of range", L->file, path, id);
		else if (!len)
			rc = titan_err(TITAN_EFORMAT,
				       "'%s': %s.content: empty token", L->file, path);
		if (rc)
			break;
		a[i].content = malloc(len + 1);
		if (!a[i].content) {
			rc = titan_err_nomem();
			break;
		}
		memcpy(a[i].content, content, len + 1);
		a[i].len = len;
		a[i].id = (uint32_t)id;
		a[i].special = special;
		a[i].normalized = normalized;
		a[i].lstrip = lstrip;
		a[i].rstrip = rstrip;
	}
	if (rc) {
		for (size_t k = 0; k < n; k++)
			free(a[k].content);
		free(a);
		return rc;
	}
	*out = a;
	*nout = n;
	return 0;
}

static bool is_added(const struct tok_added *a, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(a[i].content, s))
			return true;
	return false;
}

/* $.model.vocab into (id, offset, length) triples over blob. */
static int read_vocab(struct jload *L, const struct tok_added *added, size_t nadded,
		      titan_bytes *blob, titan_u32s *toks)
{
	struct jscan *J = &L->J;
	if (!L->vocab.a)
		return 0;
	J->p = L->vocab.a;
	J->end = L->vocab.b;
	int rc = u32s_reserve(toks, (size_t)(J->end - J->p) / 8);
	if (!rc)
		rc = bytes_reserve(blob, (size_t)(J->end - J->p) / 2);
	if (rc || !scan_char(J, '{') || scan_char(J, '}'))
		return rc;
	do {
		if ((rc = scan_string(J)) || !scan_char(J, ':'))
			return rc ? rc : scan_fail(J, "expected ':'");
		const char *key = (const char *)J->str.v;
		uint64_t id = 0;
		scan_ws(J);
		const char *d = J->p;
		for (; J->p < J->end && *J->p >= '0' && *J->p <= '9' && id < TOK_MAX_ID; J->p++)
			id = id * 10 + (uint64_t)(*J->p - '0');
		scan_ws(J);
		bool ends = J->p >= J->end || *J->p == ',' || *J->p == '}';
		if (J->p == d || id >= TOK_MAX_ID || !ends)
			return titan_err(TITAN_EFORMAT,
					 "'%s': $.model.vocab: token '%s': expected an id "
					 "from 0 to %u", L->file, key, TOK_MAX_ID - 1);
		size_t off = blob->n;
		int b = bl_decode(key, J->str.n, blob);
		if (b == -2)
			return titan_err_nomem();
		if (b < 0) {
			blob->n = off;
			if (is_added(added, nadded, key))
				continue;       /* decodes as its added token */
			return titan_err(TITAN_EFORMAT,
					 "'%s': $.model.vocab: token '%s' has a character "
					 "outside the byte-level alphabet", L->file, key);
		}
		if (blob->n == off)
			return titan_err(TITAN_EFORMAT,
					 "'%s': $.model.vocab: empty token", L->file);
		uint32_t tri[3] = { (uint32_t)id, (uint32_t)off, (uint32_t)(blob->n - off) };
		if ((rc = u32s_append(toks, tri, 3)))
			return rc;
	} while (scan_char(J, ','));
	return 0;
}

/* One merge, "a b" or ["a", "b"], into a and b (NUL-terminated); 1 when
 * it is neither. */
static int next_merge(struct jscan *J, titan_bytes *a, titan_bytes *b)
{
	int rc;
	a->n = b->n = 0;
	scan_ws(J);
	if (J->p < J->end && *J->p == '"') {
		if ((rc = scan_string(J)))
			return rc;
		const char *s = (const char *)J->str.v, *sp = memchr(s, ' ', J->str.n);
		if (!sp || memchr(sp + 1, ' ', J->str.n - (size_t)(sp + 1 - s)))
			return 1;
		rc = bytes_append(a, s, (size_t)(sp - s));
		if (!rc)
			rc = bytes_append(b, sp + 1, J->str.n - (size_t)(sp + 1 - s));
	} else if (scan_char(J, '[')) {
		scan_ws(J);
		if (J->p >= J->end || *J->p != '"')
			return 1;
		if ((rc = scan_string(J)) || (rc = bytes_append(a, J->str.v, J->str.n)))
			return rc;
		if (!scan_char(J, ','))
			return 1;
		scan_ws(J);
		if (J->p >= J->end || *J->p != '"')
			return 1;
		if ((rc = scan_string(J)) || (rc = bytes_append(b, J->str.v, J->str.n)))
			return rc;
		if (!scan_char(J, ']'))
			return 1;
	} else {
		return 1;
	}
	if (!rc)
		rc = bytes_append(a, "", 1);
	if (!rc)
		rc = bytes_append(b, "", 1);
	a->n--;
	b->n--;
	return rc;
}

static int read_merges(struct jload *L, titan_tok *t)
{
	struct jscan *J = &L->J;
	titan_bytes a = {0}, b = {0}, buf = {0};
	int rc = 0;
	if (L->merges.a) {
		J->p = L->merges.a;
		J->end = L->merges.b;
		size_t guess = 0;
		for (const char *q = J->p; q < J->end; q++)
			guess += *q == ',';
		rc = tok_pairs_init(t, guess / 2 + 1);
		if (!rc && scan_char(J, '[') && scan_char(J, ']'))
			goto out;
	}
	for (size_t i = 0; !rc && L->merges.a; i++) {
		rc = next_merge(J, &a, &b);
		if (rc == 1)
			rc = titan_err(TITAN_EFORMAT,
				       "'%s': $.model.merges[%zu]: expected \"a b\" or "
				       "[\"a\", \"b\"]", L->file, i);
		if (rc)
			break;
		buf.n = 0;
		int ea = bl_decode((char *)a.v, a.n, &buf);
		size_t split = buf.n;
		int eb = ea ? 0 : bl_decode((char *)b.v, b.n, &buf);
		if (ea == -2 || eb == -2) {
			rc = titan_err_nomem();
			break;
		}
		uint32_t left = ea ? TOK_NONE : tok_vocab_find(t, buf.v, split);
		uint32_t right = eb || ea ? TOK_NONE :
				 tok_vocab_find(t, buf.v + split, buf.n - split);
		uint32_t made = left == TOK_NONE || right == TOK_NONE ? TOK_NONE :
				tok_vocab_find(t, buf.v, buf.n);
		if (made == TOK_NONE) {
			if (left == TOK_NONE || right == TOK_NONE)
				rc = titan_err(TITAN_EFORMAT,
					       "'%s': $.model.merges[%zu]: '%s' is not in "
					       "the vocabulary", L->file, i,
					       (char *)(left == TOK_NONE ? a.v : b.v));
			else
				rc = titan_err(TITAN_EFORMAT,
					       "'%s': $.model.merges[%zu]: the merged token "
					       "'%s%s' is not in the vocabulary", L->file, i,
					       (char *)a.v, (char *)b.v);
			break;
		}
		rc = tok_pair_add(t, left, right, (uint32_t)i, made);
		if (!rc && !scan_char(J, ','))
			break;
	}
out:
	bytes_free(&a);
	bytes_free(&b);
	bytes_free(&buf);
	return rc;
}

/* An added token whose content is also in $.model.vocab must have the
 * vocabulary's id (Hugging Face would use that one). */
static int check_added_ids(struct jload *L, const titan_tok *t)
{
	titan_bytes buf = {0};
	int rc = 0;
	for (size_t i = 0; i < t->nadded && !rc; i++) {
		const struct tok_added *a = &t->added[i];
		buf.n = 0;
		int b = bl_decode(a->content, a->len, &buf);
		if (b == -2)
			rc = titan_err_nomem();
		if (b)
			continue;
		uint32_t id = tok_vocab_find(t, buf.v, buf.n);
		if (id == TOK_NONE || id == a->id)
			continue;
		/* Sorted by id now: find its place in the file for the message. */
		json_t *list = json_object_get(L->root, "added_tokens");
		size_t k = 0;
		while (k < json_array_size(list) &&
		       json_integer_value(json_object_get(json_array_get(list, k), "id")) != a->id)
			k++;
		rc = titan_err(TITAN_EFORMAT, "'%s': $.added_tokens[%zu].id: token '%s' has id %u, "
			       "but $.model.vocab gives it id %u", L->file, k, a->content,
			       a->id, id);
	}
	bytes_free(&buf);
	return rc;
}

/* BOS from a TemplateProcessing "single" template that starts with a
 * special token (directly or inside a Sequence post-processor). */
static int64_t template_bos(const titan_tok *t, json_t *pp)
{
	const char *type = json_is_object(pp) ? type_of(pp) : NULL;
	if (!type)
		return -1;
	if (!strcmp(type, "Sequence")) {
		json_t *list = json_object_get(pp, "processors");
		for (size_t i = 0; i < json_array_size(list); i++) {
			int64_t id = template_bos(t, json_array_get(list, i));
			if (id >= 0)
				return id;
		}
		return -1;
	}
	if (strcmp(type, "TemplateProcessing"))
		return -1;
	json_t *first = json_array_get(json_object_get(pp, "single"), 0);
	json_t *name = json_object_get(json_object_get(first, "SpecialToken"), "id");
	if (!json_is_string(name))
		return -1;
	json_t *specials = json_object_get(pp, "special_tokens");
	json_t *st = json_object_get(specials, json_string_value(name));
	json_t *id = json_array_get(json_object_get(st, "ids"), 0);
	if (json_is_integer(id))
		return json_integer_value(id);
	return tok_find_named(t, json_string_value(name));
}

/* tokenizer_config.json beside tokenizer.json: its bos_token/eos_token win. */
static int read_config(titan_tok *t, const char *file)
{
	if (access(file, R_OK))
		return 0;
	json_t *j;
	int rc = json_load_path(&j, file);
	if (rc)
		return rc;
	static const char *const keys[] = { "bos_token", "eos_token" };
	for (int k = 0; k < 2 && !rc; k++) {
		json_t *v = json_object_get(j, keys[k]);
		if (json_is_object(v))
			v = json_object_get(v, "content");
		if (!v || json_is_null(v))
			continue;
		if (!json_is_string(v)) {
			rc = titan_err(TITAN_EFORMAT,
				       "'%s': $.%s: expected a string or {\"content\": ...}",
				       file, keys[k]);
			break;
		}
		int64_t id = tok_find_named(t, json_string_value(v));
		if (id < 0)
			rc = titan_err(TITAN_EFORMAT,
				       "'%s': $.%s: '%s' is not a token", file, keys[k],
				       json_string_value(v));
		else if (k == 0)
			t->bos = id;
		else
			t->eos = id;
	}
	json_decref(j);
	return rc;
}

int tok_load_json_buf(titan_tok **out, const char *file, const void *buf, size_t n)
{
	struct jload L = { .file = file };
	struct tok_added *added = NULL;
	size_t nadded = 0;
	titan_bytes blob = {0}, rest = {0};
	titan_u32s toks = {0};
	titan_tok *t = NULL;
	json_t *model, *placeholder;
	bool ignore = false;
	int rc;
	*out = NULL;
	L.J = (struct jscan){ .file = file, .s = buf, .p = buf, .end = (const char *)buf + n };
	rc = scan_model(&L.J, &L.vocab, &L.merges);
	if (rc == 1)
		rc = 0;
	if (!rc)
		rc = blank_spans(L.J.s, n, L.vocab, L.merges, &rest);
	if (!rc)
		rc = json_parse_buf(&L.root, rest.v ? (const void *)rest.v : "", rest.n, file);
	bytes_free(&rest);
	if (rc)
		goto out;
	if (!json_is_object(L.root)) {
		rc = titan_err(TITAN_EFORMAT, "'%s': $: expected an object", file);
		goto out;
	}
	json_t *norm = json_object_get(L.root, "normalizer");
	if (norm && !json_is_null(norm)) {
		const char *nt = json_is_object(norm) ? type_of(norm) : NULL;
		rc = titan_err(TITAN_EFORMAT, "'%s': $.normalizer: unsupported normalizer '%s' "
			       "(titan supports none: it must be null)", file, nt ? nt : "?");
		goto out;
	}
	rc = json_get_obj(L.root, "model", &model, file, "$");
	if (!rc)
		rc = check_model(&L, model);
	if (!rc)
		rc = read_pretok(&L);
	if (!rc)
		rc = json_get_obj(model, "vocab", &placeholder, file, "$.model");
	if (!rc)
		rc = json_get_arr(model, "merges", &placeholder, file, "$.model");
	if (!rc)
		rc = json_opt_bool(model, "ignore_merges", &ignore, file, "$.model");
	if (!rc)
		rc = read_added(&L, &added, &nadded);
	if (!rc)
		rc = read_vocab(&L, added, nadded, &blob, &toks);
	if (!rc)
		rc = tok_alloc(&t, "tokenizer.json");
	if (rc)
		goto out;
	t->ignore_merges = ignore;
	rc = tok_set_vocab(t, file, "$.model.vocab", blob.v, toks.v, toks.n / 3, added, nadded);
	added = NULL;
	bytes_free(&blob);
	u32s_free(&toks);
	if (!rc)
		rc = check_added_ids(&L, t);
	if (!rc)
		rc = read_merges(&L, t);
	if (!rc)
		rc = tok_finish(t, L.pattern, file);
	if (rc)
		goto out;
	t->bos = template_bos(t, json_object_get(L.root, "post_processor"));
	tok_default_bos_eos(t);
out:
	if (added) {
		for (size_t i = 0; i < nadded; i++)
			free(added[i].content);
		free(added);
	}
	bytes_free(&blob);
	u32s_free(&toks);
	bytes_free(&L.J.str);
	json_decref(L.root);
	free(L.pattern);
	if (rc) {
		tok_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

int tok_load_json(titan_tok **out, const char *path)
{
	char file[4096], config[4096] = "";
	struct stat st;
	*out = NULL;
	if (!stat(path, &st) && S_ISDIR(st.st_mode)) {
		snprintf(file, sizeof file, "%s/tokenizer.json", path);
		snprintf(config, sizeof config, "%s/tokenizer_config.json", path);
		if (access(file, R_OK))
			return titan_err(TITAN_EFORMAT,
					 "'%s': no tokenizer.json in this directory", path);
	} else {
		snprintf(file, sizeof file, "%s", path);
	}
	titan_bytes text = {0};
	titan_tok *t;
	int rc = file_read_all(file, &text);
	if (!rc)
		rc = tok_load_json_buf(&t, file, text.v ? (const void *)text.v : "", text.n);
	bytes_free(&text);
	if (rc)
		return rc;
	if (*config && (rc = read_config(t, config))) {
		tok_free(t);
		return rc;
	}
	*out = t;
	return 0;
}
