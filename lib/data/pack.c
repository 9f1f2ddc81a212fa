/* pack.c - corpus to dataset: ingest, tokenize in order on a pool, split,
 * write shards. */
#include "core/base.h"
#include "core/buf.h"
#include "data/pack.h"
#include "tok/batch.h"

#include <unistd.h>

/* Everything the per-document step needs; it runs on one pool thread at a
 * time (tok_batch), or on the caller's thread for id inputs. */
typedef struct packer {
	dataset_writer *w;
	int64_t bos, eos;
	uint64_t seed;
	double val_fraction;
	/* The document being written: its split, once its first ids have
	 * decided it (-1 before), and those ids while they have not. */
	int split;
	titan_u32s head;
	uint64_t doc_tokens;
	/* Read by the progress line on the caller's thread while a pool thread
	 * writes them: accessed atomically. */
	uint64_t docs[SPLIT_COUNT], tokens[SPLIT_COUNT];
	uint64_t open_tokens;  /* written so far of a document not yet ended */
} packer;

void pack_specials(const pack_opts *o, int64_t *bos, int64_t *eos)
{
	*eos = o->no_eos ? -1 : tok_eos(o->tok);
	*bos = o->no_bos ? -1 : tok_bos(o->tok);
	/* A tokenizer whose BOS is its EOS (GPT-2's <|endoftext|>) separates
	 * documents with one token, not two. */
	if (*bos >= 0 && *bos == tok_eos(o->tok))
		*bos = -1;
}

/* A document written whole: its counts, for the summary and the progress
 * line. */
static void count_doc(packer *p, int split, uint64_t tokens)
{
	__atomic_store_n(&p->docs[split], p->docs[split] + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&p->tokens[split], p->tokens[split] + tokens, __ATOMIC_RELAXED);
	__atomic_store_n(&p->open_tokens, 0, __ATOMIC_RELAXED);
}

/* The next ids of the current document, the last ones with doc_end set
 * (tok_batch's function; the id reader calls it too).  A document goes to
 * the writer as its ids come once its first DATASET_SPLIT_IDS have decided
 * its split, so a long one is never held whole. */
static int pack_ids(void *arg, const uint32_t *ids, size_t n, bool doc_end)
{
	packer *p = arg;
	int rc = 0;
	if (p->split < 0 && doc_end && !p->head.n) {
		/* Whole in one call, as nearly every document is. */
		int s = dataset_split_of(ids, n, p->seed, p->val_fraction);
		if ((rc = dataset_writer_add_wrapped(p->w, s, p->bos, ids, n, p->eos)))
			return rc;
		count_doc(p, s, n + (p->bos >= 0) + (p->eos >= 0));
		return 0;
	}
	if (p->split < 0) {
		if ((rc = u32s_append(&p->head, ids, n)))
			return rc;
		if (!doc_end && p->head.n < DATASET_SPLIT_IDS)
			return 0;
		ids = p->head.v;
		n = p->head.n;
		p->split = dataset_split_of(ids, n, p->seed, p->val_fraction);
		if ((rc = dataset_writer_begin(p->w, p->split, p->bos)))
			return rc;
		p->doc_tokens = p->bos >= 0;
	}
	if ((rc = dataset_writer_append(p->w, p->split, ids, n)))
		return rc;
	p->doc_tokens += n;
	p->head.n = 0;
	if (!doc_end) {
		__atomic_store_n(&p->open_tokens, p->doc_tokens, __ATOMIC_RELAXED);
		return 0;
	}
	if ((rc = dataset_writer_end(p->w, p->split, p->eos)))
		return rc;
	count_doc(p, p->split, p->doc_tokens + (p->eos >= 0));
	p->split = -1;
	return 0;
}

static uint64_t load_sum(uint64_t *v)
{
	uint64_t s = 0;
	for (int k = 0; k < SPLIT_COUNT; k++)
		s += __atomic_load_n(&v[k], __ATOMIC_RELAXED);
	return s;
}

static void progress(const pack_opts *o, packer *p, uint64_t done, uint64_t total)
{
	if (!o->log)
		return;
	char label[128];
	uint64_t tokens = load_sum(p->tokens) + __atomic_load_n(&p->open_tokens, __ATOMIC_RELAXED);
	snprintf(label, sizeof label, "packing: %llu docs, %.1fM tokens",
		 (unsigned long long)load_sum(p->docs), (double)tokens / 1e6);
	log_progress(o->log, label, (double)done, (double)total, "B", false);
}

static int pack_text(const pack_opts *o, packer *p, ingest *in, pack_stats *st)
{
	tok_batch *b = NULL;
	ingest_doc doc;
	uint64_t count = 0;
	int rc = tok_batch_new(&b, o->tok, o->pool, pack_ids, p);
	while (!rc && (rc = ingest_next(in, &doc)) == 1) {
		rc = tok_batch_add_part(b, doc.text, doc.len, !doc.more);
		/* Every 256 documents, or every part of a long one (1 MB) */
		if (++count % 256 == 0 || doc.more)
			progress(o, p, ingest_bytes_done(in), ingest_bytes_total(in));
	}
	if (!rc)
		rc = tok_batch_flush(b);
	st->bytes_in = ingest_bytes_done(in);
	st->skipped = ingest_skipped(in);
	if (b)
		st->text_bytes = tok_batch_bytes(b);
	tok_batch_free(b);
	return rc;
}

static uint32_t get_u32_le(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One u32 stream: ids, 0xFFFFFFFF after each document.  A stream that
 * stops inside a document is refused: it was most likely cut short.  Ids go
 * on a chunk at a time, so a long document is not held whole either. */
static int pack_id_stream(const pack_opts *o, packer *p, const char *path, FILE *fp,
			  pack_stats *st)
{
	enum { CHUNK = 1 << 20 };
	uint8_t *buf = malloc(CHUNK);
	titan_u32s ids = {0};
	uint32_t vocab = tok_vocab_size(o->tok);
	uint64_t offset = 0, doc_ids = 0;
	size_t have = 0, got;
	int rc = buf ? 0 : titan_err_nomem();
	while (!rc && (got = fread(buf + have, 1, CHUNK - have, fp)) > 0) {
		have += got;
		size_t nw = have / 4;
		for (size_t i = 0; i < nw && !rc; i++) {
			uint32_t id = get_u32_le(buf + 4 * i);
			if (id == 0xFFFFFFFFu) {
				rc = pack_ids(p, ids.v, ids.n, true);
				ids.n = 0;
				doc_ids = 0;
			} else if (id >= vocab) {
				rc = titan_err(TITAN_ERANGE, "'%s': offset %llu: id %u is past the "
					       "vocabulary (%u tokens)", path,
					       (unsigned long long)(offset + 4 * i), id, vocab);
			} else {
				rc = u32s_push(&ids, id);
				doc_ids++;
			}
		}
		if (!rc && ids.n)
			rc = pack_ids(p, ids.v, ids.n, false);
		ids.n = 0;
		memmove(buf, buf + nw * 4, have - nw * 4);
		offset += nw * 4;
		have -= nw * 4;
		st->bytes_in += got;
		progress(o, p, st->bytes_in, 0);
	}
	if (!rc && ferror(fp))
		rc = titan_err_errno(TITAN_EIO, "cannot read '%s'", path);
	if (!rc && have)
		rc = titan_err(TITAN_EFORMAT, "'%s': %zu trailing byte(s) at offset %llu: a u32 "
			       "stream is a whole number of 4-byte ids", path, have,
			       (unsigned long long)offset);
	if (!rc && doc_ids)
		rc = titan_err(TITAN_EFORMAT, "'%s': ends inside a document (%llu ids after the "
			       "last 0xFFFFFFFF): the stream was cut short", path,
			       (unsigned long long)doc_ids);
	st->text_bytes += offset + have;
	free(buf);
	u32s_free(&ids);
	return rc;
}

static int pack_id_files(const pack_opts *o, packer *p, const char *const *inputs, size_t n,
			 pack_stats *st)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(inputs[i], "-") && access(inputs[i], R_OK))
			return titan_err_errno(TITAN_EIO, "cannot open '%s'", inputs[i]);
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		bool std_in = !strcmp(inputs[i], "-");
		FILE *fp = std_in ? stdin : fopen(inputs[i], "rb");
		if (!fp)
			return titan_err_errno(TITAN_EIO, "cannot open '%s'", inputs[i]);
		rc = pack_id_stream(o, p, inputs[i], fp, st);
		if (!std_in)
			fclose(fp);
	}
	return rc;
}

/* zstd level 1 takes in ids about five times as fast as one thread of the
 * tokenizer makes them, so one compressing thread per three tokenizer
 * threads keeps up without taking their cores.  Ready-made ids have no
 * tokenizer to share the cores with. */
static int compress_threads(const pack_opts *o)
{
	return o->from_ids || !o->pool ? 0 : (pool_threads(o->pool) + 2) / 3;
}

int pack_run(const pack_opts *o, const char *const *inputs, size_t n, pack_stats *st)
{
	double t0 = titan_now(), cpu0 = titan_cpu_now();
	packer p = {.seed = o->seed, .val_fraction = o->val_fraction, .split = -1};
	memset(st, 0, sizeof *st);
	pack_specials(o, &p.bos, &p.eos);
	st->bos_added = p.bos >= 0;
	st->eos_added = p.eos >= 0;
	if (!(o->val_fraction >= 0 && o->val_fraction <= 1))
		return titan_err(TITAN_EUSAGE, "the validation fraction must be in [0, 1], got %g",
				 o->val_fraction);
	if (n == 0)
		return titan_err(TITAN_EUSAGE, "no input given");

	dataset_writer_opts wo = {
		.outdir = o->outdir,
		.shard_tokens = o->shard_tokens,
		.zstd_level = o->zstd_level,
		.compress_threads = compress_threads(o),
		.val_fraction = o->val_fraction,
		.seed = o->seed,
		.force = o->force,
	};
	dataset_tokinfo *ti = &wo.tok;
	snprintf(ti->sha256, sizeof ti->sha256, "%s", tok_hash(o->tok));
	snprintf(ti->source, sizeof ti->source, "%s", o->tok_source ? o->tok_source : "");
	ti->vocab_size = tok_vocab_size(o->tok);
	ti->bos = tok_bos(o->tok);
	ti->eos = tok_eos(o->tok);
	ti->bos_added = st->bos_added;
	ti->eos_added = st->eos_added;

	/* Check the inputs before creating anything. */
	ingest *in = NULL;
	ingest_opts io = o->ingest;
	io.pieces = true;
	/* Inflating .gz inputs one at a time would hold a many-core pool
	 * back (ingest.h). */
	io.readers = o->pool ? pool_threads(o->pool) : 0;
	int rc = o->from_ids ? 0 : ingest_open(&in, inputs, n, &io);
	if (rc)
		return rc;
	if ((rc = dataset_writer_open(&p.w, &wo))) {
		ingest_close(in);
		return rc;
	}
	rc = o->from_ids ? pack_id_files(o, &p, inputs, n, st) : pack_text(o, &p, in, st);
	ingest_close(in);
	if (o->log)
		log_progress_end(o->log);
	if (!rc && load_sum(p.docs) == 0)
		rc = titan_err(TITAN_EFORMAT, "empty corpus: the input holds no documents");
	if (rc) {
		dataset_writer_abort(p.w);
	} else {
		rc = dataset_writer_commit(p.w, &st->compress_cpu_seconds);
	}
	u32s_free(&p.head);
	for (int k = 0; k < SPLIT_COUNT; k++) {
		st->docs[k] = p.docs[k];
		st->tokens[k] = p.tokens[k];
	}
	st->seconds = titan_now() - t0;
	st->cpu_seconds = titan_cpu_now() - cpu0;
	return rc;
}
