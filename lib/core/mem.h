/* mem.h - allocations that count: current and peak bytes per device.
 *
 * Every large buffer of the trainer (parameters, gradients, optimizer state,
 * activations, scratch) comes from a mem_tracker, so the peak the trainer
 * reports is the sum of what it holds, not a guess.  A tracker belongs to the
 * one who made it (one per device); it is not thread-safe: the buffers are
 * allocated and freed by the thread that owns the model. */
#ifndef TITAN_CORE_MEM_H
#define TITAN_CORE_MEM_H
#include "core/base.h"

typedef struct mem_tracker {
	const char *device;   /* "cpu", "cuda:0" */
	size_t cur, peak;     /* bytes held now, most ever held */
	size_t nalloc;        /* buffers held now */
	/* The device's allocator (a backend's kernel_ops alloc/free); NULL:
	 * host memory. */
	int (*dev_alloc)(void **p, size_t bytes);
	void (*dev_free)(void *p, size_t bytes);
} mem_tracker;

/* 64-byte aligned, zero-filled memory of the tracker's device; records a
 * titan error (naming what and the size) and returns NULL when memory runs
 * out.  what is for the message. */
void *mem_alloc(mem_tracker *t, size_t bytes, const char *what);
/* Host memory as a device gives it: bytes rounded up to 64 (at least 64),
 * 64-byte aligned, zero-filled; 0, or TITAN_ENOMEM naming the size.  The
 * allocator of a tracker without dev_alloc, and the CPU backend's. */
int mem_host_alloc(void **p, size_t bytes);
void mem_host_free(void *p, size_t bytes);
/* Free a buffer of mem_alloc(t, bytes, ...); NULL is fine. */
void mem_free(mem_tracker *t, void *p, size_t bytes);
/* Start a new peak window at the current level (after setup, before the
 * part to be measured). */
void mem_reset_peak(mem_tracker *t);

#endif
