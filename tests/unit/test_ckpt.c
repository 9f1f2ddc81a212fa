/* test_ckpt.c - checkpoint directories: save and load, async, pruning,
 * "latest", loading into a slicing other than the saved one, errors, and
 * the collective save over a one-rank communicator (tests/ckpt-dist.bats
 * runs it over MPI). */
#include "core/base.h"
#include "ckpt/ckpt.h"
#include "ckpt/ckpt_priv.h"
#include "ckpt/reshard.h"
#include "ckpt/safetensors.h"
#include "config/config.h"
#include "core/file.h"
#include "core/json.h"
#include "check.h"

#include <sys/stat.h>
#include <unistd.h>

static uint32_t rng_state = 12345;
static float rndf(void)
{
	rng_state = rng_state * 1664525u + 1013904223u;
	return (float)(rng_state >> 8) / (float)(1 << 24) - 0.5f;
}

static void path_in(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", check_scratch, name);
}

static bool exists(const char *dir, const char *name)
{
	char p[1024];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

/* The directory part of path, in a static buffer. */
static const char *dirname_of(const char *path)
{
	static char buf[600];
	snprintf(buf, sizeof buf, "%s", path);
	char *slash = strrchr(buf, '/');
	if (slash)
		*slash = 0;
	return buf;
}

/* A whole tensor (slice = everything) with fresh random data. */
static ckpt_tensor whole(const char *name, int ndim, const int64_t *shape)
{
	ckpt_tensor t = { .name = name, .ndim = ndim };
	size_t n = 1;
	for (int i = 0; i < ndim; i++) {
		t.shape[i] = t.slice_shape[i] = shape[i];
		n *= (size_t)shape[i];
	}
	t.data = malloc((n ? n : 1) * sizeof(float));
	for (size_t i = 0; i < n; i++)
		t.data[i] = rndf();
	return t;
}

static size_t count(const ckpt_tensor *t)
{
	size_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= (size_t)t->slice_shape[i];
	return n;
}

/* Load every tensor of want into fresh buffers; true when bit-identical. */
static bool load_equal(const char *dir, const ckpt_tensor *want, size_t n)
{
	ckpt_tensor got[8];
	bool same = true;
	for (size_t i = 0; i < n; i++) {
		got[i] = want[i];
		got[i].data = calloc(count(&want[i]) + 1, sizeof(float));
	}
	int rc = ckpt_load(dir, got, n);
	if (rc) {
		printf("# ckpt_load: %s\n", titan_errmsg());
		same = false;
	}
	for (size_t i = 0; i < n; i++) {
		if (!rc && memcmp(got[i].data, want[i].data, count(&want[i]) * sizeof(float)))
			same = false;
		free(got[i].data);
	}
	return same;
}

/* Every tensor of want read whole from dir's latest step, bit-identical. */
static bool load_equal_all(const char *dir, const ckpt_tensor *want, size_t n)
{
	ckpt_reader *r;
	if (ckpt_reader_open(&r, dir)) {
		printf("# %s\n", titan_errmsg());
		return false;
	}
	bool same = true;
	for (size_t i = 0; i < n; i++) {
		size_t k = count(&want[i]);
		float *got = calloc(k + 1, sizeof *got);
		if (ckpt_reader_read(r, want[i].name, NULL, NULL, got)) {
			printf("# %s\n", titan_errmsg());
			same = false;
		} else if (memcmp(got, want[i].data, k * sizeof *got)) {
			printf("# '%s' differs\n", want[i].name);
			same = false;
		}
		free(got);
	}
	ckpt_reader_close(r);
	return same;
}

static const int64_t s_w[2] = { 4, 8 }, s_b[1] = { 3 }, s_e[2] = { 0, 5 };

static void test_save_load(void)
{
	char folder[512];
	path_in(folder, sizeof folder, "sync");
	ckpt_tensor t[4] = {
		whole("layers.0.attention.wq.weight", 2, s_w),
		whole("norm.weight", 1, s_b),
		whole("empty", 2, s_e),
		whole("scalar", 0, NULL),
	};
	json_t *extra = json_pack("{s:{s:i}, s:{s:I, s:f}}", "config", "dim", 64,
				  "train_state", "step", (json_int_t)7, "lr", 0.25);
	ckpt_saver *s;
	REQUIRE(ckpt_saver_new(&s, folder, 0, false, NULL, NULL) == 0, "%s", titan_errmsg());
	CHECK(ckpt_save(s, 7, t, 4, extra) == 0, "%s", titan_errmsg());
	CHECK(ckpt_wait(s) == 0, "wait");
	CHECK(ckpt_staging_bytes(s) == 0, "staging without async");
	ckpt_saver_free(s);

	char *dir;
	REQUIRE(ckpt_resolve(folder, "latest", &dir) == 0, "%s", titan_errmsg());
	CHECK(strstr(dir, "/step-7") != NULL, "latest is '%s'", dir);
	CHECK(exists(dir, "manifest.json") && exists(dir, "rank-00000.safetensors"),
	      "files missing in '%s'", dir);
	CHECK(!exists(folder, "step-7.tmp"), "step-7.tmp left");
	CHECK(load_equal(dir, t, 4), "loaded data differs");

	json_t *m;
	REQUIRE(ckpt_read_manifest(dir, &m) == 0, "%s", titan_errmsg());
	CHECK(json_integer_value(json_object_get(m, "step")) == 7, "step");
	CHECK(json_integer_value(json_object_get(m, "nranks")) == 1, "nranks");
	CHECK(json_equal(json_object_get(m, "extra"), extra), "extra differs");
	json_t *sh = json_object_get(json_object_get(json_object_get(m, "tensors"), "norm.weight"),
				     "shards");
	CHECK(json_array_size(sh) == 1 &&
	      !strcmp(json_string_value(json_object_get(json_array_get(sh, 0), "file")),
		      "rank-00000.safetensors"), "shards of norm.weight");
	json_decref(m);

	/* Re-saving the same step replaces it. */
	REQUIRE(ckpt_saver_new(&s, folder, 0, false, NULL, NULL) == 0, "%s", titan_errmsg());
	t[1].data[0] = 42;
	CHECK(ckpt_save(s, 7, t, 4, NULL) == 0, "%s", titan_errmsg());
	ckpt_saver_free(s);
	CHECK(load_equal(dir, t, 4), "re-saved data differs");
	CHECK(!exists(folder, "step-7.old"), "step-7.old left");

	free(dir);
	json_decref(extra);
	for (int i = 0; i < 4; i++)
		free(t[i].data);
}

static void test_async(void)
{
	char folder[512];
	path_in(folder, sizeof folder, "async");
	ckpt_tensor t[2] = { whole("w", 2, s_w), whole("b", 1, s_b) };
	ckpt_tensor keep[2];
	for (int i = 0; i < 2; i++) {
		keep[i] = t[i];
		keep[i].data = malloc(count(&t[i]) * sizeof(float));
		memcpy(keep[i].data, t[i].data, count(&t[i]) * sizeof(float));
	}
	json_t *extra = json_pack("{s:s}", "k", "v");
	ckpt_saver *s;
	REQUIRE(ckpt_saver_new(&s, folder, 0, true, NULL, NULL) == 0, "%s", titan_errmsg());
	CHECK(ckpt_save(s, 1, t, 2, extra) == 0, "%s", titan_errmsg());
	CHECK(ckpt_staging_bytes(s) >= (32 + 3) * sizeof(float), "staging %zu",
	      ckpt_staging_bytes(s));
	/* Training goes on: the caller's buffers change at once. */
	for (int i = 0; i < 2; i++)
		for (size_t k = 0; k < count(&t[i]); k++)
			t[i].data[k] = -1;
	json_object_set_new(extra, "k", json_string("changed"));
	CHECK(ckpt_save(s, 2, t, 2, extra) == 0, "%s", titan_errmsg());
	CHECK(ckpt_wait(s) == 0, "%s", titan_errmsg());
	ckpt_saver_free(s);

	char dir[600];
	snprintf(dir, sizeof dir, "%s/step-1", folder);
	CHECK(load_equal(dir, keep, 2), "step-1 differs from the data at save time");
	json_t *m;
	REQUIRE(ckpt_read_manifest(dir, &m) == 0, "%s", titan_errmsg());
	CHECK(!strcmp(json_string_value(json_object_get(json_object_get(m, "extra"), "k")), "v"),
	      "extra not copied at save time");
	json_decref(m);
	snprintf(dir, sizeof dir, "%s/step-2", folder);
	CHECK(load_equal(dir, t, 2), "step-2 differs");

	json_decref(extra);
	for (int i = 0; i < 2; i++) {
		free(t[i].data);
		free(keep[i].data);
	}
}

static void test_prune_latest(void)
{
	char folder[512], p[600];
	path_in(folder, sizeof folder, "prune");
	ckpt_tensor t = whole("w", 1, s_b);
	ckpt_saver *s;
	REQUIRE(ckpt_saver_new(&s, folder, 2, true, NULL, NULL) == 0, "%s", titan_errmsg());
	/* Not step directories: pruning leaves them alone. */
	snprintf(p, sizeof p, "%s/notes", folder);
	mkdir(p, 0777);
	snprintf(p, sizeof p, "%s/step-007", folder);
	mkdir(p, 0777);
	snprintf(p, sizeof p, "%s/step-1x", folder);
	mkdir(p, 0777);
	snprintf(p, sizeof p, "%s/step-0", folder);
	fclose(fopen(p, "w"));
	for (long step = 5; step <= 40; step += 5)
		CHECK(ckpt_save(s, step, &t, 1, NULL) == 0, "step %ld: %s", step,
		      titan_errmsg());
	CHECK(ckpt_wait(s) == 0, "%s", titan_errmsg());
	ckpt_saver_free(s);
	CHECK(exists(folder, "step-35") && exists(folder, "step-40"), "latest two gone");
	CHECK(!exists(folder, "step-5") && !exists(folder, "step-30") &&
	      !exists(folder, "step-10"), "old steps kept");
	CHECK(exists(folder, "notes") && exists(folder, "step-1x") && exists(folder, "step-0") &&
	      exists(folder, "step-007"),
	      "a non-step entry was removed");

	/* A crash left step-99.tmp, complete-looking but never renamed. */
	snprintf(p, sizeof p, "%s/step-99.tmp", folder);
	mkdir(p, 0777);
	snprintf(p, sizeof p, "%s/step-99.tmp/manifest.json", folder);
	fclose(fopen(p, "w"));
	char *dir;
	REQUIRE(ckpt_resolve(folder, "latest", &dir) == 0, "%s", titan_errmsg());
	snprintf(p, sizeof p, "%s/step-40", folder);
	CHECK(!strcmp(dir, p), "latest is '%s'", dir);
	free(dir);
	REQUIRE(ckpt_resolve(folder, p, &dir) == 0, "%s", titan_errmsg());
	CHECK(!strcmp(dir, p), "resolved '%s'", dir);
	free(dir);

	/* A later save clears the stale .tmp of its own step. */
	REQUIRE(ckpt_saver_new(&s, folder, 2, false, NULL, NULL) == 0, "%s", titan_errmsg());
	CHECK(ckpt_save(s, 99, &t, 1, NULL) == 0, "%s", titan_errmsg());
	ckpt_saver_free(s);
	CHECK(exists(folder, "step-99") && !exists(folder, "step-99.tmp") &&
	      !exists(folder, "step-35"), "after saving step 99");

	snprintf(p, sizeof p, "%s/notes", folder);
	CHECK(ckpt_resolve(folder, p, &dir) == TITAN_EIO &&
	      strstr(titan_errmsg(), "no manifest.json") && strstr(titan_errmsg(), "notes"),
	      "notes: %s", titan_errmsg());
	CHECK(ckpt_resolve(p, "latest", &dir) == TITAN_EIO &&
	      strstr(titan_errmsg(), "no checkpoint"), "empty: %s", titan_errmsg());
	snprintf(p, sizeof p, "%s/absent", folder);
	CHECK(ckpt_resolve(p, "latest", &dir) == TITAN_EIO && strstr(titan_errmsg(), "absent"),
	      "absent: %s", titan_errmsg());
	CHECK(dir == NULL, "dir set on error");
	free(t.data);
}

/* The tensor W [8, 6] as two ranks saved it: rank 0 rows 0-3, rank 1 rows
 * 4-7; V [4, 6] split by columns 0-1 / 2-5. */
static void test_reslice(void)
{
	char dir[512], p[600];
	path_in(dir, sizeof dir, "twor");
	mkdir(dir, 0777);
	float W[48], V[24];
	for (int i = 0; i < 48; i++)
		W[i] = (float)i;
	for (int i = 0; i < 24; i++)
		V[i] = 100.0f + (float)i;
	for (int r = 0; r < 2; r++) {
		st_writer *w;
		REQUIRE(st_writer_new(&w) == 0, "%s", titan_errmsg());
		int64_t ws[2] = { 4, 6 }, vs[2] = { 4, r ? 4 : 2 };
		float vpart[16];
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < vs[1]; j++)
				vpart[i * vs[1] + j] = V[i * 6 + (r ? 2 : 0) + j];
		CHECK(st_writer_add(w, "W", ST_F32, 2, ws, W + 24 * r) == 0, "%s", titan_errmsg());
		CHECK(st_writer_add(w, "V", ST_F32, 2, vs, vpart) == 0, "%s", titan_errmsg());
		snprintf(p, sizeof p, "%s/rank-%05d.safetensors", dir, r);
		CHECK(st_writer_write(w, p) == 0, "%s", titan_errmsg());
		st_writer_free(w);
	}
	json_t *m = json_pack(
		"{s:s, s:i, s:i, s:i, s:{"
		"s:{s:s, s:[ii], s:[{s:s, s:[ii], s:[ii]}, {s:s, s:[ii], s:[ii]}]},"
		"s:{s:s, s:[ii], s:[{s:s, s:[ii], s:[ii]}, {s:s, s:[ii], s:[ii]}]}},"
		" s:{}}",
		"format", "titan-checkpoint", "version", 1, "step", 3, "nranks", 2, "tensors",
		"W", "dtype", "F32", "shape", 8, 6, "shards",
		"file", "rank-00001.safetensors", "start", 4, 0, "shape", 4, 6,
		"file", "rank-00000.safetensors", "start", 0, 0, "shape", 4, 6,
		"V", "dtype", "F32", "shape", 4, 6, "shards",
		"file", "rank-00000.safetensors", "start", 0, 0, "shape", 4, 2,
		"file", "rank-00001.safetensors", "start", 0, 2, "shape", 4, 4,
		"extra");
	REQUIRE(m, "json_pack");
	snprintf(p, sizeof p, "%s/manifest.json", dir);
	REQUIRE(json_write_path(m, p) == 0, "%s", titan_errmsg());
	json_decref(m);

	/* Whole. */
	float out[48];
	ckpt_tensor t[2] = {
		{ .name = "W", .ndim = 2, .shape = { 8, 6 }, .slice_shape = { 8, 6 }, .data = out },
		{ .name = "V", .ndim = 2, .shape = { 4, 6 }, .slice_shape = { 4, 6 } },
	};
	float vout[24];
	t[1].data = vout;
	REQUIRE(ckpt_load(dir, t, 2) == 0, "%s", titan_errmsg());
	CHECK(!memcmp(out, W, sizeof W), "W whole");
	CHECK(!memcmp(vout, V, sizeof V), "V whole");

	/* Four row slices of two rows. */
	for (int r = 0; r < 4; r++) {
		ckpt_tensor q = { .name = "W", .ndim = 2, .shape = { 8, 6 },
				  .slice_start = { 2 * r, 0 }, .slice_shape = { 2, 6 },
				  .data = out };
		REQUIRE(ckpt_load(dir, &q, 1) == 0, "%s", titan_errmsg());
		CHECK(!memcmp(out, W + 12 * r, 12 * sizeof(float)), "W rows %d", 2 * r);
	}
	/* A box across both shards in both tensors: rows 2-6, columns 1-4. */
	t[0].slice_start[0] = 2, t[0].slice_start[1] = 1;
	t[0].slice_shape[0] = 5, t[0].slice_shape[1] = 4;
	t[1].slice_start[0] = 1, t[1].slice_start[1] = 1;
	t[1].slice_shape[0] = 3, t[1].slice_shape[1] = 3;
	REQUIRE(ckpt_load(dir, t, 2) == 0, "%s", titan_errmsg());
	bool ok = true;
	for (int i = 0; i < 5; i++)
		for (int j = 0; j < 4; j++)
			ok &= out[i * 4 + j] == W[(i + 2) * 6 + j + 1];
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++)
			ok &= vout[i * 3 + j] == V[(i + 1) * 6 + j + 1];
	CHECK(ok, "box slices differ");

	/* Errors: a tensor the checkpoint lacks, a shape that differs, a
	 * slice no shard covers. */
	ckpt_tensor bad = { .name = "missing", .ndim = 1, .shape = { 3 },
			    .slice_shape = { 3 }, .data = out };
	CHECK(ckpt_load(dir, &bad, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "tensor 'missing' not in the checkpoint") &&
	      strstr(titan_errmsg(), dir), "missing: %s", titan_errmsg());
	bad = (ckpt_tensor){ .name = "V", .ndim = 2, .shape = { 8, 8 }, .slice_shape = { 8, 8 },
			     .data = out };
	CHECK(ckpt_load(dir, &bad, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "tensor 'V' has shape [4, 6] in the checkpoint, expected [8, 8]"),
	      "shape: %s", titan_errmsg());
	bad.ndim = 1;
	CHECK(ckpt_load(dir, &bad, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "expected [8]"), "ndim: %s", titan_errmsg());

	/* A shard file that disagrees with the manifest. */
	st_writer *w;
	REQUIRE(st_writer_new(&w) == 0, "%s", titan_errmsg());
	int64_t ws[2] = { 4, 5 };
	st_writer_add(w, "W", ST_F32, 2, ws, W);
	snprintf(p, sizeof p, "%s/rank-00000.safetensors", dir);
	CHECK(st_writer_write(w, p) == 0, "%s", titan_errmsg());
	st_writer_free(w);
	t[0].slice_start[0] = 0;
	CHECK(ckpt_load(dir, t, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "tensor 'W' is F32 [4, 5], the manifest says F32 [4, 6]"),
	      "shard shape: %s", titan_errmsg());
	t[1].slice_start[1] = 0;
	CHECK(ckpt_load(dir, &t[1], 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "tensor 'V' missing from the shard file"),
	      "shard lacks V: %s", titan_errmsg());
}

/* A manifest for W [8, 6] with the given shards, over one shard file that
 * holds W's rows 0-3. */
static void write_gap_ckpt(const char *dir, const char *shards)
{
	char p[600];
	float W[24] = { 0 };
	int64_t ws[2] = { 4, 6 };
	st_writer *w;
	st_writer_new(&w);
	st_writer_add(w, "W", ST_F32, 2, ws, W);
	snprintf(p, sizeof p, "%s/rank-00000.safetensors", dir);
	st_writer_write(w, p);
	st_writer_free(w);
	snprintf(p, sizeof p, "%s/manifest.json", dir);
	FILE *fp = fopen(p, "w");
	fprintf(fp, "{\"format\": \"titan-checkpoint\", \"version\": 1, \"step\": 1, "
		"\"nranks\": 1, \"extra\": {}, \"tensors\": {\"W\": {\"dtype\": \"F32\", "
		"\"shape\": [8, 6], \"shards\": [%s]}}}", shards);
	fclose(fp);
}

static void test_bad_manifest(void)
{
	char dir[512];
	path_in(dir, sizeof dir, "gap");
	mkdir(dir, 0777);
	float out[48];
	ckpt_tensor t = { .name = "W", .ndim = 2, .shape = { 8, 6 }, .slice_shape = { 8, 6 },
			  .data = out };
	const char *top = "{\"file\": \"rank-00000.safetensors\", \"start\": [0, 0], "
			  "\"shape\": [4, 6]}";
	write_gap_ckpt(dir, top);
	CHECK(ckpt_load(dir, &t, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "the shards cover 24 of the 48 values requested"),
	      "gap: %s", titan_errmsg());
	t.slice_shape[0] = 4;
	CHECK(ckpt_load(dir, &t, 1) == 0, "the covered half: %s", titan_errmsg());

	char two[512];
	snprintf(two, sizeof two, "%s, {\"file\": \"rank-00000.safetensors\", "
		 "\"start\": [3, 0], \"shape\": [4, 6]}", top);
	write_gap_ckpt(dir, two);
	CHECK(ckpt_load(dir, &t, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "shards 0 (file"), "overlap: %s", titan_errmsg());

	write_gap_ckpt(dir, "{\"file\": \"../rank-00000.safetensors\", \"start\": [0, 0], "
		       "\"shape\": [4, 6]}");
	CHECK(ckpt_load(dir, &t, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "not a plain file name"), "path: %s", titan_errmsg());

	write_gap_ckpt(dir, "{\"file\": \"rank-00000.safetensors\", \"start\": [6, 0], "
		       "\"shape\": [4, 6]}");
	CHECK(ckpt_load(dir, &t, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "shard 0 (file 'rank-00000.safetensors') lies outside the tensor"), "outside: %s",
	      titan_errmsg());

	write_gap_ckpt(dir, "{\"file\": \"rank-00000.safetensors\", \"start\": [0], "
		       "\"shape\": [4, 6]}");
	CHECK(ckpt_load(dir, &t, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "$.tensors.W.shards[0].start: 1 dimensions, expected 2"),
	      "start: %s", titan_errmsg());
}

static void test_errors(void)
{
	char folder[512], p[600];
	path_in(folder, sizeof folder, "err");
	ckpt_tensor t = whole("w", 2, s_w);
	ckpt_saver *s;


	ckpt_tensor bad = t;
	bad.slice_start[0] = 1;
	REQUIRE(ckpt_saver_new(&s, folder, 1, true, NULL, NULL) == 0, "%s", titan_errmsg());
	CHECK(ckpt_save(s, 1, &bad, 1, NULL) == TITAN_EUSAGE && strstr(titan_errmsg(), "'w'"),
	      "slice past the end: %s", titan_errmsg());

	/* The writer thread fails: a file sits where the folder was. */
	CHECK(rmdir(folder) == 0, "rmdir");
	fclose(fopen(folder, "w"));
	CHECK(ckpt_save(s, 1, &t, 1, NULL) == 0, "staging failed: %s", titan_errmsg());
	titan_err(TITAN_EINTERNAL, "unrelated");
	int rc = ckpt_wait(s);
	CHECK(rc == TITAN_EIO && strstr(titan_errmsg(), "step-1.tmp"), "wait: %d %s", rc,
	      titan_errmsg());
	CHECK(ckpt_wait(s) == 0, "error reported twice");
	/* An error not collected by ckpt_wait comes out of the next save. */
	CHECK(ckpt_save(s, 2, &t, 1, NULL) == 0, "staging failed: %s", titan_errmsg());
	rc = ckpt_save(s, 3, &t, 1, NULL);
	CHECK(rc == TITAN_EIO && strstr(titan_errmsg(), "step-2.tmp"), "save: %d %s", rc,
	      titan_errmsg());
	/* Fixed, the saver goes on. */
	unlink(folder);
	mkdir(folder, 0777);
	CHECK(ckpt_save(s, 4, &t, 1, NULL) == 0, "%s", titan_errmsg());
	CHECK(ckpt_wait(s) == 0, "%s", titan_errmsg());
	ckpt_saver_free(s);
	snprintf(p, sizeof p, "%s/step-4", folder);
	CHECK(load_equal(p, &t, 1), "step-4 after the error");

	/* A manifest of another format. */
	snprintf(p, sizeof p, "%s/step-4/manifest.json", folder);
	FILE *fp = fopen(p, "w");
	fputs("{\"format\": \"titan-dataset\", \"version\": 1}", fp);
	fclose(fp);
	snprintf(p, sizeof p, "%s/step-4", folder);
	json_t *m;
	CHECK(ckpt_read_manifest(p, &m) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "'titan-dataset', expected 'titan-checkpoint'"),
	      "format: %s", titan_errmsg());
	free(t.data);
}

/* The element at (i, j) of a [rows, cols] tensor: its index, exact in fp32. */
static float at(int64_t i, int64_t j, int64_t cols)
{
	return (float)(i * cols + j);
}

/* W [7, 5] by rows over ranks 0..2 (3, 3, 1), C [4, 6] by columns over
 * ranks 2 and 1, b [5] whole on rank 0; declared out of rank order. */
static int write_multi(const char *dir, bool force)
{
	ckpt_writer *w;
	int rc = ckpt_writer_new(&w, dir, 5, force);
	if (rc)
		return rc;
	struct {
		int rank;
		ckpt_tensor t;
	} d[] = {
		{ 2, { "C", 2, { 4, 6 }, { 0, 0 }, { 4, 3 }, NULL } },
		{ 2, { "W", 2, { 7, 5 }, { 6, 0 }, { 1, 5 }, NULL } },
		{ 0, { "W", 2, { 7, 5 }, { 0, 0 }, { 3, 5 }, NULL } },
		{ 0, { "b", 1, { 5 }, { 0 }, { 5 }, NULL } },
		{ 1, { "W", 2, { 7, 5 }, { 3, 0 }, { 3, 5 }, NULL } },
		{ 1, { "C", 2, { 4, 6 }, { 0, 3 }, { 4, 3 }, NULL } },
	};
	size_t nd = sizeof d / sizeof d[0];
	for (size_t i = 0; !rc && i < nd; i++)
		rc = ckpt_writer_declare(w, d[i].rank, &d[i].t);
	/* Put order: ranks increasing, within a rank the declaration order. */
	for (int rank = 0; !rc && rank < 3; rank++) {
		for (size_t i = 0; !rc && i < nd; i++) {
			const ckpt_tensor *t = &d[i].t;
			if (d[i].rank != rank)
				continue;
			float buf[64];
			size_t n = 0;
			int64_t rows = t->ndim == 2 ? t->slice_shape[0] : 1;
			int64_t cols = t->slice_shape[t->ndim - 1];
			for (int64_t r = 0; r < rows; r++)
				for (int64_t c = 0; c < cols; c++)
					buf[n++] = (t->name[0] == 'b' ? 1000.0f : 0.0f) +
						   at(t->slice_start[0] + r,
						      t->ndim == 2 ? t->slice_start[1] + c : c,
						      t->shape[t->ndim - 1]) +
						   (t->name[0] == 'C' ? 500.0f : 0.0f);
			rc = ckpt_writer_put(w, buf, n);
		}
	}
	json_t *layout = json_pack("{s:i}", "dp_shard", 3);
	json_t *extra = json_pack("{s:s}", "note", "multi");
	if (!rc)
		rc = ckpt_writer_commit(w, layout, extra);
	json_decref(layout);
	json_decref(extra);
	ckpt_writer_free(w);
	return rc;
}

static void test_writer_reader(void)
{
	char folder[512], dir[600];
	path_in(folder, sizeof folder, "multi");
	mkdir(folder, 0777);
	snprintf(dir, sizeof dir, "%s/step-5", folder);
	REQUIRE(write_multi(dir, false) == 0, "%s", titan_errmsg());
	CHECK(exists(dir, "rank-00000.safetensors") && exists(dir, "rank-00001.safetensors") &&
	      exists(dir, "rank-00002.safetensors") && !exists(dir, "rank-00003.safetensors"),
	      "three rank files");
	CHECK(!exists(folder, "step-5.tmp"), "no step-5.tmp left");
	CHECK(write_multi(dir, false) == TITAN_EUSAGE && strstr(titan_errmsg(), "already exists"),
	      "no force: %s", titan_errmsg());
	CHECK(write_multi(dir, true) == 0, "force: %s", titan_errmsg());
	CHECK(!exists(folder, "step-5.old") && !exists(folder, "step-5.tmp"), "no leftovers");

	/* The folder opens its latest step. */
	ckpt_reader *r;
	REQUIRE(ckpt_reader_open(&r, folder) == 0, "%s", titan_errmsg());
	CHECK(!strcmp(ckpt_reader_dir(r), dir), "dir %s", ckpt_reader_dir(r));
	CHECK(ckpt_reader_step(r) == 5, "step %ld", ckpt_reader_step(r));
	CHECK(ckpt_reader_count(r) == 3, "count %zu", ckpt_reader_count(r));
	const json_t *m = ckpt_reader_manifest(r);
	CHECK(json_integer_value(json_object_get(json_object_get(m, "layout"), "dp_shard")) == 3,
	      "layout");
	CHECK(!strcmp(json_string_value(json_object_get(json_object_get(m, "extra"), "note")),
		      "multi"), "extra");
	const ckpt_tensor_info *ti = ckpt_reader_find(r, "W");
	REQUIRE(ti && ti->nshards == 3 && ti->shape[0] == 7, "W info");
	CHECK(ti->shards[0].has_checksum && !strcmp(ti->shards[0].file, "rank-00000.safetensors"),
	      "W shard 0");
	CHECK(!ckpt_reader_find(r, "nope"), "absent tensor");

	/* Rows 2..5 (three files), columns 1..3. */
	int64_t s0[2] = { 2, 1 }, sn[2] = { 4, 3 };
	float got[64];
	REQUIRE(ckpt_reader_read(r, "W", s0, sn, got) == 0, "%s", titan_errmsg());
	bool same = true;
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 3; j++)
			same &= got[i * 3 + j] == at(2 + i, 1 + j, 5);
	CHECK(same, "W[2:6, 1:4]");
	/* C across its two column shards, whole. */
	REQUIRE(ckpt_reader_read(r, "C", NULL, NULL, got) == 0, "%s", titan_errmsg());
	same = true;
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 6; j++)
			same &= got[i * 6 + j] == 500.0f + at(i, j, 6);
	CHECK(same, "C whole");
	int64_t bad0[2] = { 5, 0 }, badn[2] = { 3, 5 };
	CHECK(ckpt_reader_read(r, "W", bad0, badn, got) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "'W'"), "outside: %s", titan_errmsg());
	CHECK(ckpt_reader_read(r, "nope", NULL, NULL, got) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "'nope' not in the checkpoint"), "%s", titan_errmsg());
	CHECK(ckpt_reader_verify(r, NULL, NULL) == 0, "verify: %s", titan_errmsg());
	ckpt_reader_close(r);

	/* ckpt_load reads the same through one code path. */
	float wl[35];
	ckpt_tensor t = { .name = "W", .ndim = 2, .shape = { 7, 5 }, .slice_shape = { 7, 5 },
			  .data = wl };
	REQUIRE(ckpt_load(dir, &t, 1) == 0, "%s", titan_errmsg());
	CHECK(wl[34] == at(6, 4, 5) && wl[17] == at(3, 2, 5), "ckpt_load W");
}

static void test_writer_errors(void)
{
	char dir[512];
	path_in(dir, sizeof dir, "werr");
	ckpt_writer *w;
	float buf[16] = {0};
	ckpt_tensor a = { "A", 2, { 4, 2 }, { 0, 0 }, { 2, 2 }, NULL };
	ckpt_tensor a2 = { "A", 2, { 4, 2 }, { 1, 0 }, { 2, 2 }, NULL };

	REQUIRE(ckpt_writer_new(&w, dir, 1, false) == 0, "%s", titan_errmsg());
	CHECK(exists(check_scratch, "werr.tmp"), "werr.tmp while writing");
	CHECK(ckpt_writer_declare(w, 0, &a) == 0, "%s", titan_errmsg());
	CHECK(ckpt_writer_declare(w, 0, &a) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "declared twice"), "%s", titan_errmsg());
	CHECK(ckpt_writer_put(w, buf, 3) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "3 values put, the slice holds 4"), "%s", titan_errmsg());
	CHECK(ckpt_writer_put(w, buf, 4) == 0, "%s", titan_errmsg());
	CHECK(ckpt_writer_put(w, buf, 4) == TITAN_EUSAGE, "put past the end");
	CHECK(ckpt_writer_commit(w, NULL, NULL) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "tensor 'A': the slices cover 4 of its 8 values"),
	      "gap: %s", titan_errmsg());
	ckpt_writer_free(w);
	CHECK(!exists(check_scratch, "werr.tmp") && !exists(check_scratch, "werr"),
	      "free without commit removes werr.tmp");

	REQUIRE(ckpt_writer_new(&w, dir, 1, false) == 0, "%s", titan_errmsg());
	CHECK(ckpt_writer_declare(w, 0, &a) == 0 && ckpt_writer_declare(w, 1, &a2) == 0,
	      "%s", titan_errmsg());
	CHECK(ckpt_writer_put(w, buf, 4) == 0 && ckpt_writer_put(w, buf, 4) == 0, "%s",
	      titan_errmsg());
	CHECK(ckpt_writer_commit(w, NULL, NULL) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "tensor 'A': the slices of ranks 0 and 1 overlap"),
	      "overlap: %s", titan_errmsg());
	ckpt_writer_free(w);

	REQUIRE(ckpt_writer_new(&w, dir, 1, false) == 0, "%s", titan_errmsg());
	a.slice_shape[0] = 4;
	CHECK(ckpt_writer_declare(w, 0, &a) == 0, "%s", titan_errmsg());
	CHECK(ckpt_writer_commit(w, NULL, NULL) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "tensor 'A' of rank 0: no data put"), "%s",
	      titan_errmsg());
	ckpt_writer_free(w);
}

/* Rewrite dir/manifest.json through f. */
static void edit_manifest(const char *dir, void (*f)(json_t *))
{
	char p[600];
	snprintf(p, sizeof p, "%s/manifest.json", dir);
	json_t *m = json_load_file(p, 0, NULL);
	f(m);
	json_dump_file(m, p, JSON_INDENT(1));
	json_decref(m);
}

static json_t *w_shards(json_t *m)
{
	return json_object_get(json_object_get(json_object_get(m, "tensors"), "W"), "shards");
}

static void drop_shard(json_t *m)
{
	json_array_remove(w_shards(m), 1);
}

static void shift_shard(json_t *m)
{
	json_t *start = json_object_get(json_array_get(w_shards(m), 2), "start");
	json_array_set_new(start, 0, json_integer(5));
	json_t *shape = json_object_get(json_array_get(w_shards(m), 2), "shape");
	json_array_set_new(shape, 0, json_integer(1));
}

static void test_verify(void)
{
	char dir[512], p[600];
	path_in(dir, sizeof dir, "verify");
	REQUIRE(write_multi(dir, false) == 0, "%s", titan_errmsg());
	ckpt_reader *r;

	/* Flip one byte of W's data in rank 1's file (its last bytes: the
	 * file holds only W, 15 floats). */
	snprintf(p, sizeof p, "%s/rank-00001.safetensors", dir);
	FILE *fp = fopen(p, "r+b");
	REQUIRE(fp, "open %s", p);
	fseek(fp, 0, SEEK_END);
	long size = ftell(fp);
	fseek(fp, size - 2, SEEK_SET);
	int c = fgetc(fp);
	fseek(fp, size - 2, SEEK_SET);
	fputc(c ^ 0x10, fp);
	fclose(fp);
	REQUIRE(ckpt_reader_open(&r, dir) == 0, "%s", titan_errmsg());
	int rc = ckpt_reader_verify(r, NULL, NULL);
	CHECK(rc == TITAN_EFORMAT && strstr(titan_errmsg(), "rank-00001.safetensors") &&
	      strstr(titan_errmsg(), "tensor '") && strstr(titan_errmsg(), "checksum"),
	      "flipped byte: %s", titan_errmsg());
	ckpt_reader_close(r);

	REQUIRE(write_multi(dir, true) == 0, "%s", titan_errmsg());
	edit_manifest(dir, drop_shard);
	REQUIRE(ckpt_reader_open(&r, dir) == 0, "%s", titan_errmsg());
	rc = ckpt_reader_verify(r, NULL, NULL);
	CHECK(rc == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "tensor 'W': the shards cover 20 of its 35 values (a gap)"),
	      "gap: %s", titan_errmsg());
	ckpt_reader_close(r);

	REQUIRE(write_multi(dir, true) == 0, "%s", titan_errmsg());
	edit_manifest(dir, shift_shard);
	rc = ckpt_reader_open(&r, dir);
	CHECK(rc == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "tensor 'W': shards 1 (file 'rank-00001.safetensors') and "
		     "2 (file 'rank-00002.safetensors') overlap"), "overlap: %s", titan_errmsg());
}

static void test_attach(void)
{
	char folder[512], src[600], p[700];
	path_in(folder, sizeof folder, "attach");
	snprintf(src, sizeof src, "%s/tok-src.json", check_scratch);
	FILE *fp = fopen(src, "w");
	fputs("{\"model\": {}}", fp);
	fclose(fp);
	ckpt_tensor t = whole("w", 2, s_w);
	for (int async = 0; async < 2; async++) {
		ckpt_saver *s;
		REQUIRE(ckpt_saver_new(&s, folder, 0, async, NULL, NULL) == 0, "%s", titan_errmsg());
		CHECK(ckpt_saver_attach_file(s, "tokenizer.json", src) == 0, "%s", titan_errmsg());
		CHECK(ckpt_saver_attach_file(s, "../x", src) == TITAN_EUSAGE, "bad name");
		CHECK(ckpt_save(s, 3 + async, &t, 1, NULL) == 0, "%s", titan_errmsg());
		CHECK(ckpt_wait(s) == 0, "%s", titan_errmsg());
		ckpt_saver_free(s);
	}
	ckpt_reader *r;
	REQUIRE(ckpt_reader_open(&r, folder) == 0, "%s", titan_errmsg());
	CHECK(ckpt_reader_step(r) == 4, "latest is step 4");
	char *f = ckpt_reader_file(r, "tokenizer.json");
	CHECK(f != NULL, "tokenizer.json attached");
	titan_bytes b = {0};
	CHECK(f && file_read_all(f, &b) == 0 && b.n == 13 && !memcmp(b.v, "{\"model\": {}}", 13),
	      "attached bytes");
	bytes_free(&b);
	free(f);
	CHECK(ckpt_reader_file(r, "vocab.txt") == NULL, "absent file");
	const json_t *lay = json_object_get(ckpt_reader_manifest(r), "layout");
	CHECK(json_integer_value(json_object_get(lay, "tp")) == 1 &&
	      json_integer_value(json_object_get(lay, "pp")) == 1, "single-rank layout");
	CHECK(ckpt_reader_verify(r, NULL, NULL) == 0, "%s", titan_errmsg());
	ckpt_reader_close(r);
	snprintf(p, sizeof p, "%s/step-3", folder);
	CHECK(exists(p, "tokenizer.json"), "step-3 has it too");
	free(t.data);
}

/* A single-rank checkpoint of a small llama (uneven FSDP pieces under
 * dp_shard=3, tp=2: w1 has 64 tp-local rows), weights and moments random,
 * saved through ckpt_save with a tokenizer attached.  moments: 0 none,
 * 1 only exp_avg (damaged), 2 both. */
static int save_model(const char *folder, int moments, train_config *cfg,
		      llama_tensor_info **ti, int *nt, ckpt_tensor **ts, size_t *nts)
{
	/* Every model key set: no flavor file is looked up. */
	json_t *merged = json_pack("{s:{s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:b, s:f, "
				   "s:f, s:f, s:i, s:i, s:b, s:b}}", "model",
				   "dim", 48, "n_layers", 4, "n_heads", 6, "n_kv_heads", 2,
				   "vocab_size", 50, "multiple_of", 16, "ffn_dim_multiplier", 0.0,
				   "norm_eps", 1e-5, "rope_theta", 500000.0, "rope_scaling", 0,
				   "rope_scaling_factor", 8.0, "rope_low_freq_factor", 1.0,
				   "rope_high_freq_factor", 4.0, "rope_original_max_pos", 8192,
				   "max_seq_len", 4096, "tie_embeddings", 0, "depth_init", 1);
	int rc = config_from_json(cfg, merged, "test");
	json_decref(merged);
	if (rc || (rc = llama_tensors(&cfg->model, ti, nt)))
		return rc;
	static const char *const prefix[3] = { "", "optim.exp_avg.", "optim.exp_avg_sq." };
	*nts = 0;
	*ts = calloc((size_t)*nt * 3, sizeof **ts);
	for (int k = 0; k <= moments; k++)
		for (int i = 0; i < *nt; i++) {
			char *name = malloc(128);
			snprintf(name, 128, "%s%s", prefix[k], (*ti)[i].name);
			(*ts)[(*nts)++] = whole(name, (*ti)[i].ndim, (*ti)[i].shape);
		}
	char tok[600];
	snprintf(tok, sizeof tok, "%s/tok.json", check_scratch);
	FILE *fp = fopen(tok, "w");
	fputs("{\"tokenizer\": 1}", fp);
	fclose(fp);
	json_t *extra = json_pack("{s:O, s:{s:i}}", "config", cfg->json, "train_state", "step", 7);
	ckpt_saver *s;
	if ((rc = ckpt_saver_new(&s, folder, 0, false, NULL, NULL)))
		return rc;
	rc = ckpt_saver_attach_file(s, "tokenizer.json", tok);
	if (!rc)
		rc = ckpt_save(s, 7, *ts, *nts, extra);
	ckpt_saver_free(s);
	json_decref(extra);
	return rc;
}

static void free_model(train_config *cfg, llama_tensor_info *ti, ckpt_tensor *ts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free((char *)ts[i].name);
		free(ts[i].data);
	}
	free(ts);
	free(ti);
	config_free(cfg);
}

static int count_rank_files(const char *dir)
{
	int n = 0;
	for (int r = 0; r < 100; r++) {
		char name[64];
		snprintf(name, sizeof name, "rank-%05d.safetensors", r);
		n += exists(dir, name);
	}
	return n;
}

static void test_reshard(void)
{
	char src[512], out1[600], out2[600];
	path_in(src, sizeof src, "rs-src");
	snprintf(out1, sizeof out1, "%s/rs-par", check_scratch);
	snprintf(out2, sizeof out2, "%s/rs-back", check_scratch);
	train_config cfg;
	llama_tensor_info *ti;
	int nt;
	ckpt_tensor *ts;
	size_t nts;
	REQUIRE(save_model(src, 2, &cfg, &ti, &nt, &ts, &nts) == 0, "%s", titan_errmsg());
	REQUIRE(nts == (size_t)nt * 3, "tensors %zu", nts);

	ckpt_reader *r;
	REQUIRE(ckpt_reader_open(&r, src) == 0, "%s", titan_errmsg());
	par_layout l;
	REQUIRE(par_layout_parse("dp_shard=3,tp=2,pp=2", &l) == 0, "%s", titan_errmsg());
	REQUIRE(ckpt_reshard(r, out1, &l, false, NULL, NULL) == 0, "%s", titan_errmsg());
	CHECK(ckpt_reshard(r, out1, &l, false, NULL, NULL) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "already exists"), "%s", titan_errmsg());
	par_layout bad = { 1, 1, 1, 1, 4, 1 };
	CHECK(ckpt_reshard(r, out2, &bad, false, NULL, NULL) == TITAN_EUSAGE &&
	      !strcmp(titan_errmsg(), "tp=4 does not divide model.n_heads=6"), "%s",
	      titan_errmsg());
	ckpt_reader_close(r);

	CHECK(count_rank_files(out1) == 12, "12 rank files: %d", count_rank_files(out1));
	CHECK(exists(out1, "tokenizer.json"), "tokenizer carried");
	REQUIRE(ckpt_reader_open(&r, out1) == 0, "%s", titan_errmsg());
	CHECK(ckpt_reader_verify(r, NULL, NULL) == 0, "verify: %s", titan_errmsg());
	CHECK(ckpt_reader_step(r) == 7 && ckpt_reader_count(r) == nts, "step, count");
	const json_t *m = ckpt_reader_manifest(r);
	CHECK(json_integer_value(json_object_get(json_object_get(m, "layout"), "dp_shard")) == 3,
	      "layout");
	CHECK(json_integer_value(json_object_get(json_object_get(json_object_get(m, "extra"),
								 "train_state"), "step")) == 7,
	      "extra copied");
	/* Every shard is what par_ckpt_slice gives its rank, and back. */
	bool match = true;
	for (int i = 0; i < nt; i++) {
		for (int k = 0; k < 3; k++) {
			const ckpt_tensor_info *e = ckpt_reader_find(r, ts[k * nt + i].name);
			size_t want = 0;
			for (int rank = 0; e && rank < 12; rank++) {
				int64_t s0[2], sn[2];
				if (!par_ckpt_slice(&cfg.model, &l, rank, &ti[i], s0, sn))
					continue;
				char file[64];
				snprintf(file, sizeof file, "rank-%05d.safetensors", rank);
				bool found = false;
				for (size_t j = 0; j < e->nshards; j++)
					found |= !strcmp(e->shards[j].file, file) &&
						 e->shards[j].start[0] == s0[0] &&
						 e->shards[j].shape[0] == sn[0];
				match &= found;
				want++;
			}
			match &= e && e->nshards == want;
		}
	}
	CHECK(match, "shards follow par_ckpt_slice");
	const ckpt_tensor_info *w1 = ckpt_reader_find(r, "layers.3.feed_forward.w1.weight");
	CHECK(w1 && w1->nshards == 6 && w1->shards[4].shape[0] == 20 && w1->shards[5].start[0] == 64 + 44, "uneven FSDP piece");

	/* And back to one rank: bit-identical. */
	l = par_layout_single();
	REQUIRE(ckpt_reshard(r, out2, &l, false, NULL, NULL) == 0, "%s", titan_errmsg());
	ckpt_reader_close(r);
	CHECK(count_rank_files(out2) == 1, "one file");
	CHECK(load_equal_all(out2, ts, nts), "round trip bit-identical");
	free_model(&cfg, ti, ts, nts);
}

static void test_reshard_model_only(void)
{
	char src[512], out[600];
	path_in(src, sizeof src, "rs-model");
	snprintf(out, sizeof out, "%s/rs-model-out", check_scratch);
	train_config cfg;
	llama_tensor_info *ti;
	int nt;
	ckpt_tensor *ts;
	size_t nts;
	REQUIRE(save_model(src, 0, &cfg, &ti, &nt, &ts, &nts) == 0, "%s", titan_errmsg());
	ckpt_reader *r;
	REQUIRE(ckpt_reader_open(&r, src) == 0, "%s", titan_errmsg());
	par_layout l = { 1, 2, 2, 1, 2, 1 };
	REQUIRE(ckpt_reshard(r, out, &l, false, NULL, NULL) == 0, "%s", titan_errmsg());
	ckpt_reader_close(r);
	CHECK(count_rank_files(out) == 4, "replica 0 writes: %d files", count_rank_files(out));
	REQUIRE(ckpt_reader_open(&r, out) == 0, "%s", titan_errmsg());
	CHECK(ckpt_reader_count(r) == (size_t)nt, "model only: %zu", ckpt_reader_count(r));
	CHECK(ckpt_reader_verify(r, NULL, NULL) == 0, "%s", titan_errmsg());
	ckpt_reader_close(r);
	CHECK(load_equal_all(out, ts, nts), "weights");
	free_model(&cfg, ti, ts, nts);

	path_in(src, sizeof src, "rs-half");
	snprintf(out, sizeof out, "%s/rs-half-out", check_scratch);
	REQUIRE(save_model(src, 1, &cfg, &ti, &nt, &ts, &nts) == 0, "%s", titan_errmsg());
	REQUIRE(ckpt_reader_open(&r, src) == 0, "%s", titan_errmsg());
	CHECK(ckpt_reshard(r, out, &l, false, NULL, NULL) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "tensor 'optim.exp_avg_sq.tok_embeddings.weight' not in the checkpoint"),
	      "%s", titan_errmsg());
	ckpt_reader_close(r);
	free_model(&cfg, ti, ts, nts);
}

/* More shard files than the reader keeps mapped (64): 90 ranks, one row each. */
static void test_many_files(void)
{
	char dir[512];
	path_in(dir, sizeof dir, "many");
	enum { R = 90, C = 3 };
	ckpt_writer *w;
	REQUIRE(ckpt_writer_new(&w, dir, 2, false) == 0, "%s", titan_errmsg());
	int rc = 0;
	for (int r = 0; !rc && r < R; r++) {
		ckpt_tensor a = { "A", 2, { R, C }, { r, 0 }, { 1, C }, NULL };
		ckpt_tensor b = { "B", 1, { R }, { R - 1 - r }, { 1 }, NULL };
		rc = ckpt_writer_declare(w, r, &a);
		if (!rc)
			rc = ckpt_writer_declare(w, r, &b);
	}
	for (int r = 0; !rc && r < R; r++) {
		float row[C] = { (float)r, (float)r + 0.25f, (float)r + 0.5f }, x = (float)(R - 1 - r);
		rc = ckpt_writer_put(w, row, C);
		if (!rc)
			rc = ckpt_writer_put(w, &x, 1);
	}
	if (!rc)
		rc = ckpt_writer_commit(w, NULL, NULL);
	ckpt_writer_free(w);
	REQUIRE(rc == 0, "%s", titan_errmsg());
	ckpt_reader *r;
	REQUIRE(ckpt_reader_open(&r, dir) == 0, "%s", titan_errmsg());
	static float a[R * C], b[R];
	for (int pass = 0; pass < 2; pass++) {
		CHECK(ckpt_reader_read(r, "A", NULL, NULL, a) == 0 &&
		      ckpt_reader_read(r, "B", NULL, NULL, b) == 0, "%s", titan_errmsg());
		bool same = true;
		for (int i = 0; i < R; i++)
			same &= a[i * C] == (float)i && a[i * C + 2] == (float)i + 0.5f &&
				b[i] == (float)i;
		CHECK(same, "pass %d", pass);
	}
	CHECK(ckpt_reader_verify(r, NULL, NULL) == 0, "%s", titan_errmsg());
	ckpt_reader_close(r);
}

/* ckpt_saver_new over the self communicator and over none: the layout
 * given is recorded, NULL records the default, the saves are the same. */
static void test_saver_open(void)
{
	char folder[512], p[600];
	comm *c;
	REQUIRE(comm_world(&c, 10) == 0, "%s", titan_errmsg());
	REQUIRE(comm_size(c) == 1, "a launcher started this test: %d ranks", comm_size(c));
	ckpt_tensor t[2] = { whole("w", 2, s_w), whole("b", 1, s_b) };
	json_t *layout = json_pack("{s:i, s:i, s:i, s:i, s:i}", "pp", 1, "dp_replicate", 1,
				   "dp_shard", 1, "cp", 1, "tp", 1);
	json_object_set_new(layout, "note", json_string("given"));
	json_t *extra = json_pack("{s:i}", "k", 3);

	for (int mode = 0; mode < 4; mode++) {
		bool async = mode & 1, self = mode & 2;
		char name[24];
		snprintf(name, sizeof name, "open-%d", mode);
		path_in(folder, sizeof folder, name);
		ckpt_saver *s;
		REQUIRE(ckpt_saver_new(&s, folder, 2, async, self ? c : NULL,
					self ? layout : NULL) == 0, "%s", titan_errmsg());
		CHECK(ckpt_saver_async(s) == async, "mode %d: async %d", mode,
		      ckpt_saver_async(s));
		for (long step = 1; step <= 3; step++)
			CHECK(ckpt_save(s, step, t, 2, extra) == 0, "mode %d step %ld: %s", mode,
			      step, titan_errmsg());
		CHECK(ckpt_wait(s) == 0, "%s", titan_errmsg());
		ckpt_saver_free(s);
		CHECK(!exists(folder, "step-1") && exists(folder, "step-3"), "mode %d: pruning",
		      mode);
		snprintf(p, sizeof p, "%s/step-3", folder);
		CHECK(load_equal_all(p, t, 2), "mode %d: data", mode);
		json_t *m;
		REQUIRE(ckpt_read_manifest(p, &m) == 0, "%s", titan_errmsg());
		json_t *got = json_object_get(m, "layout");
		CHECK(self ? json_equal(got, layout)
			   : json_integer_value(json_object_get(got, "dp_shard")) == 1 &&
			     !json_object_get(got, "note"), "mode %d: layout", mode);
		CHECK(json_equal(json_object_get(m, "extra"), extra), "mode %d: extra", mode);
		json_decref(m);
	}

	/* n = 0 on the only rank: a checkpoint of no tensors, extra only. */
	path_in(folder, sizeof folder, "open-empty");
	ckpt_saver *s;
	REQUIRE(ckpt_saver_new(&s, folder, 0, false, c, NULL) == 0, "%s", titan_errmsg());
	CHECK(ckpt_save(s, 5, NULL, 0, extra) == 0, "%s", titan_errmsg());
	ckpt_saver_free(s);
	ckpt_reader *r;
	snprintf(p, sizeof p, "%s/step-5", folder);
	REQUIRE(ckpt_reader_open(&r, p) == 0, "%s", titan_errmsg());
	CHECK(ckpt_reader_count(r) == 0, "%zu tensors", ckpt_reader_count(r));
	CHECK(json_integer_value(json_object_get(ckpt_reader_manifest(r), "nranks")) == 0,
	      "nranks");
	CHECK(ckpt_reader_verify(r, NULL, NULL) == 0, "%s", titan_errmsg());
	ckpt_reader_close(r);
	CHECK(!exists(p, "rank-00000.safetensors"), "a file of no slices");

	/* A layout that is no object; a bad slice is still refused at once. */
	json_t *arr = json_array();
	CHECK(ckpt_saver_new(&s, folder, 0, false, c, arr) == TITAN_EUSAGE && !s &&
	      strstr(titan_errmsg(), "layout"), "%s", titan_errmsg());
	json_decref(arr);
	REQUIRE(ckpt_saver_new(&s, folder, 0, true, c, NULL) == 0, "%s", titan_errmsg());
	ckpt_tensor bad = t[0];
	bad.slice_shape[1] = 9;
	CHECK(ckpt_save(s, 6, &bad, 1, NULL) == TITAN_EUSAGE && strstr(titan_errmsg(), "'w'"),
	      "%s", titan_errmsg());
	CHECK(ckpt_wait(s) == 0, "%s", titan_errmsg());
	ckpt_saver_free(s);
	CHECK(!exists(folder, "step-6") && !exists(folder, "step-6.tmp"), "step-6 written");

	json_decref(extra);
	json_decref(layout);
	free(t[0].data);
	free(t[1].data);
	comm_free(c);
}

/* The pieces of the collective save in one process: part writers for two
 * ranks, their records merged by the committing writer. */
static void test_part_merge(void)
{
	char dir[512];
	path_in(dir, sizeof dir, "merge/step-4");
	mkdir(dirname_of(dir), 0777);
	float a[8], b[8];
	for (int i = 0; i < 8; i++) {
		a[i] = (float)i;
		b[i] = (float)(8 + i);
	}
	ckpt_tensor top = { "M", 2, { 4, 4 }, { 0, 0 }, { 2, 4 }, a };
	ckpt_tensor bottom = { "M", 2, { 4, 4 }, { 2, 0 }, { 2, 4 }, b };
	ckpt_writer *w, *p0, *p1;
	REQUIRE(ckpt_writer_new(&w, dir, 4, false) == 0, "%s", titan_errmsg());
	json_t *r0 = NULL, *r1 = NULL;
	REQUIRE(ckpt_writer_part(&p0, dir, 4, 0) == 0 && ckpt_writer_part(&p1, dir, 4, 1) == 0,
		"%s", titan_errmsg());
	CHECK(ckpt_writer_declare(p0, 1, &top) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "writes no other file"), "%s", titan_errmsg());
	CHECK(ckpt_writer_declare(p0, 0, &top) == 0 && ckpt_writer_put(p0, a, 8) == 0 &&
	      ckpt_writer_records(p0, &r0) == 0, "%s", titan_errmsg());
	CHECK(ckpt_writer_declare(p1, 1, &bottom) == 0, "%s", titan_errmsg());
	CHECK(ckpt_writer_records(p1, &r1) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "no data put"), "records before put: %s", titan_errmsg());
	CHECK(ckpt_writer_put(p1, b, 8) == 0 && ckpt_writer_records(p1, &r1) == 0, "%s",
	      titan_errmsg());
	CHECK(ckpt_writer_commit(p1, NULL, NULL) == TITAN_EUSAGE, "a part committed");
	ckpt_writer_free(p0);
	ckpt_writer_free(p1);
	REQUIRE(r0 && r1, "no records");
	CHECK(json_array_size(r0) == 1 && json_array_size(r1) == 1, "records");

	/* The records of one rank are not another's. */
	CHECK(ckpt_writer_merge(w, 1, r0, "r0") == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "not a slice record of rank 1"), "%s", titan_errmsg());
	CHECK(ckpt_writer_merge(w, 0, r0, "r0") == 0 && ckpt_writer_merge(w, 1, r1, "r1") == 0,
	      "%s", titan_errmsg());
	REQUIRE(ckpt_writer_commit(w, NULL, NULL) == 0, "%s", titan_errmsg());
	ckpt_writer_free(w);
	ckpt_reader *r;
	REQUIRE(ckpt_reader_open(&r, dir) == 0, "%s", titan_errmsg());
	float got[16];
	CHECK(ckpt_reader_read(r, "M", NULL, NULL, got) == 0, "%s", titan_errmsg());
	bool same = true;
	for (int i = 0; i < 16; i++)
		same &= got[i] == (float)i;
	CHECK(same, "merged data");
	CHECK(ckpt_reader_verify(r, NULL, NULL) == 0, "%s", titan_errmsg());
	ckpt_reader_close(r);

	/* Two ranks that disagree on a global shape; a gap. */
	path_in(dir, sizeof dir, "merge/step-5");
	REQUIRE(ckpt_writer_new(&w, dir, 5, false) == 0, "%s", titan_errmsg());
	json_t *e = json_array_get(r1, 0);
	json_object_set_new(e, "shape", json_pack("[i, i]", 5, 4));
	CHECK(ckpt_writer_merge(w, 0, r0, "r0") == 0, "%s", titan_errmsg());
	CHECK(ckpt_writer_merge(w, 1, r1, "r1") == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "two global shapes, [4, 4] and [5, 4]"), "%s",
	      titan_errmsg());
	CHECK(ckpt_writer_commit(w, NULL, NULL) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "cover 8 of its 16"), "%s", titan_errmsg());
	ckpt_writer_free(w);
	CHECK(!exists(dirname_of(dir), "step-5") && !exists(dirname_of(dir), "step-5.tmp"),
	      "step-5 left");
	json_decref(r0);
	json_decref(r1);
}

int main(void)
{
	if (check_scratch_open("test_ckpt"))
		return 1;
	RUN(test_save_load);
	RUN(test_async);
	RUN(test_prune_latest);
	RUN(test_reslice);
	RUN(test_bad_manifest);
	RUN(test_errors);
	RUN(test_writer_reader);
	RUN(test_writer_errors);
	RUN(test_verify);
	RUN(test_attach);
	RUN(test_reshard);
	RUN(test_reshard_model_only);
	RUN(test_many_files);
	RUN(test_saver_open);
	RUN(test_part_merge);
	check_rmtree(check_scratch);
	return check_done();
}
