/* comm.h - collectives over a group of ranks: the one interface the
 * parallel trainer, the checkpoint writer and the sampler talk through.
 *
 * Backends:
 *   self  one rank; every collective is a copy (or nothing).
 *   mpi   CPU buffers over MPI (OpenMPI).  Chosen when a launcher started
 *         the process (mpirun, srun --mpi=pmix: OMPI_COMM_WORLD_SIZE,
 *         PMIX_RANK or PMI_RANK in the environment).  Without a launcher a
 *         tool is one rank and MPI is never initialised.
 *   nccl  GPU buffers (CUDA builds only): made from an MPI group with
 *         comm_nccl_new, the ncclUniqueId broadcast over it.
 *   staged  device buffers over a host communicator (self or mpi), made
 *         with comm_staged_new: each operation downloads what it sends
 *         into host memory, runs on a dup of the group, and uploads what
 *         it received when it completes.  For devices without a direct
 *         path (the fenced CPU device; a GPU without NCCL).
 *
 * Every operation exists blocking and non-blocking (comm_i*: start, then
 * comm_wait).  Collectives on one communicator must be started in the same
 * order on every rank; two threads may use two communicators at once (the
 * checkpoint thread works on its own comm_dup), never one communicator.
 *
 * No call hangs forever: a wait that outlasts the communicator's timeout
 * (comm_set_timeout) fails with TITAN_EIO naming the operation, the
 * communicator, this rank and the peer when there is one ("comm 'dp_shard'
 * (rank 1 of 2): all_gather of 4096 floats timed out after 30 s: another
 * rank died or hangs").  A tool that fails on one rank calls comm_abort so
 * that the launcher stops the others at once.
 *
 * Buffers are host memory for self and mpi, device memory for nccl and
 * staged.  Counts are elements.  In-place forms: all_reduce works in place; reduce_scatter
 * and all_gather take distinct send and receive buffers. */
#ifndef TITAN_DIST_COMM_H
#define TITAN_DIST_COMM_H
#include "core/base.h"

typedef enum { COMM_F32, COMM_F64, COMM_I32, COMM_I64, COMM_U8 } comm_dtype;
typedef enum { COMM_SUM, COMM_MAX, COMM_MIN } comm_op;

typedef struct comm comm;
typedef struct comm_req comm_req;

/* The world: the mpi backend when a launcher started this process, else
 * self.  timeout_s bounds every wait (<= 0: 300 s); it covers MPI's own
 * start-up too.  The world owns the backend: MPI is finalised when the
 * world is freed, after every communicator split from it. */
int comm_world(comm **out, double timeout_s);
/* Whether a launcher started this process (the test comm_world uses). */
bool comm_launched(void);
/* Frees a communicator (collective over its ranks for mpi); NULL is fine.
 * Free the world last. */
void comm_free(comm *c);
/* Stop every rank of the job now (MPI_Abort on the world), for a tool that
 * fails on one rank; returns only for self, where it does nothing. */
void comm_abort(comm *c, int exit_code);

int comm_rank(const comm *c);
int comm_size(const comm *c);
/* The rank in the world of this process. */
int comm_world_rank(const comm *c);
/* This process's rank among the world's ranks on its host (which GPU it
 * drives): 0 for self. */
int comm_local_rank(const comm *c);
/* Whether two threads may each work on their own communicator at once
 * (MPI_THREAD_MULTIPLE was granted; always true for self).  When false the
 * checkpoint writer saves on the calling thread. */
bool comm_concurrent(const comm *c);
const char *comm_name(const comm *c);     /* "world", "dp_shard", ... */
const char *comm_backend(const comm *c);  /* "self", "mpi", "nccl" */
void comm_set_timeout(comm *c, double timeout_s);
/* Seconds spent inside this communicator's calls (starts and waits), for
 * the trainer's communication share. */
double comm_busy_seconds(const comm *c);

/* Collective: ranks with the same color form one new communicator, ordered
 * by key, then by rank.  name is copied (for messages).  color < 0: this
 * rank joins none and *out is NULL. */
int comm_split(comm *c, int color, int key, const char *name, comm **out);
/* Collective: the same ranks, an independent ordering of operations (for a
 * second thread). */
int comm_dup(comm *c, const char *name, comm **out);

int comm_all_reduce(comm *c, void *buf, size_t n, comm_dtype t, comm_op op);
/* send holds size * n elements; rank i receives the reduction of block i. */
int comm_reduce_scatter(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			comm_op op);
/* recv gets size * n elements: rank i's n at offset i * n. */
int comm_all_gather(comm *c, const void *send, void *recv, size_t n, comm_dtype t);
int comm_broadcast(comm *c, void *buf, size_t n, comm_dtype t, int root);
int comm_send(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag);
int comm_recv(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag);
int comm_barrier(comm *c);

/* Non-blocking forms: the buffers belong to the operation until comm_wait
 * returns.  *req is NULL when the operation completed at once (self). */
int comm_iall_reduce(comm *c, void *buf, size_t n, comm_dtype t, comm_op op,
		     comm_req **req);
int comm_ireduce_scatter(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			 comm_op op, comm_req **req);
int comm_iall_gather(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
		     comm_req **req);
int comm_ibroadcast(comm *c, void *buf, size_t n, comm_dtype t, int root, comm_req **req);
int comm_isend(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag,
	       comm_req **req);
int comm_irecv(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag,
	       comm_req **req);
int comm_ibarrier(comm *c, comm_req **req);
/* Wait for req (NULL: done) and free it; the timeout error described
 * above when it does not complete in time. */
int comm_wait(comm_req *req);
/* Whether req has completed, without blocking (drives MPI's progress);
 * a completed req is freed and set to NULL. */
int comm_test(comm_req **req, bool *done);

/* Gather a string from every rank at root: *out (root only) is an array of
 * size allocated strings, caller frees each and the array.  For small
 * records (a checkpoint's slice list), not tensors. */
int comm_gather_text(comm *c, const char *s, int root, char ***out);

/* NCCL over the ranks of group (an mpi communicator), on CUDA device
 * `device`; TITAN_EUSAGE in a build without CUDA. */
int comm_nccl_new(comm *group, int device, const char *name, comm **out);

/* How a communicator reaches a device's memory: kernels.h's upload and
 * download of the backend whose buffers it carries (each waits for the
 * device's queued work, so what a collective sends is what the ops wrote). */
typedef struct comm_device {
	int (*download)(void *dst, const void *src, size_t bytes);
	int (*upload)(void *dst, const void *src, size_t bytes);
} comm_device;

/* A communicator over device buffers, staged through host memory for a
 * host communicator (mpi or self) that cannot read them: an operation
 * downloads what it sends into a host buffer of its own, runs on host
 * (group's backend, its ranks, a dup of its ordering), and uploads what
 * it received when it completes (in comm_wait or comm_test), then frees
 * the host buffers.  For devices without a direct path (the fenced CPU
 * device; a GPU without NCCL).  The staged communicator owns its dup of
 * group; group must outlive it.  comm_backend() says "staged". */
int comm_staged_new(comm *group, const comm_device *dev, const char *name, comm **out);

#endif
