/* ops.cu - the fp32 CUDA kernels other than attention: the twins of
 * kernels/cpu/ops.c, over device memory, queued on cuda_stream().
 *
 * The CPU backend is the reference, so each kernel does the CPU's
 * arithmetic in the CPU's order where that order is defined, and keeps
 * float where the CPU keeps float and double where it sums in double.
 *
 * Determinism: every reduction has a fixed shape that depends on the
 * problem size alone (a shared-memory tree over a fixed block size, and
 * for sumsq a fixed number of partials summed by a second kernel), so
 * results are bit-identical run to run.  The one exception is
 * embedding_backward, whose repeated ids make rows collide: atomics there,
 * as kernels.h says.  rmsnorm's dweight sums each column in double over
 * chunks of tokens side by side and then over the chunks, in order: within
 * a rounding of the CPU's one sum in token order.
 *
 * Rounding: nvcc fuses a*b + c into one FMA by default, which the CPU's
 * baseline x86-64 code does not do.  Where the sum can cancel (a rotation,
 * rmsnorm's dx, the Adam moments, the label's gradient) the products are
 * written with __fmul_rn, which is never fused, so both backends round the
 * same way; elsewhere the difference is an ulp and is left alone.  expf,
 * logf, sqrtf and division are the IEEE ones (no fast-math flags).
 *
 * Launch shapes: elementwise kernels are 1-D grid-stride loops over size_t
 * indices; per-row reductions (rmsnorm, cross-entropy) run one block of
 * RED_THREADS per row. */
#include "cuda/cuda.h"

#include <cuda_bf16.h>
#include <math.h>
#include <string.h>

/* sumsq's first pass: at most this many partials (in cuda_scratch). */
#define SUMSQ_BLOCKS 1024
/* ... and the total after them. */
static_assert((SUMSQ_BLOCKS + 1) * sizeof(double) <= CUDA_SCRATCH_BYTES,
	      "sumsq's partials do not fit the scratch");

/* The comparison is the CPU's row_max: a NaN never replaces the maximum. */
struct red_row_max {
	__device__ float operator()(float a, float b) const
	{
		return b > a ? b : a;
	}
};

__device__ static float block_max(float v, float *sh)
{
	return block_reduce(v, sh, red_row_max());
}

static void note_blas(cublasStatus_t st)
{
	if (st != CUBLAS_STATUS_SUCCESS)
		cuda_note_error("cublasSgemm", (int)st);
}

static void zero_async(float *p, size_t n)
{
	cudaError_t e = cudaMemsetAsync(p, 0, n * sizeof(*p), cuda_stream());

	if (e != cudaSuccess)
		cuda_note_error("cudaMemsetAsync", (int)e);
}

/* The matmuls' calls with nothing to multiply: no rows or outputs, or an
 * empty sum (IC 0 forward, OC 0 for dinp), which zeroes the output unless
 * it accumulates; cuBLAS would only scale by beta, but say it plainly.
 * True when the call is done; shared with gemm_bf16.cu. */
bool cuda_matmul_forward_trivial(float *out, int N, int IC, int OC, bool accumulate)
{
	if (N <= 0 || OC <= 0)
		return true;
	if (IC > 0)
		return false;
	if (!accumulate)
		zero_async(out, (size_t)N * OC);
	return true;
}

bool cuda_matmul_backward_trivial(float *dinp, int N, int IC, int OC, bool accumulate_dinp)
{
	if (N <= 0 || IC <= 0)
		return true;
	if (OC > 0)
		return false;
	if (dinp && !accumulate_dinp)
		zero_async(dinp, (size_t)N * IC);
	return true;
}

/* cuBLAS is column-major: a row-major [R,C] matrix is its column-major
 * [C,R] transpose, so each row-major product A @ B is computed as
 * B^T @ A^T with the operands swapped.  Here out^T[OC,N] =
 * weight^T^T[OC,IC] @ inp^T[IC,N]. */
void cuda_matmul_forward(float *out, const float *inp, const float *weight,
			 int N, int IC, int OC, bool accumulate)
{
	const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;

	if (!cuda_ready() || cuda_matmul_forward_trivial(out, N, IC, OC, accumulate))
		return;
	note_blas(cublasSgemm(cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC,
			      &one, weight, IC, inp, IC, &beta, out, OC));
}

/* dinp[N,IC] = dout[N,OC] @ weight[OC,IC] is, column-major,
 * dinp^T[IC,N] = weight^T[IC,OC] @ dout^T[OC,N]: both operands as stored.
 * dweight[OC,IC] += dout^T @ inp is dweight^T[IC,OC] += inp^T[IC,N] @
 * dout[N,OC]: inp as stored, dout transposed. */
void cuda_matmul_backward(float *dinp, float *dweight, const float *dout,
			  const float *inp, const float *weight,
			  int N, int IC, int OC, bool accumulate_dinp)
{
	const float one = 1.0f, beta = accumulate_dinp ? 1.0f : 0.0f;

	if (!cuda_ready() || cuda_matmul_backward_trivial(dinp, N, IC, OC, accumulate_dinp))
		return;
	if (dinp)
		note_blas(cublasSgemm(cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N,
				      IC, N, OC, &one, weight, IC, dout, OC,
				      &beta, dinp, IC));
	if (dweight)
		note_blas(cublasSgemm(cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_T,
				      IC, OC, N, &one, inp, IC, dout, OC,
				      &one, dweight, IC));
}

/* One block per row.  C == 0 gives rstd = 1/sqrt(0/0 + eps) = NaN, as on
 * the CPU. */
__global__ static void rmsnorm_forward_kernel(float *out, float *rstd,
					      const float *inp,
					      const float *weight, int C, float eps)
{
	__shared__ float sh[RED_THREADS];
	const float *x = inp + (size_t)blockIdx.x * C;
	float *y = out + (size_t)blockIdx.x * C;
	float s = 0.0f;

	for (int i = threadIdx.x; i < C; i += RED_THREADS)
		s += x[i] * x[i];
	s = block_sum(s, sh);
	float r = 1.0f / sqrtf(s / (float)C + eps);

	if (threadIdx.x == 0)
		rstd[blockIdx.x] = r;
	for (int i = threadIdx.x; i < C; i += RED_THREADS)
		y[i] = (x[i] * r) * weight[i];
}

void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp,
			  const float *weight, int N, int C, float eps)
{
	if (!cuda_ready())
		return;
	if (N <= 0)
		return;
	rmsnorm_forward_kernel<<<N, RED_THREADS, 0, cuda_stream()>>>(out, rstd, inp,
								     weight, C, eps);
	cuda_check_launch("rmsnorm_forward");
}

/* dx = r * w * dy - x * r^3 / C * sum(dy * w * x), added to dinp; one block
 * per row, the sum in float as on the CPU. */
__global__ static void rmsnorm_backward_inp_kernel(float *dinp, const float *dout,
						   const float *inp,
						   const float *weight,
						   const float *rstd, int C)
{
	__shared__ float sh[RED_THREADS];
	size_t row = (size_t)blockIdx.x * C;
	const float *x = inp + row;
	const float *dy = dout + row;
	float *dx = dinp + row;
	float r = rstd[blockIdx.x], s = 0.0f;

	for (int i = threadIdx.x; i < C; i += RED_THREADS)
		s += dy[i] * weight[i] * x[i];
	s = block_sum(s, sh);
	float k = r * r * r * s / (float)C;

	for (int i = threadIdx.x; i < C; i += RED_THREADS)
		dx[i] += __fmul_rn(__fmul_rn(r, weight[i]), dy[i]) - __fmul_rn(k, x[i]);
}

/* The weight gradient in two passes (kernels_rmsnorm_dweight_chunks):
 * each (column, chunk of rows) thread sums its rows in order in double,
 * then one thread per column adds the chunks' sums in order.  Doubles keep
 * the result within a rounding of the CPU's one sequential sum, and no
 * atomics make it the same on every run. */
__global__ static void rmsnorm_dweight_chunk_kernel(double *part, const float *dout,
						    const float *inp, const float *rstd,
						    int N, int C, int rows)
{
	int c = blockIdx.x * RED_THREADS + threadIdx.x;
	int n0 = blockIdx.y * rows, n1 = min(N, n0 + rows);
	double acc = 0.0;

	if (c >= C)
		return;
	for (int n = n0; n < n1; n++) {
		size_t i = (size_t)n * C + c;

		acc += (double)(dout[i] * (inp[i] * rstd[n]));
	}
	part[(size_t)blockIdx.y * C + c] = acc;
}

__global__ static void rmsnorm_dweight_sum_kernel(float *dweight, const double *part,
						  int chunks, int C)
{
	int c = blockIdx.x * RED_THREADS + threadIdx.x;
	double acc = 0.0;

	if (c >= C)
		return;
	for (int k = 0; k < chunks; k++)
		acc += part[(size_t)k * C + c];
	dweight[c] += (float)acc;
}

static void rmsnorm_backward_weight(float *dweight, const float *dout, const float *inp,
				    const float *rstd, int N, int C)
{
	int chunks = kernels_rmsnorm_dweight_chunks(N);
	int rows = N / chunks + (N % chunks != 0);
	unsigned int cols = (unsigned int)((C + RED_THREADS - 1) / RED_THREADS);
	double *part = (double *)cuda_scratch_get((size_t)chunks * C * sizeof(double));

	if (!part)
		return;
	rmsnorm_dweight_chunk_kernel<<<dim3(cols, (unsigned int)chunks), RED_THREADS, 0,
				       cuda_stream()>>>(part, dout, inp, rstd, N, C, rows);
	cuda_check_launch("rmsnorm_backward");
	rmsnorm_dweight_sum_kernel<<<cols, RED_THREADS, 0, cuda_stream()>>>(dweight, part,
									   chunks, C);
	cuda_check_launch("rmsnorm_backward");
	cuda_scratch_put(part);
}

void cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout,
			   const float *inp, const float *weight,
			   const float *rstd, int N, int C)
{
	if (!cuda_ready())
		return;
	if (N <= 0 || C <= 0)
		return;
	if (dinp) {
		rmsnorm_backward_inp_kernel<<<N, RED_THREADS, 0, cuda_stream()>>>(
			dinp, dout, inp, weight, rstd, C);
		cuda_check_launch("rmsnorm_backward");
	}
	if (dweight)
		rmsnorm_backward_weight(dweight, dout, inp, rstd, N, C);
}

/* One thread per pair (2i, 2i+1) of one head of one token; with an odd D
 * the last element is left alone, as on the CPU.  sign = -1 turns by the
 * opposite angle (backward). */
__global__ static void rope_kernel(float *x, const int32_t *pos,
				   const float *cos_tab, const float *sin_tab,
				   size_t pairs, int heads, int D, float sign)
{
	size_t half = (size_t)(D / 2);

	for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < pairs;
	     j += (size_t)gridDim.x * blockDim.x) {
		size_t row = j / half, i = j % half;   /* row = n * heads + h */
		size_t n = row / (size_t)heads;
		size_t t = (size_t)pos[n] * half + i;
		float c = cos_tab[t], si = sign * sin_tab[t];
		float *p = x + row * (size_t)D + 2 * i;
		float x0 = p[0], x1 = p[1];

		p[0] = __fmul_rn(x0, c) - __fmul_rn(x1, si);
		p[1] = __fmul_rn(x0, si) + __fmul_rn(x1, c);
	}
}

static void rope_turn(float *x, const int32_t *pos, const float *cos_tab,
		      const float *sin_tab, int N, int heads, int D, float sign)
{
	size_t pairs;

	if (N <= 0 || heads <= 0 || D / 2 <= 0)
		return;
	pairs = (size_t)N * heads * (D / 2);
	rope_kernel<<<cuda_grid_for(pairs), RED_THREADS, 0, cuda_stream()>>>(
		x, pos, cos_tab, sin_tab, pairs, heads, D, sign);
	cuda_check_launch("rope");
}

void cuda_rope_forward(float *x, const int32_t *pos, const float *cos_tab,
		       const float *sin_tab, int N, int heads, int D)
{
	if (!cuda_ready())
		return;
	rope_turn(x, pos, cos_tab, sin_tab, N, heads, D, 1.0f);
}

void cuda_rope_backward(float *dx, const int32_t *pos, const float *cos_tab,
			const float *sin_tab, int N, int heads, int D)
{
	if (!cuda_ready())
		return;
	rope_turn(dx, pos, cos_tab, sin_tab, N, heads, D, -1.0f);
}

__global__ static void swiglu_forward_kernel(float *out, const float *a,
					     const float *b, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		out[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

/* silu'(a) = sig(a) * (1 + a * (1 - sig(a))), as torch's silu_backward */
__global__ static void swiglu_backward_kernel(float *da, float *db,
					      const float *dout, const float *a,
					      const float *b, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		float ai = a[i], dy = dout[i];
		float e = 1.0f + expf(-ai);
		float sig = 1.0f / e;
		float dsilu = dy * b[i];

		db[i] = dy * (ai / e);
		da[i] = dsilu * sig * (1.0f + ai * (1.0f - sig));
	}
}

void cuda_swiglu_forward(float *out, const float *a, const float *b, size_t n)
{
	if (!cuda_ready())
		return;
	if (n == 0)
		return;
	swiglu_forward_kernel<<<cuda_grid_for(n), RED_THREADS, 0, cuda_stream()>>>(out, a, b, n);
	cuda_check_launch("swiglu_forward");
}

void cuda_swiglu_backward(float *da, float *db, const float *dout,
			  const float *a, const float *b, size_t n)
{
	if (!cuda_ready())
		return;
	if (n == 0)
		return;
	swiglu_backward_kernel<<<cuda_grid_for(n), RED_THREADS, 0, cuda_stream()>>>(
		da, db, dout, a, b, n);
	cuda_check_launch("swiglu_backward");
}

__global__ static void embedding_forward_kernel(float *out, const uint32_t *ids,
						const float *table, size_t total, int C)
{
	for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < total;
	     j += (size_t)gridDim.x * blockDim.x) {
		size_t n = j / (size_t)C, c = j % (size_t)C;

		out[j] = table[(size_t)ids[n] * C + c];
	}
}

/* Repeated ids add into the same row from different threads: atomics, so
 * the order of the additions (and the last bits) varies run to run. */
__global__ static void embedding_backward_kernel(float *dtable, const float *dout,
						 const uint32_t *ids, size_t total, int C)
{
	for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < total;
	     j += (size_t)gridDim.x * blockDim.x) {
		size_t n = j / (size_t)C, c = j % (size_t)C;

		atomicAdd(dtable + (size_t)ids[n] * C + c, dout[j]);
	}
}

void cuda_embedding_forward(float *out, const uint32_t *ids, const float *table,
			    int N, int C)
{
	size_t total;

	if (!cuda_ready())
		return;
	if (N <= 0 || C <= 0)
		return;
	total = (size_t)N * C;
	embedding_forward_kernel<<<cuda_grid_for(total), RED_THREADS, 0, cuda_stream()>>>(
		out, ids, table, total, C);
	cuda_check_launch("embedding_forward");
}

void cuda_embedding_backward(float *dtable, const float *dout, const uint32_t *ids,
			     int N, int C)
{
	size_t total;

	if (!cuda_ready())
		return;
	if (N <= 0 || C <= 0)
		return;
	total = (size_t)N * C;
	embedding_backward_kernel<<<cuda_grid_for(total), RED_THREADS, 0, cuda_stream()>>>(
		dtable, dout, ids, total, C);
	cuda_check_launch("embedding_backward");
}

/* One block per row: the maximum, the sum of exp(x - max), and
 * loss = -((x[label] - max) - log(sum)), rounded as torch's
 * -log_softmax(x)[label].  With dscale the exponentials are kept in x on
 * the way (each thread rereads only what it wrote), then scaled by
 * dscale / sum, and dscale is taken from the label's entry: the CPU's
 * steps in the CPU's order. */
__global__ static void cross_entropy_kernel(float *loss, float *logits,
					    const uint32_t *labels, int V,
					    float dscale)
{
	__shared__ float sh[RED_THREADS];
	float *x = logits + (size_t)blockIdx.x * V;
	uint32_t label = labels[blockIdx.x];
	/* Read before any thread overwrites the row (block_max's barriers
	 * come first). */
	float target = x[label];
	float mx = -INFINITY, sum = 0.0f;

	for (int j = threadIdx.x; j < V; j += RED_THREADS)
		mx = x[j] > mx ? x[j] : mx;
	mx = block_max(mx, sh);

	for (int j = threadIdx.x; j < V; j += RED_THREADS) {
		float e = expf(x[j] - mx);

		if (dscale != 0.0f)
			x[j] = e;
		sum += e;
	}
	sum = block_sum(sum, sh);

	if (dscale != 0.0f) {
		float k = dscale / sum;

		for (int j = threadIdx.x; j < V; j += RED_THREADS) {
			float g = __fmul_rn(x[j], k);

			if ((uint32_t)j == label)
				g -= dscale;
			x[j] = g;
		}
	}
	if (threadIdx.x == 0)
		loss[blockIdx.x] = -((target - mx) - logf(sum));
}

void cuda_cross_entropy(float *loss, float *logits, const uint32_t *labels,
			int N, int V, float dscale)
{
	if (!cuda_ready())
		return;
	if (N <= 0 || V <= 0)
		return;
	cross_entropy_kernel<<<N, RED_THREADS, 0, cuda_stream()>>>(loss, logits, labels,
								   V, dscale);
	cuda_check_launch("cross_entropy");
}

__global__ static void add_inplace_kernel(float *y, const float *x, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		y[i] += x[i];
}

void cuda_add_inplace(float *y, const float *x, size_t n)
{
	if (!cuda_ready())
		return;
	if (n == 0)
		return;
	add_inplace_kernel<<<cuda_grid_for(n), RED_THREADS, 0, cuda_stream()>>>(y, x, n);
	cuda_check_launch("add_inplace");
}

/* First pass: block b's threads stride over x with the grid's width, each
 * summing squares in double (a float's square is exact in double), and
 * the block's tree total goes to part[b].  The grid's width depends on n
 * alone, so which element lands in which partial never changes. */
__global__ static void sumsq_partial_kernel(double *part, const float *x, size_t n)
{
	__shared__ double sh[RED_THREADS];
	double s = 0.0;

	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		s += (double)x[i] * (double)x[i];
	s = block_sum(s, sh);
	if (threadIdx.x == 0)
		part[blockIdx.x] = s;
}

/* Second pass, one block: the partials in a fixed order into *total. */
__global__ static void sumsq_total_kernel(double *total, const double *part,
					  unsigned int nparts)
{
	__shared__ double sh[RED_THREADS];
	double s = 0.0;

	for (unsigned int i = threadIdx.x; i < nparts; i += RED_THREADS)
		s += part[i];
	s = block_sum(s, sh);
	if (threadIdx.x == 0)
		*total = s;
}

/* Returns 0 when the work cannot be queued or copied back; the failure is
 * noted for the next sync (the op table's). */
double cuda_sumsq(const float *x, size_t n)
{
	double *part, total = 0.0;
	size_t want;
	unsigned int blocks;
	cudaError_t e;

	if (!cuda_ready())
		return 0.0;
	if (n == 0)
		return 0.0;
	part = (double *)cuda_scratch();
	if (!part)
		return 0.0;
	want = (n + RED_THREADS - 1) / RED_THREADS;
	blocks = (unsigned int)(want < SUMSQ_BLOCKS ? want : SUMSQ_BLOCKS);
	sumsq_partial_kernel<<<blocks, RED_THREADS, 0, cuda_stream()>>>(part, x, n);
	cuda_check_launch("sumsq");
	/* The total goes after the partials in the scratch. */
	sumsq_total_kernel<<<1, RED_THREADS, 0, cuda_stream()>>>(part + SUMSQ_BLOCKS,
								 part, blocks);
	cuda_check_launch("sumsq");
	e = cudaMemcpyAsync(&total, part + SUMSQ_BLOCKS, sizeof(total),
			    cudaMemcpyDeviceToHost, cuda_stream());
	if (e != cudaSuccess) {
		cuda_note_error("cudaMemcpyAsync", (int)e);
		return 0.0;
	}
	e = cudaStreamSynchronize(cuda_stream());
	if (e != cudaSuccess) {
		cuda_note_error("cudaStreamSynchronize", (int)e);
		return 0.0;
	}
	return total;
}

/* One launch's tensors of a multi-tensor AdamW step, passed by value as
 * the kernel's parameter (well under its 4 KiB), and the fp32 scalars,
 * rounded from doubles on the host exactly as cpu_adamw rounds them (the
 * decay per tensor: its weight decay is its own). */
#define ADAMW_LAUNCH_TENSORS 32

struct adamw_launch {
	float *param[ADAMW_LAUNCH_TENSORS];
	const float *grad[ADAMW_LAUNCH_TENSORS];
	float *m[ADAMW_LAUNCH_TENSORS], *v[ADAMW_LAUNCH_TENSORS];
	uint16_t *p16[ADAMW_LAUNCH_TENSORS];
	size_t n[ADAMW_LAUNCH_TENSORS];
	float decay[ADAMW_LAUNCH_TENSORS];
	int nt;
	float b1, one_b1, b2, one_b2, bc2_sqrt, neg_step, eps, grad_scale;
};

/* Every thread strides over each tensor in turn: the tensors of a step are
 * large, so the grid stays busy on each. */
__global__ static void adamw_kernel(struct adamw_launch k)
{
	size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (int t = 0; t < k.nt; t++) {
		float *param = k.param[t], *m = k.m[t], *v = k.v[t];
		const float *grad = k.grad[t];
		uint16_t *p16 = k.p16[t];

		for (size_t i = first; i < k.n[t]; i += stride) {
			float g = __fmul_rn(grad[i], k.grad_scale);
			float p = __fmul_rn(param[i], k.decay[t]);
			float mi = __fmul_rn(m[i], k.b1);
			float vi = __fmul_rn(v[i], k.b2);

			mi = mi + __fmul_rn(k.one_b1, g);
			vi = vi + __fmul_rn(__fmul_rn(k.one_b2, g), g);
			float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;

			p = p + __fmul_rn(k.neg_step, mi) / denom;
			param[i] = p;
			m[i] = mi;
			v[i] = vi;
			if (p16)
				p16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(p));
		}
	}
}

void cuda_adamw(const kernel_adamw_tensor *t, int nt, double lr, double beta1, double beta2,
		double eps, long step, float grad_scale)
{
	struct adamw_launch k;
	double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
	size_t most = 0;

	if (!cuda_ready())
		return;
	memset(&k, 0, sizeof k);
	k.b1 = (float)beta1;
	k.one_b1 = (float)(1.0 - beta1);
	k.b2 = (float)beta2;
	k.one_b2 = (float)(1.0 - beta2);
	k.bc2_sqrt = (float)sqrt(bc2);
	k.neg_step = (float)-(lr / bc1);
	k.eps = (float)eps;
	k.grad_scale = grad_scale;
	for (int i = 0; i < nt; i++) {
		if (t[i].n) {
			int j = k.nt++;

			k.param[j] = t[i].param;
			k.grad[j] = t[i].grad;
			k.m[j] = t[i].m;
			k.v[j] = t[i].v;
			k.p16[j] = t[i].param_bf16;
			k.n[j] = t[i].n;
			k.decay[j] = (float)(1.0 - lr * t[i].weight_decay);
			most = t[i].n > most ? t[i].n : most;
		}
		if (k.nt && (k.nt == ADAMW_LAUNCH_TENSORS || i == nt - 1)) {
			adamw_kernel<<<cuda_grid_for(most), RED_THREADS, 0, cuda_stream()>>>(k);
			cuda_check_launch("adamw");
			k.nt = 0;
			most = 0;
		}
	}
}
