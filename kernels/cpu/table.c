/* table.c - the CPU backend's op table. */
#include "core/base.h"
#include "core/mem.h"

#include "cpu.h"

/* The device is the host: memory is core/mem.h's heap, copies memcpy. */
static int cpu_copy_in(void *dst, const void *src, size_t bytes)
{
	if (bytes)
		memmove(dst, src, bytes);
	return 0;
}

static void cpu_zero(void *p, size_t bytes)
{
	if (bytes)
		memset(p, 0, bytes);
}

static void cpu_copy(void *dst, const void *src, size_t bytes)
{
	cpu_copy_in(dst, src, bytes);
}

/* The first failure of an op since the last sync.  Static because ops
 * return nothing and take no context (the CUDA backend keeps its own the
 * same way); written only by the thread that runs the ops. */
static char cpu_failure[160];

void cpu_note_failure(const char *what)
{
	if (!cpu_failure[0])
		snprintf(cpu_failure, sizeof cpu_failure, "%s", what);
}

static int cpu_sync(void)
{
	if (!cpu_failure[0])
		return 0;
	titan_err(TITAN_ENOMEM, "cpu: %s", cpu_failure);
	cpu_failure[0] = 0;
	return TITAN_ENOMEM;
}

const kernel_ops kernels_cpu = {
	.name = "cpu",
	.alloc = mem_host_alloc,
	.free = mem_host_free,
	.upload = cpu_copy_in,
	.download = cpu_copy_in,
	.zero = cpu_zero,
	.copy = cpu_copy,
	.sync = cpu_sync,
	.host_memory = true,
	.matmul_forward = cpu_matmul_forward,
	.matmul_backward = cpu_matmul_backward,
	.matmul_forward_bf16 = cpu_matmul_forward_bf16,
	.matmul_backward_bf16 = cpu_matmul_backward_bf16,
	.cast_bf16 = cpu_cast_bf16,
	.rmsnorm_forward = cpu_rmsnorm_forward,
	.rmsnorm_backward = cpu_rmsnorm_backward,
	.rope_forward = cpu_rope_forward,
	.rope_backward = cpu_rope_backward,
	.attention_forward = cpu_attention_forward,
	.attention_backward = cpu_attention_backward,
	.attention_forward_bf16 = cpu_attention_forward_bf16,
	.attention_backward_bf16 = cpu_attention_backward_bf16,
	.swiglu_forward = cpu_swiglu_forward,
	.swiglu_backward = cpu_swiglu_backward,
	.embedding_forward = cpu_embedding_forward,
	.embedding_backward = cpu_embedding_backward,
	.cross_entropy = cpu_cross_entropy,
	.vocab_max = cpu_vocab_max,
	.vocab_sumexp = cpu_vocab_sumexp,
	.vocab_finish = cpu_vocab_finish,
	.attention_merge = cpu_attention_merge,
	.add_inplace = cpu_add_inplace,
	.sumsq = cpu_sumsq,
	.adamw = cpu_adamw,
};
