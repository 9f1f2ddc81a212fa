/* pool.h - a fixed-size thread pool for data-parallel loops.
 *
 * The pool owns its worker threads; pool_run() splits [0, n) into tasks that
 * workers claim one at a time in order (an atomic counter), and returns when
 * all are done.  The calling thread works too, so a pool of 1 thread runs
 * everything inline with no thread created. */
#ifndef TITAN_CORE_POOL_H
#define TITAN_CORE_POOL_H
#include "core/base.h"

typedef struct titan_pool titan_pool;

/* fn(arg, task, worker): worker is in [0, pool_threads()) and lets a task use
 * per-worker scratch.  A non-zero return stops further tasks from starting;
 * pool_run returns the first error (its message is carried to the caller's
 * thread). */
typedef int (*pool_fn)(void *arg, size_t task, int worker);

/* threads <= 0: one per online CPU. */
int pool_new(titan_pool **out, int threads);
void pool_free(titan_pool *p);
int pool_threads(const titan_pool *p);
int pool_run(titan_pool *p, size_t ntasks, pool_fn fn, void *arg);

/* Number of online CPUs (at least 1). */
int cpu_count(void);

#endif
