/* fenced.c - the CPU backend over fenced memory (kernels.h): a device for
 * testing the device path without a GPU.
 *
 * Device memory is one arena of address space, mapped PROT_NONE.  Each op,
 * copy, upload and download opens the fence (the arena's used extent made
 * readable and writable), runs the CPU backend's entry, and closes it
 * again; so host code that touches device memory directly, which on a GPU
 * would read garbage or crash later, dies with SIGSEGV at the access.
 * Protection is per process, so the ops' OpenMP threads see the open
 * fence as the calling thread does. */
#include "core/base.h"

#include <sys/mman.h>
#include <unistd.h>

#include "core/cache_alloc.h"
#include "cpu.h"
#include "attention_ranges.h"

/* The arena's address space, tried largest first: NORESERVE costs nothing
 * until pages are touched, but a process may be limited (ulimit -v). */
#define ARENA_MAX ((size_t)64 << 30)
#define ARENA_MIN ((size_t)256 << 20)
#define PAGE ((size_t)4096)

/* The device's state.  It is static because the op table's entries take
 * no context argument: like the CUDA backend's context, the device is the
 * process's, made on the first alloc and kept to exit, and driven by one
 * thread (the one that owns its buffers, which is all cache_alloc allows).
 * depth counts open fences, so an entry that calls another (alloc zeroes
 * its block) closes the fence only at the outermost level. */
static struct fenced {
	char *base;   /* the arena, NULL until the first alloc */
	size_t size;  /* bytes of address space reserved */
	size_t top;   /* [base, base + top) has been handed out */
	int depth;
	cache_alloc *cache;
	/* attention_ranges' regions: the CPU's attention reads the ranges
	 * where they are, so the copies are kept only to check the model's
	 * promise that they are the device's (what CUDA plans with) */
	attention_range_table ranges;
	char why[256];  /* the first failure since the last sync ("" none) */
} dev;

/* Ops return nothing, so a failure waits for sync, as on a GPU. */
static void note_failure(const char *what)
{
	if (!dev.why[0])
		snprintf(dev.why, sizeof dev.why, "%s", what);
}

static int protect(int prot)
{
	char msg[128];

	if (!dev.top || !mprotect(dev.base, dev.top, prot))
		return 0;
	snprintf(msg, sizeof msg, "mprotect of %zu bytes: %s", dev.top, strerror(errno));
	note_failure(msg);
	return titan_err(TITAN_EINTERNAL, "cpu-fenced: %s", msg);
}

static int unfence(void)
{
	if (dev.depth++)
		return 0;
	return protect(PROT_READ | PROT_WRITE);
}

static void fence(void)
{
	if (!--dev.depth)
		protect(PROT_NONE);
}

#define FENCED(call)        \
	do {                \
		unfence();  \
		call;       \
		fence();    \
	} while (0)

/* The cache's device: a bump allocator over the arena, page-aligned so
 * the extent to protect is whole pages.  Only the last block can go back
 * to the arena; any other freed block gives back its pages (MADV_DONTNEED)
 * but keeps its addresses, a leak of address space only, of which there
 * is plenty, and only when the cache trims. */
static int arena_alloc(void *ctx, void **p, size_t bytes)
{
	size_t rounded = (bytes + PAGE - 1) & ~(PAGE - 1);

	(void)ctx;
	if (rounded < bytes || rounded > dev.size - dev.top)
		return -1;
	*p = dev.base + dev.top;
	dev.top += rounded;
	return 0;
}

static void arena_free(void *ctx, void *p, size_t bytes)
{
	size_t rounded = (bytes + PAGE - 1) & ~(PAGE - 1);

	(void)ctx;
	madvise(p, rounded, MADV_DONTNEED);
	/* pages above top stay PROT_NONE: the last fence covered them */
	if ((char *)p + rounded == dev.base + dev.top)
		dev.top -= rounded;
}

static int arena_open(void)
{
	size_t size = ARENA_MAX;
	void *m;
	int rc;

	while ((m = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0)) == MAP_FAILED) {
		if (size / 2 < ARENA_MIN)
			return titan_err_errno(TITAN_ENOMEM, "cpu-fenced: cannot reserve %zu "
					       "bytes of address space", size);
		size /= 2;
	}
	if ((rc = cache_alloc_new(&dev.cache, arena_alloc, arena_free, NULL))) {
		munmap(m, size);
		return rc;
	}
	dev.base = m;
	dev.size = size;
	return 0;
}

static int fenced_alloc(void **p, size_t bytes)
{
	int rc;

	*p = NULL;
	if (!dev.base && (rc = arena_open()))
		return rc;
	if ((rc = cache_alloc_get(dev.cache, p, bytes)))
		return titan_err_prefix(rc, "cpu-fenced");
	/* a cached block holds what its last user left */
	if ((rc = unfence()) == 0)
		memset(*p, 0, cache_alloc_round(bytes));
	fence();
	if (rc) {
		cache_alloc_put(dev.cache, *p);
		*p = NULL;
	}
	return rc;
}

static void fenced_free(void *p, size_t bytes)
{
	char msg[256];

	(void)bytes;
	if (!p)
		return;
	/* free cannot fail, so a bad pointer (a bug) waits for the next sync */
	if (!dev.cache || cache_alloc_put(dev.cache, p)) {
		snprintf(msg, sizeof msg, "freeing %p: %s", p,
			 dev.cache ? titan_errmsg() : "no buffer was allocated yet");
		note_failure(msg);
	}
}

static int fenced_copy_in(int (*copy)(void *, const void *, size_t),
			  void *dst, const void *src, size_t bytes)
{
	int rc = unfence();

	if (!rc)
		rc = copy(dst, src, bytes);
	fence();
	return rc;
}

static int fenced_upload(void *dst, const void *src, size_t bytes)
{
	return fenced_copy_in(kernels_cpu.upload, dst, src, bytes);
}

static int fenced_download(void *dst, const void *src, size_t bytes)
{
	return fenced_copy_in(kernels_cpu.download, dst, src, bytes);
}

static void fenced_zero(void *p, size_t bytes)
{
	FENCED(kernels_cpu.zero(p, bytes));
}

static void fenced_copy(void *dst, const void *src, size_t bytes)
{
	FENCED(kernels_cpu.copy(dst, src, bytes));
}

static int fenced_sync(void)
{
	int rc = kernels_cpu.sync();   /* the CPU ops' own failures */

	if (rc || !dev.why[0])
		return rc;
	titan_err(TITAN_EINTERNAL, "cpu-fenced: %s", dev.why);
	dev.why[0] = 0;
	return TITAN_EINTERNAL;
}

static void fenced_mem_stats(kernel_mem_stats *s)
{
	cache_alloc_stats cs = { 0 };

	if (dev.cache)
		cache_alloc_get_stats(dev.cache, &cs);
	/* the arena is address space, not memory: no free or total to tell */
	*s = (kernel_mem_stats){
		.reserved = cs.reserved,
		.reserved_peak = cs.reserved_peak,
		.device_allocs = cs.device_allocs,
	};
}

static void fenced_matmul_forward(float *out, const float *inp, const float *weight,
				  int N, int IC, int OC, bool accumulate)
{
	FENCED(kernels_cpu.matmul_forward(out, inp, weight, N, IC, OC, accumulate));
}

static void fenced_matmul_backward(float *dinp, float *dweight, const float *dout,
				   const float *inp, const float *weight,
				   int N, int IC, int OC, bool accumulate_dinp)
{
	FENCED(kernels_cpu.matmul_backward(dinp, dweight, dout, inp, weight, N, IC, OC,
					   accumulate_dinp));
}

static void fenced_matmul_forward_bf16(float *out, const kernel_bf16 *inp,
				       const kernel_bf16 *weight,
				       int N, int IC, int OC, bool accumulate)
{
	FENCED(kernels_cpu.matmul_forward_bf16(out, inp, weight, N, IC, OC, accumulate));
}

static void fenced_matmul_backward_bf16(float *dinp, float *dweight, const float *dout,
					const kernel_bf16 *inp, const kernel_bf16 *weight,
					int N, int IC, int OC, bool accumulate_dinp)
{
	FENCED(kernels_cpu.matmul_backward_bf16(dinp, dweight, dout, inp, weight, N, IC, OC,
						accumulate_dinp));
}

static void fenced_cast_bf16(kernel_bf16 *dst, const float *src, size_t n)
{
	FENCED(kernels_cpu.cast_bf16(dst, src, n));
}

static void fenced_rmsnorm_forward(float *out, float *rstd, const float *inp,
				   const float *weight, int N, int C, float eps)
{
	FENCED(kernels_cpu.rmsnorm_forward(out, rstd, inp, weight, N, C, eps));
}

static void fenced_rmsnorm_backward(float *dinp, float *dweight, const float *dout,
				    const float *inp, const float *weight,
				    const float *rstd, int N, int C)
{
	FENCED(kernels_cpu.rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C));
}

static void fenced_rope_forward(float *x, const int32_t *pos, const float *cos_tab,
				const float *sin_tab, int N, int heads, int D)
{
	FENCED(kernels_cpu.rope_forward(x, pos, cos_tab, sin_tab, N, heads, D));
}

static void fenced_rope_backward(float *dx, const int32_t *pos, const float *cos_tab,
				 const float *sin_tab, int N, int heads, int D)
{
	FENCED(kernels_cpu.rope_backward(dx, pos, cos_tab, sin_tab, N, heads, D));
}

static void fenced_attention_ranges(const int32_t *lo, const int32_t *hi,
				    const int32_t *host_lo, const int32_t *host_hi, size_t n)
{
	attention_ranges_set(&dev.ranges, lo, hi, host_lo, host_hi, n);
}

/* A GPU would plan this call with the host's copy of its ranges where the
 * model gave one: the copy must be what the device holds.  Under the fence
 * (the device memory is open). */
static void check_known_ranges(const int32_t *lo, const int32_t *hi, int B, int Tq)
{
	size_t n = B > 0 && Tq > 0 ? (size_t)B * (size_t)Tq : 0, stride;
	const int32_t *known = attention_ranges_find(&dev.ranges, lo, hi, n, &stride);

	if (known && (memcmp(known, lo, n * sizeof *lo) ||
		      memcmp(known + stride, hi, n * sizeof *hi)))
		note_failure("attention: the key ranges given with attention_ranges are not "
			     "the device's (stale: new ranges were uploaded without it)");
}

static void fenced_attention_forward(float *out, float *lse, const float *q,
				     const float *k, const float *v,
				     const int32_t *kv_lo, const int32_t *kv_hi,
				     int B, int Tq, int Tk, int H, int KV, int D)
{
	FENCED(check_known_ranges(kv_lo, kv_hi, B, Tq);
	       kernels_cpu.attention_forward(out, lse, q, k, v, kv_lo, kv_hi,
					     B, Tq, Tk, H, KV, D));
}

static void fenced_attention_backward(float *dq, float *dk, float *dv,
				      const float *dout, const float *q,
				      const float *k, const float *v,
				      const float *out, const float *lse,
				      const int32_t *kv_lo, const int32_t *kv_hi,
				      int B, int Tq, int Tk, int H, int KV, int D)
{
	FENCED(check_known_ranges(kv_lo, kv_hi, B, Tq);
	       kernels_cpu.attention_backward(dq, dk, dv, dout, q, k, v, out, lse,
					      kv_lo, kv_hi, B, Tq, Tk, H, KV, D));
}

static void fenced_attention_forward_bf16(float *out, float *lse, const float *q,
					  const float *k, const float *v,
					  const int32_t *kv_lo, const int32_t *kv_hi,
					  int B, int Tq, int Tk, int H, int KV, int D)
{
	FENCED(check_known_ranges(kv_lo, kv_hi, B, Tq);
	       kernels_cpu.attention_forward_bf16(out, lse, q, k, v, kv_lo, kv_hi,
						  B, Tq, Tk, H, KV, D));
}

static void fenced_attention_backward_bf16(float *dq, float *dk, float *dv,
					   const float *dout, const float *q,
					   const float *k, const float *v,
					   const float *out, const float *lse,
					   const int32_t *kv_lo, const int32_t *kv_hi,
					   int B, int Tq, int Tk, int H, int KV, int D)
{
	FENCED(check_known_ranges(kv_lo, kv_hi, B, Tq);
	       kernels_cpu.attention_backward_bf16(dq, dk, dv, dout, q, k, v, out, lse,
						   kv_lo, kv_hi, B, Tq, Tk, H, KV, D));
}

static void fenced_swiglu_forward(float *out, const float *a, const float *b, size_t n)
{
	FENCED(kernels_cpu.swiglu_forward(out, a, b, n));
}

static void fenced_swiglu_backward(float *da, float *db, const float *dout,
				   const float *a, const float *b, size_t n)
{
	FENCED(kernels_cpu.swiglu_backward(da, db, dout, a, b, n));
}

static void fenced_embedding_forward(float *out, const uint32_t *ids,
				     const float *table, int N, int C)
{
	FENCED(kernels_cpu.embedding_forward(out, ids, table, N, C));
}

static void fenced_embedding_backward(float *dtable, const float *dout,
				      const uint32_t *ids, int N, int C)
{
	FENCED(kernels_cpu.embedding_backward(dtable, dout, ids, N, C));
}

static void fenced_cross_entropy(float *loss, float *logits, const uint32_t *labels,
				 int N, int V, float dscale)
{
	FENCED(kernels_cpu.cross_entropy(loss, logits, labels, N, V, dscale));
}

static void fenced_vocab_max(float *rmax, const float *logits, int N, int V)
{
	FENCED(kernels_cpu.vocab_max(rmax, logits, N, V));
}

static void fenced_vocab_sumexp(float *rsum, float *rlab, const float *logits,
				const float *rmax, const uint32_t *labels, uint32_t v0, int N,
				int V)
{
	FENCED(kernels_cpu.vocab_sumexp(rsum, rlab, logits, rmax, labels, v0, N, V));
}

static void fenced_vocab_finish(float *loss, float *logits, const float *rmax,
				const float *rsum, const float *rlab, const uint32_t *labels,
				uint32_t v0, int N, int V, float dscale)
{
	FENCED(kernels_cpu.vocab_finish(loss, logits, rmax, rsum, rlab, labels, v0, N, V,
					dscale));
}

static void fenced_attention_merge(float *out, float *lse_out, const float *o,
				   const float *lse, int B, int T, int H, int D)
{
	FENCED(kernels_cpu.attention_merge(out, lse_out, o, lse, B, T, H, D));
}

static void fenced_add_inplace(float *y, const float *x, size_t n)
{
	FENCED(kernels_cpu.add_inplace(y, x, n));
}

static double fenced_sumsq(const float *x, size_t n)
{
	double r;

	FENCED(r = kernels_cpu.sumsq(x, n));
	return r;
}

static void fenced_adamw(const kernel_adamw_tensor *t, int nt, double lr, double beta1,
			 double beta2, double eps, long step, float grad_scale)
{
	FENCED(kernels_cpu.adamw(t, nt, lr, beta1, beta2, eps, step, grad_scale));
}

static const kernel_ops fenced_table = {
	.name = "cpu-fenced",
	.alloc = fenced_alloc,
	.free = fenced_free,
	.upload = fenced_upload,
	.download = fenced_download,
	.zero = fenced_zero,
	.copy = fenced_copy,
	.sync = fenced_sync,
	.mem_stats = fenced_mem_stats,
	.host_memory = false,
	.matmul_forward = fenced_matmul_forward,
	.matmul_backward = fenced_matmul_backward,
	.matmul_forward_bf16 = fenced_matmul_forward_bf16,
	.matmul_backward_bf16 = fenced_matmul_backward_bf16,
	.cast_bf16 = fenced_cast_bf16,
	.rmsnorm_forward = fenced_rmsnorm_forward,
	.rmsnorm_backward = fenced_rmsnorm_backward,
	.rope_forward = fenced_rope_forward,
	.rope_backward = fenced_rope_backward,
	.attention_forward = fenced_attention_forward,
	.attention_backward = fenced_attention_backward,
	.attention_forward_bf16 = fenced_attention_forward_bf16,
	.attention_backward_bf16 = fenced_attention_backward_bf16,
	.swiglu_forward = fenced_swiglu_forward,
	.swiglu_backward = fenced_swiglu_backward,
	.embedding_forward = fenced_embedding_forward,
	.embedding_backward = fenced_embedding_backward,
	.cross_entropy = fenced_cross_entropy,
	.vocab_max = fenced_vocab_max,
	.vocab_sumexp = fenced_vocab_sumexp,
	.vocab_finish = fenced_vocab_finish,
	.attention_merge = fenced_attention_merge,
	.attention_ranges = fenced_attention_ranges,
	.add_inplace = fenced_add_inplace,
	.sumsq = fenced_sumsq,
	.adamw = fenced_adamw,
};

const kernel_ops *kernels_fenced_ops(void)
{
	return &fenced_table;
}
