/* readahead.h - the bytes of a list of inputs, decompressed and cut into
 * archive entries, read by threads ahead of the one that parses them.
 *
 * Every input goes through libarchive: its filters undo any compression and
 * its format readers find archives; anything that is not an archive is read
 * by the "raw" format as one entry.  mtree is the one format left out: its
 * reader accepts ordinary text ("hello\n" reads as an mtree entry) and opens
 * the files an mtree spec names, which a corpus reader must never do.
 *
 * Events come in input order whatever the threads: for each input, every
 * regular-file entry as RA_ENTRY, its data in RA_DATA blocks of at most
 * RA_BLOCK bytes and RA_ENTRY_END, then RA_INPUT_END.  An empty file (or an
 * empty .gz) is one empty entry.  An error (a file that cannot be opened, a
 * truncated archive) comes in its place in that order, after the data read
 * before it.
 *
 * Why threads: one core inflates gzip at about 200 MB/s, a few times less
 * than a many-core machine tokenizes, and C4 comes as a thousand .json.gz
 * files.  With threads > 0, up to that many regular files are read at once:
 * the one the caller is in at most RA_NEAR bytes ahead of it, the ones
 * after it `ahead` bytes (RA_AHEAD unless the caller says), which is what
 * lets them inflate while the caller is busy with the first.  A file larger
 * than that (C4's are hundreds of MB) waits for the caller once it holds
 * that much, so only a limit above the file size lets several inflate from
 * start to end at once, at the cost of holding them.  (Fresh memory is not
 * free: on a virtual machine, faulting in 32 MB costs about 80 ms, a tenth
 * of a 40 MB job, so the file being parsed never holds more than RA_NEAR.)  Standard input, pipes
 * and devices are read on the caller's thread when it gets to them, so that
 * no thread is ever left waiting on a stream that nobody will close. */
#ifndef TITAN_DATA_READAHEAD_H
#define TITAN_DATA_READAHEAD_H
#include "core/base.h"

#define RA_BLOCK (1u << 20)
#define RA_NEAR (2u * RA_BLOCK)
#define RA_AHEAD (32u * RA_BLOCK)
/* Eight inflate faster than the one thread that splits what they read can
 * take it (about 1 GB/s of JSON lines), and hold at most 256 MB by default
 * (8 x RA_AHEAD). */
#define RA_THREADS_MAX 8

typedef enum { RA_ENTRY = 1, RA_DATA, RA_ENTRY_END, RA_INPUT_END } ra_kind;

typedef struct ra_event {
	ra_kind kind;
	const char *source;   /* RA_ENTRY: "PATH", or "PATH:MEMBER" in an archive */
	const char *member;   /* RA_ENTRY: MEMBER; NULL when the input is not an
			       * archive */
	const uint8_t *data;  /* RA_DATA: len > 0 bytes */
	size_t len;
	uint64_t bytes_read;  /* of the input's file so far: compressed bytes */
} ra_event;

typedef struct ra_input {
	const char *path;     /* "-" is standard input */
	bool regular;         /* a regular file: may be read ahead */
} ra_input;

typedef struct ra_stream ra_stream;

/* inputs[0..n) must outlive r.  threads: how many regular files may be
 * read at once ahead of the caller (at most RA_THREADS_MAX); 0 reads
 * everything on its thread.  ahead: the bytes each file after the caller's
 * may hold before the caller gets to it; 0 is RA_AHEAD. */
int readahead_open(ra_stream **out, const ra_input *inputs, size_t n, int threads,
		   size_t ahead);
/* The next event: 1, 0 after the last input's RA_INPUT_END, < 0 on error
 * (the message names the input).  ev's pointers stay valid until the next
 * call. */
int readahead_next(ra_stream *r, ra_event *ev);
void readahead_close(ra_stream *r);

#endif
