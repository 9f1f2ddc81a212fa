/* fuzz_ingest.c - libFuzzer target: arbitrary bytes as an ingest input.
 *
 * The first byte picks the options (format, lines, skip_bad, field path,
 * whether a thread reads the file ahead);
 * the rest becomes an in-memory file (memfd) that ingest opens by its
 * /proc/self/fd path and reads through libarchive like any input: plain
 * text, JSONL, a compressed stream or an archive.  Every document is read
 * in full so the sanitizers see any byte out of bounds. */
#include "core/base.h"

#include <sys/syscall.h>
#include <unistd.h>

#include "data/ingest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	if (fd < 0) {
		fd = (int)syscall(SYS_memfd_create, "fuzz_ingest", 0);
		if (fd < 0)
			abort();
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	static const char *const fields[] = { NULL, "meta.content", "a.b.c", "text." };
	ingest_opts opts = {
		.format = (ingest_format)(mode % 3),
		.lines = mode & 4,
		.skip_bad = mode & 8,
		.field = fields[(mode >> 4) & 3],
		.readers = (mode >> 6) & 1,
	};
	if (ftruncate(fd, 0))
		abort();
	size_t off = 1;
	while (off < size) {
		ssize_t n = pwrite(fd, data + off, size - off, (off_t)(off - 1));
		if (n <= 0)
			abort();
		off += (size_t)n;
	}

	const char *inputs[] = { path };
	ingest *in;
	if (ingest_open(&in, inputs, 1, &opts))
		abort(); /* the file exists: opening cannot fail */
	ingest_doc doc;
	volatile uint8_t sink = 0;
	uint64_t docs = 0;
	int rc;
	while ((rc = ingest_next(in, &doc)) == 1) {
		for (size_t i = 0; i < doc.len; i++)
			sink ^= doc.text[i];
		if (!doc.source || strncmp(doc.source, path, strlen(path)))
			abort();
		docs++;
	}
	/* Errors are sticky: asking again repeats the error, never a document. */
	if (rc < 0 && ingest_next(in, &doc) != rc)
		abort();
	if (ingest_bytes_done(in) > ingest_bytes_total(in) && ingest_bytes_total(in))
		abort();
	ingest_close(in);
	(void)sink;
	(void)docs;
	return 0;
}
