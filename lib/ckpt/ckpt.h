/* ckpt.h - checkpoint directories: save (optionally on a background
 * thread), keep the latest k, find the latest, load.
 *
 * FOLDER/step-N/ holds manifest.json and one safetensors shard per rank
 * (rank-00000.safetensors).  The manifest records every tensor's global
 * shape and dtype and, per shard file, the slice it holds (start and shape
 * per dimension), plus whatever the trainer passes as "extra" (the config,
 * the train state: step, tokens, LR schedule, RNG, loader cursor).  A save
 * writes FOLDER/step-N.tmp/, fsyncs every file and the directory, then
 * renames it to step-N: a directory named step-N is always complete.
 * (man 5 titan-checkpoint)
 *
 * The checkpoint module knows nothing of models: it saves and loads named
 * fp32 tensors.  Each rank passes the slice it holds; for one rank the slice
 * is the whole tensor.
 *
 * Several ranks save together over a communicator (lib/dist): each writes
 * its own file into step-N.tmp at once, rank 0 merges the slice records,
 * checks that they tile every tensor, writes the manifest and renames; the
 * outcome is agreed, so a failure on any rank fails the save on every rank
 * and no step-N appears (man 5 titan-checkpoint, MULTI-RANK SAVE). */
#ifndef TITAN_CKPT_CKPT_H
#define TITAN_CKPT_CKPT_H
#include <jansson.h>
#include "core/base.h"
#include "dist/comm.h"

#define CKPT_MAX_DIMS 4

typedef struct ckpt_tensor {
	const char *name;           /* "layers.0.attention.wq.weight", "optim.exp_avg.<name>" */
	int ndim;
	int64_t shape[CKPT_MAX_DIMS];       /* global shape */
	int64_t slice_start[CKPT_MAX_DIMS]; /* this rank's slice */
	int64_t slice_shape[CKPT_MAX_DIMS];
	float *data;                /* the slice, row-major */
} ckpt_tensor;

typedef struct ckpt_saver ckpt_saver;

/* Called as work streams: bytes done so far and the total (for a progress
 * line on a tty). */
typedef void (*ckpt_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Collective over c.  folder is created if missing.  keep_latest_k <= 0
 * keeps all.  async: the save copies the tensors to a staging buffer and
 * writes on a background thread while training goes on; that thread works
 * on its own comm_dup of c, made here.
 *
 * c: the ranks that save together (NULL: this process alone, rank 0 of 1);
 * it must outlive the saver.  Every rank of c calls ckpt_save with the same
 * step; each passes the slices it writes (possibly none: n = 0) and, when
 * it has any, writes rank-RRRRR.safetensors with RRRRR its rank in c.
 * layout (may be NULL; a JSON object, borrowed, copied) is recorded as the
 * manifest's "layout"; NULL records every degree 1 except dp_shard = size
 * of c.  An error on any rank is every rank's error. */
int ckpt_saver_new(ckpt_saver **out, const char *folder, int keep_latest_k, bool async,
		    comm *c, const json_t *layout);
/* Whether saves run on a background thread: false when async was not
 * asked for, and also when c cannot serve two threads at once
 * (comm_concurrent false), where each save runs on the caller's thread. */
bool ckpt_saver_async(const ckpt_saver *s);
/* Save step: tensors t[0..n) and extra (borrowed; copied before return).
 * Collective over c: every rank calls it with the same step, and all
 * return the same status; only rank 0's extra and attached files are
 * recorded.  With async, waits for this rank's previous save first (its
 * error comes out here, on every rank) and returns once the data is
 * staged.  Afterwards removes the oldest step-N directories beyond
 * keep_latest_k.  n = 0 on every rank writes a checkpoint of no tensors
 * (extra only). */
int ckpt_save(ckpt_saver *s, long step, const ckpt_tensor *t, size_t n,
	      const json_t *extra);
/* Wait for this rank's in-flight save; its status (the agreed one).  Not
 * collective. */
int ckpt_wait(ckpt_saver *s);
/* Waits, then frees.  Collective over c when the saver is async (it frees
 * the thread's communicator). */
void ckpt_saver_free(ckpt_saver *s);
/* Bytes held by the staging buffer (0 when not async).  Not collective. */
size_t ckpt_staging_bytes(const ckpt_saver *s);

/* "latest": the complete step-N directory with the largest N in folder
 * (TITAN_EIO naming the folder when there is none); anything else is a path
 * to a step directory.  *dir is allocated. */
int ckpt_resolve(const char *folder, const char *load, char **dir);
/* Read manifest.json of dir; *manifest is a new reference. */
int ckpt_read_manifest(const char *dir, json_t **manifest);
/* Fill each t[i].data with its slice (t[i].slice_*), reading whatever shard
 * files hold it, so a checkpoint loads into any layout.  A missing tensor or
 * a global shape that differs is TITAN_EFORMAT naming the tensor and both
 * shapes. */
int ckpt_load(const char *dir, ckpt_tensor *t, size_t n);

/* Every save also copies these files into the step directory (before it is
 * renamed into place), e.g. "tokenizer.json" from the dataset's tokenizer,
 * so that a checkpoint carries what it takes to use it.  src is copied when
 * the save commits (async saves copy on the background thread).  Not
 * collective: rank 0 copies the files it was given, other ranks' lists are
 * not used. */
int ckpt_saver_attach_file(ckpt_saver *s, const char *name, const char *src);

/* "[2, 3]" into buf (cap bytes), for messages and listings. */
void ckpt_shape_text(char *buf, size_t cap, int ndim, const int64_t *shape);

/* --- reading a checkpoint tensor by tensor (titan-ckpt, titan-gen) --- */

typedef struct ckpt_shard_info {
	const char *file;            /* name inside the step directory */
	int64_t start[CKPT_MAX_DIMS], shape[CKPT_MAX_DIMS];
	bool has_checksum;
	uint64_t checksum;           /* hash64 (core/hash.h) of the slice's bytes */
} ckpt_shard_info;

typedef struct ckpt_tensor_info {
	const char *name;
	int ndim;
	int64_t shape[CKPT_MAX_DIMS];
	size_t nshards;
	const ckpt_shard_info *shards;
} ckpt_tensor_info;

typedef struct ckpt_reader ckpt_reader;

/* path: a step directory (it holds manifest.json) or a checkpoint folder
 * (its latest complete step).  Parses and checks the manifest (format,
 * version, every tensor's shape and shard list); shard files are mapped
 * lazily, one tensor's worth at a time, never read whole. */
int ckpt_reader_open(ckpt_reader **out, const char *path);
void ckpt_reader_close(ckpt_reader *r);
const char *ckpt_reader_dir(const ckpt_reader *r);       /* the step directory */
const json_t *ckpt_reader_manifest(const ckpt_reader *r);
long ckpt_reader_step(const ckpt_reader *r);
/* Tensors in manifest order. */
size_t ckpt_reader_count(const ckpt_reader *r);
const ckpt_tensor_info *ckpt_reader_tensor(const ckpt_reader *r, size_t i);
/* NULL when absent. */
const ckpt_tensor_info *ckpt_reader_find(const ckpt_reader *r, const char *name);
/* Read the slice start/shape of tensor name into dst (fp32, row-major),
 * from whatever shards overlap it.  start/shape NULL: the whole tensor.
 * Missing tensor, slice outside the tensor, or a region no shard covers is
 * TITAN_EFORMAT naming the tensor. */
int ckpt_reader_read(ckpt_reader *r, const char *name, const int64_t *start,
		     const int64_t *shape, float *dst);
/* The file NAME in the step directory ("tokenizer.json") as an allocated
 * path, or NULL when the checkpoint does not carry it. */
char *ckpt_reader_file(const ckpt_reader *r, const char *name);
/* Check everything: each shard file opens as safetensors, holds each slice
 * the manifest names with the manifest's shape and dtype F32, its bytes
 * match the manifest's checksum, and the slices of each tensor tile it
 * exactly once (no gap, no overlap).  The first problem is TITAN_EFORMAT
 * naming the file and the tensor.  progress (may be NULL) is called after
 * each tensor with the bytes checked so far and the total. */
int ckpt_reader_verify(ckpt_reader *r, ckpt_progress_fn progress, void *arg);

/* --- writing a checkpoint of any layout from one process --- */

/* ckpt_writer builds one step directory DIR (any path; written as DIR.tmp,
 * fsynced and renamed into place at commit; an existing DIR is TITAN_EUSAGE
 * unless force) with nfiles shard files named rank-RRRRR.safetensors after
 * the ranks given.  Tensors stream: declare every slice of every file
 * first, then put the data file by file in declaration order, so memory
 * holds one slice at a time (titan-ckpt import and reshard). */
typedef struct ckpt_writer ckpt_writer;
int ckpt_writer_new(ckpt_writer **out, const char *dir, long step, bool force);
/* Declare that the file of rank holds t's slice (t->data ignored). */
int ckpt_writer_declare(ckpt_writer *w, int rank, const ckpt_tensor *t);
/* Data of the next declared slice: ranks in increasing order, within a rank
 * the order declared.  n floats, which must be the slice's size. */
int ckpt_writer_put(ckpt_writer *w, const float *data, size_t n);
/* Copy src into the step directory as name (see ckpt_saver_attach_file). */
int ckpt_writer_attach_file(ckpt_writer *w, const char *name, const char *src);
/* Manifest "layout" (may be NULL) and "extra" (borrowed), then write the
 * manifest, fsync and rename.  Every declared slice must have been put and
 * every tensor must be covered exactly once. */
int ckpt_writer_commit(ckpt_writer *w, const json_t *layout, const json_t *extra);
/* Frees; without a commit, removes DIR.tmp. */
void ckpt_writer_free(ckpt_writer *w);

#endif
