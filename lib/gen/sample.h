/* sample.h - picking the next token from logits: greedy, or temperature,
 * top-k and top-p (nucleus) sampling from a seeded random stream; and the
 * log-probabilities that scoring reports.
 *
 * Everything here is a fixed function of its inputs: the same logits, seed
 * and stream give the same token on every machine and thread count. */
#ifndef TITAN_GEN_SAMPLE_H
#define TITAN_GEN_SAMPLE_H
#include "core/base.h"
#include "core/rng.h"

/* Random draws come from core/rng.h, one stream per sequence, so a
 * sequence's tokens do not depend on what else is in its batch. */

typedef struct gen_sampling {
	double temperature;  /* 0: greedy (argmax, the lowest id on a tie) */
	int top_k;           /* 0: all tokens */
	double top_p;        /* 1: all tokens; else the smallest set of the most
				likely tokens whose probability reaches top_p */
} gen_sampling;

/* Check the values (temperature >= 0, top_k >= 0, 0 < top_p <= 1): a bad
 * one is TITAN_EUSAGE naming its option. */
int gen_sampling_check(const gen_sampling *s);

typedef struct gen_sampler gen_sampler;

/* A sampler for a vocabulary of V tokens (its scratch is V entries). */
int gen_sampler_new(gen_sampler **out, const gen_sampling *s, int V);
void gen_sampler_free(gen_sampler *s);
/* The next token from logits[V]: greedy draws nothing from rng.  Ties in
 * probability are broken by the lower id. */
uint32_t gen_sample(gen_sampler *s, const float *logits, titan_rng *rng);

/* Index of the largest logit (the lowest on a tie). */
uint32_t gen_argmax(const float *logits, int V);
/* log softmax(logits)[id], in double. */
double gen_logprob(const float *logits, int V, uint32_t id);

#endif
