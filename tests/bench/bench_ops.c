/* bench_ops.c - each op of a backend alone, at the shapes of one llama3_1b
 * training step (2 x 2048 tokens): milliseconds per call and its rate,
 * TFLOP/s for the GEMMs and attention, GB/s for the memory-bound ops.  It
 * says where a step's time goes, op by op, and against what: make
 * bench-cuda prints tests/bench/torch_ops.py's rows for PyTorch's ops at the
 * same shapes beside it.
 *
 *   bench_ops [--device cpu|cpu-fenced|cuda] [--small]
 *
 * Each figure is the best of a few calls after one that warms up, each call
 * waited for (sync).  --small takes tiny shapes, to check the harness where
 * there is no GPU; the figures then mean nothing. */
#include "core/base.h"
#include "core/log.h"
#include "kernels.h"

/* The shapes of one step. */
struct shapes {
	int B, T, C, H, KV, D, F, V;
};

static const struct shapes llama3_1b = {2, 2048, 2048, 32, 8, 64, 8192, 128256};
static const struct shapes tiny = {1, 128, 64, 4, 2, 16, 192, 512};

enum { CALLS = 5 };

/* Device buffers: every one the ops below take, random where an op reads. */
struct bufs {
	const kernel_ops *ops;
	float *x, *dx, *w, *dw, *f1, *f2, *f3, *f4, *f5;  /* [N,C], [F,C], [N,F] */
	float *q, *k, *v, *att, *lse, *dq, *dk, *dv;
	float *logits, *head, *loss, *normw, *rstd, *cos, *sin;
	float *p, *g, *m, *mv;                           /* AdamW, n_adam each */
	kernel_bf16 *w16, *head16, *x16;                 /* w, head and x in bf16 */
	int32_t *lo, *hi, *pos;
	uint32_t *labels;
	size_t n_adam;
	void *all[40];
	size_t bytes[40];
	int n;
	bool failed;
};

/* ops->alloc and an upload of n pseudo-random floats in [-0.5, 0.5)
 * (ints: set by the caller); NULL after the first failure. */
static void *dev(struct bufs *b, size_t bytes, bool random)
{
	void *p = NULL;
	float *h;

	if (b->failed || b->n == (int)(sizeof b->all / sizeof *b->all) ||
	    b->ops->alloc(&p, bytes ? bytes : 4)) {
		b->failed = true;
		return NULL;
	}
	b->all[b->n] = p;
	b->bytes[b->n++] = bytes ? bytes : 4;
	if (random && (h = malloc(bytes))) {
		uint64_t s = (uint64_t)b->n * 0x9e3779b97f4a7c15ULL;

		for (size_t i = 0; i < bytes / 4; i++) {
			s = s * 6364136223846793005ULL + 1442695040888963407ULL;
			h[i] = (float)((double)(s >> 40) / (double)(1 << 24) - 0.5);
		}
		b->ops->upload(p, h, bytes);
		free(h);
	}
	return p;
}

/* Integers on the device: causal ranges, positions, labels. */
static int32_t *dev_ints(struct bufs *b, const struct shapes *s, int kind)
{
	size_t N = (size_t)s->B * s->T;
	int32_t *h = malloc(N * sizeof *h), *p = dev(b, N * sizeof *h, false);

	if (!h || !p) {
		free(h);
		b->failed = true;
		return NULL;
	}
	for (size_t i = 0; i < N; i++) {
		int t = (int)(i % (size_t)s->T);
		h[i] = kind == 0 ? 0 : kind == 1 ? t : (int32_t)((i * 2654435761u) % (size_t)s->V);
	}
	b->ops->upload(p, h, N * sizeof *h);
	free(h);
	return p;
}

static int bufs_new(struct bufs *b, const kernel_ops *ops, const struct shapes *s)
{
	size_t N = (size_t)s->B * s->T, NC = N * s->C * 4, NF = N * s->F * 4;
	size_t nq = N * s->H * s->D * 4, nk = N * s->KV * s->D * 4, nl = N * s->H * 4;

	memset(b, 0, sizeof *b);
	b->ops = ops;
	b->n_adam = (size_t)s->C * s->F * 4;   /* four GEMM weights' worth */
	b->x = dev(b, NC, true), b->dx = dev(b, NC, true);
	b->w = dev(b, (size_t)s->F * s->C * 4, true), b->dw = dev(b, (size_t)s->F * s->C * 4, true);
	b->f1 = dev(b, NF, true), b->f2 = dev(b, NF, true), b->f3 = dev(b, NF, true);
	b->f4 = dev(b, NF, true), b->f5 = dev(b, NF, true);
	b->q = dev(b, nq, true), b->k = dev(b, nk, true), b->v = dev(b, nk, true);
	b->att = dev(b, nq, true), b->lse = dev(b, nl, true), b->dq = dev(b, nq, true);
	b->dk = dev(b, nk, true), b->dv = dev(b, nk, true);
	b->logits = dev(b, N * (size_t)s->V * 4, true);
	b->head = dev(b, (size_t)s->V * s->C * 4, true);
	/* the bf16 GEMMs read weights and inputs the model keeps cast */
	b->w16 = dev(b, (size_t)s->F * s->C * 2, false);
	b->head16 = dev(b, (size_t)s->V * s->C * 2, false);
	b->x16 = dev(b, N * s->C * 2, false);
	if (!b->failed) {
		ops->cast_bf16(b->w16, b->w, (size_t)s->F * s->C);
		ops->cast_bf16(b->head16, b->head, (size_t)s->V * s->C);
		ops->cast_bf16(b->x16, b->x, N * s->C);
	}
	b->loss = dev(b, N * 4, false), b->normw = dev(b, (size_t)s->C * 4, true);
	b->rstd = dev(b, N * 4, false);
	b->cos = dev(b, (size_t)s->T * s->D / 2 * 4, true);
	b->sin = dev(b, (size_t)s->T * s->D / 2 * 4, true);
	b->p = dev(b, b->n_adam * 4, true), b->g = dev(b, b->n_adam * 4, true);
	b->m = dev(b, b->n_adam * 4, true), b->mv = dev(b, b->n_adam * 4, false);
	b->lo = dev_ints(b, s, 0), b->hi = dev_ints(b, s, 1), b->pos = dev_ints(b, s, 1);
	b->labels = (uint32_t *)dev_ints(b, s, 2);
	if (!b->failed && ops->attention_ranges) {
		/* as the trainer does: the backend plans attention with the
		 * host's copy of the causal ranges */
		size_t n = (size_t)s->B * s->T;
		int32_t *h = malloc(2 * n * sizeof *h);

		if (!h)
			return -1;
		for (size_t i = 0; i < n; i++) {
			h[i] = 0;
			h[n + i] = (int32_t)(i % (size_t)s->T);
		}
		ops->attention_ranges(b->lo, b->hi, h, h + n, n);
		free(h);
	}
	return b->failed ? -1 : 0;
}

static void bufs_free(struct bufs *b)
{
	if (b->ops && b->ops->attention_ranges && b->lo)
		b->ops->attention_ranges(b->lo, b->hi, NULL, NULL, 0);
	for (int i = 0; i < b->n; i++)
		b->ops->free(b->all[i], b->bytes[i]);
}

/* One op of the table: what it runs, and its work, FLOPs or bytes. */
struct op {
	const char *name;
	double flops, bytes;
	void (*run)(const struct bufs *b, const struct shapes *s);
};

#define N_OF(s) ((s)->B * (s)->T)

static void mm_fwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->matmul_forward(b->f1, b->x, b->w, N_OF(s), s->C, s->F, false);
}

static void mm_fwd16(const struct bufs *b, const struct shapes *s)
{
	b->ops->matmul_forward_bf16(b->f1, b->x16, b->w16, N_OF(s), s->C, s->F, false);
}

static void mm_bwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->matmul_backward(b->dx, b->dw, b->f1, b->x, b->w, N_OF(s), s->C, s->F, false);
}

static void mm_bwd16(const struct bufs *b, const struct shapes *s)
{
	b->ops->matmul_backward_bf16(b->dx, b->dw, b->f1, b->x16, b->w16, N_OF(s), s->C, s->F,
				     false);
}

static void head_fwd16(const struct bufs *b, const struct shapes *s)
{
	b->ops->matmul_forward_bf16(b->logits, b->x16, b->head16, N_OF(s), s->C, s->V, false);
}

static void cast16(const struct bufs *b, const struct shapes *s)
{
	b->ops->cast_bf16(b->w16, b->w, (size_t)s->F * s->C);
}

static void att_fwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->attention_forward(b->att, b->lse, b->q, b->k, b->v, b->lo, b->hi, s->B, s->T,
				  s->T, s->H, s->KV, s->D);
}

static void att_fwd16(const struct bufs *b, const struct shapes *s)
{
	b->ops->attention_forward_bf16(b->att, b->lse, b->q, b->k, b->v, b->lo, b->hi, s->B,
				       s->T, s->T, s->H, s->KV, s->D);
}

static void att_bwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->attention_backward(b->dq, b->dk, b->dv, b->att, b->q, b->k, b->v, b->att, b->lse,
				   b->lo, b->hi, s->B, s->T, s->T, s->H, s->KV, s->D);
}

static void att_bwd16(const struct bufs *b, const struct shapes *s)
{
	b->ops->attention_backward_bf16(b->dq, b->dk, b->dv, b->att, b->q, b->k, b->v, b->att,
					b->lse, b->lo, b->hi, s->B, s->T, s->T, s->H, s->KV,
					s->D);
}

static void norm_fwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->rmsnorm_forward(b->dx, b->rstd, b->x, b->normw, N_OF(s), s->C, 1e-5f);
}

static void norm_bwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->rmsnorm_backward(b->dx, b->dw, b->x, b->x, b->normw, b->rstd, N_OF(s), s->C);
}

static void rope_fwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->rope_forward(b->q, b->pos, b->cos, b->sin, N_OF(s), s->H, s->D);
}

static void swiglu_fwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->swiglu_forward(b->f3, b->f1, b->f2, (size_t)N_OF(s) * s->F);
}

static void swiglu_bwd(const struct bufs *b, const struct shapes *s)
{
	b->ops->swiglu_backward(b->f4, b->f5, b->f3, b->f1, b->f2, (size_t)N_OF(s) * s->F);
}

static void xent(const struct bufs *b, const struct shapes *s)
{
	b->ops->cross_entropy(b->loss, b->logits, b->labels, N_OF(s), s->V, 1.0f / N_OF(s));
}

static void residual(const struct bufs *b, const struct shapes *s)
{
	b->ops->add_inplace(b->dx, b->x, (size_t)N_OF(s) * s->C);
}

static void adamw(const struct bufs *b, const struct shapes *s)
{
	(void)s;
	kernel_adamw_tensor t = { b->p, b->g, b->m, b->mv, b->n_adam, 0.1, NULL };

	b->ops->adamw(&t, 1, 1e-4, 0.9, 0.95, 1e-8, 1, 1.0f);
}

/* The best of CALLS calls after a warm-up, in seconds; 0 on a failure. */
static double time_op(const struct op *o, const struct bufs *b, const struct shapes *s)
{
	double best = 0;

	for (int i = 0; i <= CALLS; i++) {
		double t0 = titan_now(), dt;

		o->run(b, s);
		if (b->ops->sync())
			return 0;
		dt = titan_now() - t0;
		if (i > 0 && (best == 0 || dt < best))
			best = dt;
	}
	return best;
}

int main(int argc, char **argv)
{
	const char *device = "cuda";
	const struct shapes *s = &llama3_1b;
	const kernel_ops *ops;
	struct bufs b;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--small")) {
			s = &tiny;
		} else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
			device = argv[++i];
		} else {
			fprintf(stderr, "usage: bench_ops [--device cpu|cpu-fenced|cuda] [--small]\n");
			return 2;
		}
	}
	if (!strcmp(device, "cpu")) {
		ops = &kernels_cpu;
	} else if (!strcmp(device, "cpu-fenced")) {
		ops = kernels_fenced_ops();
	} else if (!strcmp(device, "cuda")) {
		if (!kernels_cuda_built() || kernels_cuda_set_device(0)) {
			fprintf(stderr, "bench_ops: no CUDA device: %s\n",
				kernels_cuda_built() ? titan_errmsg() : "a build without CUDA");
			return 1;
		}
		ops = kernels_cuda_ops();
	} else {
		fprintf(stderr, "bench_ops: --device: cpu, cpu-fenced or cuda, not '%s'\n", device);
		return 2;
	}
	if (bufs_new(&b, ops, s)) {
		fprintf(stderr, "bench_ops: %s: no memory for the buffers: %s\n", device,
			titan_errmsg());
		bufs_free(&b);
		return 1;
	}

	double N = (double)s->B * s->T, C = s->C, F = s->F, V = s->V;
	double mm = 2 * N * C * F, att = 2.0 * s->B * s->H * (double)s->T * s->T * s->D;
	const struct op table[] = {
		{"matmul fwd fp32 [N,C]x[F,C]", mm, 0, mm_fwd},
		{"matmul fwd bf16", mm, 0, mm_fwd16},
		{"matmul bwd fp32", 2 * mm, 0, mm_bwd},
		{"matmul bwd bf16", 2 * mm, 0, mm_bwd16},
		{"head fwd bf16 [N,C]x[V,C]", 2 * N * C * V, 0, head_fwd16},
		/* causal: half of the 4 B H T^2 D of the two products */
		{"attention fwd fp32", att, 0, att_fwd},
		{"attention fwd bf16", att, 0, att_fwd16},
		{"attention bwd fp32", 2.5 * att, 0, att_bwd},
		{"attention bwd bf16", 2.5 * att, 0, att_bwd16},
		{"rmsnorm fwd", 0, 2 * N * C * 4, norm_fwd},
		{"rmsnorm bwd", 0, 3 * N * C * 4, norm_bwd},
		{"rope fwd (q)", 0, 2 * N * s->H * s->D * 4, rope_fwd},
		{"swiglu fwd", 0, 3 * N * F * 4, swiglu_fwd},
		{"swiglu bwd", 0, 5 * N * F * 4, swiglu_bwd},
		{"cross-entropy + grad", 0, 2 * N * V * 4, xent},
		{"cast to bf16 [F,C]", 0, F * C * 6, cast16},
		{"residual add", 0, 3 * N * C * 4, residual},
		{"adamw (4 C F params)", 0, 7.0 * (double)b.n_adam * 4, adamw},
	};
	int status = 0;

	printf("bench_ops: %s, B %d T %d C %d H %d KV %d D %d F %d V %d; best of %d calls\n",
	       device, s->B, s->T, s->C, s->H, s->KV, s->D, s->F, s->V, CALLS);
	for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
		const struct op *o = &table[i];
		double t = time_op(o, &b, s);

		if (t <= 0) {
			printf("%-30s FAILED: %s\n", o->name, titan_errmsg());
			status = 1;
			continue;
		}
		if (o->flops > 0)
			printf("%-30s %10.3f ms %9.1f TFLOP/s\n", o->name, t * 1e3,
			       o->flops / t / 1e12);
		else
			printf("%-30s %10.3f ms %9.1f GB/s\n", o->name, t * 1e3, o->bytes / t / 1e9);
	}
	bufs_free(&b);
	return status;
}
