/* kernels.h - the compute backends' shared entry points.
 *
 * The CPU backend is always built; the CUDA backend (kernels/cuda) only with
 * `make CUDA=1`.  Without a GPU, or in a build without CUDA, the CUDA entry
 * points fail cleanly with a message and the CPU backend works as always. */
#ifndef TITAN_KERNELS_H
#define TITAN_KERNELS_H
#include <stddef.h>

/* 1 when this build includes the CUDA backend. */
int kernels_cuda_built(void);

/* Check that a CUDA device, cuBLAS(Lt) and NCCL work: runs a small kernel
 * and compares its result on the host.  0 on success with a one-line
 * description in info; negative with the reason set through the error API. */
int kernels_cuda_probe(char *info, size_t n);

#endif
