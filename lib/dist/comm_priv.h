/* comm_priv.h - what comm.c shares with the backends (comm_mpi.c,
 * comm_nccl.c): the vtable, the communicator and the request.
 *
 * comm.c checks the arguments, times the calls and runs the wait loop; a
 * backend only starts operations and tests them.  Every blocking operation
 * is its non-blocking form plus comm_wait, so each backend has one code path
 * per operation. */
#ifndef TITAN_DIST_COMM_PRIV_H
#define TITAN_DIST_COMM_PRIV_H
#include "dist/comm.h"

/* The tag comm_gather_text sends with.  MPI promises tags up to 32767, so
 * user tags are 0 .. COMM_TAG_TEXT - 1 and cannot match this one. */
#define COMM_TAG_TEXT 32767

struct comm_backend {
	const char *name;
	/* Start an operation: *req stays NULL when it is already done.  The
	 * arguments have been checked (ranks in range, sizes that fit). */
	int (*iall_reduce)(comm *c, void *buf, size_t n, comm_dtype t, comm_op op,
			   comm_req **req);
	int (*ireduce_scatter)(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			       comm_op op, comm_req **req);
	int (*iall_gather)(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			   comm_req **req);
	int (*ibroadcast)(comm *c, void *buf, size_t n, comm_dtype t, int root,
			  comm_req **req);
	int (*isend)(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag,
		     comm_req **req);
	int (*irecv)(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag,
		     comm_req **req);
	int (*ibarrier)(comm *c, comm_req **req);
	/* Drive progress once: *done when the request completed. */
	int (*test)(comm_req *req, bool *done);
	/* The deadline passed: leave the request so that freeing it is safe
	 * (NCCL aborts its communicator; MPI can only leave it pending). */
	void (*expire)(comm_req *req);
	void (*req_free)(comm_req *req);
	/* NULL where unsupported (comm.c then says so). */
	int (*split)(comm *c, int color, int key, const char *name, comm **out);
	int (*dup)(comm *c, const char *name, comm **out);
	/* Whether gather_text may use send and recv (host buffers). */
	bool host_buffers;
	void (*free)(comm *c);
	void (*abort)(comm *c, int exit_code);
};

struct comm {
	const struct comm_backend *be;
	char *name;
	int rank, size;
	int world_rank, local_rank;
	bool concurrent;
	/* A wait timed out: operations may still be pending inside the
	 * backend, so every later call fails instead of mixing with them. */
	bool broken;
	double timeout_s;
	double busy_s;
	void *impl;              /* the backend's state */
};

struct comm_req {
	comm *c;
	const char *op;          /* "all_reduce", ... for the timeout message */
	size_t n;
	comm_dtype t;
	int peer;                /* send and recv: the other rank; else -1 */
	void *impl;
};

/* A communicator of backend be with the fields every backend fills; the
 * timeout is inherited from parent (NULL: timeout_s).  Backend state goes
 * in impl afterwards. */
int comm_alloc(const struct comm_backend *be, const comm *parent, const char *name, int rank,
	       int size, double timeout_s, comm **out);
/* Frees what comm_alloc allocated (not impl). */
void comm_release(comm *c);
/* A request on c for op; the backend sets impl. */
int comm_req_alloc(comm *c, const char *op, size_t n, comm_dtype t, int peer,
		   comm_req **out);
/* Give up on a request that will not be waited for (a later part of the
 * same operation failed to start): the backend may still use its buffers,
 * so the communicator is marked unusable. */
void comm_req_drop(comm_req *r);
size_t comm_dtype_size(comm_dtype t);
/* The "comm 'NAME' (rank R of S)" prefix of every message. */
int comm_errf(const comm *c, int code, const char *fmt, ...) TITAN_PRINTF(3, 4);

/* The MPI backend (comm_mpi.c): the world when a launcher started us. */
int comm_mpi_world(double timeout_s, comm **out);

#endif
