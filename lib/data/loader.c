/* loader.c - training windows out of a dataset (see loader.h).
 *
 * Everything a batch holds is a function of its global position
 * G = epoch * windows_per_epoch + pos, so one function, fill(), builds a
 * batch from G, and the prefetch thread is only a second caller of it that
 * runs one step ahead into the other of two buffers. */
#include "core/base.h"
#include "core/buf.h"
#include "data/loader.h"

#include <pthread.h>

/* A row of a batch and the window it holds. */
struct row_ref {
	uint64_t window;
	uint32_t row;
};

/* One epoch's window order, memoised: a step may cross an epoch end (or
 * several, on a tiny split), so two are kept and the older one is reused. */
struct epoch_order {
	uint64_t epoch;
	uint32_t *perm;       /* NULL until computed */
	uint64_t used;        /* last use, for replacing the older */
};

struct loader {
	loader_opts o;
	char *dir;            /* our copy of o.dir */
	dataset *d;           /* read by fill(): the prefetch thread's alone
	                         while it runs */
	uint64_t ntokens, nwin;
	uint64_t step;        /* windows per step, all ranks */
	uint64_t next;        /* global position after the batches returned */

	struct epoch_order orders[2];
	uint64_t uses;
	uint32_t *row;        /* seq_len + 1 tokens of one window */
	struct row_ref *refs; /* batch: the rows in reading order */
	loader_batch bufs[2];

	/* Prefetch: the thread fills bufs[fill] from fill_pos when want_fill;
	 * loader_next waits for ready, takes bufs[fill] and flips fill. */
	bool threaded;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool want_fill, ready, stop;
	int fill;
	uint64_t fill_pos;
	int err;              /* the thread's failure, kept for every later call */
	char errmsg[1024];
};

static const char *const split_names[SPLIT_COUNT] = { "train", "val" };

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Fisher-Yates over [0, n) driven by splitmix64.  The stream is seeded from
 * the seed and the epoch each mixed on their own, so that (seed, epoch) and
 * (seed + 1, epoch - 1) do not share an order. */
static void shuffle_epoch(uint32_t *perm, uint64_t n, uint64_t seed, uint64_t epoch)
{
	uint64_t s = seed;
	uint64_t e = epoch ^ 0x6a09e667f3bcc908ull;
	uint64_t state = splitmix64(&s) ^ splitmix64(&e);

	for (uint64_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	for (uint64_t i = n - 1; i > 0; i--) {
		/* j uniform in [0, i] by multiply-shift; the bias is below
		 * 2^-32 for n < 2^32 and the result is the same everywhere */
		uint64_t j = (uint64_t)(((unsigned __int128)splitmix64(&state) * (i + 1)) >> 64);
		uint32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
}

/* The window at global position g. */
static int window_at(loader *l, uint64_t g, uint64_t *window)
{
	uint64_t epoch = g / l->nwin, pos = g % l->nwin;
	struct epoch_order *slot = NULL;

	if (!l->o.shuffle) {
		*window = pos;
		return 0;
	}
	for (int k = 0; k < 2; k++)
		if (l->orders[k].perm && l->orders[k].epoch == epoch)
			slot = &l->orders[k];
	if (!slot) {
		struct epoch_order *a = &l->orders[0], *b = &l->orders[1];
		slot = !a->perm ? a : !b->perm ? b : a->used <= b->used ? a : b;
		if (!slot->perm) {
			slot->perm = malloc(l->nwin * sizeof *slot->perm);
			if (!slot->perm)
				return titan_err_nomem();
		}
		shuffle_epoch(slot->perm, l->nwin, l->o.seed, epoch);
		slot->epoch = epoch;
	}
	slot->used = ++l->uses;
	*window = slot->perm[pos];
	return 0;
}

static int cmp_row_ref(const void *a, const void *b)
{
	const struct row_ref *x = a, *y = b;
	return x->window < y->window ? -1 : x->window > y->window;
}

/* Build into b this rank's rows of the step that starts at global position g.
 * Rows are read in stream order, not row order: windows that share a block
 * then decompress it once through the dataset's block cache. */
static int fill(loader *l, loader_batch *b, uint64_t g)
{
	uint32_t seq = l->o.seq_len;

	for (uint32_t i = 0; i < l->o.batch; i++) {
		uint64_t at = g + (uint64_t)i * (uint64_t)l->o.dp_size + (uint64_t)l->o.dp_rank;
		uint64_t w = 0;
		int rc = window_at(l, at, &w);
		if (rc)
			return rc;
		b->windows[i] = at / l->nwin * l->nwin + w;
		l->refs[i] = (struct row_ref){ .window = w, .row = i };
	}
	qsort(l->refs, l->o.batch, sizeof *l->refs, cmp_row_ref);

	for (uint32_t k = 0; k < l->o.batch; k++) {
		uint32_t i = l->refs[k].row;
		uint64_t start = l->refs[k].window * seq;
		int rc = dataset_read(l->d, l->o.split, start, (size_t)seq + 1, l->row);
		if (rc)
			return rc;
		memcpy(b->inputs + (size_t)i * seq, l->row, seq * sizeof *l->row);
		memcpy(b->labels + (size_t)i * seq, l->row + 1, seq * sizeof *l->row);
		if (b->doc_starts) {
			b->doc_starts[i].n = 0;
			rc = dataset_doc_starts(l->d, l->o.split, start, seq, &b->doc_starts[i]);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static void *prefetch_main(void *arg)
{
	loader *l = arg;
	pthread_setname_np(pthread_self(), "titan-prefetch");

	pthread_mutex_lock(&l->mu);
	for (;;) {
		while (!l->stop && !l->want_fill)
			pthread_cond_wait(&l->cv, &l->mu);
		if (l->stop)
			break;
		loader_batch *b = &l->bufs[l->fill];
		uint64_t g = l->fill_pos;
		pthread_mutex_unlock(&l->mu);

		int rc = fill(l, b, g);

		pthread_mutex_lock(&l->mu);
		l->want_fill = false;
		l->ready = true;
		if (rc) {
			l->err = rc;
			snprintf(l->errmsg, sizeof l->errmsg, "%s", titan_errmsg());
			pthread_cond_broadcast(&l->cv);
			break;
		}
		l->fill_pos = g + l->step;
		pthread_cond_broadcast(&l->cv);
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

static void batch_free(loader_batch *b, uint32_t rows)
{
	free(b->inputs);
	free(b->labels);
	free(b->windows);
	if (b->doc_starts)
		for (uint32_t i = 0; i < rows; i++)
			u32s_free(&b->doc_starts[i]);
	free(b->doc_starts);
	*b = (loader_batch){0};
}

static int batch_alloc(loader_batch *b, const loader_opts *o)
{
	size_t cells = (size_t)o->batch * o->seq_len;

	b->batch = o->batch;
	b->seq_len = o->seq_len;
	b->inputs = malloc(cells * sizeof *b->inputs);
	b->labels = malloc(cells * sizeof *b->labels);
	b->windows = malloc(o->batch * sizeof *b->windows);
	if (o->doc_starts)
		b->doc_starts = calloc(o->batch, sizeof *b->doc_starts);
	if (!b->inputs || !b->labels || !b->windows || (o->doc_starts && !b->doc_starts))
		return titan_err_nomem();
	return 0;
}

static int check_opts(const loader_opts *o)
{
	if (!o->dir)
		return titan_err(TITAN_EUSAGE, "loader: no dataset directory");
	if (o->split < 0 || o->split >= SPLIT_COUNT)
		return titan_err(TITAN_EUSAGE, "'%s': no split %d", o->dir, o->split);
	if (o->seq_len == 0 || o->batch == 0)
		return titan_err(TITAN_EUSAGE, "'%s': seq_len %u and batch %u must be positive",
				 o->dir, o->seq_len, o->batch);
	if (o->dp_size < 1 || o->dp_rank < 0 || o->dp_rank >= o->dp_size)
		return titan_err(TITAN_EUSAGE, "'%s': data-parallel rank %d of %d is out of range",
				 o->dir, o->dp_rank, o->dp_size);
	if ((uint64_t)o->batch * o->seq_len > SIZE_MAX / 2 / sizeof(uint32_t))
		return titan_err(TITAN_EUSAGE, "'%s': batch %u x seq_len %u is too large",
				 o->dir, o->batch, o->seq_len);
	return 0;
}

int loader_open(loader **out, const loader_opts *o, loader_cursor start)
{
	int rc = check_opts(o);
	if (rc)
		return rc;

	loader *l = calloc(1, sizeof *l);
	if (!l)
		return titan_err_nomem();
	l->o = *o;
	l->dir = strdup(o->dir);
	if (!l->dir) {
		rc = titan_err_nomem();
		goto fail;
	}
	l->o.dir = l->dir;

	rc = dataset_open(&l->d, l->dir);
	if (rc)
		goto fail;
	l->ntokens = dataset_tokens(l->d, o->split);
	if (l->ntokens < (uint64_t)o->seq_len + 1) {
		rc = titan_err(TITAN_EUSAGE,
			       "'%s': split '%s' has %llu tokens: too few for one window of seq_len + 1 = %llu",
			       l->dir, split_names[o->split], (unsigned long long)l->ntokens,
			       (unsigned long long)o->seq_len + 1);
		goto fail;
	}
	l->nwin = (l->ntokens - 1) / o->seq_len;
	if (o->shuffle && l->nwin > UINT32_MAX) {
		rc = titan_err(TITAN_EUSAGE, "'%s': split '%s' has %llu windows: more than 2^32 to shuffle",
			       l->dir, split_names[o->split], (unsigned long long)l->nwin);
		goto fail;
	}
	l->step = (uint64_t)o->dp_size * o->batch;
	if (start.epoch > (UINT64_MAX - start.pos) / l->nwin) {
		rc = titan_err(TITAN_ERANGE, "'%s': cursor epoch %llu pos %llu is out of range",
			       l->dir, (unsigned long long)start.epoch, (unsigned long long)start.pos);
		goto fail;
	}
	l->next = start.epoch * l->nwin + start.pos;

	l->row = malloc(((size_t)o->seq_len + 1) * sizeof *l->row);
	l->refs = malloc(o->batch * sizeof *l->refs);
	if (!l->row || !l->refs) {
		rc = titan_err_nomem();
		goto fail;
	}
	for (int k = 0; k < (o->prefetch ? 2 : 1); k++) {
		rc = batch_alloc(&l->bufs[k], o);
		if (rc)
			goto fail;
	}

	if (o->prefetch) {
		if (pthread_mutex_init(&l->mu, NULL)) {
			rc = titan_err(TITAN_EINTERNAL, "loader: cannot create a mutex");
			goto fail;
		}
		if (pthread_cond_init(&l->cv, NULL)) {
			pthread_mutex_destroy(&l->mu);
			rc = titan_err(TITAN_EINTERNAL, "loader: cannot create a condition variable");
			goto fail;
		}
		l->fill = 0;
		l->fill_pos = l->next;
		l->want_fill = true;
		int e = pthread_create(&l->thread, NULL, prefetch_main, l);
		if (e) {
			pthread_cond_destroy(&l->cv);
			pthread_mutex_destroy(&l->mu);
			errno = e;
			rc = titan_err_errno(TITAN_EIO, "loader: cannot start the prefetch thread");
			goto fail;
		}
		l->threaded = true;
	}
	*out = l;
	return 0;
fail:
	loader_close(l);
	return rc;
}

void loader_close(loader *l)
{
	if (!l)
		return;
	if (l->threaded) {
		/* the thread finishes the batch it is on, at most, and leaves */
		pthread_mutex_lock(&l->mu);
		l->stop = true;
		pthread_cond_broadcast(&l->cv);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->thread, NULL);
		pthread_cond_destroy(&l->cv);
		pthread_mutex_destroy(&l->mu);
	}
	for (int k = 0; k < 2; k++) {
		batch_free(&l->bufs[k], l->o.batch);
		free(l->orders[k].perm);
	}
	free(l->row);
	free(l->refs);
	dataset_close(l->d);
	free(l->dir);
	free(l);
}

uint64_t loader_windows_per_epoch(const loader *l)
{
	return l->nwin;
}

int loader_next(loader *l, loader_batch **b)
{
	if (!l->threaded) {
		int rc = fill(l, &l->bufs[0], l->next);
		if (rc)
			return rc;
		*b = &l->bufs[0];
		l->next += l->step;
		return 0;
	}

	pthread_mutex_lock(&l->mu);
	while (!l->ready && !l->err)
		pthread_cond_wait(&l->cv, &l->mu);
	if (l->err) {
		int rc = l->err;
		pthread_mutex_unlock(&l->mu);
		return titan_err(rc, "%s", l->errmsg);
	}
	*b = &l->bufs[l->fill];
	l->ready = false;
	/* the buffer returned last time is the caller's no more: refill it */
	l->fill ^= 1;
	l->want_fill = true;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	l->next += l->step;
	return 0;
}

loader_cursor loader_state(const loader *l)
{
	return (loader_cursor){ .epoch = l->next / l->nwin, .pos = l->next % l->nwin };
}
