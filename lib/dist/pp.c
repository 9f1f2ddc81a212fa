/* pp.c - pipeline schedules (pp.h). */
#include "core/base.h"
#include "dist/pp.h"

void pp_schedule(pp_schedule_kind kind, int pp, int stage, int n, pp_op *ops)
{
	int k = 0, warmup, f = 0, b = 0;

	if (kind == PP_GPIPE) {
		for (int i = 0; i < n; i++)
			ops[k++] = (pp_op){ false, i };
		for (int i = 0; i < n; i++)
			ops[k++] = (pp_op){ true, i };
		return;
	}
	/* 1F1B: the forwards that fill the pipeline below this stage, then
	 * one forward and one backward at a time, then the rest of the
	 * backwards */
	warmup = TITAN_MIN(pp - 1 - stage, n);
	while (f < warmup)
		ops[k++] = (pp_op){ false, f++ };
	while (f < n) {
		ops[k++] = (pp_op){ false, f++ };
		ops[k++] = (pp_op){ true, b++ };
	}
	while (b < n)
		ops[k++] = (pp_op){ true, b++ };
}

void pp_schedule_format(const pp_op *ops, int nops, char *buf, size_t cap)
{
	size_t len = 0;

	if (cap)
		buf[0] = 0;
	for (int i = 0; i < nops && len < cap; i++) {
		int w = snprintf(buf + len, cap - len, "%s%c%d", i ? " " : "",
				 ops[i].backward ? 'B' : 'F', ops[i].mb);

		if (w < 0)
			break;
		len += (size_t)w;
	}
}

int pp_in_flight(pp_schedule_kind kind, int pp, int stage, int n)
{
	return kind == PP_GPIPE ? n : TITAN_MAX(1, TITAN_MIN(n, pp - stage));
}
