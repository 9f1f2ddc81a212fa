/* comm.c - the public side of comm.h: argument checks, the self backend,
 * busy-time accounting, the one wait loop every backend shares, and
 * gather_text over any backend with host buffers.
 *
 * The wait loop polls instead of blocking in the backend: a blocking MPI
 * wait has no deadline, and under mpirun --oversubscribe there are more
 * ranks than cores, so a waiting rank must also give its core away (a short
 * burst of yields, then sleeps growing to a millisecond). */
#include "core/base.h"
#include "dist/comm_priv.h"

#include <sched.h>
#include <stdarg.h>
#include <time.h>

#include "core/log.h"

#define COMM_DEFAULT_TIMEOUT 300.0

static const char *const dtype_names[][2] = {
	[COMM_F32] = { "float", "floats" },
	[COMM_F64] = { "double", "doubles" },
	[COMM_I32] = { "int32", "int32s" },
	[COMM_I64] = { "int64", "int64s" },
	[COMM_U8] = { "byte", "bytes" },
};

size_t comm_dtype_size(comm_dtype t)
{
	static const size_t sizes[] = {
		[COMM_F32] = 4, [COMM_F64] = 8, [COMM_I32] = 4, [COMM_I64] = 8, [COMM_U8] = 1,
	};
	return sizes[t];
}

int comm_errf(const comm *c, int code, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return titan_err(code, "comm '%s' (rank %d of %d): %s", c->name, c->rank, c->size, msg);
}

int comm_alloc(const struct comm_backend *be, const comm *parent, const char *name, int rank,
	       int size, double timeout_s, comm **out)
{
	comm *c = calloc(1, sizeof *c);
	*out = NULL;
	if (!c || !(c->name = strdup(name && *name ? name : "unnamed"))) {
		free(c);
		return titan_err_nomem();
	}
	c->be = be;
	c->rank = rank;
	c->size = size;
	if (parent) {
		c->world_rank = parent->world_rank;
		c->local_rank = parent->local_rank;
		c->concurrent = parent->concurrent;
		c->timeout_s = parent->timeout_s;
	} else {
		c->world_rank = rank;
		c->local_rank = 0;
		c->concurrent = true;
		c->timeout_s = timeout_s > 0 ? timeout_s : COMM_DEFAULT_TIMEOUT;
	}
	*out = c;
	return 0;
}

void comm_release(comm *c)
{
	if (!c)
		return;
	free(c->name);
	free(c);
}

int comm_req_alloc(comm *c, const char *op, size_t n, comm_dtype t, int peer, comm_req **out)
{
	comm_req *r = calloc(1, sizeof *r);
	*out = NULL;
	if (!r)
		return titan_err_nomem();
	r->c = c;
	r->op = op;
	r->n = n;
	r->t = t;
	r->peer = peer;
	*out = r;
	return 0;
}

/* ---- the self backend: one rank, every collective a copy or nothing ---- */

static int self_iall_reduce(comm *c, void *buf, size_t n, comm_dtype t, comm_op op,
			    comm_req **req)
{
	return 0;
}

static int self_ireduce_scatter(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
				comm_op op, comm_req **req)
{
	if (n)
		memcpy(recv, send, n * comm_dtype_size(t));
	return 0;
}

static int self_iall_gather(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			    comm_req **req)
{
	if (n)
		memcpy(recv, send, n * comm_dtype_size(t));
	return 0;
}

static int self_ibroadcast(comm *c, void *buf, size_t n, comm_dtype t, int root,
			   comm_req **req)
{
	return 0;
}

static int self_isend(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag,
		      comm_req **req)
{
	return comm_errf(c, TITAN_EUSAGE, "send: one rank has no peer");
}

static int self_irecv(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag,
		      comm_req **req)
{
	return comm_errf(c, TITAN_EUSAGE, "recv: one rank has no peer");
}

static int self_ibarrier(comm *c, comm_req **req)
{
	return 0;
}

/* Never called: self completes every operation when it starts. */
static int self_test(comm_req *req, bool *done)
{
	*done = true;
	return 0;
}

static void self_expire(comm_req *req)
{
}

static void self_req_free(comm_req *req)
{
	free(req);
}

static int self_new(const comm *parent, const char *name, double timeout_s, comm **out);

static int self_split(comm *c, int color, int key, const char *name, comm **out)
{
	if (color < 0) {
		*out = NULL;
		return 0;
	}
	return self_new(c, name, 0, out);
}

static int self_dup(comm *c, const char *name, comm **out)
{
	return self_new(c, name, 0, out);
}

static void self_free(comm *c)
{
	comm_release(c);
}

static void self_abort(comm *c, int exit_code)
{
}

static const struct comm_backend self_backend = {
	.name = "self",
	.iall_reduce = self_iall_reduce,
	.ireduce_scatter = self_ireduce_scatter,
	.iall_gather = self_iall_gather,
	.ibroadcast = self_ibroadcast,
	.isend = self_isend,
	.irecv = self_irecv,
	.ibarrier = self_ibarrier,
	.test = self_test,
	.expire = self_expire,
	.req_free = self_req_free,
	.split = self_split,
	.dup = self_dup,
	.host_buffers = true,
	.free = self_free,
	.abort = self_abort,
};

static int self_new(const comm *parent, const char *name, double timeout_s, comm **out)
{
	return comm_alloc(&self_backend, parent, name, 0, 1, timeout_s, out);
}

/* ---- the world and the accessors ---- */

bool comm_launched(void)
{
	static const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK" };
	for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
		if (getenv(vars[i]))
			return true;
	return false;
}

int comm_world(comm **out, double timeout_s)
{
	*out = NULL;
	if (timeout_s <= 0)
		timeout_s = COMM_DEFAULT_TIMEOUT;
	if (comm_launched())
		return comm_mpi_world(timeout_s, out);
	return self_new(NULL, "world", timeout_s, out);
}

void comm_free(comm *c)
{
	if (c)
		c->be->free(c);
}

void comm_abort(comm *c, int exit_code)
{
	if (c)
		c->be->abort(c, exit_code);
}

int comm_rank(const comm *c)
{
	return c->rank;
}

int comm_size(const comm *c)
{
	return c->size;
}

int comm_world_rank(const comm *c)
{
	return c->world_rank;
}

int comm_local_rank(const comm *c)
{
	return c->local_rank;
}

bool comm_concurrent(const comm *c)
{
	return c->concurrent;
}

const char *comm_name(const comm *c)
{
	return c->name;
}

const char *comm_backend(const comm *c)
{
	return c->be->name;
}

void comm_set_timeout(comm *c, double timeout_s)
{
	c->timeout_s = timeout_s > 0 ? timeout_s : COMM_DEFAULT_TIMEOUT;
}

double comm_busy_seconds(const comm *c)
{
	return c->busy_s;
}

/* ---- argument checks ---- */

static int check_comm(const comm *c, const char *op)
{
	if (!c)
		return titan_err(TITAN_EUSAGE, "comm: %s: no communicator", op);
	if (c->broken)
		return comm_errf(c, TITAN_EIO, "%s: the communicator is unusable after an "
				 "earlier timeout or failure", op);
	return 0;
}

static int check_args(const comm *c, const char *op, const void *buf, size_t n, comm_dtype t)
{
	int rc = check_comm(c, op);
	if (rc)
		return rc;
	if ((unsigned)t >= ARRAY_SIZE(dtype_names))
		return comm_errf(c, TITAN_EUSAGE, "%s: unknown element type %d", op, (int)t);
	if (n && !buf)
		return comm_errf(c, TITAN_EUSAGE, "%s: no buffer for %zu elements", op, n);
	if (n > SIZE_MAX / comm_dtype_size(t) / (size_t)c->size)
		return comm_errf(c, TITAN_ERANGE, "%s: %zu elements is too many", op, n);
	return 0;
}

static int check_op(const comm *c, const char *name, comm_op op)
{
	if (op != COMM_SUM && op != COMM_MAX && op != COMM_MIN)
		return comm_errf(c, TITAN_EUSAGE, "%s: unknown reduction %d", name, (int)op);
	return 0;
}

static int check_rank(const comm *c, const char *op, const char *what, int r)
{
	if (r < 0 || r >= c->size)
		return comm_errf(c, TITAN_EUSAGE, "%s: %s %d is not a rank of %d", op, what, r,
				 c->size);
	return 0;
}

static int check_tag(const comm *c, const char *op, int tag)
{
	if (tag < 0 || tag >= COMM_TAG_TEXT)
		return comm_errf(c, TITAN_EUSAGE, "%s: tag %d is outside 0..%d", op, tag,
				 COMM_TAG_TEXT - 1);
	return 0;
}

static int check_distinct(const comm *c, const char *op, const void *send, const void *recv,
			  size_t n)
{
	if (n && send == recv)
		return comm_errf(c, TITAN_EUSAGE, "%s: takes distinct send and receive buffers",
				 op);
	return 0;
}

/* ---- waiting ---- */

static void backoff(unsigned *spins)
{
	unsigned k = (*spins)++;
	if (k < 64) {
		sched_yield();
		return;
	}
	long ns = 1000L << TITAN_MIN(k - 64, 10u);
	struct timespec ts = { 0, TITAN_MIN(ns, 1000000L) };
	nanosleep(&ts, NULL);
}

static int timeout_err(const comm_req *r)
{
	const comm *c = r->c;
	char what[160] = "";
	if (strcmp(r->op, "barrier") && strcmp(r->op, "dup"))
		snprintf(what, sizeof what, " of %zu %s", r->n, dtype_names[r->t][r->n != 1]);
	if (r->peer >= 0)
		snprintf(what + strlen(what), sizeof what - strlen(what), " %s rank %d",
			 strcmp(r->op, "recv") ? "to" : "from", r->peer);
	return comm_errf(c, TITAN_EIO, "%s%s timed out after %g s: another rank died or hangs",
			 r->op, what, c->timeout_s);
}

void comm_req_drop(comm_req *r)
{
	if (!r)
		return;
	r->c->be->expire(r);
	r->c->broken = true;
	r->c->be->req_free(r);
}

int comm_wait(comm_req *req)
{
	if (!req)
		return 0;
	comm *c = req->c;
	double t0 = titan_now(), deadline = t0 + c->timeout_s;
	unsigned spins = 0;
	int rc;
	for (;;) {
		bool done = false;
		if ((rc = c->be->test(req, &done)) || done)
			break;
		if (titan_now() >= deadline) {
			rc = timeout_err(req);
			c->be->expire(req);
			c->broken = true;
			break;
		}
		backoff(&spins);
	}
	/* a failed operation may leave the backend's state behind (NCCL's is
	 * aborted): nothing more goes over this communicator */
	if (rc)
		c->broken = true;
	c->busy_s += titan_now() - t0;
	c->be->req_free(req);
	return rc;
}

int comm_test(comm_req **req, bool *done)
{
	*done = true;
	if (!*req)
		return 0;
	comm *c = (*req)->c;
	double t0 = titan_now();
	*done = false;
	int rc = c->be->test(*req, done);
	c->busy_s += titan_now() - t0;
	if (rc)
		c->broken = true;
	if (rc || *done) {
		c->be->req_free(*req);
		*req = NULL;
		*done = true;
	}
	return rc;
}

/* ---- the operations: each checks, starts and counts its time ---- */

#define TIMED(c, call)                                   \
	do {                                             \
		double t0_ = titan_now();                \
		rc = (call);                             \
		(c)->busy_s += titan_now() - t0_;        \
	} while (0)

/* For split and dup, whose backends wait with comm_wait inside (which
 * counts itself): the whole call counted once. */
#define TIMED_SET(c, call)                                  \
	do {                                                \
		double b0_ = (c)->busy_s, t0_ = titan_now(); \
		rc = (call);                                \
		(c)->busy_s = b0_ + titan_now() - t0_;      \
	} while (0)

int comm_iall_reduce(comm *c, void *buf, size_t n, comm_dtype t, comm_op op, comm_req **req)
{
	int rc;
	*req = NULL;
	if ((rc = check_args(c, "all_reduce", buf, n, t)) || (rc = check_op(c, "all_reduce", op)))
		return rc;
	TIMED(c, c->be->iall_reduce(c, buf, n, t, op, req));
	return rc;
}

int comm_ireduce_scatter(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			 comm_op op, comm_req **req)
{
	int rc;
	*req = NULL;
	if ((rc = check_args(c, "reduce_scatter", send, n, t)) ||
	    (rc = check_args(c, "reduce_scatter", recv, n, t)) ||
	    (rc = check_op(c, "reduce_scatter", op)) ||
	    (rc = check_distinct(c, "reduce_scatter", send, recv, n)))
		return rc;
	TIMED(c, c->be->ireduce_scatter(c, send, recv, n, t, op, req));
	return rc;
}

int comm_iall_gather(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
		     comm_req **req)
{
	int rc;
	*req = NULL;
	if ((rc = check_args(c, "all_gather", send, n, t)) ||
	    (rc = check_args(c, "all_gather", recv, n, t)) ||
	    (rc = check_distinct(c, "all_gather", send, recv, n)))
		return rc;
	TIMED(c, c->be->iall_gather(c, send, recv, n, t, req));
	return rc;
}

int comm_ibroadcast(comm *c, void *buf, size_t n, comm_dtype t, int root, comm_req **req)
{
	int rc;
	*req = NULL;
	if ((rc = check_args(c, "broadcast", buf, n, t)) ||
	    (rc = check_rank(c, "broadcast", "root", root)))
		return rc;
	TIMED(c, c->be->ibroadcast(c, buf, n, t, root, req));
	return rc;
}

int comm_isend(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag,
	       comm_req **req)
{
	int rc;
	*req = NULL;
	if ((rc = check_args(c, "send", buf, n, t)) || (rc = check_rank(c, "send", "peer", peer)) ||
	    (rc = check_tag(c, "send", tag)))
		return rc;
	TIMED(c, c->be->isend(c, buf, n, t, peer, tag, req));
	return rc;
}

int comm_irecv(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag, comm_req **req)
{
	int rc;
	*req = NULL;
	if ((rc = check_args(c, "recv", buf, n, t)) || (rc = check_rank(c, "recv", "peer", peer)) ||
	    (rc = check_tag(c, "recv", tag)))
		return rc;
	TIMED(c, c->be->irecv(c, buf, n, t, peer, tag, req));
	return rc;
}

int comm_ibarrier(comm *c, comm_req **req)
{
	int rc;
	*req = NULL;
	if ((rc = check_comm(c, "barrier")))
		return rc;
	TIMED(c, c->be->ibarrier(c, req));
	return rc;
}

int comm_all_reduce(comm *c, void *buf, size_t n, comm_dtype t, comm_op op)
{
	comm_req *r;
	int rc = comm_iall_reduce(c, buf, n, t, op, &r);
	return rc ? rc : comm_wait(r);
}

int comm_reduce_scatter(comm *c, const void *send, void *recv, size_t n, comm_dtype t,
			comm_op op)
{
	comm_req *r;
	int rc = comm_ireduce_scatter(c, send, recv, n, t, op, &r);
	return rc ? rc : comm_wait(r);
}

int comm_all_gather(comm *c, const void *send, void *recv, size_t n, comm_dtype t)
{
	comm_req *r;
	int rc = comm_iall_gather(c, send, recv, n, t, &r);
	return rc ? rc : comm_wait(r);
}

int comm_broadcast(comm *c, void *buf, size_t n, comm_dtype t, int root)
{
	comm_req *r;
	int rc = comm_ibroadcast(c, buf, n, t, root, &r);
	return rc ? rc : comm_wait(r);
}

int comm_send(comm *c, const void *buf, size_t n, comm_dtype t, int peer, int tag)
{
	comm_req *r;
	int rc = comm_isend(c, buf, n, t, peer, tag, &r);
	return rc ? rc : comm_wait(r);
}

int comm_recv(comm *c, void *buf, size_t n, comm_dtype t, int peer, int tag)
{
	comm_req *r;
	int rc = comm_irecv(c, buf, n, t, peer, tag, &r);
	return rc ? rc : comm_wait(r);
}

int comm_barrier(comm *c)
{
	comm_req *r;
	int rc = comm_ibarrier(c, &r);
	return rc ? rc : comm_wait(r);
}

int comm_split(comm *c, int color, int key, const char *name, comm **out)
{
	int rc;
	*out = NULL;
	if ((rc = check_comm(c, "split")))
		return rc;
	if (!c->be->split)
		return comm_errf(c, TITAN_EUSAGE, "split: not supported by the %s backend; split "
				 "the MPI group it was made from instead", c->be->name);
	TIMED_SET(c, c->be->split(c, color, key, name, out));
	return rc;
}

int comm_dup(comm *c, const char *name, comm **out)
{
	int rc;
	*out = NULL;
	if ((rc = check_comm(c, "dup")))
		return rc;
	if (!c->be->dup)
		return comm_errf(c, TITAN_EUSAGE, "dup: not supported by the %s backend; dup the "
				 "MPI group it was made from instead", c->be->name);
	TIMED_SET(c, c->be->dup(c, name, out));
	return rc;
}

/* ---- gather_text: lengths by all_gather, then the bytes by send/recv ---- */

static void free_texts(char **v, int n)
{
	if (!v)
		return;
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int comm_gather_text(comm *c, const char *s, int root, char ***out)
{
	int64_t len, *lens = NULL;
	comm_req **reqs = NULL;
	char **v = NULL;
	int rc;

	*out = NULL;
	if ((rc = check_comm(c, "gather_text")) ||
	    (rc = check_rank(c, "gather_text", "root", root)))
		return rc;
	if (!c->be->host_buffers)
		return comm_errf(c, TITAN_EUSAGE, "gather_text: the %s backend works on "
				 "device buffers; gather over the MPI group it was made from",
				 c->be->name);
	if (!s)
		s = "";
	len = (int64_t)strlen(s);
	if (c->rank == root) {
		if (!(v = calloc((size_t)c->size, sizeof *v)))
			return titan_err_nomem();
	}
	if (c->size == 1) {
		if (!(v[0] = strdup(s))) {
			free(v);
			return titan_err_nomem();
		}
		*out = v;
		return 0;
	}
	if (!(lens = malloc((size_t)c->size * sizeof *lens))) {
		rc = titan_err_nomem();
		goto out;
	}
	if ((rc = comm_all_gather(c, &len, lens, 1, COMM_I64)))
		goto out;
	if (c->rank != root) {
		comm_req *r = NULL;
		if (len)
			rc = c->be->isend(c, s, (size_t)len, COMM_U8, root, COMM_TAG_TEXT, &r);
		if (len && !rc)
			rc = comm_wait(r);
		goto out;
	}
	if (!(reqs = calloc((size_t)c->size, sizeof *reqs))) {
		rc = titan_err_nomem();
		goto out;
	}
	for (int i = 0; i < c->size && !rc; i++) {
		if (lens[i] < 0 || (uint64_t)lens[i] >= SIZE_MAX) {
			rc = comm_errf(c, TITAN_EINTERNAL, "gather_text: rank %d sent a length of "
				       "%lld", i, (long long)lens[i]);
			break;
		}
		if (!(v[i] = malloc((size_t)lens[i] + 1))) {
			rc = titan_err_nomem();
			break;
		}
		v[i][lens[i]] = 0;
		if (i == root)
			memcpy(v[i], s, (size_t)len);
		else if (lens[i])
			rc = c->be->irecv(c, v[i], (size_t)lens[i], COMM_U8, i, COMM_TAG_TEXT,
					  &reqs[i]);
	}
	for (int i = 0; i < c->size; i++) {
		if (rc)
			comm_req_drop(reqs[i]);
		else
			rc = comm_wait(reqs[i]);
		reqs[i] = NULL;
	}
out:
	free(reqs);
	free(lens);
	if (rc) {
		free_texts(v, c->size);
		return rc;
	}
	*out = v;
	return 0;
}
