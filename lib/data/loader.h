/* loader.h - training windows out of a dataset, checkpointable.
 *
 * A split's token stream is cut into windows of seq_len + 1 tokens that
 * overlap by one (window w starts at w * seq_len): inputs are the first
 * seq_len tokens, labels the last seq_len.  Each epoch visits every window
 * once in an order shuffled from (seed, epoch); epochs follow each other, so
 * the global order is one endless sequence of windows.
 *
 * Each step takes the next dp_size * batch windows of that sequence; data-
 * parallel rank r takes rows i = 0..batch-1 from global positions
 * cursor + i * dp_size + r.  The whole state is the global cursor, which a
 * checkpoint stores: resuming at a cursor gives the same batches, and
 * resuming with another dp_size (same dp_size * batch) continues the same
 * global order.
 *
 * The order of epoch e is a Fisher-Yates shuffle of [0, windows_per_epoch)
 * driven by splitmix64 seeded from (seed, e): a fixed function, so a cursor
 * saved by one build resumes the same on any other.  shuffle = false gives
 * stream order in every epoch. */
#ifndef TITAN_DATA_LOADER_H
#define TITAN_DATA_LOADER_H
#include "core/base.h"
#include "data/dataset.h"

typedef struct loader_cursor {
	uint64_t epoch;   /* epochs completed */
	uint64_t pos;     /* windows of the current epoch consumed (all ranks) */
} loader_cursor;

typedef struct loader_opts {
	const char *dir;      /* dataset directory */
	int split;            /* SPLIT_TRAIN or SPLIT_VAL */
	uint32_t seq_len;
	uint32_t batch;       /* windows per rank per step */
	int dp_rank, dp_size;
	uint64_t seed;
	bool shuffle;         /* false: windows in stream order */
	bool doc_starts;      /* also report where documents start in each row */
	bool prefetch;        /* prepare the next batch on a background thread */
} loader_opts;

typedef struct loader_batch {
	uint32_t *inputs;     /* batch * seq_len */
	uint32_t *labels;     /* batch * seq_len */
	uint64_t *windows;    /* batch: global window index in the epoch order
	                         (epoch * windows_per_epoch + window), for tests */
	titan_u32s *doc_starts; /* batch rows: positions in the row where a
	                         document starts (doc_starts option) */
	uint32_t batch, seq_len;
} loader_batch;

typedef struct loader loader;

/* Open the dataset o->dir (the loader keeps its own handle and a copy of the
 * path) and position at start; a pos past the epoch's end carries into the
 * next epochs.  A split too short for one window is TITAN_EUSAGE naming its
 * size; so is a shuffled split of more than 2^32 windows. */
int loader_open(loader **out, const loader_opts *o, loader_cursor start);
/* Stops the prefetch thread (it finishes the batch it is on) and frees
 * everything; fine at any point, NULL included. */
void loader_close(loader *l);
/* (tokens of the split - 1) / seq_len */
uint64_t loader_windows_per_epoch(const loader *l);
/* The next batch; the loader owns b's buffers until the next call.  With
 * prefetch, a failure of the background thread comes out here with its
 * message, and again on every later call. */
int loader_next(loader *l, loader_batch **b);
/* The cursor after the batches returned so far (what a checkpoint saves). */
loader_cursor loader_state(const loader *l);

#endif
