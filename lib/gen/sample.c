/* sample.c - greedy, temperature, top-k and top-p sampling; log-softmax. */
#include "core/base.h"

#include <math.h>

#include "gen/sample.h"

int gen_sampling_check(const gen_sampling *s)
{
	if (!(s->temperature >= 0) || !isfinite(s->temperature))
		return titan_err(TITAN_EUSAGE, "--temperature: %g must be a finite number >= 0",
				 s->temperature);
	if (s->top_k < 0)
		return titan_err(TITAN_EUSAGE, "--top-k: %d must not be negative (0: off)",
				 s->top_k);
	if (!(s->top_p > 0 && s->top_p <= 1))
		return titan_err(TITAN_EUSAGE, "--top-p: %g must be in (0, 1] (1: off)",
				 s->top_p);
	return 0;
}

/* A candidate token: its logit and id. */
struct cand {
	float logit;
	uint32_t id;
};

struct gen_sampler {
	gen_sampling p;
	int V;
	struct cand *c;   /* [V] */
};

int gen_sampler_new(gen_sampler **out, const gen_sampling *p, int V)
{
	gen_sampler *s;
	int rc;

	*out = NULL;
	if ((rc = gen_sampling_check(p)))
		return rc;
	if (V <= 0)
		return titan_err(TITAN_EUSAGE, "sampler: vocabulary of %d tokens", V);
	s = calloc(1, sizeof *s);
	if (!s || !(s->c = malloc((size_t)V * sizeof *s->c))) {
		free(s);
		return titan_err_nomem();
	}
	s->p = *p;
	s->V = V;
	*out = s;
	return 0;
}

void gen_sampler_free(gen_sampler *s)
{
	if (!s)
		return;
	free(s->c);
	free(s);
}

/* a before b: the larger logit, then the lower id. */
static bool before(const struct cand *a, const struct cand *b)
{
	return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *pa, const void *pb)
{
	const struct cand *a = pa, *b = pb;

	return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

uint32_t gen_argmax(const float *logits, int V)
{
	uint32_t best = 0;

	for (int i = 1; i < V; i++)
		if (logits[i] > logits[best])
			best = (uint32_t)i;
	return best;
}

double gen_logprob(const float *logits, int V, uint32_t id)
{
	double mx = logits[gen_argmax(logits, V)], sum = 0;

	for (int i = 0; i < V; i++)
		sum += exp((double)logits[i] - mx);
	return (double)logits[id] - mx - log(sum);
}

/* The k best of logits[V] into c[0..k), best first: insertion into a
 * sorted run, which most tokens leave at the first comparison. */
static int top_k(const float *logits, int V, int k, struct cand *c)
{
	int n = 0;

	for (int i = 0; i < V; i++) {
		struct cand x = { logits[i], (uint32_t)i };
		int j;

		if (n == k && !before(&x, &c[k - 1]))
			continue;
		j = n < k ? n++ : k - 1;
		while (j > 0 && before(&x, &c[j - 1])) {
			c[j] = c[j - 1];
			j--;
		}
		c[j] = x;
	}
	return n;
}

uint32_t gen_sample(gen_sampler *s, const float *logits, titan_rng *rng)
{
	const double inv_t = 1.0 / s->p.temperature;
	struct cand *c = s->c;
	int V = s->V, n;
	double mx, total = 0, u, acc = 0;

	if (s->p.temperature == 0)
		return gen_argmax(logits, V);
	mx = logits[gen_argmax(logits, V)];
	if (s->p.top_k > 0 && s->p.top_k < V) {
		n = top_k(logits, V, s->p.top_k, c);
		for (int j = 0; j < n; j++)
			total += exp(((double)c[j].logit - mx) * inv_t);
	} else {
		double floor_w;

		for (int i = 0; i < V; i++)
			total += exp(((double)logits[i] - mx) * inv_t);
		/* Tokens below (1 - top_p) / V of the mass cannot reach the
		 * nucleus: the others already hold top_p of it.  Only the rest
		 * is sorted. */
		floor_w = s->p.top_p < 1 ? (1 - s->p.top_p) / V * total : 0;
		n = 0;
		for (int i = 0; i < V; i++)
			if (s->p.top_p == 1 ||
			    exp(((double)logits[i] - mx) * inv_t) >= floor_w)
				c[n++] = (struct cand){ logits[i], (uint32_t)i };
		if (s->p.top_p < 1)
			qsort(c, (size_t)n, sizeof *c, cmp_cand);
	}
	if (s->p.top_p < 1) {
		double want = s->p.top_p * total, cum = 0;
		int keep = n;

		for (int j = 0; j < n; j++) {
			cum += exp(((double)c[j].logit - mx) * inv_t);
			if (cum >= want) {
				keep = j + 1;
				break;
			}
		}
		n = keep;
		total = cum;  /* the nucleus' mass */
	}
	u = rng_unit(rng) * total;
	for (int j = 0; j < n; j++) {
		acc += exp(((double)c[j].logit - mx) * inv_t);
		if (u < acc)
			return c[j].id;
	}
	return c[n - 1].id;  /* rounding left u at the very top */
}
