/* comm_mpi.c - the MPI backend: host buffers over OpenMPI.
 *
 * Every operation starts MPI's non-blocking form and comm.c's wait loop
 * tests it, so a wait has a deadline.  MPI counts are ints: all_reduce,
 * broadcast, send and recv past INT_MAX elements go as several operations
 * (started in the same order on every rank, so they pair up); a
 * reduce_scatter or all_gather block past INT_MAX is refused.  MPI errors
 * return (MPI_ERRORS_RETURN) and become titan errors. */
#include "core/base.h"
#include "dist/comm_priv.h"

#include <mpi.h>

/* Shared by the world and every communicator split from it. */
struct mpi_shared {
	bool finalize;   /* comm_world initialised MPI, so it finalises it */
	bool broken;     /* a wait timed out somewhere: finalising would hang */
};

struct mpi_comm {
	MPI_Comm mc;
	bool world;      /* MPI_COMM_WORLD itself, not ours to free */
	struct mpi_shared *shared;
};

struct mpi_req {
	int n;
	MPI_Request r[];
};

static const struct comm_backend mpi_backend;

static int mpi_err(const comm *c, const char *op, int code)
{
	char s[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(code, s, &len) != MPI_SUCCESS)
		snprintf(s, sizeof s, "error %d", code);
	return comm_errf(c, TITAN_EIO, "%s: MPI: %s", op, s);
}

static MPI_Datatype mpi_type(comm_dtype t)
{
	switch (t) {
	case COMM_F32:
		return MPI_FLOAT;
	case COMM_F64:
		return MPI_DOUBLE;
	case COMM_I32:
		return MPI_INT32_T;
	case COMM_I64:
		return MPI_INT64_T;
	case COMM_U8:
		break;
	}
	return MPI_UINT8_T;
}

static MPI_Op mpi_op(comm_op op)
{
	return op == COMM_MAX ? MPI_MAX : op == COMM_MIN ? MPI_MIN : MPI_SUM;
}

static MPI_Comm mc_of(const comm *c)
{
	return ((struct mpi_comm *)c->impl)->mc;
}

/* Pieces of at most INT_MAX elements; one piece for n == 0, since every
 * rank must still take part in the collective. */
static int npieces(size_t n)
{
	return n ? (int)((n - 1) / INT_MAX + 1) : 1;
}

static int piece_count(size_t n, int k)
{
	size_t left = n - (size_t)k * INT_MAX;
	return (int)TITAN_MIN(left, (size_t)INT_MAX);
}

static int req_new(comm *c, const char *op, size_t n, comm_dtype t, int peer, int pieces,
		   comm_req **out)
{
	struct mpi_req *m = malloc(sizeof *m + (size_t)pieces * sizeof m->r[0]);
	int rc;
	if (!m)
		return titan_err_nomem();
	m->n = pieces;
	for (int i = 0; i < pieces; i++)
		m->r[i] = MPI_REQUEST_NULL;
	if ((rc = comm_req_alloc(c, op, n, t, peer, out))) {
		free(m);
		return rc;
	}
	(*out)->impl = m;
	return 0;
}

/* A piece failed to start: earlier pieces are pending, so they are dropped
 * (the communicator turns unusable); with none started the request just
 * goes. */
static int start_failed(comm_req **req, int started, int rc)
{
	if (started)
		comm_req_drop(*req);
	else
		(*req)->c->be->req_free(*req);
	*req = NULL;
	return rc;
}

static int mpi_iall_reduce(comm *c, void *buf, size_t n, comm_dtype t, comm_op op,
			   comm_req **req)
{
	int pieces = npieces(n), rc, e;
	size_t es = comm_dtype_size(t);
	if ((rc = req_new(c, "all_reduce", n, t, -1, pieces, req)))
		return rc;
	struct mpi_req *m = (*req)->impl;
	for (int k = 0; k < pieces; k++) {
		e = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + (size_t)k * INT_MAX * es,
				   piece_count(n, k), mpi_type(t), mpi_op(op), mc_of(c), &m->r[k]);
		if (e != MPI_SUCCESS)
			return start_failed(req, k, mpi_err(c, "all_reduce", e));
	}
	return 0;
}

static int mpi_ireduce_scatter(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			       comm_op op, comm_req **req)
{
	int rc, e;
	if (n > INT_MAX)
		return comm_errf(c, TITAN_ERANGE, "reduce_scatter: %zu elements per rank is more "
				 "than MPI's %d", n, INT_MAX);
	if ((rc = req_new(c, "reduce_scatter", n, t, -1, 1, req)))
		return rc;
	struct mpi_req *m = (*req)->impl;
	e = MPI_Ireduce_scatter_block(send, recv, (int)n, mpi_type(t), mpi_op(op), mc_of(c),
				      &m->r[0]);
	if (e != MPI_SUCCESS)
		return start_failed(req, 0, mpi_err(c, "reduce_scatter", e));
	return 0;
}

static int mpi_iall_gather(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			   comm_req **req)
{
	int rc, e;
	if (n > INT_MAX)
		return comm_errf(c, TITAN_ERANGE, "all_gather: %zu elements per rank is more "
				 "than MPI's %d", n, INT_MAX);
	if ((rc = req_new(c, "all_gather", n, t, -1, 1, req)))
		return rc;
	struct mpi_req *m = (*req)->impl;
	e = MPI_Iallgather(send, (int)n, mpi_type(t), recv, (int)n, mpi_type(t), mc_of(c),
			   &m->r[0]);
	if (e != MPI_SUCCESS)
		return start_failed(req, 0, mpi_err(c, "all_gather", e));
	return 0;
}

static int mpi_ibroadcast(comm *c, void *buf, size_t n, comm_dtype t, int root,
			  comm_req **req)
{
	int pieces = npieces(n), rc, e;
	size_t es = comm_dtype_size(t);
	if ((rc = req_new(c, "broadcast", n, t, -1, pieces, req)))
		return rc;
	struct mpi_req *m = (*req)->impl;
	for (int k = 0; k < pieces; k++) {
		e = MPI_Ibcast((char *)buf + (size_t)k * INT_MAX * es, piece_count(n, k),
			       mpi_type(t), root, mc_of(c), &m->r[k]);
		if (e != MPI_SUCCESS)
			return start_failed(req, k, mpi_err(c, "broadcast", e));
	}
	return 0;
}

/* Messages past INT_MAX elements go as pieces; MPI keeps messages between
 * two ranks with one tag in order, so the receiver (which must post the
 * same n) matches them piece by piece. */
static int mpi_isend(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag,
		     comm_req **req)
{
	int pieces = npieces(n), rc, e;
	size_t es = comm_dtype_size(t);
	if ((rc = req_new(c, "send", n, t, peer, pieces, req)))
		return rc;
	struct mpi_req *m = (*req)->impl;
	for (int k = 0; k < pieces; k++) {
		e = MPI_Isend((const char *)buf + (size_t)k * INT_MAX * es, piece_count(n, k),
			      mpi_type(t), peer, tag, mc_of(c), &m->r[k]);
		if (e != MPI_SUCCESS)
			return start_failed(req, k, mpi_err(c, "send", e));
	}
	return 0;
}

static int mpi_irecv(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag,
		     comm_req **req)
{
	int pieces = npieces(n), rc, e;
	size_t es = comm_dtype_size(t);
	if ((rc = req_new(c, "recv", n, t, peer, pieces, req)))
		return rc;
	struct mpi_req *m = (*req)->impl;
	for (int k = 0; k < pieces; k++) {
		e = MPI_Irecv((char *)buf + (size_t)k * INT_MAX * es, piece_count(n, k),
			      mpi_type(t), peer, tag, mc_of(c), &m->r[k]);
		if (e != MPI_SUCCESS)
			return start_failed(req, k, mpi_err(c, "recv", e));
	}
	return 0;
}

static int mpi_ibarrier(comm *c, comm_req **req)
{
	int rc, e;
	if ((rc = req_new(c, "barrier", 0, COMM_U8, -1, 1, req)))
		return rc;
	struct mpi_req *m = (*req)->impl;
	if ((e = MPI_Ibarrier(mc_of(c), &m->r[0])) != MPI_SUCCESS)
		return start_failed(req, 0, mpi_err(c, "barrier", e));
	return 0;
}

static int mpi_test(comm_req *req, bool *done)
{
	struct mpi_req *m = req->impl;
	*done = true;
	for (int i = 0; i < m->n; i++) {
		int flag = 0, e;
		if (m->r[i] == MPI_REQUEST_NULL)
			continue;
		if ((e = MPI_Test(&m->r[i], &flag, MPI_STATUS_IGNORE)) != MPI_SUCCESS)
			return mpi_err(req->c, req->op, e);
		if (!flag)
			*done = false;
	}
	return 0;
}

/* MPI can neither cancel nor free a pending collective: the requests stay
 * with MPI, and the job is expected to end with comm_abort. */
static void mpi_expire(comm_req *req)
{
	((struct mpi_comm *)req->c->impl)->shared->broken = true;
}

static void mpi_req_free(comm_req *req)
{
	free(req->impl);
	free(req);
}

/* Wrap a new MPI communicator made from parent. */
static int mpi_wrap(comm *parent, MPI_Comm nc, const char *name, comm **out)
{
	struct mpi_comm *pm = parent->impl, *m;
	int rank, size, rc;
	comm *c;

	MPI_Comm_set_errhandler(nc, MPI_ERRORS_RETURN);
	MPI_Comm_rank(nc, &rank);
	MPI_Comm_size(nc, &size);
	if (!(m = calloc(1, sizeof *m))) {
		MPI_Comm_free(&nc);
		return titan_err_nomem();
	}
	if ((rc = comm_alloc(&mpi_backend, parent, name, rank, size, 0, &c))) {
		MPI_Comm_free(&nc);
		free(m);
		return rc;
	}
	m->mc = nc;
	m->shared = pm->shared;
	c->impl = m;
	*out = c;
	return 0;
}

static int mpi_split(comm *c, int color, int key, const char *name, comm **out)
{
	MPI_Comm nc = MPI_COMM_NULL;
	int rc, e;

	/* MPI has no non-blocking split: a barrier under the deadline first,
	 * so that a rank that died fails here instead of hanging the split. */
	if ((rc = comm_barrier(c)))
		return rc;
	e = MPI_Comm_split(mc_of(c), color < 0 ? MPI_UNDEFINED : color, key, &nc);
	if (e != MPI_SUCCESS)
		return mpi_err(c, "split", e);
	if (nc == MPI_COMM_NULL) {
		*out = NULL;
		return 0;
	}
	return mpi_wrap(c, nc, name, out);
}

static int mpi_dup(comm *c, const char *name, comm **out)
{
	MPI_Comm nc = MPI_COMM_NULL;
	comm_req *req;
	int rc, e;

	if ((rc = req_new(c, "dup", 0, COMM_U8, -1, 1, &req)))
		return rc;
	struct mpi_req *m = req->impl;
	if ((e = MPI_Comm_idup(mc_of(c), &nc, &m->r[0])) != MPI_SUCCESS) {
		mpi_req_free(req);
		return mpi_err(c, "dup", e);
	}
	if ((rc = comm_wait(req)))
		return rc;
	return mpi_wrap(c, nc, name, out);
}

static void mpi_free(comm *c)
{
	struct mpi_comm *m = c->impl;
	/* After a timeout MPI may still be inside a collective on any of
	 * them: freeing or finalising could hang, so leave it to the exit. */
	bool ok = !m->shared->broken;
	if (!m->world) {
		if (ok)
			MPI_Comm_free(&m->mc);
	} else {
		if (ok && m->shared->finalize)
			MPI_Finalize();
		free(m->shared);
	}
	free(m);
	comm_release(c);
}

static void mpi_abort(comm *c, int exit_code)
{
	MPI_Abort(MPI_COMM_WORLD, exit_code);
}

static const struct comm_backend mpi_backend = {
	.name = "mpi",
	.iall_reduce = mpi_iall_reduce,
	.ireduce_scatter = mpi_ireduce_scatter,
	.iall_gather = mpi_iall_gather,
	.ibroadcast = mpi_ibroadcast,
	.isend = mpi_isend,
	.irecv = mpi_irecv,
	.ibarrier = mpi_ibarrier,
	.test = mpi_test,
	.expire = mpi_expire,
	.req_free = mpi_req_free,
	.split = mpi_split,
	.dup = mpi_dup,
	.host_buffers = true,
	.free = mpi_free,
	.abort = mpi_abort,
};

int comm_mpi_world(double timeout_s, comm **out)
{
	int inited = 0, finalized = 0, provided = MPI_THREAD_SINGLE, rank, size, e, rc;
	struct mpi_shared *sh;
	struct mpi_comm *m;
	MPI_Comm node;
	comm *c;

	*out = NULL;
	MPI_Initialized(&inited);
	MPI_Finalized(&finalized);
	if (finalized)
		return titan_err(TITAN_EUSAGE, "comm_world: MPI was finalised already; it "
				 "starts once per process");
	if (!inited) {
		e = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
		if (e != MPI_SUCCESS)
			return titan_err(TITAN_EIO, "comm_world: MPI_Init_thread failed (error %d)",
					 e);
	} else {
		MPI_Query_thread(&provided);
	}
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);

	sh = calloc(1, sizeof *sh);
	m = calloc(1, sizeof *m);
	if (!sh || !m) {
		free(sh);
		free(m);
		return titan_err_nomem();
	}
	sh->finalize = !inited;
	m->mc = MPI_COMM_WORLD;
	m->world = true;
	m->shared = sh;
	if ((rc = comm_alloc(&mpi_backend, NULL, "world", rank, size, timeout_s, &c))) {
		free(sh);
		free(m);
		return rc;
	}
	c->impl = m;
	c->concurrent = provided == MPI_THREAD_MULTIPLE;

	/* Every rank got this far within the timeout: a rank that died in
	 * start-up fails the job here rather than at its first collective. */
	if ((rc = comm_barrier(c)))
		goto fail;
	e = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
	if (e != MPI_SUCCESS) {
		rc = mpi_err(c, "local rank", e);
		goto fail;
	}
	MPI_Comm_rank(node, &c->local_rank);
	MPI_Comm_free(&node);
	*out = c;
	return 0;
fail:
	mpi_free(c);
	return rc;
}
