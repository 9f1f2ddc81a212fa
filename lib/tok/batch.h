/* batch.h - encode a stream of documents on a thread pool, in input order.
 *
 * Documents are queued (copied) into a batch of a few MB; a full batch is cut
 * into tasks of about equal bytes that the pool's workers encode, each with
 * its own tok_encoder.  The ids of every document are then handed to the
 * caller's function, one document at a time and in the order they were
 * added, so what the caller writes never depends on the thread count.
 *
 * Three stages overlap: while the caller queues batch k + 1, the pool
 * encodes batch k (driven by a thread of the batch's own) and another thread
 * hands the documents of batch k - 1 to the function, so reading, encoding
 * and what the function does with the ids (formatting, packing) run at once,
 * also with a pool of one thread.  The function is called on that hand-over
 * thread, or on the caller's for a large document, never two calls at once;
 * it must not use the pool.
 * A document of 1 MB or more is encoded alone, cut across all workers
 * (tok_encode_parallel). */
#ifndef TITAN_TOK_BATCH_H
#define TITAN_TOK_BATCH_H
#include "core/base.h"
#include "core/pool.h"
#include "tok/tok.h"

/* Called with each document's ids, in input order; non-zero stops. */
typedef int (*tok_batch_fn)(void *arg, const uint32_t *ids, size_t n);

typedef struct tok_batch tok_batch;

/* tok and pool must outlive the batch. */
int tok_batch_new(tok_batch **out, const titan_tok *tok, titan_pool *pool,
		  tok_batch_fn fn, void *arg);
/* Queue text[0..n) as the next document; may encode a full batch and call
 * fn for earlier documents. */
int tok_batch_add(tok_batch *b, const uint8_t *text, size_t n);
/* Encode everything queued and call fn for every document not yet handed
 * over.  After it returns 0, fn has seen every document added. */
int tok_batch_flush(tok_batch *b);
/* Input bytes queued so far, and the seconds the pool spent encoding (fn
 * runs alongside and is not counted); read them after tok_batch_flush. */
uint64_t tok_batch_bytes(const tok_batch *b);
double tok_batch_seconds(const tok_batch *b);
void tok_batch_free(tok_batch *b);

#endif
