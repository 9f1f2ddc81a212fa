/* test_core.c - lib/core: hashes, JSON helpers, atomic files, pool, buffers. */
#include "core/base.h"
#include "core/buf.h"
#include "core/file.h"
#include "core/hash.h"
#include "core/json.h"
#include "core/log.h"
#include "core/pool.h"

#include <dirent.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"


static bool has(const char *s, const char *part)
{
	return strstr(s, part) != NULL;
}

/* Number of entries in the check_scratch dir other than . and .. */
static int scratch_entries(void)
{
	DIR *d = opendir(check_scratch);
	int n = 0;
	struct dirent *e;
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Empty the scratch directory between tests. */
static void scratch_clean(void)
{
	check_rmtree(check_scratch);
	mkdir(check_scratch, 0700);
}

static void test_xxh64(void)
{
	CHECK(hash64("", 0, 0) == 0xEF46DB3751D8E999ULL, "%016llx",
	      (unsigned long long)hash64("", 0, 0));
	CHECK(hash64("a", 1, 0) == 0xD24EC4F1A98C6E5BULL, "%016llx",
	      (unsigned long long)hash64("a", 1, 0));
	CHECK(hash64("abc", 3, 0) == 0x44BC2CF5AD770999ULL, "%016llx",
	      (unsigned long long)hash64("abc", 3, 0));

	/* Every tail length around the 32-byte stripe must be stable and
	 * distinct, and the seed must matter. */
	uint8_t data[100];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)(i * 7 + 1);
	for (size_t n = 1; n < sizeof data; n++) {
		CHECK(hash64(data, n, 0) != hash64(data, n - 1, 0), "n=%zu", n);
		CHECK(hash64(data, n, 0) == hash64(data, n, 0), "n=%zu", n);
		CHECK(hash64(data, n, 0) != hash64(data, n, 1), "n=%zu", n);
	}
	CHECK(hash_mix64(1) != hash_mix64(2), "mix");
}

static void sha_hex(const void *p, size_t n, char hex[65])
{
	uint8_t d[32];
	sha256(p, n, d);
	hex_encode(d, 32, hex);
}

static void test_sha256(void)
{
	char hex[65];
	sha_hex("", 0, hex);
	CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "%s", hex);
	sha_hex("abc", 3, hex);
	CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "%s", hex);
	const char *s56 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	sha_hex(s56, strlen(s56), hex);
	CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"), "%s", hex);
	char *a = malloc(1000000);
	REQUIRE(a, "malloc");
	memset(a, 'a', 1000000);
	sha_hex(a, 1000000, hex);
	free(a);
	CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "%s", hex);

	uint8_t b[3] = { 0x00, 0xab, 0xff };
	hex_encode(b, 3, hex);
	CHECK(!strcmp(hex, "00abff"), "%s", hex);
}

static const char tok_json[] =
	"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [],"
	" \"dropout\": null, \"size\": 42, \"ratio\": 1.5, \"byte\": true,"
	" \"list\": [1, 2]}}";

static void test_json_getters(void)
{
	json_t *root, *model, *o;
	const char *s = NULL;
	long long i = 7;
	bool b = false;
	const char *f = "tokenizer.json";

	REQUIRE(json_parse_buf(&root, tok_json, strlen(tok_json), f) == 0, "%s", titan_errmsg());
	REQUIRE(json_get_obj(root, "model", &model, f, "$") == 0, "%s", titan_errmsg());
	CHECK(json_get_str(model, "type", &s, f, "$.model") == 0 && !strcmp(s, "BPE"), "type");
	CHECK(json_get_obj(model, "vocab", &o, f, "$.model") == 0, "vocab");
	CHECK(json_get_arr(model, "merges", &o, f, "$.model") == 0 && json_array_size(o) == 0, "merges");
	CHECK(json_get_int(model, "size", &i, f, "$.model") == 0 && i == 42, "size %lld", i);
	CHECK(json_get_bool(model, "byte", &b, f, "$.model") == 0 && b, "byte");

	/* Optional: missing and null leave the value alone. */
	s = "keep";
	CHECK(json_opt_str(model, "dropout", &s, f, "$.model") == 0 && !strcmp(s, "keep"), "null");
	CHECK(json_opt_str(model, "nothere", &s, f, "$.model") == 0 && !strcmp(s, "keep"), "absent");
	i = 5;
	CHECK(json_opt_int(model, "nothere", &i, f, "$.model") == 0 && i == 5, "absent int");
	CHECK(json_opt_int(model, "size", &i, f, "$.model") == 0 && i == 42, "opt int");
	b = false;
	CHECK(json_opt_bool(model, "dropout", &b, f, "$.model") == 0 && !b, "null bool");
	CHECK(json_opt_bool(model, "byte", &b, f, "$.model") == 0 && b, "opt bool");

	/* Each error names the file, the JSON path, and what was wrong. */
	int rc = json_get_str(model, "list", &s, f, "$.model");
	CHECK(rc == TITAN_EFORMAT, "rc %d", rc);
	CHECK(!strcmp(titan_errmsg(), "'tokenizer.json': $.model.list: expected a string, got an array"),
	      "%s", titan_errmsg());
	rc = json_get_arr(model, "nope", &o, "f", "$.model");
	CHECK(rc == TITAN_EFORMAT && !strcmp(titan_errmsg(), "'f': $.model: missing key 'nope'"),
	      "%s", titan_errmsg());
	rc = json_get_int(model, "ratio", &i, f, "$.model");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "$.model.ratio") &&
	      has(titan_errmsg(), "expected an integer") && has(titan_errmsg(), "tokenizer.json"),
	      "%s", titan_errmsg());
	rc = json_get_obj(model, "type", &o, f, "$.model");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "$.model.type: expected an object, got a string"),
	      "%s", titan_errmsg());
	rc = json_get_bool(model, "size", &b, f, "$.model");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "$.model.size: expected a boolean, got an integer"),
	      "%s", titan_errmsg());
	rc = json_opt_str(model, "size", &s, f, "$.model");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "$.model.size"), "%s", titan_errmsg());
	rc = json_opt_int(model, "type", &i, f, "$.model");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "$.model.type"), "%s", titan_errmsg());
	rc = json_opt_bool(model, "type", &b, f, "$.model");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "$.model.type"), "%s", titan_errmsg());
	rc = json_get_str(model, "dropout", &s, f, "$.model");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "got null"), "%s", titan_errmsg());
	/* Looking up a key in a non-object. */
	rc = json_get_str(json_object_get(model, "list"), "x", &s, f, "$.model.list");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "$.model.list: expected an object"),
	      "%s", titan_errmsg());
	json_decref(root);
}

static void test_json_parse_errors(void)
{
	json_t *j = NULL;
	const char bad[] = "{\n  \"a\": 1,\n  \"b\": }\n";
	int rc = json_parse_buf(&j, bad, strlen(bad), "cfg.json");
	CHECK(rc == TITAN_EFORMAT, "rc %d", rc);
	CHECK(has(titan_errmsg(), "'cfg.json': line 3 column"), "%s", titan_errmsg());
	rc = json_parse_buf(&j, "", 0, "empty.json");
	CHECK(rc == TITAN_EFORMAT && has(titan_errmsg(), "'empty.json': line"), "%s", titan_errmsg());
	/* The whole buffer must be one value. */
	rc = json_parse_buf(&j, "{} {}", 5, "two.json");
	CHECK(rc == TITAN_EFORMAT, "trailing value accepted");
	/* An embedded NUL in a string is data, not the end. */
	const char nul[] = "[\"a\\u0000b\"]";
	rc = json_parse_buf(&j, nul, sizeof nul - 1, "nul.json");
	CHECK(rc == 0, "%s", titan_errmsg());
	if (!rc) {
		CHECK(json_string_length(json_array_get(j, 0)) == 3, "len");
		json_decref(j);
	}
	char path[600];
	snprintf(path, sizeof path, "%s/missing.json", check_scratch);
	rc = json_load_path(&j, path);
	CHECK(rc == TITAN_EIO && has(titan_errmsg(), path), "%s", titan_errmsg());
}

static void test_json_write(void)
{
	char path[600];
	snprintf(path, sizeof path, "%s/out.json", check_scratch);
	json_t *j = json_pack("{s:i, s:s, s:[i,i]}", "zeta", 1, "alpha", "x", "mid", 1, 2);
	REQUIRE(j, "json_pack");
	int rc = json_write_path(j, path);
	json_decref(j);
	REQUIRE(rc == 0, "%s", titan_errmsg());

	titan_bytes b = {0};
	REQUIRE(file_read_all(path, &b) == 0, "%s", titan_errmsg());
	const char want[] = "{\n  \"alpha\": \"x\",\n  \"mid\": [\n    1,\n    2\n  ],\n  \"zeta\": 1\n}\n";
	CHECK(b.n == strlen(want) && !memcmp(b.v, want, b.n), "got '%.*s'", (int)b.n, (char *)b.v);
	bytes_free(&b);

	json_t *back;
	REQUIRE(json_load_path(&back, path) == 0, "%s", titan_errmsg());
	long long z = 0;
	CHECK(json_get_int(back, "zeta", &z, path, "$") == 0 && z == 1, "zeta");
	json_decref(back);
	CHECK(scratch_entries() == 1, "%d entries", scratch_entries());
	scratch_clean();
}

static void test_atomic(void)
{
	char path[600];
	snprintf(path, sizeof path, "%s/data.bin", check_scratch);

	/* Commit: the file holds exactly the bytes, no temporary is left. */
	titan_atomic a;
	REQUIRE(atomic_open(&a, path) == 0, "%s", titan_errmsg());
	CHECK(a.tmp && has(a.tmp, ".tmp."), "tmp %s", a.tmp ? a.tmp : "(null)");
	CHECK(access(path, F_OK) != 0, "final name visible before commit");
	CHECK(file_write(a.fp, path, "hello ", 6) == 0, "%s", titan_errmsg());
	CHECK(file_write(a.fp, path, "world", 5) == 0, "%s", titan_errmsg());
	CHECK(atomic_commit(&a) == 0, "%s", titan_errmsg());
	CHECK(a.path == NULL && a.tmp == NULL && a.fp == NULL, "not freed");
	atomic_abort(&a); /* harmless after commit */
	titan_bytes b = {0};
	CHECK(file_read_all(path, &b) == 0 && b.n == 11 && !memcmp(b.v, "hello world", 11),
	      "content");
	bytes_free(&b);
	CHECK(scratch_entries() == 1, "%d entries", scratch_entries());

	/* Overwrite through atomic_write_file. */
	CHECK(atomic_write_file(path, "x", 1) == 0, "%s", titan_errmsg());
	CHECK(file_read_all(path, &b) == 0 && b.n == 1 && b.v[0] == 'x', "overwrite");
	bytes_free(&b);
	CHECK(atomic_write_file(path, "", 0) == 0, "%s", titan_errmsg());
	CHECK(file_read_all(path, &b) == 0 && b.n == 0, "empty");
	bytes_free(&b);

	/* Abort: neither the file nor a temporary remains. */
	char path2[600];
	snprintf(path2, sizeof path2, "%s/aborted.bin", check_scratch);
	REQUIRE(atomic_open(&a, path2) == 0, "%s", titan_errmsg());
	CHECK(file_write(a.fp, path2, "junk", 4) == 0, "%s", titan_errmsg());
	atomic_abort(&a);
	CHECK(access(path2, F_OK) != 0, "aborted file exists");
	CHECK(scratch_entries() == 1, "%d entries", scratch_entries());

	/* A missing directory fails cleanly and names the file. */
	char path3[600];
	snprintf(path3, sizeof path3, "%s/no/such/dir/x.bin", check_scratch);
	int rc = atomic_write_file(path3, "x", 1);
	CHECK(rc == TITAN_EIO, "rc %d", rc);
	CHECK(has(titan_errmsg(), path3) && has(titan_errmsg(), "No such file"), "%s", titan_errmsg());
	CHECK(scratch_entries() == 1, "%d entries", scratch_entries());

	/* Rename onto a directory fails at commit; the temporary goes. */
	char path4[600];
	snprintf(path4, sizeof path4, "%s/adir", check_scratch);
	REQUIRE(mkdir(path4, 0777) == 0, "mkdir");
	REQUIRE(atomic_open(&a, path4) == 0, "%s", titan_errmsg());
	CHECK(file_write(a.fp, path4, "x", 1) == 0, "%s", titan_errmsg());
	rc = atomic_commit(&a);
	CHECK(rc == TITAN_EIO && has(titan_errmsg(), path4), "rc %d %s", rc, titan_errmsg());
	atomic_abort(&a); /* safe after a failed commit */
	CHECK(scratch_entries() == 2, "%d entries", scratch_entries());
	rmdir(path4);
	scratch_clean();
}

static void test_read_errors(void)
{
	char path[600];
	titan_bytes b = {0};
	snprintf(path, sizeof path, "%s/missing.txt", check_scratch);
	int rc = file_read_all(path, &b);
	CHECK(rc == TITAN_EIO, "rc %d", rc);
	CHECK(has(titan_errmsg(), "cannot open '") && has(titan_errmsg(), path) &&
	      has(titan_errmsg(), "No such file or directory"), "%s", titan_errmsg());
	rc = file_read_all(check_scratch, &b);
	CHECK(rc == TITAN_EIO && has(titan_errmsg(), "is a directory"), "%s", titan_errmsg());
	CHECK(b.n == 0, "n %zu", b.n);
	bytes_free(&b);

	/* A larger file, appended after what is already there. */
	snprintf(path, sizeof path, "%s/big.bin", check_scratch);
	size_t n = 300000;
	uint8_t *data = malloc(n);
	REQUIRE(data, "malloc");
	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 31);
	CHECK(atomic_write_file(path, data, n) == 0, "%s", titan_errmsg());
	bytes_append(&b, "ab", 2);
	CHECK(file_read_all(path, &b) == 0, "%s", titan_errmsg());
	CHECK(b.n == n + 2 && !memcmp(b.v, "ab", 2) && !memcmp(b.v + 2, data, n), "n %zu", b.n);
	bytes_free(&b);
	free(data);
	scratch_clean();
}

struct sum_job {
	const uint32_t *v;
	size_t chunk, n;
	_Atomic uint64_t sum;
	atomic_int calls;
	int nworkers;
	atomic_int bad_worker;
	size_t fail_at;
};

static int sum_task(void *arg, size_t task, int worker)
{
	struct sum_job *j = arg;
	if (worker < 0 || worker >= j->nworkers)
		atomic_store(&j->bad_worker, 1);
	atomic_fetch_add(&j->calls, 1);
	size_t lo = task * j->chunk, hi = TITAN_MIN(lo + j->chunk, j->n);
	uint64_t s = 0;
	for (size_t i = lo; i < hi; i++)
		s += j->v[i];
	atomic_fetch_add(&j->sum, s);
	return 0;
}

static int one_task(void *arg, size_t task, int worker)
{
	struct sum_job *j = arg;
	atomic_fetch_add(&j->calls, 1);
	atomic_fetch_add(&j->sum, task);
	return 0;
}

static int failing_task(void *arg, size_t task, int worker)
{
	struct sum_job *j = arg;
	atomic_fetch_add(&j->calls, 1);
	if (task == j->fail_at)
		return titan_err(TITAN_EFORMAT, "'shard-%zu': bad block", task);
	return 0;
}

static void test_pool(void)
{
	const size_t n = 1000000;
	titan_u32s v = {0};
	for (size_t i = 0; i < n; i++)
		REQUIRE(u32s_push(&v, (uint32_t)i) == 0, "push");
	const uint64_t want = (uint64_t)n * (n - 1) / 2;
	static const int nthreads[] = { 1, 2, 4 };

	for (size_t k = 0; k < ARRAY_SIZE(nthreads); k++) {
		titan_pool *p;
		REQUIRE(pool_new(&p, nthreads[k]) == 0, "%s", titan_errmsg());
		CHECK(pool_threads(p) == nthreads[k], "threads %d", pool_threads(p));

		/* 1e6 one-element tasks, then chunks; the pool is reused. */
		struct sum_job j = { .v = v.v, .chunk = 1, .n = n, .nworkers = nthreads[k] };
		CHECK(pool_run(p, n, sum_task, &j) == 0, "%s", titan_errmsg());
		CHECK(j.sum == want && j.calls == (int)n && !j.bad_worker,
		      "threads %d sum %llu calls %d", nthreads[k], (unsigned long long)j.sum,
		      (int)j.calls);
		for (int rep = 0; rep < 50; rep++) {
			struct sum_job c = { .v = v.v, .chunk = 4096, .n = n, .nworkers = nthreads[k] };
			CHECK(pool_run(p, (n + 4095) / 4096, sum_task, &c) == 0, "%s", titan_errmsg());
			CHECK(c.sum == want, "rep %d sum %llu", rep, (unsigned long long)c.sum);
		}

		/* Zero and one task. */
		struct sum_job z = { 0 };
		CHECK(pool_run(p, 0, one_task, &z) == 0 && z.calls == 0, "0 tasks");
		CHECK(pool_run(p, 1, one_task, &z) == 0 && z.calls == 1 && z.sum == 0, "1 task");
		z = (struct sum_job){ 0 };
		CHECK(pool_run(p, 3, one_task, &z) == 0 && z.calls == 3 && z.sum == 3, "3 tasks");

		/* The error and its message reach the caller's thread. */
		for (int rep = 0; rep < 20; rep++) {
			struct sum_job e = { .fail_at = 1000 };
			titan_err(TITAN_EIO, "stale");
			int rc = pool_run(p, 100000, failing_task, &e);
			CHECK(rc == TITAN_EFORMAT, "rc %d", rc);
			CHECK(!strcmp(titan_errmsg(), "'shard-1000': bad block"), "'%s'", titan_errmsg());
			/* Tasks already claimed may finish, no new ones start. */
			CHECK(e.calls < 100000, "calls %d", (int)e.calls);
		}
		struct sum_job e0 = { .fail_at = 0 };
		CHECK(pool_run(p, 1, failing_task, &e0) == TITAN_EFORMAT &&
		      !strcmp(titan_errmsg(), "'shard-0': bad block"), "'%s'", titan_errmsg());

		/* And the pool still works after a failure. */
		struct sum_job again = { .v = v.v, .chunk = 1000, .n = n, .nworkers = nthreads[k] };
		CHECK(pool_run(p, n / 1000, sum_task, &again) == 0 && again.sum == want, "after error");
		pool_free(p);
	}
	u32s_free(&v);

	titan_pool *p;
	REQUIRE(pool_new(&p, 0) == 0, "%s", titan_errmsg());
	CHECK(pool_threads(p) == cpu_count() && cpu_count() >= 1, "threads %d cpus %d",
	      pool_threads(p), cpu_count());
	pool_free(p);
	pool_free(NULL);
}

static void test_buf(void)
{
	titan_bytes b = {0};
	for (int i = 0; i < 100000; i++) {
		uint8_t c = (uint8_t)i;
		REQUIRE(bytes_append(&b, &c, 1) == 0, "append");
	}
	CHECK(b.n == 100000 && b.cap >= b.n, "n %zu cap %zu", b.n, b.cap);
	bool ok = true;
	for (int i = 0; i < 100000; i++)
		ok = ok && b.v[i] == (uint8_t)i;
	CHECK(ok, "bytes content");
	CHECK(bytes_append(&b, NULL, 0) == 0 && b.n == 100000, "empty append");
	CHECK(bytes_reserve(&b, SIZE_MAX) == TITAN_ENOMEM, "huge reserve");
	bytes_free(&b);
	CHECK(b.v == NULL && b.n == 0 && b.cap == 0, "freed");

	titan_u32s a = {0};
	uint32_t three[3] = { 7, 8, 9 };
	for (uint32_t i = 0; i < 70000; i++)
		REQUIRE(u32s_push(&a, i) == 0, "push");
	REQUIRE(u32s_append(&a, three, 3) == 0, "append");
	CHECK(a.n == 70003 && a.v[69999] == 69999 && a.v[70002] == 9, "n %zu", a.n);
	u32s_free(&a);
	CHECK(a.v == NULL && a.n == 0, "freed");
}

static void test_log(void)
{
	/* Drawing goes to stderr; this checks the gating, not the pixels. */
	titan_log l;
	log_init(&l, "titan-test");
	CHECK(l.verbosity == 1 && !l.drawn, "init");
	l.tty = false;
	log_progress(&l, "encode", 1e6, 2e6, "B", true);
	CHECK(!l.drawn, "drawn without a tty");
	l.tty = true;
	l.verbosity = 0;
	log_progress(&l, "encode", 1e6, 2e6, "B", true);
	CHECK(!l.drawn, "drawn when quiet");
	double t0 = titan_now();
	CHECK(titan_now() >= t0, "clock");
}

int main(void)
{
	if (check_scratch_open("test_core"))
		return 1;
	RUN(test_xxh64);
	RUN(test_sha256);
	RUN(test_json_getters);
	RUN(test_json_parse_errors);
	RUN(test_json_write);
	RUN(test_atomic);
	RUN(test_read_errors);
	RUN(test_pool);
	RUN(test_buf);
	RUN(test_log);
	check_rmtree(check_scratch);
	return check_done();
}
