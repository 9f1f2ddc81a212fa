/* ckpt_priv.h - what ckpt.c, ckpt_reader.c and ckpt_writer.c share; not a
 * public interface. */
#ifndef TITAN_CKPT_CKPT_PRIV_H
#define TITAN_CKPT_CKPT_PRIV_H
#include "core/base.h"
#include "ckpt/ckpt.h"

#define CKPT_FORMAT "titan-checkpoint"
#define CKPT_VERSION 1

static inline int64_t ckpt_numel(int ndim, const int64_t *shape)
{
	int64_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	return n;
}

/* A name -> index table over names the caller stores: name(ctx, i) gives
 * the name of entry i. */
typedef const char *(*ckpt_name_fn)(const void *ctx, size_t i);
typedef struct ckpt_index {
	size_t *slot;         /* entry + 1; 0: empty */
	size_t cap, n;
} ckpt_index;
/* Entry i (the n-th added, i == n) goes in; grows by rehashing 0..i. */
int ckpt_index_add(ckpt_index *x, size_t i, ckpt_name_fn name, const void *ctx);
/* The entry named name, or SIZE_MAX. */
size_t ckpt_index_find(const ckpt_index *x, const char *name, ckpt_name_fn fn,
		       const void *ctx);
void ckpt_index_free(ckpt_index *x);

/* One slice of a tensor, for the tiling checks. */
typedef struct ckpt_box {
	int64_t start[CKPT_MAX_DIMS], shape[CKPT_MAX_DIMS];
	size_t id;
} ckpt_box;
/* Whether two of the non-empty boxes b[0..n) overlap; *a and *b2 get their
 * ids (a before b2 in id order).  Reorders b. */
bool ckpt_boxes_overlap(int ndim, ckpt_box *b, size_t n, size_t *a, size_t *b2);

/* --- the distributed save (ckpt.c) on top of ckpt_writer --- */

/* A writer for one rank's file of a save that several processes write:
 * the file goes into DIR.tmp, which the committing process made (with
 * ckpt_writer_new) and alone removes or renames.  Declare and put as
 * usual (rank must be this rank), then ckpt_writer_records. */
int ckpt_writer_part(ckpt_writer **out, const char *dir, long step, int rank);
/* Once every declared slice was put: the slices written here as a JSON
 * array of {"rank", "name", "shape", "start", "slice", "hash64"} (*out a
 * new reference), what the committing writer merges. */
int ckpt_writer_records(ckpt_writer *w, json_t **out);
/* Declare the slices of records (from ckpt_writer_records of rank, whose
 * file is already in DIR.tmp) in the committing writer; what names the
 * records in messages.  The commit then checks them with the rest. */
int ckpt_writer_merge(ckpt_writer *w, int rank, const json_t *records, const char *what);

#endif
