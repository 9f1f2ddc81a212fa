/* dataset.h - a titan dataset directory: manifest.json plus shard files per
 * split (titan-dataset(5)).
 *
 * Writing: dataset_writer builds the directory as OUTDIR.tmp.PID, rolls to a
 * new shard when one reaches shard_tokens (at a document boundary), writes
 * manifest.json last and renames the directory into place, so an interrupted
 * run leaves no OUTDIR that looks complete.
 *
 * Reading: dataset_open parses and checks the manifest; each split is one
 * stream of tokens (its shards back to back) with random access. */
#ifndef TITAN_DATA_DATASET_H
#define TITAN_DATA_DATASET_H
#include "core/base.h"
#include "core/buf.h"

#define DATASET_VERSION 1
/* zstd level 1: level 3 stores 7 to 9% fewer bytes of token ids for twice
 * the compression time, which packing pays when every core is busy. */
#define DATASET_ZSTD_LEVEL 1
enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1, SPLIT_COUNT = 2 };

/* Facts about the tokenizer a dataset was packed with. */
typedef struct dataset_tokinfo {
	char sha256[65];      /* tok_hash() */
	uint32_t vocab_size;
	int64_t bos, eos;     /* -1: none */
	bool bos_added, eos_added;  /* whether documents carry them */
	char source[512];     /* the tokenizer path as given (informational) */
} dataset_tokinfo;

typedef struct dataset_writer_opts {
	const char *outdir;
	dataset_tokinfo tok;
	uint64_t shard_tokens;   /* roll to a new shard past this; 0: default 2^28 */
	uint32_t block_tokens;   /* 0: SHARD_BLOCK_TOKENS_DEFAULT */
	int zstd_level;          /* 0: DATASET_ZSTD_LEVEL */
	int compress_threads;    /* per shard being written; 0: one per core */
	double val_fraction;
	uint64_t seed;           /* at most INT64_MAX (a JSON integer) */
	bool force;              /* replace an existing OUTDIR */
} dataset_writer_opts;

typedef struct dataset_writer dataset_writer;

/* An existing OUTDIR is TITAN_EUSAGE unless force. */
int dataset_writer_open(dataset_writer **out, const dataset_writer_opts *o);
/* Append a document (ids as stored: BOS/EOS already in place) to a split. */
int dataset_writer_add(dataset_writer *w, int split, const uint32_t *ids, size_t n);
/* Append the document BOS? ids EOS? (bos, eos: -1 for none) without the
 * caller assembling it. */
int dataset_writer_add_wrapped(dataset_writer *w, int split, int64_t bos,
			       const uint32_t *ids, size_t n, int64_t eos);
/* A document in parts, for one too long to hold whole: begin (writing BOS
 * when bos >= 0), any number of appends, end (EOS when eos >= 0), all to
 * the same split and with no other document in between.
 * dataset_writer_add_wrapped is the three at once. */
int dataset_writer_begin(dataset_writer *w, int split, int64_t bos);
int dataset_writer_append(dataset_writer *w, int split, const uint32_t *ids, size_t n);
int dataset_writer_end(dataset_writer *w, int split, int64_t eos);
/* Close the shards, write manifest.json, rename into place; frees w.
 * A dataset with no tokens at all is TITAN_EFORMAT ("empty corpus").
 * compress_cpu (may be NULL): the CPU seconds the shards' writing took
 * (shard_summary.compress_cpu, summed). */
int dataset_writer_commit(dataset_writer *w, double *compress_cpu);
/* Remove everything written; frees w. */
void dataset_writer_abort(dataset_writer *w);

/* The split a document goes to: a hash of its first DATASET_SPLIT_IDS ids
 * (all of them when it has fewer; BOS/EOS not included) and the seed
 * against val_fraction; independent of order and thread count.  Only the
 * first ids count so that a document of any length can be written as it is
 * encoded, with no more than these held back. */
#define DATASET_SPLIT_IDS 65536

int dataset_split_of(const uint32_t *ids, size_t n, uint64_t seed, double val_fraction);

typedef struct dataset dataset;

int dataset_open(dataset **out, const char *dir);
void dataset_close(dataset *d);
const dataset_tokinfo *dataset_tok(const dataset *d);
/* Bytes of the ids' type, the manifest's dtype: 2 (u16) or 4 (u32); shards may
 * store u32 ids in 3 bytes. */
int dataset_token_bytes(const dataset *d);
/* Split by name ("train", "val"): index or TITAN_EUSAGE. */
int dataset_split_index(const char *name, int *split);
uint64_t dataset_tokens(const dataset *d, int split);
uint64_t dataset_docs(const dataset *d, int split);
size_t dataset_nshards(const dataset *d, int split);
/* Shard i of a split: its path (inside the dataset dir) and counts. */
const char *dataset_shard_path(const dataset *d, int split, size_t i);
/* Tokens per compressed block, as the manifest records it. */
uint32_t dataset_block_tokens(const dataset *d);
/* The split assignment the dataset was written with (manifest "split"). */
void dataset_split_params(const dataset *d, uint64_t *seed, double *val_fraction);
/* Tokens [pos, pos + n) of a split's stream.  Not thread-safe (shard
 * readers cache a block): one dataset handle per thread. */
int dataset_read(dataset *d, int split, uint64_t pos, size_t n, uint32_t *out);
/* Document k of a split: start position and length in tokens. */
int dataset_doc(dataset *d, int split, uint64_t k, uint64_t *start, uint64_t *len);
/* Positions p in [pos, pos + n) where a document starts, relative to pos
 * (appended to out, ascending, each once even where empty documents share
 * a position). */
int dataset_doc_starts(dataset *d, int split, uint64_t pos, size_t n, titan_u32s *out);
/* Verify every shard of every split: every block checksum and the
 * document table (shard_verify, so damage names the shard and block), then
 * the counts and whole-file XXH64 against the manifest. */
int dataset_verify(const char *dir);

#endif
