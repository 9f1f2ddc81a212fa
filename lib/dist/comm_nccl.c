/* comm_nccl.c - the NCCL backend: device buffers, one CUDA stream per
 * communicator.
 *
 * An operation is enqueued on the communicator's stream and a CUDA event
 * recorded after it; comm.c's wait loop polls the event (and NCCL's
 * asynchronous error) until the deadline, and on timeout the NCCL
 * communicator is aborted, which frees whatever the kernels were waiting
 * on.  NCCL has no tags: sends and receives between two ranks match in
 * the order they are enqueued. */
#include "core/base.h"
#include "dist/comm_priv.h"

#ifdef TITAN_CUDA

#include <cuda_runtime.h>
/* nccl.h declares some functions with () instead of (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

struct nccl_comm {
	ncclComm_t nc;
	cudaStream_t stream;
	int device;
	int *one;                          /* the barrier's all_reduce */
	const struct comm_backend *host;   /* the group's, for comm_abort */
	bool aborted;                      /* ncclCommAbort freed nc */
};

static const struct comm_backend nccl_backend;

static int nccl_err(const comm *c, const char *op, ncclResult_t r)
{
	return comm_errf(c, TITAN_EIO, "%s: NCCL: %s", op, ncclGetErrorString(r));
}

static int cuda_err(const comm *c, const char *op, cudaError_t e)
{
	return comm_errf(c, TITAN_EIO, "%s: CUDA: %s", op, cudaGetErrorString(e));
}

static ncclDataType_t nccl_type(comm_dtype t)
{
	switch (t) {
	case COMM_F32:
		return ncclFloat32;
	case COMM_F64:
		return ncclFloat64;
	case COMM_I32:
		return ncclInt32;
	case COMM_I64:
		return ncclInt64;
	case COMM_U8:
		break;
	}
	return ncclUint8;
}

static ncclRedOp_t nccl_op(comm_op op)
{
	return op == COMM_MAX ? ncclMax : op == COMM_MIN ? ncclMin : ncclSum;
}

static struct nccl_comm *nm(const comm *c)
{
	return c->impl;
}

/* The current device is per thread: set it before every call, since the
 * checkpoint thread may use its own communicator. */
static int use_device(const comm *c, const char *op)
{
	cudaError_t e = cudaSetDevice(nm(c)->device);
	return e == cudaSuccess ? 0 : cuda_err(c, op, e);
}

/* The operation is enqueued (r is its result): record the event that says
 * it is done. */
static int enqueued(comm *c, const char *op, size_t n, comm_dtype t, int peer,
		    ncclResult_t r, comm_req **req)
{
	cudaEvent_t ev;
	cudaError_t e;
	int rc;

	if (r != ncclSuccess)
		return nccl_err(c, op, r);
	/* Without an event to wait on, wait for the stream here: the caller
	 * frees its buffers on an error. */
	if ((e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming)) != cudaSuccess) {
		cudaStreamSynchronize(nm(c)->stream);
		return cuda_err(c, op, e);
	}
	if ((e = cudaEventRecord(ev, nm(c)->stream)) != cudaSuccess) {
		cudaStreamSynchronize(nm(c)->stream);
		cudaEventDestroy(ev);
		return cuda_err(c, op, e);
	}
	if ((rc = comm_req_alloc(c, op, n, t, peer, req))) {
		cudaStreamSynchronize(nm(c)->stream);
		cudaEventDestroy(ev);
		return rc;
	}
	(*req)->impl = ev;
	return 0;
}

static int nccl_iall_reduce(comm *c, void *buf, size_t n, comm_dtype t, comm_op op,
			    comm_req **req)
{
	int rc = use_device(c, "all_reduce");
	if (rc)
		return rc;
	ncclResult_t r = ncclAllReduce(buf, buf, n, nccl_type(t), nccl_op(op), nm(c)->nc,
				       nm(c)->stream);
	return enqueued(c, "all_reduce", n, t, -1, r, req);
}

static int nccl_ireduce_scatter(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
				comm_op op, comm_req **req)
{
	int rc = use_device(c, "reduce_scatter");
	if (rc)
		return rc;
	ncclResult_t r = ncclReduceScatter(send, recv, n, nccl_type(t), nccl_op(op), nm(c)->nc,
					   nm(c)->stream);
	return enqueued(c, "reduce_scatter", n, t, -1, r, req);
}

static int nccl_iall_gather(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			    comm_req **req)
{
	int rc = use_device(c, "all_gather");
	if (rc)
		return rc;
	ncclResult_t r = ncclAllGather(send, recv, n, nccl_type(t), nm(c)->nc, nm(c)->stream);
	return enqueued(c, "all_gather", n, t, -1, r, req);
}

static int nccl_ibroadcast(comm *c, void *buf, size_t n, comm_dtype t, int root,
			   comm_req **req)
{
	int rc = use_device(c, "broadcast");
	if (rc)
		return rc;
	ncclResult_t r = ncclBroadcast(buf, buf, n, nccl_type(t), root, nm(c)->nc,
				       nm(c)->stream);
	return enqueued(c, "broadcast", n, t, -1, r, req);
}

static int nccl_isend(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag,
		      comm_req **req)
{
	int rc = use_device(c, "send");
	if (rc)
		return rc;
	ncclResult_t r = ncclSend(buf, n, nccl_type(t), peer, nm(c)->nc, nm(c)->stream);
	return enqueued(c, "send", n, t, peer, r, req);
}

static int nccl_irecv(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag,
		      comm_req **req)
{
	int rc = use_device(c, "recv");
	if (rc)
		return rc;
	ncclResult_t r = ncclRecv(buf, n, nccl_type(t), peer, nm(c)->nc, nm(c)->stream);
	return enqueued(c, "recv", n, t, peer, r, req);
}

static int nccl_ibarrier(comm *c, comm_req **req)
{
	int rc = use_device(c, "barrier");
	if (rc)
		return rc;
	ncclResult_t r = ncclAllReduce(nm(c)->one, nm(c)->one, 1, ncclInt32, ncclSum, nm(c)->nc,
				       nm(c)->stream);
	return enqueued(c, "barrier", 0, COMM_U8, -1, r, req);
}

static void nccl_expire(comm_req *req)
{
	struct nccl_comm *m = nm(req->c);
	if (!m->aborted) {
		ncclCommAbort(m->nc);
		m->aborted = true;
	}
}

static int nccl_test(comm_req *req, bool *done)
{
	comm *c = req->c;

	/* its kernels were ended, not finished, and nc is gone */
	if (nm(c)->aborted)
		return comm_errf(c, TITAN_EIO, "%s: the NCCL communicator was aborted", req->op);
	cudaError_t e = cudaEventQuery((cudaEvent_t)req->impl);
	ncclResult_t r, ar = ncclSuccess;

	*done = e == cudaSuccess;
	if (e == cudaSuccess)
		return 0;
	if (e != cudaErrorNotReady)
		return cuda_err(c, req->op, e);
	/* "not ready" is the runtime's last error now: cleared, or the next
	 * kernel launch's check (cudaGetLastError) would report it as that
	 * kernel's failure */
	(void)cudaGetLastError();
	/* A peer's failure shows here while the kernel still spins: abort the
	 * communicator, which ends that kernel, or freeing it would wait for
	 * the stream forever. */
	r = ncclCommGetAsyncError(nm(c)->nc, &ar);
	if (r == ncclSuccess && (ar == ncclSuccess || ar == ncclInProgress))
		return 0;
	int rc = nccl_err(c, req->op, r != ncclSuccess ? r : ar);
	nccl_expire(req);
	return rc;
}


static void nccl_req_free(comm_req *req)
{
	cudaEventDestroy((cudaEvent_t)req->impl);
	free(req);
}

/* A titan communicator around nc (which it then owns), on device. */
static int nccl_wrap(const comm *parent, ncclComm_t nc, int device,
		     const struct comm_backend *host, const char *name, comm **out)
{
	struct nccl_comm *m = calloc(1, sizeof *m);
	int rank = 0, size = 1, rc;
	cudaError_t e;
	comm *c = NULL;

	ncclCommUserRank(nc, &rank);
	ncclCommCount(nc, &size);
	if (!m || (rc = comm_alloc(&nccl_backend, parent, name, rank, size, 0, &c))) {
		free(m);
		ncclCommDestroy(nc);
		return m ? rc : titan_err_nomem();
	}
	m->nc = nc;
	m->device = device;
	m->host = host;
	c->impl = m;
	if ((e = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)) != cudaSuccess) {
		m->stream = NULL;
		rc = cuda_err(c, "new", e);
		goto fail;
	}
	if ((e = cudaMalloc((void **)&m->one, sizeof *m->one)) != cudaSuccess ||
	    (e = cudaMemset(m->one, 0, sizeof *m->one)) != cudaSuccess) {
		rc = cuda_err(c, "new", e);
		goto fail;
	}
	*out = c;
	return 0;
fail:
	c->be->free(c);
	return rc;
}

#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 18, 0)
/* ncclCommSplit is blocking: no deadline here, unlike MPI's split. */
static int nccl_split(comm *c, int color, int key, const char *name, comm **out)
{
	ncclComm_t nc = NULL;
	ncclResult_t r;
	int rc;

	if ((rc = use_device(c, "split")))
		return rc;
	r = ncclCommSplit(nm(c)->nc, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &nc, NULL);
	if (r != ncclSuccess)
		return nccl_err(c, "split", r);
	if (!nc) {
		*out = NULL;
		return 0;
	}
	return nccl_wrap(c, nc, nm(c)->device, nm(c)->host, name, out);
}

static int nccl_dup(comm *c, const char *name, comm **out)
{
	return nccl_split(c, 0, c->rank, name, out);
}
#define NCCL_SPLIT nccl_split
#define NCCL_DUP nccl_dup
#else
#define NCCL_SPLIT NULL
#define NCCL_DUP NULL
#endif

static void nccl_free(comm *c)
{
	struct nccl_comm *m = c->impl;
	cudaSetDevice(m->device);
	/* after an abort the stream's NCCL kernels are ended, not finished */
	if (m->stream && !m->aborted)
		cudaStreamSynchronize(m->stream);
	if (!m->aborted)
		ncclCommDestroy(m->nc);
	if (m->stream)
		cudaStreamDestroy(m->stream);
	cudaFree(m->one);
	free(m);
	comm_release(c);
}

static void nccl_abort(comm *c, int exit_code)
{
	struct nccl_comm *m = c->impl;
	if (!m->aborted) {
		ncclCommAbort(m->nc);
		m->aborted = true;
	}
	m->host->abort(c, exit_code);
}

static const struct comm_backend nccl_backend = {
	.name = "nccl",
	.iall_reduce = nccl_iall_reduce,
	.ireduce_scatter = nccl_ireduce_scatter,
	.iall_gather = nccl_iall_gather,
	.ibroadcast = nccl_ibroadcast,
	.isend = nccl_isend,
	.irecv = nccl_irecv,
	.ibarrier = nccl_ibarrier,
	.test = nccl_test,
	.expire = nccl_expire,
	.req_free = nccl_req_free,
	.split = NCCL_SPLIT,
	.dup = NCCL_DUP,
	.host_buffers = false,
	.free = nccl_free,
	.abort = nccl_abort,
};

int comm_nccl_new(comm *group, int device, const char *name, comm **out)
{
	ncclUniqueId id;
	int32_t ok = 1;
	ncclComm_t nc = NULL;
	ncclResult_t r;
	cudaError_t e;
	int rc;

	*out = NULL;
	if (!group)
		return titan_err(TITAN_EUSAGE, "comm_nccl_new: no group");
	if (!group->be->host_buffers)
		return comm_errf(group, TITAN_EUSAGE, "comm_nccl_new: the group must be an MPI "
				 "communicator, not %s", group->be->name);
	memset(&id, 0, sizeof id);
	/* Every rank says whether its device works before any waits in
	 * ncclCommInitRank for a rank that will never come. */
	if ((e = cudaSetDevice(device)) != cudaSuccess) {
		ok = 0;
		titan_err(TITAN_EIO, "comm_nccl_new: CUDA device %d: %s", device,
			  cudaGetErrorString(e));
	} else if (group->rank == 0) {
		if ((r = ncclGetUniqueId(&id)) != ncclSuccess) {
			ok = 0;
			titan_err(TITAN_EIO, "comm_nccl_new: ncclGetUniqueId: %s",
				  ncclGetErrorString(r));
		}
	}
	char why[512];
	snprintf(why, sizeof why, "%s", titan_errmsg());
	int32_t all_ok = ok;
	if ((rc = comm_all_reduce(group, &all_ok, 1, COMM_I32, COMM_MIN)))
		return rc;
	if (!ok)
		return titan_err(TITAN_EIO, "%s", why);
	if (!all_ok)
		return comm_errf(group, TITAN_EIO, "comm_nccl_new: another rank could not "
				 "start CUDA or NCCL");
	if ((rc = comm_broadcast(group, &id, sizeof id, COMM_U8, 0)))
		return rc;
	r = ncclCommInitRank(&nc, group->size, id, group->rank);
	if (r != ncclSuccess)
		return comm_errf(group, TITAN_EIO, "comm_nccl_new: ncclCommInitRank on device %d: "
				 "%s", device, ncclGetErrorString(r));
	return nccl_wrap(group, nc, device, group->be, name, out);
}

#else

int comm_nccl_new(comm *group, int device, const char *name, comm **out)
{
	*out = NULL;
	return titan_err(TITAN_EUSAGE,
			 "comm_nccl_new: this titan was built without CUDA (make CUDA=1)");
}

#endif
