/* metrics.c - the human line, the JSON lines file and the TensorBoard event
 * file (metrics.h).
 *
 * TensorBoard reads TFRecord files of serialized Event protobufs.  A record
 * is: u64 LE length, u32 LE masked CRC32C of those 8 bytes, the data, u32 LE
 * masked CRC32C of the data.  The few protobuf fields we need are encoded
 * here by hand:
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
 *             Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; } */
#include "core/base.h"
#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "core/buf.h"
#include "core/file.h"
#include "train/metrics.h"

struct metrics {
	FILE *human;
	FILE *jsonl;
	char *jsonl_path;
	FILE *tb;
	char *tb_path;
};

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78).  The table is
 * built by the preprocessor so it can be a const object: one byte of the
 * table index shifted through eight steps of the bitwise algorithm. */
#define CRC_STEP(c) (((c) >> 1) ^ (((c) & 1u) ? 0x82F63B78u : 0u))
#define CRC_BYTE(c) CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP((uint32_t)(c)))))))))
#define CRC_ROW4(n) CRC_BYTE(n), CRC_BYTE((n) + 1), CRC_BYTE((n) + 2), CRC_BYTE((n) + 3)
#define CRC_ROW16(n) CRC_ROW4(n), CRC_ROW4((n) + 4), CRC_ROW4((n) + 8), CRC_ROW4((n) + 12)
#define CRC_ROW64(n) CRC_ROW16(n), CRC_ROW16((n) + 16), CRC_ROW16((n) + 32), CRC_ROW16((n) + 48)

static const uint32_t crc32c_table[256] = {
	CRC_ROW64(0), CRC_ROW64(64), CRC_ROW64(128), CRC_ROW64(192),
};

uint32_t crc32c(const void *buf, size_t n)
{
	const uint8_t *p = buf;
	uint32_t c = 0xFFFFFFFFu;

	while (n--)
		c = crc32c_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

uint32_t crc32c_masked(const void *buf, size_t n)
{
	uint32_t c = crc32c(buf, n);
	return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

/* ---- protobuf, just the wire types Event needs ---- */

static int pb_varint(titan_bytes *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	do {
		tmp[n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return bytes_append(b, tmp, n);
}

static int pb_key(titan_bytes *b, unsigned field, unsigned wire)
{
	return pb_varint(b, (uint64_t)field << 3 | wire);
}

static int pb_fixed(titan_bytes *b, uint64_t v, int nbytes)
{
	uint8_t tmp[8];

	for (int i = 0; i < nbytes; i++)
		tmp[i] = (uint8_t)(v >> (8 * i));
	return bytes_append(b, tmp, (size_t)nbytes);
}

static int pb_bytes(titan_bytes *b, unsigned field, const void *p, size_t n)
{
	int rc;

	if ((rc = pb_key(b, field, 2)) || (rc = pb_varint(b, n)))
		return rc;
	return bytes_append(b, p, n);
}

static int pb_double(titan_bytes *b, unsigned field, double x)
{
	uint64_t u;
	int rc;

	memcpy(&u, &x, sizeof u);
	if ((rc = pb_key(b, field, 1)))
		return rc;
	return pb_fixed(b, u, 8);
}

static int pb_float(titan_bytes *b, unsigned field, float x)
{
	uint32_t u;
	int rc;

	memcpy(&u, &x, sizeof u);
	if ((rc = pb_key(b, field, 5)))
		return rc;
	return pb_fixed(b, u, 4);
}

typedef struct tb_scalar {
	const char *tag;
	double value;
} tb_scalar;

/* Append one serialized Summary.Value to summary. */
static int pb_summary_value(titan_bytes *summary, const tb_scalar *s)
{
	titan_bytes v = {0};
	int rc;

	if (!(rc = pb_bytes(&v, 1, s->tag, strlen(s->tag))) &&
	    !(rc = pb_float(&v, 2, (float)s->value)))
		rc = pb_bytes(summary, 1, v.v, v.n);
	bytes_free(&v);
	return rc;
}

static double wall_time(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Frame data as one TFRecord and write it to the event file. */
static int tb_write_record(metrics *m, const titan_bytes *data)
{
	uint8_t head[12], tail[4];
	uint32_t c;
	int rc;

	for (int i = 0; i < 8; i++)
		head[i] = (uint8_t)((uint64_t)data->n >> (8 * i));
	c = crc32c_masked(head, 8);
	for (int i = 0; i < 4; i++)
		head[8 + i] = (uint8_t)(c >> (8 * i));
	c = crc32c_masked(data->v, data->n);
	for (int i = 0; i < 4; i++)
		tail[i] = (uint8_t)(c >> (8 * i));
	if ((rc = file_write(m->tb, m->tb_path, head, sizeof head)) ||
	    (rc = file_write(m->tb, m->tb_path, data->v, data->n)))
		return rc;
	return file_write(m->tb, m->tb_path, tail, sizeof tail);
}

static int tb_flush(metrics *m)
{
	if (fflush(m->tb))
		return titan_err_errno(TITAN_EIO, "cannot write '%s'", m->tb_path);
	return 0;
}

/* One Event at step holding every scalar of s[0..n). */
static int tb_log(metrics *m, long step, const tb_scalar *s, size_t n)
{
	titan_bytes ev = {0}, summary = {0};
	int rc;

	if (!m->tb)
		return 0;
	rc = pb_double(&ev, 1, wall_time());
	if (!rc)
		rc = pb_key(&ev, 2, 0);
	if (!rc)
		rc = pb_varint(&ev, (uint64_t)(int64_t)step);
	for (size_t i = 0; !rc && i < n; i++)
		rc = pb_summary_value(&summary, &s[i]);
	if (!rc)
		rc = pb_bytes(&ev, 5, summary.v, summary.n);
	if (!rc)
		rc = tb_write_record(m, &ev);
	if (!rc)
		rc = tb_flush(m);
	bytes_free(&summary);
	bytes_free(&ev);
	return rc;
}

/* mkdir -p: every missing component of dir, then check it is a directory. */
static int make_dirs(const char *dir)
{
	size_t n = strlen(dir);
	char *p = malloc(n + 1);
	struct stat st;

	if (!p)
		return titan_err_nomem();
	memcpy(p, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		char c = p[i];
		p[i] = '\0';
		if (mkdir(p, 0777) < 0 && errno != EEXIST) {
			int rc = titan_err_errno(TITAN_EIO, "cannot create directory '%s'", p);
			free(p);
			return rc;
		}
		p[i] = c;
	}
	free(p);
	if (stat(dir, &st) < 0)
		return titan_err_errno(TITAN_EIO, "cannot create directory '%s'", dir);
	if (!S_ISDIR(st.st_mode))
		return titan_err(TITAN_EIO, "cannot create directory '%s': not a directory", dir);
	return 0;
}

static int tb_open(metrics *m, const char *dir)
{
	char host[256], path[4096];
	long now = (long)time(NULL);
	static const char version[] = "brain.Event:2";
	titan_bytes ev = {0};
	int fd = -1, rc;

	if ((rc = make_dirs(dir)))
		return rc;
	if (gethostname(host, sizeof host) < 0 || !host[0])
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	/* Two runs started in the same second on one host would share the
	 * name; the second one gets a numbered suffix instead of mixing its
	 * records into the first one's file. */
	for (int k = 0; fd < 0 && k < 100; k++) {
		int len = k ? snprintf(path, sizeof path, "%s/events.out.tfevents.%ld.%s.%d",
				       dir, now, host, k)
			    : snprintf(path, sizeof path, "%s/events.out.tfevents.%ld.%s",
				       dir, now, host);
		if (len < 0 || (size_t)len >= sizeof path)
			return titan_err(TITAN_EUSAGE, "'%s': directory name too long", dir);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0 && errno != EEXIST)
			return titan_err_errno(TITAN_EIO, "cannot create '%s'", path);
	}
	if (fd < 0)
		return titan_err(TITAN_EIO, "cannot create '%s': file exists", path);
	if (!(m->tb_path = strdup(path))) {
		close(fd);
		return titan_err_nomem();
	}
	if (!(m->tb = fdopen(fd, "wb"))) {
		rc = titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
		close(fd);
		return rc;
	}
	rc = pb_double(&ev, 1, wall_time());
	if (!rc)
		rc = pb_bytes(&ev, 3, version, sizeof version - 1);
	if (!rc)
		rc = tb_write_record(m, &ev);
	if (!rc)
		rc = tb_flush(m);
	bytes_free(&ev);
	return rc;
}

/* ---- JSON lines ---- */

/* The shortest %g form that reads back as x; null when x is not finite
 * (JSON has no NaN or Infinity). */
static void json_num(char *out, size_t n, double x)
{
	if (!isfinite(x)) {
		snprintf(out, n, "null");
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, n, "%.*g", prec, x);
		if (strtod(out, NULL) == x)
			return;
	}
}

static int jsonl_open(metrics *m, const char *path)
{
	int fd, rc;
	struct stat st;

	if (!(m->jsonl_path = strdup(path)))
		return titan_err_nomem();
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
	if (!(m->jsonl = fdopen(fd, "a"))) {
		rc = titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
		close(fd);
		return rc;
	}
	/* A run killed in the middle of a line leaves it unterminated; end it,
	 * so the lines we append still parse one by one. */
	if (fstat(fd, &st) == 0 && st.st_size > 0) {
		char last = '\n';
		int rfd = open(path, O_RDONLY | O_CLOEXEC);
		if (rfd >= 0) {
			if (pread(rfd, &last, 1, st.st_size - 1) != 1)
				last = '\n';
			close(rfd);
		}
		if (last != '\n' && (fputc('\n', m->jsonl) == EOF || fflush(m->jsonl)))
			return titan_err_errno(TITAN_EIO, "cannot write '%s'", path);
	}
	return 0;
}

/* Write line (fields already joined) as one object and flush it. */
static int jsonl_write(metrics *m, const char *line)
{
	if (!m->jsonl)
		return 0;
	if (fputs(line, m->jsonl) == EOF || fflush(m->jsonl))
		return titan_err_errno(TITAN_EIO, "cannot write '%s'", m->jsonl_path);
	return 0;
}

/* ---- the human line ---- */

/* x rounded to an integer with thousands separators: 1234567 -> "1,234,567". */
static void group_thousands(char *out, size_t n, double x)
{
	char digits[32];
	size_t len, o = 0;
	int neg;

	if (!isfinite(x) || fabs(x) >= 1e18) {
		snprintf(out, n, "%.3g", x);
		return;
	}
	snprintf(digits, sizeof digits, "%.0f", fabs(x));
	neg = x < 0 && strcmp(digits, "0") != 0;
	len = strlen(digits);
	if (neg && o + 1 < n)
		out[o++] = '-';
	for (size_t i = 0; i < len && o + 1 < n; i++) {
		if (i && (len - i) % 3 == 0) {
			out[o++] = ',';
			if (o + 1 >= n)
				break;
		}
		out[o++] = digits[i];
	}
	out[o] = '\0';
}

/* The human line is advisory: a closed or full stderr must not stop a
 * training run, so its write errors are not reported. */
static void human_line(FILE *fp, const char *line)
{
	if (!fp)
		return;
	fputs(line, fp);
	fflush(fp);
}

/* ---- the API ---- */

int metrics_open(metrics **out, FILE *human, const char *jsonl, const char *tb_dir)
{
	metrics *m = calloc(1, sizeof *m);
	int rc = 0;

	*out = NULL;
	if (!m)
		return titan_err_nomem();
	m->human = human;
	if (jsonl && *jsonl)
		rc = jsonl_open(m, jsonl);
	if (!rc && tb_dir && *tb_dir)
		rc = tb_open(m, tb_dir);
	if (rc) {
		metrics_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

int metrics_log(metrics *m, const metrics_row *r)
{
	char line[1024], tps[40], global[64] = "", comm[32] = "", num[12][32], dp[160] = "";
	bool par = r->ranks > 1;
	int rc;

	group_thousands(tps, sizeof tps, r->tps);
	if (par) {
		char g[40];

		group_thousands(g, sizeof g, r->tps_global);
		snprintf(global, sizeof global, " (%s global)", g);
		snprintf(comm, sizeof comm, "  comm %.1f%%", 100.0 * r->comm_share);
	}
	snprintf(line, sizeof line,
		 "step %4ld  loss %.4f  grad_norm %.4f  lr %.4e  tps %s%s  tflops %.2f"
		 "  mfu %.1f%%  data %.1f%%%s  mem %.2fGiB\n",
		 r->step, r->loss, r->grad_norm, r->lr, tps, global, r->tflops, r->mfu,
		 100.0 * r->data_share, comm, r->mem_peak_gib);
	human_line(m->human, line);

	const double v[] = {r->loss, r->lr, r->grad_norm, r->tps, r->tflops, r->mfu,
			    r->mem_peak_gib, r->elapsed_s, r->data_share};
	for (size_t i = 0; i < ARRAY_SIZE(v); i++)
		json_num(num[i], sizeof num[i], v[i]);
	if (par) {
		json_num(num[10], sizeof num[10], r->tps_global);
		json_num(num[11], sizeof num[11], r->comm_share);
		snprintf(dp, sizeof dp, ",\"ranks\":%d,\"tps_global\":%s,\"comm_share\":%s",
			 r->ranks, num[10], num[11]);
	}
	snprintf(line, sizeof line,
		 "{\"step\":%ld,\"loss\":%s,\"lr\":%s,\"grad_norm\":%s,\"tps\":%s,"
		 "\"tflops\":%s,\"mfu\":%s,\"mem_peak_gib\":%s,\"elapsed_s\":%s,"
		 "\"data_s_share\":%s%s}\n",
		 r->step, num[0], num[1], num[2], num[3], num[4], num[5], num[6],
		 num[7], num[8], dp);
	if ((rc = jsonl_write(m, line)))
		return rc;

	const tb_scalar s[] = {
		{"loss/train", r->loss}, {"grad_norm", r->grad_norm}, {"lr", r->lr},
		{"tps", r->tps}, {"tflops", r->tflops}, {"mfu", r->mfu},
		{"mem_peak_gib", r->mem_peak_gib}, {"data_share", r->data_share},
		{"tps_global", r->tps_global}, {"comm_share", r->comm_share},
	};
	return tb_log(m, r->step, s, ARRAY_SIZE(s) - (par ? 0 : 2));
}

int metrics_log_val(metrics *m, long step, double val_loss)
{
	char line[256], loss[32], ppl[32];
	double p = exp(val_loss);
	int rc;

	snprintf(line, sizeof line, "step %4ld  val_loss %.4f  val_ppl %.2f\n",
		 step, val_loss, p);
	human_line(m->human, line);

	json_num(loss, sizeof loss, val_loss);
	json_num(ppl, sizeof ppl, p);
	snprintf(line, sizeof line, "{\"step\":%ld,\"val_loss\":%s,\"val_ppl\":%s}\n",
		 step, loss, ppl);
	if ((rc = jsonl_write(m, line)))
		return rc;

	const tb_scalar s[] = {{"loss/val", val_loss}, {"ppl/val", p}};
	return tb_log(m, step, s, ARRAY_SIZE(s));
}

int metrics_close(metrics *m)
{
	int rc = 0;

	if (!m)
		return 0;
	if (m->jsonl && fclose(m->jsonl) && !rc)
		rc = titan_err_errno(TITAN_EIO, "cannot write '%s'", m->jsonl_path);
	if (m->tb && fclose(m->tb) && !rc)
		rc = titan_err_errno(TITAN_EIO, "cannot write '%s'", m->tb_path);
	free(m->jsonl_path);
	free(m->tb_path);
	free(m);
	return rc;
}
