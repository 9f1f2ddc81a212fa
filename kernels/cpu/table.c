/* table.c - the CPU backend's op table. */
#include "core/base.h"

#include "cpu.h"

const kernel_ops kernels_cpu = {
	.name = "cpu",
	.matmul_forward = cpu_matmul_forward,
	.matmul_backward = cpu_matmul_backward,
	.rmsnorm_forward = cpu_rmsnorm_forward,
	.rmsnorm_backward = cpu_rmsnorm_backward,
	.rope_forward = cpu_rope_forward,
	.rope_backward = cpu_rope_backward,
	.attention_forward = cpu_attention_forward,
	.attention_backward = cpu_attention_backward,
	.swiglu_forward = cpu_swiglu_forward,
	.swiglu_backward = cpu_swiglu_backward,
	.embedding_forward = cpu_embedding_forward,
	.embedding_backward = cpu_embedding_backward,
	.cross_entropy = cpu_cross_entropy,
	.add_inplace = cpu_add_inplace,
	.scale = cpu_scale,
	.sumsq = cpu_sumsq,
	.adamw = cpu_adamw,
};
