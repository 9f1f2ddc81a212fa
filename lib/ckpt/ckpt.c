/* ckpt.c - checkpoint directories: atomic save, async save on one background
 * thread, keep_latest_k pruning, "latest", and load into any slicing.
 * (man 5 titan-checkpoint) */
#include "core/base.h"
#include "ckpt/ckpt.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/safetensors.h"
#include "core/file.h"
#include "core/json.h"

#define CKPT_FORMAT "titan-checkpoint"
#define CKPT_VERSION 1

struct ckpt_saver {
	char *folder;
	int keep_latest_k;
	bool async;
	int rank, nranks;

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

/* Remove what dirfd holds, depth first, never following links. */
static int remove_contents(int dirfd, const char *shown)
{
	DIR *d = fdopendir(dirfd);
	if (!d) {
		close(dirfd);
		return titan_err_errno(TITAN_EIO, "cannot read directory '%s'", shown);
	}
	int rc = 0;
	struct dirent *de;
	while (!rc && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = titan_err_errno(TITAN_EIO, "cannot stat '%s/%s'", shown, de->d_name);
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				rc = titan_err_errno(TITAN_EIO, "cannot open '%s/%s'", shown,
						     de->d_name);
			else
				rc = remove_contents(sub, shown);
		}
		if (!rc && unlinkat(dirfd, de->d_name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0)
			rc = titan_err_errno(TITAN_EIO, "cannot remove '%s/%s'", shown, de->d_name);
	}
	closedir(d);
	return rc;
}

/* rm -r path; a missing path is not an error. */
static int remove_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return titan_err_errno(TITAN_EIO, "cannot stat '%s'", path);
	}
	if (S_ISDIR(st.st_mode)) {
		int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
		int rc = remove_contents(fd, path);
		if (rc)
			return rc;
		if (rmdir(path) < 0)
			return titan_err_errno(TITAN_EIO, "cannot remove '%s'", path);
		return 0;
	}
	if (unlink(path) < 0)
		return titan_err_errno(TITAN_EIO, "cannot remove '%s'", path);
	return 0;
}

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
		rc = p ? remove_tree(p) : titan_err_nomem();
		free(p);
	}
	free(steps);
	return rc;
}

/* --- save --- */

static int64_t numel(int ndim, const int64_t *shape)
{
	int64_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	return n;
}

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
		if (numel(t[i].ndim, t[i].slice_shape) && !t[i].data)
			return titan_err(TITAN_EUSAGE, "tensor '%s': no data", name);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(t[j].name, t[i].name))
				return titan_err(TITAN_EUSAGE, "tensor '%s' saved twice", name);
	}
	return 0;
}

static json_t *int_array(int n, const int64_t *v)
{
	json_t *a = json_array();
	for (int i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_integer(v[i]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static json_t *manifest_new(long step, int nranks, const char *file,
			    const ckpt_tensor *t, size_t n, const json_t *extra)
{
	json_t *tensors = json_object();
	for (size_t i = 0; tensors && i < n; i++) {
		json_t *e = json_pack("{s:s, s:o, s:[{s:s, s:o, s:o}]}",
				      "dtype", "F32",
				      "shape", int_array(t[i].ndim, t[i].shape),
				      "shards", "file", file,
				      "start", int_array(t[i].ndim, t[i].slice_start),
				      "shape", int_array(t[i].ndim, t[i].slice_shape));
		if (!e || json_object_set_new(tensors, t[i].name, e)) {
			json_decref(tensors);
			tensors = NULL;
		}
	}
	json_t *x = extra ? json_deep_copy(extra) : json_object();
	if (!tensors || !x) {
		json_decref(tensors);
		json_decref(x);
		return NULL;
	}
	return json_pack("{s:s, s:i, s:I, s:i, s:o, s:o}", "format", CKPT_FORMAT,
			 "version", CKPT_VERSION, "step", (json_int_t)step, "nranks",
			 nranks, "tensors", tensors, "extra", x);
}

/* Write folder/step-N.tmp/, then put it in place as folder/step-N. */
static int write_step(const ckpt_saver *s, long step, const ckpt_tensor *t, size_t n,
		      const json_t *extra)
{
	char name[48], file[32];
	snprintf(name, sizeof name, "step-%ld", step);
	snprintf(file, sizeof file, "rank-%05d.safetensors", s->rank);
	size_t len = strlen(s->folder) + sizeof name + 16;
	char *final = malloc(len), *tmp = malloc(len), *old = malloc(len);
	char *shard = NULL, *man = NULL;
	st_writer *w = NULL;
	json_t *m = NULL;
	int rc = 0;
	if (!final || !tmp || !old) {
		rc = titan_err_nomem();
		goto out;
	}
	snprintf(final, len, "%s/%s", s->folder, name);
	snprintf(tmp, len, "%s/%s.tmp", s->folder, name);
	snprintf(old, len, "%s/%s.old", s->folder, name);
	shard = file_path_join(tmp, file);
	man = file_path_join(tmp, "manifest.json");
	if (!shard || !man) {
		rc = titan_err_nomem();
		goto out;
	}

	/* A step-N.tmp is what a crash left behind: never complete. */
	if ((rc = remove_tree(tmp)))
		goto out;
	if (mkdir(tmp, 0777) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", tmp);
		goto out;
	}

	if ((rc = st_writer_new(&w)))
		goto out;
	char stepstr[24];
	snprintf(stepstr, sizeof stepstr, "%ld", step);
	rc = st_writer_meta(w, "format", CKPT_FORMAT);
	if (!rc)
		rc = st_writer_meta(w, "step", stepstr);
	for (size_t i = 0; !rc && i < n; i++)
		rc = st_writer_add(w, t[i].name, ST_F32, t[i].ndim, t[i].slice_shape,
				   t[i].data);
	if (!rc)
		rc = st_writer_write(w, shard);
	if (rc)
		goto out;

	m = manifest_new(step, s->nranks, file, t, n, extra);
	if (!m) {
		rc = titan_err(TITAN_ENOMEM, "'%s': cannot build the manifest", man);
		goto out;
	}
	if ((rc = json_write_path(m, man)) || (rc = file_sync_dir(tmp)))
		goto out;

	/* Re-saving a step (after a resume): move the old one aside first,
	 * so that some complete step-N exists at every moment but one
	 * rename. */
	if ((rc = remove_tree(old)))
		goto out;
	bool replaced = rename(final, old) == 0;
	if (!replaced && errno != ENOENT) {
		rc = titan_err_errno(TITAN_EIO, "cannot rename '%s' to '%s'", final, old);
		goto out;
	}
	if (rename(tmp, final) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot rename '%s' to '%s'", tmp, final);
		if (replaced)
			rename(old, final);
		goto out;
	}
	if ((rc = file_sync_dir(s->folder)))
		goto out;
	if (replaced)
		rc = remove_tree(old);
out:
	st_writer_free(w);
	json_decref(m);
	free(shard);
	free(man);
	free(final);
	free(tmp);
	free(old);
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
		total += (size_t)numel(t[i].ndim, t[i].slice_shape);
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
		size_t k = (size_t)numel(t[i].ndim, t[i].slice_shape);
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
	free(s->job);
	free(s->job_names);
	free(s->stage);
	free(s->errmsg);
	free(s->folder);
	free(s);
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

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
	size_t o = (size_t)snprintf(buf, cap, "[");
	for (int i = 0; i < ndim && o < cap; i++)
		o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "",
				      (long long)shape[i]);
	if (o < cap)
		snprintf(buf + o, cap - o, "]");
}

/* Read the array of non-negative integers at WHERE.KEY: *ndim of them, or
 * any number up to CKPT_MAX_DIMS when *ndim < 0. */
static int read_dims(json_t *obj, const char *key, int64_t *out, int *ndim,
		     const char *file, const char *where)
{
	json_t *a = json_object_get(obj, key);
	if (!json_is_array(a))
		return titan_err(TITAN_EFORMAT, "'%s': %s.%s: expected an array",
				 file, where, key);
	size_t n = json_array_size(a);
	if (n > CKPT_MAX_DIMS || (*ndim >= 0 && (size_t)*ndim != n))
		return titan_err(TITAN_EFORMAT,
				 "'%s': %s.%s: %zu dimensions, expected %d", file,
				 where, key, n, *ndim >= 0 ? *ndim : CKPT_MAX_DIMS);
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_array_get(a, i);
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > ((json_int_t)1 << 40))
			return titan_err(TITAN_EFORMAT,
					 "'%s': %s.%s[%zu]: expected a non-negative integer",
					 file, where, key, i);
		out[i] = json_integer_value(v);
	}
	*ndim = (int)n;
	return 0;
}

/* Shard files opened so far during one load. */
struct open_shards {
	char **names;
	st_file **files;
	size_t n, cap;
};

static int shard_get(struct open_shards *o, const char *dir, const char *man,
		     const char *file, st_file **out)
{
	for (size_t i = 0; i < o->n; i++)
		if (!strcmp(o->names[i], file)) {
			*out = o->files[i];
			return 0;
		}
	/* The manifest names files inside dir, nothing else. */
	if (!*file || strchr(file, '/') || !strcmp(file, ".") || !strcmp(file, ".."))
		return titan_err(TITAN_EFORMAT, "'%s': shard file '%s' is not a plain file name",
				 man, file);
	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 8;
		char **nn = realloc(o->names, cap * sizeof *nn);
		if (!nn)
			return titan_err_nomem();
		o->names = nn;
		st_file **ff = realloc(o->files, cap * sizeof *ff);
		if (!ff)
			return titan_err_nomem();
		o->files = ff;
		o->cap = cap;
	}
	char *path = file_path_join(dir, file);
	char *name = strdup(file);
	int rc = path && name ? st_open(out, path) : titan_err_nomem();
	free(path);
	if (rc) {
		free(name);
		return rc;
	}
	o->names[o->n] = name;
	o->files[o->n] = *out;
	o->n++;
	return 0;
}

static void shards_close(struct open_shards *o)
{
	for (size_t i = 0; i < o->n; i++) {
		free(o->names[i]);
		st_close(o->files[i]);
	}
	free(o->names);
	free(o->files);
}

/* Copy the intersection of the box src (start, shape; fp32 row-major, in a
 * map that need not be 4-byte aligned) with the box dst into dst's data.
 * Returns the elements copied. */
static int64_t copy_box(int ndim, const int64_t *s0, const int64_t *sn, const uint8_t *src,
			const int64_t *d0, const int64_t *dn, float *dst)
{
	int64_t lo[CKPT_MAX_DIMS], hi[CKPT_MAX_DIMS], idx[CKPT_MAX_DIMS];
	for (int k = 0; k < ndim; k++) {
		lo[k] = TITAN_MAX(s0[k], d0[k]);
		hi[k] = TITAN_MIN(s0[k] + sn[k], d0[k] + dn[k]);
		if (lo[k] >= hi[k])
			return 0;
	}
	if (ndim == 0) {
		memcpy(dst, src, sizeof *dst);
		return 1;
	}
	int last = ndim - 1;
	int64_t run = hi[last] - lo[last], copied = 0;
	memcpy(idx, lo, sizeof idx);
	for (;;) {
		int64_t so = 0, dof = 0;
		for (int k = 0; k < ndim; k++) {
			so = so * sn[k] + (idx[k] - s0[k]);
			dof = dof * dn[k] + (idx[k] - d0[k]);
		}
		memcpy(dst + dof, src + so * (int64_t)sizeof *dst, (size_t)run * sizeof *dst);
		copied += run;
		int k = last - 1;
		while (k >= 0 && ++idx[k] == hi[k]) {
			idx[k] = lo[k];
			k--;
		}
		if (k < 0)
			return copied;
	}
}

static bool boxes_overlap(int ndim, const int64_t *a0, const int64_t *an,
			  const int64_t *b0, const int64_t *bn)
{
	for (int k = 0; k < ndim; k++)
		if (TITAN_MAX(a0[k], b0[k]) >= TITAN_MIN(a0[k] + an[k], b0[k] + bn[k]))
			return false;
	return true;
}

static int load_one(const char *dir, const char *man, json_t *tensors,
		    struct open_shards *o, ckpt_tensor *t)
{
	json_t *e = json_object_get(tensors, t->name);
	if (!e)
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s' not in the checkpoint", dir,
				 t->name);
	char where[256];
	snprintf(where, sizeof where, "$.tensors.%s", t->name);
	const char *dtype = NULL;
	int rc = json_get_str(e, "dtype", &dtype, man, where);
	if (rc)
		return rc;
	if (strcmp(dtype, "F32"))
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s' has dtype %s, expected F32",
				 dir, t->name, dtype);
	int64_t shape[CKPT_MAX_DIMS];
	int ndim = -1;
	if ((rc = read_dims(e, "shape", shape, &ndim, man, where)))
		return rc;
	bool same = ndim == t->ndim;
	for (int k = 0; same && k < ndim; k++)
		same = shape[k] == t->shape[k];
	if (!same) {
		char have[160], want[160];
		shape_str(have, sizeof have, ndim, shape);
		shape_str(want, sizeof want, t->ndim, t->shape);
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s' has shape %s in the checkpoint, expected %s",
				 dir, t->name, have, want);
	}
	for (int k = 0; k < ndim; k++)
		if (t->slice_start[k] < 0 || t->slice_shape[k] < 0 ||
		    t->slice_start[k] > shape[k] || t->slice_shape[k] > shape[k] - t->slice_start[k])
			return titan_err(TITAN_EUSAGE,
					 "tensor '%s': requested slice outside dimension %d (size %lld)",
					 t->name, k, (long long)shape[k]);

	json_t *shards = json_object_get(e, "shards");
	if (!json_is_array(shards))
		return titan_err(TITAN_EFORMAT, "'%s': %s.shards: expected an array",
				 man, where);
	size_t ns = json_array_size(shards);
	int64_t want = numel(ndim, t->slice_shape), got = 0;
	for (size_t i = 0; i < ns; i++) {
		json_t *sh = json_array_get(shards, i);
		int64_t s0[CKPT_MAX_DIMS], sn[CKPT_MAX_DIMS];
		int d0 = ndim, d1 = ndim;
		const char *file;
		snprintf(where, sizeof where, "$.tensors.%s.shards[%zu]", t->name, i);
		if ((rc = json_get_str(sh, "file", &file, man, where)) ||
		    (rc = read_dims(sh, "start", s0, &d0, man, where)) ||
		    (rc = read_dims(sh, "shape", sn, &d1, man, where)))
			return rc;
		for (int k = 0; k < ndim; k++)
			if (s0[k] > shape[k] || sn[k] > shape[k] - s0[k])
				return titan_err(TITAN_EFORMAT,
						 "'%s': tensor '%s': shard %zu lies outside the tensor",
						 man, t->name, i);
		/* Shards must not overlap, or the covered count below lies. */
		for (size_t j = 0; j < i; j++) {
			json_t *sj = json_array_get(shards, j);
			int64_t j0[CKPT_MAX_DIMS], jn[CKPT_MAX_DIMS];
			int e0 = ndim, e1 = ndim;
			if (read_dims(sj, "start", j0, &e0, man, where) ||
			    read_dims(sj, "shape", jn, &e1, man, where))
				return TITAN_EFORMAT;
			if (numel(ndim, sn) && numel(ndim, jn) &&
			    boxes_overlap(ndim, s0, sn, j0, jn))
				return titan_err(TITAN_EFORMAT,
						 "'%s': tensor '%s': shards %zu and %zu overlap",
						 man, t->name, j, i);
		}
		if (!want || (ndim && !boxes_overlap(ndim, s0, sn, t->slice_start,
						     t->slice_shape)))
			continue;

		st_file *f;
		if ((rc = shard_get(o, dir, man, file, &f)))
			return rc;
		const st_tensor *st = st_find(f, t->name);
		if (!st)
			return titan_err(TITAN_EFORMAT, "'%s': tensor '%s' missing from the shard file",
					 f->path, t->name);
		same = st->dtype == ST_F32 && st->ndim == ndim;
		for (int k = 0; same && k < ndim; k++)
			same = st->shape[k] == sn[k];
		if (!same) {
			char have[160], exp[160];
			shape_str(have, sizeof have, st->ndim, st->shape);
			shape_str(exp, sizeof exp, ndim, sn);
			return titan_err(TITAN_EFORMAT,
					 "'%s': tensor '%s' is %s %s, the manifest says F32 %s",
					 f->path, t->name, st_dtype_name(st->dtype), have, exp);
		}
		got += copy_box(ndim, s0, sn, st_data(f, st), t->slice_start, t->slice_shape,
				t->data);
	}
	if (got != want)
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s': the shards cover %lld of the %lld values requested",
				 dir, t->name, (long long)got, (long long)want);
	return 0;
}

int ckpt_load(const char *dir, ckpt_tensor *t, size_t n)
{
	json_t *m;
	int rc = ckpt_read_manifest(dir, &m);
	if (rc)
		return rc;
	char *man = file_path_join(dir, "manifest.json");
	json_t *tensors = NULL;
	if (!man)
		rc = titan_err_nomem();
	else
		rc = json_get_obj(m, "tensors", &tensors, man, "$");
	struct open_shards o = {0};
	for (size_t i = 0; !rc && i < n; i++)
		rc = load_one(dir, man, tensors, &o, &t[i]);
	shards_close(&o);
	free(man);
	json_decref(m);
	return rc;
}
