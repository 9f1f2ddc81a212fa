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
 * is the whole tensor. */
#ifndef TITAN_CKPT_CKPT_H
#define TITAN_CKPT_CKPT_H
#include <jansson.h>
#include "core/base.h"

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

/* folder is created if missing.  keep_latest_k <= 0 keeps all.  async: the
 * save copies the tensors to a staging buffer and writes on a background
 * thread while training goes on. */
int ckpt_saver_new(ckpt_saver **out, const char *folder, int keep_latest_k,
		   bool async, int rank, int nranks);
/* Save step: tensors t[0..n) and extra (borrowed; copied before return).
 * With async, waits for the previous save first (its error comes out here)
 * and returns once the data is staged.  Afterwards removes the oldest
 * step-N directories beyond keep_latest_k. */
int ckpt_save(ckpt_saver *s, long step, const ckpt_tensor *t, size_t n,
	      const json_t *extra);
/* Wait for an in-flight save; its status. */
int ckpt_wait(ckpt_saver *s);
/* Waits, then frees. */
void ckpt_saver_free(ckpt_saver *s);
/* Bytes held by the staging buffer (0 when not async). */
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

#endif
