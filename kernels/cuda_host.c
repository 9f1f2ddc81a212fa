/* cuda_host.c - the C side of the CUDA backend (built with CUDA=1): the op
 * table over kernels/cuda's functions and the device-memory entry points,
 * which turn the backend's reasons into titan errors. */
#include "core/base.h"
#include "kernels.h"
#include "cuda/cuda.h"

int titan_cuda_probe_impl(char *info, size_t n, char *why, size_t wn);

static const kernel_ops cuda_table = {
	.name = "cuda",
	.matmul_forward = cuda_matmul_forward,
	.matmul_backward = cuda_matmul_backward,
	.rmsnorm_forward = cuda_rmsnorm_forward,
	.rmsnorm_backward = cuda_rmsnorm_backward,
	.rope_forward = cuda_rope_forward,
	.rope_backward = cuda_rope_backward,
	.attention_forward = cuda_attention_forward,
	.attention_backward = cuda_attention_backward,
	.swiglu_forward = cuda_swiglu_forward,
	.swiglu_backward = cuda_swiglu_backward,
	.embedding_forward = cuda_embedding_forward,
	.embedding_backward = cuda_embedding_backward,
	.cross_entropy = cuda_cross_entropy,
	.add_inplace = cuda_add_inplace,
	.scale = cuda_scale,
	.sumsq = cuda_sumsq,
	.adamw = cuda_adamw,
};

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

const kernel_ops *kernels_cuda_ops(void)
{
	return &cuda_table;
}

int kernels_cuda_alloc(void **p, size_t n)
{
	char why[256] = "";

	if (cuda_alloc(p, n, why, sizeof why))
		return titan_err(TITAN_ENOMEM, "cuda: %s", why);
	return 0;
}

void kernels_cuda_free(void *p)
{
	cuda_free(p);
}

int kernels_cuda_upload(void *dst, const void *src, size_t n)
{
	char why[256] = "";

	if (cuda_copy(dst, src, n, true, why, sizeof why))
		return titan_err(TITAN_EIO, "cuda: %s", why);
	return 0;
}

int kernels_cuda_download(void *dst, const void *src, size_t n)
{
	char why[256] = "";

	if (cuda_copy(dst, src, n, false, why, sizeof why))
		return titan_err(TITAN_EIO, "cuda: %s", why);
	return 0;
}

int kernels_cuda_sync(void)
{
	char why[256] = "";

	if (cuda_sync(why, sizeof why))
		return titan_err(TITAN_EIO, "cuda: %s", why);
	return 0;
}
