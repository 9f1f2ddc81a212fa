/* comm_staged.c - the staged backend: device buffers carried over a host
 * communicator (comm.h, comm_staged_new).
 *
 * Each operation downloads what it sends into host buffers of its own,
 * starts the same operation on a dup of the group through the public
 * comm_i* calls (so the group's checks, timing and backend apply), and
 * keeps the inner request.  Testing a staged request tests the inner one;
 * when that completes, what arrived is uploaded into the device buffer.
 * The staged communicator's own deadline (comm.c's wait loop) governs:
 * the inner request is only ever tested, never waited for. */
#include "core/base.h"
#include "dist/comm_priv.h"

struct staged_comm {
	comm *inner;       /* a dup of the group: this communicator's ordering */
	comm_device dev;
};

struct staged_req {
	comm_req *inner;   /* NULL once completed or dropped */
	void *send, *recv; /* host staging; the same buffer for in-place ops */
	void *dst;         /* the device buffer recv is uploaded into */
	size_t bytes;      /* what is left to upload (0 once done) */
	bool expired;      /* the host may still write into send and recv */
};

static const struct comm_backend staged_backend;

static struct staged_comm *sm(const comm *c)
{
	return c->impl;
}

static void free_host(struct staged_req *s)
{
	if (s->recv != s->send)
		free(s->recv);
	free(s->send);
	s->send = s->recv = NULL;
}

/* A request on c whose host buffers hold send_bytes (src's bytes, when
 * src is given) and recv_bytes (to be uploaded into dst); in_place: one
 * buffer of send_bytes for both. */
static int stage(comm *c, const char *op, size_t n, comm_dtype t, int peer, const void *src,
		 size_t send_bytes, void *dst, size_t recv_bytes, bool in_place, comm_req **out)
{
	struct staged_req *s = calloc(1, sizeof *s);
	int rc;

	*out = NULL;
	if (!s)
		return titan_err_nomem();
	if ((send_bytes && !(s->send = malloc(send_bytes))) ||
	    (!in_place && recv_bytes && !(s->recv = malloc(recv_bytes)))) {
		rc = titan_err_nomem();
		goto fail;
	}
	if (in_place)
		s->recv = s->send;
	s->dst = dst;
	s->bytes = recv_bytes;
	if (src && send_bytes && (rc = sm(c)->dev.download(s->send, src, send_bytes))) {
		titan_err_prefix(rc, "comm '%s' (rank %d of %d): %s: download of %zu bytes",
				 c->name, c->rank, c->size, op, send_bytes);
		goto fail;
	}
	if ((rc = comm_req_alloc(c, op, n, t, peer, out)))
		goto fail;
	(*out)->impl = s;
	return 0;
fail:
	free_host(s);
	free(s);
	return rc;
}

static int upload(comm_req *r)
{
	struct staged_req *s = r->impl;
	const comm *c = r->c;
	size_t bytes = s->bytes;
	int rc;

	if (!bytes)
		return 0;
	s->bytes = 0;
	if ((rc = sm(c)->dev.upload(s->dst, s->recv, bytes)))
		titan_err_prefix(rc, "comm '%s' (rank %d of %d): %s: upload of %zu bytes",
				 c->name, c->rank, c->size, r->op, bytes);
	return rc;
}

static void staged_req_free(comm_req *r)
{
	struct staged_req *s = r->impl;

	/* After a timeout the host backend may still write into the staging
	 * buffers (MPI cannot cancel a collective): they are left allocated
	 * on purpose, as comm.c leaves a timed-out communicator. */
	if (!s->expired)
		free_host(s);
	free(s);
	free(r);
}

/* The inner operation was started with status rc: hand the request out,
 * or finish it here when the host completed it at once (self). */
static int started(comm_req **req, int rc)
{
	comm_req *r = *req;
	struct staged_req *s = r->impl;

	if (rc && s->inner) {
		/* Not expected (a failed start leaves no request), but the
		 * host might still use the buffers then. */
		comm_req_drop(s->inner);
		s->inner = NULL;
		s->expired = true;
	}
	if (!rc && s->inner)
		return 0;
	if (!rc)
		rc = upload(r);
	staged_req_free(r);
	*req = NULL;
	return rc;
}

static int staged_iall_reduce(comm *c, void *buf, size_t n, comm_dtype t, comm_op op,
			      comm_req **req)
{
	size_t bytes = n * comm_dtype_size(t);
	int rc = stage(c, "all_reduce", n, t, -1, buf, bytes, buf, bytes, true, req);
	if (rc)
		return rc;
	struct staged_req *s = (*req)->impl;
	return started(req, comm_iall_reduce(sm(c)->inner, s->send, n, t, op, &s->inner));
}

static int staged_ireduce_scatter(comm *c, const void *send, void *recv, size_t n,
				  comm_dtype t, comm_op op, comm_req **req)
{
	size_t bytes = n * comm_dtype_size(t);
	int rc = stage(c, "reduce_scatter", n, t, -1, send, bytes * (size_t)c->size, recv,
		       bytes, false, req);
	if (rc)
		return rc;
	struct staged_req *s = (*req)->impl;
	return started(req, comm_ireduce_scatter(sm(c)->inner, s->send, s->recv, n, t, op,
						 &s->inner));
}

static int staged_iall_gather(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			      comm_req **req)
{
	size_t bytes = n * comm_dtype_size(t);
	int rc = stage(c, "all_gather", n, t, -1, send, bytes, recv, bytes * (size_t)c->size,
		       false, req);
	if (rc)
		return rc;
	struct staged_req *s = (*req)->impl;
	return started(req, comm_iall_gather(sm(c)->inner, s->send, s->recv, n, t, &s->inner));
}

static int staged_ibroadcast(comm *c, void *buf, size_t n, comm_dtype t, int root,
			     comm_req **req)
{
	size_t bytes = n * comm_dtype_size(t);
	/* Only the root's bytes travel; the others' are overwritten. */
	int rc = stage(c, "broadcast", n, t, -1, c->rank == root ? buf : NULL, bytes, buf, bytes,
		       true, req);
	if (rc)
		return rc;
	struct staged_req *s = (*req)->impl;
	return started(req, comm_ibroadcast(sm(c)->inner, s->send, n, t, root, &s->inner));
}

static int staged_isend(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag,
			comm_req **req)
{
	size_t bytes = n * comm_dtype_size(t);
	int rc = stage(c, "send", n, t, peer, buf, bytes, NULL, 0, false, req);
	if (rc)
		return rc;
	struct staged_req *s = (*req)->impl;
	return started(req, comm_isend(sm(c)->inner, s->send, n, t, peer, tag, &s->inner));
}

static int staged_irecv(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag,
			comm_req **req)
{
	size_t bytes = n * comm_dtype_size(t);
	int rc = stage(c, "recv", n, t, peer, NULL, 0, buf, bytes, false, req);
	if (rc)
		return rc;
	struct staged_req *s = (*req)->impl;
	return started(req, comm_irecv(sm(c)->inner, s->recv, n, t, peer, tag, &s->inner));
}

static int staged_ibarrier(comm *c, comm_req **req)
{
	int rc = stage(c, "barrier", 0, COMM_U8, -1, NULL, 0, NULL, 0, false, req);
	if (rc)
		return rc;
	struct staged_req *s = (*req)->impl;
	return started(req, comm_ibarrier(sm(c)->inner, &s->inner));
}

static int staged_test(comm_req *req, bool *done)
{
	struct staged_req *s = req->impl;
	/* comm_test frees the inner request once it completes or fails. */
	int rc = comm_test(&s->inner, done);
	if (rc || !*done)
		return rc;
	return upload(req);
}

/* The inner request will never be waited for: drop it, which leaves the
 * inner communicator unusable as this one is about to be. */
static void staged_expire(comm_req *req)
{
	struct staged_req *s = req->impl;
	if (!s->inner)
		return;
	comm_req_drop(s->inner);
	s->inner = NULL;
	s->expired = true;
}

static void staged_free(comm *c)
{
	struct staged_comm *m = c->impl;
	if (m) {
		comm_free(m->inner);
		free(m);
	}
	comm_release(c);
}

static void staged_abort(comm *c, int exit_code)
{
	comm_abort(sm(c)->inner, exit_code);
}

/* No split or dup: a second staged communicator is made from a split or
 * dup of the group, as comm.c's message says. */
static const struct comm_backend staged_backend = {
	.name = "staged",
	.iall_reduce = staged_iall_reduce,
	.ireduce_scatter = staged_ireduce_scatter,
	.iall_gather = staged_iall_gather,
	.ibroadcast = staged_ibroadcast,
	.isend = staged_isend,
	.irecv = staged_irecv,
	.ibarrier = staged_ibarrier,
	.test = staged_test,
	.expire = staged_expire,
	.req_free = staged_req_free,
	.split = NULL,
	.dup = NULL,
	.host_buffers = false,
	.free = staged_free,
	.abort = staged_abort,
};

int comm_staged_new(comm *group, const comm_device *dev, const char *name, comm **out)
{
	struct staged_comm *m;
	comm *c;
	int rc;

	*out = NULL;
	if (!group)
		return titan_err(TITAN_EUSAGE, "comm_staged_new: no group");
	if (!dev || !dev->download || !dev->upload)
		return comm_errf(group, TITAN_EUSAGE, "comm_staged_new: no device upload and "
				 "download");
	if (!group->be->host_buffers)
		return comm_errf(group, TITAN_EUSAGE, "comm_staged_new: the group must be a "
				 "host communicator (self or mpi), not %s", group->be->name);
	/* Everything local first: a failure after the dup would have to free
	 * it, which is collective. */
	if (!(m = calloc(1, sizeof *m)))
		return titan_err_nomem();
	m->dev = *dev;
	if ((rc = comm_alloc(&staged_backend, group, name, group->rank, group->size, 0, &c))) {
		free(m);
		return rc;
	}
	if ((rc = comm_dup(group, name, &m->inner))) {
		free(m);
		comm_release(c);
		return rc;
	}
	c->impl = m;
	*out = c;
	return 0;
}
