/* test_ingest.c - documents out of files, directories, stdin and archives. */
#include "core/base.h"

#include <fcntl.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "data/ingest.h"


struct doc {
	char *text;
	size_t len;
	char *source;
	uint64_t line;
	bool more;
};

struct docs {
	struct doc *v;
	size_t n;
	uint64_t skipped, done, total;
	int rc;
	char err[1024];
};

static void docs_free(struct docs *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->v[i].text);
		free(d->v[i].source);
	}
	free(d->v);
	memset(d, 0, sizeof *d);
}

/* Read every document of inputs; rc is what ingest_open or the failing
 * ingest_next returned, err its message. */
static struct docs collect_once(const char *const *inputs, size_t n, const ingest_opts *opts)
{
	struct docs d = {0};
	ingest *in;
	d.rc = ingest_open(&in, inputs, n, opts);
	if (d.rc) {
		snprintf(d.err, sizeof d.err, "%s", titan_errmsg());
		return d;
	}
	ingest_doc doc;
	int rc;
	size_t cap = 0;
	while ((rc = ingest_next(in, &doc)) == 1) {
		struct doc *v = d.v;
		if (d.n == cap) {
			cap = cap ? 2 * cap : 16;
			if (!(v = realloc(d.v, cap * sizeof *v)))
				abort();
			d.v = v;
		}
		v[d.n].text = malloc(doc.len + 1);
		memcpy(v[d.n].text, doc.text, doc.len);
		v[d.n].text[doc.len] = 0;
		v[d.n].len = doc.len;
		v[d.n].source = strdup(doc.source);
		v[d.n].line = doc.line;
		v[d.n].more = doc.more;
		d.n++;
	}
	d.rc = rc;
	if (rc)
		snprintf(d.err, sizeof d.err, "%s", titan_errmsg());
	d.skipped = ingest_skipped(in);
	d.done = ingest_bytes_done(in);
	d.total = ingest_bytes_total(in);
	ingest_close(in);
	return d;
}

static bool same_docs(const struct docs *a, const struct docs *b)
{
	if (a->n != b->n || a->rc != b->rc || strcmp(a->err, b->err) ||
	    a->skipped != b->skipped || a->done != b->done || a->total != b->total)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		const struct doc *x = &a->v[i], *y = &b->v[i];
		if (x->len != y->len || memcmp(x->text, y->text, x->len) ||
		    strcmp(x->source, y->source) || x->line != y->line || x->more != y->more)
			return false;
	}
	return true;
}

/* As collect_once, checking that threads reading ahead give the same
 * documents, counts and error as reading on this thread (where the inputs
 * can be read again: not stdin). */
static struct docs collect(const char *const *inputs, size_t n, const ingest_opts *opts)
{
	ingest_opts here = *opts, ahead = *opts;
	here.readers = 0;
	struct docs d = collect_once(inputs, n, &here);
	bool again = true;
	for (size_t i = 0; i < n; i++)
		again &= strcmp(inputs[i], "-") != 0;
	/* One reader, three, and three that may each hold a single block of
	 * the files ahead or (past any file here) 64 MiB. */
	static const struct { int readers; size_t ahead; } runs[] = {
		{1, 0}, {3, 0}, {3, 1}, {3, 64u << 20},
	};
	for (size_t k = 0; again && k < ARRAY_SIZE(runs); k++) {
		ahead.readers = runs[k].readers;
		ahead.read_ahead = runs[k].ahead;
		struct docs e = collect_once(inputs, n, &ahead);
		CHECK(same_docs(&d, &e), "%zu inputs, %d readers, %zu ahead: %zu docs rc %d '%s' "
		      "against %zu docs rc %d '%s'", n, runs[k].readers, runs[k].ahead, e.n, e.rc,
		      e.err, d.n, d.rc, d.err);
		docs_free(&e);
	}
	return d;
}

static struct docs collect1(const char *path, const ingest_opts *opts)
{
	return collect(&path, 1, opts);
}

/* SCRATCH/name, in a static buffer per call site's use. */
static const char *sp(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", check_scratch, name);
	return buf;
}

static void put(const char *name, const void *data, size_t n)
{
	char path[512];
	FILE *f = fopen(sp(path, sizeof path, name), "wb");
	if (!f) {
		perror(path);
		abort();
	}
	fwrite(data, 1, n, f);
	fclose(f);
}

static void puts0(const char *name, const char *s)
{
	put(name, s, strlen(s));
}

static bool have(const char *tool)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", tool);
	return system(cmd) == 0;
}

/* Run a shell command; %1$s in fmt is the check_scratch directory. */
static int sh(const char *fmt)
{
	char cmd[2048];
	snprintf(cmd, sizeof cmd, fmt, check_scratch);
	return system(cmd);
}

static bool slurp(const char *path, titan_bytes *out)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return false;
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		bytes_append(out, buf, n);
	fclose(f);
	return true;
}

static bool doc_is(const struct docs *d, size_t i, const char *text)
{
	return i < d->n && d->v[i].len == strlen(text) && !memcmp(d->v[i].text, text, d->v[i].len);
}

static void test_text_whole_file(void)
{
	char p[512];
	puts0("a.txt", "hello\r\nworld");
	struct docs d = collect1(sp(p, sizeof p, "a.txt"), &(ingest_opts){0});
	CHECK(d.rc == 0, "rc %d: %s", d.rc, d.err);
	CHECK(d.n == 1, "%zu docs", d.n);
	CHECK(doc_is(&d, 0, "hello\r\nworld"), "text");
	CHECK(d.n && d.v[0].line == 0 && !strcmp(d.v[0].source, p), "line/source");
	CHECK(d.total == 12 && d.done == 12, "bytes %llu/%llu", (unsigned long long)d.done,
	      (unsigned long long)d.total);
	docs_free(&d);

	/* libarchive's mtree reader would take this for an archive. */
	puts0("m.txt", "hello\n");
	d = collect1(sp(p, sizeof p, "m.txt"), &(ingest_opts){0});
	CHECK(d.rc == 0 && d.n == 1 && doc_is(&d, 0, "hello\n"), "mtree-like text: %s", d.err);
	docs_free(&d);

	puts0("empty.txt", "");
	d = collect1(sp(p, sizeof p, "empty.txt"), &(ingest_opts){0});
	CHECK(d.rc == 0 && d.n == 1 && doc_is(&d, 0, ""), "empty file: %zu docs", d.n);
	docs_free(&d);
	d = collect1(p, &(ingest_opts){ .lines = true });
	CHECK(d.rc == 0 && d.n == 0, "empty file, lines: %zu docs", d.n);
	docs_free(&d);
}

/* With pieces, a long text file comes in parts of 1 MB or more that join
 * into the file; a short one, compressed or not, comes whole. */
static void test_text_pieces(void)
{
	char p[512];
	size_t n = 3 * (1u << 20) + 12345;
	char *big = malloc(n);
	REQUIRE(big, "malloc");
	for (size_t i = 0; i < n; i++)
		big[i] = "abc\ndef "[i % 9];
	put("big.txt", big, n);
	ingest_opts pieces = { .pieces = true };
	struct docs d = collect1(sp(p, sizeof p, "big.txt"), &pieces);
	CHECK(d.rc == 0 && d.n >= 2, "rc %d, %zu parts: %s", d.rc, d.n, d.err);
	size_t at = 0;
	bool ok = true;
	for (size_t i = 0; i < d.n; i++) {
		bool last = i + 1 == d.n;
		ok = ok && d.v[i].more == !last && (last || d.v[i].len >= (1u << 20)) &&
		     at + d.v[i].len <= n && !memcmp(big + at, d.v[i].text, d.v[i].len) &&
		     d.v[i].line == 0 && !strcmp(d.v[i].source, p);
		at += d.v[i].len;
	}
	CHECK(ok && at == n, "parts join into the file (%zu of %zu bytes)", at, n);
	docs_free(&d);

	/* Without pieces the same file is one document. */
	d = collect1(p, &(ingest_opts){0});
	CHECK(d.rc == 0 && d.n == 1 && d.v[0].len == n && !d.v[0].more, "whole: %zu docs", d.n);
	docs_free(&d);

	puts0("small.txt", "short\ntext");
	d = collect1(sp(p, sizeof p, "small.txt"), &pieces);
	CHECK(d.rc == 0 && d.n == 1 && doc_is(&d, 0, "short\ntext") && !d.v[0].more,
	      "small file: %zu docs", d.n);
	docs_free(&d);
	puts0("empty.txt", "");
	d = collect1(sp(p, sizeof p, "empty.txt"), &pieces);
	CHECK(d.rc == 0 && d.n == 1 && doc_is(&d, 0, "") && !d.v[0].more, "empty file");
	docs_free(&d);
	/* Lines and JSONL never come in parts. */
	d = collect1(sp(p, sizeof p, "big.txt"), &(ingest_opts){ .pieces = true, .lines = true });
	ok = d.rc == 0 && d.n > 1000;
	for (size_t i = 0; ok && i < d.n; i++)
		ok = !d.v[i].more;
	CHECK(ok, "lines with pieces: %zu docs", d.n);
	docs_free(&d);
	free(big);
}

static void test_text_lines(void)
{
	char p[512];
	puts0("l.txt", "one\r\ntwo\n\n\nlast");
	struct docs d = collect1(sp(p, sizeof p, "l.txt"), &(ingest_opts){ .lines = true });
	REQUIRE(d.rc == 0, "%s", d.err);
	CHECK(d.n == 5, "%zu docs", d.n);
	CHECK(doc_is(&d, 0, "one\r"), "the \\r stays");
	CHECK(doc_is(&d, 1, "two") && doc_is(&d, 2, "") && doc_is(&d, 3, ""), "empty lines");
	CHECK(doc_is(&d, 4, "last"), "final line without newline");
	for (size_t i = 0; i < d.n; i++)
		CHECK(d.v[i].line == i + 1, "doc %zu line %llu", i, (unsigned long long)d.v[i].line);
	docs_free(&d);

	puts0("l2.txt", "a\nb\n");
	d = collect1(sp(p, sizeof p, "l2.txt"), &(ingest_opts){ .lines = true });
	CHECK(d.rc == 0 && d.n == 2 && doc_is(&d, 1, "b"), "no trailing empty doc: %zu", d.n);
	docs_free(&d);

	/* A line longer than a read block, then a short one. */
	size_t big = (3u << 20) + 17;
	char *buf = malloc(big + 3);
	memset(buf, 'x', big);
	memcpy(buf + big, "\ny\n", 3);
	put("big.txt", buf, big + 3);
	d = collect1(sp(p, sizeof p, "big.txt"), &(ingest_opts){ .lines = true });
	CHECK(d.rc == 0 && d.n == 2, "big: %zu docs %s", d.n, d.err);
	CHECK(d.n == 2 && d.v[0].len == big && !memcmp(d.v[0].text, buf, big), "big line");
	CHECK(doc_is(&d, 1, "y"), "after big line");
	docs_free(&d);
	d = collect1(p, &(ingest_opts){0});
	CHECK(d.rc == 0 && d.n == 1 && d.v[0].len == big + 3, "big whole file");
	docs_free(&d);
	free(buf);
}

static void test_jsonl(void)
{
	char p[512];
	static const char body[] =
		"{\"meta\": {\"content\": \"first\"}, \"text\": 1}\r\n"
		"\n"
		"   \n"
		"{\"meta\": {\"content\": \"a\\u0000b\\u00e9\"}}\n"
		"{\"meta\": {\"content\": \"last\"}}";
	puts0("n.jsonl", body);
	struct docs d = collect1(sp(p, sizeof p, "n.jsonl"),
				 &(ingest_opts){ .field = "meta.content" });
	REQUIRE(d.rc == 0, "%s", d.err);
	CHECK(d.n == 3, "%zu docs", d.n);
	CHECK(doc_is(&d, 0, "first") && d.v[0].line == 1, "first");
	CHECK(d.n > 1 && d.v[1].len == 5 && !memcmp(d.v[1].text, "a\0b\xc3\xa9", 5) &&
	      d.v[1].line == 4, "NUL survives");
	CHECK(doc_is(&d, 2, "last") && d.v[2].line == 5, "last");
	docs_free(&d);

	/* "text" (the default field) is a number in line 1. */
	d = collect1(p, &(ingest_opts){0});
	CHECK(d.rc == TITAN_EFORMAT, "rc %d", d.rc);
	char want[600];
	snprintf(want, sizeof want, "%s:1: field 'text' is not a string", p);
	CHECK(!strcmp(d.err, want), "got '%s'", d.err);
	docs_free(&d);

	/* format=jsonl overrides the name. */
	puts0("j.txt", "{\"text\": \"x\"}\n{\"text\": \"y\"}\n");
	d = collect1(sp(p, sizeof p, "j.txt"), &(ingest_opts){ .format = INGEST_JSONL });
	CHECK(d.rc == 0 && d.n == 2 && doc_is(&d, 1, "y"), "forced jsonl");
	docs_free(&d);
	d = collect1(p, &(ingest_opts){0});
	CHECK(d.rc == 0 && d.n == 1 && d.v[0].len == 28, "auto .txt is text");
	docs_free(&d);
}

static void test_jsonl_bad(void)
{
	char p[512], want[600];
	puts0("bad.jsonl",
	      "{\"text\": \"ok\"}\n"
	      "{\"text\": \"unterminated}\n"
	      "{\"other\": \"x\"}\n"
	      "{\"text\": null}\n"
	      "[1, 2]\n"
	      "{\"text\": \"fine\"}\n");
	struct docs d = collect1(sp(p, sizeof p, "bad.jsonl"), &(ingest_opts){0});
	CHECK(d.rc == TITAN_EFORMAT && d.n == 1, "rc %d n %zu", d.rc, d.n);
	snprintf(want, sizeof want, "%s:2: invalid JSON: ", p);
	CHECK(!strncmp(d.err, want, strlen(want)) && strstr(d.err, "(column "), "got '%s'", d.err);
	docs_free(&d);

	d = collect1(p, &(ingest_opts){ .skip_bad = true });
	CHECK(d.rc == 0 && d.n == 2 && doc_is(&d, 1, "fine"), "rc %d n %zu %s", d.rc, d.n, d.err);
	CHECK(d.skipped == 4, "skipped %llu", (unsigned long long)d.skipped);
	CHECK(d.n == 2 && d.v[1].line == 6, "line numbers count skipped lines");
	docs_free(&d);

	puts0("miss.jsonl", "{\"text\": \"ok\"}\n{\"other\": \"x\"}\n");
	d = collect1(sp(p, sizeof p, "miss.jsonl"), &(ingest_opts){0});
	snprintf(want, sizeof want, "%s:2: field 'text' is missing", p);
	CHECK(d.rc == TITAN_EFORMAT && !strcmp(d.err, want), "got '%s'", d.err);
	docs_free(&d);
}

static void test_dir_walk(void)
{
	char p[512], q[512];
	CHECK(mkdir(sp(p, sizeof p, "tree"), 0755) == 0, "mkdir");
	mkdir(sp(p, sizeof p, "tree/c"), 0755);
	mkdir(sp(p, sizeof p, "tree/c/deeper"), 0755);
	puts0("tree/b.txt", "B");
	puts0("tree/a.txt", "A");
	puts0("tree/Z.txt", "Z");
	puts0("tree/c/d.jsonl", "{\"text\": \"D1\"}\n{\"text\": \"D2\"}\n");
	puts0("tree/c/deeper/x", "X");
	puts0("tree/c.txt", "C");
	puts0("tree/.hidden", "hidden");
	symlink("a.txt", sp(p, sizeof p, "tree/e.txt"));
	symlink("c", sp(p, sizeof p, "tree/f"));
	symlink("nowhere", sp(p, sizeof p, "tree/g"));

	struct docs d = collect1(sp(p, sizeof p, "tree"), &(ingest_opts){0});
	REQUIRE(d.rc == 0, "%s", d.err);
	static const char *const want[][2] = {
		{ "tree/Z.txt", "Z" }, { "tree/a.txt", "A" }, { "tree/b.txt", "B" },
		{ "tree/c/d.jsonl", "D1" }, { "tree/c/d.jsonl", "D2" },
		{ "tree/c/deeper/x", "X" }, { "tree/c.txt", "C" }, { "tree/e.txt", "A" },
	};
	CHECK(d.n == ARRAY_SIZE(want), "%zu docs", d.n);
	for (size_t i = 0; i < d.n && i < ARRAY_SIZE(want); i++) {
		sp(q, sizeof q, want[i][0]);
		CHECK(!strcmp(d.v[i].source, q) && doc_is(&d, i, want[i][1]),
		      "doc %zu: %s '%s'", i, d.v[i].source, d.v[i].text);
	}
	CHECK(d.total == 36 && d.done == d.total, "bytes %llu/%llu",
	      (unsigned long long)d.done, (unsigned long long)d.total);
	docs_free(&d);
}

static void test_compressed(void)
{
	char p[512];
	if (!have("gzip") || !have("zstd"))
		SKIP("gzip or zstd not installed");
	puts0("s.jsonl", "{\"text\": \"one\"}\n{\"text\": \"two\"}\n");
	puts0("s.txt", "plain\ntext\n");
	REQUIRE(sh("gzip -c '%1$s/s.jsonl' > '%1$s/s.jsonl.gz'") == 0, "gzip");
	REQUIRE(sh("zstd -q -c '%1$s/s.txt' > '%1$s/s.txt.zst'") == 0, "zstd");
	REQUIRE(sh("zstd -q -c '%1$s/s.jsonl' | gzip -c > '%1$s/s.jsonl.zst.gz'") == 0, "both");

	struct docs d = collect1(sp(p, sizeof p, "s.jsonl.gz"), &(ingest_opts){0});
	CHECK(d.rc == 0 && d.n == 2 && doc_is(&d, 1, "two"), "gz jsonl: %s", d.err);
	CHECK(d.n && !strcmp(d.v[0].source, p), "source %s", d.n ? d.v[0].source : "");
	struct stat st;
	stat(p, &st);
	CHECK(d.total == (uint64_t)st.st_size && d.done == d.total, "compressed bytes %llu/%llu",
	      (unsigned long long)d.done, (unsigned long long)d.total);
	docs_free(&d);

	d = collect1(sp(p, sizeof p, "s.txt.zst"), &(ingest_opts){0});
	CHECK(d.rc == 0 && d.n == 1 && doc_is(&d, 0, "plain\ntext\n"), "zst text: %s", d.err);
	docs_free(&d);
	d = collect1(p, &(ingest_opts){ .lines = true });
	CHECK(d.rc == 0 && d.n == 2 && doc_is(&d, 1, "text"), "zst lines");
	docs_free(&d);

	d = collect1(sp(p, sizeof p, "s.jsonl.zst.gz"), &(ingest_opts){0});
	CHECK(d.rc == 0 && d.n == 2 && doc_is(&d, 0, "one"), "zst inside gz: %zu %s", d.n, d.err);
	docs_free(&d);

	/* A gzip'ed stdin is decompressed, and "-" means text under auto. */
	int fd = open(sp(p, sizeof p, "s.jsonl.gz"), O_RDONLY);
	int saved = dup(0);
	REQUIRE(fd >= 0 && saved >= 0 && dup2(fd, 0) == 0, "dup2");
	close(fd);
	d = collect1("-", &(ingest_opts){ .lines = true });
	dup2(saved, 0);
	close(saved);
	CHECK(d.rc == 0 && d.n == 2 && doc_is(&d, 1, "{\"text\": \"two\"}"), "stdin: %zu %s", d.n,
	      d.err);
	CHECK(d.n && !strcmp(d.v[0].source, "-"), "stdin source");
	CHECK(d.total == 0, "stdin total unknown: %llu", (unsigned long long)d.total);
	docs_free(&d);
}

static void test_archives(void)
{
	char p[512], q[600];
	if (!have("tar") || !have("zstd") || !have("python3"))
		SKIP("tar, zstd or python3 not installed");
	mkdir(sp(p, sizeof p, "arc"), 0755);
	mkdir(sp(p, sizeof p, "arc/sub"), 0755);
	puts0("arc/sub/one.txt", "line 1\nline 2\n");
	puts0("arc/two.jsonl", "{\"text\": \"j1\"}\n{\"text\": \"j2\"}\n");
	puts0("arc/three.txt", "three");
	REQUIRE(sh("cd '%1$s/arc' && tar --no-recursion -cf - sub sub/one.txt two.jsonl three.txt | zstd -q -c > ../a.tar.zst") == 0, "tar");
	REQUIRE(sh("cd '%1$s/arc' && ln three.txt hard.txt && tar -cf ../a.tar sub/one.txt three.txt hard.txt && rm hard.txt") == 0, "tar");
	REQUIRE(sh("cd '%1$s/arc' && python3 -m zipfile -c ../a.zip sub two.jsonl three.txt") == 0,
		"zip");

	struct docs d = collect1(sp(p, sizeof p, "a.tar.zst"), &(ingest_opts){0});
	REQUIRE(d.rc == 0, "%s", d.err);
	CHECK(d.n == 4, "%zu docs", d.n);
	snprintf(q, sizeof q, "%s:sub/one.txt", p);
	CHECK(d.n == 4 && !strcmp(d.v[0].source, q) && doc_is(&d, 0, "line 1\nline 2\n"),
	      "member 1: %s", d.n ? d.v[0].source : "");
	snprintf(q, sizeof q, "%s:two.jsonl", p);
	CHECK(d.n == 4 && !strcmp(d.v[1].source, q) && doc_is(&d, 1, "j1") && d.v[2].line == 2 &&
	      doc_is(&d, 2, "j2"), "jsonl member");
	CHECK(doc_is(&d, 3, "three"), "member 3");
	docs_free(&d);

	d = collect1(p, &(ingest_opts){ .lines = true, .format = INGEST_TEXT });
	CHECK(d.rc == 0 && d.n == 5 && doc_is(&d, 1, "line 2") && doc_is(&d, 4, "three"),
	      "lines in members: %zu", d.n);
	docs_free(&d);

	d = collect1(sp(p, sizeof p, "a.tar"), &(ingest_opts){0});
	/* hard.txt is a hard link to three.txt: no data of its own, no document. */
	CHECK(d.rc == 0 && d.n == 2 && doc_is(&d, 1, "three"), "plain tar: %zu %s", d.n, d.err);
	docs_free(&d);

	d = collect1(sp(p, sizeof p, "a.zip"), &(ingest_opts){0});
	REQUIRE(d.rc == 0, "%s", d.err);
	CHECK(d.n == 4 && doc_is(&d, 0, "line 1\nline 2\n") && doc_is(&d, 2, "j2") &&
	      doc_is(&d, 3, "three"), "zip: %zu docs", d.n);
	snprintf(q, sizeof q, "%s:sub/one.txt", p);
	CHECK(d.n && !strcmp(d.v[0].source, q), "zip source %s", d.n ? d.v[0].source : "");
	docs_free(&d);
}

static void test_archive_sample(void)
{
	const char *data = check_data_dir();
	if (!data)
		SKIP("TITAN_DATA not set");
	char arc[512], txt[512], q[700];
	snprintf(arc, sizeof arc, "%s/corpus/archive_sample.tar.zst", data);
	snprintf(txt, sizeof txt, "%s/corpus/tinyshakespeare.txt", data);
	if (access(arc, R_OK) || access(txt, R_OK))
		SKIP("%.120s/corpus: archive_sample.tar.zst or tinyshakespeare.txt missing", data);
	static const struct { const char *name; size_t size; } want[] = {
		{ "corpus_archive/kjv/genesis.txt", 204674 },
		{ "corpus_archive/shakespeare/part-00.txt", 259024 },
		{ "corpus_archive/shakespeare/part-01.txt", 320213 },
		{ "corpus_archive/shakespeare/part-02.txt", 298436 },
		{ "corpus_archive/shakespeare/part-03.txt", 237721 },
		{ "corpus_archive/unicode/tricky.txt", 3096 },
	};
	struct docs d = collect1(arc, &(ingest_opts){0});
	REQUIRE(d.rc == 0, "%s", d.err);
	CHECK(d.n == 6, "%zu docs", d.n);
	titan_bytes cat = {0}, ref = {0};
	for (size_t i = 0; i < d.n && i < 6; i++) {
		snprintf(q, sizeof q, "%s:%s", arc, want[i].name);
		CHECK(!strcmp(d.v[i].source, q) && d.v[i].len == want[i].size,
		      "member %zu: %s %zu", i, d.v[i].source, d.v[i].len);
		if (i >= 1 && i <= 4)
			bytes_append(&cat, d.v[i].text, d.v[i].len);
	}
	CHECK(d.total == 420500 && d.done == 420500, "bytes %llu/%llu",
	      (unsigned long long)d.done, (unsigned long long)d.total);
	CHECK(slurp(txt, &ref) && ref.n == cat.n && !memcmp(ref.v, cat.v, ref.n),
	      "parts joined: %zu vs %zu bytes", cat.n, ref.n);
	docs_free(&d);
	bytes_free(&cat);
	bytes_free(&ref);

	/* Cut in half: the documents before the cut, then an error naming it. */
	char cut[512];
	snprintf(cut, sizeof cut, "%s/cut.tar.zst", check_scratch);
	titan_bytes whole = {0};
	REQUIRE(slurp(arc, &whole), "read %s", arc);
	put("cut.tar.zst", whole.v, whole.n / 2);
	bytes_free(&whole);
	d = collect1(cut, &(ingest_opts){0});
	CHECK(d.rc == TITAN_EFORMAT, "rc %d", d.rc);
	CHECK(strstr(d.err, cut) && strstr(d.err, "truncated or corrupt archive"), "got '%s'", d.err);
	CHECK(d.n < 6, "%zu docs before the error", d.n);
	docs_free(&d);
	d = collect1(cut, &(ingest_opts){ .lines = true });
	CHECK(d.rc == TITAN_EFORMAT && strstr(d.err, cut), "lines: got '%s'", d.err);
	docs_free(&d);
}

static void test_shakespeare_jsonl(void)
{
	const char *data = check_data_dir();
	if (!data)
		SKIP("TITAN_DATA not set");
	char jl[512], txt[512];
	snprintf(jl, sizeof jl, "%s/corpus/tinyshakespeare.jsonl", data);
	snprintf(txt, sizeof txt, "%s/corpus/tinyshakespeare.txt", data);
	if (access(jl, R_OK) || access(txt, R_OK))
		SKIP("%.120s/corpus: tinyshakespeare.jsonl or .txt missing", data);
	struct docs d = collect1(jl, &(ingest_opts){0});
	REQUIRE(d.rc == 0, "%s", d.err);
	CHECK(d.n == 7222, "%zu docs", d.n);
	titan_bytes cat = {0}, ref = {0};
	for (size_t i = 0; i < d.n; i++) {
		if (i)
			bytes_append(&cat, "\n\n", 2);
		bytes_append(&cat, d.v[i].text, d.v[i].len);
	}
	CHECK(slurp(txt, &ref) && ref.n == cat.n && !memcmp(ref.v, cat.v, ref.n),
	      "joined: %zu vs %zu bytes", cat.n, ref.n);
	CHECK(d.done == d.total && d.total > 0, "bytes");
	docs_free(&d);

	/* Text lines joined with "\n" give back the file. */
	d = collect1(txt, &(ingest_opts){ .lines = true });
	REQUIRE(d.rc == 0, "%s", d.err);
	CHECK(d.n == 40000, "%zu lines", d.n);
	cat.n = 0;
	for (size_t i = 0; i < d.n; i++) {
		bytes_append(&cat, d.v[i].text, d.v[i].len);
		bytes_append(&cat, "\n", 1);
	}
	CHECK(ref.n == cat.n && !memcmp(ref.v, cat.v, ref.n), "lines round trip");
	docs_free(&d);
	bytes_free(&cat);
	bytes_free(&ref);
}

static void test_errors(void)
{
	char p[512], want[600];
	puts0("ok.txt", "ok");
	const char *inputs[] = { sp(p, sizeof p, "ok.txt"), "no/such/file.txt" };
	struct docs d = collect(inputs, 2, &(ingest_opts){0});
	CHECK(d.rc == TITAN_EIO && d.n == 0, "rc %d n %zu", d.rc, d.n);
	snprintf(want, sizeof want, "cannot open '%s': No such file or directory", inputs[1]);
	CHECK(!strcmp(d.err, want), "got '%s'", d.err);
	docs_free(&d);

	ingest_format f;
	CHECK(ingest_parse_format("jsonl", &f) == 0 && f == INGEST_JSONL, "jsonl");
	CHECK(ingest_parse_format("auto", &f) == 0 && f == INGEST_AUTO, "auto");
	CHECK(ingest_parse_format("text", &f) == 0 && f == INGEST_TEXT, "text");
	CHECK(ingest_parse_format("csv", &f) == TITAN_EUSAGE && strstr(titan_errmsg(), "'csv'"),
	      "csv: %s", titan_errmsg());

	/* A corrupt .gz names the file. */
	static const char bad_gz[] = "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage garbage";
	put("bad.txt.gz", bad_gz, sizeof bad_gz - 1);
	d = collect1(sp(p, sizeof p, "bad.txt.gz"), &(ingest_opts){0});
	CHECK(d.rc < 0 && strstr(d.err, p), "corrupt gz: rc %d '%s'", d.rc, d.err);
	docs_free(&d);

	if (geteuid() != 0) {
		puts0("locked.txt", "x");
		chmod(sp(p, sizeof p, "locked.txt"), 0);
		d = collect1(p, &(ingest_opts){0});
		snprintf(want, sizeof want, "cannot open '%s': Permission denied", p);
		CHECK(!strcmp(d.err, want), "got '%s'", d.err);
		docs_free(&d);
	}
}

/* Inputs read ahead come back in order, each file's documents whole,
 * across files larger than what a reader may hold, with a bad one among
 * them found in its place. */
static void test_read_ahead(void)
{
	char paths[12][512];
	const char *inputs[12];
	titan_bytes big = {0};
	for (int i = 0; i < 200000; i++) {
		char line[64];
		int k = snprintf(line, sizeof line, "line %d of the big file\n", i);
		REQUIRE(bytes_append(&big, line, (size_t)k) == 0, "append");
	}
	for (int i = 0; i < 12; i++) {
		char name[64], text[64];
		snprintf(name, sizeof name, "ahead%02d.txt", i);
		if (i % 4 == 1)
			put(name, big.v, big.n);
		else if (i == 6)
			put(name, "", 0);
		else {
			snprintf(text, sizeof text, "file %d\nsecond line\n", i);
			puts0(name, text);
		}
		inputs[i] = sp(paths[i], sizeof paths[i], name);
	}
	/* Every third file gzip'd where gzip is present. */
	if (have("gzip")) {
		for (int i = 0; i < 12; i += 3) {
			char cmd[600];
			snprintf(cmd, sizeof cmd, "gzip -f '%.512s'", paths[i]);
			REQUIRE(system(cmd) == 0, "%s", cmd);
			size_t len = strlen(paths[i]);
			snprintf(paths[i] + len, sizeof paths[i] - len, ".gz");
		}
	}
	struct docs d = collect(inputs, 12, &(ingest_opts){ .lines = true });
	CHECK(d.rc == 0, "rc %d '%s'", d.rc, d.err);
	/* 3 big files of 200000 lines, 8 small of 2, one empty file: no line */
	CHECK(d.n == 3 * 200000 + 8 * 2, "%zu documents", d.n);
	CHECK(d.done == d.total, "done %llu of %llu", (unsigned long long)d.done,
	      (unsigned long long)d.total);
	docs_free(&d);

	/* A truncated .gz in the middle: the files before it are read whole,
	 * then its name. */
	static const char bad_gz[] = "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage garbage";
	char bad[512];
	put("ahead_bad.txt.gz", bad_gz, sizeof bad_gz - 1);
	inputs[7] = sp(bad, sizeof bad, "ahead_bad.txt.gz");
	d = collect(inputs, 12, &(ingest_opts){ .lines = true });
	CHECK(d.rc < 0 && strstr(d.err, bad), "rc %d '%s'", d.rc, d.err);
	CHECK(d.n == 2 * 200000 + 4 * 2, "%zu documents before the bad file", d.n);
	docs_free(&d);
	bytes_free(&big);
}

int main(void)
{
	if (check_scratch_open("test_ingest"))
		return 1;
	RUN(test_text_whole_file);
	RUN(test_text_pieces);
	RUN(test_text_lines);
	RUN(test_jsonl);
	RUN(test_jsonl_bad);
	RUN(test_dir_walk);
	RUN(test_compressed);
	RUN(test_archives);
	RUN(test_archive_sample);
	RUN(test_shakespeare_jsonl);
	RUN(test_errors);
	RUN(test_read_ahead);
	check_rmtree(check_scratch);
	return check_done();
}
