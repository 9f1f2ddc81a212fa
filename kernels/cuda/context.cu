// context.cu - the CUDA backend's state: one stream, one cuBLAS handle and
// a small scratch buffer on the current device, made on first use, and the
// first failure since the last sync.
//
// It is per process, as the CUDA runtime's own context is, and the op
// table's functions take no context argument: so it lives here, in one
// static, used by one thread at a time (the trainer's).  An op cannot return
// an error; it notes the first one, and the op table's sync reports it.
#include <stdio.h>
#include <string.h>
#include "cuda/cuda.h"

static struct {
	bool tried, ok;
	int device;       // the device the context was made on
	cudaStream_t stream;
	cublasHandle_t blas;
	void *scratch;
	// cuda_upload_async's pinned blocks, used in turn; a block's done
	// is recorded after the copy out of it
	struct {
		void *host;
		size_t cap;
		cudaEvent_t done;
		bool queued;
	} stage[2];
	int next_stage;
	char why[256];    // why the context could not be made
	char error[256];  // the first failure since the last sync
} ctx;

static int fail(char *why, size_t wn, const char *msg)
{
	if (why && wn)
		snprintf(why, wn, "%s", msg);
	return -1;
}

extern "C" int cuda_context_init(char *why, size_t wn)
{
	if (!ctx.tried) {
		int ndev = 0;
		cudaError_t e;

		ctx.tried = true;
		e = cudaGetDeviceCount(&ndev);
		if (e != cudaSuccess || ndev == 0) {
			snprintf(ctx.why, sizeof ctx.why, "no CUDA device: %s",
				 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
			return fail(why, wn, ctx.why);
		}
		if ((e = cudaGetDevice(&ctx.device)) != cudaSuccess) {
			snprintf(ctx.why, sizeof ctx.why, "no current CUDA device: %s",
				 cudaGetErrorString(e));
			return fail(why, wn, ctx.why);
		}
		if ((e = cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking)) != cudaSuccess ||
		    (e = cudaMalloc(&ctx.scratch, CUDA_SCRATCH_BYTES)) != cudaSuccess) {
			snprintf(ctx.why, sizeof ctx.why, "cannot set up the device: %s",
				 cudaGetErrorString(e));
			return fail(why, wn, ctx.why);
		}
		// fp32 as fp32: no TF32 tensor-core shortcut, so the twin agrees
		// with the CPU backend to fp32 rounding
		if (cublasCreate(&ctx.blas) != CUBLAS_STATUS_SUCCESS ||
		    cublasSetStream(ctx.blas, ctx.stream) != CUBLAS_STATUS_SUCCESS ||
		    cublasSetMathMode(ctx.blas, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS) {
			snprintf(ctx.why, sizeof ctx.why, "cannot set up cuBLAS");
			return fail(why, wn, ctx.why);
		}
		ctx.ok = true;
	}
	return ctx.ok ? 0 : fail(why, wn, ctx.why);
}

extern "C" void cuda_note_error(const char *what, int code)
{
	if (!ctx.error[0])
		snprintf(ctx.error, sizeof ctx.error, "%s failed (code %d)", what, code);
}

void cuda_check_launch(const char *what)
{
	cudaError_t e = cudaGetLastError();

	if (e != cudaSuccess && !ctx.error[0])
		snprintf(ctx.error, sizeof ctx.error, "%s: %s", what, cudaGetErrorString(e));
}

bool cuda_ready(void)
{
	if (cuda_context_init(NULL, 0) == 0)
		return true;
	if (!ctx.error[0])
		snprintf(ctx.error, sizeof ctx.error, "%s", ctx.why);
	return false;
}

cudaStream_t cuda_stream(void)
{
	return cuda_ready() ? ctx.stream : 0;
}

cublasHandle_t cuda_blas(void)
{
	return cuda_ready() ? ctx.blas : NULL;
}

void *cuda_scratch(void)
{
	return cuda_ready() ? ctx.scratch : NULL;
}

extern "C" int cuda_sync(char *why, size_t wn)
{
	cudaError_t e;

	if (!cuda_ready())
		return fail(why, wn, ctx.why);
	e = cudaStreamSynchronize(ctx.stream);
	if (e != cudaSuccess && !ctx.error[0])
		snprintf(ctx.error, sizeof ctx.error, "a kernel failed: %s", cudaGetErrorString(e));
	if (!ctx.error[0])
		return 0;
	fail(why, wn, ctx.error);
	ctx.error[0] = 0;
	return -1;
}

extern "C" int cuda_set_device(int device, char *why, size_t wn)
{
	int ndev = 0;
	cudaError_t e;

	// the stream and cuBLAS handle belong to the device current when they
	// were made: moving afterwards would leave them behind
	if (ctx.tried) {
		if (!ctx.ok) {
			snprintf(why, wn, "cannot use CUDA device %d: %s", device, ctx.why);
			return -1;
		}
		if (ctx.device == device)
			return 0;
		snprintf(why, wn, "cannot use CUDA device %d: the backend started on device %d "
			 "already (choose the device before the first op)", device, ctx.device);
		return -1;
	}
	e = cudaGetDeviceCount(&ndev);
	if (e != cudaSuccess) {
		snprintf(why, wn, "cannot use CUDA device %d: no CUDA device: %s", device,
			 cudaGetErrorString(e));
		return -1;
	}
	if (device < 0 || device >= ndev) {
		snprintf(why, wn, "no CUDA device %d: this machine has %d (0 to %d)", device, ndev,
			 ndev - 1);
		return -2;
	}
	e = cudaSetDevice(device);
	if (e != cudaSuccess) {
		snprintf(why, wn, "cannot use CUDA device %d: %s", device, cudaGetErrorString(e));
		return -1;
	}
	return 0;
}

extern "C" int cuda_device_alloc(void **p, size_t n, char *why, size_t wn)
{
	cudaError_t e;

	*p = NULL;
	if (cuda_context_init(why, wn))
		return -1;
	e = cudaMalloc(p, n ? n : 1);
	if (e != cudaSuccess) {
		*p = NULL;
		// cudaMalloc's failure stays the last error: clear it, or the
		// next op's launch check would report it as its own
		cudaGetLastError();
		fail(why, wn, cudaGetErrorString(e));
		return -1;
	}
	return 0;
}

extern "C" void cuda_device_free(void *p)
{
	if (p)
		cudaFree(p);
}

extern "C" void cuda_note_failure(const char *msg)
{
	if (!ctx.error[0])
		snprintf(ctx.error, sizeof ctx.error, "%s", msg);
}

extern "C" void cuda_zero(void *p, size_t n)
{
	cudaError_t e;

	if (!n || !cuda_ready())
		return;
	e = cudaMemsetAsync(p, 0, n, ctx.stream);
	if (e != cudaSuccess && !ctx.error[0])
		snprintf(ctx.error, sizeof ctx.error, "zeroing %zu bytes: %s", n,
			 cudaGetErrorString(e));
}

extern "C" void cuda_copy_d2d(void *dst, const void *src, size_t n)
{
	cudaError_t e;

	if (!n || !cuda_ready())
		return;
	e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, ctx.stream);
	if (e != cudaSuccess && !ctx.error[0])
		snprintf(ctx.error, sizeof ctx.error, "copying %zu bytes on the device: %s", n,
			 cudaGetErrorString(e));
}

extern "C" int cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
	// only once the backend runs: asking earlier would make the runtime's
	// context on whatever device is current, before cuda_set_device
	if (!ctx.ok || cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
		cudaGetLastError();
		*free_bytes = *total_bytes = 0;
		return -1;
	}
	return 0;
}

extern "C" int cuda_copy(void *dst, const void *src, size_t n, bool to_device, char *why,
			 size_t wn)
{
	cudaError_t e;

	if (cuda_context_init(why, wn))
		return -1;
	if (!n)
		return 0;
	e = cudaMemcpyAsync(dst, src, n, to_device ? cudaMemcpyHostToDevice
						   : cudaMemcpyDeviceToHost, ctx.stream);
	if (e == cudaSuccess)
		e = cudaStreamSynchronize(ctx.stream);
	if (e != cudaSuccess) {
		/* reported here: not again by the next launch's check */
		(void)cudaGetLastError();
		if (why && wn)
			snprintf(why, wn, "copying %zu bytes %s the device: %s", n,
				 to_device ? "to" : "from", cudaGetErrorString(e));
		return -1;
	}
	return 0;
}

extern "C" int cuda_upload_async(void *dst, const void *src, size_t n, char *why, size_t wn)
{
	cudaError_t e = cudaSuccess;

	if (cuda_context_init(why, wn))
		return -1;
	if (!n)
		return 0;
	auto &st = ctx.stage[ctx.next_stage];

	// the block's last copy was queued one upload ago, usually long
	// done; waiting here bounds how far the host runs ahead
	if (st.queued && (e = cudaEventSynchronize(st.done)) != cudaSuccess)
		goto failed;
	st.queued = false;
	if (!st.done && (e = cudaEventCreateWithFlags(&st.done, cudaEventDisableTiming)) !=
			cudaSuccess)
		goto failed;
	if (st.cap < n) {
		size_t cap = (n + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);

		cudaFreeHost(st.host);
		st.host = NULL;
		st.cap = 0;
		if ((e = cudaHostAlloc(&st.host, cap, cudaHostAllocDefault)) != cudaSuccess)
			goto failed;
		st.cap = cap;
	}
	memcpy(st.host, src, n);
	if ((e = cudaMemcpyAsync(dst, st.host, n, cudaMemcpyHostToDevice, ctx.stream)) !=
			cudaSuccess ||
	    (e = cudaEventRecord(st.done, ctx.stream)) != cudaSuccess)
		goto failed;
	st.queued = true;
	ctx.next_stage ^= 1;
	return 0;
failed:
	(void)cudaGetLastError();
	if (why && wn)
		snprintf(why, wn, "copying %zu bytes to the device: %s", n, cudaGetErrorString(e));
	return -1;
}
