/* cuda_host.c - the C side of the CUDA backend (built with CUDA=1): the op
 * table over kernels/cuda's functions and its device memory, which turn the
 * backend's reasons into titan errors. */
#include "core/base.h"
#include "core/cache_alloc.h"
#include "kernels.h"
#include "cuda/cuda.h"

int titan_cuda_probe_impl(char *info, size_t n, char *why, size_t wn);

/* The caching allocator over cudaMalloc, made on the first alloc and kept
 * for the life of the process.  It is static for the reason the CUDA
 * context (context.cu) is: the op table's entries take no context
 * argument, and the memory they hand out belongs to the process's one
 * CUDA context, used by one thread at a time (the trainer's), which is
 * also all a cache_alloc allows.  dev_why holds CUDA's reason for the
 * last refusal of cudaMalloc, to add to the cache's message. */
static cache_alloc *cache;
static char dev_why[256];

static int dev_alloc(void *ctx, void **p, size_t bytes)
{
	return cuda_device_alloc(p, bytes, ctx, sizeof dev_why);
}

static void dev_free(void *ctx, void *p, size_t bytes)
{
	(void)ctx, (void)bytes;
	cuda_device_free(p);
}

/* A block of the cache as its last user left it; 0, or a titan error. */
static int cache_get(void **p, size_t bytes)
{
	char why[256] = "", msg[512];
	int rc;

	*p = NULL;
	if (cuda_context_init(why, sizeof why))
		return titan_err(TITAN_ENOMEM, "cuda: %s", why);
	if (!cache && (rc = cache_alloc_new(&cache, dev_alloc, dev_free, dev_why)))
		return rc;
	dev_why[0] = 0;
	if ((rc = cache_alloc_get(cache, p, bytes))) {
		snprintf(msg, sizeof msg, "%s", titan_errmsg());
		if (dev_why[0])
			return titan_err(rc, "cuda: %s: %s", msg, dev_why);
		return titan_err(rc, "cuda: %s", msg);
	}
	return 0;
}

static int cuda_mem_alloc(void **p, size_t bytes)
{
	int rc = cache_get(p, bytes);

	if (rc)
		return rc;
	/* a cached block holds what its last user left; queued on the
	 * stream, the memset is done before any op or copy that follows */
	cuda_zero(*p, bytes);
	return 0;
}

static void cuda_mem_free(void *p, size_t bytes)
{
	char msg[512];

	(void)bytes;
	if (!p)
		return;
	/* free cannot fail, so a bad pointer (a bug) waits for the next sync */
	if (!cache || cache_alloc_put(cache, p)) {
		snprintf(msg, sizeof msg, "freeing %p: %s", p,
			 cache ? titan_errmsg() : "no buffer was allocated yet");
		cuda_note_failure(msg);
	}
}

/* An op's temporaries come from the same cache as the tensors, so they
 * cost no cudaMalloc once the first step has sized the cache.  An op has
 * no error return: a failure waits for the next sync. */
void *cuda_scratch_get(size_t bytes)
{
	void *p;

	if (cache_get(&p, bytes)) {
		cuda_note_failure(titan_errmsg());
		return NULL;
	}
	return p;
}

void cuda_scratch_put(void *p)
{
	cuda_mem_free(p, 0);
}

static int cuda_mem_upload(void *dst, const void *src, size_t n)
{
	char why[256] = "";

	if (cuda_copy(dst, src, n, true, why, sizeof why))
		return titan_err(TITAN_EIO, "cuda: %s", why);
	return 0;
}

static int cuda_mem_download(void *dst, const void *src, size_t n)
{
	char why[256] = "";

	if (cuda_copy(dst, src, n, false, why, sizeof why))
		return titan_err(TITAN_EIO, "cuda: %s", why);
	return 0;
}

static int cuda_mem_sync(void)
{
	char why[256] = "";

	if (cuda_sync(why, sizeof why))
		return titan_err(TITAN_EIO, "cuda: %s", why);
	return 0;
}

static void cuda_mem_stats(kernel_mem_stats *s)
{
	cache_alloc_stats cs = { 0 };

	if (cache)
		cache_alloc_get_stats(cache, &cs);
	*s = (kernel_mem_stats){
		.reserved = cs.reserved,
		.reserved_peak = cs.reserved_peak,
		.device_allocs = cs.device_allocs,
	};
	cuda_mem_info(&s->device_free, &s->device_total);
}

static const kernel_ops cuda_table = {
	.name = "cuda",
	.alloc = cuda_mem_alloc,
	.free = cuda_mem_free,
	.upload = cuda_mem_upload,
	.download = cuda_mem_download,
	.zero = cuda_zero,
	.copy = cuda_copy_d2d,
	.sync = cuda_mem_sync,
	.mem_stats = cuda_mem_stats,
	.host_memory = false,
	.matmul_forward = cuda_matmul_forward,
	.matmul_backward = cuda_matmul_backward,
	.matmul_forward_bf16 = cuda_matmul_forward_bf16,
	.matmul_backward_bf16 = cuda_matmul_backward_bf16,
	.cast_bf16 = cuda_cast_bf16,
	.rmsnorm_forward = cuda_rmsnorm_forward,
	.rmsnorm_backward = cuda_rmsnorm_backward,
	.rope_forward = cuda_rope_forward,
	.rope_backward = cuda_rope_backward,
	.attention_forward = cuda_attention_forward,
	.attention_backward = cuda_attention_backward,
	.attention_forward_bf16 = cuda_attention_forward_bf16,
	.attention_backward_bf16 = cuda_attention_backward_bf16,
	.swiglu_forward = cuda_swiglu_forward,
	.swiglu_backward = cuda_swiglu_backward,
	.embedding_forward = cuda_embedding_forward,
	.embedding_backward = cuda_embedding_backward,
	.cross_entropy = cuda_cross_entropy,
	.vocab_max = cuda_vocab_max,
	.vocab_sumexp = cuda_vocab_sumexp,
	.vocab_finish = cuda_vocab_finish,
	.attention_merge = cuda_attention_merge,
	.attention_ranges = cuda_attention_ranges,
	.add_inplace = cuda_add_inplace,
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

int kernels_cuda_set_device(int device)
{
	char why[256] = "";
	int rc = cuda_set_device(device, why, sizeof why);

	if (rc)
		return titan_err(rc == -2 ? TITAN_EUSAGE : TITAN_EIO, "cuda: %s", why);
	return 0;
}
