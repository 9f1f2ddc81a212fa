/* reshard.h - rewrite a checkpoint for another parallel layout.
 *
 * The output holds, for every rank of the layout that writes (model/shard.h:
 * par_ckpt_slice), the slice of each model tensor that rank holds, and the
 * same slices of the AdamW moments (optim.exp_avg.NAME, optim.exp_avg_sq.NAME)
 * when the source has them: exactly the files the ranks of that layout
 * would save.  The model comes from the manifest's extra.config; extra is
 * copied unchanged, tokenizer.json is carried along, and the manifest
 * records the layout.  Tensors of the source that are neither are not
 * copied.  Memory holds one slice at a time. (man 5 titan-checkpoint) */
#ifndef TITAN_CKPT_RESHARD_H
#define TITAN_CKPT_RESHARD_H
#include "core/base.h"
#include "ckpt/ckpt.h"
#include "model/shard.h"

/* Write outdir (written as outdir.tmp and renamed; an existing outdir is
 * TITAN_EUSAGE unless force) from r in layout l.  A layout the model does
 * not divide is TITAN_EUSAGE (par_layout_check); a source without the
 * config or a model tensor, or with another shape, is TITAN_EFORMAT naming
 * it.  progress (may be NULL) gets the bytes written so far and the total. */
int ckpt_reshard(ckpt_reader *r, const char *outdir, const par_layout *l, bool force,
		 ckpt_progress_fn progress, void *arg);
/* The layout a checkpoint records in its manifest: {"pp", "dp_replicate",
 * "dp_shard", "cp", "tp"}, and "pp_stages" when more than 1; NULL when out
 * of memory. */
json_t *ckpt_layout_json(const par_layout *l);

#endif
