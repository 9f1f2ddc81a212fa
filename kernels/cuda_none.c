/* cuda_none.c - the CUDA entry points of a build without CUDA. */
#include "core/base.h"
#include "kernels.h"

static int no_cuda(void)
{
	return titan_err(TITAN_EUSAGE, "this build has no CUDA backend (rebuild with make CUDA=1)");
}

int kernels_cuda_built(void)
{
	return 0;
}

int kernels_cuda_probe(char *info, size_t n)
{
	if (n)
		info[0] = 0;
	return no_cuda();
}

const kernel_ops *kernels_cuda_ops(void)
{
	return NULL;
}

int kernels_cuda_set_device(int device)
{
	(void)device;
	return no_cuda();
}
