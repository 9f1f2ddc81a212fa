/* ckpt_dist_check.c - the collective checkpoint save, run on every rank of
 * an MPI job (or alone, as one rank):
 *
 *   mpirun -np N ckpt_dist_check [--async] [--replica] [--fail-rank R]
 *                                [--overlap-rank R] [-v] FOLDER
 *
 * Every rank holds its slices of W [7, 5] and b [3], cut along dimension 0
 * as torch.chunk cuts (pieces of ceil(rows / N) rows; a rank whose piece is
 * empty holds none of that tensor), and saves steps 1..3 with
 * keep_latest_k 2.  --replica: only even ranks hold slices (the chunks are
 * cut among them); odd ranks save with n = 0.  Rank 0 then checks, through
 * ckpt_reader and ckpt_load, every value bit for bit, the manifest's
 * layout, extra and file count, ckpt_reader_verify, the attached file, and
 * that step-1 was pruned.
 *
 * --fail-rank R: rank R's write of step 2 fails (its file size limit is
 * cut to a few bytes, as a full disk would); every rank must get an error
 * naming rank R, no step-2 (nor step-2.tmp) may remain, and steps 1 and
 * 3 must be whole.
 * --overlap-rank R (R > 0): rank R's slice of W of step 2 starts a row
 * early, so rank 0's coverage check refuses the step; the same checks.
 *
 * -v: say how the saves ran and what the failures said, on stderr.
 *
 * Prints "ok" (rank 0) and exits 0; else each rank prints its first
 * problem and every rank exits 1. */
#include "core/base.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt.h"
#include "core/file.h"
#include "dist/comm.h"

#define ROWS_W 7
#define COLS_W 5
#define ROWS_B 3
#define NSTEPS 3

static int rank, size;
static char problem[1024];

static void fail(const char *fmt, ...) TITAN_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
	if (*problem)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(problem, sizeof problem, fmt, ap);
	va_end(ap);
}

/* Element i of the flattened tensor at step: exact in fp32, different in
 * every step and tensor. */
static float value(int tensor, long step, int64_t i)
{
	return (float)(step * 1000 + tensor * 100 + i) + 0.25f;
}

/* Rows [*start, *start + *n) of rows that piece k of nparts holds. */
static void chunk(int64_t rows, int k, int nparts, int64_t *start, int64_t *n)
{
	int64_t per = (rows + nparts - 1) / nparts;
	*start = TITAN_MIN(rows, per * k);
	*n = TITAN_MIN(rows, *start + per) - *start;
}

static bool exists(const char *folder, const char *name)
{
	char *p = file_path_join(folder, name);
	bool yes = p && access(p, F_OK) == 0;
	free(p);
	return yes;
}

struct opts {
	bool async, replica, verbose;
	int fail_rank, overlap_rank;
	const char *folder;
};

/* This rank's slices of step: *n of them in t, data in buf. */
static void slices(const struct opts *o, long step, ckpt_tensor *t, size_t *n, float *buf)
{
	static const char *const names[2] = { "W", "b" };
	static const int64_t rows[2] = { ROWS_W, ROWS_B }, cols[2] = { COLS_W, 1 };
	*n = 0;
	if (o->replica && rank % 2)
		return;
	int part = o->replica ? rank / 2 : rank, nparts = o->replica ? (size + 1) / 2 : size;
	for (int k = 0; k < 2; k++) {
		int64_t r0, nr;
		chunk(rows[k], part, nparts, &r0, &nr);
		if (step == 2 && k == 0 && rank == o->overlap_rank && r0 > 0) {
			r0--;
			nr++;
		}
		if (!nr)
			continue;
		ckpt_tensor *x = &t[(*n)++];
		*x = (ckpt_tensor){ .name = names[k], .ndim = k ? 1 : 2 };
		x->shape[0] = rows[k];
		x->slice_start[0] = r0;
		x->slice_shape[0] = nr;
		if (!k) {
			x->shape[1] = x->slice_shape[1] = cols[k];
		}
		x->data = buf;
		for (int64_t i = 0; i < nr * cols[k]; i++)
			buf[i] = value(k, step, r0 * cols[k] + i);
		buf += nr * cols[k];
	}
}

/* A file size limit of a few bytes makes this rank's next write fail with
 * EFBIG, as a full disk would; restore puts the old limit back. */
static void limit_writes(bool on)
{
	static struct rlimit old;
	if (on) {
		signal(SIGXFSZ, SIG_IGN);
		getrlimit(RLIMIT_FSIZE, &old);
		struct rlimit tiny = { 16, old.rlim_max };
		if (setrlimit(RLIMIT_FSIZE, &tiny))
			fail("setrlimit: %s", strerror(errno));
	} else {
		setrlimit(RLIMIT_FSIZE, &old);
	}
}

/* The save of step on every rank; failing: whether this step must fail
 * (on every rank, naming rank `culprit`). */
static void save(const struct opts *o, ckpt_saver *s, long step, bool failing, int culprit)
{
	ckpt_tensor t[2];
	size_t n;
	float buf[ROWS_W * COLS_W + ROWS_B];
	slices(o, step, t, &n, buf);
	json_t *extra = json_pack("{s:I, s:i}", "step", (json_int_t)step, "from_rank", rank);
	bool inject = failing && rank == o->fail_rank;
	if (inject)
		limit_writes(true);
	int rc = ckpt_save(s, step, t, n, extra);
	/* Staged: the caller's buffers are free again. */
	memset(buf, 0xff, sizeof buf);
	json_decref(extra);
	if (!rc && o->async)
		rc = ckpt_wait(s);
	if (inject)
		limit_writes(false);
	char who[32];
	snprintf(who, sizeof who, "rank %d:", culprit);
	if (failing && !rc)
		fail("step %ld: the save succeeded, expected a failure of rank %d", step, culprit);
	else if (failing && size > 1 && !strstr(titan_errmsg(), who))
		fail("step %ld: the error does not name rank %d: %s", step, culprit,
		     titan_errmsg());
	else if (!failing && rc)
		fail("step %ld: %s", step, titan_errmsg());
	else if (failing && o->verbose)
		fprintf(stderr, "rank %d: step %ld failed as it should: %s\n", rank, step,
			titan_errmsg());
}

/* Rank 0: the checkpoint of step in dir holds what the ranks saved. */
static void check_step(const struct opts *o, const char *dir, long step)
{
	ckpt_reader *r;
	if (ckpt_reader_open(&r, dir)) {
		fail("%s", titan_errmsg());
		return;
	}
	const json_t *m = ckpt_reader_manifest(r);
	int writers = 0;
	for (int q = 0; q < size; q++) {
		int part = o->replica ? q / 2 : q, nparts = o->replica ? (size + 1) / 2 : size;
		int64_t r0, nr;
		chunk(ROWS_W, part, nparts, &r0, &nr);
		writers += (!o->replica || q % 2 == 0) && nr > 0;
	}
	json_t *extra = json_object_get(m, "extra");
	json_t *layout = json_object_get(m, "layout");
	if (ckpt_reader_step(r) != step)
		fail("'%s': step %ld, expected %ld", dir, ckpt_reader_step(r), step);
	else if (json_integer_value(json_object_get(m, "nranks")) != writers)
		fail("'%s': nranks %lld, expected %d", dir,
		     (long long)json_integer_value(json_object_get(m, "nranks")), writers);
	else if (json_integer_value(json_object_get(extra, "step")) != step ||
		 json_integer_value(json_object_get(extra, "from_rank")) != 0)
		fail("'%s': the extra is not rank 0's of step %ld", dir, step);
	else if (json_integer_value(json_object_get(layout, "dp_shard")) !=
		 (o->replica ? (size + 1) / 2 : size) ||
		 json_integer_value(json_object_get(layout, "dp_replicate")) !=
		 (o->replica && size > 1 ? 2 : 1))
		fail("'%s': the layout is not the one saved", dir);
	else if (ckpt_reader_verify(r, NULL, NULL))
		fail("verify: %s", titan_errmsg());
	char *notes = ckpt_reader_file(r, "notes.txt");
	if (!notes)
		fail("'%s': the attached notes.txt is missing", dir);
	free(notes);

	/* Whole tensors through the reader, then through ckpt_load. */
	float w[ROWS_W * COLS_W], b[ROWS_B];
	if (ckpt_reader_read(r, "W", NULL, NULL, w) || ckpt_reader_read(r, "b", NULL, NULL, b))
		fail("read: %s", titan_errmsg());
	for (int i = 0; i < ROWS_W * COLS_W; i++)
		if (memcmp(&w[i], &(float){ value(0, step, i) }, sizeof(float)))
			fail("'%s': W[%d] is %g, saved %g", dir, i, w[i], value(0, step, i));
	for (int i = 0; i < ROWS_B; i++)
		if (memcmp(&b[i], &(float){ value(1, step, i) }, sizeof(float)))
			fail("'%s': b[%d] is %g, saved %g", dir, i, b[i], value(1, step, i));
	ckpt_reader_close(r);

	memset(w, 0, sizeof w);
	ckpt_tensor t = { .name = "W", .ndim = 2, .shape = { ROWS_W, COLS_W },
			  .slice_shape = { ROWS_W, COLS_W }, .data = w };
	if (ckpt_load(dir, &t, 1))
		fail("ckpt_load: %s", titan_errmsg());
	for (int i = 0; i < ROWS_W * COLS_W; i++)
		if (memcmp(&w[i], &(float){ value(0, step, i) }, sizeof(float)))
			fail("ckpt_load '%s': W[%d] is %g, saved %g", dir, i, w[i],
			     value(0, step, i));
}

static int usage(void)
{
	fprintf(stderr, "usage: ckpt_dist_check [--async] [--replica] [--fail-rank R] "
		"[--overlap-rank R] [-v] FOLDER\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct opts o = { .fail_rank = -1, .overlap_rank = -1 };
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--async"))
			o.async = true;
		else if (!strcmp(argv[i], "--replica"))
			o.replica = true;
		else if (!strcmp(argv[i], "-v"))
			o.verbose = true;
		else if (!strcmp(argv[i], "--fail-rank") && i + 1 < argc)
			o.fail_rank = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--overlap-rank") && i + 1 < argc)
			o.overlap_rank = atoi(argv[++i]);
		else if (argv[i][0] == '-' || o.folder)
			return usage();
		else
			o.folder = argv[i];
	}
	if (!o.folder)
		return usage();

	comm *world;
	if (comm_world(&world, 60)) {
		fprintf(stderr, "ckpt_dist_check: %s\n", titan_errmsg());
		return 1;
	}
	rank = comm_rank(world);
	size = comm_size(world);
	if (o.fail_rank >= size || o.overlap_rank >= size || o.overlap_rank == 0) {
		fprintf(stderr, "ckpt_dist_check: no rank %d to fail among %d (overlap: > 0)\n",
			TITAN_MAX(o.fail_rank, o.overlap_rank), size);
		comm_free(world);
		return 2;
	}
	int culprit = o.fail_rank >= 0 ? o.fail_rank : o.overlap_rank >= 0 ? 0 : -1;
	bool failing_run = culprit >= 0;

	/* The layout the replica mode records; else the default one. */
	json_t *layout = o.replica ? json_pack("{s:i, s:i, s:i, s:i, s:i}", "pp", 1,
					       "dp_replicate", size > 1 ? 2 : 1, "dp_shard",
					       (size + 1) / 2, "cp", 1, "tp", 1)
				   : NULL;
	ckpt_saver *s = NULL;
	if (ckpt_saver_new(&s, o.folder, 2, o.async, world, layout)) {
		fail("open: %s", titan_errmsg());
		goto out;
	}
	json_decref(layout);
	layout = NULL;
	if (o.verbose && rank == 0)
		fprintf(stderr, "%d rank%s, %s backend, saves %s\n", size, size == 1 ? "" : "s",
			comm_backend(world),
			ckpt_saver_async(s) ? "on a background thread" : "on the caller's thread");
	char notes[4096];
	snprintf(notes, sizeof notes, "%s.notes.txt", o.folder);
	if (rank == 0 && (atomic_write_file(notes, "notes\n", 6) ||
			  ckpt_saver_attach_file(s, "notes.txt", notes)))
		fail("attach: %s", titan_errmsg());

	for (long step = 1; step <= NSTEPS; step++)
		save(&o, s, step, failing_run && step == 2, culprit);
	if (ckpt_wait(s))
		fail("wait: %s", titan_errmsg());
	ckpt_saver_free(s);
	s = NULL;
	if (comm_barrier(world))
		fail("barrier: %s", titan_errmsg());

	if (rank == 0 && !*problem) {
		char dir[4096];
		/* keep_latest_k 2: step-1 goes unless step-2 failed. */
		if (exists(o.folder, "step-1") != failing_run)
			fail("'%s': step-1 %s", o.folder,
			     failing_run ? "was pruned, though step-2 failed" : "was not pruned");
		for (long step = 1; step <= NSTEPS; step++) {
			char tmp[48];
			snprintf(tmp, sizeof tmp, "step-%ld.tmp", step);
			if (exists(o.folder, tmp))
				fail("'%s': %s remains", o.folder, tmp);
		}
		if (failing_run && exists(o.folder, "step-2"))
			fail("'%s': the failed step-2 appeared", o.folder);
		for (long step = failing_run ? 1 : 2; step <= NSTEPS; step += failing_run ? 2 : 1) {
			snprintf(dir, sizeof dir, "%s/step-%ld", o.folder, step);
			check_step(&o, dir, step);
		}
		/* "latest" is the last step. */
		char *latest = NULL;
		if (ckpt_resolve(o.folder, "latest", &latest))
			fail("%s", titan_errmsg());
		else if (!strstr(latest, "step-3"))
			fail("latest is '%s'", latest);
		free(latest);
	}
out:
	ckpt_saver_free(s);
	json_decref(layout);
	int32_t bad = *problem != 0;
	if (*problem)
		fprintf(stderr, "ckpt_dist_check: rank %d: %s\n", rank, problem);
	if (comm_all_reduce(world, &bad, 1, COMM_I32, COMM_MAX)) {
		fprintf(stderr, "ckpt_dist_check: rank %d: %s\n", rank, titan_errmsg());
		bad = 1;
	}
	if (!bad && rank == 0)
		printf("ok\n");
	comm_free(world);
	return bad ? 1 : 0;
}
