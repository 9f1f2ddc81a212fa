/* bench_sgemm.c - print this machine's fp32 GEMM peak in FLOP/s, the best
 * of several measurements (kernels_cpu_sgemm_peak, n = 1024, on
 * OMP_NUM_THREADS threads): the denominator of the MFU figures in make
 * bench, measured once for the whole table. */
#include "core/base.h"
#include "kernels.h"

int main(void)
{
	double best = 0;

	for (int i = 0; i < 3; i++) {
		double p = kernels_cpu_sgemm_peak(1024);
		if (p > best)
			best = p;
	}
	printf("%.0f\n", best);
	return best > 0 ? 0 : 1;
}
