/* test_metrics.c - the human line, JSON lines and TensorBoard event files. */
#include "core/base.h"
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "core/buf.h"
#include "core/file.h"
#include "train/metrics.h"
#include "check.h"

static const metrics_row row10 = {
	.step = 10, .loss = 7.1234, .grad_norm = 1.2345, .lr = 8e-4,
	.tps = 2345.4, .tflops = 0.0912, .mfu = 47.06, .data_share = 0.003,
	.mem_peak_gib = 0.52, .elapsed_s = 12.5,
};

static void test_crc32c(void)
{
	uint8_t zeros[32] = {0};
	uint32_t c = crc32c("123456789", 9);

	CHECK(c == 0xE3069283u, "crc32c(\"123456789\") = %08x", c);
	c = crc32c(zeros, sizeof zeros);
	CHECK(c == 0x8A9136AAu, "crc32c(32 zeros) = %08x", c);
	c = crc32c("", 0);
	CHECK(c == 0, "crc32c(\"\") = %08x", c);
	uint32_t raw = crc32c("123456789", 9);
	uint32_t want = ((raw >> 15) | (raw << 17)) + 0xa282ead8u;
	c = crc32c_masked("123456789", 9);
	CHECK(c == want, "masked %08x, want %08x", c, want);
}

/* Everything a metrics object writes to its human stream, as one string. */
static char *human_output(const metrics_row *rows, size_t n, long val_step, double val_loss)
{
	char *s = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&s, &len);
	metrics *m;

	if (!fp)
		return NULL;
	if (metrics_open(&m, fp, NULL, NULL) == 0) {
		for (size_t i = 0; i < n; i++)
			metrics_log(m, &rows[i]);
		if (val_step >= 0)
			metrics_log_val(m, val_step, val_loss);
		metrics_close(m);
	}
	fclose(fp);
	return s;
}

static void test_human_line(void)
{
	char *s = human_output(&row10, 1, 10, 6.1234);
	const char *want =
		"step   10  loss 7.1234  grad_norm 1.2345  lr 8.0000e-04  tps 2,345"
		"  tflops 0.09  mfu 47.1%  data 0.3%  mem 0.52GiB\n"
		"step   10  val_loss 6.1234  val_ppl 456.41\n";

	REQUIRE(s, "open_memstream failed");
	CHECK(strcmp(s, want) == 0, "got\n%swant\n%s", s, want);
	free(s);
}

static void test_thousands(void)
{
	static const struct {
		double tps;
		const char *want;
	} cases[] = {
		{0, "tps 0 "}, {999.4, "tps 999 "}, {999.5, "tps 1,000 "},
		{1000, "tps 1,000 "}, {123456, "tps 123,456 "},
		{1234567.6, "tps 1,234,568 "}, {-4321, "tps -4,321 "},
		{-0.3, "tps 0 "}, {NAN, "tps nan "},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		metrics_row r = row10;
		r.tps = cases[i].tps;
		char *s = human_output(&r, 1, -1, 0);
		REQUIRE(s, "open_memstream failed");
		CHECK(strstr(s, cases[i].want), "tps %g: %s", cases[i].tps, s);
		free(s);
	}
}

static int write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	if (!fp)
		return -1;
	fputs(text, fp);
	return fclose(fp);
}

static void test_jsonl(void)
{
	static const char *const keys[] = {
		"step", "loss", "lr", "grad_norm", "tps", "tflops", "mfu",
		"mem_peak_gib", "elapsed_s", "data_s_share",
	};
	char path[512], line[4096];
	metrics *m;
	int rc;

	REQUIRE(check_scratch_open("test_metrics") == 0, "scratch");
	snprintf(path, sizeof path, "%s/m.jsonl", check_scratch);

	/* A killed earlier run: one good line and one cut short. */
	REQUIRE(write_text(path, "{\"step\":1,\"loss\":9.5}\n{\"step\":2,\"lo") == 0, "seed");

	rc = metrics_open(&m, NULL, path, NULL);
	REQUIRE(rc == 0, "open: %s", titan_errmsg());
	CHECK(metrics_log(m, &row10) == 0, "log: %s", titan_errmsg());
	/* Flushed as written: readable before close. */
	{
		titan_bytes b = {0};
		CHECK(file_read_all(path, &b) == 0, "read");
		CHECK(b.n > 0 && b.v[b.n - 1] == '\n', "line not flushed");
		bytes_free(&b);
	}
	CHECK(metrics_close(m) == 0, "close: %s", titan_errmsg());

	/* A resumed run appends. */
	rc = metrics_open(&m, NULL, path, NULL);
	REQUIRE(rc == 0, "reopen: %s", titan_errmsg());
	metrics_row r = row10;
	r.step = 20;
	r.loss = NAN;
	r.tps = INFINITY;
	CHECK(metrics_log(m, &r) == 0, "log: %s", titan_errmsg());
	CHECK(metrics_log_val(m, 20, 6.1234) == 0, "log_val: %s", titan_errmsg());
	CHECK(metrics_close(m) == 0, "close: %s", titan_errmsg());

	FILE *fp = fopen(path, "r");
	REQUIRE(fp, "fopen");
	int n = 0;
	while (fgets(line, sizeof line, fp)) {
		json_error_t err;
		json_t *o;
		n++;
		if (n == 2) {
			CHECK(strcmp(line, "{\"step\":2,\"lo\n") == 0, "cut line: %s", line);
			continue;
		}
		o = json_loads(line, 0, &err);
		CHECK(o && json_is_object(o), "line %d does not parse: %s (%s)", n, line,
		      err.text);
		if (!o)
			continue;
		if (n == 3 || n == 4) {
			CHECK(json_object_size(o) == ARRAY_SIZE(keys), "line %d: %zu keys", n,
			      json_object_size(o));
			for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
				json_t *v = json_object_get(o, keys[k]);
				CHECK(v, "line %d: no key %s", n, keys[k]);
				if (!v)
					continue;
				if (k == 0)
					CHECK(json_is_integer(v), "step is not an integer");
				else if (n == 4 && (k == 1 || k == 4))
					CHECK(json_is_null(v), "line 4: %s not null", keys[k]);
				else
					CHECK(json_is_number(v), "line %d: %s not a number", n,
					      keys[k]);
			}
			CHECK(json_integer_value(json_object_get(o, "step")) == (n == 3 ? 10 : 20),
			      "step");
		}
		if (n == 3) {
			CHECK(json_real_value(json_object_get(o, "loss")) == 7.1234, "loss");
			CHECK(json_real_value(json_object_get(o, "lr")) == 8e-4, "lr");
			CHECK(json_number_value(json_object_get(o, "elapsed_s")) == 12.5, "elapsed");
			CHECK(json_real_value(json_object_get(o, "data_s_share")) == 0.003,
			      "data_s_share");
		}
		if (n == 5) {
			CHECK(json_object_size(o) == 3, "val line: %zu keys", json_object_size(o));
			CHECK(json_integer_value(json_object_get(o, "step")) == 20, "val step");
			CHECK(json_real_value(json_object_get(o, "val_loss")) == 6.1234, "val_loss");
			double p = json_real_value(json_object_get(o, "val_ppl"));
			CHECK(fabs(p - exp(6.1234)) < 1e-9 * p, "val_ppl %g", p);
		}
		json_decref(o);
	}
	fclose(fp);
	CHECK(n == 5, "%d lines, want 5", n);
	CHECK(!strstr(line, "NaN") && !strstr(line, "nan"), "NaN written");
	check_rmtree(check_scratch);
}

static void test_open_errors(void)
{
	char path[512];
	metrics *m = (metrics *)&m;
	int rc;

	REQUIRE(check_scratch_open("test_metrics") == 0, "scratch");
	snprintf(path, sizeof path, "%s/no/such/dir/m.jsonl", check_scratch);
	rc = metrics_open(&m, NULL, path, NULL);
	CHECK(rc == TITAN_EIO, "rc %d", rc);
	CHECK(m == NULL, "out not cleared");
	CHECK(strstr(titan_errmsg(), path), "message: %s", titan_errmsg());

	/* A TensorBoard directory whose parent is a file. */
	snprintf(path, sizeof path, "%s/file", check_scratch);
	REQUIRE(write_text(path, "x") == 0, "seed");
	snprintf(path, sizeof path, "%s/file/tb", check_scratch);
	rc = metrics_open(&m, NULL, NULL, path);
	CHECK(rc == TITAN_EIO, "rc %d", rc);
	CHECK(strstr(titan_errmsg(), "file"), "message: %s", titan_errmsg());
	CHECK(metrics_close(NULL) == 0, "close(NULL)");
	check_rmtree(check_scratch);
}

/* ---- a small TFRecord + protobuf reader ---- */

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7F) << shift;
		if (!(b & 0x80))
			return 0;
	}
	return -1;
}

/* One protobuf field: its number, wire type, and value (varint/fixed in
 * *num, length-delimited in *data and *len). */
static int pb_next(const uint8_t **p, const uint8_t *end, unsigned *field, unsigned *wire,
		   uint64_t *num, const uint8_t **data, size_t *len)
{
	uint64_t key;

	if (varint(p, end, &key))
		return -1;
	*field = (unsigned)(key >> 3);
	*wire = key & 7;
	switch (*wire) {
	case 0:
		return varint(p, end, num);
	case 1:
	case 5: {
		int n = *wire == 1 ? 8 : 4;
		if (end - *p < n)
			return -1;
		*num = le(*p, n);
		*p += n;
		return 0;
	}
	case 2:
		if (varint(p, end, num) || *num > (uint64_t)(end - *p))
			return -1;
		*data = *p;
		*len = (size_t)*num;
		*p += *len;
		return 0;
	}
	return -1;
}

typedef struct tb_event {
	double wall_time;
	long step;
	char version[32];
	int nvalues;
	char tags[16][32];
	float values[16];
} tb_event;

static int decode_value(const uint8_t *p, const uint8_t *end, tb_event *e)
{
	unsigned field, wire;
	uint64_t num;
	const uint8_t *d = NULL;
	size_t len = 0;
	int i = e->nvalues;

	if (i >= 16)
		return -1;
	e->tags[i][0] = '\0';
	e->values[i] = NAN;
	while (p < end) {
		if (pb_next(&p, end, &field, &wire, &num, &d, &len))
			return -1;
		if (field == 1 && wire == 2 && len < sizeof e->tags[i]) {
			memcpy(e->tags[i], d, len);
			e->tags[i][len] = '\0';
		} else if (field == 2 && wire == 5) {
			uint32_t u = (uint32_t)num;
			memcpy(&e->values[i], &u, 4);
		} else
			return -1;
	}
	e->nvalues++;
	return 0;
}

static int decode_event(const uint8_t *p, const uint8_t *end, tb_event *e)
{
	unsigned field, wire;
	uint64_t num;
	const uint8_t *d = NULL;
	size_t len = 0;

	memset(e, 0, sizeof *e);
	while (p < end) {
		if (pb_next(&p, end, &field, &wire, &num, &d, &len))
			return -1;
		if (field == 1 && wire == 1)
			memcpy(&e->wall_time, &num, 8);
		else if (field == 2 && wire == 0)
			e->step = (long)(int64_t)num;
		else if (field == 3 && wire == 2 && len < sizeof e->version)
			memcpy(e->version, d, len);
		else if (field == 5 && wire == 2) {
			const uint8_t *s = d, *send = d + len;
			while (s < send) {
				unsigned f2, w2;
				const uint8_t *vd = NULL;
				size_t vlen = 0;
				if (pb_next(&s, send, &f2, &w2, &num, &vd, &vlen) || f2 != 1 ||
				    w2 != 2 || decode_value(vd, vd + vlen, e))
					return -1;
			}
		} else
			return -1;
	}
	return 0;
}

/* Read every record of an event file, checking both CRCs; *n events. */
static int read_events(const char *path, tb_event *ev, int max, int *n)
{
	titan_bytes b = {0};
	size_t off = 0;

	*n = 0;
	if (file_read_all(path, &b))
		return -1;
	while (off < b.n) {
		if (b.n - off < 12 || *n >= max)
			goto bad;
		uint64_t len = le(b.v + off, 8);
		if (le(b.v + off + 8, 4) != crc32c_masked(b.v + off, 8)) {
			printf("# record %d: bad length crc\n", *n);
			goto bad;
		}
		if (len > b.n - off - 12 || b.n - off - 12 - len < 4)
			goto bad;
		const uint8_t *data = b.v + off + 12;
		if (le(data + len, 4) != crc32c_masked(data, len)) {
			printf("# record %d: bad data crc\n", *n);
			goto bad;
		}
		if (decode_event(data, data + len, &ev[*n]))
			goto bad;
		(*n)++;
		off += 12 + len + 4;
	}
	bytes_free(&b);
	return 0;
bad:
	bytes_free(&b);
	return -1;
}

static float tag_value(const tb_event *e, const char *tag)
{
	for (int i = 0; i < e->nvalues; i++)
		if (!strcmp(e->tags[i], tag))
			return e->values[i];
	return NAN;
}

/* The one events.out.tfevents.* file in dir, into path. */
static int find_event_file(const char *dir, char *path, size_t n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int found = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "events.out.tfevents.", 20)) {
			snprintf(path, n, "%s/%s", dir, de->d_name);
			found++;
		}
	closedir(d);
	return found == 1 ? 0 : -1;
}

static void test_tensorboard(void)
{
	static const char *const tags[] = {
		"loss/train", "grad_norm", "lr", "tps", "tflops", "mfu",
		"mem_peak_gib", "data_share",
	};
	char dir[512], path[1024];
	tb_event ev[8];
	metrics *m;
	int n, rc;

	REQUIRE(check_scratch_open("test_metrics") == 0, "scratch");
	snprintf(dir, sizeof dir, "%s/tb/run1", check_scratch);
	rc = metrics_open(&m, NULL, NULL, dir);
	REQUIRE(rc == 0, "open: %s", titan_errmsg());
	metrics_row r = row10;
	CHECK(metrics_log(m, &r) == 0, "log: %s", titan_errmsg());
	r.step = 20;
	r.loss = 6.5;
	CHECK(metrics_log(m, &r) == 0, "log: %s", titan_errmsg());
	CHECK(metrics_log_val(m, 20, 6.25) == 0, "log_val: %s", titan_errmsg());

	/* Flushed per step: the file is complete before close. */
	REQUIRE(find_event_file(dir, path, sizeof path) == 0, "no single event file in %s", dir);
	CHECK(read_events(path, ev, 8, &n) == 0 && n == 4, "before close: %d events", n);
	CHECK(metrics_close(m) == 0, "close: %s", titan_errmsg());

	const char *base = strrchr(path, '/') + 1;
	char host[256] = "";
	gethostname(host, sizeof host);
	CHECK(strlen(base) > strlen(host) && !strcmp(base + strlen(base) - strlen(host), host),
	      "name %s does not end in the hostname %s", base, host);

	REQUIRE(read_events(path, ev, 8, &n) == 0, "cannot read %s", path);
	REQUIRE(n == 4, "%d events, want 4", n);
	CHECK(!strcmp(ev[0].version, "brain.Event:2"), "file_version '%s'", ev[0].version);
	CHECK(ev[0].nvalues == 0, "first event has values");
	CHECK(fabs(ev[0].wall_time - (double)time(NULL)) < 600, "wall_time %f", ev[0].wall_time);

	CHECK(ev[1].step == 10 && ev[2].step == 20 && ev[3].step == 20, "steps %ld %ld %ld",
	      ev[1].step, ev[2].step, ev[3].step);
	CHECK(ev[1].nvalues == 8, "%d values", ev[1].nvalues);
	const double want[] = {7.1234, 1.2345, 8e-4, 2345.4, 0.0912, 47.06, 0.52, 0.003};
	for (size_t i = 0; i < ARRAY_SIZE(tags); i++) {
		float v = tag_value(&ev[1], tags[i]);
		CHECK(v == (float)want[i], "%s = %g, want %g", tags[i], v, want[i]);
	}
	CHECK(tag_value(&ev[2], "loss/train") == 6.5f, "step 20 loss");
	CHECK(ev[3].nvalues == 2, "val values %d", ev[3].nvalues);
	CHECK(tag_value(&ev[3], "loss/val") == 6.25f, "loss/val");
	CHECK(tag_value(&ev[3], "ppl/val") == (float)exp(6.25), "ppl/val");
	CHECK(ev[1].wall_time >= ev[0].wall_time, "wall_time goes back");

	/* A second run in the same directory gets a file of its own. */
	rc = metrics_open(&m, NULL, NULL, dir);
	REQUIRE(rc == 0, "open: %s", titan_errmsg());
	CHECK(metrics_close(m) == 0, "close");
	CHECK(find_event_file(dir, path, sizeof path) != 0, "second run shares a file");
	check_rmtree(check_scratch);
}

/* Read a file we write with TensorBoard's own loader, when it is installed. */
static void test_tensorboard_loader(void)
{
	char dir[512], path[1024], cmd[2048];
	metrics *m;

	if (system("python3 -c 'import tensorboard' >/dev/null 2>&1") != 0)
		SKIP("python3 has no tensorboard module: EventFileLoader check not run");
	REQUIRE(check_scratch_open("test_metrics") == 0, "scratch");
	snprintf(dir, sizeof dir, "%s/tb", check_scratch);
	REQUIRE(metrics_open(&m, NULL, NULL, dir) == 0, "open: %s", titan_errmsg());
	CHECK(metrics_log(m, &row10) == 0, "log");
	CHECK(metrics_log_val(m, 10, 6.25) == 0, "log_val");
	CHECK(metrics_close(m) == 0, "close");
	REQUIRE(find_event_file(dir, path, sizeof path) == 0, "no event file");
	snprintf(cmd, sizeof cmd,
		 "python3 -c '\n"
		 "import sys\n"
		 "from tensorboard.backend.event_processing.event_file_loader import "
		 "EventFileLoader\n"
		 "ev = list(EventFileLoader(sys.argv[1]).Load())\n"
		 "assert ev[0].file_version == \"brain.Event:2\", ev[0]\n"
		 "v = {x.tag: x for e in ev[1:] for x in e.summary.value}\n"
		 "assert ev[1].step == 10, ev[1]\n"
		 "assert abs(v[\"loss/train\"].simple_value - 7.1234) < 1e-5, v\n"
		 "assert abs(v[\"loss/val\"].simple_value - 6.25) < 1e-6, v\n"
		 "' '%s'",
		 path);
	CHECK(system(cmd) == 0, "tensorboard's EventFileLoader rejected %s", path);
	check_rmtree(check_scratch);
}

int main(void)
{
	RUN(test_crc32c);
	RUN(test_human_line);
	RUN(test_thousands);
	RUN(test_jsonl);
	RUN(test_open_errors);
	RUN(test_tensorboard);
	RUN(test_tensorboard_loader);
	return check_done();
}
