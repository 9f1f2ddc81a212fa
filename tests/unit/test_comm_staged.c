/* test_comm_staged.c - the staged backend (comm_staged_new) over the self
 * backend: every operation, blocking and non-blocking, moves its bytes
 * between device buffers and host staging only through the device's
 * download and upload; zero counts, refused calls and failing copies; and
 * the fenced CPU device, whose memory host code cannot touch directly.
 * Several ranks run in the trainer's tests under mpirun. */
#include "core/base.h"
#include "dist/comm.h"
#include "check.h"
#include "kernels.h"

#include <stdlib.h>

static int world(comm **c)
{
	unsetenv("OMPI_COMM_WORLD_SIZE");
	unsetenv("PMIX_RANK");
	unsetenv("PMI_RANK");
	return comm_world(c, 5);
}

/* ---- a fake device: malloc'd "device" buffers, copies that count ---- */

#define MAX_DEV 16

static struct fake {
	struct { char *p; size_t bytes; } buf[MAX_DEV];
	int nbuf;
	int downloads, uploads;
	size_t down_bytes, up_bytes;
	const void *last_src;  /* the device buffer last downloaded */
	void *last_dst;        /* the device buffer last uploaded into */
	int misuse;            /* a copy whose device side is not device memory */
	bool fail_download, fail_upload;
} fk;

static void *dev_alloc(size_t bytes)
{
	if (fk.nbuf == MAX_DEV)
		return NULL;
	char *p = calloc(1, bytes ? bytes : 1);
	if (p) {
		fk.buf[fk.nbuf].p = p;
		fk.buf[fk.nbuf++].bytes = bytes;
	}
	return p;
}

static void dev_free_all(void)
{
	for (int i = 0; i < fk.nbuf; i++)
		free(fk.buf[i].p);
	fk.nbuf = 0;
}

static bool on_device(const void *p, size_t bytes)
{
	const char *q = p;
	for (int i = 0; i < fk.nbuf; i++)
		if (q >= fk.buf[i].p && q + bytes <= fk.buf[i].p + fk.buf[i].bytes)
			return true;
	return false;
}

static int fake_download(void *dst, const void *src, size_t bytes)
{
	if (fk.fail_download)
		return titan_err(TITAN_EIO, "fake device: download failed");
	if (!on_device(src, bytes) || on_device(dst, 1))
		fk.misuse++;
	memcpy(dst, src, bytes);
	fk.downloads++;
	fk.down_bytes += bytes;
	fk.last_src = src;
	return 0;
}

static int fake_upload(void *dst, const void *src, size_t bytes)
{
	if (fk.fail_upload)
		return titan_err(TITAN_EIO, "fake device: upload failed");
	if (!on_device(dst, bytes) || on_device(src, 1))
		fk.misuse++;
	memcpy(dst, src, bytes);
	fk.uploads++;
	fk.up_bytes += bytes;
	fk.last_dst = dst;
	return 0;
}

static const comm_device fake_dev = { .download = fake_download, .upload = fake_upload };

static void counts_reset(void)
{
	fk.downloads = fk.uploads = 0;
	fk.down_bytes = fk.up_bytes = 0;
	fk.last_src = fk.last_dst = NULL;
	fk.misuse = 0;
}

/* ---- tests ---- */

static void test_new(void)
{
	comm *w, *c = NULL, *x = (comm *)&x;
	REQUIRE(world(&w) == 0, "%s", titan_errmsg());
	comm_set_timeout(w, 9);
	REQUIRE(comm_staged_new(w, &fake_dev, "dp", &c) == 0 && c, "%s", titan_errmsg());
	CHECK(!strcmp(comm_backend(c), "staged"), "backend %s", comm_backend(c));
	CHECK(!strcmp(comm_name(c), "dp"), "name %s", comm_name(c));
	CHECK(comm_rank(c) == 0 && comm_size(c) == 1, "rank %d size %d", comm_rank(c),
	      comm_size(c));
	CHECK(comm_world_rank(c) == 0 && comm_local_rank(c) == 0 && comm_concurrent(c),
	      "fields not those of the group");
	CHECK(comm_busy_seconds(c) >= 0, "busy %g", comm_busy_seconds(c));

	/* neither split nor dup nor gather_text (device buffers) */
	CHECK(comm_split(c, 0, 0, "s", &x) == TITAN_EUSAGE && !x, "split allowed");
	CHECK(strstr(titan_errmsg(), "staged"), "%s", titan_errmsg());
	x = (comm *)&x;
	CHECK(comm_dup(c, "d", &x) == TITAN_EUSAGE && !x, "dup allowed");
	char **v = (char **)&v;
	CHECK(comm_gather_text(c, "x", 0, &v) == TITAN_EUSAGE && !v, "gather_text allowed");
	/* staging needs a host group */
	x = (comm *)&x;
	CHECK(comm_staged_new(c, &fake_dev, "twice", &x) == TITAN_EUSAGE && !x,
	      "staged over staged");
	CHECK(strstr(titan_errmsg(), "host communicator"), "%s", titan_errmsg());
	comm_abort(c, 3); /* forwards to self, which returns */

	x = (comm *)&x;
	CHECK(comm_staged_new(NULL, &fake_dev, "n", &x) == TITAN_EUSAGE && !x, "no group");
	x = (comm *)&x;
	CHECK(comm_staged_new(w, NULL, "n", &x) == TITAN_EUSAGE && !x, "no device");
	comm_device half = { .download = fake_download };
	x = (comm *)&x;
	CHECK(comm_staged_new(w, &half, "n", &x) == TITAN_EUSAGE && !x, "no upload");
	comm_free(c);
	/* the group works after its staged communicator is gone */
	CHECK(comm_barrier(w) == 0, "%s", titan_errmsg());
	comm_free(w);
}

static void test_collectives(void)
{
	comm *w, *c = NULL;
	comm_req *r;
	REQUIRE(world(&w) == 0, "%s", titan_errmsg());
	REQUIRE(comm_staged_new(w, &fake_dev, "dp", &c) == 0, "%s", titan_errmsg());
	for (int nb = 0; nb < 2; nb++) {
		float *f = dev_alloc(5 * sizeof *f);
		double *d = dev_alloc(2 * sizeof *d), *dr = dev_alloc(2 * sizeof *dr);
		int32_t *i = dev_alloc(4 * sizeof *i), *ir = dev_alloc(4 * sizeof *ir);
		uint8_t *u = dev_alloc(3);
		REQUIRE(f && d && dr && i && ir && u, "out of memory");
		const float f0[5] = { 1, -2, 3.5f, 4, 5 };
		memcpy(f, f0, sizeof f0);
		d[0] = 0.25;
		d[1] = -1e300;
		for (int k = 0; k < 4; k++)
			i[k] = 10 * k - 7;
		u[0] = 1;
		u[1] = 2;
		u[2] = 255;

		counts_reset();
		if (nb) {
			r = (comm_req *)&r;
			CHECK(comm_iall_reduce(c, f, 5, COMM_F32, COMM_SUM, &r) == 0 && !r, "%s",
			      titan_errmsg());
			CHECK(comm_wait(r) == 0, "%s", titan_errmsg());
		} else {
			CHECK(comm_all_reduce(c, f, 5, COMM_F32, COMM_SUM) == 0, "%s",
			      titan_errmsg());
		}
		CHECK(!memcmp(f, f0, sizeof f0), "all_reduce changed f");
		CHECK(fk.downloads == 1 && fk.uploads == 1 && fk.down_bytes == 20 &&
		      fk.up_bytes == 20, "all_reduce: %d downloads (%zu bytes), %d uploads "
		      "(%zu bytes)", fk.downloads, fk.down_bytes, fk.uploads, fk.up_bytes);
		CHECK(fk.last_src == f && fk.last_dst == f, "all_reduce staged the wrong buffer");

		counts_reset();
		if (nb) {
			CHECK(comm_ireduce_scatter(c, d, dr, 2, COMM_F64, COMM_MIN, &r) == 0 && !r,
			      "%s", titan_errmsg());
		} else {
			CHECK(comm_reduce_scatter(c, d, dr, 2, COMM_F64, COMM_MIN) == 0, "%s",
			      titan_errmsg());
		}
		CHECK(dr[0] == 0.25 && dr[1] == -1e300, "reduce_scatter gave %g %g", dr[0], dr[1]);
		CHECK(fk.downloads == 1 && fk.uploads == 1 && fk.down_bytes == 16 &&
		      fk.up_bytes == 16 && fk.last_src == d && fk.last_dst == dr,
		      "reduce_scatter: %d downloads, %d uploads", fk.downloads, fk.uploads);

		counts_reset();
		if (nb) {
			CHECK(comm_iall_gather(c, i, ir, 4, COMM_I32, &r) == 0 && !r, "%s",
			      titan_errmsg());
			bool done = false;
			CHECK(comm_test(&r, &done) == 0 && done && !r, "test of a done req");
		} else {
			CHECK(comm_all_gather(c, i, ir, 4, COMM_I32) == 0, "%s", titan_errmsg());
		}
		CHECK(!memcmp(i, ir, 4 * sizeof *i), "all_gather did not deliver");
		CHECK(fk.downloads == 1 && fk.uploads == 1 && fk.down_bytes == 16 &&
		      fk.up_bytes == 16 && fk.last_src == i && fk.last_dst == ir,
		      "all_gather: %d downloads, %d uploads", fk.downloads, fk.uploads);

		counts_reset();
		if (nb) {
			CHECK(comm_ibroadcast(c, u, 3, COMM_U8, 0, &r) == 0 && !r, "%s",
			      titan_errmsg());
		} else {
			CHECK(comm_broadcast(c, u, 3, COMM_U8, 0) == 0, "%s", titan_errmsg());
		}
		CHECK(u[0] == 1 && u[1] == 2 && u[2] == 255, "broadcast changed u");
		CHECK(fk.downloads == 1 && fk.uploads == 1 && fk.down_bytes == 3 &&
		      fk.up_bytes == 3 && fk.last_src == u && fk.last_dst == u,
		      "broadcast: %d downloads, %d uploads", fk.downloads, fk.uploads);

		counts_reset();
		if (nb) {
			CHECK(comm_ibarrier(c, &r) == 0 && !r && comm_wait(r) == 0, "%s",
			      titan_errmsg());
		} else {
			CHECK(comm_barrier(c) == 0, "%s", titan_errmsg());
		}
		CHECK(fk.downloads == 0 && fk.uploads == 0, "barrier copied");
		CHECK(fk.misuse == 0, "%d copies with a host pointer as the device side",
		      fk.misuse);
		dev_free_all();
	}
	comm_free(c);
	comm_free(w);
}

/* Every operation with nothing to move: no copies, no buffers needed. */
static void test_zero(void)
{
	comm *w, *c = NULL;
	comm_req *r;
	REQUIRE(world(&w) == 0, "%s", titan_errmsg());
	REQUIRE(comm_staged_new(w, &fake_dev, "dp", &c) == 0, "%s", titan_errmsg());
	counts_reset();
	CHECK(comm_all_reduce(c, NULL, 0, COMM_F32, COMM_SUM) == 0, "%s", titan_errmsg());
	CHECK(comm_reduce_scatter(c, NULL, NULL, 0, COMM_F32, COMM_SUM) == 0, "%s",
	      titan_errmsg());
	CHECK(comm_all_gather(c, NULL, NULL, 0, COMM_I64) == 0, "%s", titan_errmsg());
	CHECK(comm_broadcast(c, NULL, 0, COMM_U8, 0) == 0, "%s", titan_errmsg());
	CHECK(comm_iall_gather(c, NULL, NULL, 0, COMM_F64, &r) == 0 && !r, "%s",
	      titan_errmsg());
	CHECK(fk.downloads == 0 && fk.uploads == 0, "%d downloads, %d uploads of nothing",
	      fk.downloads, fk.uploads);
	comm_free(c);
	comm_free(w);
}

static void test_errors(void)
{
	comm *w, *c = NULL;
	comm_req *r = (comm_req *)&r;
	REQUIRE(world(&w) == 0, "%s", titan_errmsg());
	REQUIRE(comm_staged_new(w, &fake_dev, "dp", &c) == 0, "%s", titan_errmsg());
	float *f = dev_alloc(4 * sizeof *f), *g = dev_alloc(4 * sizeof *g);
	REQUIRE(f && g, "out of memory");

	/* comm.c's checks run before anything is staged */
	counts_reset();
	CHECK(comm_broadcast(c, f, 1, COMM_F32, 1) == TITAN_EUSAGE, "root 1");
	CHECK(strstr(titan_errmsg(), "comm 'dp'"), "%s", titan_errmsg());
	CHECK(comm_all_gather(c, f, f, 2, COMM_F32) == TITAN_EUSAGE, "in-place all_gather");
	CHECK(comm_all_reduce(c, NULL, 3, COMM_F32, COMM_SUM) == TITAN_EUSAGE, "NULL buffer");
	CHECK(comm_send(c, f, 1, COMM_F32, 0, -1) == TITAN_EUSAGE, "negative tag");
	CHECK(fk.downloads == 0, "refused calls downloaded");

	/* the host backend refuses: the staging is freed (ASan checks) */
	CHECK(comm_isend(c, f, 4, COMM_F32, 0, 0, &r) == TITAN_EUSAGE && !r, "send to self");
	CHECK(strstr(titan_errmsg(), "no peer"), "%s", titan_errmsg());
	r = (comm_req *)&r;
	CHECK(comm_irecv(c, g, 4, COMM_F32, 0, 0, &r) == TITAN_EUSAGE && !r, "recv from self");
	CHECK(fk.uploads == 0, "a failed recv uploaded");

	/* failing copies are reported with the communicator and operation */
	fk.fail_download = true;
	CHECK(comm_all_reduce(c, f, 4, COMM_F32, COMM_SUM) == TITAN_EIO, "download failure");
	CHECK(strstr(titan_errmsg(), "comm 'dp'") && strstr(titan_errmsg(), "all_reduce") &&
	      strstr(titan_errmsg(), "download failed"), "%s", titan_errmsg());
	fk.fail_download = false;
	fk.fail_upload = true;
	r = (comm_req *)&r;
	CHECK(comm_iall_gather(c, f, g, 4, COMM_F32, &r) == TITAN_EIO && !r, "upload failure");
	CHECK(strstr(titan_errmsg(), "all_gather") && strstr(titan_errmsg(), "upload failed"),
	      "%s", titan_errmsg());
	fk.fail_upload = false;

	/* still usable */
	f[0] = 42;
	CHECK(comm_all_gather(c, f, g, 4, COMM_F32) == 0 && g[0] == 42, "%s", titan_errmsg());
	dev_free_all();
	comm_free(c);
	comm_free(w);
}

/* The fenced device: a staged operation that read or wrote device memory
 * on the host would die with SIGSEGV here. */
static void test_fenced(void)
{
	const kernel_ops *k = kernels_fenced_ops();
	comm_device fdev = { .download = k->download, .upload = k->upload };
	enum { N = 37 };
	float h[N], out[N];
	float *a = NULL, *b = NULL;
	comm *w, *c = NULL;
	comm_req *r;

	REQUIRE(world(&w) == 0, "%s", titan_errmsg());
	REQUIRE(comm_staged_new(w, &fdev, "fenced", &c) == 0, "%s", titan_errmsg());
	REQUIRE(k->alloc((void **)&a, N * sizeof *a) == 0 &&
		k->alloc((void **)&b, N * sizeof *b) == 0, "%s", titan_errmsg());
	for (int i = 0; i < N; i++)
		h[i] = (float)i * 0.5f - 3;
	CHECK(k->upload(a, h, sizeof h) == 0, "%s", titan_errmsg());

	CHECK(comm_all_reduce(c, a, N, COMM_F32, COMM_MAX) == 0, "%s", titan_errmsg());
	CHECK(comm_broadcast(c, a, N, COMM_F32, 0) == 0, "%s", titan_errmsg());
	CHECK(comm_iall_reduce(c, a, N, COMM_F32, COMM_SUM, &r) == 0 && comm_wait(r) == 0,
	      "%s", titan_errmsg());
	memset(out, 0, sizeof out);
	CHECK(k->download(out, a, sizeof out) == 0 && !memcmp(out, h, sizeof h),
	      "all_reduce/broadcast changed the data");

	CHECK(comm_all_gather(c, a, b, N, COMM_F32) == 0, "%s", titan_errmsg());
	memset(out, 0, sizeof out);
	CHECK(k->download(out, b, sizeof out) == 0 && !memcmp(out, h, sizeof h),
	      "all_gather did not deliver");
	k->zero(b, N * sizeof *b);
	CHECK(comm_reduce_scatter(c, a, b, N, COMM_F32, COMM_SUM) == 0, "%s", titan_errmsg());
	memset(out, 0, sizeof out);
	CHECK(k->download(out, b, sizeof out) == 0 && !memcmp(out, h, sizeof h),
	      "reduce_scatter did not deliver");
	CHECK(comm_barrier(c) == 0, "%s", titan_errmsg());
	CHECK(k->sync() == 0, "%s", titan_errmsg());
	k->free(a, N * sizeof *a);
	k->free(b, N * sizeof *b);
	comm_free(c);
	comm_free(w);
}

int main(void)
{
	RUN(test_new);
	RUN(test_collectives);
	RUN(test_zero);
	RUN(test_errors);
	RUN(test_fenced);
	return check_done();
}
