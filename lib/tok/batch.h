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
 * thread only, one call at a time.
 *
 * A long document may come in parts (tok_batch_add_part), as a reader that
 * streams it gets them; it is cut into pieces of 64 KB or more where the
 * tokenizer allows (tok_next_cut), and the pieces are queued and encoded
 * like documents, so one long text keeps every worker busy and is never
 * whole in memory.  fn then gets the document's ids in several calls, back
 * to back, the last one with doc_end set; the ids are those of the whole
 * document.  A whole document of 1 MB or more is cut the same way. */
#ifndef TITAN_TOK_BATCH_H
#define TITAN_TOK_BATCH_H
#include "core/base.h"
#include "core/pool.h"
#include "tok/tok.h"

/* Called with the ids of each document in input order, a long one in
 * several calls of which only the last has doc_end set; non-zero stops. */
typedef int (*tok_batch_fn)(void *arg, const uint32_t *ids, size_t n, bool doc_end);

typedef struct tok_batch tok_batch;

/* tok and pool must outlive the batch. */
int tok_batch_new(tok_batch **out, const titan_tok *tok, titan_pool *pool,
		  tok_batch_fn fn, void *arg);
/* Queue text[0..n) as the next document; may encode a full batch and call
 * fn for earlier documents. */
int tok_batch_add(tok_batch *b, const uint8_t *text, size_t n);
/* Queue text[0..n) as the next part of a document that goes on in the next
 * call unless last: tok_batch_add is a document in one part. */
int tok_batch_add_part(tok_batch *b, const uint8_t *text, size_t n, bool last);
/* Encode everything queued and call fn for every document not yet handed
 * over (ending one whose last part has not come).  After it returns 0, fn
 * has seen every document added. */
int tok_batch_flush(tok_batch *b);
/* Input bytes queued so far, and the seconds the pool spent encoding (fn
 * runs alongside and is not counted); read them after tok_batch_flush. */
uint64_t tok_batch_bytes(const tok_batch *b);
double tok_batch_seconds(const tok_batch *b);
void tok_batch_free(tok_batch *b);

#endif
