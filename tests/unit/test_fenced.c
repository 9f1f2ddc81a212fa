/* test_fenced.c - the fenced CPU device (kernels_fenced_ops): every op gives
 * the CPU backend's bits, device memory is zeroed, copied and moved as the
 * op table says, and host code that touches it outside an op dies with
 * SIGSEGV (checked in a forked child). */
#include "core/base.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "kernels.h"

/* ASan catches SIGSEGV itself unless the program takes the signal back;
 * the child does, but should a runtime refuse, the child still dies and
 * that is all such a build can tell. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* xorshift64*, enough for test data */
static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* Uniform in [-1, 1). */
static float frand(void)
{
	return (float)((double)(rnd() >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* Small odd shapes, so vector remainders run too. */
enum { N = 5, IC = 7, OC = 9, C = 13, HEADS = 3, MAXPOS = 16, B = 2, T = 5,
       H = 4, KV = 2, D = 8, V = 11, NV = 37 };

#define MAXB 12

/* How a buffer of 4-byte elements starts: random floats, zeros, random
 * integers below arg, or element i holding i % arg. */
enum fill { F, Z, I, MOD };

struct buf_spec {
	enum fill fill;
	size_t n;
	int arg;
};

/* One case runs a few ops over its buffers (b[i] as in its specs) and
 * returns what an op returns on the host (sumsq), or 0. */
struct op_case {
	const char *name;
	double (*run)(const kernel_ops *o, void **b);
	struct buf_spec bufs[MAXB];
};

#define FL(n) { F, (n), 0 }
#define ZR(n) { Z, (n), 0 }
#define ID(n, below) { I, (n), (below) }
#define MD(n, mod) { MOD, (n), (mod) }

static double run_matmul(const kernel_ops *o, void **b)
{
	o->matmul_forward(b[0], b[1], b[2], N, IC, OC, false);
	o->matmul_forward(b[0], b[1], b[2], N, IC, OC, true);
	o->matmul_backward(b[3], b[4], b[0], b[1], b[2], N, IC, OC, false);
	o->matmul_backward(b[3], b[4], b[0], b[1], b[2], N, IC, OC, true);
	return 0;
}

static double run_rmsnorm(const kernel_ops *o, void **b)
{
	o->rmsnorm_forward(b[0], b[1], b[2], b[3], N, C, 1e-5f);
	o->rmsnorm_backward(b[4], b[5], b[6], b[2], b[3], b[1], N, C);
	return 0;
}

static double run_rope(const kernel_ops *o, void **b)
{
	o->rope_forward(b[0], b[1], b[2], b[3], N, HEADS, D);
	o->rope_backward(b[4], b[1], b[2], b[3], N, HEADS, D);
	return 0;
}

static double run_attention(const kernel_ops *o, void **b)
{
	o->attention_forward(b[0], b[1], b[2], b[3], b[4], b[5], b[6], B, T, T, H, KV, D);
	o->attention_backward(b[7], b[8], b[9], b[10], b[2], b[3], b[4], b[0], b[1],
			      b[5], b[6], B, T, T, H, KV, D);
	return 0;
}

static double run_swiglu(const kernel_ops *o, void **b)
{
	o->swiglu_forward(b[0], b[1], b[2], NV);
	o->swiglu_backward(b[3], b[4], b[5], b[1], b[2], NV);
	return 0;
}

static double run_embedding(const kernel_ops *o, void **b)
{
	o->embedding_forward(b[0], b[1], b[2], N, C);
	o->embedding_backward(b[3], b[4], b[1], N, C);
	return 0;
}

static double run_cross_entropy(const kernel_ops *o, void **b)
{
	o->cross_entropy(b[0], b[1], b[2], N, V, 0.0f);
	o->cross_entropy(b[3], b[4], b[2], N, V, 0.25f);
	return 0;
}

static double run_vector(const kernel_ops *o, void **b)
{
	o->add_inplace(b[0], b[1], NV);
	o->add_inplace(b[0], b[0], NV);
	return o->sumsq(b[0], NV);
}

static double run_adamw(const kernel_ops *o, void **b)
{
	for (long step = 1; step <= 3; step++)
		o->adamw(&(kernel_adamw_tensor){ b[0], b[1], b[2], b[3], NV, 0.1, NULL }, 1,
			 1e-2, 0.9, 0.95, 1e-8, step, step == 2 ? 0.5f : 1.0f);
	return 0;
}

static const struct op_case cases[] = {
	{ "matmul", run_matmul,
	  { FL(N * OC), FL(N * IC), FL(OC * IC), FL(N * IC), FL(OC * IC) } },
	{ "rmsnorm", run_rmsnorm,
	  { FL(N * C), ZR(N), FL(N * C), FL(C), FL(N * C), FL(C),
	    FL(N * C) } },
	{ "rope", run_rope,
	  { FL(N * HEADS * D), ID(N, MAXPOS), FL(MAXPOS * D / 2),
	    FL(MAXPOS * D / 2), FL(N * HEADS * D) } },
	{ "attention", run_attention,
	  { ZR(B * T * H * D), ZR(B * H * T), FL(B * T * H * D), FL(B * T * KV * D),
	    FL(B * T * KV * D), ZR(B * T), MD(B * T, T), FL(B * T * H * D),
	    FL(B * T * KV * D), FL(B * T * KV * D), FL(B * T * H * D) } },
	{ "swiglu", run_swiglu,
	  { FL(NV), FL(NV), FL(NV), FL(NV), FL(NV), FL(NV) } },
	{ "embedding", run_embedding,
	  { FL(N * C), ID(N, V), FL(V * C), FL(V * C), FL(N * C) } },
	{ "cross_entropy", run_cross_entropy,
	  { FL(N), FL(N * V), ID(N, V), FL(N), FL(N * V) } },
	{ "add_inplace+scale+sumsq", run_vector, { FL(NV), FL(NV) } },
	{ "adamw", run_adamw, { FL(NV), FL(NV), ZR(NV), ZR(NV) } },
};

static void fill(uint32_t *x, const struct buf_spec *s)
{
	for (size_t i = 0; i < s->n; i++) {
		float f;

		switch (s->fill) {
		case F:
			f = frand();
			memcpy(&x[i], &f, sizeof f);
			break;
		case Z:
			x[i] = 0;
			break;
		case I:
			x[i] = (uint32_t)(rnd() % (uint64_t)s->arg);
			break;
		case MOD:
			x[i] = (uint32_t)(i % (size_t)s->arg);
			break;
		}
	}
}

/* Each case on the CPU backend's memory and on fenced memory from the same
 * inputs: every buffer and the returned value must match bit for bit. */
static void test_ops_match_cpu(void)
{
	const kernel_ops *fo = kernels_fenced_ops();
	const kernel_ops *co = &kernels_cpu;

	for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
		const struct op_case *k = &cases[c];
		void *hb[MAXB] = { 0 }, *fb[MAXB] = { 0 }, *got[MAXB] = { 0 };
		double hr, fr;
		int nb = 0, ok = 1;

		for (; nb < MAXB && k->bufs[nb].n; nb++) {
			size_t bytes = k->bufs[nb].n * 4;

			/* the reference's memory is the CPU backend's own, 64-byte
			 * aligned like the device's, so vector loops split alike */
			ok = ok && !co->alloc(&hb[nb], bytes) && !fo->alloc(&fb[nb], bytes) &&
			     (got[nb] = malloc(bytes));
			if (!ok)
				break;
			fill(hb[nb], &k->bufs[nb]);
			ok = !fo->upload(fb[nb], hb[nb], bytes);
		}
		CHECK(ok, "%s: setting up: %s", k->name, titan_errmsg());
		if (ok) {
			hr = k->run(co, hb);
			fr = k->run(fo, fb);
			CHECK(fo->sync() == 0, "%s: sync: %s", k->name, titan_errmsg());
			CHECK(memcmp(&hr, &fr, sizeof hr) == 0, "%s: returned %.17g on the fenced "
			      "device, %.17g on the host", k->name, fr, hr);
			for (int i = 0; i < nb; i++) {
				size_t bytes = k->bufs[i].n * 4;

				CHECK(fo->download(got[i], fb[i], bytes) == 0, "%s: download: %s",
				      k->name, titan_errmsg());
				CHECK(memcmp(got[i], hb[i], bytes) == 0,
				      "%s: buffer %d differs from the CPU backend's", k->name, i);
			}
		}
		for (int i = 0; i < MAXB; i++) {
			size_t bytes = k->bufs[i].n * 4;

			co->free(hb[i], bytes);
			fo->free(fb[i], bytes);
			free(got[i]);
		}
	}
}

enum access { READ, WRITE, DOWNLOAD };

/* What becomes of a child that touches p[i] from the host. */
static int child_touch(float *p, size_t i, enum access how)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	struct rlimit no_core = { 0, 0 };
	int status = 0;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		volatile float *vp = p;
		float x = 0;

		sigemptyset(&sa.sa_mask);
		sigaction(SIGSEGV, &sa, NULL);
		setrlimit(RLIMIT_CORE, &no_core);
		if (how == READ)
			x = vp[i];
		else if (how == WRITE)
			vp[i] = 1.0f;
		else if (kernels_fenced_ops()->download(&x, p + i, sizeof x))
			_exit(3);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

static int died_of_segv(int status)
{
	if (status == -1)
		return 0;
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV)
		return 1;
	/* see UNDER_ASAN */
	return UNDER_ASAN && (WIFSIGNALED(status) || WEXITSTATUS(status) != 0);
}

static void test_host_access_faults(void)
{
	const kernel_ops *o = kernels_fenced_ops();
	size_t n = 1000;
	float *a = NULL, *b = NULL, host[1000];
	int st;

	for (size_t i = 0; i < n; i++)
		host[i] = frand();
	REQUIRE(o->alloc((void **)&a, n * 4) == 0, "%s", titan_errmsg());
	REQUIRE(o->alloc((void **)&b, 3 << 20) == 0, "%s", titan_errmsg());

	st = child_touch(a, 0, READ);
	CHECK(died_of_segv(st), "read after alloc: status %#x", st);
	st = child_touch(a, n - 1, WRITE);
	CHECK(died_of_segv(st), "write after alloc: status %#x", st);

	CHECK(o->upload(a, host, sizeof host) == 0, "%s", titan_errmsg());
	st = child_touch(a, 7, READ);
	CHECK(died_of_segv(st), "read after upload: status %#x", st);

	o->add_inplace(a, a, n);
	o->zero(b, 3 << 20);
	o->copy(b, a, n * 4);
	st = child_touch(a, 3, READ);
	CHECK(died_of_segv(st), "read after an op: status %#x", st);
	st = child_touch(b, (3 << 20) / 4 - 1, WRITE);
	CHECK(died_of_segv(st), "write after a copy: status %#x", st);
	(void)o->sumsq(a, n);
	st = child_touch(a, 500, WRITE);
	CHECK(died_of_segv(st), "write after sumsq: status %#x", st);

	/* the same child through download lives: the fork is not what kills */
	st = child_touch(a, 5, DOWNLOAD);
	CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "download in the child: status %#x", st);

	o->free(a, n * 4);
	o->free(b, 3 << 20);
	CHECK(o->sync() == 0, "%s", titan_errmsg());
}

static int all_zero(const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (x[i] != 0.0f)
			return 0;
	return 1;
}

/* A freed block comes back from the cache holding an op's garbage; alloc
 * must hand it out zeroed, up to the end of its size class. */
static void test_alloc_zeroes_reused(void)
{
	const kernel_ops *o = kernels_fenced_ops();
	size_t n = 250;
	float host[256], *a = NULL, *b = NULL;

	for (size_t i = 0; i < n; i++)
		host[i] = frand() + 2.0f;
	REQUIRE(o->alloc((void **)&a, n * 4) == 0, "%s", titan_errmsg());
	REQUIRE(o->upload(a, host, n * 4) == 0, "%s", titan_errmsg());
	o->add_inplace(a, a, n);
	o->download(host, a, n * 4);
	CHECK(!all_zero(host, n), "the op wrote nothing");
	o->free(a, n * 4);

	/* 1000 bytes and 1020 share the cache's 1024-byte class */
	REQUIRE(o->alloc((void **)&b, 1020) == 0, "%s", titan_errmsg());
	CHECK(b == a, "the freed block was not reused (%p, then %p)", (void *)a, (void *)b);
	memset(host, 0xff, sizeof host);
	CHECK(o->download(host, b, 1020) == 0, "%s", titan_errmsg());
	CHECK(all_zero(host, 255), "a reused block is not zeroed");
	o->free(b, 1020);
	CHECK(o->sync() == 0, "%s", titan_errmsg());
}

static void test_copies(void)
{
	const kernel_ops *o = kernels_fenced_ops();
	enum { M = 4099 };
	static float in[M], out[M];
	float *a = NULL, *b = NULL;
	kernel_mem_stats ms = { 0 };

	CHECK(strcmp(o->name, "cpu-fenced") == 0, "name %s", o->name);
	CHECK(!o->host_memory, "host_memory set");
	for (size_t i = 0; i < M; i++)
		in[i] = frand();
	REQUIRE(o->alloc((void **)&a, M * 4) == 0, "%s", titan_errmsg());
	REQUIRE(o->alloc((void **)&b, M * 4) == 0, "%s", titan_errmsg());

	CHECK(o->upload(a, in, M * 4) == 0, "%s", titan_errmsg());
	CHECK(o->download(out, a, M * 4) == 0, "%s", titan_errmsg());
	CHECK(memcmp(in, out, sizeof in) == 0, "upload and download do not round-trip");

	o->copy(b + 1, a + 2, (M - 3) * 4);
	o->zero(a + 10, 20 * 4);
	CHECK(o->download(out, b, M * 4) == 0, "%s", titan_errmsg());
	CHECK(out[0] == 0 && out[M - 2] == 0 && out[M - 1] == 0, "copy wrote outside its range");
	CHECK(memcmp(out + 1, in + 2, (M - 3) * 4) == 0, "copy moved the wrong bytes");
	CHECK(o->download(out, a, M * 4) == 0, "%s", titan_errmsg());
	CHECK(memcmp(out, in, 10 * 4) == 0 && all_zero(out + 10, 20) &&
	      memcmp(out + 30, in + 30, (M - 30) * 4) == 0, "zero cleared the wrong range");

	o->mem_stats(&ms);
	CHECK(ms.reserved >= 2 * M * 4 && ms.reserved_peak >= ms.reserved &&
	      ms.device_allocs >= 2, "stats: reserved %zu, peak %zu, allocs %ld",
	      ms.reserved, ms.reserved_peak, ms.device_allocs);

	/* a pointer alloc never gave out is reported at the next sync, once */
	o->free(a + 16, 64);
	CHECK(o->sync() < 0, "freeing a bad pointer went unnoticed");
	CHECK(o->sync() == 0, "sync reported an old failure twice: %s", titan_errmsg());

	o->free(a, M * 4);
	o->free(b, M * 4);
	CHECK(o->sync() == 0, "%s", titan_errmsg());
}

int main(void)
{
	RUN(test_ops_match_cpu);
	RUN(test_host_access_faults);
	RUN(test_alloc_zeroes_reused);
	RUN(test_copies);
	return check_done();
}
