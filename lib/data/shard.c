/* shard.c - write and read one shard file (see shard.h, titan-dataset(5)).
 *
 * Every number in the file is little-endian and written byte by byte.  The
 * reader trusts nothing it reads: each offset and size is checked against
 * the file size and the header before it is used. */
#include "core/base.h"
#include "data/shard.h"
#include "core/hash.h"
#include "core/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define SHARD_MAGIC "TITANSHD"
#define SHARD_END_MAGIC "TITANEND"
#define HEADER_SIZE 64u
#define FOOTER_SIZE 16u
#define INDEX_ENTRY 24u
/* The largest block a reader accepts: 2^24 tokens of 4 bytes is 64 MiB
 * uncompressed, far above any sensible block and small enough to allocate. */
#define MAX_BLOCK_TOKENS (1u << 24)

static void put32(uint8_t *p, uint32_t x)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static void put64(uint8_t *p, uint64_t x)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(x >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* A block as stored back to ids; 3-byte tokens are two planes, the low two
 * bytes of every token, then the high byte of every token. */
static void decode_tokens(uint32_t *dst, const uint8_t *src, size_t n, int token_bytes)
{
	if (token_bytes == 2) {
		for (size_t i = 0; i < n; i++)
			dst[i] = (uint32_t)src[2 * i] | (uint32_t)src[2 * i + 1] << 8;
	} else if (token_bytes == 3) {
		const uint8_t *hi = src + 2 * n;
		for (size_t i = 0; i < n; i++)
			dst[i] = (uint32_t)src[2 * i] | (uint32_t)src[2 * i + 1] << 8 |
				 (uint32_t)hi[i] << 16;
	} else {
		for (size_t i = 0; i < n; i++)
			dst[i] = get32(src + 4 * i);
	}
}

static int write_all(int fd, const char *path, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	while (n) {
		ssize_t got = write(fd, p, TITAN_MIN(n, (size_t)1 << 30));
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return titan_err_errno(TITAN_EIO, "cannot write '%s'", path);
		}
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

/* Read exactly n bytes at off; a short read is a truncated file. */
static int read_at(int fd, const char *path, uint64_t off, void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t got = pread(fd, p, TITAN_MIN(n, (size_t)1 << 30), (off_t)off);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return titan_err_errno(TITAN_EIO, "cannot read '%s'", path);
		}
		if (got == 0)
			return titan_err(TITAN_EFORMAT, "'%s': offset %llu: truncated file",
					 path, (unsigned long long)off);
		p += got;
		n -= (size_t)got;
		off += (uint64_t)got;
	}
	return 0;
}

/* XXH64 of a whole file (the manifest's checksum), through mmap. */
static int hash_file(const char *path, uint64_t *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot stat '%s'", path);
	} else if (st.st_size == 0) {
		*out = hash64("", 0, 0);
	} else {
		void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (m == MAP_FAILED) {
			rc = titan_err_errno(TITAN_EIO, "cannot map '%s'", path);
		} else {
			*out = hash64(m, (size_t)st.st_size, 0);
			munmap(m, (size_t)st.st_size);
		}
	}
	close(fd);
	return rc;
}

/* ---- writer ----
 *
 * The caller's thread appends tokens to a block, as u16 for 2-byte tokens
 * and as u32 otherwise; a full block goes to the writer's compressing
 * threads, which put it in its stored form (3-byte tokens as two planes),
 * compress and checksum blocks side by side and write them in the order
 * they came.  So the caller's thread does little more than copy ids, and
 * the rest runs alongside whatever produces them.  At most 2 blocks per
 * thread and 2 more are in the writer at once: the one being filled and
 * those being compressed or waiting for their turn to be written.
 *
 * Why planes: the low two bytes of a token id say most of which token it
 * is, so zstd finds the same pairs again, while the high byte is a slowly
 * changing stream of its own.  On llama3 ids this stores 3% fewer bytes
 * than four-byte ids and compresses a third faster. */

typedef struct writer_slot {
	uint8_t *raw;          /* the block as appended (fill_bytes per token) */
	uint8_t *z;            /* compressed */
	size_t zn;
	uint64_t xxh64;        /* of the block as stored */
	uint32_t ntok;
} writer_slot;

/* What a compressing thread starts with: its writer and its own context. */
typedef struct compress_arg {
	shard_writer *w;
	int k;                 /* index into cctx[] and planes[] */
} compress_arg;

struct shard_writer {
	char *path, *tmp;
	int fd;
	int token_bytes;       /* as stored */
	int fill_bytes;        /* as appended: 2, or 4 for 3 and 4 */
	uint32_t block_tokens;
	int zstd_level;
	size_t zcap;
	writer_slot *slot;     /* block k is in slot k % nslots */
	uint32_t nslots;
	size_t nblock;         /* tokens in the block being filled */
	uint64_t tokens;
	titan_bytes starts;    /* u64 document starts, as stored */
	/* Written by the thread whose block's turn it is, then by close. */
	uint64_t offset;       /* where the next block goes */
	titan_bytes index;     /* INDEX_ENTRY bytes per block, as stored */
	ZSTD_CCtx *cctx[SHARD_WRITER_THREADS_MAX];
	uint8_t *planes[SHARD_WRITER_THREADS_MAX];  /* a 3-byte block as stored */

	pthread_mutex_t mu;
	pthread_cond_t cv;     /* signalled on every change of the fields below */
	pthread_t thread[SHARD_WRITER_THREADS_MAX];
	compress_arg arg[SHARD_WRITER_THREADS_MAX];
	int nthreads;          /* started */
	/* Blocks [0, written) are in the file, [written, claimed) with a
	 * thread, [claimed, queued) waiting for one, block queued is being
	 * filled. */
	uint32_t written, claimed, queued;
	bool quit, cancel;     /* no more blocks; drop those not written */
	double compress_cpu;   /* the threads' CPU seconds, added as each ends */
	int rc;                /* the threads' first failure, and its message */
	char msg[1024];
};

/* Tokens as appended: fill_bytes little-endian bytes each. */
static void fill_tokens(uint8_t *dst, const uint32_t *ids, size_t n, int fill_bytes)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	if (fill_bytes == 4) {
		memcpy(dst, ids, n * sizeof *ids);
	} else {
		for (size_t i = 0; i < n; i++) {
			uint16_t v = (uint16_t)ids[i];
			memcpy(dst + 2 * i, &v, sizeof v);
		}
	}
#else
	if (fill_bytes == 2) {
		for (size_t i = 0; i < n; i++) {
			dst[2 * i] = (uint8_t)ids[i];
			dst[2 * i + 1] = (uint8_t)(ids[i] >> 8);
		}
	} else {
		for (size_t i = 0; i < n; i++)
			put32(dst + 4 * i, ids[i]);
	}
#endif
}

/* n u32 little-endian ids below 2^24 as two planes: the low two bytes of
 * each, then the high byte of each. */
static void split_planes(uint8_t *dst, const uint8_t *src, size_t n)
{
	uint8_t *hi = dst + 2 * n;
	for (size_t i = 0; i < n; i++) {
		dst[2 * i] = src[4 * i];
		dst[2 * i + 1] = src[4 * i + 1];
		hi[i] = src[4 * i + 2];
	}
}

/* The part of a block's work that blocks can do side by side. */
static int compress_block(shard_writer *w, const compress_arg *a, writer_slot *sl,
			  uint32_t block)
{
	const uint8_t *stored = sl->raw;
	if (w->token_bytes == 3) {
		split_planes(w->planes[a->k], sl->raw, sl->ntok);
		stored = w->planes[a->k];
	}
	size_t stored_bytes = (size_t)sl->ntok * (size_t)w->token_bytes;
	sl->zn = ZSTD_compressCCtx(w->cctx[a->k], sl->z, w->zcap, stored, stored_bytes,
				   w->zstd_level);
	if (ZSTD_isError(sl->zn))
		return titan_err(TITAN_EINTERNAL, "'%s': block %u: zstd: %s", w->path, block,
				 ZSTD_getErrorName(sl->zn));
	sl->xxh64 = hash64(stored, stored_bytes, 0);
	return 0;
}

/* The part that goes in block order. */
static int write_block(shard_writer *w, const writer_slot *sl)
{
	int rc = write_all(w->fd, w->tmp, sl->z, sl->zn);
	if (rc)
		return rc;
	uint8_t e[INDEX_ENTRY];
	put64(e, w->offset);
	put32(e + 8, (uint32_t)sl->zn);
	put32(e + 12, sl->ntok);
	put64(e + 16, sl->xxh64);
	rc = bytes_append(&w->index, e, sizeof e);
	if (rc)
		return rc;
	w->offset += sl->zn;
	return 0;
}

/* Record a thread's failure (the first one wins); under mu. */
static void record_failure(shard_writer *w, int rc)
{
	if (rc && !w->rc) {
		w->rc = rc;
		snprintf(w->msg, sizeof w->msg, "%s", titan_errmsg());
	}
}

/* After a failure or a cancel the threads still take every block in turn
 * (without writing it), so that every wait ends. */
static void *compress_main(void *arg)
{
	pthread_setname_np(pthread_self(), "titan-zstd");
	const compress_arg *a = arg;
	shard_writer *w = a->w;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->claimed == w->queued && !w->quit)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->claimed == w->queued)
			break;
		uint32_t b = w->claimed++;
		writer_slot *sl = &w->slot[b % w->nslots];
		bool skip = w->rc || w->cancel;
		pthread_mutex_unlock(&w->mu);
		int rc = skip ? 0 : compress_block(w, a, sl, b);
		pthread_mutex_lock(&w->mu);
		while (w->written != b)
			pthread_cond_wait(&w->cv, &w->mu);
		skip = skip || rc || w->rc || w->cancel;
		pthread_mutex_unlock(&w->mu);
		/* One thread at a time gets here, the one holding block
		 * `written`: the file and the index are its alone. */
		if (!skip)
			rc = write_block(w, sl);
		pthread_mutex_lock(&w->mu);
		record_failure(w, rc);
		w->written++;
		pthread_cond_broadcast(&w->cv);
	}
	w->compress_cpu += titan_thread_cpu_now();
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* The threads' failure as the caller's error; under mu. */
static int compress_failure(shard_writer *w)
{
	return w->rc ? titan_err(w->rc, "%s", w->msg) : 0;
}

/* Hand the filled block to the threads; wait for a free slot. */
static int queue_block(shard_writer *w)
{
	pthread_mutex_lock(&w->mu);
	w->slot[w->queued % w->nslots].ntok = (uint32_t)w->nblock;
	w->queued++;
	pthread_cond_broadcast(&w->cv);
	while (w->queued - w->written == w->nslots)
		pthread_cond_wait(&w->cv, &w->mu);
	int rc = compress_failure(w);
	pthread_mutex_unlock(&w->mu);
	w->nblock = 0;
	return rc;
}

/* Queue the last, partial block (unless cancel), let the threads write
 * every queued block (or drop them) and join them. */
static int finish_blocks(shard_writer *w, bool cancel)
{
	if (!w->nthreads)
		return 0;
	pthread_mutex_lock(&w->mu);
	if (w->nblock && !cancel) {
		w->slot[w->queued % w->nslots].ntok = (uint32_t)w->nblock;
		w->queued++;
		w->nblock = 0;
	}
	w->quit = true;
	w->cancel = cancel;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	for (int k = 0; k < w->nthreads; k++)
		pthread_join(w->thread[k], NULL);
	w->nthreads = 0;
	return compress_failure(w);
}

/* Compressing threads: as asked, or one per core, within
 * SHARD_WRITER_THREADS_MAX; the bytes written do not depend on it. */
static int writer_threads(int asked)
{
	long n = asked > 0 ? asked : sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > SHARD_WRITER_THREADS_MAX ? SHARD_WRITER_THREADS_MAX : (int)n;
}

static void writer_free(shard_writer *w)
{
	finish_blocks(w, true);
	if (w->fd >= 0)
		close(w->fd);
	for (int k = 0; k < SHARD_WRITER_THREADS_MAX; k++) {
		ZSTD_freeCCtx(w->cctx[k]);
		free(w->planes[k]);
	}
	for (uint32_t k = 0; w->slot && k < w->nslots; k++) {
		free(w->slot[k].raw);
		free(w->slot[k].z);
	}
	free(w->slot);
	bytes_free(&w->index);
	bytes_free(&w->starts);
	free(w->path);
	free(w->tmp);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}

int shard_writer_open(shard_writer **out, const char *path, int token_bytes,
		      uint32_t block_tokens, int zstd_level, int threads)
{
	*out = NULL;
	if (token_bytes < 2 || token_bytes > 4)
		return titan_err(TITAN_EUSAGE, "'%s': token size %d: expected 2, 3 or 4",
				 path, token_bytes);
	if (!block_tokens)
		block_tokens = SHARD_BLOCK_TOKENS_DEFAULT;
	if (block_tokens > MAX_BLOCK_TOKENS)
		return titan_err(TITAN_EUSAGE, "'%s': block of %u tokens: at most %u",
				 path, block_tokens, MAX_BLOCK_TOKENS);
	if (!zstd_level)
		zstd_level = 1;

	shard_writer *w = calloc(1, sizeof *w);
	if (!w)
		return titan_err_nomem();
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->fd = -1;
	w->token_bytes = token_bytes;
	w->fill_bytes = token_bytes == 2 ? 2 : 4;
	w->block_tokens = block_tokens;
	w->zstd_level = zstd_level;
	w->offset = HEADER_SIZE;
	size_t stored_bytes = (size_t)block_tokens * (size_t)token_bytes;
	size_t fill_bytes = (size_t)block_tokens * (size_t)w->fill_bytes;
	w->zcap = ZSTD_compressBound(stored_bytes);
	size_t tmplen = strlen(path) + 32;
	w->path = strdup(path);
	w->tmp = malloc(tmplen);
	int nthreads = writer_threads(threads);
	w->nslots = 2 * (uint32_t)nthreads + 2;
	w->slot = calloc(w->nslots, sizeof *w->slot);
	bool nomem = !w->path || !w->tmp || !w->slot;
	for (int k = 0; k < nthreads; k++) {
		nomem |= !(w->cctx[k] = ZSTD_createCCtx());
		if (token_bytes == 3)
			nomem |= !(w->planes[k] = malloc(stored_bytes));
	}
	for (uint32_t k = 0; w->slot && k < w->nslots; k++) {
		nomem |= !(w->slot[k].raw = malloc(fill_bytes));
		nomem |= !(w->slot[k].z = malloc(w->zcap));
	}
	if (nomem) {
		writer_free(w);
		return titan_err_nomem();
	}
	snprintf(w->tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());
	w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		int rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", w->tmp);
		writer_free(w);
		return rc;
	}
	/* The header is written last, once its fields are known. */
	if (lseek(w->fd, HEADER_SIZE, SEEK_SET) < 0) {
		int rc = titan_err_errno(TITAN_EIO, "cannot seek in '%s'", w->tmp);
		shard_writer_abort(w);
		return rc;
	}
	for (int k = 0; k < nthreads; k++) {
		w->arg[k] = (compress_arg){ .w = w, .k = k };
		int err = pthread_create(&w->thread[k], NULL, compress_main, &w->arg[k]);
		if (err) {
			errno = err;
			int rc = titan_err_errno(TITAN_EIO, "'%s': cannot start a compressing "
						 "thread", w->path);
			shard_writer_abort(w);
			return rc;
		}
		w->nthreads++;
	}
	*out = w;
	return 0;
}

/* One branch-free pass first: ids almost always fit. */
bool shard_ids_fit(const uint32_t *ids, size_t n, int token_bytes, uint32_t *bad_id)
{
	if (token_bytes >= 4)
		return true;
	uint32_t max = token_bytes == 2 ? 0xffffu : 0xffffffu, any = 0;
	for (size_t i = 0; i < n; i++)
		any |= ids[i];
	if (any <= max)
		return true;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] > max) {
			*bad_id = ids[i];
			break;
		}
	}
	return false;
}

/* An id past the stored size: TITAN_ERANGE. */
static int refuse_id(const shard_writer *w, uint32_t id)
{
	return titan_err(TITAN_ERANGE, "'%s': token id %u does not fit in %d bytes",
			 w->path, id, w->token_bytes);
}

int shard_writer_start_doc(shard_writer *w)
{
	/* In place: a call to memcpy for 8 bytes per document shows in the
	 * hand-over thread's profile when documents are short. */
	int rc = bytes_reserve(&w->starts, 8);
	if (rc)
		return rc;
	put64(w->starts.v + w->starts.n, w->tokens);
	w->starts.n += 8;
	return 0;
}

/* Ids known to fit, to the document started last. */
static int append_tokens(shard_writer *w, const uint32_t *ids, size_t n)
{
	while (n) {
		size_t take = TITAN_MIN(n, (size_t)w->block_tokens - w->nblock);
		uint8_t *raw = w->slot[w->queued % w->nslots].raw;
		fill_tokens(raw + w->nblock * (size_t)w->fill_bytes, ids, take, w->fill_bytes);
		w->nblock += take;
		w->tokens += take;
		ids += take;
		n -= take;
		if (w->nblock == w->block_tokens) {
			int rc = queue_block(w);
			if (rc)
				return rc;
		}
	}
	return 0;
}

int shard_writer_add_doc(shard_writer *w, int64_t bos, const uint32_t *ids, size_t n,
			 int64_t eos)
{
	uint32_t bad_id = 0, head = (uint32_t)bos, tail = (uint32_t)eos;
	/* Checked before the document starts, so a refused one leaves no
	 * trace. */
	if (!shard_ids_fit(ids, n, w->token_bytes, &bad_id) ||
	    (bos >= 0 && !shard_ids_fit(&head, 1, w->token_bytes, &bad_id)) ||
	    (eos >= 0 && !shard_ids_fit(&tail, 1, w->token_bytes, &bad_id)))
		return refuse_id(w, bad_id);
	int rc = shard_writer_start_doc(w);
	if (!rc && bos >= 0)
		rc = append_tokens(w, &head, 1);
	if (!rc)
		rc = append_tokens(w, ids, n);
	if (!rc && eos >= 0)
		rc = append_tokens(w, &tail, 1);
	return rc;
}

int shard_writer_append(shard_writer *w, const uint32_t *ids, size_t n)
{
	uint32_t bad_id = 0;
	if (!shard_ids_fit(ids, n, w->token_bytes, &bad_id))
		return refuse_id(w, bad_id);
	return append_tokens(w, ids, n);
}

uint64_t shard_writer_tokens(const shard_writer *w)
{
	return w->tokens;
}

/* Index, document table, footer and header: everything after the blocks. */
static int write_tail(shard_writer *w, uint64_t *size)
{
	int rc = finish_blocks(w, false);
	if (rc)
		return rc;
	uint64_t index_off = w->offset;
	uint8_t sum[8];
	put64(sum, hash64(w->index.v, w->index.n, 0));
	if ((rc = write_all(w->fd, w->tmp, w->index.v, w->index.n)) ||
	    (rc = write_all(w->fd, w->tmp, sum, sizeof sum)))
		return rc;
	uint64_t docs_off = index_off + w->index.n + 8;

	size_t bound = ZSTD_compressBound(w->starts.n);
	uint8_t *z = malloc(bound ? bound : 1);
	if (!z)
		return titan_err_nomem();
	double cpu0 = titan_thread_cpu_now();
	size_t zn = ZSTD_compressCCtx(w->cctx[0], z, bound, w->starts.v ? w->starts.v : sum,
				      w->starts.n, w->zstd_level);
	w->compress_cpu += titan_thread_cpu_now() - cpu0;
	if (ZSTD_isError(zn)) {
		free(z);
		return titan_err(TITAN_EINTERNAL, "'%s': document table: zstd: %s",
				 w->path, ZSTD_getErrorName(zn));
	}
	rc = write_all(w->fd, w->tmp, z, zn);
	free(z);
	if (rc)
		return rc;
	put64(sum, hash64(w->starts.v ? w->starts.v : sum, w->starts.n, 0));
	uint8_t foot[FOOTER_SIZE];
	put64(foot, index_off);
	memcpy(foot + 8, SHARD_END_MAGIC, 8);
	if ((rc = write_all(w->fd, w->tmp, sum, sizeof sum)) ||
	    (rc = write_all(w->fd, w->tmp, foot, sizeof foot)))
		return rc;
	*size = docs_off + zn + 8 + FOOTER_SIZE;

	uint8_t h[HEADER_SIZE];
	memcpy(h, SHARD_MAGIC, 8);
	put32(h + 8, SHARD_VERSION);
	put32(h + 12, (uint32_t)w->token_bytes);
	put32(h + 16, w->block_tokens);
	put32(h + 20, w->written);
	put64(h + 24, w->tokens);
	put64(h + 32, w->starts.n / 8);
	put64(h + 40, index_off);
	put64(h + 48, docs_off);
	put64(h + 56, hash64(h, 56, 0));
	if (pwrite(w->fd, h, sizeof h, 0) != (ssize_t)sizeof h)
		return titan_err_errno(TITAN_EIO, "cannot write '%s'", w->tmp);
	if (fsync(w->fd) < 0)
		return titan_err_errno(TITAN_EIO, "cannot sync '%s'", w->tmp);
	return 0;
}

int shard_writer_close(shard_writer *w, shard_summary *sum)
{
	uint64_t size = 0;
	int rc = write_tail(w, &size);
	if (rc) {
		shard_writer_abort(w);
		return rc;
	}
	if (close(w->fd) < 0) {
		w->fd = -1;
		rc = titan_err_errno(TITAN_EIO, "cannot close '%s'", w->tmp);
		shard_writer_abort(w);
		return rc;
	}
	w->fd = -1;
	if (rename(w->tmp, w->path) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot rename '%s' to '%s'", w->tmp, w->path);
		shard_writer_abort(w);
		return rc;
	}
	if (sum) {
		sum->tokens = w->tokens;
		sum->docs = w->starts.n / 8;
		sum->bytes = size;
		sum->compress_cpu = w->compress_cpu;
		rc = hash_file(w->path, &sum->xxh64);
	}
	writer_free(w);
	return rc;
}

void shard_writer_abort(shard_writer *w)
{
	if (!w)
		return;
	finish_blocks(w, true);  /* the thread may be writing to fd */
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	unlink(w->tmp);
	writer_free(w);
}

/* ---- reader ---- */

struct shard_reader {
	char *path;
	int fd;
	int token_bytes;
	uint32_t block_tokens, nblocks;
	uint64_t tokens, docs;
	uint8_t *index;        /* nblocks entries as stored */
	uint64_t *starts;      /* docs entries */
	uint8_t *zbuf, *raw;   /* a compressed and a decompressed block */
	size_t zcap;           /* largest compressed block */
	size_t max_block;      /* most tokens in a block */
	ZSTD_DCtx *dctx;
	uint32_t *cache;       /* the last block read, decoded */
	size_t cache_n;
	int64_t cache_block;   /* -1: empty */
};

void shard_close(shard_reader *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	free(r->path);
	free(r->index);
	free(r->starts);
	free(r->zbuf);
	free(r->raw);
	free(r->cache);
	ZSTD_freeDCtx(r->dctx);
	free(r);
}

static int bad(const shard_reader *r, const char *what)
{
	return titan_err(TITAN_EFORMAT, "'%s': %s", r->path, what);
}

/* Header fields, checked against each other and the file size. */
static int parse_header(shard_reader *r, const uint8_t *h, uint64_t size,
			uint64_t *index_off, uint64_t *docs_off)
{
	if (memcmp(h, SHARD_MAGIC, 8))
		return bad(r, "not a titan shard (bad magic)");
	if (get64(h + 56) != hash64(h, 56, 0))
		return bad(r, "header: checksum mismatch");
	uint32_t version = get32(h + 8);
	if (version < 1 || version > SHARD_VERSION)
		return titan_err(TITAN_EFORMAT, "'%s': header: unsupported version %u",
				 r->path, version);
	uint32_t tb = get32(h + 12);
	if (tb < 2 || tb > 4)
		return bad(r, "header: token size is not 2, 3 or 4");
	if (tb == 3 && version < 2)
		return bad(r, "header: token size 3 in a version 1 shard");
	r->token_bytes = (int)tb;
	r->block_tokens = get32(h + 16);
	r->nblocks = get32(h + 20);
	r->tokens = get64(h + 24);
	r->docs = get64(h + 32);
	*index_off = get64(h + 40);
	*docs_off = get64(h + 48);
	if (!r->block_tokens || r->block_tokens > MAX_BLOCK_TOKENS)
		return bad(r, "header: block size out of range");
	/* Block count and token count must agree exactly. */
	uint64_t want = r->tokens / r->block_tokens + (r->tokens % r->block_tokens != 0);
	if (want != r->nblocks)
		return bad(r, "header: block count does not match token count");
	if (*index_off < HEADER_SIZE || *index_off > size ||
	    (uint64_t)r->nblocks * INDEX_ENTRY + 8 > size - *index_off ||
	    *docs_off != *index_off + (uint64_t)r->nblocks * INDEX_ENTRY + 8 ||
	    *docs_off + 8 + FOOTER_SIZE > size)
		return bad(r, "header: section offsets out of range");
	if (r->docs > (size - *docs_off) * 64 || r->docs > SIZE_MAX / 8 ||
	    (r->tokens && !r->docs))
		return bad(r, "header: document count out of range");
	return 0;
}

/* The index: contiguous blocks after the header, sizes and counts in range. */
static int check_index(shard_reader *r, uint64_t index_off)
{
	uint64_t off = HEADER_SIZE;
	size_t zmax = ZSTD_compressBound((size_t)r->block_tokens * (size_t)r->token_bytes);
	for (uint32_t b = 0; b < r->nblocks; b++) {
		const uint8_t *e = r->index + (size_t)b * INDEX_ENTRY;
		uint64_t boff = get64(e);
		uint32_t csize = get32(e + 8), ntok = get32(e + 12);
		uint64_t want = b + 1 < r->nblocks ? r->block_tokens :
			r->tokens - (uint64_t)b * r->block_tokens;
		if (boff != off || !csize || csize > zmax || csize > index_off - off ||
		    ntok != want)
			return titan_err(TITAN_EFORMAT, "'%s': index: block %u: bad entry",
					 r->path, b);
		off += csize;
		r->zcap = TITAN_MAX(r->zcap, (size_t)csize);
		r->max_block = TITAN_MAX(r->max_block, (size_t)ntok);
	}
	if (off != index_off)
		return bad(r, "index: blocks do not end at the index");
	return 0;
}

static int load_doc_table(shard_reader *r, uint64_t docs_off, uint64_t size)
{
	uint64_t zn = size - FOOTER_SIZE - 8 - docs_off;
	/* zstd packs at most about 32768 bytes into one (run-length
	 * blocks): a larger claim is damage, not a table to allocate. */
	if (zn > ZSTD_compressBound((size_t)r->docs * 8) + 64 ||
	    r->docs * 8 > (zn + 1) * 32768)
		return bad(r, "document table: size out of range");
	uint8_t *z = malloc(zn + 8);
	size_t raw_n = (size_t)r->docs * 8;
	uint8_t *raw = malloc(raw_n ? raw_n : 1);
	r->starts = malloc(raw_n ? raw_n : 1);
	int rc = 0;
	if (!z || !raw || !r->starts) {
		rc = titan_err_nomem();
		goto out;
	}
	if ((rc = read_at(r->fd, r->path, docs_off, z, (size_t)zn + 8)))
		goto out;
	unsigned long long fcs = ZSTD_getFrameContentSize(z, (size_t)zn);
	if (fcs != raw_n) {
		rc = bad(r, "document table: bad zstd frame");
		goto out;
	}
	size_t got = ZSTD_decompressDCtx(r->dctx, raw, raw_n, z, (size_t)zn);
	if (ZSTD_isError(got) || got != raw_n) {
		rc = bad(r, "document table: bad zstd frame");
		goto out;
	}
	if (get64(z + zn) != hash64(raw, raw_n, 0)) {
		rc = bad(r, "document table: checksum mismatch");
		goto out;
	}
	uint64_t prev = 0;
	for (size_t i = 0; i < r->docs; i++) {
		uint64_t s = get64(raw + 8 * i);
		if ((i == 0 && s != 0) || s < prev || s > r->tokens) {
			rc = titan_err(TITAN_EFORMAT, "'%s': document table: document %zu: "
				       "start out of order", r->path, i);
			goto out;
		}
		r->starts[i] = prev = s;
	}
out:
	free(z);
	free(raw);
	return rc;
}

static int reader_load(shard_reader *r)
{
	struct stat st;
	if (fstat(r->fd, &st) < 0)
		return titan_err_errno(TITAN_EIO, "cannot stat '%s'", r->path);
	uint64_t size = (uint64_t)st.st_size;
	if (size < HEADER_SIZE + 8 + 8 + FOOTER_SIZE)
		return bad(r, "truncated file (shorter than header and footer)");
	uint8_t h[HEADER_SIZE], foot[FOOTER_SIZE];
	int rc = read_at(r->fd, r->path, 0, h, sizeof h);
	if (!rc)
		rc = read_at(r->fd, r->path, size - FOOTER_SIZE, foot, sizeof foot);
	if (rc)
		return rc;
	uint64_t index_off = 0, docs_off = 0;
	if ((rc = parse_header(r, h, size, &index_off, &docs_off)))
		return rc;
	if (memcmp(foot + 8, SHARD_END_MAGIC, 8) || get64(foot) != index_off)
		return bad(r, "footer: bad magic or index offset (truncated file?)");

	size_t index_n = (size_t)r->nblocks * INDEX_ENTRY;
	r->index = malloc(index_n + 8);
	if (!r->index)
		return titan_err_nomem();
	if ((rc = read_at(r->fd, r->path, index_off, r->index, index_n + 8)))
		return rc;
	if (get64(r->index + index_n) != hash64(r->index, index_n, 0))
		return bad(r, "index: checksum mismatch");
	if ((rc = check_index(r, index_off)))
		return rc;

	r->dctx = ZSTD_createDCtx();
	if (!r->dctx)
		return titan_err_nomem();
	if ((rc = load_doc_table(r, docs_off, size)))
		return rc;

	/* Buffers as big as the largest block the index lists. */
	size_t raw_bytes = r->max_block * (size_t)r->token_bytes;
	r->zbuf = malloc(r->zcap ? r->zcap : 1);
	r->raw = malloc(raw_bytes ? raw_bytes : 1);
	r->cache = malloc((r->max_block ? r->max_block : 1) * sizeof *r->cache);
	if (!r->zbuf || !r->raw || !r->cache)
		return titan_err_nomem();
	return 0;
}

int shard_open(shard_reader **out, const char *path)
{
	*out = NULL;
	shard_reader *r = calloc(1, sizeof *r);
	if (!r)
		return titan_err_nomem();
	r->cache_block = -1;
	r->path = strdup(path);
	if (!r->path) {
		free(r);
		return titan_err_nomem();
	}
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0) {
		int rc = titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
		shard_close(r);
		return rc;
	}
	int rc = reader_load(r);
	if (rc) {
		shard_close(r);
		return rc;
	}
	*out = r;
	return 0;
}

uint64_t shard_tokens(const shard_reader *r)
{
	return r->tokens;
}

uint64_t shard_docs(const shard_reader *r)
{
	return r->docs;
}

int shard_token_bytes(const shard_reader *r)
{
	return r->token_bytes;
}

uint32_t shard_nblocks(const shard_reader *r)
{
	return r->nblocks;
}

uint32_t shard_block_tokens(const shard_reader *r)
{
	return r->block_tokens;
}

const uint64_t *shard_doc_starts(const shard_reader *r)
{
	return r->starts;
}

int shard_read_block(shard_reader *r, uint32_t b, uint32_t *out, size_t *n)
{
	if (b >= r->nblocks)
		return titan_err(TITAN_ERANGE, "'%s': block %u: past the last block (%u)",
				 r->path, b, r->nblocks);
	const uint8_t *e = r->index + (size_t)b * INDEX_ENTRY;
	uint64_t off = get64(e);
	uint32_t csize = get32(e + 8), ntok = get32(e + 12);
	size_t raw_n = (size_t)ntok * (size_t)r->token_bytes;
	int rc = read_at(r->fd, r->path, off, r->zbuf, csize);
	if (rc)
		return rc;
	unsigned long long fcs = ZSTD_getFrameContentSize(r->zbuf, csize);
	if (fcs != raw_n)
		return titan_err(TITAN_EFORMAT, "'%s': block %u: bad zstd frame header",
				 r->path, b);
	size_t got = ZSTD_decompressDCtx(r->dctx, r->raw, raw_n, r->zbuf, csize);
	if (ZSTD_isError(got) || got != raw_n)
		return titan_err(TITAN_EFORMAT, "'%s': block %u: corrupt zstd frame%s%s",
				 r->path, b, ZSTD_isError(got) ? ": " : "",
				 ZSTD_isError(got) ? ZSTD_getErrorName(got) : "");
	if (hash64(r->raw, raw_n, 0) != get64(e + 16))
		return titan_err(TITAN_EFORMAT, "'%s': block %u: checksum mismatch",
				 r->path, b);
	decode_tokens(out, r->raw, ntok, r->token_bytes);
	*n = ntok;
	return 0;
}

int shard_read(shard_reader *r, uint64_t pos, size_t n, uint32_t *out)
{
	if (pos > r->tokens || n > r->tokens - pos)
		return titan_err(TITAN_ERANGE, "'%s': tokens [%llu, +%zu) past the end (%llu)",
				 r->path, (unsigned long long)pos, n,
				 (unsigned long long)r->tokens);
	while (n) {
		uint32_t b = (uint32_t)(pos / r->block_tokens);
		if (r->cache_block != (int64_t)b) {
			r->cache_block = -1;
			int rc = shard_read_block(r, b, r->cache, &r->cache_n);
			if (rc)
				return rc;
			r->cache_block = b;
		}
		size_t in = (size_t)(pos - (uint64_t)b * r->block_tokens);
		size_t take = TITAN_MIN(n, r->cache_n - in);
		memcpy(out, r->cache + in, take * sizeof *out);
		out += take;
		pos += take;
		n -= take;
	}
	return 0;
}

int shard_verify(const char *path)
{
	shard_reader *r;
	int rc = shard_open(&r, path);
	if (rc)
		return rc;
	for (uint32_t b = 0; b < r->nblocks && !rc; b++) {
		size_t n;
		rc = shard_read_block(r, b, r->cache, &n);
	}
	r->cache_block = -1;
	shard_close(r);
	return rc;
}

/* The whole-file checksum the dataset manifest stores. */
int shard_file_xxh64(const char *path, uint64_t *out)
{
	return hash_file(path, out);
}
