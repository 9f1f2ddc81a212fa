/* attention_ranges.h - the host's copies of attention key ranges that a
 * model keeps on a device (kernels.h's attention_ranges), for a backend
 * that plans attention on the host and would otherwise copy the ranges
 * back, a wait for the device, on every call.  A table holds a few
 * regions, one per activation set the trainer keeps (a pipeline schedule
 * has several), each with its own copy of the values; the backend owns
 * one table. */
#ifndef TITAN_KERNELS_ATTENTION_RANGES_H
#define TITAN_KERNELS_ATTENTION_RANGES_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ATTENTION_RANGE_REGIONS 16

typedef struct attention_range_table {
	struct attention_range_region {
		const int32_t *lo, *hi;   /* on the device; NULL: free */
		size_t n;
		int32_t *host;            /* lo's values then hi's, n each */
	} r[ATTENTION_RANGE_REGIONS];
} attention_range_table;

/* kernels.h's attention_ranges: the region at lo takes host_lo and
 * host_hi's n values each (copied), or is forgotten with n = 0.  With no
 * free region (or no memory) nothing is kept: those calls copy their
 * ranges back. */
void attention_ranges_set(attention_range_table *t, const int32_t *lo, const int32_t *hi,
			  const int32_t *host_lo, const int32_t *host_hi, size_t n);
/* The host's copy of a call's n ranges at lo and hi, when one region
 * holds both at the same offset: lo's values, and hi's *stride further
 * on; NULL when none does. */
const int32_t *attention_ranges_find(const attention_range_table *t, const int32_t *lo,
				     const int32_t *hi, size_t n, size_t *stride);
/* Forget every region. */
void attention_ranges_clear(attention_range_table *t);

#ifdef __cplusplus
}
#endif
#endif
