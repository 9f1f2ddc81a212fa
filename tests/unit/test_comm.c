/* test_comm.c - the self backend (one rank): every operation of comm.h,
 * blocking and non-blocking, split and dup, gather_text, the timeout
 * setter, names and the argument checks.  The MPI backend runs under
 * mpirun in tests/comm.bats (tests/tools/comm_check.c). */
#include "core/base.h"
#include "dist/comm.h"
#include "check.h"

#include <stdlib.h>

/* comm_world is self only without a launcher; a test run under mpirun
 * would get MPI, which this test does not mean to check. */
static int world(comm **c)
{
	unsetenv("OMPI_COMM_WORLD_SIZE");
	unsetenv("PMIX_RANK");
	unsetenv("PMI_RANK");
	return comm_world(c, 5);
}

static void test_names(void)
{
	comm *c;
	REQUIRE(world(&c) == 0, "%s", titan_errmsg());
	CHECK(!comm_launched(), "launched without a launcher");
	CHECK(!strcmp(comm_name(c), "world"), "name %s", comm_name(c));
	CHECK(!strcmp(comm_backend(c), "self"), "backend %s", comm_backend(c));
	CHECK(comm_rank(c) == 0 && comm_size(c) == 1, "rank %d size %d", comm_rank(c),
	      comm_size(c));
	CHECK(comm_world_rank(c) == 0 && comm_local_rank(c) == 0, "world %d local %d",
	      comm_world_rank(c), comm_local_rank(c));
	CHECK(comm_concurrent(c), "self is always concurrent");
	CHECK(comm_busy_seconds(c) >= 0, "busy %g", comm_busy_seconds(c));
	comm_set_timeout(c, 0.5);
	comm_set_timeout(c, -1);
	comm_abort(c, 3); /* returns for self */
	setenv("PMI_RANK", "0", 1);
	CHECK(comm_launched(), "PMI_RANK not seen");
	unsetenv("PMI_RANK");
	comm_free(c);
	comm_free(NULL);
}

static void test_collectives(void)
{
	comm *c;
	comm_req *r;
	REQUIRE(world(&c) == 0, "%s", titan_errmsg());
	for (int nb = 0; nb < 2; nb++) {
		float f[5] = { 1, -2, 3.5f, 4, 5 };
		int64_t l[3] = { 7, -8, INT64_MAX };
		double d[2] = { 0.25, -1e300 }, dr[2] = { 0, 0 };
		int32_t i[4] = { 1, 2, 3, 4 }, ir[4] = { 0 };
		uint8_t u[3] = { 1, 2, 255 };

		if (nb) {
			CHECK(comm_iall_reduce(c, f, 5, COMM_F32, COMM_SUM, &r) == 0, "%s",
			      titan_errmsg());
			CHECK(comm_wait(r) == 0, "%s", titan_errmsg());
			CHECK(comm_iall_reduce(c, l, 3, COMM_I64, COMM_MAX, &r) == 0, "%s",
			      titan_errmsg());
			CHECK(comm_wait(r) == 0, "%s", titan_errmsg());
			CHECK(comm_ireduce_scatter(c, d, dr, 2, COMM_F64, COMM_MIN, &r) == 0, "%s",
			      titan_errmsg());
			CHECK(comm_wait(r) == 0, "%s", titan_errmsg());
			CHECK(comm_iall_gather(c, i, ir, 4, COMM_I32, &r) == 0, "%s", titan_errmsg());
			bool done = false;
			CHECK(comm_test(&r, &done) == 0 && done && !r, "test of a done req");
			CHECK(comm_ibroadcast(c, u, 3, COMM_U8, 0, &r) == 0, "%s", titan_errmsg());
			CHECK(comm_wait(r) == 0, "%s", titan_errmsg());
			CHECK(comm_ibarrier(c, &r) == 0 && comm_wait(r) == 0, "%s", titan_errmsg());
		} else {
			CHECK(comm_all_reduce(c, f, 5, COMM_F32, COMM_SUM) == 0, "%s", titan_errmsg());
			CHECK(comm_all_reduce(c, l, 3, COMM_I64, COMM_MAX) == 0, "%s", titan_errmsg());
			CHECK(comm_reduce_scatter(c, d, dr, 2, COMM_F64, COMM_MIN) == 0, "%s",
			      titan_errmsg());
			CHECK(comm_all_gather(c, i, ir, 4, COMM_I32) == 0, "%s", titan_errmsg());
			CHECK(comm_broadcast(c, u, 3, COMM_U8, 0) == 0, "%s", titan_errmsg());
			CHECK(comm_barrier(c) == 0, "%s", titan_errmsg());
		}
		CHECK(f[0] == 1 && f[1] == -2 && f[2] == 3.5f && f[4] == 5, "all_reduce changed f");
		CHECK(l[0] == 7 && l[1] == -8 && l[2] == INT64_MAX, "all_reduce changed l");
		CHECK(dr[0] == 0.25 && dr[1] == -1e300, "reduce_scatter gave %g %g", dr[0], dr[1]);
		CHECK(!memcmp(i, ir, sizeof i), "all_gather did not copy");
		CHECK(u[0] == 1 && u[2] == 255, "broadcast changed u");
	}
	/* nothing to move is fine, and a NULL request is done */
	CHECK(comm_all_reduce(c, NULL, 0, COMM_F32, COMM_SUM) == 0, "%s", titan_errmsg());
	CHECK(comm_all_gather(c, NULL, NULL, 0, COMM_F32) == 0, "%s", titan_errmsg());
	CHECK(comm_wait(NULL) == 0, "wait on NULL");
	r = NULL;
	bool done = false;
	CHECK(comm_test(&r, &done) == 0 && done, "test on NULL");
	comm_free(c);
}

static void test_errors(void)
{
	comm *c;
	comm_req *r = (comm_req *)&r;
	float f[4] = { 0 };
	REQUIRE(world(&c) == 0, "%s", titan_errmsg());
	comm_set_timeout(c, 2);

	CHECK(comm_send(c, f, 1, COMM_F32, 0, 0) == TITAN_EUSAGE, "send to self");
	CHECK(strstr(titan_errmsg(), "no peer"), "%s", titan_errmsg());
	CHECK(strstr(titan_errmsg(), "comm 'world' (rank 0 of 1)"), "%s", titan_errmsg());
	CHECK(comm_irecv(c, f, 1, COMM_F32, 0, 0, &r) == TITAN_EUSAGE && !r, "recv from self");
	CHECK(comm_send(c, f, 1, COMM_F32, 1, 0) == TITAN_EUSAGE, "send to rank 1");
	CHECK(strstr(titan_errmsg(), "peer 1 is not a rank"), "%s", titan_errmsg());
	CHECK(comm_send(c, f, 1, COMM_F32, 0, -1) == TITAN_EUSAGE, "negative tag");
	CHECK(strstr(titan_errmsg(), "tag -1"), "%s", titan_errmsg());
	CHECK(comm_broadcast(c, f, 1, COMM_F32, 1) == TITAN_EUSAGE, "root 1");
	CHECK(strstr(titan_errmsg(), "broadcast: root 1"), "%s", titan_errmsg());
	CHECK(comm_all_reduce(c, f, 1, (comm_dtype)42, COMM_SUM) == TITAN_EUSAGE, "dtype");
	CHECK(comm_all_reduce(c, f, 1, COMM_F32, (comm_op)42) == TITAN_EUSAGE, "op");
	CHECK(comm_all_reduce(c, NULL, 3, COMM_F32, COMM_SUM) == TITAN_EUSAGE, "NULL buffer");
	CHECK(comm_all_gather(c, f, f, 2, COMM_F32) == TITAN_EUSAGE, "in-place all_gather");
	CHECK(strstr(titan_errmsg(), "distinct"), "%s", titan_errmsg());
	CHECK(comm_reduce_scatter(c, f, f, 2, COMM_F32, COMM_SUM) == TITAN_EUSAGE,
	      "in-place reduce_scatter");
	CHECK(comm_all_gather(c, f, f + 1, SIZE_MAX / 2, COMM_F64) == TITAN_ERANGE, "overflow");
	char **v = (char **)&v;
	CHECK(comm_gather_text(c, "x", 1, &v) == TITAN_EUSAGE && !v, "gather_text root 1");
	comm *n = (comm *)&n;
	CHECK(comm_nccl_new(c, 0, "gpu", &n) != 0 && !n, "nccl on self");
	CHECK(titan_errmsg()[0], "no message from comm_nccl_new");
	/* the communicator still works after refused calls */
	CHECK(comm_barrier(c) == 0, "%s", titan_errmsg());
	comm_free(c);
}

static void test_split_dup(void)
{
	comm *c, *s = NULL, *d = NULL, *none = (comm *)&none;
	float f[2] = { 1, 2 }, g[2];
	REQUIRE(world(&c) == 0, "%s", titan_errmsg());
	comm_set_timeout(c, 7);
	CHECK(comm_split(c, 3, 9, "dp_shard", &s) == 0 && s, "%s", titan_errmsg());
	CHECK(comm_split(c, -1, 0, "nobody", &none) == 0 && !none, "color -1 gave a comm");
	CHECK(comm_dup(c, "ckpt", &d) == 0 && d, "%s", titan_errmsg());
	if (s && d) {
		CHECK(!strcmp(comm_name(s), "dp_shard") && !strcmp(comm_name(d), "ckpt"),
		      "names %s %s", comm_name(s), comm_name(d));
		CHECK(comm_size(s) == 1 && comm_rank(d) == 0, "split/dup shape");
		CHECK(!strcmp(comm_backend(s), "self"), "backend %s", comm_backend(s));
		CHECK(comm_all_gather(s, f, g, 2, COMM_F32) == 0 && g[1] == 2, "%s",
		      titan_errmsg());
		CHECK(comm_all_reduce(d, f, 2, COMM_F32, COMM_MAX) == 0, "%s", titan_errmsg());
		/* messages name the communicator they are about */
		CHECK(comm_send(s, f, 1, COMM_F32, 0, 0) != 0 &&
		      strstr(titan_errmsg(), "comm 'dp_shard'"), "%s", titan_errmsg());
		comm *ss = NULL;
		CHECK(comm_split(s, 0, 0, "inner", &ss) == 0 && ss, "%s", titan_errmsg());
		comm_free(ss);
	}
	comm_free(d);
	comm_free(s);
	comm_free(c);
}

static void test_gather_text(void)
{
	comm *c;
	char **v = NULL;
	REQUIRE(world(&c) == 0, "%s", titan_errmsg());
	CHECK(comm_gather_text(c, "slice 0: [0, 4096)", 0, &v) == 0 && v, "%s", titan_errmsg());
	if (v) {
		CHECK(!strcmp(v[0], "slice 0: [0, 4096)"), "got '%s'", v[0]);
		free(v[0]);
		free(v);
	}
	v = NULL;
	CHECK(comm_gather_text(c, "", 0, &v) == 0 && v && v[0] && !v[0][0], "empty text");
	if (v) {
		free(v[0]);
		free(v);
	}
	comm_free(c);
}

int main(void)
{
	RUN(test_names);
	RUN(test_collectives);
	RUN(test_errors);
	RUN(test_split_dup);
	RUN(test_gather_text);
	return check_done();
}
