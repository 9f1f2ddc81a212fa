/* added.c - finding added tokens (specials and the like) in text.
 *
 * Hugging Face splits text on its added tokens with Aho-Corasick in
 * leftmost-longest mode before anything else.  Added tokens are few and the
 * usual text holds none, so a first-byte bitmap (memchr when every token
 * starts with the same byte, as "<|...|>" ones do) finds the candidate
 * positions and memcmp tries the tokens starting with that byte, longest
 * first: the first hit at the leftmost position is the leftmost-longest
 * match. */
#include "core/base.h"
#include "tok/tok_internal.h"
#include "tok/unicode.h"

/* A candidate's sort key: first byte, then longest first. */
struct cand {
	uint8_t first;
	size_t len;
	uint32_t index;
};

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->first != y->first)
		return x->first < y->first ? -1 : 1;
	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static int build_one(const titan_tok *t, struct tok_matcher *m, bool normalized)
{
	size_t n = 0;
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].normalized == normalized && t->added[i].len)
			n++;
	memset(m, 0, sizeof *m);
	m->only = -1;
	if (!n)
		return 0;
	struct cand *c = malloc(n * sizeof *c);
	m->order = malloc(n * sizeof *m->order);
	if (!c || !m->order) {
		free(c);
		return titan_err_nomem();
	}
	size_t k = 0;
	for (size_t i = 0; i < t->nadded; i++) {
		const struct tok_added *a = &t->added[i];
		if (a->normalized == normalized && a->len)
			c[k++] = (struct cand){ (uint8_t)a->content[0], a->len, (uint32_t)i };
	}
	qsort(c, n, sizeof *c, cmp_cand);
	uint32_t count[256] = {0};
	for (size_t i = 0; i < n; i++) {
		m->order[i] = c[i].index;
		count[c[i].first]++;
		m->first[c[i].first / 8] |= (uint8_t)(1u << (c[i].first % 8));
	}
	uint32_t sum = 0;
	int distinct = 0, last = -1;
	for (int b = 0; b < 256; b++) {
		m->start[b] = sum;
		sum += count[b];
		if (count[b]) {
			distinct++;
			last = b;
		}
	}
	m->start[256] = sum;
	m->only = distinct == 1 ? last : -1;
	m->n = n;
	free(c);
	return 0;
}

int tok_matchers_build(titan_tok *t)
{
	/* Parallel encoding cuts after a '\n': no match may span it, and no
	 * match may reach back over it. */
	t->cut_unsafe = false;
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].lstrip || memchr(t->added[i].content, '\n', t->added[i].len))
			t->cut_unsafe = true;
	int rc = build_one(t, &t->match[0], false);
	if (!rc)
		rc = build_one(t, &t->match[1], true);
	return rc;
}

void tok_matchers_free(titan_tok *t)
{
	for (int i = 0; i < 2; i++) {
		free(t->match[i].order);
		t->match[i].order = NULL;
		t->match[i].n = 0;
	}
}

/* The longest candidate that matches at s[0..n), or -1. */
static long try_at(const titan_tok *t, const struct tok_matcher *m, const uint8_t *s, size_t n)
{
	for (uint32_t k = m->start[s[0]]; k < m->start[s[0] + 1]; k++) {
		const struct tok_added *a = &t->added[m->order[k]];
		if (a->len <= n && !memcmp(a->content, s, a->len))
			return m->order[k];
	}
	return -1;
}

size_t tok_match_find(const titan_tok *t, const struct tok_matcher *m,
		      const uint8_t *s, size_t n, size_t *len, size_t *which)
{
	size_t pos = 0;
	while (pos < n) {
		if (m->only >= 0) {
			const uint8_t *hit = memchr(s + pos, m->only, n - pos);
			if (!hit)
				break;
			pos = (size_t)(hit - s);
		} else if (!(m->first[s[pos] / 8] & (1u << (s[pos] % 8)))) {
			pos++;
			continue;
		}
		long k = try_at(t, m, s + pos, n - pos);
		if (k >= 0) {
			*len = t->added[k].len;
			*which = (size_t)k;
			return pos;
		}
		pos++;
	}
	return n;
}

static bool is_space(const uint8_t *s, size_t n, size_t *len)
{
	uint32_t cp;
	*len = utf8_decode(s, n, &cp);
	return cp != UC_INVALID && (uc_class(cp) & UC_WS);
}

/* Whitespace is Unicode White_Space, as Rust's \s in Hugging Face's
 * lstrip/rstrip; an invalid byte ends a run. */
size_t tok_space_before(const uint8_t *s, size_t end)
{
	while (end) {
		size_t start = end - 1, len;
		while (start && end - start < 4 && (s[start] & 0xc0) == 0x80)
			start--;
		if (!is_space(s + start, end - start, &len) || start + len != end)
			break;
		end = start;
	}
	return end;
}

size_t tok_space_after(const uint8_t *s, size_t n)
{
	size_t pos = 0, len;
	while (pos < n && is_space(s + pos, n - pos, &len))
		pos += len;
	return pos;
}
