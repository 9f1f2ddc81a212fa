/* pack.h - a corpus into a titan dataset: ingest documents, tokenize them
 * on a thread pool, wrap each as BOS? ids EOS?, split train/val by a hash of
 * the ids, and write shards (dataset.h).
 *
 * Output is byte-identical for any thread count, and for the same documents
 * given as text or as ids (pack_opts.from_ids): the manifest records nothing
 * about the inputs, the clock or the run. */
#ifndef TITAN_DATA_PACK_H
#define TITAN_DATA_PACK_H
#include "core/base.h"
#include "core/log.h"
#include "core/pool.h"
#include "data/dataset.h"
#include "data/ingest.h"
#include "tok/tok.h"

typedef struct pack_opts {
	const char *outdir;
	const titan_tok *tok;
	const char *tok_source;  /* recorded in the manifest (informational) */
	ingest_opts ingest;      /* how text inputs become documents */
	/* Inputs are u32 id streams as `titan-tok encode --format u32` writes
	 * them (little-endian ids, 0xFFFFFFFF after each document, no BOS/EOS)
	 * instead of text. */
	bool from_ids;
	bool no_bos, no_eos;     /* do not add the tokenizer's BOS / EOS */
	double val_fraction;
	uint64_t seed;
	uint64_t shard_tokens;   /* 0: the writer's default */
	int zstd_level;          /* 0: the writer's default */
	bool force;              /* replace an existing outdir */
	titan_pool *pool;
	titan_log *log;          /* progress; NULL for none */
} pack_opts;

typedef struct pack_stats {
	uint64_t docs[SPLIT_COUNT];
	uint64_t tokens[SPLIT_COUNT];  /* as stored, BOS/EOS included */
	uint64_t bytes_in;             /* input bytes read (compressed if so) */
	uint64_t text_bytes;           /* document bytes tokenized (or id bytes read) */
	uint64_t skipped;              /* invalid JSONL lines skipped */
	double seconds;                /* from the first read to the rename */
	double cpu_seconds;            /* the CPU time of all threads over those */
	double compress_cpu_seconds;   /* the part of it the shard writers took */
	bool bos_added, eos_added;
} pack_stats;

/* The BOS/EOS ids documents get under o (-1: none): EOS when the tokenizer
 * has one, BOS when it has one distinct from its EOS. */
void pack_specials(const pack_opts *o, int64_t *bos, int64_t *eos);

/* Pack inputs (paths, "-" for stdin) into o->outdir.  An existing outdir is
 * TITAN_EUSAGE unless o->force; no documents at all is TITAN_EFORMAT
 * ("empty corpus"); on any failure nothing is left at outdir. */
int pack_run(const pack_opts *o, const char *const *inputs, size_t n, pack_stats *st);

#endif
