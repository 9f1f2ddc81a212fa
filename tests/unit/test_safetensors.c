/* test_safetensors.c - safetensors round trips, files from Python's struct
 * and json modules in both directions, and every check on a bad header. */
#include "core/base.h"
#include "ckpt/safetensors.h"
#include "check.h"

#include <sys/stat.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"

static void path_in(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", check_scratch, name);
}

static void test_roundtrip(void)
{
	char path[512];
	path_in(path, sizeof path, "rt.safetensors");

	float f32[6] = { 1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f };
	int64_t i64[4] = { INT64_MIN, -1, 0, INT64_MAX };
	uint16_t bf16[8] = { 0x3f80, 0xbf80, 0, 1, 2, 3, 0x7f80, 0xffff };
	uint8_t bools[5] = { 1, 0, 1, 1, 0 };
	double scalar = 3.141592653589793;
	static const struct {
		const char *name;
		st_dtype dtype;
		int ndim;
		int64_t shape[3];
	} want[] = {
		{ "model.w", ST_F32, 2, { 2, 3 } },
		{ "ids", ST_I64, 1, { 4 } },
		{ "half", ST_BF16, 3, { 2, 2, 2 } },
		{ "mask", ST_BOOL, 1, { 5 } },
		{ "empty", ST_U8, 2, { 0, 3 } },
		{ "pi", ST_F64, 0, { 0 } },
	};
	const void *data[] = { f32, i64, bf16, bools, NULL, &scalar };

	st_writer *w;
	REQUIRE(st_writer_new(&w) == 0, "%s", titan_errmsg());
	for (size_t i = 0; i < ARRAY_SIZE(want); i++)
		CHECK(st_writer_add(w, want[i].name, want[i].dtype, want[i].ndim,
				    want[i].shape, data[i]) == 0, "%s", titan_errmsg());
	CHECK(st_writer_add(w, "ids", ST_F32, 1, want[0].shape, f32) == TITAN_EUSAGE,
	      "duplicate name accepted");
	CHECK(st_writer_meta(w, "format", "pt") == 0, "%s", titan_errmsg());
	CHECK(st_writer_meta(w, "note", "ünïcode \"quoted\"") == 0, "%s", titan_errmsg());
	REQUIRE(st_writer_write(w, path) == 0, "%s", titan_errmsg());
	st_writer_free(w);

	st_file *f;
	REQUIRE(st_open(&f, path) == 0, "%s", titan_errmsg());
	CHECK(f->n == ARRAY_SIZE(want), "n=%zu", f->n);
	CHECK(f->data_off % 8 == 0, "data_off=%zu", f->data_off);
	size_t total = 0;
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		const st_tensor *t = st_find(f, want[i].name);
		REQUIRE(t, "'%s' missing", want[i].name);
		CHECK(t->dtype == want[i].dtype, "'%s' dtype %s", t->name,
		      st_dtype_name(t->dtype));
		CHECK(t->ndim == want[i].ndim, "'%s' ndim %d", t->name, t->ndim);
		size_t bytes = st_dtype_size(t->dtype);
		for (int d = 0; d < t->ndim; d++) {
			CHECK(t->shape[d] == want[i].shape[d], "'%s' dim %d", t->name, d);
			bytes *= (size_t)want[i].shape[d];
		}
		CHECK(t->end - t->begin == bytes, "'%s' bytes", t->name);
		if (bytes)
			CHECK(!memcmp(st_data(f, t), data[i], bytes), "'%s' data", t->name);
		total += bytes;
	}
	/* Written in the order added, contiguous. */
	CHECK(!strcmp(f->tensors[0].name, "model.w") && f->tensors[0].begin == 0,
	      "first tensor '%s'", f->tensors[0].name);
	CHECK(f->size == f->data_off + total, "size %zu", f->size);
	CHECK(st_find(f, "nope") == NULL, "found a missing tensor");
	CHECK(st_meta(f, "format") && !strcmp(st_meta(f, "format"), "pt"), "format");
	CHECK(st_meta(f, "note") && !strcmp(st_meta(f, "note"), "ünïcode \"quoted\""),
	      "note");
	CHECK(st_meta(f, "absent") == NULL, "absent meta");
	CHECK(st_dtype_size(ST_BF16) == 2 && st_dtype_size(ST_U64) == 8 &&
	      !strcmp(st_dtype_name(ST_BOOL), "BOOL"), "dtype table");
	st_close(f);

	/* No temporary left next to it. */
	char tmpname[600];
	snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
	CHECK(access(tmpname, F_OK) != 0, "'%s' left behind", tmpname);
}

static int run_python(const char *script, char *out, size_t cap)
{
	char cmd[1024];
	char spath[512];
	path_in(spath, sizeof spath, "script.py");
	FILE *fp = fopen(spath, "w");
	if (!fp)
		return -1;
	fputs(script, fp);
	fclose(fp);
	snprintf(cmd, sizeof cmd, PYTHON " %s %s", spath, check_scratch);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	size_t n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	return pclose(p);
}

/* Python writes the file the way safetensors' own writer does, with the
 * header unpadded and the JSON keys not in data order. */
static const char py_write[] =
	"import json, struct, sys\n"
	"d = sys.argv[1]\n"
	"a = struct.pack('<6f', 1, 2, 3, 4, 5, 6.5)\n"
	"b = struct.pack('<3i', -7, 0, 9)\n"
	"h = {'zz.b': {'dtype': 'I32', 'shape': [3], 'data_offsets': [24, 36]},\n"
	"     '__metadata__': {'format': 'pt'},\n"
	"     'aa.a': {'dtype': 'F32', 'shape': [3, 2], 'data_offsets': [0, 24]}}\n"
	"s = json.dumps(h).encode()\n"
	"open(d + '/py.safetensors', 'wb').write(struct.pack('<Q', len(s)) + s + a + b)\n"
	"print('ok')\n";

static const char py_read[] =
	"import json, struct, sys\n"
	"raw = open(sys.argv[1] + '/c.safetensors', 'rb').read()\n"
	"n = struct.unpack('<Q', raw[:8])[0]\n"
	"h = json.loads(raw[8:8 + n])\n"
	"base = 8 + n\n"
	"for k in sorted(h):\n"
	"    if k == '__metadata__':\n"
	"        print('meta', json.dumps(h[k], sort_keys=True)); continue\n"
	"    e = h[k]; b, en = e['data_offsets']\n"
	"    v = struct.unpack('<%df' % ((en - b) // 4), raw[base + b:base + en])\n"
	"    print(k, e['dtype'], e['shape'], ' '.join('%g' % x for x in v))\n"
	"print('aligned', n % 8 == 0, 'size', len(raw) == base + 40)\n";

static void test_python(void)
{
	if (access(PYTHON, X_OK))
		SKIP(PYTHON " not found");
	char out[4096], path[512];
	REQUIRE(run_python(py_write, out, sizeof out) == 0, "python failed: %s", out);
	path_in(path, sizeof path, "py.safetensors");
	st_file *f;
	REQUIRE(st_open(&f, path) == 0, "%s", titan_errmsg());
	CHECK(f->n == 2, "n=%zu", f->n);
	/* tensors[] is in data order whatever the JSON order. */
	CHECK(!strcmp(f->tensors[0].name, "aa.a"), "first '%s'", f->tensors[0].name);
	const st_tensor *a = st_find(f, "aa.a"), *b = st_find(f, "zz.b");
	REQUIRE(a && b, "tensors missing");
	float av[6];
	int32_t bv[3];
	memcpy(av, st_data(f, a), sizeof av);
	memcpy(bv, st_data(f, b), sizeof bv);
	CHECK(a->ndim == 2 && a->shape[0] == 3 && a->shape[1] == 2, "shape of aa.a");
	CHECK(av[0] == 1 && av[5] == 6.5f, "aa.a = %g .. %g", av[0], av[5]);
	CHECK(b->dtype == ST_I32 && bv[0] == -7 && bv[2] == 9, "zz.b");
	CHECK(st_meta(f, "format") && !strcmp(st_meta(f, "format"), "pt"), "meta");
	st_close(f);

	/* And the other way. */
	float x[6] = { 0.5f, 1, 2, 3, 4, 5 }, y[4] = { -1, -2, -3, -4 };
	int64_t sx[2] = { 2, 3 }, sy[1] = { 4 };
	st_writer *w;
	REQUIRE(st_writer_new(&w) == 0, "%s", titan_errmsg());
	st_writer_add(w, "x", ST_F32, 2, sx, x);
	st_writer_add(w, "y", ST_F32, 1, sy, y);
	st_writer_meta(w, "k", "v");
	path_in(path, sizeof path, "c.safetensors");
	REQUIRE(st_writer_write(w, path) == 0, "%s", titan_errmsg());
	st_writer_free(w);
	REQUIRE(run_python(py_read, out, sizeof out) == 0, "python failed: %s", out);
	const char *want = "meta {\"k\": \"v\"}\n"
			   "x F32 [2, 3] 0.5 1 2 3 4 5\n"
			   "y F32 [4] -1 -2 -3 -4\n"
			   "aligned True size True\n";
	CHECK(!strcmp(out, want), "python read:\n%s", out);
}

/* A file of the u64 length of json, json, then data_bytes zero bytes. */
static void write_st(const char *path, uint64_t hlen, const char *json, size_t data_bytes)
{
	FILE *fp = fopen(path, "wb");
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(hlen >> (8 * i));
	fwrite(le, 1, 8, fp);
	fwrite(json, 1, strlen(json), fp);
	for (size_t i = 0; i < data_bytes; i++)
		fputc(0, fp);
	fclose(fp);
}

static void test_bad_headers(void)
{
	static const struct {
		const char *json;
		size_t data;
		const char *msg;        /* a part of the message */
	} bad[] = {
		{ "[1, 2]", 0, "header: expected a JSON object" },
		{ "{\"a\": ", 0, "header: line 1" },
		{ "{\"a\": 5}", 0, "tensor 'a': expected an object" },
		{ "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
		  "tensor 'a': dtype: expected a string" },
		{ "{\"a\": {\"dtype\": \"F8\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
		  "tensor 'a': unknown dtype 'F8'" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4,
		  "tensor 'a': shape: expected an array" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4,
		  "tensor 'a': shape[0]: expected a non-negative integer" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
		  "tensor 'a': shape[0]" },
		{ "{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], "
		  "\"data_offsets\": [0, 1]}}", 1, "tensor 'a': shape has 9 dimensions, at most 8" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
		  "tensor 'a': data_offsets: expected [begin, end]" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4,
		  "tensor 'a': data_offsets: expected [begin, end]" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 0]}}", 4,
		  "tensor 'a': data_offsets: expected 0 <= begin <= end" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 8,
		  "tensor 'a': data_offsets span 4 bytes, shape and dtype need 8" },
		{ "{\"a\": {\"dtype\": \"F64\", \"shape\": [1099511627776, 1099511627776, 1099511627776], "
		  "\"data_offsets\": [0, 8]}}", 8, "tensor 'a': shape too large" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 8,
		  "tensor 'a': data ends at byte 12, past the 8 bytes of data" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
		  "\"b\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
		  "tensor 'b' overlaps tensor 'a'" },
		{ "{\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}, "
		  "\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 16,
		  "tensor 'b' overlaps tensor 'a'" },
		{ "{\"__metadata__\": {\"k\": 1}}", 0, "__metadata__.k: expected a string" },
		{ "{\"__metadata__\": [\"k\"]}", 0, "__metadata__: expected an object" },
		{ "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
		  "\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
		  "duplicate object key" },
	};
	char path[512];
	path_in(path, sizeof path, "bad.safetensors");
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		write_st(path, strlen(bad[i].json), bad[i].json, bad[i].data);
		st_file *f = NULL;
		int rc = st_open(&f, path);
		CHECK(rc == TITAN_EFORMAT, "case %zu: rc %d", i, rc);
		CHECK(strstr(titan_errmsg(), bad[i].msg) && strstr(titan_errmsg(), path),
		      "case %zu: message '%s', want '%s'", i, titan_errmsg(), bad[i].msg);
		CHECK(f == NULL, "case %zu: file handed out", i);
		st_close(f);
	}

	/* Sizes: too short, header past the file, header past 100 MB. */
	FILE *fp = fopen(path, "wb");
	fwrite("\x02\0\0", 1, 3, fp);
	fclose(fp);
	st_file *f = NULL;
	CHECK(st_open(&f, path) == TITAN_EFORMAT && strstr(titan_errmsg(), "too short"),
	      "short: %s", titan_errmsg());
	write_st(path, 100, "{}", 0);
	CHECK(st_open(&f, path) == TITAN_EFORMAT && strstr(titan_errmsg(), "header size 100"),
	      "past the file: %s", titan_errmsg());
	write_st(path, (uint64_t)1 << 62, "{}", 0);
	CHECK(st_open(&f, path) == TITAN_EFORMAT && strstr(titan_errmsg(), "header size"),
	      "huge: %s", titan_errmsg());
	CHECK(st_open(&f, check_scratch) == TITAN_EIO, "a directory opened");
	path_in(path, sizeof path, "absent.safetensors");
	CHECK(st_open(&f, path) == TITAN_EIO && strstr(titan_errmsg(), "absent.safetensors"),
	      "missing file: %s", titan_errmsg());
	CHECK(f == NULL, "file handed out");
}

/* What a reader must accept: unsorted offsets, zero-size tensors anywhere,
 * padding spaces, an empty header, unused bytes after the data. */
static void test_good_headers(void)
{
	char path[512];
	path_in(path, sizeof path, "good.safetensors");
	const char *j = "{\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}, "
			"\"z\": {\"dtype\": \"F32\", \"shape\": [0, 5], \"data_offsets\": [4, 4]}, "
			"\"a\": {\"dtype\": \"U16\", \"shape\": [2, 2], \"data_offsets\": [0, 8]}}    ";
	write_st(path, strlen(j), j, 20);
	st_file *f;
	REQUIRE(st_open(&f, path) == 0, "%s", titan_errmsg());
	CHECK(f->n == 3, "n=%zu", f->n);
	CHECK(f->tensors[0].begin <= f->tensors[1].begin &&
	      f->tensors[1].begin <= f->tensors[2].begin, "not in data order");
	CHECK(f->nmeta == 0, "meta");
	st_close(f);

	write_st(path, 2, "{}", 0);
	REQUIRE(st_open(&f, path) == 0, "%s", titan_errmsg());
	CHECK(f->n == 0, "n=%zu", f->n);
	st_close(f);
}

static bool file_exists(const char *p)
{
	return access(p, F_OK) == 0;
}

/* The streaming writer: tensors in pieces, zero-byte tensors, byte-count
 * errors, and an abandoned stream leaves nothing behind. */
static void test_stream(void)
{
	char path[512], tmp[600];
	path_in(path, sizeof path, "stream.safetensors");
	snprintf(tmp, sizeof tmp, "%s.tmp", path);

	float a[10], b[3];
	for (int i = 0; i < 10; i++)
		a[i] = (float)i * 0.5f;
	for (int i = 0; i < 3; i++)
		b[i] = -(float)i;
	int64_t sa[2] = { 2, 5 }, sb[1] = { 3 }, se[1] = { 0 };

	st_stream *w;
	REQUIRE(st_stream_new(&w) == 0, "%s", titan_errmsg());
	CHECK(st_stream_declare(w, "a", ST_F32, 2, sa) == 0, "%s", titan_errmsg());
	CHECK(st_stream_declare(w, "e", ST_F32, 1, se) == 0, "%s", titan_errmsg());
	CHECK(st_stream_declare(w, "b", ST_F32, 1, sb) == 0, "%s", titan_errmsg());
	CHECK(st_stream_declare(w, "a", ST_F32, 1, sb) == TITAN_EUSAGE, "duplicate");
	CHECK(st_stream_meta(w, "format", "pt") == 0, "%s", titan_errmsg());
	CHECK(st_stream_data_bytes(w) == 52, "data bytes %llu",
	      (unsigned long long)st_stream_data_bytes(w));
	REQUIRE(st_stream_begin(w, path) == 0, "%s", titan_errmsg());
	CHECK(file_exists(tmp) && !file_exists(path), "PATH.tmp while streaming");
	CHECK(st_stream_declare(w, "late", ST_F32, 1, sb) == TITAN_EUSAGE, "late declare");
	/* a in three pieces, the last one running into b. */
	CHECK(st_stream_put(w, a, 7) == 0, "%s", titan_errmsg());
	CHECK(st_stream_put(w, (const char *)a + 7, 20) == 0, "%s", titan_errmsg());
	uint8_t joint[13 + 4];
	memcpy(joint, (const char *)a + 27, 13);
	memcpy(joint + 13, b, 4);
	CHECK(st_stream_put(w, joint, sizeof joint) == 0, "%s", titan_errmsg());
	CHECK(st_stream_finish(w) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "tensor 'b': 4 of its 12 bytes written"),
	      "short: %s", titan_errmsg());
	CHECK(st_stream_put(w, b + 1, 12) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "4 bytes past the end"), "long: %s", titan_errmsg());
	CHECK(st_stream_finish(w) == 0, "%s", titan_errmsg());
	st_stream_free(w);
	CHECK(file_exists(path) && !file_exists(tmp), "renamed into place");

	st_file *f;
	REQUIRE(st_open(&f, path) == 0, "%s", titan_errmsg());
	CHECK(f->data_off % 8 == 0, "aligned data");
	const st_tensor *ta = st_find(f, "a"), *tb = st_find(f, "b"), *te = st_find(f, "e");
	REQUIRE(ta && tb && te, "tensors");
	CHECK(!memcmp(st_data(f, ta), a, sizeof a) && !memcmp(st_data(f, tb), b, sizeof b),
	      "data");
	CHECK(te->begin == te->end && !strcmp(st_meta(f, "format"), "pt"), "empty, meta");
	st_close(f);

	/* Abandoned after begin: PATH.tmp goes, PATH is untouched. */
	REQUIRE(st_stream_new(&w) == 0, "%s", titan_errmsg());
	CHECK(st_stream_declare(w, "b", ST_F32, 1, sb) == 0, "%s", titan_errmsg());
	REQUIRE(st_stream_begin(w, path) == 0, "%s", titan_errmsg());
	CHECK(st_stream_put(w, b, 4) == 0, "%s", titan_errmsg());
	st_stream_free(w);
	CHECK(!file_exists(tmp), "abort removes PATH.tmp");
	REQUIRE(st_open(&f, path) == 0, "old file intact: %s", titan_errmsg());
	CHECK(f->n == 3, "old file has 3 tensors");
	st_close(f);

	/* put before begin, begin into a missing directory. */
	REQUIRE(st_stream_new(&w) == 0, "%s", titan_errmsg());
	CHECK(st_stream_put(w, b, 4) == TITAN_EUSAGE, "put before begin");
	char bad[600];
	snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", check_scratch);
	CHECK(st_stream_begin(w, bad) == TITAN_EIO && strstr(titan_errmsg(), "x.safetensors.tmp"),
	      "%s", titan_errmsg());
	st_stream_free(w);
}

int main(void)
{
	if (check_scratch_open("test_safetensors"))
		return 1;
	RUN(test_roundtrip);
	RUN(test_python);
	RUN(test_bad_headers);
	RUN(test_good_headers);
	RUN(test_stream);
	check_rmtree(check_scratch);
	return check_done();
}
