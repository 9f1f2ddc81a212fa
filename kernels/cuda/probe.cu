// probe.cu - the smallest end-to-end use of the CUDA stack: a kernel, a
// cuBLASLt handle and the NCCL version.  The training kernels join it here.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>

__global__ static void axpy_kernel(int n, float a, const float *x, float *y)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		y[i] += a * x[i];
}

// Returns 0 on success; otherwise writes the reason into why.
extern "C" int titan_cuda_probe_impl(char *info, size_t n, char *why, size_t wn)
{
	int ndev = 0;
	cudaError_t e = cudaGetDeviceCount(&ndev);
	if (e != cudaSuccess || ndev == 0) {
		snprintf(why, wn, "no CUDA device: %s", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
		return -1;
	}
	cublasLtHandle_t lt;
	if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) {
		snprintf(why, wn, "cublasLtCreate failed");
		return -1;
	}
	cublasLtDestroy(lt);
	enum { N = 1000 };
	float hx[N], hy[N];
	for (int i = 0; i < N; i++) {
		hx[i] = (float)i;
		hy[i] = 1.0f;
	}
	float *dx = NULL, *dy = NULL;
	if (cudaMalloc(&dx, sizeof hx) != cudaSuccess || cudaMalloc(&dy, sizeof hy) != cudaSuccess) {
		cudaFree(dx);
		snprintf(why, wn, "cudaMalloc failed");
		return -1;
	}
	cudaMemcpy(dx, hx, sizeof hx, cudaMemcpyHostToDevice);
	cudaMemcpy(dy, hy, sizeof hy, cudaMemcpyHostToDevice);
	axpy_kernel<<<(N + 255) / 256, 256>>>(N, 2.0f, dx, dy);
	/* a launch that cannot start (no code for this GPU's architecture)
	 * says so here, not as a wrong result */
	cudaError_t launch = cudaGetLastError();
	e = cudaMemcpy(hy, dy, sizeof hy, cudaMemcpyDeviceToHost);
	cudaFree(dx);
	cudaFree(dy);
	if (launch != cudaSuccess || e != cudaSuccess) {
		snprintf(why, wn, "kernel failed: %s",
			 cudaGetErrorString(launch != cudaSuccess ? launch : e));
		cudaGetLastError();
		return -1;
	}
	for (int i = 0; i < N; i++)
		if (hy[i] != 1.0f + 2.0f * (float)i) {
			snprintf(why, wn, "kernel gave a wrong result at %d", i);
			return -1;
		}
	int nccl = 0;
	ncclGetVersion(&nccl);
	cudaDeviceProp prop;
	cudaGetDeviceProperties(&prop, 0);
	snprintf(info, n, "%d device(s), %s, NCCL %d", ndev, prop.name, nccl);
	return 0;
}
