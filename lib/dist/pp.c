/* pp.c - pipeline schedules (pp.h). */
#include "core/base.h"
#include "dist/pp.h"

int pp_check(pp_schedule_kind kind, int pp, int n, int v)
{
	if (kind != PP_INTERLEAVED_1F1B && v != 1)
		return titan_err(TITAN_EUSAGE, "parallelism.pipeline_parallel_schedule %s runs one "
				 "stage a rank, not %d (Interleaved1F1B runs several)",
				 pp_schedule_name(kind), v);
	if (kind == PP_INTERLEAVED_1F1B && n % pp)
		return titan_err(TITAN_EUSAGE, "parallelism.pipeline_parallel_schedule "
				 "Interleaved1F1B: %d micro-batches are not a multiple of the %d "
				 "pipeline ranks", n, pp);
	return 0;
}

const char *pp_schedule_name(pp_schedule_kind kind)
{
	return kind == PP_GPIPE ? "GPipe" : kind == PP_INTERLEAVED_1F1B ? "Interleaved1F1B"
									 : "1F1B";
}

/* Megatron-LM's order of a rank's forwards (and backwards) over its
 * local stages: the k-th goes through groups of pp micro-batches, each
 * group through local stage 0, then 1, ...; backwards through the local
 * stages from the last down. */
static pp_op interleaved_op(int pp, int v, int k, bool backward)
{
	int group = k / (pp * v), stage = k % (pp * v) / pp;

	return (pp_op){ .backward = backward, .mb = group * pp + k % pp,
			.stage = backward ? v - 1 - stage : stage };
}

/* 1F1B's shape over the 2 t passes of the rank: warm-up forwards, then one
 * forward and one backward at a time, then the remaining backwards. */
static int one_f_one_b(pp_op *ops, int pp, int v, int t, int warmup)
{
	int k = 0, f = 0, b = 0;

	while (f < warmup)
		ops[k++] = interleaved_op(pp, v, f++, false);
	while (f < t) {
		ops[k++] = interleaved_op(pp, v, f++, false);
		ops[k++] = interleaved_op(pp, v, b++, true);
	}
	while (b < t)
		ops[k++] = interleaved_op(pp, v, b++, true);
	return k;
}

/* Each micro-batch takes the lowest free set at its first forward and
 * gives it back after its last backward. */
static int assign_sets(pp_op *ops, int nops, int n, int v)
{
	int *set_of = malloc((size_t)n * sizeof *set_of);
	int *left = malloc((size_t)n * sizeof *left);
	int *holder = malloc((size_t)n * sizeof *holder);
	bool *used = calloc((size_t)n, sizeof *used);
	int sets = 0;

	if (!set_of || !left || !holder || !used) {
		/* one set per micro-batch needs no bookkeeping */
		for (int i = 0; i < nops; i++)
			ops[i].set = ops[i].mb, ops[i].reuse = false;
		sets = n;
		goto out;
	}
	for (int i = 0; i < n; i++)
		set_of[i] = -1, left[i] = v, holder[i] = -1;
	for (int i = 0; i < nops; i++) {
		pp_op *o = &ops[i];

		o->reuse = false;
		if (!o->backward && set_of[o->mb] < 0) {
			int s = 0;

			while (holder[s] >= 0)
				s++;
			holder[s] = o->mb;
			set_of[o->mb] = s;
			o->reuse = used[s];
			used[s] = true;
			sets = TITAN_MAX(sets, s + 1);
		}
		o->set = set_of[o->mb];
		if (o->backward && --left[o->mb] == 0)
			holder[o->set] = -1;
	}
out:
	free(set_of);
	free(left);
	free(holder);
	free(used);
	return sets;
}

int pp_schedule(pp_schedule_kind kind, int pp, int rank, int n, int v, pp_op *ops)
{
	int k = 0, t = n * v, warmup;

	if (kind == PP_GPIPE) {
		for (int i = 0; i < n; i++)
			ops[k++] = (pp_op){ .mb = i };
		for (int i = 0; i < n; i++)
			ops[k++] = (pp_op){ .backward = true, .mb = i };
		return assign_sets(ops, k, n, 1);
	}
	if (kind == PP_1F1B || v == 1) {
		/* the forwards that fill the pipeline below this rank */
		warmup = TITAN_MIN(pp - 1 - rank, n);
	} else {
		/* every rank's first local stages full, then the last one
		 * to this rank's depth; all forwards first when m == pp */
		warmup = n == pp ? t : TITAN_MIN((pp - 1 - rank) * 2 + (v - 1) * pp, t);
	}
	k = one_f_one_b(ops, pp, v, t, warmup);
	return assign_sets(ops, k, n, v);
}

void pp_schedule_format(const pp_op *ops, int nops, int v, char *buf, size_t cap)
{
	size_t len = 0;

	if (cap)
		buf[0] = 0;
	for (int i = 0; i < nops && len < cap; i++) {
		int w = v > 1 ? snprintf(buf + len, cap - len, "%s%c%d.%d", i ? " " : "",
					 ops[i].backward ? 'B' : 'F', ops[i].mb, ops[i].stage)
			      : snprintf(buf + len, cap - len, "%s%c%d", i ? " " : "",
					 ops[i].backward ? 'B' : 'F', ops[i].mb);

		if (w < 0)
			break;
		len += (size_t)w;
	}
}
