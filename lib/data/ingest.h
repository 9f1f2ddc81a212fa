/* ingest.h - documents out of files, directories, stdin and archives.
 *
 * Inputs are paths: a regular file, a directory (walked recursively, entries
 * in byte order of their names so the order never depends on the file
 * system), "-" for stdin, or an archive or compressed file that libarchive
 * reads (tar, tar.gz, tar.zst, zip, .gz, .zst, .xz, ...).  Compressed single
 * files are streamed; archives are walked member by member in stored order,
 * regular-file members only.  A directory walk takes regular files and
 * symbolic links to files; names starting with '.' are skipped, and links
 * to directories are not followed (no cycles).
 *
 * Each input (or archive member) is text or JSONL: by --format, or with
 * INGEST_AUTO by its name once compression suffixes are removed (.jsonl,
 * .ndjson and .json are JSONL, the rest text; "-" is text).  A text input is
 * one document (an empty file: one empty document), or with lines=true one
 * per line: only the "\n" is removed, a "\r" before it stays, so joining the
 * documents with "\n" gives back the input; empty lines are (empty)
 * documents, and a final "\n" does not start one more.  A JSONL line is one
 * document: the string at the dotted field path ("text", "meta.body"),
 * "\u0000" included.  An invalid line, a missing field or a value that is
 * not a string is an error "SOURCE:LINE: invalid JSON: REASON (column C)",
 * "SOURCE:LINE: field 'F' is missing" or "...: is not a string" unless
 * skip_bad, which counts it.  Empty and blank lines in JSONL are skipped.
 *
 * With pieces=true a whole-file text document longer than 1 MB comes in
 * parts of 1 MB or more, each but the last with more set, so that a reader
 * of one huge file (a tokenizer, which can cut text, see tok/batch.h) never
 * holds it whole; the last part may be empty. */
#ifndef TITAN_DATA_INGEST_H
#define TITAN_DATA_INGEST_H
#include "core/base.h"

typedef enum { INGEST_AUTO, INGEST_TEXT, INGEST_JSONL } ingest_format;

typedef struct ingest_opts {
	ingest_format format;
	const char *field;  /* JSONL: dotted path; NULL means "text" */
	bool lines;         /* text: one document per line */
	bool skip_bad;      /* JSONL: skip (and count) invalid lines */
	bool pieces;        /* text: a whole-file document may come in parts */
	int readers;        /* threads reading regular files ahead, decompressing
			     * them (readahead.h); 0: all on the caller's thread */
	size_t read_ahead;  /* bytes each file after the one being parsed may
			     * hold, decompressed; 0: RA_AHEAD (32 MiB) */
} ingest_opts;

typedef struct ingest_doc {
	const uint8_t *text;  /* valid until the next ingest_next */
	size_t len;
	const char *source;   /* "FILE", "-" or "ARCHIVE:MEMBER" */
	uint64_t line;        /* 1-based line for lines/JSONL, 0 for a whole file */
	bool more;            /* pieces: the document goes on in the next one */
} ingest_doc;

typedef struct ingest ingest;

/* Check every input exists (naming the first that does not) and start. */
int ingest_open(ingest **out, const char *const *inputs, size_t n, const ingest_opts *opts);
/* Next document: 1, or 0 at the end, or < 0 on error (bad JSON, a truncated
 * archive, an unreadable file: the message names it). */
int ingest_next(ingest *in, ingest_doc *doc);
/* Invalid JSONL lines skipped so far (skip_bad). */
uint64_t ingest_skipped(const ingest *in);
/* Input bytes consumed so far (compressed bytes for compressed inputs), and
 * the total when known up front (sum of regular file sizes; 0 if unknown). */
uint64_t ingest_bytes_done(const ingest *in);
uint64_t ingest_bytes_total(const ingest *in);
void ingest_close(ingest *in);

/* Parse a --format value ("auto", "text", "jsonl"). */
int ingest_parse_format(const char *s, ingest_format *out);

#endif
