/* test_dataset.c - dataset directories: write, read across shards, documents,
 * splits, verification, replacing and abandoning an OUTDIR. */
#include "core/base.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "check.h"

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void path_in(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", check_scratch, name);
}

/* How many entries dir's parent holds whose name starts with prefix. */
static int count_prefixed(const char *prefix)
{
	DIR *dir = opendir(check_scratch);
	int n = 0;
	struct dirent *e;
	while (dir && (e = readdir(dir)))
		if (!strncmp(e->d_name, prefix, strlen(prefix)))
			n++;
	if (dir)
		closedir(dir);
	return n;
}

static dataset_writer_opts opts_for(const char *outdir, uint32_t vocab)
{
	dataset_writer_opts o = { 0 };
	o.outdir = outdir;
	snprintf(o.tok.sha256, sizeof o.tok.sha256, "%064d", 7);
	o.tok.vocab_size = vocab;
	o.tok.bos = -1;
	o.tok.eos = vocab - 1;
	o.tok.eos_added = true;
	snprintf(o.tok.source, sizeof o.tok.source, "tok.json");
	o.val_fraction = 0.1;
	o.seed = 42;
	return o;
}

/* Expected content of each split: the flat stream and document lengths. */
typedef struct expect {
	titan_u32s ids[SPLIT_COUNT];
	titan_u32s lens[SPLIT_COUNT];
} expect;

static void expect_free(expect *e)
{
	for (int s = 0; s < SPLIT_COUNT; s++) {
		u32s_free(&e->ids[s]);
		u32s_free(&e->lens[s]);
	}
}

/* Write ndocs random documents (a fifth of them empty). */
static int write_dataset(const dataset_writer_opts *o, size_t ndocs, size_t maxlen,
			 expect *e)
{
	memset(e, 0, sizeof *e);
	dataset_writer *w;
	int rc = dataset_writer_open(&w, o);
	if (rc)
		return rc;
	titan_u32s doc = { 0 };
	for (size_t i = 0; i < ndocs && !rc; i++) {
		doc.n = 0;
		size_t len = rnd() % 5 == 0 ? 0 : (size_t)(rnd() % (maxlen + 1));
		for (size_t k = 0; k < len; k++)
			u32s_push(&doc, (uint32_t)(rnd() % o->tok.vocab_size));
		int s = dataset_split_of(doc.v, doc.n, o->seed, o->val_fraction);
		rc = dataset_writer_add(w, s, doc.v, doc.n);
		u32s_append(&e->ids[s], doc.v, doc.n);
		u32s_push(&e->lens[s], (uint32_t)doc.n);
	}
	u32s_free(&doc);
	if (rc) {
		dataset_writer_abort(w);
		return rc;
	}
	return dataset_writer_commit(w, NULL);
}

static void check_split_content(dataset *d, int s, const expect *e)
{
	uint64_t total = e->ids[s].n;
	CHECK(dataset_tokens(d, s) == total, "split %d tokens", s);
	CHECK(dataset_docs(d, s) == e->lens[s].n, "split %d docs", s);
	uint32_t *got = malloc((total + 1) * sizeof *got);
	CHECK(dataset_read(d, s, 0, total, got) == 0 &&
	      !memcmp(got, e->ids[s].v, total * sizeof *got), "whole split %d: %s", s,
	      titan_errmsg());
	for (int t = 0; t < 1000 && total; t++) {
		uint64_t pos = rnd() % total;
		size_t n = (size_t)(rnd() % (TITAN_MIN(total - pos, 300) + 1));
		int rc = dataset_read(d, s, pos, n, got);
		CHECK(rc == 0 && !memcmp(got, e->ids[s].v + pos, n * sizeof *got),
		      "split %d range %llu +%zu: %s", s, (unsigned long long)pos, n,
		      titan_errmsg());
	}
	CHECK(dataset_read(d, s, total, 1, got) == TITAN_ERANGE, "past the end");
	CHECK(dataset_read(d, s, total, 0, got) == 0, "empty read at the end");

	/* Documents one by one, then starts over random ranges. */
	uint64_t at = 0;
	for (size_t k = 0; k < e->lens[s].n; k++) {
		uint64_t start, len;
		int rc = dataset_doc(d, s, k, &start, &len);
		CHECK(rc == 0 && start == at && len == e->lens[s].v[k],
		      "doc %zu: %llu +%llu, want %llu +%u", k, (unsigned long long)start,
		      (unsigned long long)len, (unsigned long long)at, e->lens[s].v[k]);
		at += e->lens[s].v[k];
	}
	uint64_t start, len;
	CHECK(dataset_doc(d, s, e->lens[s].n, &start, &len) == TITAN_ERANGE, "doc past end");

	uint8_t *is_start = calloc(total + 1, 1);
	at = 0;
	for (size_t k = 0; k < e->lens[s].n; k++) {
		is_start[at] = 1;
		at += e->lens[s].v[k];
	}
	titan_u32s starts = { 0 };
	for (int t = 0; t < 300 && total; t++) {
		uint64_t pos = rnd() % total;
		size_t n = (size_t)(rnd() % (TITAN_MIN(total - pos, 500) + 1));
		starts.n = 0;
		REQUIRE(dataset_doc_starts(d, s, pos, n, &starts) == 0, "%s", titan_errmsg());
		size_t j = 0;
		bool ok = true;
		for (size_t p = 0; p < n; p++) {
			if (!is_start[pos + p])
				continue;
			if (j >= starts.n || starts.v[j] != p)
				ok = false;
			j++;
		}
		CHECK(ok && j == starts.n, "doc starts in %llu +%zu", (unsigned long long)pos, n);
	}
	u32s_free(&starts);
	free(is_start);
	free(got);
}

static void roundtrip(uint32_t vocab, uint32_t block, uint64_t roll_at)
{
	char dir[600];
	path_in(dir, sizeof dir, "rt");
	dataset_writer_opts o = opts_for(dir, vocab);
	o.block_tokens = block;
	o.shard_tokens = roll_at;
	expect e;
	int rc = write_dataset(&o, 600, 50, &e);
	REQUIRE(rc == 0, "write: %s", titan_errmsg());
	dataset *d;
	rc = dataset_open(&d, dir);
	REQUIRE(rc == 0, "open: %s", titan_errmsg());
	CHECK(dataset_token_bytes(d) == (vocab <= 65536 ? 2 : 4), "dtype");
	/* Shards store ids below 2^24 in 3 bytes. */
	shard_reader *first;
	REQUIRE(shard_open(&first, dataset_shard_path(d, SPLIT_TRAIN, 0)) == 0, "%s",
		titan_errmsg());
	CHECK(shard_token_bytes(first) == (vocab <= 1u << 16 ? 2 : vocab <= 1u << 24 ? 3 : 4),
	      "stored token size %d", shard_token_bytes(first));
	shard_close(first);
	const dataset_tokinfo *t = dataset_tok(d);
	CHECK(t->vocab_size == vocab && t->bos == -1 && t->eos == vocab - 1 &&
	      t->eos_added && !t->bos_added && !strcmp(t->source, "tok.json") &&
	      !strcmp(t->sha256, o.tok.sha256), "tokenizer facts");
	CHECK(roll_at ? dataset_nshards(d, SPLIT_TRAIN) > 3 : dataset_nshards(d, SPLIT_TRAIN) == 1,
	      "shards %zu", dataset_nshards(d, SPLIT_TRAIN));
	CHECK(dataset_shard_path(d, SPLIT_TRAIN, 0) &&
	      strstr(dataset_shard_path(d, SPLIT_TRAIN, 0), "/train-00000.shard"), "name");
	CHECK(dataset_shard_path(d, SPLIT_TRAIN, 99999) == NULL, "no such shard");
	for (size_t i = 0; i + 1 < dataset_nshards(d, SPLIT_TRAIN); i++) {
		shard_reader *r;
		REQUIRE(shard_open(&r, dataset_shard_path(d, SPLIT_TRAIN, i)) == 0, "%s",
			titan_errmsg());
		/* Rolled after the document that crossed the limit. */
		CHECK(shard_tokens(r) >= roll_at, "shard %zu is short", i);
		shard_close(r);
	}
	uint64_t seed;
	double frac;
	dataset_split_params(d, &seed, &frac);
	CHECK(seed == 42 && frac == 0.1, "split params %llu %g", (unsigned long long)seed, frac);
	CHECK(dataset_block_tokens(d) == block, "block tokens");
	check_split_content(d, SPLIT_TRAIN, &e);
	check_split_content(d, SPLIT_VAL, &e);
	dataset_close(d);
	CHECK(dataset_verify(dir) == 0, "verify: %s", titan_errmsg());
	check_rmtree(dir);
	expect_free(&e);
	CHECK(count_prefixed("rt") == 0, "leftovers");
}

static void test_roundtrip_u16(void)
{
	roundtrip(50000, 7, 1000);
}

static void test_roundtrip_u32(void)
{
	roundtrip(100000, 7, 1000);
	roundtrip((1u << 24) + 1, 7, 1000);
}

static void test_roundtrip_one_shard(void)
{
	roundtrip(65536, 4096, 0);
}

static void test_split_of(void)
{
	int val = 0;
	uint32_t ids[8];
	for (int i = 0; i < 10000; i++) {
		for (int k = 0; k < 8; k++)
			ids[k] = (uint32_t)(rnd() % 50000);
		int s = dataset_split_of(ids, 8, 1234, 0.1);
		CHECK(s == dataset_split_of(ids, 8, 1234, 0.1), "deterministic");
		val += s == SPLIT_VAL;
	}
	CHECK(val >= 800 && val <= 1200, "val share %d of 10000", val);
	CHECK(dataset_split_of(ids, 8, 1, 0.0) == SPLIT_TRAIN, "fraction 0");
	CHECK(dataset_split_of(ids, 8, 1, 1.0) == SPLIT_VAL, "fraction 1");
	/* A fixed value, so a change of hash shows up as a failing test. */
	uint32_t fixed[] = { 1, 2, 3 };
	int a = dataset_split_of(fixed, 3, 0, 0.5);
	int b = dataset_split_of(fixed, 3, 1, 0.5);
	CHECK(a == dataset_split_of(fixed, 3, 0, 0.5) && b == dataset_split_of(fixed, 3, 1, 0.5),
	      "seeds");
	int name;
	CHECK(dataset_split_index("val", &name) == 0 && name == SPLIT_VAL, "val");
	CHECK(dataset_split_index("train", &name) == 0 && name == SPLIT_TRAIN, "train");
	CHECK(dataset_split_index("test", &name) == TITAN_EUSAGE, "test");
}

static void flip(const char *path, long off)
{
	FILE *f = fopen(path, "r+b");
	if (!f)
		return;
	if (off < 0) {
		fseek(f, 0, SEEK_END);
		off += ftell(f);
	}
	fseek(f, off, SEEK_SET);
	int c = fgetc(f);
	fseek(f, off, SEEK_SET);
	fputc(c ^ 0x01, f);
	fclose(f);
}

static void test_verify(void)
{
	char dir[600], shard[700];
	path_in(dir, sizeof dir, "ver");
	dataset_writer_opts o = opts_for(dir, 30000);
	o.block_tokens = 16;
	o.shard_tokens = 2000;
	o.val_fraction = 0;
	expect e;
	REQUIRE(write_dataset(&o, 300, 40, &e) == 0, "%s", titan_errmsg());
	snprintf(shard, sizeof shard, "%s/train-00001.shard", dir);
	/* Offsets: header field, block 3 of the data, index, document table. */
	struct {
		long off;
		const char *want;
	} cases[] = {
		{ 20, "header" }, { 64 + 1, "block 0" }, { -16 - 8 - 3, "document table" },
		{ -8, "footer" }, { -3, "footer" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		flip(shard, cases[i].off);
		int rc = dataset_verify(dir);
		CHECK(rc == TITAN_EFORMAT, "case %zu: rc %d", i, rc);
		CHECK(strstr(titan_errmsg(), "train-00001.shard") &&
		      strstr(titan_errmsg(), cases[i].want), "case %zu: %s", i, titan_errmsg());
		flip(shard, cases[i].off);
		CHECK(dataset_verify(dir) == 0, "restored %zu: %s", i, titan_errmsg());
	}
	/* Block 3 and an index entry, found through the reader. */
	shard_reader *r;
	REQUIRE(shard_open(&r, shard) == 0, "%s", titan_errmsg());
	REQUIRE(shard_nblocks(r) > 4, "blocks");
	shard_close(r);
	FILE *f = fopen(shard, "rb");
	uint8_t h[64];
	REQUIRE(f && fread(h, 1, 64, f) == 64, "header");
	uint64_t index_off = 0;
	for (int k = 7; k >= 0; k--)
		index_off = index_off << 8 | h[40 + k];
	uint8_t ent[24];
	fseek(f, (long)(index_off + 3 * 24), SEEK_SET);
	REQUIRE(fread(ent, 1, 24, f) == 24, "index entry");
	fclose(f);
	uint64_t b3 = 0;
	for (int k = 7; k >= 0; k--)
		b3 = b3 << 8 | ent[k];
	uint32_t csize = (uint32_t)ent[8] | (uint32_t)ent[9] << 8;
	flip(shard, (long)(b3 + csize / 2));
	CHECK(dataset_verify(dir) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "train-00001.shard': block 3:"), "block 3: %s",
	      titan_errmsg());
	flip(shard, (long)(b3 + csize / 2));
	flip(shard, (long)(index_off + 3 * 24 + 2));
	CHECK(dataset_verify(dir) == TITAN_EFORMAT &&
	      strstr(titan_errmsg(), "train-00001.shard': index"), "index: %s", titan_errmsg());
	flip(shard, (long)(index_off + 3 * 24 + 2));
	CHECK(dataset_verify(dir) == 0, "restored: %s", titan_errmsg());

	/* A shard of the wrong size is caught at open already. */
	FILE *a = fopen(shard, "ab");
	fputc(0, a);
	fclose(a);
	dataset *d;
	CHECK(dataset_open(&d, dir) == TITAN_EFORMAT && strstr(titan_errmsg(), "size"),
	      "size: %s", titan_errmsg());
	check_rmtree(dir);
	expect_free(&e);
}

static void write_manifest_text(const char *dir, const char *text)
{
	char path[700];
	snprintf(path, sizeof path, "%s/manifest.json", dir);
	FILE *f = fopen(path, "wb");
	fputs(text, f);
	fclose(f);
}

static void test_bad_manifest(void)
{
	char dir[600];
	path_in(dir, sizeof dir, "badm");
	mkdir(dir, 0755);
	dataset *d;
	CHECK(dataset_open(&d, dir) == TITAN_EIO, "missing manifest: %s", titan_errmsg());
	static const struct {
		const char *json, *want;
	} cases[] = {
		{ "[]", "expected an object" },
		{ "{\"format\":\"x\"}", "$.format" },
		{ "{\"format\":\"titan-dataset\",\"version\":2}", "$.version" },
		{ "{\"format\":\"titan-dataset\",\"version\":1,\"dtype\":\"u8\"}", "$.dtype" },
		{ "{\"format\":\"titan-dataset\",\"version\":1,\"dtype\":\"u16\","
		  "\"block_tokens\":\"7\"}", "block_tokens" },
		{ "{\"format\":\"titan-dataset\",\"version\":1,\"dtype\":\"u16\","
		  "\"block_tokens\":7,\"tokenizer\":{\"sha256\":\"x\",\"vocab_size\":10,"
		  "\"bos\":null,\"eos\":3,\"bos_added\":false,\"eos_added\":true},"
		  "\"split\":{\"seed\":0,\"val_fraction\":2}}", "$.split.val_fraction" },
		{ "{\"format\":\"titan-dataset\",\"version\":1,\"dtype\":\"u16\","
		  "\"block_tokens\":7,\"tokenizer\":{\"sha256\":\"x\",\"vocab_size\":10,"
		  "\"bos\":null,\"eos\":3,\"bos_added\":false,\"eos_added\":true},"
		  "\"split\":{\"seed\":0,\"val_fraction\":0},\"splits\":{\"train\":{\"tokens\":1,\"documents\":1,\"shards\":"
		  "[{\"file\":\"../x\",\"tokens\":1,\"documents\":1,\"bytes\":1,"
		  "\"xxh64\":\"0000000000000000\"}]}}}", "not a file name" },
		{ "{\"format\":\"titan-dataset\",\"version\":1,\"dtype\":\"u16\","
		  "\"block_tokens\":7,\"tokenizer\":{\"sha256\":\"x\",\"vocab_size\":10,"
		  "\"bos\":null,\"eos\":3,\"bos_added\":false,\"eos_added\":true},"
		  "\"split\":{\"seed\":0,\"val_fraction\":0},\"splits\":{\"train\":{\"tokens\":1,\"documents\":1,\"shards\":"
		  "[{\"file\":\"a.shard\",\"tokens\":1,\"documents\":1,\"bytes\":1,"
		  "\"xxh64\":\"0000000000000000\"}]}}}", "a.shard" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		write_manifest_text(dir, cases[i].json);
		CHECK(dataset_open(&d, dir) == TITAN_EFORMAT &&
		      strstr(titan_errmsg(), cases[i].want), "case %zu: %s", i, titan_errmsg());
	}
	check_rmtree(dir);
}

static void test_outdir_rules(void)
{
	char dir[600], marker[700];
	path_in(dir, sizeof dir, "out");
	dataset_writer_opts o = opts_for(dir, 1000);
	expect e;
	REQUIRE(write_dataset(&o, 50, 10, &e) == 0, "%s", titan_errmsg());
	expect_free(&e);
	snprintf(marker, sizeof marker, "%s/old-marker", dir);
	FILE *f = fopen(marker, "w");
	fclose(f);

	dataset_writer *w;
	CHECK(dataset_writer_open(&w, &o) == TITAN_EUSAGE &&
	      strstr(titan_errmsg(), "exists (use --force to replace it)"), "%s", titan_errmsg());
	o.force = true;
	REQUIRE(write_dataset(&o, 50, 10, &e) == 0, "%s", titan_errmsg());
	expect_free(&e);
	CHECK(access(marker, F_OK) != 0, "old dir replaced");
	CHECK(dataset_verify(dir) == 0, "%s", titan_errmsg());
	CHECK(count_prefixed("out") == 1, "leftovers: %d", count_prefixed("out"));

	/* Abort leaves nothing and keeps the old OUTDIR. */
	REQUIRE(dataset_writer_open(&w, &o) == 0, "%s", titan_errmsg());
	uint32_t ids[] = { 1, 2, 3 };
	CHECK(dataset_writer_add(w, SPLIT_TRAIN, ids, 3) == 0, "%s", titan_errmsg());
	dataset_writer_abort(w);
	CHECK(count_prefixed("out") == 1, "abort leftovers");
	CHECK(dataset_verify(dir) == 0, "old kept: %s", titan_errmsg());
	check_rmtree(dir);

	/* An empty corpus: an error and nothing behind. */
	o.force = false;
	REQUIRE(dataset_writer_open(&w, &o) == 0, "%s", titan_errmsg());
	CHECK(dataset_writer_commit(w, NULL) == TITAN_EFORMAT &&
	      !strcmp(titan_errmsg(), "empty corpus: no documents"), "%s", titan_errmsg());
	CHECK(count_prefixed("out") == 0, "empty leftovers");
	REQUIRE(dataset_writer_open(&w, &o) == 0, "%s", titan_errmsg());
	CHECK(dataset_writer_add(w, SPLIT_VAL, NULL, 0) == 0, "%s", titan_errmsg());
	CHECK(dataset_writer_commit(w, NULL) == TITAN_EFORMAT, "only empty documents");
	CHECK(count_prefixed("out") == 0, "empty leftovers");

	/* An id past u16 in a u16 dataset. */
	o.tok.vocab_size = 65536;
	REQUIRE(dataset_writer_open(&w, &o) == 0, "%s", titan_errmsg());
	uint32_t big[] = { 5, 65536 };
	CHECK(dataset_writer_add(w, SPLIT_TRAIN, big, 2) == TITAN_ERANGE &&
	      strstr(titan_errmsg(), "65536 does not fit in u16") &&
	      !strstr(titan_errmsg(), ".tmp."), "%s", titan_errmsg());
	CHECK(dataset_writer_add(w, SPLIT_TRAIN, big, 1) == 0, "writer still usable");
	CHECK(dataset_writer_add_wrapped(w, SPLIT_TRAIN, 65536, big, 1, 7) == TITAN_ERANGE &&
	      strstr(titan_errmsg(), "65536 does not fit in u16"), "BOS past u16: %s",
	      titan_errmsg());
	CHECK(dataset_writer_add_wrapped(w, SPLIT_TRAIN, 6, big, 1, 65536) == TITAN_ERANGE,
	      "EOS past u16");
	/* The refused documents left nothing behind: one document, one token. */
	REQUIRE(dataset_writer_commit(w, NULL) == 0, "%s", titan_errmsg());
	dataset *d;
	REQUIRE(dataset_open(&d, dir) == 0, "%s", titan_errmsg());
	CHECK(dataset_docs(d, SPLIT_TRAIN) == 1 && dataset_tokens(d, SPLIT_TRAIN) == 1,
	      "after refusals: %llu documents, %llu tokens",
	      (unsigned long long)dataset_docs(d, SPLIT_TRAIN),
	      (unsigned long long)dataset_tokens(d, SPLIT_TRAIN));
	dataset_close(d);
	check_rmtree(dir);
	CHECK(count_prefixed("out") == 0, "range leftovers");
}

static void test_speed(void)
{
	char dir[600];
	path_in(dir, sizeof dir, "speed");
	dataset_writer_opts o = opts_for(dir, 50000);
	o.val_fraction = 0;
	dataset_writer *w;
	REQUIRE(dataset_writer_open(&w, &o) == 0, "%s", titan_errmsg());
	/* Text-like ids: a skewed distribution compresses like real data. */
	size_t ndocs = 20000, len = 500, pool = 1 << 20;
	uint32_t *ids = malloc(pool * sizeof *ids);
	for (size_t k = 0; k < pool; k++) {
		uint64_t r = rnd();
		ids[k] = (uint32_t)((r & 0xffff) % (1 + (r >> 16) % 50000));
	}
	double t0 = now();
	for (size_t i = 0; i < ndocs; i++) {
		const uint32_t *doc = ids + (i * 7919) % (pool - len);
		REQUIRE(dataset_writer_add(w, SPLIT_TRAIN, doc, len) == 0, "%s", titan_errmsg());
	}
	REQUIRE(dataset_writer_commit(w, NULL) == 0, "%s", titan_errmsg());
	double t1 = now();
	dataset *d;
	REQUIRE(dataset_open(&d, dir) == 0, "%s", titan_errmsg());
	uint64_t total = dataset_tokens(d, SPLIT_TRAIN);
	size_t chunk = 8193;
	uint32_t *buf = malloc(chunk * sizeof *buf);
	double t2 = now();
	for (uint64_t pos = 0; pos < total; pos += chunk) {
		size_t n = (size_t)TITAN_MIN((uint64_t)chunk, total - pos);
		REQUIRE(dataset_read(d, SPLIT_TRAIN, pos, n, buf) == 0, "%s", titan_errmsg());
	}
	double t3 = now();
	uint64_t file_bytes = 0;
	for (size_t i = 0; i < dataset_nshards(d, SPLIT_TRAIN); i++) {
		struct stat st;
		if (stat(dataset_shard_path(d, SPLIT_TRAIN, i), &st) == 0)
			file_bytes += (uint64_t)st.st_size;
	}
	printf("# %llu tokens: write %.1f MB/s of u16 tokens (%.1f Mtok/s, %.1f MB/s of "
	       "shard), sequential read %.1f Mtok/s\n", (unsigned long long)total,
	       (double)total * 2 / 1e6 / (t1 - t0), (double)total / 1e6 / (t1 - t0),
	       (double)file_bytes / 1e6 / (t1 - t0), (double)total / 1e6 / (t3 - t2));
	dataset_close(d);
	free(buf);
	free(ids);
	check_rmtree(dir);
}

int main(void)
{
	if (check_scratch_open("test_dataset"))
		return 1;
	RUN(test_roundtrip_u16);
	RUN(test_roundtrip_u32);
	RUN(test_roundtrip_one_shard);
	RUN(test_split_of);
	RUN(test_verify);
	RUN(test_bad_manifest);
	RUN(test_outdir_rules);
	RUN(test_speed);
	check_rmtree(check_scratch);
	return check_done();
}
