/* load.h - a trained model for inference: the checkpoint's config and
 * weights, and the tokenizer it was trained with.
 *
 * The checkpoint is a step directory or a folder of them (its latest).  Its
 * manifest's extra.config gives the model; extra.train_state's
 * tokenizer_sha256 and vocab_size (when present) pin the tokenizer.  The
 * tokenizer is the step directory's tokenizer.json when the checkpoint
 * carries one, else the one the training dataset was packed with. */
#ifndef TITAN_GEN_LOAD_H
#define TITAN_GEN_LOAD_H
#include <jansson.h>
#include "core/base.h"
#include "core/mem.h"
#include "model/llama.h"
#include "tok/tok.h"

typedef struct gen_model {
	char *dir;               /* the step directory */
	json_t *manifest;
	char *tokenizer;         /* the tokenizer.json it carries, or NULL */
	mem_tracker mem;         /* the model and its decoders count here */
	llama_model *model;
	char tok_sha256[65];     /* the training tokenizer's hash, "" unknown */
	long long tok_vocab;     /* its vocabulary size, -1 unknown */
} gen_model;

/* Load path's model on the CPU backend: all of it (tp 1), or rank
 * tp_rank's share of a tensor-parallel model (its hooks are the caller's
 * to set).  A path that is no checkpoint is TITAN_EIO; a manifest without
 * a usable config is TITAN_EFORMAT; a tp that does not divide the model is
 * TITAN_EUSAGE. */
int gen_model_load(gen_model **out, const char *path, int tp, int tp_rank);
void gen_model_free(gen_model *g);

/* The path of the tokenizer the checkpoint refers to (allocated), or
 * TITAN_EUSAGE saying that -t is needed. */
int gen_model_tokenizer(const gen_model *g, char **path);

/* A tokenizer that cannot drive the model: more tokens than the model's
 * vocabulary, or a hash other than the training tokenizer's.
 * TITAN_EUSAGE naming name. */
int gen_check_tokenizer(const gen_model *g, const titan_tok *t, const char *name);

#endif
