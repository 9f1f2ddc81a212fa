/* shard.h - one shard file of a titan dataset: documents of token ids,
 * zstd-compressed in fixed-size blocks with a block index for random access,
 * a checksum per block, and the documents' start positions.
 * The byte layout is documented in titan-dataset(5); in short (little-endian):
 *
 *   header   64 bytes: magic "TITANSHD", version, bytes per token (2|3|4),
 *            tokens per block, block count, token count, document count,
 *            offsets of the index and the document table, XXH64 of the header
 *   blocks   one zstd frame per block of block_tokens tokens (the last may
 *            be shorter); 3-byte tokens are stored as the low two bytes of
 *            every token of the block, then the high byte of every token
 *   index    per block: file offset u64, compressed size u32, tokens u32,
 *            XXH64 of the uncompressed block as stored u64;
 *            then the XXH64 of the index entries
 *   docs     one zstd frame: the documents' start positions (u64 token
 *            offsets within the shard, non-decreasing as documents may be
 *            empty, first 0), then the XXH64 of the uncompressed table
 *   footer   16 bytes: index offset u64 again and magic "TITANEND"
 *
 * A shard always ends at a document boundary: documents never span shards. */
#ifndef TITAN_DATA_SHARD_H
#define TITAN_DATA_SHARD_H
#include "core/base.h"
#include "core/buf.h"

/* Version 2 added 3-byte tokens; a reader takes versions 1 and 2. */
#define SHARD_VERSION 2
#define SHARD_BLOCK_TOKENS_DEFAULT 65536u
#define SHARD_WRITER_THREADS_MAX 16

typedef struct shard_writer shard_writer;

typedef struct shard_summary {
	uint64_t tokens, docs, bytes;  /* bytes: file size */
	uint64_t xxh64;                /* XXH64 of the whole file */
	double compress_cpu;           /* CPU seconds spent compressing, checksumming
					* and writing the blocks and the document table */
} shard_summary;

/* Create PATH (written as PATH.tmp.PID, renamed by shard_writer_close).
 * token_bytes: 2 (every id < 2^16), 3 (every id < 2^24) or 4.
 * block_tokens: 0 is SHARD_BLOCK_TOKENS_DEFAULT, at most 2^24.  zstd_level:
 * 0 is 1.  The writer compresses, checksums and writes full blocks on
 * threads of its own (threads of them, 0 for one per core, at most
 * SHARD_WRITER_THREADS_MAX; the bytes do not depend on how many), with a
 * few blocks in flight; call its functions from one thread at a time.  A
 * failure there comes back from a later add, append or close. */
int shard_writer_open(shard_writer **out, const char *path, int token_bytes,
		      uint32_t block_tokens, int zstd_level, int threads);
/* Append one document: bos (when not negative), ids[0..n), eos (when not
 * negative).  An id that does not fit token_bytes is TITAN_ERANGE and adds
 * nothing. */
int shard_writer_add_doc(shard_writer *w, int64_t bos, const uint32_t *ids, size_t n,
			 int64_t eos);
/* The same in pieces, so a document need not be assembled first: start a
 * document, then append its ids in as many calls as it takes.  An id that
 * does not fit is TITAN_ERANGE; after a failed append the writer is good
 * only for shard_writer_abort. */
int shard_writer_start_doc(shard_writer *w);
int shard_writer_append(shard_writer *w, const uint32_t *ids, size_t n);
uint64_t shard_writer_tokens(const shard_writer *w);
/* Whether every id of ids[0..n) fits token_bytes; if not, *bad_id is the
 * first that does not. */
bool shard_ids_fit(const uint32_t *ids, size_t n, int token_bytes, uint32_t *bad_id);
/* Flush the last block, write index, document table and footer, fsync,
 * rename into place; frees w (also on failure). */
int shard_writer_close(shard_writer *w, shard_summary *sum);
/* Remove the temporary file; frees w. */
void shard_writer_abort(shard_writer *w);

typedef struct shard_reader shard_reader;

/* Open and validate header, footer, index and document table (checksums of
 * header and document table; every block's bounds).  Blocks are checked when
 * read.  A reader is not thread-safe: one per thread. */
int shard_open(shard_reader **out, const char *path);
void shard_close(shard_reader *r);
uint64_t shard_tokens(const shard_reader *r);
uint64_t shard_docs(const shard_reader *r);
int shard_token_bytes(const shard_reader *r);
uint32_t shard_nblocks(const shard_reader *r);
uint32_t shard_block_tokens(const shard_reader *r);
/* Start positions of the documents (shard_docs() entries). */
const uint64_t *shard_doc_starts(const shard_reader *r);
/* Decompress block b into out (room for shard_block_tokens), verify its
 * checksum; sets *n to its token count.  Damage is TITAN_EFORMAT naming the
 * file and the block. */
int shard_read_block(shard_reader *r, uint32_t b, uint32_t *out, size_t *n);
/* Tokens [pos, pos + n) into out, through a one-block cache. */
int shard_read(shard_reader *r, uint64_t pos, size_t n, uint32_t *out);
/* Read every block and check every checksum; the first damage is an error
 * naming the file and block. */
int shard_verify(const char *path);
/* XXH64 (seed 0) of the whole file: the checksum a manifest stores. */
int shard_file_xxh64(const char *path, uint64_t *out);

#endif
