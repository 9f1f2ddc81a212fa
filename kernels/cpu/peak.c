/* peak.c - the GEMM throughput MFU is measured against: OpenBLAS's sgemm
 * on CPU, a backend's own matmul on a device. */
#include "core/base.h"

#include <cblas.h>
#include <time.h>

#include "cpu.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double kernels_cpu_sgemm_peak(int n)
{
	size_t len;
	float *a, *b, *c;
	double best = 0.0;

	if (n <= 0)
		n = 1024;
	len = (size_t)n * n;
	a = malloc(len * sizeof(*a));
	b = malloc(len * sizeof(*b));
	c = malloc(len * sizeof(*c));
	if (!a || !b || !c)
		goto out;
	/* Small values that stay normal: denormals would time the slow path. */
	for (size_t i = 0; i < len; i++) {
		a[i] = (float)(i % 17) * 0.01f;
		b[i] = (float)(i % 13) * 0.02f;
	}
	/* The first call pays the thread pool's start and faults the pages
	 * of c in; it does not count.  The best of many: on a shared machine
	 * a few runs can all be slowed by a neighbour. */
	for (int run = 0; run < 16; run++) {
		double t0 = now_s(), dt;

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n,
			    1.0f, a, n, b, n, 0.0f, c, n);
		dt = now_s() - t0;
		if (run > 0 && dt > 0 && (best == 0.0 || dt < best))
			best = dt;
	}
out:
	free(a);
	free(b);
	free(c);
	return best > 0.0 ? 2.0 * n * (double)n * n / best : 0.0;
}

double kernels_matmul_peak(const kernel_ops *ops, int n, bool bf16)
{
	size_t bytes = (size_t)n * n * sizeof(float), hbytes = (size_t)n * n * sizeof(kernel_bf16);
	float *a = NULL, *b = NULL, *c = NULL, *h = NULL;
	kernel_bf16 *ab = NULL, *bb = NULL;
	double best = 0.0;

	if (n <= 0 || ops->alloc((void **)&a, bytes) || ops->alloc((void **)&b, bytes) ||
	    ops->alloc((void **)&c, bytes) || (bf16 && ops->alloc((void **)&ab, hbytes)) ||
	    (bf16 && ops->alloc((void **)&bb, hbytes)) || !(h = malloc(bytes)))
		goto out;
	for (size_t i = 0; i < (size_t)n * n; i++)
		h[i] = (float)(i % 17) * 0.01f;
	if (ops->upload(a, h, bytes) || ops->upload(b, h, bytes))
		goto out;
	/* the model casts a weight once per update and an activation once,
	 * not per GEMM */
	if (bf16) {
		ops->cast_bf16(ab, a, (size_t)n * n);
		ops->cast_bf16(bb, b, (size_t)n * n);
	}
	/* as above: the first run warms up and does not count */
	for (int run = 0; run < 8; run++) {
		double t0 = now_s(), dt;

		if (bf16)
			ops->matmul_forward_bf16(c, ab, bb, n, n, n, false);
		else
			ops->matmul_forward(c, a, b, n, n, n, false);
		if (ops->sync())
			goto out;
		dt = now_s() - t0;
		if (run > 0 && dt > 0 && (best == 0.0 || dt < best))
			best = dt;
	}
out:
	free(h);
	if (a)
		ops->free(a, bytes);
	if (b)
		ops->free(b, bytes);
	if (c)
		ops->free(c, bytes);
	if (ab)
		ops->free(ab, hbytes);
	if (bb)
		ops->free(bb, hbytes);
	return best > 0.0 ? 2.0 * n * (double)n * n / best : 0.0;
}
