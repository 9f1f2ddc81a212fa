/* cuda_host.c - the C side of the CUDA backend (built with CUDA=1). */
#include "core/base.h"
#include "kernels.h"

int titan_cuda_probe_impl(char *info, size_t n, char *why, size_t wn);

int kernels_cuda_built(void)
{
	return 1;
}

int kernels_cuda_probe(char *info, size_t n)
{
	char why[256] = "";
	if (n)
		info[0] = 0;
	if (titan_cuda_probe_impl(info, n, why, sizeof why))
		return titan_err(TITAN_EIO, "cuda: %s", why);
	return 0;
}
