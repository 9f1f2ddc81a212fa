/* test_attention_tiles.c - the tiled attention schedule (attention_tiles.c)
 * over the CPU's primitives against the CPU backend's attention, the
 * reference that matches PyTorch: forward out and lse, the three gradients,
 * for causal and document masks and arbitrary ranges with Tq != Tk (empty
 * ones, whole query rows that see nothing), grouped and multi-query KV
 * heads, and key tiles from one key to more than Tk, so that tiles split
 * documents, start mid-range and are skipped.  The schedule is what the
 * GPU runs over cuBLAS; this is its test on a machine without one. */
#include "core/base.h"
#include <math.h>
#include "attention_flash.h"
#include "attention_tiles.h"
#include "attention_ranges.h"
#include "core/half.h"
#include "kernels.h"
#include "check.h"
#include "rand.h"

enum mask { CAUSAL, DOCUMENTS, RANGES };

static void make_mask(int32_t *lo, int32_t *hi, int B, int Tq, int Tk, enum mask kind)
{
	for (int b = 0; b < B; b++) {
		int start = 0;
		for (int t = 0; t < Tq; t++) {
			size_t at = (size_t)b * Tq + t;
			switch (kind) {
			case CAUSAL:
				lo[at] = 0;
				hi[at] = t;
				break;
			case DOCUMENTS:
				if (t > 0 && rnd_int(5) == 0)
					start = t;
				lo[at] = start;
				hi[at] = t;
				break;
			case RANGES:
				lo[at] = rnd_int(Tk + 4) - 2;
				hi[at] = lo[at] + rnd_int(Tk) - 3;
				/* row 1 sees nothing in its first queries */
				if (b == 1 && t < Tq / 3) {
					lo[at] = 5;
					hi[at] = 4;
				}
				break;
			}
		}
	}
}

/* Largest |a - b| relative to the largest |b| (at least 1). */
static double rel_err(const float *a, const float *b, size_t n)
{
	double worst = 0, scale = 1;

	for (size_t i = 0; i < n; i++)
		if (isfinite(b[i]) && fabs(b[i]) > scale)
			scale = fabs(b[i]);
	for (size_t i = 0; i < n; i++) {
		if (isinf(b[i]) || isinf(a[i])) {
			if (a[i] != b[i])
				return INFINITY;
			continue;
		}
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= worst))
			worst = d;
	}
	return worst / scale;
}

static float *randoms(size_t n)
{
	float *x = malloc(n * sizeof *x);

	for (size_t i = 0; i < n && x; i++)
		x[i] = rnd();
	return x;
}

/* x rounded to bf16 and back, as the bf16 schedule reads its inputs. */
static float *rounded(const float *x, size_t n)
{
	float *r = malloc(n * sizeof *r);

	for (size_t i = 0; i < n && r; i++)
		r[i] = bf16_to_f32(f32_to_bf16(x[i]));
	return r;
}

/* The schedule against the CPU's attention.  fp32: to fp32 rounding.  bf16:
 * against the CPU's attention of q, k, v and dout rounded to bf16, so that
 * only the rounding of P and dS is left between them: lse (the fp32 sums of
 * the unrounded P) to fp32 rounding, the rest to bf16's. */
static void check_case_in(int B, int Tq, int Tk, int H, int KV, int D, enum mask kind, int tile,
			  int chunk, int rows, bool bf16)
{
	size_t nq = (size_t)B * Tq * H * D, nk = (size_t)B * Tk * KV * D;
	size_t nl = (size_t)B * H * Tq;
	float *q = randoms(nq), *k = randoms(nk), *v = randoms(nk), *dout = randoms(nq);
	float *rq = NULL, *rk = NULL, *rv = NULL, *rdout = NULL;
	float *out = calloc(nq, 4), *lse = calloc(nl, 4), *tout = calloc(nq, 4), *tlse = calloc(nl, 4);
	float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
	float *tdq = calloc(nq, 4), *tdk = calloc(nk, 4), *tdv = calloc(nk, 4);
	int32_t *lo = malloc((size_t)B * Tq * 4), *hi = malloc((size_t)B * Tq * 4);
	const attention_tile_prims *p = &attention_tile_prims_cpu;
	attention_tiles_shape sh = {B, Tq, Tk, H, KV, D, tile, bf16, chunk, rows};
	double tol_out = bf16 ? 5e-3 : 2e-5, tol_grad = bf16 ? 1e-2 : 5e-5;
	char what[128];

	snprintf(what, sizeof what, "%s B %d Tq %d Tk %d H %d KV %d D %d mask %d tile %d chunk %d "
		 "rows %d", bf16 ? "bf16" : "fp32", B, Tq, Tk, H, KV, D, kind, tile, chunk, rows);
	if (q && k && v && dout) {
		rq = bf16 ? rounded(q, nq) : q;
		rk = bf16 ? rounded(k, nk) : k;
		rv = bf16 ? rounded(v, nk) : v;
		rdout = bf16 ? rounded(dout, nq) : dout;
	}
	if (!rq || !rk || !rv || !rdout || !out || !lse || !tout || !tlse || !dq || !dk || !dv ||
	    !tdq || !tdk || !tdv || !lo || !hi) {
		CHECK(0, "%s: out of memory", what);
		goto out;
	}
	make_mask(lo, hi, B, Tq, Tk, kind);
	kernels_cpu.attention_forward(out, lse, rq, rk, rv, lo, hi, B, Tq, Tk, H, KV, D);
	int rc = attention_tiles_forward(p, &sh, tout, tlse, q, k, v, lo, hi, lo, hi);
	CHECK(rc == 0, "%s: forward %d", what, rc);
	double e_out = rel_err(tout, out, nq), e_lse = rel_err(tlse, lse, nl);
	CHECK(e_out < tol_out, "%s: out differs by %g", what, e_out);
	CHECK(e_lse < 2e-5, "%s: lse differs by %g", what, e_lse);

	kernels_cpu.attention_backward(dq, dk, dv, rdout, rq, rk, rv, out, lse, lo, hi, B, Tq, Tk,
				       H, KV, D);
	rc = attention_tiles_backward(p, &sh, tdq, tdk, tdv, dout, q, k, v, out, lse, lo, hi, lo,
				      hi);
	CHECK(rc == 0, "%s: backward %d", what, rc);
	double e_dq = rel_err(tdq, dq, nq), e_dk = rel_err(tdk, dk, nk), e_dv = rel_err(tdv, dv, nk);
	CHECK(e_dq < tol_grad, "%s: dq differs by %g", what, e_dq);
	CHECK(e_dk < tol_grad, "%s: dk differs by %g", what, e_dk);
	CHECK(e_dv < tol_grad, "%s: dv differs by %g", what, e_dv);
out:
	if (bf16) {
		free(rq), free(rk), free(rv), free(rdout);
	}
	free(q), free(k), free(v), free(dout), free(out), free(lse), free(tout), free(tlse);
	free(dq), free(dk), free(dv), free(tdq), free(tdk), free(tdv), free(lo), free(hi);
}

/* Every case in fp32 and in bf16, in one chunk of query rows or (chunk
 * > 0) in chunks of that many. */
static void check_chunked(int B, int Tq, int Tk, int H, int KV, int D, enum mask kind, int tile,
			  int chunk)
{
	check_case_in(B, Tq, Tk, H, KV, D, kind, tile, chunk, 0, false);
	check_case_in(B, Tq, Tk, H, KV, D, kind, tile, chunk, 0, true);
}

static void check_case(int B, int Tq, int Tk, int H, int KV, int D, enum mask kind, int tile)
{
	check_chunked(B, Tq, Tk, H, KV, D, kind, tile, 0);
}

static void test_causal(void)
{
	static const int tiles[] = {1, 5, 16, 37, 64, 0};

	for (size_t i = 0; i < sizeof tiles / sizeof *tiles; i++) {
		check_case(2, 37, 37, 4, 2, 8, CAUSAL, tiles[i]);
		check_case(1, 37, 37, 2, 2, 16, CAUSAL, tiles[i]);
	}
}

static void test_documents(void)
{
	check_case(3, 50, 50, 4, 4, 8, DOCUMENTS, 7);
	check_case(3, 50, 50, 6, 2, 12, DOCUMENTS, 16);
	check_case(2, 64, 64, 4, 1, 8, DOCUMENTS, 0);
}

/* Query rows in chunks, each over the key tiles: the chunk's last rows
 * short, chunks that see no key of a tile, rows whose keys are all in
 * later tiles. */
static void test_query_chunks(void)
{
	static const int chunks[] = {1, 7, 16, 36, 64};

	for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
		check_chunked(2, 37, 37, 4, 2, 8, CAUSAL, 5, chunks[i]);
		check_chunked(3, 50, 50, 6, 2, 12, DOCUMENTS, 16, chunks[i]);
		check_chunked(2, 33, 90, 4, 1, 16, RANGES, 11, chunks[i]);
	}
}

/* Batch rows in chunks, one call of the schedule each; with query chunks
 * too. */
static void test_batch_chunks(void)
{
	for (int bf16 = 0; bf16 < 2; bf16++) {
		check_case_in(3, 37, 37, 4, 2, 8, CAUSAL, 5, 0, 1, bf16);
		check_case_in(3, 50, 50, 6, 2, 12, DOCUMENTS, 16, 0, 2, bf16);
		check_case_in(3, 33, 90, 4, 1, 16, RANGES, 11, 7, 2, bf16);
	}
}

static void test_ranges(void)
{
	check_case(2, 33, 90, 4, 1, 16, RANGES, 11);
	check_case(3, 20, 45, 4, 2, 8, RANGES, 64);
	check_case(2, 9, 17, 2, 1, 4, RANGES, 1);
}

/* The automatic tile: at most Tk keys, at least 64 when there are more. */
static void expect_blocking(int B, int T, int H, bool bf16, int want_tile, int want_rows,
			    int want_chunk)
{
	attention_tiles_shape sh = {B, T, T, H, H / 4 ? H / 4 : 1, 64, 0, bf16, 0, 0};
	int tile, rows, chunk;

	attention_tiles_blocking(&sh, &tile, &rows, &chunk);
	CHECK(tile == want_tile && rows == want_rows && chunk == want_chunk,
	      "B %d T %d H %d %s: %d keys a tile, %d batch rows and %d query rows a chunk; "
	      "expected %d, %d, %d", B, T, H, bf16 ? "bf16" : "fp32", tile, rows, chunk,
	      want_tile, want_rows, want_chunk);
}

static void test_tile_sizes(void)
{
	check_case(1, 130, 130, 2, 1, 8, CAUSAL, 0);
	check_case(1, 1, 1, 1, 1, 1, CAUSAL, 0);
	/* fewer keys than a tile: all of them, every batch row at once */
	expect_blocking(2, 37, 4, true, 37, 2, 37);
	/* 512 keys a tile (bf16: the fused kernels' 64), and the batch rows
	 * that fit 512 MiB with it */
	expect_blocking(1, 2048, 8, false, 512, 1, 2048);
	expect_blocking(8, 2048, 8, false, 512, 8, 2048);
	expect_blocking(8, 2048, 32, true, 64, 8, 2048);
	expect_blocking(8, 2048, 32, false, 512, 2, 2048);
	expect_blocking(3, 8192, 32, true, 64, 2, 8192);
	/* one batch row does not fit: chunks of its queries,
	 * 512 MiB / (32 * 512 * 8) rounded down to 64 */
	expect_blocking(1, 32768, 32, false, 512, 1, 4096);
	expect_blocking(1, 65536, 32, true, 64, 1, 21824);
}

/* The CPU's primitives, recording the largest scratch block and pointer
 * table a call asks for. */
static size_t seen_scratch, seen_pointers;

static void *recording_scratch_get(void *ctx, size_t bytes)
{
	if (bytes > seen_scratch)
		seen_scratch = bytes;
	return attention_tile_prims_cpu.scratch_get(ctx, bytes);
}

static void *const *recording_pointers(void *ctx, void *const *host, size_t n, size_t room)
{
	if (room < n)
		seen_pointers = SIZE_MAX;  /* a table past its room */
	else if (room * sizeof(void *) > seen_pointers)
		seen_pointers = room * sizeof(void *);
	return attention_tile_prims_cpu.pointers(ctx, host, n, room);
}

/* attention_tiles_scratch, which memory models charge, against what calls
 * take: the same scratch and the same table, whatever the mask skips. */
static void test_scratch_prediction(void)
{
	static const int shapes[][9] = {
		/* B, T, H, KV, D, key tile, bf16, query chunk, batch chunk */
		{2, 37, 4, 2, 8, 5, 0, 0, 0}, {2, 37, 4, 2, 12, 5, 1, 0, 0},
		{1, 130, 2, 1, 8, 0, 1, 0, 0}, {3, 50, 6, 2, 16, 16, 1, 0, 0},
		{1, 64, 4, 4, 8, 64, 0, 0, 0}, {2, 37, 4, 2, 8, 5, 0, 9, 0},
		{3, 50, 6, 2, 16, 16, 1, 20, 2}, {3, 37, 4, 2, 8, 5, 1, 0, 1},
	};
	attention_tile_prims rec = attention_tile_prims_cpu;

	rec.scratch_get = recording_scratch_get;
	rec.pointers = recording_pointers;
	for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
		const int *x = shapes[i];
		int B = x[0], T = x[1], H = x[2], KV = x[3], D = x[4];
		attention_tiles_shape sh = {B, T, T, H, KV, D, x[5], x[6] != 0, x[7], x[8]};
		size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KV * D, nl = (size_t)B * H * T;
		float *q = randoms(nq), *k = randoms(nk), *v = randoms(nk), *dout = randoms(nq);
		float *out = calloc(nq, 4), *lse = calloc(nl, 4), *dq = calloc(nq, 4);
		float *dk = calloc(nk, 4), *dv = calloc(nk, 4);
		int32_t *lo = malloc((size_t)B * T * 4), *hi = malloc((size_t)B * T * 4);

		REQUIRE(q && k && v && dout && out && lse && dq && dk && dv && lo && hi,
			"out of memory");
		make_mask(lo, hi, B, T, T, CAUSAL);
		for (int bwd = 0; bwd < 2; bwd++) {
			size_t scratch, pointers;
			int rc;

			attention_tiles_scratch(&sh, bwd, rec.bf16_size, &scratch, &pointers);
			seen_scratch = seen_pointers = 0;
			if (bwd)
				rc = attention_tiles_backward(&rec, &sh, dq, dk, dv, dout, q, k, v, out,
							      lse, lo, hi, lo, hi);
			else
				rc = attention_tiles_forward(&rec, &sh, out, lse, q, k, v, lo, hi, lo,
							     hi);
			CHECK(rc == 0, "shape %zu: call %d", i, rc);
			CHECK(seen_scratch == scratch, "shape %zu %s: scratch %zu, predicted %zu", i,
			      bwd ? "backward" : "forward", seen_scratch, scratch);
			CHECK(seen_pointers == pointers, "shape %zu %s: pointers %zu, predicted %zu",
			      i, bwd ? "backward" : "forward", seen_pointers, pointers);
		}
		free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq);
		free(dk), free(dv), free(lo), free(hi);
	}
}

/* The fused kernels' scratch (attention_flash.h), which the CUDA backend
 * takes and memory models charge: which head dims they take, every section
 * 256-byte aligned and as large as its tensor, the backward's extras, and
 * the per-head dk, dv shares only where KV heads are shared. */
static void test_flash_scratch(void)
{
	const int B = 2, T = 100, H = 8, D = 64;
	size_t at[FLASH_SECTIONS + 1];

	CHECK(attention_flash_fits(16) && attention_flash_fits(64) && attention_flash_fits(128),
	      "16, 64, 128");
	CHECK(!attention_flash_fits(8) && !attention_flash_fits(48 + 4) && !attention_flash_fits(144),
	      "8, 52, 144");
	for (int backward = 0; backward < 2; backward++) {
		for (int KV = 2; KV <= H; KV += H - 2) {
			size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KV * D;
			size_t want[FLASH_SECTIONS] = {
				2 * nq, 2 * nk, 2 * nk, 8 * (size_t)B * ((T + 15) / 16),
				backward ? 2 * nq : 0, backward ? 4 * (size_t)B * H * T : 0,
				backward && KV < H ? 4 * nq : 0, backward && KV < H ? 4 * nq : 0,
			};

			attention_flash_layout(B, T, T, H, KV, D, backward, at);
			CHECK(at[FLASH_SECTIONS] == attention_flash_scratch(B, T, T, H, KV, D, backward),
			      "total");
			for (int i = 0; i < FLASH_SECTIONS; i++) {
				size_t got = at[i + 1] - at[i];

				CHECK(at[i] % 256 == 0 && got >= want[i] && got < want[i] + 256,
				      "backward %d KV %d section %d: %zu bytes at %zu, want %zu",
				      backward, KV, i, got, at[i], want[i]);
			}
		}
	}
}

/* The host's copies of ranges kept on a device: found for calls inside a
 * region at the same offset in lo and hi, replaced, forgotten. */
static void test_known_ranges(void)
{
	static int32_t dev_lo[40], dev_hi[40], other[40];
	int32_t host_lo[40], host_hi[40];
	attention_range_table t = {0};
	size_t stride = 0;
	const int32_t *got;

	for (int i = 0; i < 40; i++) {
		host_lo[i] = i;
		host_hi[i] = 100 + i;
	}
	attention_ranges_set(&t, dev_lo, dev_hi, host_lo, host_hi, 40);
	got = attention_ranges_find(&t, dev_lo, dev_hi, 40, &stride);
	CHECK(got && stride == 40 && got[0] == 0 && got[stride + 39] == 139, "whole region");
	/* context parallel's ring steps: a part of the region */
	got = attention_ranges_find(&t, dev_lo + 20, dev_hi + 20, 20, &stride);
	CHECK(got && got[0] == 20 && got[stride] == 120, "the second half");
	CHECK(!attention_ranges_find(&t, dev_lo + 20, dev_hi + 20, 21, &stride), "past the end");
	CHECK(!attention_ranges_find(&t, dev_lo, dev_hi + 1, 10, &stride), "hi at another offset");
	CHECK(!attention_ranges_find(&t, other, dev_hi, 10, &stride), "another lo");
	/* new ranges uploaded: the region takes them */
	host_lo[0] = 7;
	attention_ranges_set(&t, dev_lo, dev_hi, host_lo, host_hi, 40);
	got = attention_ranges_find(&t, dev_lo, dev_hi, 1, &stride);
	CHECK(got && got[0] == 7, "replaced");
	attention_ranges_set(&t, dev_lo, dev_hi, NULL, NULL, 0);
	CHECK(!attention_ranges_find(&t, dev_lo, dev_hi, 1, &stride), "forgotten");
	/* a full table keeps what it has */
	for (int i = 0; i < ATTENTION_RANGE_REGIONS + 1; i++)
		attention_ranges_set(&t, other + i, dev_hi + i, host_lo, host_hi, 1);
	CHECK(attention_ranges_find(&t, other, dev_hi, 1, &stride), "the first region");
	CHECK(!attention_ranges_find(&t, other + ATTENTION_RANGE_REGIONS, dev_hi +
				     ATTENTION_RANGE_REGIONS, 1, &stride), "no room for the last");
	attention_ranges_clear(&t);
}

int main(void)
{
	rng_state = 7;
	RUN(test_causal);
	RUN(test_documents);
	RUN(test_ranges);
	RUN(test_query_chunks);
	RUN(test_batch_chunks);
	RUN(test_tile_sizes);
	RUN(test_scratch_prediction);
	RUN(test_known_ranges);
	RUN(test_flash_scratch);
	return check_done();
}
