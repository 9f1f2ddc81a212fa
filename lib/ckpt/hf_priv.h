/* hf_priv.h - what hf.c, hf_export.c and hf_import.c share; not a public
 * interface. */
#ifndef TITAN_CKPT_HF_PRIV_H
#define TITAN_CKPT_HF_PRIV_H
#include "core/base.h"
#include "model/llama.h"

/* Heads of a q or k projection (whose rows RoPE rotates), else 0. */
int hf_rotary_heads(const llama_config *c, const char *titan);

bool hf_path_exists(const char *path);
/* "BASE" + suffix, allocated. */
char *hf_path_suffix(const char *base, const char *suffix);

/* An output directory name is not empty, and unless force does not exist. */
int hf_check_outdir(const char *outdir, bool force);
/* path without trailing slashes ("out/" and "out" are one directory, and
 * "out/.tmp" would land inside it), allocated. */
char *hf_strip_slashes(const char *path);

#endif
