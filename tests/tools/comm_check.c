/* comm_check.c - every operation of dist/comm.h checked against values
 * computed locally, on as many ranks as the launcher started (one, the
 * self backend, without a launcher):
 *
 *   mpirun -np N comm_check [--mesh RxC]
 *   mpirun -np N comm_check --hang-rank R --timeout S
 *   mpirun -np N comm_check --nccl
 *
 * Prints "ok" on rank 0 and exits 0, or prints the first mismatch on
 * stderr and stops every rank with exit status 1.  --mesh splits the world
 * into R rows and C columns (default: columns of 2 when the size is even).
 * --hang-rank: rank R never reaches the all_reduce the others wait in with
 * a timeout of S seconds; they must fail with the timeout message (printed
 * on stderr) and the job must end.  --nccl: the same checks over NCCL on
 * GPU buffers; skipped with a message when there is no GPU, unless
 * TITAN_REQUIRE_CUDA is set. */
#include "core/base.h"

#include <pthread.h>
#include <stdarg.h>
#include <unistd.h>

#include "dist/comm.h"

#ifdef TITAN_CUDA
#include <cuda_runtime.h>
#endif

/* For fail(), which any thread may call. */
static comm *the_world;

static void fail(const char *fmt, ...) TITAN_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "comm_check: rank %d: ", the_world ? comm_rank(the_world) : 0);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	if (the_world)
		comm_abort(the_world, 1);
	exit(1);
}

#define OK(call)                                                        \
	do {                                                            \
		if ((call) != 0)                                        \
			fail("%s: %s", #call, titan_errmsg());          \
	} while (0)

/* ---- buffers: host memory, or device memory for NCCL ---- */

static void *dalloc(bool dev, size_t bytes)
{
	void *p = NULL;
	bytes = bytes ? bytes : 1;
#ifdef TITAN_CUDA
	if (dev) {
		if (cudaMalloc(&p, bytes) != cudaSuccess)
			fail("cudaMalloc of %zu bytes failed", bytes);
		return p;
	}
#endif
	if (!(p = malloc(bytes)))
		fail("out of memory");
	return p;
}

static void dfree(bool dev, void *p)
{
#ifdef TITAN_CUDA
	if (dev) {
		cudaFree(p);
		return;
	}
#endif
	free(p);
}

static void put(bool dev, void *d, const void *h, size_t bytes)
{
#ifdef TITAN_CUDA
	if (dev) {
		/* from pageable memory cudaMemcpy may return before the copy
		 * lands, and NCCL's stream does not wait for the default one */
		if (cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
		    cudaDeviceSynchronize() != cudaSuccess)
			fail("cudaMemcpy to the device failed");
		return;
	}
#endif
	if (bytes)
		memcpy(d, h, bytes);
}

static void get(bool dev, void *h, const void *d, size_t bytes)
{
#ifdef TITAN_CUDA
	if (dev) {
		if (cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
			fail("cudaMemcpy from the device failed");
		return;
	}
#endif
	if (bytes)
		memcpy(h, d, bytes);
}

/* ---- values: small integers, exact in every type and every sum ---- */

static const char *const tnames[] = { "f32", "f64", "i32", "i64", "u8" };
static const char *const opnames[] = { "sum", "max", "min" };

static size_t tsize(comm_dtype t)
{
	return t == COMM_F64 || t == COMM_I64 ? 8 : t == COMM_U8 ? 1 : 4;
}

static long val(comm_dtype t, int rank, size_t i, int salt)
{
	size_t h = (size_t)rank * 131 + i * 7 + (size_t)salt * 17;
	if (t == COMM_U8)
		return (long)(h % 60);
	return (long)(h % 1001) - 500;
}

/* v as type t holds it: int64s are scaled past 32 bits. */
static double as(comm_dtype t, long v)
{
	return t == COMM_I64 ? (double)v * 8589934592.0 : (double)v;
}

static void store(comm_dtype t, void *p, size_t i, long v)
{
	switch (t) {
	case COMM_F32:
		((float *)p)[i] = (float)v;
		break;
	case COMM_F64:
		((double *)p)[i] = (double)v;
		break;
	case COMM_I32:
		((int32_t *)p)[i] = (int32_t)v;
		break;
	case COMM_I64:
		((int64_t *)p)[i] = (int64_t)v * 8589934592LL;
		break;
	case COMM_U8:
		((uint8_t *)p)[i] = (uint8_t)v;
		break;
	}
}

static double load(comm_dtype t, const void *p, size_t i)
{
	switch (t) {
	case COMM_F32:
		return ((const float *)p)[i];
	case COMM_F64:
		return ((const double *)p)[i];
	case COMM_I32:
		return ((const int32_t *)p)[i];
	case COMM_I64:
		return (double)((const int64_t *)p)[i];
	case COMM_U8:
		break;
	}
	return ((const uint8_t *)p)[i];
}

static double reduced(comm_dtype t, comm_op op, int size, size_t i, int salt)
{
	double acc = as(t, val(t, 0, i, salt));
	for (int r = 1; r < size; r++) {
		double v = as(t, val(t, r, i, salt));
		acc = op == COMM_SUM ? acc + v :
		      op == COMM_MAX ? TITAN_MAX(acc, v) : TITAN_MIN(acc, v);
	}
	return acc;
}

static void fill(comm_dtype t, void *p, size_t n, int rank, size_t base, int salt)
{
	for (size_t i = 0; i < n; i++)
		store(t, p, i, val(t, rank, base + i, salt));
}

/* Wait for req: by comm_test polling every other time, to check both. */
static void finish(comm_req *req, int salt)
{
	if (salt & 1) {
		bool done = false;
		while (!done) {
			OK(comm_test(&req, &done));
			if (!done)
				usleep(50);
		}
		if (req)
			fail("comm_test said done but left the request");
		return;
	}
	OK(comm_wait(req));
}

#define MODE(nb) ((nb) ? " (non-blocking)" : "")

/* ---- the operations ---- */

static void check_all_reduce(comm *c, bool dev, comm_dtype t, comm_op op, size_t n, bool nb,
			     int salt)
{
	size_t bytes = n * tsize(t);
	void *h = dalloc(false, bytes), *d = dalloc(dev, bytes);
	comm_req *req;

	fill(t, h, n, comm_rank(c), 0, salt);
	put(dev, d, h, bytes);
	if (nb) {
		OK(comm_iall_reduce(c, d, n, t, op, &req));
		finish(req, salt);
	} else {
		OK(comm_all_reduce(c, d, n, t, op));
	}
	get(dev, h, d, bytes);
	for (size_t i = 0; i < n; i++) {
		double want = reduced(t, op, comm_size(c), i, salt), got = load(t, h, i);
		if (got != want)
			fail("'%s': all_reduce %s %s of %zu%s: element %zu is %.17g, expected %.17g",
			     comm_name(c), opnames[op], tnames[t], n, MODE(nb), i, got, want);
	}
	dfree(false, h);
	dfree(dev, d);
}

static void check_reduce_scatter(comm *c, bool dev, comm_dtype t, comm_op op, size_t n,
				 bool nb, int salt)
{
	int rank = comm_rank(c), size = comm_size(c);
	size_t es = tsize(t);
	void *h = dalloc(false, (size_t)size * n * es), *s = dalloc(dev, (size_t)size * n * es);
	void *r = dalloc(dev, n * es);
	comm_req *req;

	fill(t, h, (size_t)size * n, rank, 0, salt);
	put(dev, s, h, (size_t)size * n * es);
	if (nb) {
		OK(comm_ireduce_scatter(c, s, r, n, t, op, &req));
		finish(req, salt);
	} else {
		OK(comm_reduce_scatter(c, s, r, n, t, op));
	}
	get(dev, h, r, n * es);
	for (size_t i = 0; i < n; i++) {
		double want = reduced(t, op, size, (size_t)rank * n + i, salt), got = load(t, h, i);
		if (got != want)
			fail("'%s': reduce_scatter %s %s of %zu%s: element %zu is %.17g, expected "
			     "%.17g", comm_name(c), opnames[op], tnames[t], n, MODE(nb), i, got, want);
	}
	dfree(false, h);
	dfree(dev, s);
	dfree(dev, r);
}

static void check_all_gather(comm *c, bool dev, comm_dtype t, size_t n, bool nb, int salt)
{
	int size = comm_size(c);
	size_t es = tsize(t);
	void *h = dalloc(false, (size_t)size * n * es), *s = dalloc(dev, n * es);
	void *r = dalloc(dev, (size_t)size * n * es);
	comm_req *req;

	fill(t, h, n, comm_rank(c), 0, salt);
	put(dev, s, h, n * es);
	if (nb) {
		OK(comm_iall_gather(c, s, r, n, t, &req));
		finish(req, salt);
	} else {
		OK(comm_all_gather(c, s, r, n, t));
	}
	get(dev, h, r, (size_t)size * n * es);
	for (int k = 0; k < size; k++)
		for (size_t i = 0; i < n; i++) {
			double want = as(t, val(t, k, i, salt)), got = load(t, h, (size_t)k * n + i);
			if (got != want)
				fail("'%s': all_gather %s of %zu%s: rank %d's element %zu is %.17g, "
				     "expected %.17g", comm_name(c), tnames[t], n, MODE(nb), k, i,
				     got, want);
		}
	dfree(false, h);
	dfree(dev, s);
	dfree(dev, r);
}

static void check_broadcast(comm *c, bool dev, comm_dtype t, size_t n, int root, bool nb,
			    int salt)
{
	size_t bytes = n * tsize(t);
	void *h = dalloc(false, bytes), *d = dalloc(dev, bytes);
	comm_req *req;

	fill(t, h, n, comm_rank(c), 0, salt);
	put(dev, d, h, bytes);
	if (nb) {
		OK(comm_ibroadcast(c, d, n, t, root, &req));
		finish(req, salt);
	} else {
		OK(comm_broadcast(c, d, n, t, root));
	}
	get(dev, h, d, bytes);
	for (size_t i = 0; i < n; i++) {
		double want = as(t, val(t, root, i, salt)), got = load(t, h, i);
		if (got != want)
			fail("'%s': broadcast %s of %zu from %d%s: element %zu is %.17g, expected "
			     "%.17g", comm_name(c), tnames[t], n, root, MODE(nb), i, got, want);
	}
	dfree(false, h);
	dfree(dev, d);
}

/* Each rank sends to the next and receives from the previous.  Blocking
 * (and on NCCL, whose sends and receives queue on one stream) even ranks
 * send first and odd ranks receive first, so the ring cannot deadlock. */
static void check_ring(comm *c, bool dev, size_t n, bool nb, int salt)
{
	int rank = comm_rank(c), size = comm_size(c);
	int next = (rank + 1) % size, prev = (rank + size - 1) % size;
	size_t bytes = n * sizeof(float);
	float *h = dalloc(false, bytes);
	void *s = dalloc(dev, bytes), *r = dalloc(dev, bytes);
	comm_req *rr, *sr;

	if (!strcmp(comm_backend(c), "self")) {
		if (comm_send(c, h, n, COMM_F32, 0, 1) != TITAN_EUSAGE)
			fail("'%s': send on one rank did not fail", comm_name(c));
		goto out;
	}
	if (size == 1 && (!nb || dev))
		goto out; /* a blocking send to oneself may wait for its own recv */
	fill(COMM_F32, h, n, rank, 0, salt);
	put(dev, s, h, bytes);
	if (nb && !dev) {
		OK(comm_irecv(c, r, n, COMM_F32, prev, 7, &rr));
		OK(comm_isend(c, s, n, COMM_F32, next, 7, &sr));
		finish(sr, salt);
		finish(rr, salt + 1);
	} else if (nb) {
		for (int k = 0; k < 2; k++) {
			if ((k == 0) == (rank % 2 == 0)) {
				OK(comm_isend(c, s, n, COMM_F32, next, 7, &sr));
				finish(sr, salt);
			} else {
				OK(comm_irecv(c, r, n, COMM_F32, prev, 7, &rr));
				finish(rr, salt);
			}
		}
	} else {
		for (int k = 0; k < 2; k++) {
			if ((k == 0) == (rank % 2 == 0))
				OK(comm_send(c, s, n, COMM_F32, next, 7));
			else
				OK(comm_recv(c, r, n, COMM_F32, prev, 7));
		}
	}
	get(dev, h, r, bytes);
	for (size_t i = 0; i < n; i++)
		if (h[i] != (float)val(COMM_F32, prev, i, salt))
			fail("'%s': ring of %zu%s: element %zu from rank %d is %g, expected %g",
			     comm_name(c), n, MODE(nb), i, prev, h[i],
			     (double)val(COMM_F32, prev, i, salt));
out:
	dfree(false, h);
	dfree(dev, s);
	dfree(dev, r);
}

static void check_barrier(comm *c, int salt)
{
	comm_req *req;
	OK(comm_barrier(c));
	OK(comm_ibarrier(c, &req));
	finish(req, salt);
}

/* Every operation on c; big adds the buffers of a few million elements. */
static void check_ops(comm *c, bool dev, bool big)
{
	static const comm_dtype types[] = { COMM_F32, COMM_F64, COMM_I32, COMM_I64 };
	static const size_t sizes[] = { 1, 7, 1000, 100003 };
	int salt = 0;

	for (int nb = 0; nb < 2; nb++) {
		for (size_t ti = 0; ti < ARRAY_SIZE(types); ti++)
			for (int op = 0; op < 3; op++)
				for (size_t si = 0; si < ARRAY_SIZE(sizes); si++)
					check_all_reduce(c, dev, types[ti], (comm_op)op, sizes[si],
							 nb, salt++);
		check_all_reduce(c, dev, COMM_U8, COMM_SUM, 1001, nb, salt++);
		check_all_reduce(c, dev, COMM_F32, COMM_SUM, 0, nb, salt++);
		for (size_t ti = 0; ti < ARRAY_SIZE(types); ti++)
			for (int op = 0; op < 3; op++) {
				check_reduce_scatter(c, dev, types[ti], (comm_op)op, 13, nb, salt++);
				check_all_gather(c, dev, types[ti], 11, nb, salt++);
			}
		check_reduce_scatter(c, dev, COMM_F32, COMM_SUM, 1, nb, salt++);
		check_all_gather(c, dev, COMM_U8, 3, nb, salt++);
		for (int root = 0; root < comm_size(c); root++) {
			check_broadcast(c, dev, COMM_F32, 1001, root, nb, salt++);
			check_broadcast(c, dev, COMM_I64, 3, root, nb, salt++);
		}
		check_ring(c, dev, 1, nb, salt++);
		check_ring(c, dev, 65537, nb, salt++);
		check_barrier(c, salt++);
		if (big) {
			check_all_reduce(c, dev, COMM_F32, COMM_SUM, 3000017, nb, salt++);
			check_reduce_scatter(c, dev, COMM_F32, COMM_SUM, 1000003, nb, salt++);
			check_all_gather(c, dev, COMM_F32, 777781, nb, salt++);
			check_broadcast(c, dev, COMM_F32, 2000003, comm_size(c) - 1, nb, salt++);
			check_ring(c, dev, 1500007, nb, salt++);
		}
	}
}

/* ---- split, dup, gather_text, local rank ---- */

static void expect_shape(comm *c, const char *name, int rank, int size)
{
	if (!c)
		fail("split '%s' gave no communicator", name);
	if (strcmp(comm_name(c), name) || comm_rank(c) != rank || comm_size(c) != size)
		fail("split '%s': rank %d of %d, expected rank %d of %d", comm_name(c),
		     comm_rank(c), comm_size(c), rank, size);
}

static void check_splits(comm *w, bool dev, int rows, int cols)
{
	int rank = comm_rank(w), size = comm_size(w);
	comm *row, *col, *rev, *some;

	if (comm_split(w, rank / cols, rank % cols, "row", &row)) {
		if (dev && strstr(titan_errmsg(), "not supported")) {
			printf("comm_check: skipped splits: %s\n", titan_errmsg());
			return;
		}
		fail("split: %s", titan_errmsg());
	}
	expect_shape(row, "row", rank % cols, cols);
	OK(comm_split(w, rank % cols, rank / cols, "col", &col));
	expect_shape(col, "col", rank / cols, rows);
	/* the key orders the ranks */
	OK(comm_split(w, 0, size - rank, "reversed", &rev));
	expect_shape(rev, "reversed", size - 1 - rank, size);
	/* color < 0: the last rank joins none */
	OK(comm_split(w, rank == size - 1 ? -1 : 0, 0, "some", &some));
	if (rank == size - 1 && some)
		fail("split with color -1 gave a communicator");
	if (rank != size - 1)
		expect_shape(some, "some", rank, size - 1);

	comm *subs[] = { row, col, rev, some };
	for (size_t k = 0; k < ARRAY_SIZE(subs); k++) {
		comm *c = subs[k];
		/* the same calls on every rank, in the same order: only the
		 * rank outside "some" skips it, which no one else waits for */
		if (!c)
			continue;
		for (int nb = 0; nb < 2; nb++) {
			check_all_reduce(c, dev, COMM_F32, COMM_SUM, 4099, nb, 100 + nb);
			check_all_reduce(c, dev, COMM_I64, COMM_MAX, 5, nb, 102 + nb);
			check_reduce_scatter(c, dev, COMM_F64, COMM_MIN, 17, nb, 104 + nb);
			check_all_gather(c, dev, COMM_I32, 9, nb, 106 + nb);
			for (int root = 0; root < comm_size(c); root++)
				check_broadcast(c, dev, COMM_F32, 33, root, nb, 108 + nb);
			check_ring(c, dev, 257, nb, 110 + nb);
			check_barrier(c, nb);
		}
	}
	comm_free(some);
	comm_free(rev);
	comm_free(col);
	comm_free(row);
}

struct side {
	comm *c;
	bool dev;
	int device;
};

static void *side_main(void *arg)
{
	struct side *s = arg;
#ifdef TITAN_CUDA
	if (s->dev)
		cudaSetDevice(s->device);
#endif
	for (int k = 0; k < 40; k++) {
		check_all_reduce(s->c, s->dev, COMM_F64, COMM_SUM, 1000 + (size_t)k, k & 1,
				 200 + k);
		check_all_gather(s->c, s->dev, COMM_F32, 100, k & 1, 300 + k);
	}
	check_barrier(s->c, 0);
	return NULL;
}

/* A dup'd communicator used from a second thread while this one works on
 * the world, when the backend allows it; one after the other otherwise. */
static void check_dup(comm *w, bool dev, int device)
{
	struct side s = { .dev = dev, .device = device };
	pthread_t th;

	if (comm_dup(w, "ckpt", &s.c)) {
		if (dev && strstr(titan_errmsg(), "not supported")) {
			printf("comm_check: skipped dup: %s\n", titan_errmsg());
			return;
		}
		fail("dup: %s", titan_errmsg());
	}
	expect_shape(s.c, "ckpt", comm_rank(w), comm_size(w));
	/* NCCL kernels of two communicators on one device may wait on each
	 * other in different orders on different ranks: NCCL runs them in turn */
	bool together = comm_concurrent(w) && !dev;
	if (together) {
		if (pthread_create(&th, NULL, side_main, &s))
			fail("pthread_create failed");
	} else {
		side_main(&s);
	}
	for (int k = 0; k < 40; k++) {
		check_all_reduce(w, dev, COMM_F32, COMM_SUM, 2000 + (size_t)k, k & 1, 400 + k);
		check_broadcast(w, dev, COMM_I32, 50, k % comm_size(w), k & 1, 500 + k);
	}
	if (together)
		pthread_join(th, NULL);
	comm_free(s.c);
}

static void text_of(int rank, char *buf, size_t n)
{
	if (rank % 3 == 1) {
		buf[0] = 0; /* empty */
		return;
	}
	size_t len = TITAN_MIN((size_t)rank * 37 + 5, n - 20);
	memset(buf, 'a' + rank % 26, len);
	snprintf(buf + len, n - len, " rank %d", rank);
}

static void check_gather_text(comm *c)
{
	char mine[512], want[512], **v;

	text_of(comm_rank(c), mine, sizeof mine);
	for (int root = 0; root < comm_size(c); root++) {
		OK(comm_gather_text(c, mine, root, &v));
		if (comm_rank(c) != root) {
			if (v)
				fail("gather_text gave an array on rank %d, not root %d", comm_rank(c),
				     root);
			continue;
		}
		for (int r = 0; r < comm_size(c); r++) {
			text_of(r, want, sizeof want);
			if (strcmp(v[r], want))
				fail("'%s': gather_text at %d: rank %d's text is '%s', expected '%s'",
				     comm_name(c), root, r, v[r], want);
			free(v[r]);
		}
		free(v);
	}
}

/* The local rank is this rank's place among the ranks on its host. */
static void check_local_rank(comm *w)
{
	int size = comm_size(w), rank = comm_rank(w), want = 0;
	char host[256] = { 0 };
	char *all = dalloc(false, (size_t)size * sizeof host);

	gethostname(host, sizeof host - 1);
	OK(comm_all_gather(w, host, all, sizeof host, COMM_U8));
	for (int r = 0; r < rank; r++)
		want += !strcmp(all + (size_t)r * sizeof host, host);
	if (comm_local_rank(w) != want)
		fail("local rank %d, expected %d", comm_local_rank(w), want);
	if (comm_world_rank(w) != rank)
		fail("world rank %d, expected %d", comm_world_rank(w), rank);
	free(all);
}

/* ---- the modes ---- */

static int hang(comm *w, int hang_rank, double timeout)
{
	float x = 1;
	if (hang_rank < 0 || hang_rank >= comm_size(w))
		fail("--hang-rank %d: not a rank of %d", hang_rank, comm_size(w));
	comm_set_timeout(w, timeout);
	if (comm_rank(w) == hang_rank)
		for (;;)
			pause(); /* until the others' comm_abort ends the job */
	if (comm_all_reduce(w, &x, 1, COMM_F32, COMM_SUM) == 0)
		fail("all_reduce returned without rank %d", hang_rank);
	fprintf(stderr, "comm_check: %s\n", titan_errmsg());
	fflush(stderr);
	comm_abort(w, 1);
	return 1;
}

static int nccl(comm *w, int rows, int cols)
{
	bool required = getenv("TITAN_REQUIRE_CUDA") != NULL;
#ifdef TITAN_CUDA
	int ndev = 0;
	if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
		if (required)
			fail("--nccl: no CUDA device");
		if (comm_rank(w) == 0)
			printf("comm_check: skipped: no CUDA device\n");
		return 0;
	}
	int device = comm_local_rank(w) % ndev;
	comm *g;
	OK(comm_nccl_new(w, device, "gpu", &g));
	if (strcmp(comm_backend(g), "nccl"))
		fail("comm_nccl_new gave backend %s", comm_backend(g));
	check_ops(g, true, true);
	check_splits(g, true, rows, cols);
	check_dup(g, true, device);
	char **v = NULL;
	if (comm_gather_text(g, "x", 0, &v) != TITAN_EUSAGE || v)
		fail("gather_text on nccl did not refuse");
	comm_free(g);
	return 0;
#else
	comm *g = NULL;
	if (comm_nccl_new(w, 0, "gpu", &g) != TITAN_EUSAGE || g)
		fail("comm_nccl_new in a build without CUDA did not refuse");
	if (required)
		fail("--nccl: %s", titan_errmsg());
	if (comm_rank(w) == 0)
		printf("comm_check: skipped: %s\n", titan_errmsg());
	return 0;
#endif
}

static void usage(void)
{
	fprintf(stderr, "usage: comm_check [--mesh RxC] [--nccl] [--hang-rank R --timeout S]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int hang_rank = -1, rows = 0, cols = 0;
	double timeout = 60;
	bool use_nccl = false;
	comm *w;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--hang-rank") && i + 1 < argc)
			hang_rank = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			timeout = atof(argv[++i]);
		else if (!strcmp(argv[i], "--mesh") && i + 1 < argc) {
			if (sscanf(argv[++i], "%dx%d", &rows, &cols) != 2 || rows < 1 || cols < 1)
				usage();
		} else if (!strcmp(argv[i], "--nccl"))
			use_nccl = true;
		else
			usage();
	}
	if (comm_world(&w, timeout)) {
		fprintf(stderr, "comm_check: %s\n", titan_errmsg());
		return 1;
	}
	the_world = w;
	if (hang_rank >= 0)
		return hang(w, hang_rank, timeout);

	int size = comm_size(w);
	if (!rows) {
		cols = size % 2 ? size : 2;
		rows = size / cols;
	}
	if (rows * cols != size)
		fail("--mesh %dx%d does not make %d ranks", rows, cols, size);
	if (strcmp(comm_backend(w), comm_launched() ? "mpi" : "self"))
		fail("backend %s, launched %d", comm_backend(w), comm_launched());

	check_local_rank(w);
	if (use_nccl) {
		nccl(w, rows, cols);
	} else {
		check_ops(w, false, true);
		check_splits(w, false, rows, cols);
		check_dup(w, false, 0);
		check_gather_text(w);
		if (size > 1 && !(comm_busy_seconds(w) > 0))
			fail("busy seconds %g after the checks", comm_busy_seconds(w));
	}
	OK(comm_barrier(w));
	if (comm_rank(w) == 0)
		printf("ok\n");
	fflush(stdout);
	comm_free(w);
	return 0;
}
