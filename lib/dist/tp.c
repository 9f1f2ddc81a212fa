/* tp.c - tensor-parallel hooks over a communicator (tp.h). */
#include "core/base.h"
#include "dist/tp.h"

static int tp_sum(void *arg, float *buf, size_t n)
{
	return comm_all_reduce(arg, buf, n, COMM_F32, COMM_SUM);
}

static int tp_max(void *arg, float *buf, size_t n)
{
	return comm_all_reduce(arg, buf, n, COMM_F32, COMM_MAX);
}

static int tp_all_gather(void *arg, const float *send, float *recv, size_t n)
{
	return comm_all_gather(arg, send, recv, n, COMM_F32);
}

static int tp_reduce_scatter(void *arg, const float *send, float *recv, size_t n)
{
	return comm_reduce_scatter(arg, send, recv, n, COMM_F32, COMM_SUM);
}

void tp_hooks_init(llama_hooks *h, comm *c)
{
	*h = (llama_hooks){ .arg = c, .tp_sum = tp_sum, .tp_max = tp_max,
			    .tp_all_gather = tp_all_gather,
			    .tp_reduce_scatter = tp_reduce_scatter };
}
