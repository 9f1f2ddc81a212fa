/* train.c - byte-level BPE training.
 *
 * Three phases.  Counting: documents are read on the calling thread into
 * batches of about a megabyte, and pool workers pre-tokenize the batches,
 * each counting pieces into its own map; the maps are summed at the end, so
 * the counts are exact whatever the thread count.  Merging: the distinct
 * pieces, sorted by their bytes, become words (symbol sequences in one flat
 * array); pair counts are weighted by the words' counts and each pair knows
 * the words it occurs in, so a merge touches only those words and adjusts
 * the counts of the pairs around each occurrence.  The best pair comes off a
 * max-heap whose stale entries are dropped when popped (lazy invalidation).
 * Writing: a Hugging Face tokenizer.json.
 *
 * Special tokens are not cut out of the training text: text that spells one
 * is trained on like any other text, and the specials are only added to the
 * vocabulary after the merges. */
#include "core/base.h"
#include "core/buf.h"
#include "core/hash.h"
#include "core/json.h"
#include "core/log.h"
#include "core/pool.h"
#include "tok/pretok.h"
#include "tok/train.h"

enum {
	BATCH_BYTES = 1 << 20,     /* text handed to one counting task */
	BATCHES_PER_THREAD = 4,    /* batches read before the workers start */
	DEFAULT_MIN_FREQUENCY = 2,
};

#define DEFAULT_PATTERN "llama3"
#define PAIR_NONE UINT32_MAX            /* pair.merged: never merged */
#define PAIR_FORBIDDEN (UINT32_MAX - 1) /* pair.merged: would spell a special */

/* A hash map from byte strings to a non-zero count (open addressing, linear
 * probing); the keys live back to back in one buffer. */
struct smap_slot {
	uint64_t hash;
	uint64_t off;
	uint64_t val;   /* 0: the slot is empty */
	uint32_t len;
};

struct smap {
	struct smap_slot *slot;
	size_t cap, n;  /* cap is 0 or a power of two */
	titan_bytes keys;
};

static void smap_free(struct smap *m)
{
	free(m->slot);
	bytes_free(&m->keys);
	memset(m, 0, sizeof *m);
}

static int smap_grow(struct smap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 4096;
	struct smap_slot *s = calloc(cap, sizeof *s);

	if (!s)
		return titan_err_nomem();
	for (size_t i = 0; i < m->cap; i++) {
		const struct smap_slot *o = &m->slot[i];
		if (!o->val)
			continue;
		size_t j = o->hash & (cap - 1);
		while (s[j].val)
			j = (j + 1) & (cap - 1);
		s[j] = *o;
	}
	free(m->slot);
	m->slot = s;
	m->cap = cap;
	return 0;
}

static struct smap_slot *smap_find(const struct smap *m, const uint8_t *p,
				   uint32_t n, uint64_t h)
{
	size_t mask = m->cap - 1;

	for (size_t i = h & mask;; i = (i + 1) & mask) {
		struct smap_slot *s = &m->slot[i];
		if (!s->val || (s->hash == h && s->len == n &&
				!memcmp(m->keys.v + s->off, p, n)))
			return s;
	}
}

/* Add delta (> 0) to the value of key p[0..n), whose hash is h. */
static int smap_add(struct smap *m, const uint8_t *p, uint32_t n, uint64_t h,
		    uint64_t delta)
{
	int rc;

	if ((m->n + 1) * 4 > m->cap * 3 && (rc = smap_grow(m)))
		return rc;
	struct smap_slot *s = smap_find(m, p, n, h);
	if (s->val) {
		s->val += delta;
		return 0;
	}
	if ((rc = bytes_append(&m->keys, p, n)))
		return rc;
	s->hash = h;
	s->off = m->keys.n - n;
	s->len = n;
	s->val = delta;
	m->n++;
	return 0;
}

static uint64_t smap_get(const struct smap *m, const uint8_t *p, uint32_t n)
{
	return m->cap ? smap_find(m, p, n, hash64(p, n, 0))->val : 0;
}

/* Make room for need elements of size elem in *v, which holds *cap. */
static int grow(void *v, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 16;
	while (ncap < need)
		ncap *= 2;
	void *p = realloc(*(void **)v, ncap * elem);
	if (!p)
		return titan_err_nomem();
	*(void **)v = p;
	*cap = ncap;
	return 0;
}

/* Counting. */

struct batch {
	titan_bytes text;
	size_t *ends;   /* end of each document in text */
	size_t nends, capends;
};

struct counter {
	const pretok *pt;
	struct batch *batch;
	size_t nbatch;
	struct smap *map;       /* one per worker */
	uint64_t *npieces;      /* one per worker */
};

static int count_task(void *arg, size_t task, int worker)
{
	struct counter *c = arg;
	const struct batch *b = &c->batch[task];
	struct smap *m = &c->map[worker];
	size_t start = 0;
	int rc = 0;

	for (size_t d = 0; d < b->nends && !rc; start = b->ends[d++]) {
		pretok_iter it;
		size_t s, e;

		rc = pretok_iter_init(&it, c->pt, b->text.v + start, b->ends[d] - start);
		if (rc)
			return rc;
		while ((rc = pretok_iter_next(&it, &s, &e)) > 0) {
			const uint8_t *p = b->text.v + start + s;
			if (e - s > UINT32_MAX) {
				rc = titan_err(TITAN_EFORMAT, "a piece of %zu bytes is too long to train on",
					       e - s);
				break;
			}
			rc = smap_add(m, p, e - s, hash64(p, e - s, 0), 1);
			if (rc)
				break;
			c->npieces[worker]++;
		}
		pretok_iter_fini(&it);
	}
	return rc < 0 ? rc : 0;
}

static int batch_add(struct batch *b, const uint8_t *p, size_t n)
{
	int rc = bytes_append(&b->text, p, n);

	if (!rc)
		rc = grow(&b->ends, &b->capends, b->nends + 1, sizeof *b->ends);
	if (!rc)
		b->ends[b->nends++] = b->text.n;
	return rc;
}

/* Where to cut a document p[0..n) after at least want bytes: just after a
 * '\n' that a letter follows, a boundary every splittable pattern keeps.
 * Returns n when there is no such point. */
static size_t cut_point(const uint8_t *p, size_t n, size_t want)
{
	size_t i = want ? want - 1 : 0;

	while (i + 1 < n) {
		const uint8_t *nl = memchr(p + i, '\n', n - 1 - i);
		if (!nl)
			break;
		i = nl - p + 1;
		if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'z')
			return i;
	}
	return n;
}

static int count_round(struct counter *c, titan_pool *pool, size_t nbatch)
{
	int rc = 0;

	if (pool)
		rc = pool_run(pool, nbatch, count_task, c);
	else
		for (size_t i = 0; i < nbatch && !rc; i++)
			rc = count_task(c, i, 0);
	for (size_t i = 0; i < nbatch; i++) {
		c->batch[i].text.n = 0;
		c->batch[i].nends = 0;
	}
	return rc;
}

static void count_progress(titan_log *log, ingest *in, uint64_t ndocs, bool force)
{
	char label[64];

	if (!log)
		return;
	snprintf(label, sizeof label, "counting %llu docs", (unsigned long long)ndocs);
	log_progress(log, label, ingest_bytes_done(in) / 1e6,
		     ingest_bytes_total(in) / 1e6, "MB", force);
}

/* Count the pieces of every document of in into *out. */
static int count_pieces(const pretok *pt, ingest *in, titan_pool *pool,
			titan_log *log, struct smap *out, uint64_t *npieces)
{
	int nthreads = pool ? pool_threads(pool) : 1;
	struct counter c = { .pt = pt, .nbatch = (size_t)nthreads * BATCHES_PER_THREAD };
	bool splittable = pretok_splittable(pt);
	uint64_t ndocs = 0;
	size_t cur = 0;
	ingest_doc doc;
	int rc = TITAN_ENOMEM;

	c.batch = calloc(c.nbatch, sizeof *c.batch);
	c.map = calloc(nthreads, sizeof *c.map);
	c.npieces = calloc(nthreads, sizeof *c.npieces);
	if (!c.batch || !c.map || !c.npieces) {
		titan_err_nomem();
		goto out;
	}
	while ((rc = ingest_next(in, &doc)) > 0) {
		const uint8_t *p = doc.text;
		size_t left = doc.len;

		ndocs++;
		while (left) {
			struct batch *b = &c.batch[cur];
			size_t room = BATCH_BYTES - TITAN_MIN(b->text.n, (size_t)BATCH_BYTES);
			size_t take = left > room && splittable ? cut_point(p, left, room) : left;

			if ((rc = batch_add(b, p, take)))
				goto out;
			p += take;
			left -= take;
			if (b->text.n >= BATCH_BYTES && ++cur == c.nbatch) {
				if ((rc = count_round(&c, pool, cur)))
					goto out;
				cur = 0;
			}
		}
		count_progress(log, in, ndocs, false);
	}
	if (rc < 0)
		goto out;
	if ((rc = count_round(&c, pool, cur + (c.batch[cur].nends > 0))))
		goto out;
	count_progress(log, in, ndocs, true);
	if (log)
		log_progress_end(log);

	/* Sum the workers' maps into the first. */
	*npieces = c.npieces[0];
	for (int w = 1; w < nthreads; w++) {
		const struct smap *m = &c.map[w];
		for (size_t i = 0; i < m->cap; i++) {
			const struct smap_slot *s = &m->slot[i];
			if (s->val && (rc = smap_add(&c.map[0], m->keys.v + s->off,
						     s->len, s->hash, s->val)))
				goto out;
		}
		*npieces += c.npieces[w];
		smap_free(&c.map[w]);
	}
	*out = c.map[0];
	memset(&c.map[0], 0, sizeof c.map[0]);
out:
	for (size_t i = 0; c.batch && i < c.nbatch; i++) {
		bytes_free(&c.batch[i].text);
		free(c.batch[i].ends);
	}
	for (int w = 0; c.map && w < nthreads; w++)
		smap_free(&c.map[w]);
	free(c.batch);
	free(c.map);
	free(c.npieces);
	return rc;
}

/* Merging. */

struct pair {
	uint32_t a, b;
	uint32_t merged;    /* PAIR_NONE, PAIR_FORBIDDEN or the token it became */
	uint32_t stamp;     /* the merge that last put it on the touched list */
	int64_t count;      /* occurrences, weighted by the words' counts */
	titan_u32s words;   /* words it occurs in (maybe stale or repeated) */
};

struct heap_ent {
	int64_t count;      /* the pair's count when pushed */
	uint32_t pair;
};

struct trainer {
	const tok_train_opts *o;
	uint64_t min_freq;
	uint32_t target;        /* tokens before the specials */
	uint32_t byte_cp[256];  /* GPT-2's bytes_to_unicode */

	/* The distinct pieces, as symbol sequences: word w is
	 * sym[wstart[w] .. wstart[w] + wlen[w]). */
	uint32_t *sym;
	size_t *wstart;
	uint32_t *wlen;
	uint64_t *wcount;
	uint32_t *wstamp;       /* the merge that last rewrote the word */
	size_t nwords;

	/* Token id -> bytes tokb.v[toff[id]..+tlen[id]), and back. */
	titan_bytes tokb;
	size_t *toff;
	uint32_t *tlen;
	uint32_t ntok;
	size_t captoff, captlen;
	struct smap tokmap;     /* bytes -> id + 1 */

	/* Specials spelled in bytes-to-unicode characters: their bytes (a
	 * learned token with those bytes would collide with the special in
	 * model.vocab), or empty when not so spelled. */
	titan_bytes *special_bytes;

	uint32_t *pslot;        /* pair index + 1, 0 empty */
	size_t pcap;
	struct pair *pair;
	size_t npair, cappair;
	titan_u32s touched;     /* pairs whose count rose in this merge */
	uint32_t gen;           /* merges applied so far */

	struct heap_ent *heap;
	size_t nheap, capheap;

	titan_u32s merges;      /* left, right ids of each merge, in order */
};

static int tok_cmp(const struct trainer *t, uint32_t x, uint32_t y)
{
	uint32_t lx = t->tlen[x], ly = t->tlen[y];
	int c = memcmp(t->tokb.v + t->toff[x], t->tokb.v + t->toff[y], TITAN_MIN(lx, ly));

	return c ? c : (lx > ly) - (lx < ly);
}

/* Heap order: higher count first, then the smaller left token's bytes, then
 * the smaller right token's bytes; never the hash map's order. */
static bool ent_before(const struct trainer *t, const struct heap_ent *x,
		       const struct heap_ent *y)
{
	if (x->count != y->count)
		return x->count > y->count;
	const struct pair *p = &t->pair[x->pair], *q = &t->pair[y->pair];
	int c = tok_cmp(t, p->a, q->a);
	if (!c)
		c = tok_cmp(t, p->b, q->b);
	return c < 0;
}

static int heap_push(struct trainer *t, uint32_t pair, int64_t count)
{
	int rc = grow(&t->heap, &t->capheap, t->nheap + 1, sizeof *t->heap);

	if (rc)
		return rc;
	struct heap_ent e = { count, pair };
	size_t i = t->nheap++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!ent_before(t, &e, &t->heap[up]))
			break;
		t->heap[i] = t->heap[up];
		i = up;
	}
	t->heap[i] = e;
	return 0;
}

static struct heap_ent heap_pop(struct trainer *t)
{
	struct heap_ent top = t->heap[0], e = t->heap[--t->nheap];
	size_t i = 0, n = t->nheap;

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && ent_before(t, &t->heap[c + 1], &t->heap[c]))
			c++;
		if (!ent_before(t, &t->heap[c], &e))
			break;
		t->heap[i] = t->heap[c];
		i = c;
	}
	if (n)
		t->heap[i] = e;
	return top;
}

static uint32_t *pair_slot(const struct trainer *t, uint32_t a, uint32_t b)
{
	size_t mask = t->pcap - 1;

	for (size_t i = hash_mix64((uint64_t)a << 32 | b) & mask;; i = (i + 1) & mask) {
		uint32_t k = t->pslot[i];
		if (!k || (t->pair[k - 1].a == a && t->pair[k - 1].b == b))
			return &t->pslot[i];
	}
}

static int pair_rehash(struct trainer *t)
{
	size_t cap = t->pcap ? t->pcap * 2 : 1 << 16;
	uint32_t *old = t->pslot;

	if (!(t->pslot = calloc(cap, sizeof *t->pslot))) {
		t->pslot = old;
		return titan_err_nomem();
	}
	t->pcap = cap;
	for (size_t i = 0; i < t->npair; i++)
		*pair_slot(t, t->pair[i].a, t->pair[i].b) = i + 1;
	free(old);
	return 0;
}

/* Add delta occurrences of pair (a, b), which word w holds (delta > 0) or
 * held (delta < 0). */
static int pair_add(struct trainer *t, uint32_t a, uint32_t b, int64_t delta, uint32_t w)
{
	int rc;

	if ((t->npair + 1) * 2 > t->pcap && (rc = pair_rehash(t)))
		return rc;
	uint32_t *slot = pair_slot(t, a, b);
	if (!*slot) {
		if (t->npair >= UINT32_MAX - 1)
			return titan_err(TITAN_ERANGE, "more than 2^32 distinct pairs");
		if ((rc = grow(&t->pair, &t->cappair, t->npair + 1, sizeof *t->pair)))
			return rc;
		t->pair[t->npair] = (struct pair){ .a = a, .b = b, .merged = PAIR_NONE };
		*slot = ++t->npair;
	}
	struct pair *p = &t->pair[*slot - 1];
	p->count += delta;
	if (delta < 0) {
		/* No word holds it any more: its list is dead weight. */
		if (p->count <= 0)
			u32s_free(&p->words);
		return 0;
	}
	if (!p->words.n || p->words.v[p->words.n - 1] != w)
		if ((rc = u32s_push(&p->words, w)))
			return rc;
	if (p->stamp != t->gen) {
		p->stamp = t->gen;
		if ((rc = u32s_push(&t->touched, *slot - 1)))
			return rc;
	}
	return 0;
}

static int add_token(struct trainer *t, const uint8_t *p, uint32_t n)
{
	int rc = grow(&t->toff, &t->captoff, t->ntok + 1, sizeof *t->toff);

	if (!rc)
		rc = grow(&t->tlen, &t->captlen, t->ntok + 1, sizeof *t->tlen);
	if (!rc)
		rc = smap_add(&t->tokmap, p, n, hash64(p, n, 0), (uint64_t)t->ntok + 1);
	if (rc)
		return rc;
	t->toff[t->ntok] = p - t->tokb.v;
	t->tlen[t->ntok] = n;
	t->ntok++;
	return 0;
}

/* Words out of the counted pieces, in byte order of the pieces so that
 * nothing downstream depends on the hash map's layout. */
struct piece_ref {
	const uint8_t *p;
	uint32_t len;
	uint64_t count;
};

static int piece_cmp(const void *x, const void *y)
{
	const struct piece_ref *a = x, *b = y;
	int c = memcmp(a->p, b->p, TITAN_MIN(a->len, b->len));

	return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int make_words(struct trainer *t, const struct smap *m)
{
	struct piece_ref *ref = malloc(m->n * sizeof *ref);
	size_t nsym = 0, k = 0;
	int rc = 0;

	if (!ref)
		return titan_err_nomem();
	for (size_t i = 0; i < m->cap; i++) {
		const struct smap_slot *s = &m->slot[i];
		if (s->val) {
			ref[k++] = (struct piece_ref){ m->keys.v + s->off, s->len, s->val };
			nsym += s->len;
		}
	}
	qsort(ref, k, sizeof *ref, piece_cmp);
	if (k > UINT32_MAX) {
		rc = titan_err(TITAN_ERANGE, "%zu distinct pieces: more than 2^32", k);
		goto out;
	}
	t->nwords = k;
	t->sym = malloc((nsym ? nsym : 1) * sizeof *t->sym);
	t->wstart = malloc((k ? k : 1) * sizeof *t->wstart);
	t->wlen = malloc((k ? k : 1) * sizeof *t->wlen);
	t->wcount = malloc((k ? k : 1) * sizeof *t->wcount);
	t->wstamp = calloc(k ? k : 1, sizeof *t->wstamp);
	if (!t->sym || !t->wstart || !t->wlen || !t->wcount || !t->wstamp) {
		rc = titan_err_nomem();
		goto out;
	}
	nsym = 0;
	for (size_t w = 0; w < k; w++) {
		t->wstart[w] = nsym;
		t->wlen[w] = ref[w].len;
		t->wcount[w] = ref[w].count;
		for (uint32_t i = 0; i < ref[w].len; i++)
			t->sym[nsym++] = ref[w].p[i];
	}
out:
	free(ref);
	return rc;
}

static int count_pairs(struct trainer *t)
{
	int rc;

	for (size_t w = 0; w < t->nwords; w++) {
		const uint32_t *s = t->sym + t->wstart[w];
		for (uint32_t i = 0; i + 1 < t->wlen[w]; i++)
			if ((rc = pair_add(t, s[i], s[i + 1], (int64_t)t->wcount[w], w)))
				return rc;
	}
	for (size_t i = 0; i < t->npair; i++)
		if ((rc = heap_push(t, i, t->pair[i].count)))
			return rc;
	t->touched.n = 0;
	return 0;
}

/* Replace each (a, b) in word w by x, left to right, moving the counts of
 * the pairs around each occurrence.  The left neighbour is read from the
 * rewritten part, so "a b a b" ends as "x x" with (x, x) counted once. */
static int merge_word(struct trainer *t, uint32_t w, uint32_t a, uint32_t b, uint32_t x)
{
	uint32_t *s = t->sym + t->wstart[w];
	uint32_t n = t->wlen[w], k = 0;
	int64_t c = (int64_t)t->wcount[w];
	int rc;

	for (uint32_t i = 0; i < n;) {
		if (i + 1 < n && s[i] == a && s[i + 1] == b) {
			if (k > 0 && ((rc = pair_add(t, s[k - 1], a, -c, w)) ||
				      (rc = pair_add(t, s[k - 1], x, c, w))))
				return rc;
			if (i + 2 < n && ((rc = pair_add(t, b, s[i + 2], -c, w)) ||
					  (rc = pair_add(t, x, s[i + 2], c, w))))
				return rc;
			s[k++] = x;
			i += 2;
		} else {
			s[k++] = s[i++];
		}
	}
	t->wlen[w] = k;
	return 0;
}

static int apply_merge(struct trainer *t, uint32_t pi, uint32_t x)
{
	struct pair *p = &t->pair[pi];
	uint32_t a = p->a, b = p->b;
	titan_u32s words = p->words;
	int rc = 0;

	memset(&p->words, 0, sizeof p->words);
	t->gen++;
	for (size_t i = 0; i < words.n && !rc; i++) {
		uint32_t w = words.v[i];
		if (t->wstamp[w] == t->gen)
			continue;
		t->wstamp[w] = t->gen;
		rc = merge_word(t, w, a, b, x);
	}
	u32s_free(&words);
	if (rc)
		return rc;
	p = &t->pair[pi];
	p->count = 0;
	u32s_free(&p->words);
	for (size_t i = 0; i < t->touched.n && !rc; i++) {
		uint32_t q = t->touched.v[i];
		if (t->pair[q].count > 0)
			rc = heap_push(t, q, t->pair[q].count);
	}
	t->touched.n = 0;
	return rc;
}

static bool spells_special(const struct trainer *t, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < t->o->nspecials; i++) {
		const titan_bytes *s = &t->special_bytes[i];
		if (s->n == n && !memcmp(s->v, p, n))
			return true;
	}
	return false;
}

/* The token pair pi makes: an existing one, a new one, or PAIR_FORBIDDEN. */
static int merged_token(struct trainer *t, uint32_t pi, uint32_t *x)
{
	const struct pair *p = &t->pair[pi];
	uint32_t la = t->tlen[p->a], lb = t->tlen[p->b];
	int rc = bytes_reserve(&t->tokb, (size_t)la + lb);

	if (rc)
		return rc;
	if ((uint64_t)la + lb > UINT32_MAX)
		return titan_err(TITAN_ERANGE, "a token longer than 4 GiB");
	uint8_t *q = t->tokb.v + t->tokb.n;
	memcpy(q, t->tokb.v + t->toff[p->a], la);
	memcpy(q + la, t->tokb.v + t->toff[p->b], lb);
	uint64_t id = smap_get(&t->tokmap, q, la + lb);
	if (id) {
		*x = id - 1;
		return 0;
	}
	if (spells_special(t, q, la + lb)) {
		*x = PAIR_FORBIDDEN;
		return 0;
	}
	t->tokb.n += la + lb;
	*x = t->ntok;
	return add_token(t, q, la + lb);
}

static int learn_merges(struct trainer *t, titan_log *log)
{
	int rc;

	while (t->ntok < t->target && t->nheap) {
		struct heap_ent top = heap_pop(t);
		struct pair *p = &t->pair[top.pair];

		if (p->count != top.count) {
			/* Stale.  A count that rose has a newer entry; one
			 * that fell goes back in at its true place. */
			if (p->count > 0 && p->count < top.count &&
			    (rc = heap_push(t, top.pair, p->count)))
				return rc;
			continue;
		}
		if ((uint64_t)p->count < t->min_freq)
			break;
		if (p->merged == PAIR_FORBIDDEN)
			continue;

		/* A pair merged before can form again when a later merge
		 * makes a token that already existed; it merges the same
		 * way, and merges.txt keeps its first rank only. */
		uint32_t x = p->merged;
		if (x == PAIR_NONE) {
			if ((rc = merged_token(t, top.pair, &x)))
				return rc;
			p = &t->pair[top.pair];
			p->merged = x;
			if (x == PAIR_FORBIDDEN)
				continue;
			if ((rc = u32s_push(&t->merges, p->a)) ||
			    (rc = u32s_push(&t->merges, p->b)))
				return rc;
		}
		if ((rc = apply_merge(t, top.pair, x)))
			return rc;
		if (log && t->merges.n % 256 == 0)
			log_progress(log, "merging", t->ntok - 256, t->target - 256,
				     "tokens", false);
	}
	if (log) {
		log_progress(log, "merging", t->ntok - 256, t->target - 256, "tokens", true);
		log_progress_end(log);
	}
	return 0;
}

/* Writing. */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 take U+0100 onwards in byte order. */
static void init_byte_cp(uint32_t cp[256])
{
	uint32_t next = 256;

	for (int b = 0; b < 256; b++) {
		bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
		cp[b] = self ? (uint32_t)b : next++;
	}
}

/* Token bytes as bytes-to-unicode text (every code point is below U+0800,
 * so out needs 2n + 1 bytes). */
static void map_bytes(const uint32_t cp[256], const uint8_t *p, size_t n, char *out)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		uint32_t c = cp[p[i]];
		if (c < 0x80) {
			out[k++] = (char)c;
		} else {
			out[k++] = (char)(0xC0 | c >> 6);
			out[k++] = (char)(0x80 | (c & 0x3F));
		}
	}
	out[k] = '\0';
}

/* The bytes special s stands for if it is written in bytes-to-unicode
 * characters; nothing (out->n == 0) otherwise. */
static int unmap_special(const uint32_t cp[256], const char *s, titan_bytes *out)
{
	const uint8_t *p = (const uint8_t *)s;
	int rc;

	while (*p) {
		uint32_t c;
		size_t len = 1;
		if (*p < 0x80) {
			c = *p;
		} else if ((*p & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
			c = (uint32_t)(*p & 0x1F) << 6 | (p[1] & 0x3F);
			len = 2;
		} else {
			goto none;
		}
		int b = 0;
		while (b < 256 && cp[b] != c)
			b++;
		if (b == 256)
			goto none;
		uint8_t byte = (uint8_t)b;
		if ((rc = bytes_append(out, &byte, 1)))
			return rc;
		p += len;
	}
	return 0;
none:
	out->n = 0;
	return 0;
}

static int write_tokenizer(const struct trainer *t, const char *pattern, const char *path)
{
	json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
	json_t *root = NULL;
	uint32_t maxlen = 1;
	char *l = NULL, *r = NULL;
	int rc = 0;

	for (uint32_t id = 0; id < t->ntok; id++)
		maxlen = TITAN_MAX(maxlen, t->tlen[id]);
	l = malloc(2 * (size_t)maxlen + 1);
	r = malloc(2 * (size_t)maxlen + 1);
	if (!vocab || !merges || !added || !l || !r)
		goto nomem;
	for (uint32_t id = 0; id < t->ntok; id++) {
		map_bytes(t->byte_cp, t->tokb.v + t->toff[id], t->tlen[id], l);
		if (json_object_set_new(vocab, l, json_integer(id)))
			goto nomem;
	}
	for (size_t i = 0; i < t->merges.n; i += 2) {
		uint32_t a = t->merges.v[i], b = t->merges.v[i + 1];
		map_bytes(t->byte_cp, t->tokb.v + t->toff[a], t->tlen[a], l);
		map_bytes(t->byte_cp, t->tokb.v + t->toff[b], t->tlen[b], r);
		if (json_array_append_new(merges, json_pack("[s,s]", l, r)))
			goto nomem;
	}
	for (size_t i = 0; i < t->o->nspecials; i++) {
		const char *s = t->o->specials[i];
		json_int_t id = (json_int_t)t->ntok + (json_int_t)i;
		/* Hugging Face keeps an added token's id only when model.vocab
		 * holds its content too. */
		if (json_object_set_new(vocab, s, json_integer(id)) ||
		    json_array_append_new(added, json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}",
				"id", id, "content", s, "single_word", 0, "lstrip", 0,
				"rstrip", 0, "normalized", 0, "special", 1)))
			goto nomem;
	}
	root = json_pack("{s:s, s:n, s:n, s:O, s:n,"
			 " s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]},"
			 " s:{s:s, s:b, s:b, s:b}, s:{s:s, s:b, s:b, s:b},"
			 " s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:O, s:O}}",
			 "version", "1.0", "truncation", "padding", "added_tokens", added,
			 "normalizer",
			 "pre_tokenizer", "type", "Sequence", "pretokenizers",
			 "type", "Split", "pattern", "Regex", pattern,
			 "behavior", "Isolated", "invert", 0,
			 "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
			 "use_regex", 0,
			 "post_processor", "type", "ByteLevel", "add_prefix_space", 1,
			 "trim_offsets", 0, "use_regex", 1,
			 "decoder", "type", "ByteLevel", "add_prefix_space", 1,
			 "trim_offsets", 1, "use_regex", 1,
			 "model", "type", "BPE", "dropout", "unk_token",
			 "continuing_subword_prefix", "end_of_word_suffix",
			 "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0,
			 "vocab", vocab, "merges", merges);
	if (!root)
		goto nomem;
	rc = json_write_path(root, path);
	goto out;
nomem:
	rc = titan_err(TITAN_ENOMEM, "'%s': cannot build the tokenizer JSON", path);
out:
	json_decref(root);
	json_decref(vocab);
	json_decref(merges);
	json_decref(added);
	free(l);
	free(r);
	return rc;
}

static int check_opts(const tok_train_opts *o, struct trainer *t)
{
	uint64_t need = 256 + (uint64_t)o->nspecials;
	int rc;

	if (o->vocab_size < need)
		return titan_err(TITAN_EUSAGE,
				 "vocab size %u is too small: it must hold the 256 bytes and %zu special tokens",
				 o->vocab_size, o->nspecials);
	if (o->nspecials && !(t->special_bytes = calloc(o->nspecials, sizeof *t->special_bytes)))
		return titan_err_nomem();
	for (size_t i = 0; i < o->nspecials; i++) {
		const char *s = o->specials[i];
		if (!s || !*s)
			return titan_err(TITAN_EUSAGE, "special token %zu is empty", i + 1);
		json_t *j = json_string(s);
		if (!j)
			return titan_err(TITAN_EUSAGE, "special token '%s' is not valid UTF-8", s);
		json_decref(j);
		for (size_t k = 0; k < i; k++)
			if (!strcmp(o->specials[k], s))
				return titan_err(TITAN_EUSAGE, "special token '%s' is given twice", s);
		if ((rc = unmap_special(t->byte_cp, s, &t->special_bytes[i])))
			return rc;
		if (t->special_bytes[i].n == 1)
			return titan_err(TITAN_EUSAGE, "special token '%s' is already a byte token", s);
	}
	return 0;
}

static void trainer_free(struct trainer *t)
{
	free(t->sym);
	free(t->wstart);
	free(t->wlen);
	free(t->wcount);
	free(t->wstamp);
	bytes_free(&t->tokb);
	free(t->toff);
	free(t->tlen);
	smap_free(&t->tokmap);
	for (size_t i = 0; t->special_bytes && i < t->o->nspecials; i++)
		bytes_free(&t->special_bytes[i]);
	free(t->special_bytes);
	free(t->pslot);
	for (size_t i = 0; i < t->npair; i++)
		u32s_free(&t->pair[i].words);
	free(t->pair);
	u32s_free(&t->touched);
	free(t->heap);
	u32s_free(&t->merges);
}

int tok_train(const tok_train_opts *o, ingest *in, const char *out_path)
{
	struct trainer t = { .o = o };
	const char *name = o->pattern ? o->pattern : DEFAULT_PATTERN;
	const char *pattern = pretok_named_pattern(name);
	titan_log *log = o->log;
	double t0 = titan_now();
	struct smap pieces = { 0 };
	uint64_t npieces = 0;
	pretok *pt = NULL;
	int rc;

	init_byte_cp(t.byte_cp);
	if ((rc = check_opts(o, &t)))
		goto out;
	if (!pattern)
		pattern = name;
	if ((rc = pretok_new(&pt, pattern)))
		goto out;
	t.min_freq = o->min_frequency ? o->min_frequency : DEFAULT_MIN_FREQUENCY;
	t.target = o->vocab_size - (uint32_t)o->nspecials;

	if ((rc = count_pieces(pt, in, o->pool, log, &pieces, &npieces)))
		goto out;
	if (log)
		log_debug(log, "counted %llu pieces in %.2f s", (unsigned long long)npieces,
			  titan_now() - t0);
	if (!pieces.n) {
		rc = titan_err(TITAN_EFORMAT, "no text to train on");
		goto out;
	}
	if ((rc = make_words(&t, &pieces)))
		goto out;
	smap_free(&pieces);

	if ((rc = bytes_reserve(&t.tokb, 256)))
		goto out;
	for (int b = 0; b < 256; b++) {
		t.tokb.v[b] = (uint8_t)b;
		t.tokb.n++;
		if ((rc = add_token(&t, t.tokb.v + b, 1)))
			goto out;
	}
	if ((rc = count_pairs(&t)) || (rc = learn_merges(&t, log)))
		goto out;
	if (log)
		log_debug(log, "learned %zu merges by %.2f s (%zu pairs, %zu heap entries)",
			  t.merges.n / 2, titan_now() - t0, t.npair, t.capheap);
	if ((rc = write_tokenizer(&t, pattern, out_path)))
		goto out;
	if (log)
		log_info(log, "trained %u tokens (%zu merges, %zu specials) from %llu pieces, %zu distinct, in %.2f s",
			 t.ntok + (uint32_t)o->nspecials, t.merges.n / 2, o->nspecials,
			 (unsigned long long)npieces, t.nwords, titan_now() - t0);
out:
	smap_free(&pieces);
	pretok_free(pt);
	trainer_free(&t);
	return rc;
}
