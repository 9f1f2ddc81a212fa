/* pool.c - fixed-size thread pool (see pool.h).
 *
 * Workers sleep on a condition variable until pool_run() bumps the job
 * generation; then everyone, the caller included, claims task indices from
 * one atomic counter.  The first failing task records its status and message
 * under the mutex, and a flag stops the others from claiming more.  pool_run
 * is not reentrant: one run at a time per pool. */
#include "core/base.h"
#include "core/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

struct pool_worker {
	struct titan_pool *pool;
	int id;
};

struct titan_pool {
	int nthreads;
	pthread_t *threads;           /* nthreads - 1 workers */
	struct pool_worker *workers;
	int started;                  /* workers actually created */

	pthread_mutex_t mu;
	pthread_cond_t wake;          /* a new job or shutdown */
	pthread_cond_t done;          /* the last worker finished the job */
	unsigned long generation;     /* bumped per job, under mu */
	bool shutdown;
	int busy;                     /* workers still on the current job */

	/* The current job, written by pool_run before it bumps generation. */
	pool_fn fn;
	void *arg;
	size_t ntasks;
	atomic_size_t next;
	atomic_bool failed;
	int err;                      /* first error, under mu */
	char errmsg[1024];
};

int cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > INT_MAX ? INT_MAX : (int)n;
}

static void run_tasks(struct titan_pool *p, int worker)
{
	while (!atomic_load_explicit(&p->failed, memory_order_relaxed)) {
		size_t t = atomic_fetch_add(&p->next, 1);
		if (t >= p->ntasks)
			return;
		int rc = p->fn(p->arg, t, worker);
		if (rc) {
			pthread_mutex_lock(&p->mu);
			if (!p->err) {
				p->err = rc;
				snprintf(p->errmsg, sizeof p->errmsg, "%s", titan_errmsg());
			}
			pthread_mutex_unlock(&p->mu);
			atomic_store(&p->failed, true);
			return;
		}
	}
}

static void *worker_main(void *data)
{
	pthread_setname_np(pthread_self(), "titan-pool");
	struct pool_worker *w = data;
	struct titan_pool *p = w->pool;
	unsigned long seen = 0;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->shutdown && p->generation == seen)
			pthread_cond_wait(&p->wake, &p->mu);
		if (p->shutdown)
			break;
		seen = p->generation;
		pthread_mutex_unlock(&p->mu);

		run_tasks(p, w->id);

		pthread_mutex_lock(&p->mu);
		if (--p->busy == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static void stop_workers(struct titan_pool *p)
{
	pthread_mutex_lock(&p->mu);
	p->shutdown = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->started; i++)
		pthread_join(p->threads[i], NULL);
	p->started = 0;
}

int pool_new(titan_pool **out, int threads)
{
	if (threads <= 0)
		threads = cpu_count();

	struct titan_pool *p = calloc(1, sizeof *p);
	if (!p)
		return titan_err_nomem();
	p->nthreads = threads;
	p->threads = calloc((size_t)threads, sizeof *p->threads);
	p->workers = calloc((size_t)threads, sizeof *p->workers);
	if (!p->threads || !p->workers) {
		free(p->threads);
		free(p->workers);
		free(p);
		return titan_err_nomem();
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	atomic_init(&p->next, 0);
	atomic_init(&p->failed, false);

	for (int i = 1; i < threads; i++) {
		p->workers[i] = (struct pool_worker){ .pool = p, .id = i };
		int rc = pthread_create(&p->threads[i - 1], NULL, worker_main,
					&p->workers[i]);
		if (rc) {
			errno = rc;
			int err = titan_err_errno(TITAN_EIO, "cannot start thread %d of %d",
						  i + 1, threads);
			pool_free(p);
			return err;
		}
		p->started++;
	}
	*out = p;
	return 0;
}

void pool_free(titan_pool *p)
{
	if (!p)
		return;
	stop_workers(p);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->mu);
	free(p->workers);
	free(p->threads);
	free(p);
}

int pool_threads(const titan_pool *p)
{
	return p->nthreads;
}

int pool_run(titan_pool *p, size_t ntasks, pool_fn fn, void *arg)
{
	if (ntasks == 0)
		return 0;

	/* One thread, or one task: no handoff, and the task's message is
	 * already on this thread. */
	if (p->started == 0 || ntasks == 1) {
		for (size_t t = 0; t < ntasks; t++) {
			int rc = fn(arg, t, 0);
			if (rc)
				return rc;
		}
		return 0;
	}

	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->ntasks = ntasks;
	atomic_store(&p->next, 0);
	atomic_store(&p->failed, false);
	p->err = 0;
	p->errmsg[0] = '\0';
	p->busy = p->started;
	p->generation++;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);

	run_tasks(p, 0);

	pthread_mutex_lock(&p->mu);
	while (p->busy > 0)
		pthread_cond_wait(&p->done, &p->mu);
	int err = p->err;
	pthread_mutex_unlock(&p->mu);

	if (err)
		return titan_err(err, "%s", p->errmsg);
	return 0;
}
