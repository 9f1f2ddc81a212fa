/* batch.c - ordered batch encoding of documents on a thread pool.
 *
 * Three stages run at once on three buffers of documents in rotation: the
 * caller fills one, the encode thread runs the pool over the one before
 * (the pool's calling thread being the encode thread), and the hand-over
 * thread gives the ids of the one before that to fn.  A buffer goes back to
 * the caller once its ids are handed over, so fn sees documents in order. */
#include "core/base.h"
#include "core/buf.h"
#include "core/log.h"
#include "tok/batch.h"

#include <pthread.h>

enum {
	/* Hand a buffer to the encoder once this much text per worker is in
	 * it: small batches keep the three stages in step. */
	WORKER_BYTES = 512 << 10,
	BATCH_DOCS = 65536,      /* ... or this many documents */
	LARGE_DOC = 1 << 20,     /* a whole document this long is cut into pieces */
	PIECE_BYTES = 64 << 10,  /* the shortest piece: a few tasks' worth of text */
	TASKS_PER_WORKER = 4,    /* tasks per worker and batch: evens out long documents */
	NBUF = 3,                /* filling, encoding, handing over */
};

/* One task's share of a batch: the ids of documents [first, last) back to
 * back, and where each document's ids end. */
typedef struct batch_part {
	titan_u32s ids;
	size_t *end;
	size_t endcap;
	size_t first, last;
} batch_part;

/* Documents (or pieces of one) queued together: their texts back to back. */
typedef struct doc_buf {
	titan_bytes text;
	size_t *start;   /* ndoc + 1 offsets into text */
	bool *ends;      /* ndoc flags: the piece ends its document */
	size_t ndoc, cap;
	batch_part *parts;
	size_t nparts;
	bool busy;       /* with the stages (under mu); the caller may not touch it */
} doc_buf;

struct tok_batch {
	const titan_tok *tok;
	titan_pool *pool;
	tok_encoder **encs;
	int nworkers;
	size_t maxparts;
	size_t batch_bytes;
	tok_batch_fn fn;
	void *arg;
	doc_buf buf[NBUF];
	int cur;             /* the buffer the caller fills */
	titan_bytes pending; /* the unfinished document's text not yet queued */
	size_t scanned;      /* pending holds no cut before this (past PIECE_BYTES) */
	bool open_doc;       /* a document has pieces queued and more to come */
	uint64_t bytes;
	double seconds;      /* under mu */
	doc_buf *encoding;   /* the encode thread's buffer, for its pool tasks */

	pthread_mutex_t mu;
	pthread_cond_t cv;   /* signalled on every change of the fields below */
	pthread_t encoder, handler;
	int nthreads;        /* stage threads started: 0, 1 (encoder) or 2 */
	doc_buf *to_encode;  /* the next job of each stage; NULL when idle */
	doc_buf *to_hand;
	bool quit;
	int rc;              /* the first failure of a stage, and its message */
	char msg[1024];
};

static void *encode_main(void *arg);
static void *hand_main(void *arg);

int tok_batch_new(tok_batch **out, const titan_tok *tok, titan_pool *pool,
		  tok_batch_fn fn, void *arg)
{
	tok_batch *b = calloc(1, sizeof *b);
	if (!b)
		return titan_err_nomem();
	b->tok = tok;
	b->pool = pool;
	b->fn = fn;
	b->arg = arg;
	b->nworkers = pool_threads(pool);
	b->maxparts = (size_t)b->nworkers * TASKS_PER_WORKER;
	b->batch_bytes = (size_t)b->nworkers * WORKER_BYTES;
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	b->encs = calloc((size_t)b->nworkers, sizeof *b->encs);
	int rc = b->encs ? 0 : titan_err_nomem();
	for (int k = 0; k < NBUF && !rc; k++) {
		b->buf[k].parts = calloc(b->maxparts, sizeof *b->buf[k].parts);
		if (!b->buf[k].parts)
			rc = titan_err_nomem();
	}
	for (int i = 0; i < b->nworkers && !rc; i++)
		rc = tok_encoder_new(&b->encs[i], tok);
	for (int i = 0; i < 2 && !rc; i++) {
		int err = pthread_create(i ? &b->handler : &b->encoder, NULL,
					 i ? hand_main : encode_main, b);
		if (err) {
			errno = err;
			rc = titan_err_errno(TITAN_EIO, "cannot start the %s thread",
					     i ? "hand-over" : "encode");
		} else {
			b->nthreads++;
		}
	}
	if (rc) {
		tok_batch_free(b);
		return rc;
	}
	*out = b;
	return 0;
}

void tok_batch_free(tok_batch *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->mu);
	b->quit = true;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	if (b->nthreads > 0)
		pthread_join(b->encoder, NULL);
	if (b->nthreads > 1)
		pthread_join(b->handler, NULL);
	pthread_mutex_destroy(&b->mu);
	pthread_cond_destroy(&b->cv);
	if (b->encs)
		for (int i = 0; i < b->nworkers; i++)
			tok_encoder_free(b->encs[i]);
	free(b->encs);
	for (int k = 0; k < NBUF; k++) {
		doc_buf *d = &b->buf[k];
		if (d->parts)
			for (size_t i = 0; i < b->maxparts; i++) {
				u32s_free(&d->parts[i].ids);
				free(d->parts[i].end);
			}
		free(d->parts);
		free(d->start);
		free(d->ends);
		bytes_free(&d->text);
	}
	bytes_free(&b->pending);
	free(b);
}

uint64_t tok_batch_bytes(const tok_batch *b)
{
	return b->bytes;
}

double tok_batch_seconds(const tok_batch *b)
{
	return b->seconds;
}

/* Record a stage's failure (the first one wins); called under mu. */
static void record_failure(tok_batch *b, int rc)
{
	if (rc && !b->rc) {
		b->rc = rc;
		snprintf(b->msg, sizeof b->msg, "%s", titan_errmsg());
	}
}

/* A stage's failure as the caller's error; called under mu. */
static int stage_failure(tok_batch *b)
{
	return b->rc ? titan_err(b->rc, "%s", b->msg) : 0;
}

static int encode_part(tok_batch *b, doc_buf *d, batch_part *p, int worker)
{
	p->ids.n = 0;
	for (size_t k = p->first; k < p->last; k++) {
		size_t s = d->start[k], e = d->start[k + 1];
		int rc = tok_encode(b->encs[worker], d->text.v + s, e - s, &p->ids);
		if (rc)
			return rc;
		p->end[k - p->first] = p->ids.n;
	}
	return 0;
}

static int batch_task(void *arg, size_t task, int worker)
{
	tok_batch *b = arg;
	return encode_part(b, b->encoding, &b->encoding->parts[task], worker);
}

/* Hand every document of an encoded buffer to fn, in order. */
static int consume(tok_batch *b, doc_buf *d)
{
	for (size_t i = 0; i < d->nparts; i++) {
		batch_part *p = &d->parts[i];
		size_t prev = 0;
		for (size_t k = 0; k < p->last - p->first; k++) {
			int rc = b->fn(b->arg, p->ids.v + prev, p->end[k] - prev,
				       d->ends[p->first + k]);
			if (rc)
				return rc;
			prev = p->end[k];
		}
	}
	return 0;
}

/* After a failure the stages still pass buffers on (without working on
 * them), so that every wait ends and every buffer comes back. */
static void *encode_main(void *arg)
{
	pthread_setname_np(pthread_self(), "titan-encode");
	tok_batch *b = arg;
	pthread_mutex_lock(&b->mu);
	for (;;) {
		while (!b->to_encode && !b->quit)
			pthread_cond_wait(&b->cv, &b->mu);
		if (b->quit)
			break;
		doc_buf *d = b->to_encode;
		bool failed = b->rc != 0;
		pthread_mutex_unlock(&b->mu);
		double t0 = titan_now();
		int rc = 0;
		if (!failed) {
			b->encoding = d;
			rc = pool_run(b->pool, d->nparts, batch_task, b);
		}
		double dt = titan_now() - t0;
		pthread_mutex_lock(&b->mu);
		b->seconds += dt;
		record_failure(b, rc);
		b->to_encode = NULL;
		pthread_cond_broadcast(&b->cv);
		while (b->to_hand && !b->quit)
			pthread_cond_wait(&b->cv, &b->mu);
		if (b->quit)
			break;
		b->to_hand = d;
		pthread_cond_broadcast(&b->cv);
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

static void *hand_main(void *arg)
{
	pthread_setname_np(pthread_self(), "titan-handover");
	tok_batch *b = arg;
	pthread_mutex_lock(&b->mu);
	for (;;) {
		while (!b->to_hand && !b->quit)
			pthread_cond_wait(&b->cv, &b->mu);
		if (b->quit)
			break;
		doc_buf *d = b->to_hand;
		bool failed = b->rc != 0;
		pthread_mutex_unlock(&b->mu);
		int rc = failed ? 0 : consume(b, d);
		pthread_mutex_lock(&b->mu);
		record_failure(b, rc);
		b->to_hand = NULL;
		d->busy = false;
		pthread_cond_broadcast(&b->cv);
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

/* Cut a buffer into parts of about equal bytes. */
static int cut_parts(tok_batch *b, doc_buf *d)
{
	size_t per = d->text.n / b->maxparts + 1, first = 0;
	d->nparts = 0;
	for (size_t k = 0; k < d->ndoc; k++) {
		bool last = k + 1 == d->ndoc;
		if (!last && d->start[k + 1] - d->start[first] < per)
			continue;
		/* Past maxparts - 1 parts the rest of the batch is one part. */
		if (!last && d->nparts + 1 == b->maxparts)
			continue;
		batch_part *p = &d->parts[d->nparts++];
		p->first = first;
		p->last = k + 1;
		if (p->last - p->first > p->endcap) {
			size_t *e = realloc(p->end, (p->last - p->first) * sizeof *e);
			if (!e)
				return titan_err_nomem();
			p->end = e;
			p->endcap = p->last - p->first;
		}
		first = k + 1;
	}
	return 0;
}

/* Give the caller's buffer to the encode thread and take the next free one. */
static int submit(tok_batch *b)
{
	doc_buf *d = &b->buf[b->cur];
	if (d->ndoc == 0)
		return 0;
	int rc = cut_parts(b, d);
	if (rc)
		return rc;
	b->bytes += d->text.n;
	int next = (b->cur + 1) % NBUF;
	pthread_mutex_lock(&b->mu);
	while (b->to_encode)
		pthread_cond_wait(&b->cv, &b->mu);
	d->busy = true;
	b->to_encode = d;
	pthread_cond_broadcast(&b->cv);
	while (b->buf[next].busy)
		pthread_cond_wait(&b->cv, &b->mu);
	rc = stage_failure(b);
	pthread_mutex_unlock(&b->mu);
	b->cur = next;
	b->buf[next].text.n = 0;
	b->buf[next].ndoc = 0;
	b->buf[next].nparts = 0;
	return rc;
}

/* Queue text[0..n) into the caller's buffer; submit the buffer when full. */
static int queue_doc(tok_batch *b, const uint8_t *text, size_t n, bool ends)
{
	doc_buf *d = &b->buf[b->cur];
	if (d->ndoc + 2 > d->cap) {
		size_t ncap = d->cap ? 2 * d->cap : 1024;
		size_t *s = realloc(d->start, ncap * sizeof *s);
		if (!s)
			return titan_err_nomem();
		d->start = s;
		bool *e = realloc(d->ends, ncap * sizeof *e);
		if (!e)
			return titan_err_nomem();
		d->ends = e;
		d->cap = ncap;
	}
	if (d->ndoc == 0)
		d->start[0] = 0;
	int rc = n ? bytes_append(&d->text, text, n) : 0;
	if (rc)
		return rc;
	d->ends[d->ndoc] = ends;
	d->start[++d->ndoc] = d->text.n;
	if (d->text.n >= b->batch_bytes || d->ndoc >= BATCH_DOCS)
		return submit(b);
	return 0;
}

/* Queue the pieces of pending that end at a cut, keeping the rest. */
static int queue_pieces(tok_batch *b)
{
	size_t done = 0;
	int rc = 0;
	while (!rc && b->pending.n - done > PIECE_BYTES) {
		const uint8_t *rest = b->pending.v + done;
		size_t n = b->pending.n - done;
		size_t cut = tok_next_cut(b->tok, rest, n, TITAN_MAX((size_t)PIECE_BYTES, b->scanned));
		if (cut == n) {
			/* Nothing to cut yet: the next text starts the search
			 * where this one ended, so a document that never cuts
			 * is not searched over and over. */
			b->scanned = n;
			break;
		}
		rc = queue_doc(b, rest, cut, false);
		done += cut;
		b->scanned = 0;
	}
	if (done) {
		memmove(b->pending.v, b->pending.v + done, b->pending.n - done);
		b->pending.n -= done;
	}
	return rc;
}

int tok_batch_add_part(tok_batch *b, const uint8_t *text, size_t n, bool last)
{
	b->open_doc = !last;
	if (!b->pending.n && last && n < LARGE_DOC)
		return queue_doc(b, text, n, true);
	int rc = n ? bytes_append(&b->pending, text, n) : 0;
	if (!rc)
		rc = queue_pieces(b);
	if (!rc && last)
		rc = queue_doc(b, b->pending.v, b->pending.n, true);
	if (last) {
		b->pending.n = 0;
		b->scanned = 0;
	}
	return rc;
}

int tok_batch_add(tok_batch *b, const uint8_t *text, size_t n)
{
	return tok_batch_add_part(b, text, n, true);
}

int tok_batch_flush(tok_batch *b)
{
	int rc = b->open_doc ? tok_batch_add_part(b, (const uint8_t *)"", 0, true) : 0;
	if (rc)
		return rc;
	rc = submit(b);
	pthread_mutex_lock(&b->mu);
	for (int k = 0; k < NBUF; k++)
		while (b->buf[k].busy)
			pthread_cond_wait(&b->cv, &b->mu);
	if (!rc)
		rc = stage_failure(b);
	pthread_mutex_unlock(&b->mu);
	return rc;
}
