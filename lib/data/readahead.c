/* readahead.c - inputs read through libarchive, on threads ahead of the
 * caller (see readahead.h).
 *
 * One reader turns one input into its events.  The caller's thread runs a
 * reader itself for inputs that are not regular files, and for all of them
 * with no threads.  Otherwise the threads claim regular files in input order,
 * at most one per thread and never more than `threads` inputs past the one
 * the caller is in, and queue each file's events in a slot of its own; the
 * caller takes them from the slot of its input.  A thread stops reading a
 * file while RA_NEAR bytes of it wait in its slot, `ahead` if the caller
 * has not got to it yet. */
#include "core/base.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "data/readahead.h"

typedef struct ra_node {
	ra_event ev;
	size_t cost;          /* what it counts against its slot's limit */
	char *source;         /* owned: ev.source, ev.member within it */
	uint8_t *blk;         /* owned, RA_BLOCK bytes: ev.data */
	struct ra_node *next;
} ra_node;

/* One input as it is read. */
typedef struct reader {
	const char *path;
	int fd;
	struct archive *ar;
	char *source;         /* "PATH" or "PATH:MEMBER", for messages */
	bool saw_entry;
	bool raw;             /* not an archive: one entry, then the end */
	bool in_entry, entry_eof, input_eof;
} reader;

/* The events of one input read ahead. */
typedef struct slot {
	ra_node *head, *tail;
	size_t queued;        /* the cost of the nodes in the queue */
	int err;              /* < 0: the input failed after the queue */
	char *errmsg;
} slot;

struct ra_stream {
	const ra_input *inputs;
	size_t n;
	size_t cur;           /* the input the caller is in */
	reader own;           /* the caller's reader */
	ra_node *held;        /* the event returned last */

	size_t window;        /* inputs that may be read at once */
	size_t ahead;         /* what a slot the caller is not in may hold */
	int nthreads;         /* started */
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t work;  /* for the threads: room in a slot, a new input */
	pthread_cond_t ready; /* for the caller: an event in its slot */
	slot *slots;          /* input i's is slots[i % window]: once i is
			       * claimed, the caller is past i - window */
	size_t next_claim;    /* the first input not yet claimed */
	bool stop;
	uint8_t *free_blocks; /* a list through each block's first bytes */
};

static void reader_close(reader *rd)
{
	if (rd->ar)
		archive_read_free(rd->ar);
	rd->ar = NULL;
	if (rd->fd >= 0 && strcmp(rd->path, "-"))
		close(rd->fd);
	rd->fd = -1;
	free(rd->source);
	rd->source = NULL;
}

static int set_source(reader *rd, const char *member)
{
	free(rd->source);
	size_t len = strlen(rd->path) + (member ? 1 + strlen(member) : 0) + 1;
	rd->source = malloc(len);
	if (!rd->source)
		return titan_err_nomem();
	snprintf(rd->source, len, "%s%s%s", rd->path, member ? ":" : "", member ? member : "");
	return 0;
}

static int corrupt(const reader *rd, const char *name, const char *fallback)
{
	const char *msg = archive_error_string(rd->ar);
	return titan_err(TITAN_EFORMAT, "'%s': truncated or corrupt archive: %s", name,
			 msg ? msg : fallback);
}

static int reader_open(reader *rd)
{
	rd->fd = strcmp(rd->path, "-") ? open(rd->path, O_RDONLY | O_CLOEXEC) : 0;
	if (rd->fd < 0)
		return titan_err_errno(TITAN_EIO, "cannot open '%s'", rd->path);
	struct archive *a = archive_read_new();
	if (!a)
		return titan_err_nomem();
	rd->ar = a;
	archive_read_support_filter_all(a);
	archive_read_support_format_7zip(a);
	archive_read_support_format_ar(a);
	archive_read_support_format_cab(a);
	archive_read_support_format_cpio(a);
	archive_read_support_format_empty(a);
	archive_read_support_format_iso9660(a);
	archive_read_support_format_lha(a);
	archive_read_support_format_rar(a);
	archive_read_support_format_rar5(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_warc(a);
	archive_read_support_format_xar(a);
	archive_read_support_format_zip(a);
	archive_read_support_format_raw(a);
	if (archive_read_open_fd(a, rd->fd, RA_BLOCK) != ARCHIVE_OK)
		return corrupt(rd, rd->path, "unrecognized data");
	return 0;
}

/* Entry member (NULL: the input itself) begins: its event into nd. */
static int entry_event(reader *rd, ra_node *nd, const char *member)
{
	int rc = set_source(rd, member);
	if (rc)
		return rc;
	if (!(nd->source = strdup(rd->source)))
		return titan_err_nomem();
	nd->ev.kind = RA_ENTRY;
	nd->ev.source = nd->source;
	nd->ev.member = member ? nd->source + strlen(rd->path) + 1 : NULL;
	rd->in_entry = true;
	return 0;
}

/* The next regular-file entry's header into nd, or RA_INPUT_END. */
static int reader_header(reader *rd, ra_node *nd)
{
	struct archive_entry *e;
	for (;;) {
		int r = archive_read_next_header(rd->ar, &e);
		if (r == ARCHIVE_EOF) {
			if (!rd->saw_entry && archive_format(rd->ar) == ARCHIVE_FORMAT_EMPTY) {
				rd->saw_entry = rd->raw = rd->entry_eof = true;
				return entry_event(rd, nd, NULL);
			}
			nd->ev.kind = RA_INPUT_END;
			rd->input_eof = true;
			return 0;
		}
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
			return corrupt(rd, rd->path, "unreadable entry header");
		rd->saw_entry = true;
		rd->raw = archive_format(rd->ar) == ARCHIVE_FORMAT_RAW;
		if (!rd->raw && archive_entry_filetype(e) != AE_IFREG)
			continue;
		/* A tar hard link stores no data: its target was a member. */
		if (!rd->raw && archive_entry_hardlink(e) && archive_entry_size(e) == 0)
			continue;
		const char *name = rd->raw ? NULL : archive_entry_pathname(e);
		if (!rd->raw && !name)
			name = "?";
		rd->entry_eof = false;
		return entry_event(rd, nd, name);
	}
}

/* The input's next event into nd (RA_DATA into nd->blk): 0 or < 0. */
static int reader_next(reader *rd, ra_node *nd)
{
	int rc = 0;
	nd->ev = (ra_event){ 0 };
	if (!rd->ar && !rd->input_eof)
		rc = reader_open(rd);
	if (rc)
		return rc;
	if (rd->input_eof) {
		nd->ev.kind = RA_INPUT_END;
	} else if (!rd->in_entry) {
		rc = reader_header(rd, nd);
	} else if (rd->entry_eof) {
		nd->ev.kind = RA_ENTRY_END;
		rd->in_entry = false;
		/* A file that is not an archive is its one entry. */
		rd->input_eof = rd->raw;
	} else {
		la_ssize_t n = archive_read_data(rd->ar, nd->blk, RA_BLOCK);
		if (n < 0)
			return corrupt(rd, rd->source, "unreadable data");
		nd->ev.kind = RA_DATA;
		nd->ev.data = nd->blk;
		nd->ev.len = (size_t)n;
		if (n == 0) {
			rd->entry_eof = true;
			return reader_next(rd, nd);
		}
	}
	la_int64_t bytes = rd->ar ? archive_filter_bytes(rd->ar, -1) : 0;
	nd->ev.bytes_read = bytes > 0 ? (uint64_t)bytes : 0;
	if (nd->ev.kind == RA_INPUT_END)
		reader_close(rd);
	return rc;
}

/* ---- nodes and their blocks ---- */

static void block_put(ra_stream *r, uint8_t *blk)
{
	if (!blk)
		return;
	pthread_mutex_lock(&r->mu);
	memcpy(blk, &r->free_blocks, sizeof r->free_blocks);
	r->free_blocks = blk;
	pthread_mutex_unlock(&r->mu);
}

static void node_free(ra_stream *r, ra_node *nd)
{
	if (!nd)
		return;
	free(nd->source);
	block_put(r, nd->blk);
	free(nd);
}

/* A node with a block; NULL when memory is out. */
static ra_node *node_new(ra_stream *r)
{
	ra_node *nd = calloc(1, sizeof *nd);
	if (!nd)
		return NULL;
	pthread_mutex_lock(&r->mu);
	nd->blk = r->free_blocks;
	if (nd->blk)
		memcpy(&r->free_blocks, nd->blk, sizeof r->free_blocks);
	pthread_mutex_unlock(&r->mu);
	if (!nd->blk && !(nd->blk = malloc(RA_BLOCK))) {
		free(nd);
		return NULL;
	}
	return nd;
}

/* What a queued node holds: data keeps its block, the rest give it back at
 * once and count a little, so that a run of empty members stays bounded
 * too. */
static size_t node_keep(ra_stream *r, ra_node *nd)
{
	if (nd->ev.kind == RA_DATA)
		return RA_BLOCK;
	block_put(r, nd->blk);
	nd->blk = NULL;
	return 4096;
}

/* ---- the threads ---- */

static bool ahead_of_caller(const ra_stream *r, size_t i)
{
	return i < r->cur + r->window;
}

/* The next regular file to read ahead, claimed under r->mu; n when none is
 * left or the threads stop. */
static size_t claim_input(ra_stream *r)
{
	for (;;) {
		while (r->next_claim < r->n && !r->inputs[r->next_claim].regular)
			r->next_claim++;
		if (r->stop || r->next_claim == r->n)
			return r->n;
		if (ahead_of_caller(r, r->next_claim))
			return r->next_claim++;
		pthread_cond_wait(&r->work, &r->mu);
	}
}

/* Read input i into its slot; r->mu is held on entry and on return. */
static void read_ahead(ra_stream *r, size_t i)
{
	slot *s = &r->slots[i % r->window];
	reader rd = { .path = r->inputs[i].path, .fd = -1 };
	for (;;) {
		pthread_mutex_unlock(&r->mu);
		ra_node *nd = node_new(r);
		int rc = nd ? reader_next(&rd, nd) : titan_err_nomem();
		size_t cost = rc ? 0 : node_keep(r, nd);
		if (rc) {
			const char *msg = titan_errmsg();
			char *copy = strdup(msg);
			node_free(r, nd);
			reader_close(&rd);
			pthread_mutex_lock(&r->mu);
			s->err = rc;
			s->errmsg = copy;
			pthread_cond_broadcast(&r->ready);
			return;
		}
		pthread_mutex_lock(&r->mu);
		if (s->tail)
			s->tail->next = nd;
		else
			s->head = nd;
		s->tail = nd;
		nd->cost = cost;
		s->queued += cost;
		pthread_cond_broadcast(&r->ready);
		if (nd->ev.kind == RA_INPUT_END)
			return;
		while (!r->stop && s->queued >= (i == r->cur ? RA_NEAR : r->ahead))
			pthread_cond_wait(&r->work, &r->mu);
		if (r->stop) {
			reader_close(&rd);
			return;
		}
	}
}

static void *reader_main(void *arg)
{
	ra_stream *r = arg;
	pthread_setname_np(pthread_self(), "titan-read");
	pthread_mutex_lock(&r->mu);
	for (size_t i; (i = claim_input(r)) < r->n;)
		read_ahead(r, i);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* ---- the caller ---- */

int readahead_open(ra_stream **out, const ra_input *inputs, size_t n, int threads,
		   size_t ahead)
{
	*out = NULL;
	ra_stream *r = calloc(1, sizeof *r);
	if (!r)
		return titan_err_nomem();
	r->inputs = inputs;
	r->n = n;
	r->own.fd = -1;
	r->ahead = ahead ? ahead : RA_AHEAD;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->work, NULL);
	pthread_cond_init(&r->ready, NULL);
	size_t regular = 0;
	for (size_t i = 0; i < n; i++)
		regular += inputs[i].regular;
	threads = (int)TITAN_MIN((size_t)TITAN_MIN(TITAN_MAX(threads, 0), RA_THREADS_MAX),
				 regular);
	if (!threads) {
		*out = r;
		return 0;
	}
	r->window = (size_t)threads;
	r->slots = calloc(r->window, sizeof *r->slots);
	r->threads = calloc((size_t)threads, sizeof *r->threads);
	if (!r->slots || !r->threads) {
		readahead_close(r);
		return titan_err_nomem();
	}
	for (int t = 0; t < threads; t++) {
		if (pthread_create(&r->threads[t], NULL, reader_main, r)) {
			readahead_close(r);
			return titan_err(TITAN_EIO, "cannot start a reading thread");
		}
		r->nthreads = t + 1;
	}
	*out = r;
	return 0;
}

/* The next event of input r->cur from its slot. */
static int take_queued(ra_stream *r, ra_node **out)
{
	slot *s = &r->slots[r->cur % r->window];
	int rc = 0;
	pthread_mutex_lock(&r->mu);
	while (!s->head && !s->err)
		pthread_cond_wait(&r->ready, &r->mu);
	ra_node *nd = s->head;
	if (nd) {
		s->head = nd->next;
		if (!s->head)
			s->tail = NULL;
		s->queued -= nd->cost;
		nd->next = NULL;
		pthread_cond_broadcast(&r->work);
	} else {
		rc = titan_err(s->err, "%s", s->errmsg ? s->errmsg : "out of memory");
	}
	pthread_mutex_unlock(&r->mu);
	*out = nd;
	return rc;
}

/* The next event of input r->cur, read here. */
static int read_here(ra_stream *r, ra_node **out)
{
	ra_node *nd = node_new(r);
	if (!nd)
		return titan_err_nomem();
	if (!r->own.path)
		r->own.path = r->inputs[r->cur].path;
	int rc = reader_next(&r->own, nd);
	if (rc) {
		node_free(r, nd);
		return rc;
	}
	if (nd->ev.kind == RA_INPUT_END)
		r->own = (reader){ .fd = -1 };
	*out = nd;
	return 0;
}

int readahead_next(ra_stream *r, ra_event *ev)
{
	node_free(r, r->held);
	r->held = NULL;
	if (r->cur == r->n)
		return 0;
	ra_node *nd = NULL;
	bool queued = r->window && r->inputs[r->cur].regular;
	int rc = queued ? take_queued(r, &nd) : read_here(r, &nd);
	if (rc)
		return rc;
	if (nd->ev.kind == RA_INPUT_END) {
		pthread_mutex_lock(&r->mu);
		r->cur++;
		pthread_cond_broadcast(&r->work);
		pthread_mutex_unlock(&r->mu);
	}
	r->held = nd;
	*ev = nd->ev;
	return 1;
}

void readahead_close(ra_stream *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_broadcast(&r->work);
	pthread_mutex_unlock(&r->mu);
	for (int t = 0; t < r->nthreads; t++)
		pthread_join(r->threads[t], NULL);
	node_free(r, r->held);
	for (size_t i = 0; r->slots && i < r->window; i++) {
		for (ra_node *nd = r->slots[i].head, *next; nd; nd = next) {
			next = nd->next;
			node_free(r, nd);
		}
		free(r->slots[i].errmsg);
	}
	reader_close(&r->own);
	while (r->free_blocks) {
		uint8_t *b = r->free_blocks;
		memcpy(&r->free_blocks, b, sizeof r->free_blocks);
		free(b);
	}
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->work);
	pthread_cond_destroy(&r->ready);
	free(r->slots);
	free(r->threads);
	free(r);
}
