/* parallel.c - the ops that combine partial results of tensor and context
 * parallel: the loss over a vocabulary cut across ranks, and ring
 * attention's merge (kernels.h).  Plain loops in the arithmetic the model
 * used before they were ops, so the results did not move by a bit. */
#include "core/base.h"

#include <math.h>

#include "cpu.h"

void cpu_vocab_max(float *rmax, const float *logits, int N, int V)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		const float *lg = logits + (size_t)n * V;
		float mx = -INFINITY;

		for (int j = 0; j < V; j++)
			mx = fmaxf(mx, lg[j]);
		rmax[n] = mx;
	}
}

static bool in_slice(uint32_t label, uint32_t v0, int V)
{
	return label >= v0 && label - v0 < (uint32_t)V;
}

void cpu_vocab_sumexp(float *rsum, float *rlab, const float *logits, const float *rmax,
		      const uint32_t *labels, uint32_t v0, int N, int V)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		const float *lg = logits + (size_t)n * V;
		double sum = 0;

		for (int j = 0; j < V; j++)
			sum += expf(lg[j] - rmax[n]);
		rsum[n] = (float)sum;
		rlab[n] = in_slice(labels[n], v0, V) ? lg[labels[n] - v0] : 0.0f;
	}
}

void cpu_vocab_finish(float *loss, float *logits, const float *rmax, const float *rsum,
		      const float *rlab, const uint32_t *labels, uint32_t v0, int N, int V,
		      float dscale)
{
#pragma omp parallel for schedule(static)
	for (int n = 0; n < N; n++) {
		float *lg = logits + (size_t)n * V;

		loss[n] = logf(rsum[n]) + rmax[n] - rlab[n];
		if (dscale == 0.0f)
			continue;
		for (int j = 0; j < V; j++)
			lg[j] = expf(lg[j] - rmax[n]) / rsum[n] * dscale;
		if (in_slice(labels[n], v0, V))
			lg[labels[n] - v0] -= dscale;
	}
}

void cpu_attention_merge(float *out, float *lse_out, const float *o, const float *lse,
			 int B, int T, int H, int D)
{
	size_t q = (size_t)H * D;

#pragma omp parallel for schedule(static)
	for (int n = 0; n < B * T; n++) {
		int b = n / T, t = n % T;

		for (int h = 0; h < H; h++) {
			size_t il = ((size_t)b * H + h) * T + t;
			size_t io = (size_t)n * q + (size_t)h * D;
			float l1 = lse_out[il], l2 = lse[il], l, w1, w2;

			if (l2 == -INFINITY)
				continue;
			l = l1 == -INFINITY ? l2 : fmaxf(l1, l2) + log1pf(expf(-fabsf(l1 - l2)));
			w1 = l1 == -INFINITY ? 0.0f : expf(l1 - l);
			w2 = expf(l2 - l);
			for (int k = 0; k < D; k++)
				out[io + k] = out[io + k] * w1 + o[io + k] * w2;
			lse_out[il] = l;
		}
	}
}
