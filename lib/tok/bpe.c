/* bpe.c - the titan_tok tables, the merge loop, the piece cache, encode and
 * decode.
 *
 * Everything works on raw bytes: a piece (one pre-tokenizer match) starts
 * as its single-byte tokens and adjacent pairs are merged, lowest rank
 * first and leftmost on ties, until no pair has a merge.  That is Hugging
 * Face's BPE (its merge list gives the ranks) and tiktoken's (a pair ranks
 * as the token it makes).  Short pieces, almost all of them, run an O(n^2)
 * scan over a small array; long ones a heap over a linked list, so a
 * megabyte of one letter stays O(n log n). */
#include "core/base.h"
#include "core/hash.h"
#include "tok/tok_internal.h"

/* Pieces up to this many bytes use the array scan, longer ones the heap. */
#define SHORT_PIECE 96
/* Pieces up to this many bytes go through the per-encoder cache, an open
 * addressing table that is simply emptied when half full: the frequent
 * pieces come back within a few kilobytes of text, and its memory stays
 * bounded (at most CACHE_FILL keys of CACHE_PIECE bytes). */
#define CACHE_PIECE 64
#define CACHE_SLOTS (1u << 15)
#define CACHE_FILL (CACHE_SLOTS / 2)

static uint64_t bytes_hash(const void *p, size_t n)
{
	return hash64(p, n, 0x7469746eULL);
}

static uint64_t pair_key(uint32_t left, uint32_t right)
{
	return (uint64_t)left << 32 | right;
}

int tok_alloc(titan_tok **out, const char *format)
{
	titan_tok *t = calloc(1, sizeof *t);
	if (!t)
		return titan_err_nomem();
	t->format = format;
	t->bos = t->eos = -1;
	for (int b = 0; b < 256; b++)
		t->byte_id[b] = TOK_NONE;
	*out = t;
	return 0;
}

static void free_added(struct tok_added *added, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(added[i].content);
	free(added);
}

void tok_free(titan_tok *t)
{
	if (!t)
		return;
	free(t->blob);
	free(t->off);
	free(t->used);
	free(t->vtab);
	free(t->pairs);
	u32s_free(&t->mlist);
	tok_matchers_free(t);
	free_added(t->added, t->nadded);
	pretok_free(t->pt);
	free(t);
}

static size_t table_size(size_t n)
{
	size_t cap = 16;
	while (cap < n * 2)
		cap *= 2;
	return cap;
}

uint32_t tok_vocab_find(const titan_tok *t, const void *p, size_t n)
{
	if (!t->vtab)
		return TOK_NONE;
	size_t i = bytes_hash(p, n) & t->vmask;
	for (;; i = (i + 1) & t->vmask) {
		uint32_t id = t->vtab[i];
		if (id == TOK_NONE)
			return TOK_NONE;
		uint32_t len = t->off[id + 1] - t->off[id];
		if (len == n && !memcmp(t->blob + t->off[id], p, n))
			return id;
	}
}

static int cmp_added_id(const void *a, const void *b)
{
	const struct tok_added *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

int tok_set_vocab(titan_tok *t, const char *file, const char *where,
		  const uint8_t *blob, const uint32_t *toks, size_t ntoks,
		  struct tok_added *added, size_t nadded)
{
	t->added = added;
	t->nadded = nadded;
	if (nadded)
		qsort(t->added, nadded, sizeof *t->added, cmp_added_id);

	uint32_t nids = 0;
	size_t total = 0;
	for (size_t i = 0; i < ntoks; i++) {
		if (toks[3 * i] >= TOK_MAX_ID)
			return titan_err(TITAN_EFORMAT, "'%s': %s: id %u is too large (at most %u)",
					 file, where, toks[3 * i], TOK_MAX_ID - 1);
		nids = TITAN_MAX(nids, toks[3 * i] + 1);
		total += toks[3 * i + 2];
	}
	for (size_t i = 0; i < nadded; i++) {
		if (added[i].id >= TOK_MAX_ID)
			return titan_err(TITAN_EFORMAT,
					 "'%s': added token '%s': id %u is too large", file,
					 added[i].content, added[i].id);
		if (i && added[i].id == added[i - 1].id)
			return titan_err(TITAN_EFORMAT,
					 "'%s': added tokens '%s' and '%s' share id %u", file,
					 added[i - 1].content, added[i].content, added[i].id);
		nids = TITAN_MAX(nids, added[i].id + 1);
		total += added[i].len;
	}
	if (total >= UINT32_MAX)
		return titan_err(TITAN_EFORMAT, "'%s': %s: vocabulary too large", file, where);

	t->nids = nids;
	t->off = calloc((size_t)nids + 1, sizeof *t->off);
	t->used = calloc(nids ? nids : 1, 1);
	uint32_t *len = calloc(nids ? nids : 1, sizeof *len);
	const uint8_t **src = calloc(nids ? nids : 1, sizeof *src);
	t->vmask = table_size(ntoks) - 1;
	t->vtab = malloc((t->vmask + 1) * sizeof *t->vtab);
	t->blob = malloc(total ? total : 1);
	int rc = 0;
	if (!t->off || !t->used || !len || !src || !t->vtab || !t->blob) {
		rc = titan_err_nomem();
		goto out;
	}
	/* Model tokens, then added tokens on top: an added token's content is
	 * what its id decodes to. */
	for (size_t i = 0; i < ntoks; i++) {
		uint32_t id = toks[3 * i];
		if (t->used[id]) {
			rc = titan_err(TITAN_EFORMAT, "'%s': %s: id %u is given to two tokens",
				       file, where, id);
			goto out;
		}
		t->used[id] = 1;
		src[id] = blob + toks[3 * i + 1];
		len[id] = toks[3 * i + 2];
	}
	for (size_t i = 0; i < nadded; i++) {
		uint32_t id = added[i].id;
		if (t->used[id] && (len[id] != added[i].len ||
				    memcmp(src[id], added[i].content, len[id]))) {
			rc = titan_err(TITAN_EFORMAT, "'%s': added token '%s' has id %u, "
				       "which %s gives to another token", file,
				       added[i].content, id, where);
			goto out;
		}
		t->used[id] = 1;
		src[added[i].id] = (const uint8_t *)added[i].content;
		len[added[i].id] = (uint32_t)added[i].len;
	}
	uint32_t o = 0;
	for (uint32_t id = 0; id < nids; id++) {
		t->off[id] = o;
		if (len[id])
			memcpy(t->blob + o, src[id], len[id]);
		o += len[id];
	}
	t->off[nids] = o;

	memset(t->vtab, 0xff, (t->vmask + 1) * sizeof *t->vtab);
	for (size_t i = 0; i < ntoks; i++) {
		const uint8_t *p = blob + toks[3 * i + 1];
		uint32_t n = toks[3 * i + 2], id = toks[3 * i];
		size_t h = bytes_hash(p, n) & t->vmask;
		while (t->vtab[h] != TOK_NONE) {
			uint32_t other = t->vtab[h];
			if (t->off[other + 1] - t->off[other] == n &&
			    !memcmp(t->blob + t->off[other], p, n)) {
				rc = titan_err(TITAN_EFORMAT,
					       "'%s': %s: ids %u and %u are the same bytes",
					       file, where, other, id);
				goto out;
			}
			h = (h + 1) & t->vmask;
		}
		t->vtab[h] = id;
		if (n == 1)
			t->byte_id[p[0]] = id;
	}
out:
	free(len);
	free(src);
	return rc;
}

int tok_pairs_init(titan_tok *t, size_t n)
{
	/* At most two thirds full, not half: Llama 3's 280K merges then take
	 * 2^19 slots (8 MB), not 2^20 (16 MB), which is 13% of its load time
	 * and no change to encoding speed. */
	t->pmask = table_size((3 * n + 3) / 4) - 1;
	t->pairs = malloc((t->pmask + 1) * sizeof *t->pairs);
	if (!t->pairs)
		return titan_err_nomem();
	for (size_t i = 0; i <= t->pmask; i++)
		t->pairs[i].key = UINT64_MAX;
	return u32s_reserve(&t->mlist, 4 * n);
}

int tok_pair_add(titan_tok *t, uint32_t left, uint32_t right, uint32_t rank,
		 uint32_t merged)
{
	if (3 * (t->npairs + 1) > 2 * (t->pmask + 1)) {
		/* More than the hint: double and reinsert. */
		size_t ncap = (t->pmask + 1) * 2;
		struct tok_pair *np = malloc(ncap * sizeof *np);
		if (!np)
			return titan_err_nomem();
		for (size_t i = 0; i < ncap; i++)
			np[i].key = UINT64_MAX;
		for (size_t i = 0; i <= t->pmask; i++) {
			if (t->pairs[i].key == UINT64_MAX)
				continue;
			size_t h = hash_mix64(t->pairs[i].key) & (ncap - 1);
			while (np[h].key != UINT64_MAX)
				h = (h + 1) & (ncap - 1);
			np[h] = t->pairs[i];
		}
		free(t->pairs);
		t->pairs = np;
		t->pmask = ncap - 1;
	}
	uint64_t key = pair_key(left, right);
	size_t h = hash_mix64(key) & t->pmask;
	while (t->pairs[h].key != UINT64_MAX && t->pairs[h].key != key)
		h = (h + 1) & t->pmask;
	if (t->pairs[h].key == UINT64_MAX)
		t->npairs++;
	t->pairs[h] = (struct tok_pair){ key, rank, merged };
	uint32_t q[4] = { left, right, merged, rank };
	return u32s_append(&t->mlist, q, 4);
}

static inline const struct tok_pair *pair_find(const titan_tok *t, uint32_t left,
					       uint32_t right)
{
	uint64_t key = pair_key(left, right);
	size_t h = hash_mix64(key) & t->pmask;
	for (;; h = (h + 1) & t->pmask) {
		const struct tok_pair *p = &t->pairs[h];
		if (p->key == key)
			return p;
		if (p->key == UINT64_MAX)
			return NULL;
	}
}

static void put_u32(titan_bytes *b, uint32_t x, int *rc)
{
	uint8_t le[4] = { (uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16), (uint8_t)(x >> 24) };
	if (!*rc)
		*rc = bytes_append(b, le, 4);
}

static void put_bytes(titan_bytes *b, const void *p, size_t n, int *rc)
{
	put_u32(b, (uint32_t)n, rc);
	if (!*rc)
		*rc = bytes_append(b, p, n);
}

/* SHA-256 over a canonical form: a version tag, every id's bytes, the
 * merges in rank order, the added tokens, the pattern and the flags. */
static int content_hash(titan_tok *t, const char *pattern)
{
	titan_bytes b = {0};
	int rc = bytes_reserve(&b, t->off[t->nids] + 8 * (size_t)t->nids + 4 * t->mlist.n + 256);
	put_bytes(&b, "titan-tok 1", 11, &rc);
	put_u32(&b, t->nids, &rc);
	for (uint32_t id = 0; id < t->nids && !rc; id++) {
		put_u32(&b, t->used[id], &rc);
		put_bytes(&b, t->blob + t->off[id], t->off[id + 1] - t->off[id], &rc);
	}
	put_u32(&b, (uint32_t)(t->mlist.n / 4), &rc);
	for (size_t i = 0; i < t->mlist.n && !rc; i++)
		put_u32(&b, t->mlist.v[i], &rc);
	put_u32(&b, (uint32_t)t->nadded, &rc);
	for (size_t i = 0; i < t->nadded && !rc; i++) {
		put_u32(&b, t->added[i].id, &rc);
		put_u32(&b, t->added[i].special | t->added[i].normalized << 1 |
			t->added[i].lstrip << 2 | t->added[i].rstrip << 3, &rc);
		put_bytes(&b, t->added[i].content, t->added[i].len, &rc);
	}
	put_bytes(&b, pattern, strlen(pattern), &rc);
	put_u32(&b, t->ignore_merges, &rc);
	if (!rc) {
		uint8_t d[32];
		sha256(b.v, b.n, d);
		hex_encode(d, 32, t->hash);
	}
	bytes_free(&b);
	return rc;
}

int tok_finish(titan_tok *t, const char *pattern, const char *file)
{
	if (!t->pairs) {
		int rc = tok_pairs_init(t, 16);
		if (rc)
			return rc;
	}
	int rc = pretok_new(&t->pt, pattern);
	if (rc)
		return titan_err_prefix(rc, "'%s'", file);
	rc = tok_matchers_build(t);
	if (!rc)
		rc = content_hash(t, pattern);
	u32s_free(&t->mlist);
	return rc;
}

int64_t tok_find_named(const titan_tok *t, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].len == n && !memcmp(t->added[i].content, name, n))
			return t->added[i].id;
	uint32_t id = tok_vocab_find(t, name, n);
	return id == TOK_NONE ? -1 : (int64_t)id;
}

static int64_t find_special(const titan_tok *t, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].special && t->added[i].len == n &&
		    !memcmp(t->added[i].content, name, n))
			return t->added[i].id;
	return -1;
}

void tok_default_bos_eos(titan_tok *t)
{
	static const char *const bos[] = { "<|begin_of_text|>", "<s>" };
	static const char *const eos[] = { "<|end_of_text|>", "</s>", "<|endoftext|>" };
	for (size_t i = 0; i < ARRAY_SIZE(bos) && t->bos < 0; i++)
		t->bos = find_special(t, bos[i]);
	for (size_t i = 0; i < ARRAY_SIZE(eos) && t->eos < 0; i++)
		t->eos = find_special(t, eos[i]);
	if (t->bos < 0)
		t->bos = find_special(t, "<|endoftext|>");
}

/* Accessors */

uint32_t tok_vocab_size(const titan_tok *t) { return t->nids; }
int64_t tok_bos(const titan_tok *t) { return t->bos; }
int64_t tok_eos(const titan_tok *t) { return t->eos; }
const pretok *tok_pretok(const titan_tok *t) { return t->pt; }
const char *tok_source_format(const titan_tok *t) { return t->format; }
bool tok_ignore_merges(const titan_tok *t) { return t->ignore_merges; }
const char *tok_hash(const titan_tok *t) { return t->hash; }
size_t tok_added_count(const titan_tok *t) { return t->nadded; }

const char *tok_added(const titan_tok *t, size_t i, uint32_t *id, bool *special)
{
	if (i >= t->nadded)
		return NULL;
	if (id)
		*id = t->added[i].id;
	if (special)
		*special = t->added[i].special;
	return t->added[i].content;
}

const uint8_t *tok_token_bytes(const titan_tok *t, uint32_t id, size_t *len)
{
	if (id >= t->nids || !t->used[id])
		return NULL;
	*len = t->off[id + 1] - t->off[id];
	return t->blob + t->off[id];
}

int64_t tok_token_id(const titan_tok *t, const void *p, size_t n)
{
	uint32_t id = tok_vocab_find(t, p, n);
	if (id != TOK_NONE)
		return id;
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].len == n && !memcmp(t->added[i].content, p, n))
			return t->added[i].id;
	return -1;
}

/* The encoder */

struct cache_slot {
	uint64_t h;     /* 0: empty */
	uint32_t koff;  /* key bytes in keys */
	uint32_t ioff;  /* ids in ids */
	uint16_t klen;
	uint16_t nids;
};

struct heap_ent {
	uint64_t key;   /* rank << 32 | position: lowest rank, then leftmost */
	uint32_t id;    /* the merged id the pair had when pushed */
};

struct tok_encoder {
	const titan_tok *t;
	struct cache_slot *slots;
	size_t nslots_used;
	titan_bytes keys;
	titan_u32s ids;
	/* long-piece scratch */
	uint32_t *sym, *next, *prev;
	struct heap_ent *heap;
	size_t scap;
};

int tok_encoder_new(tok_encoder **out, const titan_tok *t)
{
	tok_encoder *e = calloc(1, sizeof *e);
	if (!e)
		return titan_err_nomem();
	e->t = t;
	e->slots = calloc(CACHE_SLOTS, sizeof *e->slots);
	if (!e->slots) {
		free(e);
		return titan_err_nomem();
	}
	*out = e;
	return 0;
}

void tok_encoder_free(tok_encoder *e)
{
	if (!e)
		return;
	free(e->slots);
	bytes_free(&e->keys);
	u32s_free(&e->ids);
	free(e->sym);
	free(e->next);
	free(e->prev);
	free(e->heap);
	free(e);
}

static void cache_clear(tok_encoder *e)
{
	memset(e->slots, 0, CACHE_SLOTS * sizeof *e->slots);
	e->nslots_used = 0;
	e->keys.n = 0;
	e->ids.n = 0;
}

static struct cache_slot *cache_find(tok_encoder *e, const uint8_t *p, size_t n, uint64_t h)
{
	size_t i = h & (CACHE_SLOTS - 1);
	for (;; i = (i + 1) & (CACHE_SLOTS - 1)) {
		struct cache_slot *s = &e->slots[i];
		if (!s->h || (s->h == h && s->klen == n && !memcmp(e->keys.v + s->koff, p, n)))
			return s;
	}
}

static int cache_put(tok_encoder *e, struct cache_slot *s, const uint8_t *p, size_t n,
		     uint64_t h, const uint32_t *ids, size_t nids)
{
	s->h = h;
	s->koff = (uint32_t)e->keys.n;
	s->klen = (uint16_t)n;
	s->ioff = (uint32_t)e->ids.n;
	s->nids = (uint16_t)nids;
	e->nslots_used++;
	int rc = bytes_append(&e->keys, p, n);
	if (!rc)
		rc = u32s_append(&e->ids, ids, nids);
	if (rc)
		cache_clear(e);
	return rc;
}

/* Merge a piece of at most SHORT_PIECE bytes: rank[i] is the pair
 * (sym[i], sym[i+1]); each round merges the first lowest. */
static size_t merge_short(const titan_tok *t, const uint8_t *p, size_t n, uint32_t *sym)
{
	uint32_t rank[SHORT_PIECE], made[SHORT_PIECE];
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t id = t->byte_id[p[i]];
		if (id != TOK_NONE)
			sym[m++] = id;
	}
	if (m < 2)
		return m;
	for (size_t i = 0; i + 1 < m; i++) {
		const struct tok_pair *q = pair_find(t, sym[i], sym[i + 1]);
		rank[i] = q ? q->rank : UINT32_MAX;
		made[i] = q ? q->id : 0;
	}
	rank[m - 1] = UINT32_MAX;
	while (m > 1) {
		size_t best = 0;
		for (size_t i = 1; i + 1 < m; i++)
			if (rank[i] < rank[best])
				best = i;
		if (rank[best] == UINT32_MAX)
			break;
		sym[best] = made[best];
		memmove(sym + best + 1, sym + best + 2, (m - best - 2) * sizeof *sym);
		memmove(rank + best + 1, rank + best + 2, (m - best - 2) * sizeof *rank);
		memmove(made + best + 1, made + best + 2, (m - best - 2) * sizeof *made);
		m--;
		rank[m - 1] = UINT32_MAX;
		for (size_t i = best ? best - 1 : 0; i <= best && i + 1 < m; i++) {
			const struct tok_pair *q = pair_find(t, sym[i], sym[i + 1]);
			rank[i] = q ? q->rank : UINT32_MAX;
			made[i] = q ? q->id : 0;
		}
	}
	return m;
}

static void heap_push(struct heap_ent *h, size_t *n, struct heap_ent x)
{
	size_t i = (*n)++;
	while (i) {
		size_t up = (i - 1) / 2;
		if (h[up].key <= x.key)
			break;
		h[i] = h[up];
		i = up;
	}
	h[i] = x;
}

static struct heap_ent heap_pop(struct heap_ent *h, size_t *n)
{
	struct heap_ent top = h[0], x = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && h[c + 1].key < h[c].key)
			c++;
		if (x.key <= h[c].key)
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
	return top;
}

/* Queue the pair at position pos (q: its merge). */
static void push_pair(struct heap_ent *h, size_t *n, const struct tok_pair *q, uint32_t pos)
{
	heap_push(h, n, (struct heap_ent){ (uint64_t)q->rank << 32 | pos, q->id });
}

static int scratch_grow(tok_encoder *e, size_t n)
{
	if (n <= e->scap)
		return 0;
	size_t cap = TITAN_MAX(n, 2 * e->scap);
	uint32_t *a = realloc(e->sym, cap * sizeof *a);
	if (a)
		e->sym = a;
	uint32_t *b = realloc(e->next, cap * sizeof *b);
	if (b)
		e->next = b;
	uint32_t *c = realloc(e->prev, cap * sizeof *c);
	if (c)
		e->prev = c;
	struct heap_ent *d = realloc(e->heap, 2 * cap * sizeof *d);
	if (d)
		e->heap = d;
	if (!a || !b || !c || !d)
		return titan_err_nomem();
	e->scap = cap;
	return 0;
}

/* Merge a long piece with a heap of candidate pairs over a linked list of
 * symbols.  An entry is stale when its left symbol is gone or the pair at
 * its position now makes another token; a pair's concatenation only grows,
 * so an entry that still makes the same token is still the same pair. */
static int merge_long(tok_encoder *e, const uint8_t *p, size_t n, titan_u32s *out)
{
	const titan_tok *t = e->t;
	if (n >= TOK_NONE)
		return titan_err(TITAN_ERANGE, "a pre-token of %zu bytes is too long to encode", n);
	int rc = scratch_grow(e, n);
	if (rc)
		return rc;
	uint32_t *sym = e->sym, *next = e->next, *prev = e->prev;
	size_t m = 0, nh = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t id = t->byte_id[p[i]];
		if (id == TOK_NONE)
			continue;
		sym[m] = id;
		prev[m] = m ? (uint32_t)m - 1 : TOK_NONE;
		next[m] = (uint32_t)m + 1;
		m++;
	}
	if (!m)
		return 0;
	next[m - 1] = TOK_NONE;
	for (size_t i = 0; i + 1 < m; i++) {
		const struct tok_pair *q = pair_find(t, sym[i], sym[i + 1]);
		if (q)
			push_pair(e->heap, &nh, q, (uint32_t)i);
	}
	while (nh) {
		struct heap_ent top = heap_pop(e->heap, &nh);
		uint32_t i = (uint32_t)top.key, j = next[i];
		if (sym[i] == TOK_NONE || j == TOK_NONE)
			continue;
		const struct tok_pair *q = pair_find(t, sym[i], sym[j]);
		if (!q || q->id != top.id)
			continue;
		sym[i] = q->id;
		sym[j] = TOK_NONE;
		next[i] = next[j];
		if (next[j] != TOK_NONE)
			prev[next[j]] = i;
		/* Each merge pops one entry and pushes at most two, and there
		 * are fewer than m merges: the heap stays under 2m. */
		if (prev[i] != TOK_NONE) {
			uint32_t l = prev[i];
			q = pair_find(t, sym[l], sym[i]);
			if (q)
				push_pair(e->heap, &nh, q, l);
		}
		if (next[i] != TOK_NONE) {
			q = pair_find(t, sym[i], sym[next[i]]);
			if (q)
				push_pair(e->heap, &nh, q, i);
		}
	}
	rc = u32s_reserve(out, m);
	for (uint32_t i = 0; i != TOK_NONE && !rc; i = next[i])
		out->v[out->n++] = sym[i];
	return rc;
}

static int encode_piece(tok_encoder *e, const uint8_t *p, size_t n, titan_u32s *out)
{
	const titan_tok *t = e->t;
	if (n == 1) {
		uint32_t id = t->byte_id[p[0]];
		return id == TOK_NONE ? 0 : u32s_push(out, id);
	}
	if (t->ignore_merges) {
		uint32_t id = tok_vocab_find(t, p, n);
		if (id != TOK_NONE)
			return u32s_push(out, id);
	}
	if (n > SHORT_PIECE)
		return merge_long(e, p, n, out);

	struct cache_slot *s = NULL;
	uint64_t h = 0;
	if (n <= CACHE_PIECE) {
		h = bytes_hash(p, n) | 1;
		s = cache_find(e, p, n, h);
		if (s->h)
			return s->nids ? u32s_append(out, e->ids.v + s->ioff, s->nids) : 0;
	}
	uint32_t sym[SHORT_PIECE];
	size_t m = merge_short(t, p, n, sym);
	int rc = u32s_append(out, sym, m);
	if (rc || !s)
		return rc;
	if (e->nslots_used >= CACHE_FILL) {
		cache_clear(e);
		s = cache_find(e, p, n, h);
	}
	return cache_put(e, s, p, n, h, sym, m);
}

/* Text with no added tokens in it: pre-tokenize, then BPE each piece. */
static int encode_plain(tok_encoder *e, const uint8_t *s, size_t n, titan_u32s *out)
{
	if (!n)
		return 0;
	pretok_iter it;
	int rc = pretok_iter_init(&it, e->t->pt, s, n);
	if (rc)
		return rc;
	size_t a, b;
	while ((rc = pretok_iter_next(&it, &a, &b)) > 0) {
		rc = encode_piece(e, s + a, b - a, out);
		if (rc)
			break;
	}
	pretok_iter_fini(&it);
	return rc < 0 ? rc : 0;
}

/* Split on added tokens the way Hugging Face does: first those matched on
 * the raw text (normalized=false), then, in the gaps, the others. */
static int encode_level(tok_encoder *e, int level, const uint8_t *s, size_t n,
			titan_u32s *out)
{
	if (level == 2)
		return encode_plain(e, s, n, out);
	const titan_tok *t = e->t;
	const struct tok_matcher *m = &t->match[level];
	if (!m->n)
		return encode_level(e, level + 1, s, n, out);
	/* As Hugging Face does it: the search goes on after each match, and
	 * lstrip/rstrip widen what the match covers, never before the end of
	 * the previous one for lstrip. */
	size_t pos = 0, done = 0;
	int rc = 0;
	while (pos < n && !rc) {
		size_t len, k;
		size_t at = pos + tok_match_find(t, m, s + pos, n - pos, &len, &k);
		if (at == n)
			break;
		size_t start = at, stop = at + len;
		pos = stop;
		if (t->added[k].lstrip)
			start = TITAN_MAX(tok_space_before(s, start), done);
		if (t->added[k].rstrip)
			stop += tok_space_after(s + stop, n - stop);
		if (done < start)
			rc = encode_level(e, level + 1, s + done, start - done, out);
		if (!rc)
			rc = u32s_push(out, t->added[k].id);
		done = stop;
	}
	if (!rc && done < n)
		rc = encode_level(e, level + 1, s + done, n - done, out);
	return rc;
}

int tok_encode(tok_encoder *e, const uint8_t *text, size_t n, titan_u32s *out)
{
	return encode_level(e, 0, text, n, out);
}

size_t tok_next_cut(const titan_tok *t, const uint8_t *text, size_t n, size_t from)
{
	if (t->cut_unsafe || from >= n)
		return n;
	const uint8_t *nl = from ? memchr(text + from - 1, '\n', n - from + 1) : memchr(text, '\n', n);
	while (nl && !pretok_can_cut(t->pt, text, n, (size_t)(nl + 1 - text)))
		nl = memchr(nl + 1, '\n', (size_t)(text + n - nl - 1));
	return nl ? (size_t)(nl + 1 - text) : n;
}

int tok_decode(const titan_tok *t, const uint32_t *ids, size_t n, titan_bytes *out)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t id = ids[i];
		if (id >= t->nids || !t->used[id])
			return titan_err(TITAN_ERANGE,
					 "token id %u at index %zu is %s (vocabulary size %u)",
					 id, i, id >= t->nids ? "out of range" : "unused", t->nids);
		int rc = bytes_append(out, t->blob + t->off[id], t->off[id + 1] - t->off[id]);
		if (rc)
			return rc;
	}
	return 0;
}

int tok_load(titan_tok **out, const char *path, const tok_load_opts *opts)
{
	*out = NULL;
	if (tok_is_tiktoken(path))
		return tok_load_tiktoken(out, path, opts);
	return tok_load_json(out, path);
}
