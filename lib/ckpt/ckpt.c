/* ckpt.c - checkpoint directories: save (through ckpt_writer) from one
 * process or collectively from every rank of a communicator, async save on
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
#include "ckpt/reshard.h"
#include "core/file.h"
#include "core/json.h"
#include "dist/comm.h"

struct ckpt_saver {
	char *folder;
	int keep_latest_k;
	bool async;                 /* a background thread writes */
	comm *c;                    /* the caller's, borrowed; NULL: one process */
	comm *bg;                   /* the thread's comm_dup of c */
	json_t *layout;             /* the manifest's "layout" */
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

/* --- agreeing across ranks --- */

/* An error message travels between ranks in a fixed buffer, so that no
 * rank can fail to allocate in the middle of a collective; longer ones are
 * cut. */
#define MSG_CAP 2048

/* Rank 0's status (and message) become every rank's: the end of each step
 * of the protocol that rank 0 decides.  Rank 0 has set its message already,
 * with the failing rank named. */
static int announce(comm *c, int rc)
{
	if (!c)
		return rc;
	struct {
		int32_t rc;
		char msg[MSG_CAP];
	} v = { .rc = rc };
	if (comm_rank(c) == 0 && rc)
		snprintf(v.msg, sizeof v.msg, "%s", titan_errmsg());
	int crc = comm_broadcast(c, &v, sizeof v, COMM_U8, 0);
	if (crc)
		return crc;
	if (comm_rank(c) != 0 && v.rc) {
		v.msg[sizeof v.msg - 1] = 0;
		return titan_err(v.rc, "%s", v.msg);
	}
	return v.rc;
}

/* Name the rank in a message that other ranks will see. */
static int ranked(comm *c, int rank, int rc)
{
	if (rc && c && comm_size(c) > 1)
		titan_err_prefix(rc, "rank %d", rank);
	return rc;
}

static void free_reports(json_t **rep, int n)
{
	for (int i = 0; rep && i < n; i++)
		json_decref(rep[i]);
	free(rep);
}

/* Every rank's report reaches rank 0: {"status": 0, "slices": payload} or
 * {"status": rc, "error": this thread's message}.  At rank 0, *reports
 * gets one parsed object per rank (NULL where unreadable; caller frees
 * with free_reports) and the status is the first failing rank's, its
 * message "rank R: ..." set.  Elsewhere the status is 0 unless sending
 * failed.  c NULL: this process is every rank. */
static int gather_reports(comm *c, int rc, json_t *payload, json_t ***reports)
{
	int size = c ? comm_size(c) : 1, rank = c ? comm_rank(c) : 0;
	*reports = NULL;
	json_t *mine = rc ? json_pack("{s:i, s:s}", "status", rc, "error", titan_errmsg())
			  : json_pack("{s:i, s:O}", "status", 0, "slices",
				      payload ? payload : json_null());
	/* Out of memory here still sends a report, so the others learn of it. */
	char *text = mine ? json_dumps(mine, JSON_COMPACT) : NULL;
	json_decref(mine);
	char **texts = NULL, *one[1] = { text };
	int grc = 0;
	if (c)
		grc = comm_gather_text(c, text ? text : "", 0, &texts);
	else
		texts = one;
	if (rank != 0 || grc) {
		free(text);
		if (texts && texts != one) {
			for (int i = 0; i < size; i++)
				free(texts[i]);
			free(texts);
		}
		return ranked(c, rank, grc);
	}
	json_t **rep = calloc((size_t)size, sizeof *rep);
	int status = rep ? 0 : titan_err_nomem();
	for (int i = 0; i < size; i++) {
		json_error_t je;
		json_t *r = rep && texts[i] && *texts[i] ? json_loads(texts[i], 0, &je) : NULL;
		long long code = 0;
		const char *msg = NULL;
		if (r && (json_unpack(r, "{s:I}", "status", &code) ||
			  (code && json_unpack(r, "{s:s}", "error", &msg)))) {
			json_decref(r);
			r = NULL;
		}
		if (!status && !r)
			status = ranked(c, i, titan_err(TITAN_ENOMEM,
							 "cannot send its report to rank 0"));
		else if (!status && code)
			status = ranked(c, i, titan_err(code < 0 && code >= TITAN_EINTERNAL ?
								(int)code : TITAN_EINTERNAL,
							"%s", msg));
		if (rep)
			rep[i] = r;
		else
			json_decref(r);
		if (texts != one)
			free(texts[i]);
	}
	if (texts != one)
		free(texts);
	free(text);
	if (status) {
		free_reports(rep, size);
		rep = NULL;
	}
	*reports = rep;
	return status;
}

/* Every rank learns whether every rank got rc 0, and the first failure. */
static int agree(comm *c, int rc)
{
	json_t **rep;
	int st = gather_reports(c, rc, NULL, &rep);
	free_reports(rep, c ? comm_size(c) : 1);
	return announce(c, st);
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

/* This rank's file in dir.tmp (none when n is 0) and the records of its
 * slices. */
static int write_part(const char *dir, long step, int rank, const ckpt_tensor *t, size_t n,
		      json_t **records)
{
	ckpt_writer *w;
	int rc = ckpt_writer_part(&w, dir, step, rank);
	for (size_t i = 0; !rc && i < n; i++)
		rc = ckpt_writer_declare(w, rank, &t[i]);
	for (size_t i = 0; !rc && i < n; i++)
		rc = ckpt_writer_put(w, t[i].data, (size_t)ckpt_numel(t[i].ndim, t[i].slice_shape));
	if (!rc)
		rc = ckpt_writer_records(w, records);
	ckpt_writer_free(w);
	return rc;
}

/* Rank 0 puts the step in place: every rank's records merged, the
 * attached files, the manifest, the rename; then the pruning. */
static int commit_step(const ckpt_saver *s, comm *c, ckpt_writer *w, json_t **reports,
		       const json_t *extra)
{
	int rc = 0, size = c ? comm_size(c) : 1;
	for (int i = 0; !rc && i < size; i++) {
		char what[64];
		snprintf(what, sizeof what, "the slice records of rank %d", i);
		json_t *slices = json_object_get(reports[i], "slices");
		rc = ckpt_writer_merge(w, i, slices, what);
	}
	for (size_t i = 0; !rc && i < s->nattached; i++)
		rc = ckpt_writer_attach_file(w, s->attach_name[i], s->attach_src[i]);
	if (!rc)
		rc = ckpt_writer_commit(w, s->layout, extra);
	if (!rc)
		rc = prune(s->folder, s->keep_latest_k);
	return rc;
}

/* The collective save of step into folder/step-N over c (NULL: this
 * process alone), as man 5 titan-checkpoint describes under MULTI-RANK
 * SAVE.  pre: this rank failed before the save (message set); the others
 * still take part, to learn of it.  Every rank returns the same status. */
static int save_step(const ckpt_saver *s, comm *c, long step, const ckpt_tensor *t, size_t n,
		     const json_t *extra, int pre)
{
	int rank = c ? comm_rank(c) : 0;
	char name[48];
	snprintf(name, sizeof name, "step-%ld", step);
	char *dir = file_path_join(s->folder, name);
	ckpt_writer *w = NULL;
	int rc = pre;
	if (!rc && !dir)
		rc = titan_err_nomem();

	/* 1. Rank 0 makes step-N.tmp (removing a stale one); nobody writes
	 * unless it could. */
	int made = rank == 0 ? ranked(c, 0, rc ? rc : ckpt_writer_new(&w, dir, step, true)) : 0;
	if ((made = announce(c, made))) {
		ckpt_writer_free(w);
		free(dir);
		return made;
	}

	/* 2. Each rank writes and fsyncs its own file. */
	json_t *records = NULL;
	if (!rc)
		rc = write_part(dir, step, rank, t, n, &records);

	/* 3. The records (or the failure) go to rank 0. */
	json_t **reports;
	int st = gather_reports(c, rc, records, &reports);
	json_decref(records);

	/* 4. Rank 0 checks and commits, or removes step-N.tmp. */
	if (rank == 0) {
		if (!st)
			st = ranked(c, 0, commit_step(s, c, w, reports, extra));
		free_reports(reports, c ? comm_size(c) : 1);
	}
	ckpt_writer_free(w);
	free(dir);

	/* 5. Everyone returns rank 0's verdict. */
	return announce(c, st);
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
	pthread_setname_np(pthread_self(), "titan-ckpt-save");
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->pending && !s->quit)
			pthread_cond_wait(&s->cv, &s->mu);
		if (!s->pending)
			break;
		pthread_mutex_unlock(&s->mu);

		int rc = save_step(s, s->bg, s->job_step, s->job, s->job_n, s->job_extra, 0);
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

static int start_thread(ckpt_saver *s)
{
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	int e = pthread_create(&s->thread, NULL, writer_main, s);
	if (e) {
		errno = e;
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->mu);
		return titan_err_errno(TITAN_EIO, "'%s': cannot start the checkpoint thread",
				       s->folder);
	}
	s->thread_started = true;
	return 0;
}

static void stop_thread(ckpt_saver *s)
{
	if (!s->thread_started)
		return;
	pthread_mutex_lock(&s->mu);
	s->quit = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	s->thread_started = false;
}

/* What one rank sets up alone: the folder and the saver. */
static int saver_local(ckpt_saver **out, const char *folder, int keep_latest_k, int rank,
		       int nranks, const json_t *layout)
{
	*out = NULL;
	if (nranks < 1 || rank < 0 || rank >= nranks || rank > 99999)
		return titan_err(TITAN_EUSAGE, "checkpoint: rank %d of %d ranks", rank, nranks);
	if (layout && !json_is_object(layout))
		return titan_err(TITAN_EUSAGE, "'%s': the layout is not a JSON object", folder);
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
	par_layout fsdp = par_layout_single();

	fsdp.dp_shard = nranks;
	s->layout = layout ? json_deep_copy(layout) : ckpt_layout_json(&fsdp);
	if (!s->folder || !s->layout) {
		free(s->folder);
		json_decref(s->layout);
		free(s);
		return titan_err_nomem();
	}
	s->keep_latest_k = keep_latest_k;
	*out = s;
	return 0;
}

int ckpt_saver_new(ckpt_saver **out, const char *folder, int keep_latest_k, bool async,
		    comm *c, const json_t *layout)
{
	*out = NULL;
	ckpt_saver *s = NULL;
	int rc = saver_local(&s, folder, keep_latest_k, c ? comm_rank(c) : 0,
			     c ? comm_size(c) : 1, layout);
	if (s) {
		s->c = c;
		/* Collectives from a second thread need MPI_THREAD_MULTIPLE;
		 * without it the caller's thread saves (ckpt_saver_async). */
		s->async = async && (!c || comm_concurrent(c));
	}
	/* Every rank opens or none does: a rank missing from the saves
	 * would leave the others waiting in them. */
	if (c)
		rc = agree(c, rc);
	if (rc || !s->async) {
		if (rc)
			ckpt_saver_free(s);
		else
			*out = s;
		return rc;
	}
	if (c && (rc = comm_dup(c, "checkpoint", &s->bg))) {
		ckpt_saver_free(s);
		return rc;
	}
	rc = start_thread(s);
	if (c)
		rc = agree(c, rc);
	if (rc) {
		ckpt_saver_free(s);     /* frees s->bg: every rank gets here */
		return rc;
	}
	*out = s;
	return 0;
}

bool ckpt_saver_async(const ckpt_saver *s)
{
	return s->async;
}

int ckpt_wait(ckpt_saver *s)
{
	if (!s->thread_started)
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
	int size = s->c ? comm_size(s->c) : 1;
	int pre = step < 0 ? titan_err(TITAN_EUSAGE, "'%s': negative step %ld", s->folder, step)
			   : check_tensors(t, n);
	/* Alone, a bad argument is just an error; with other ranks it is this
	 * rank's failure in the save, which they must learn of too. */
	if (pre && size == 1)
		return pre;
	if (!s->async)
		return save_step(s, s->c, step, t, n, extra, pre);

	/* The previous save's error comes out here, and this save is not
	 * started: the caller learns of the failure before going on.  That
	 * save's outcome was agreed, so every rank stops here together. */
	int rc = ckpt_wait(s);
	if (rc)
		return rc;
	/* The writer is idle: the staging buffer, the job and its
	 * communicator are ours. */
	if (!pre)
		pre = stage(s, step, t, n, extra);
	if (pre)
		return size == 1 ? pre : save_step(s, s->bg, step, NULL, 0, extra, pre);
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
	stop_thread(s);
	comm_free(s->bg);
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
	json_decref(s->layout);
	free(s->folder);
	free(s);
}

int ckpt_saver_attach_file(ckpt_saver *s, const char *name, const char *src)
{
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") ||
	    !strcmp(name, "manifest.json"))
		return titan_err(TITAN_EUSAGE, "'%s': cannot attach a file named '%s'",
				 s->folder, name);
	if (s->thread_started) {
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
