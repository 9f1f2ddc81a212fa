/* ckpt.c - checkpoint directories: save (through ckpt_writer), async save on
 * one background thread, keep_latest_k pruning, "latest", and load into any
 * slicing (through ckpt_reader). (man 5 titan-checkpoint) */
#include "core/base.h"
#include "ckpt/ckpt.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_priv.h"
#include "core/file.h"
#include "core/json.h"

struct ckpt_saver {
	char *folder;
	int keep_latest_k;
	bool async;
	int rank, nranks;
	char **attach_name, **attach_src;   /* copied into every save */
	size_t nattached;

	/* Async: the staged copy of one save, owned here between saves. */
	float *stage;
	size_t stage_cap;           /* floats */
	ckpt_tensor *job;
	char **job_names;
	size_t job_n, job_cap;
	json_t *job_extra;
	long job_step;

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool pending;               /* a staged save not yet written */
	bool quit;
	int status;                 /* the last save's, until reported */
	char *errmsg;               /* its message, carried across threads */
};

/* --- paths and directories --- */

/* N when name is exactly "step-<digits>" as a save names it (no leading
 * zeros, fits a long), else -1. */
static long step_of(const char *name)
{
	if (strncmp(name, "step-", 5) || !name[5] || (name[5] == '0' && name[6]))
		return -1;
	long n = 0;
	for (const char *p = name + 5; *p; p++) {
		if (*p < '0' || *p > '9' || n > (LONG_MAX - 9) / 10)
			return -1;
		n = n * 10 + (*p - '0');
	}
	return n;
}

/* The N of every complete step-N directory in folder (*steps allocated). */
static int list_steps(const char *folder, long **steps, size_t *n)
{
	*steps = NULL;
	*n = 0;
	DIR *d = opendir(folder);
	if (!d)
		return titan_err_errno(TITAN_EIO, "cannot open '%s'", folder);
	size_t cap = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		long step = step_of(de->d_name);
		if (step < 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			long *s = realloc(*steps, cap * sizeof *s);
			if (!s) {
				rc = titan_err_nomem();
				break;
			}
			*steps = s;
		}
		(*steps)[(*n)++] = step;
	}
	closedir(d);
	if (rc) {
		free(*steps);
		*steps = NULL;
		*n = 0;
	}
	return rc;
}

static int by_step_desc(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return x > y ? -1 : x < y;
}

static int prune(const char *folder, int keep)
{
	if (keep <= 0)
		return 0;
	long *steps;
	size_t n;
	int rc = list_steps(folder, &steps, &n);
	if (rc)
		return rc;
	qsort(steps, n, sizeof *steps, by_step_desc);
	for (size_t i = (size_t)keep; !rc && i < n; i++) {
		char name[48];
		snprintf(name, sizeof name, "step-%ld", steps[i]);
		char *p = file_path_join(folder, name);
		rc = p ? file_remove_tree(p) : titan_err_nomem();
		free(p);
	}
	free(steps);
	return rc;
}

/* --- save --- */

static int check_tensors(const ckpt_tensor *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *name = t[i].name ? t[i].name : "(null)";
		if (!t[i].name || !*t[i].name)
			return titan_err(TITAN_EUSAGE, "tensor %zu has no name", i);
		if (t[i].ndim < 0 || t[i].ndim > CKPT_MAX_DIMS)
			return titan_err(TITAN_EUSAGE, "tensor '%s': %d dimensions, at most %d",
					 name, t[i].ndim, CKPT_MAX_DIMS);
		for (int d = 0; d < t[i].ndim; d++) {
			int64_t g = t[i].shape[d], s0 = t[i].slice_start[d],
				sn = t[i].slice_shape[d];
			if (g < 0 || g > ((int64_t)1 << 40) || s0 < 0 || sn < 0 || s0 > g ||
			    sn > g - s0)
				return titan_err(TITAN_EUSAGE,
						 "tensor '%s': slice [%lld, +%lld) of dimension %d outside its size %lld",
						 name, (long long)s0, (long long)sn, d,
						 (long long)g);
		}
		if (ckpt_numel(t[i].ndim, t[i].slice_shape) && !t[i].data)
			return titan_err(TITAN_EUSAGE, "tensor '%s': no data", name);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(t[j].name, t[i].name))
				return titan_err(TITAN_EUSAGE, "tensor '%s' saved twice", name);
	}
	return 0;
}

/* Write folder/step-N through a ckpt_writer (one file, this rank's):
 * step-N.tmp, fsync, rename, with the attached files copied in. */
static int write_step(const ckpt_saver *s, long step, const ckpt_tensor *t, size_t n,
		      const json_t *extra)
{
	char name[48];
	snprintf(name, sizeof name, "step-%ld", step);
	char *dir = file_path_join(s->folder, name);
	if (!dir)
		return titan_err_nomem();
	ckpt_writer *w;
	int rc = ckpt_writer_new(&w, dir, step, true);
	free(dir);
	if (rc)
		return rc;
	for (size_t i = 0; !rc && i < n; i++)
		rc = ckpt_writer_declare(w, s->rank, &t[i]);
	for (size_t i = 0; !rc && i < n; i++)
		rc = ckpt_writer_put(w, t[i].data, (size_t)ckpt_numel(t[i].ndim, t[i].slice_shape));
	for (size_t i = 0; !rc && i < s->nattached; i++)
		rc = ckpt_writer_attach_file(w, s->attach_name[i], s->attach_src[i]);
	json_t *layout = NULL;
	if (!rc) {
		layout = json_pack("{s:i, s:i, s:i, s:i, s:i}", "pp", 1, "dp_replicate", 1,
				   "dp_shard", s->nranks, "cp", 1, "tp", 1);
		if (!layout)
			rc = titan_err_nomem();
	}
	if (!rc)
		rc = ckpt_writer_commit(w, layout, extra);
	json_decref(layout);
	ckpt_writer_free(w);
	return rc;
}

static int save_now(const ckpt_saver *s, long step, const ckpt_tensor *t, size_t n,
		    const json_t *extra)
{
	int rc = write_step(s, step, t, n, extra);
	if (!rc)
		rc = prune(s->folder, s->keep_latest_k);
	return rc;
}

static void job_clear(ckpt_saver *s)
{
	for (size_t i = 0; i < s->job_n; i++)
		free(s->job_names[i]);
	s->job_n = 0;
	json_decref(s->job_extra);
	s->job_extra = NULL;
}

static void *writer_main(void *arg)
{
	ckpt_saver *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->pending && !s->quit)
			pthread_cond_wait(&s->cv, &s->mu);
		if (!s->pending)
			break;
		pthread_mutex_unlock(&s->mu);

		int rc = save_now(s, s->job_step, s->job, s->job_n, s->job_extra);
		char *msg = rc ? strdup(titan_errmsg()) : NULL;

		pthread_mutex_lock(&s->mu);
		job_clear(s);
		s->status = rc;
		free(s->errmsg);
		s->errmsg = msg;
		s->pending = false;
		pthread_cond_broadcast(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int ckpt_saver_new(ckpt_saver **out, const char *folder, int keep_latest_k,
		   bool async, int rank, int nranks)
{
	*out = NULL;
	if (nranks < 1 || rank < 0 || rank >= nranks || rank > 99999)
		return titan_err(TITAN_EUSAGE, "checkpoint: rank %d of %d ranks", rank, nranks);
	if (mkdir(folder, 0777) < 0 && errno != EEXIST)
		return titan_err_errno(TITAN_EIO, "cannot create '%s'", folder);
	struct stat st;
	if (stat(folder, &st) < 0)
		return titan_err_errno(TITAN_EIO, "cannot stat '%s'", folder);
	if (!S_ISDIR(st.st_mode))
		return titan_err(TITAN_EIO, "'%s' is not a directory", folder);

	ckpt_saver *s = calloc(1, sizeof *s);
	if (!s)
		return titan_err_nomem();
	s->folder = strdup(folder);
	if (!s->folder) {
		free(s);
		return titan_err_nomem();
	}
	s->keep_latest_k = keep_latest_k;
	s->async = async;
	s->rank = rank;
	s->nranks = nranks;
	if (async) {
		pthread_mutex_init(&s->mu, NULL);
		pthread_cond_init(&s->cv, NULL);
		int e = pthread_create(&s->thread, NULL, writer_main, s);
		if (e) {
			errno = e;
			int rc = titan_err_errno(TITAN_EIO, "'%s': cannot start the checkpoint thread",
						 folder);
			pthread_cond_destroy(&s->cv);
			pthread_mutex_destroy(&s->mu);
			free(s->folder);
			free(s);
			return rc;
		}
		s->thread_started = true;
	}
	*out = s;
	return 0;
}

int ckpt_wait(ckpt_saver *s)
{
	if (!s->async)
		return 0;
	pthread_mutex_lock(&s->mu);
	while (s->pending)
		pthread_cond_wait(&s->cv, &s->mu);
	int rc = s->status;
	char *msg = s->errmsg;
	s->status = 0;
	s->errmsg = NULL;
	pthread_mutex_unlock(&s->mu);
	if (rc)
		titan_err(rc, "%s", msg ? msg : "checkpoint save failed");
	free(msg);
	return rc;
}

/* Copy t into the staging buffer and the job's own tensor list. */
static int stage(ckpt_saver *s, long step, const ckpt_tensor *t, size_t n,
		 const json_t *extra)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += (size_t)ckpt_numel(t[i].ndim, t[i].slice_shape);
	if (total > s->stage_cap) {
		float *p = realloc(s->stage, total * sizeof *p);
		if (!p)
			return titan_err_nomem();
		s->stage = p;
		s->stage_cap = total;
	}
	if (n > s->job_cap) {
		ckpt_tensor *jt = realloc(s->job, n * sizeof *jt);
		if (!jt)
			return titan_err_nomem();
		s->job = jt;
		char **jn = realloc(s->job_names, n * sizeof *jn);
		if (!jn)
			return titan_err_nomem();
		s->job_names = jn;
		s->job_cap = n;
	}
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		size_t k = (size_t)ckpt_numel(t[i].ndim, t[i].slice_shape);
		s->job_names[i] = strdup(t[i].name);
		if (!s->job_names[i]) {
			s->job_n = i;
			job_clear(s);
			return titan_err_nomem();
		}
		s->job[i] = t[i];
		s->job[i].name = s->job_names[i];
		s->job[i].data = s->stage + off;
		if (k)
			memcpy(s->stage + off, t[i].data, k * sizeof(float));
		off += k;
	}
	s->job_n = n;
	s->job_extra = extra ? json_deep_copy(extra) : json_object();
	if (!s->job_extra) {
		job_clear(s);
		return titan_err_nomem();
	}
	s->job_step = step;
	return 0;
}

int ckpt_save(ckpt_saver *s, long step, const ckpt_tensor *t, size_t n,
	      const json_t *extra)
{
	if (s->nranks > 1)
		return titan_err(TITAN_EUSAGE, "'%s': multi-rank save needs lib/dist", s->folder);
	if (step < 0)
		return titan_err(TITAN_EUSAGE, "'%s': negative step %ld", s->folder, step);
	int rc = check_tensors(t, n);
	if (rc)
		return rc;
	if (!s->async)
		return save_now(s, step, t, n, extra);

	/* The previous save's error comes out here, and this save is not
	 * started: the caller learns of the failure before going on. */
	if ((rc = ckpt_wait(s)))
		return rc;
	/* The writer is idle: the staging buffer and job are ours. */
	if ((rc = stage(s, step, t, n, extra)))
		return rc;
	pthread_mutex_lock(&s->mu);
	s->pending = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

void ckpt_saver_free(ckpt_saver *s)
{
	if (!s)
		return;
	if (s->thread_started) {
		pthread_mutex_lock(&s->mu);
		s->quit = true;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thread, NULL);
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->mu);
	}
	job_clear(s);
	for (size_t i = 0; i < s->nattached; i++) {
		free(s->attach_name[i]);
		free(s->attach_src[i]);
	}
	free(s->attach_name);
	free(s->attach_src);
	free(s->job);
	free(s->job_names);
	free(s->stage);
	free(s->errmsg);
	free(s->folder);
	free(s);
}

int ckpt_saver_attach_file(ckpt_saver *s, const char *name, const char *src)
{
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") ||
	    !strcmp(name, "manifest.json"))
		return titan_err(TITAN_EUSAGE, "'%s': cannot attach a file named '%s'",
				 s->folder, name);
	if (s->async) {
		/* The writer thread reads the list during a save. */
		pthread_mutex_lock(&s->mu);
		while (s->pending)
			pthread_cond_wait(&s->cv, &s->mu);
		pthread_mutex_unlock(&s->mu);
	}
	for (size_t i = 0; i < s->nattached; i++) {
		if (strcmp(s->attach_name[i], name))
			continue;
		char *p = strdup(src);
		if (!p)
			return titan_err_nomem();
		free(s->attach_src[i]);
		s->attach_src[i] = p;
		return 0;
	}
	size_t n = s->nattached + 1;
	char **names = realloc(s->attach_name, n * sizeof *names);
	if (!names)
		return titan_err_nomem();
	s->attach_name = names;
	char **srcs = realloc(s->attach_src, n * sizeof *srcs);
	if (!srcs)
		return titan_err_nomem();
	s->attach_src = srcs;
	names[n - 1] = strdup(name);
	srcs[n - 1] = strdup(src);
	if (!names[n - 1] || !srcs[n - 1]) {
		free(names[n - 1]);
		free(srcs[n - 1]);
		return titan_err_nomem();
	}
	s->nattached = n;
	return 0;
}

size_t ckpt_staging_bytes(const ckpt_saver *s)
{
	return s->async ? s->stage_cap * sizeof(float) : 0;
}

/* --- resolve and load --- */

int ckpt_resolve(const char *folder, const char *load, char **dir)
{
	*dir = NULL;
	if (!strcmp(load, "latest")) {
		long *steps;
		size_t n;
		int rc = list_steps(folder, &steps, &n);
		if (rc)
			return rc;
		long best = -1;
		for (size_t i = 0; i < n; i++)
			best = TITAN_MAX(best, steps[i]);
		free(steps);
		if (best < 0)
			return titan_err(TITAN_EIO, "'%s': no checkpoint (no step-N directory)",
					 folder);
		char name[48];
		snprintf(name, sizeof name, "step-%ld", best);
		*dir = file_path_join(folder, name);
		return *dir ? 0 : titan_err_nomem();
	}
	struct stat st;
	if (stat(load, &st) < 0)
		return titan_err_errno(TITAN_EIO, "cannot open checkpoint '%s'", load);
	char *man = file_path_join(load, "manifest.json");
	if (!man)
		return titan_err_nomem();
	bool ok = S_ISDIR(st.st_mode) && access(man, F_OK) == 0;
	free(man);
	if (!ok)
		return titan_err(TITAN_EIO, "'%s': not a checkpoint directory (no manifest.json)",
				 load);
	*dir = strdup(load);
	return *dir ? 0 : titan_err_nomem();
}

int ckpt_read_manifest(const char *dir, json_t **manifest)
{
	*manifest = NULL;
	char *path = file_path_join(dir, "manifest.json");
	if (!path)
		return titan_err_nomem();
	json_t *m = NULL;
	int rc = json_load_path(&m, path);
	const char *format = NULL;
	long long version = 0;
	if (!rc)
		rc = json_get_str(m, "format", &format, path, "$");
	if (!rc && strcmp(format, CKPT_FORMAT))
		rc = titan_err(TITAN_EFORMAT, "'%s': $.format: '%s', expected '%s'", path,
			       format, CKPT_FORMAT);
	if (!rc)
		rc = json_get_int(m, "version", &version, path, "$");
	if (!rc && version != CKPT_VERSION)
		rc = titan_err(TITAN_EFORMAT, "'%s': $.version: %lld, expected %d", path,
			       version, CKPT_VERSION);
	free(path);
	if (rc) {
		json_decref(m);
		return rc;
	}
	*manifest = m;
	return 0;
}

void ckpt_shape_text(char *buf, size_t cap, int ndim, const int64_t *shape)
{
	size_t o = (size_t)snprintf(buf, cap, "[");
	for (int i = 0; i < ndim && o < cap; i++)
		o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "",
				      (long long)shape[i]);
	if (o < cap)
		snprintf(buf + o, cap - o, "]");
}

int ckpt_load(const char *dir, ckpt_tensor *t, size_t n)
{
	ckpt_reader *r;
	int rc = ckpt_reader_open(&r, dir);
	for (size_t i = 0; !rc && i < n; i++) {
		const ckpt_tensor_info *e = ckpt_reader_find(r, t[i].name);
		if (!e) {
			rc = titan_err(TITAN_EFORMAT, "'%s': tensor '%s' not in the checkpoint",
				       dir, t[i].name);
			break;
		}
		bool same = e->ndim == t[i].ndim;
		for (int k = 0; same && k < e->ndim; k++)
			same = e->shape[k] == t[i].shape[k];
		if (!same) {
			char have[160], want[160];
			ckpt_shape_text(have, sizeof have, e->ndim, e->shape);
			ckpt_shape_text(want, sizeof want, t[i].ndim, t[i].shape);
			rc = titan_err(TITAN_EFORMAT,
				       "'%s': tensor '%s' has shape %s in the checkpoint, expected %s",
				       dir, t[i].name, have, want);
			break;
		}
		rc = ckpt_reader_read(r, t[i].name, t[i].slice_start, t[i].slice_shape,
				      t[i].data);
	}
	if (r)
		ckpt_reader_close(r);
	return rc;
}
