/* test_ckpt.c - checkpoint directories: save and load, async, pruning,
 * "latest", loading into a slicing other than the saved one, errors. */
#include "core/base.h"
#include "ckpt/ckpt.h"
#include "ckpt/safetensors.h"
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
	char p[600];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return access(p, F_OK) == 0;
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
	REQUIRE(ckpt_saver_new(&s, folder, 0, false, 0, 1) == 0, "%s", titan_errmsg());
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
	REQUIRE(ckpt_saver_new(&s, folder, 0, false, 0, 1) == 0, "%s", titan_errmsg());
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
	REQUIRE(ckpt_saver_new(&s, folder, 0, true, 0, 1) == 0, "%s", titan_errmsg());
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
	REQUIRE(ckpt_saver_new(&s, folder, 2, true, 0, 1) == 0, "%s", titan_errmsg());
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
	REQUIRE(ckpt_saver_new(&s, folder, 2, false, 0, 1) == 0, "%s", titan_errmsg());
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
	      strstr(titan_errmsg(), "shards 0 and 1 overlap"), "overlap: %s", titan_errmsg());

	write_gap_ckpt(dir, "{\"file\": \"../rank-00000.safetensors\", \"start\": [0, 0], "
		       "\"shape\": [4, 6]}");
	CHECK(ckpt_load(dir, &t, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "not a plain file name"), "path: %s", titan_errmsg());

	write_gap_ckpt(dir, "{\"file\": \"rank-00000.safetensors\", \"start\": [6, 0], "
		       "\"shape\": [4, 6]}");
	CHECK(ckpt_load(dir, &t, 1) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "shard 0 lies outside the tensor"), "outside: %s",
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

	REQUIRE(ckpt_saver_new(&s, folder, 1, false, 1, 2) == 0, "%s", titan_errmsg());
	CHECK(ckpt_save(s, 1, &t, 1, NULL) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "multi-rank"), "nranks 2: %s", titan_errmsg());
	ckpt_saver_free(s);
	CHECK(ckpt_saver_new(&s, folder, 1, false, 2, 2) == TITAN_EUSAGE, "rank 2 of 2");

	ckpt_tensor bad = t;
	bad.slice_start[0] = 1;
	REQUIRE(ckpt_saver_new(&s, folder, 1, true, 0, 1) == 0, "%s", titan_errmsg());
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
	check_rmtree(check_scratch);
	return check_done();
}
