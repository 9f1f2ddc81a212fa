/* cache_alloc.h - a caching allocator over a device's own allocator.
 *
 * cudaMalloc and cudaFree synchronise the device and cost milliseconds, so
 * a backend must not call them in a training step.  A cache_alloc keeps
 * every freed block for the next request of the same size class instead of
 * handing it back; only a miss calls the device.  Requests are rounded up
 * to a size class: multiples of 512 bytes up to 1 MiB, of 2 MiB above
 * (PyTorch's CUDA caching allocator rounds the same way, so the two waste
 * alike).  When the device refuses a block, the cache gives back every
 * block it holds unused and asks once more before failing.
 *
 * The device is two callbacks and their context; the CUDA backend passes
 * cudaMalloc/cudaFree, the fenced CPU device its arena, and the unit test
 * plain malloc.  A cache_alloc is not thread-safe: the thread that owns the
 * device's buffers allocates and frees them. */
#ifndef TITAN_CORE_CACHE_ALLOC_H
#define TITAN_CORE_CACHE_ALLOC_H
#include "core/base.h"

/* The device's allocator: 0 and *p set, or non-zero when it has no memory
 * (the cache then sets the titan error); free never fails. */
typedef int (*cache_device_alloc)(void *ctx, void **p, size_t bytes);
typedef void (*cache_device_free)(void *ctx, void *p, size_t bytes);

typedef struct cache_alloc_stats {
	size_t in_use, in_use_peak;       /* bytes of live blocks (rounded sizes) */
	size_t reserved, reserved_peak;   /* bytes held from the device, cached included */
	long device_allocs, device_frees; /* calls to the device's allocator */
	long hits, misses;                /* requests served from the cache / not */
} cache_alloc_stats;

typedef struct cache_alloc cache_alloc;

int cache_alloc_new(cache_alloc **out, cache_device_alloc alloc, cache_device_free free,
		    void *ctx);
/* Gives every block back to the device, live ones included. */
void cache_alloc_destroy(cache_alloc *c);

/* The size class of a request of bytes (0 is served as 1; 0 when bytes is
 * too large for any class). */
size_t cache_alloc_round(size_t bytes);
/* A block of at least bytes, 0 included: 0 and *p, or TITAN_ENOMEM naming
 * the size.  The block's contents are what its last user left. */
int cache_alloc_get(cache_alloc *c, void **p, size_t bytes);
/* Return a block of cache_alloc_get to the cache; NULL is fine.  A pointer
 * the cache did not hand out, or handed out and got back already, is a
 * TITAN_EINTERNAL error (returned) and changes nothing. */
int cache_alloc_put(cache_alloc *c, void *p);
/* Give every cached (unused) block back to the device. */
void cache_alloc_trim(cache_alloc *c);
void cache_alloc_get_stats(const cache_alloc *c, cache_alloc_stats *s);

#endif
