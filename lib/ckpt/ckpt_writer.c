/* ckpt_writer.c - write one checkpoint step directory of any layout,
 * streaming one slice at a time: DIR.tmp/, one safetensors file per rank,
 * manifest.json with a hash64 per slice, then a rename into place.
 *
 * ckpt_save writes through here too, from any number of processes: each
 * rank writes its own file with a part writer and sends the records of its
 * slices to rank 0, whose writer merges them as files written elsewhere and
 * commits.  So declaring, hashing, the coverage check and the manifest are
 * the same code for one process and for many. (man 5 titan-checkpoint) */
#include "core/base.h"
#include "ckpt/ckpt.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_priv.h"
#include "ckpt/safetensors.h"
#include "core/file.h"
#include "core/hash.h"
#include "core/json.h"

/* --- the writer --- */

struct wtensor {
	char *name;
	int ndim;
	int64_t shape[CKPT_MAX_DIMS];
};

struct wslice {
	size_t tensor;
	int64_t start[CKPT_MAX_DIMS], shape[CKPT_MAX_DIMS];
	uint64_t hash;
};

struct wfile {
	int rank;
	bool remote;            /* written by another process (merged records) */
	struct wslice *s;
	size_t n, cap;
};

struct ckpt_writer {
	char *dir, *tmp;
	long step;
	bool force;
	/* A part writer (part_rank >= 0) writes that rank's file into a
	 * DIR.tmp another process made and owns: it never removes, commits or
	 * renames it. */
	int part_rank;
	struct wtensor *t;
	size_t nt, tcap;
	ckpt_index tindex;
	struct wfile *f;
	size_t nf, fcap;
	char **attached;
	size_t nattached;

	/* Streaming: file f[cur_file] (in rank order once the first put
	 * came), its slice cur_slice. */
	bool streaming;
	size_t cur_file, cur_slice;
	st_stream *out;
};

static const char *wtensor_name(const void *ctx, size_t i)
{
	const ckpt_writer *w = ctx;
	return w->t[i].name;
}

/* A name the directory can hold: no path, nothing the writer makes. */
static bool plain_name(const char *name)
{
	return *name && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

/* A writer for DIR (written as DIR.tmp), nothing on disk yet. */
static int writer_alloc(ckpt_writer **out, const char *dir, long step, int part_rank)
{
	*out = NULL;
	if (step < 0)
		return titan_err(TITAN_EUSAGE, "'%s': negative step %ld", dir, step);
	ckpt_writer *w = calloc(1, sizeof *w);
	if (!w)
		return titan_err_nomem();
	size_t len = strlen(dir) + 5;
	w->dir = strdup(dir);
	w->tmp = malloc(len);
	if (!w->dir || !w->tmp) {
		free(w->dir);
		free(w->tmp);
		free(w);
		return titan_err_nomem();
	}
	snprintf(w->tmp, len, "%s.tmp", dir);
	w->step = step;
	w->part_rank = part_rank;
	*out = w;
	return 0;
}

int ckpt_writer_new(ckpt_writer **out, const char *dir, long step, bool force)
{
	ckpt_writer *w;
	int rc;

	*out = NULL;
	if (step >= 0 && (rc = file_check_new(dir, force)))
		return rc;
	if ((rc = writer_alloc(&w, dir, step, -1)))
		return rc;
	w->force = force;
	/* A DIR.tmp is what a crash left behind: never complete. */
	rc = file_remove_tree(w->tmp);
	if (!rc && mkdir(w->tmp, 0777) < 0)
		rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", w->tmp);
	if (rc) {
		free(w->dir);
		free(w->tmp);
		free(w);
		return rc;
	}
	*out = w;
	return 0;
}

int ckpt_writer_part(ckpt_writer **out, const char *dir, long step, int rank)
{
	*out = NULL;
	if (rank < 0 || rank > 99999)
		return titan_err(TITAN_EUSAGE, "'%s': rank %d outside 0..99999", dir, rank);
	return writer_alloc(out, dir, step, rank);
}

static int find_file(ckpt_writer *w, int rank, bool remote, struct wfile **out)
{
	/* Declarations come rank by rank, so the last file is the usual hit. */
	for (size_t i = w->nf; i-- > 0;) {
		if (w->f[i].rank != rank)
			continue;
		if (w->f[i].remote != remote)
			return titan_err(TITAN_EUSAGE,
					 "'%s': the file of rank %d is both written here and elsewhere",
					 w->dir, rank);
		*out = &w->f[i];
		return 0;
	}
	if (w->nf == w->fcap) {
		size_t cap = w->fcap ? 2 * w->fcap : 16;
		struct wfile *f = realloc(w->f, cap * sizeof *f);
		if (!f)
			return titan_err_nomem();
		w->f = f;
		w->fcap = cap;
	}
	w->f[w->nf] = (struct wfile){ .rank = rank, .remote = remote };
	*out = &w->f[w->nf++];
	return 0;
}

static int find_tensor(ckpt_writer *w, const ckpt_tensor *t, size_t *out)
{
	size_t i = ckpt_index_find(&w->tindex, t->name, wtensor_name, w);
	if (i != SIZE_MAX) {
		const struct wtensor *e = &w->t[i];
		bool same = e->ndim == t->ndim;
		for (int d = 0; same && d < t->ndim; d++)
			same = e->shape[d] == t->shape[d];
		if (!same) {
			char a[160], b[160];
			ckpt_shape_text(a, sizeof a, e->ndim, e->shape);
			ckpt_shape_text(b, sizeof b, t->ndim, t->shape);
			return titan_err(TITAN_EUSAGE,
					 "'%s': tensor '%s' declared with two global shapes, %s and %s",
					 w->dir, t->name, a, b);
		}
		*out = i;
		return 0;
	}
	if (w->nt == w->tcap) {
		size_t cap = w->tcap ? 2 * w->tcap : 64;
		struct wtensor *e = realloc(w->t, cap * sizeof *e);
		if (!e)
			return titan_err_nomem();
		w->t = e;
		w->tcap = cap;
	}
	struct wtensor *e = &w->t[w->nt];
	*e = (struct wtensor){ .ndim = t->ndim };
	memcpy(e->shape, t->shape, sizeof e->shape);
	e->name = strdup(t->name);
	if (!e->name)
		return titan_err_nomem();
	w->nt++;
	int rc = ckpt_index_add(&w->tindex, w->nt - 1, wtensor_name, w);
	if (rc) {
		free(e->name);
		w->nt--;
		return rc;
	}
	*out = w->nt - 1;
	return 0;
}

/* The one place a slice comes in: from this process (remote false: its
 * data is put later and hashed then) or from another's records (remote:
 * the file exists, hash is its slice's). */
static int declare(ckpt_writer *w, int rank, const ckpt_tensor *t, bool remote, uint64_t hash)
{
	const char *name = t->name ? t->name : "(null)";
	if (w->streaming)
		return titan_err(TITAN_EUSAGE, "'%s': tensor '%s' declared after data was put",
				 w->dir, name);
	if (rank < 0 || rank > 99999)
		return titan_err(TITAN_EUSAGE, "'%s': tensor '%s': rank %d outside 0..99999",
				 w->dir, name, rank);
	if (w->part_rank >= 0 && (remote || rank != w->part_rank))
		return titan_err(TITAN_EUSAGE, "'%s': tensor '%s': the writer of rank %d writes no other file",
				 w->dir, name, w->part_rank);
	if (!t->name || !*t->name)
		return titan_err(TITAN_EUSAGE, "'%s': a tensor has no name", w->dir);
	if (t->ndim < 0 || t->ndim > CKPT_MAX_DIMS)
		return titan_err(TITAN_EUSAGE, "tensor '%s': %d dimensions, at most %d",
				 name, t->ndim, CKPT_MAX_DIMS);
	for (int d = 0; d < t->ndim; d++) {
		int64_t g = t->shape[d], s0 = t->slice_start[d], sn = t->slice_shape[d];
		if (g < 0 || g > ((int64_t)1 << 40) || s0 < 0 || sn < 0 || s0 > g ||
		    sn > g - s0)
			return titan_err(TITAN_EUSAGE,
					 "tensor '%s': slice [%lld, +%lld) of dimension %d outside its size %lld",
					 name, (long long)s0, (long long)sn, d, (long long)g);
	}
	size_t ti = 0;
	struct wfile *f = NULL;
	int rc = find_tensor(w, t, &ti);
	if (!rc)
		rc = find_file(w, rank, remote, &f);
	if (rc)
		return rc;
	for (size_t i = 0; i < f->n; i++)
		if (f->s[i].tensor == ti)
			return titan_err(TITAN_EUSAGE, "'%s': tensor '%s' declared twice for rank %d",
					 w->dir, name, rank);
	if (f->n == f->cap) {
		size_t cap = f->cap ? 2 * f->cap : 64;
		struct wslice *s = realloc(f->s, cap * sizeof *s);
		if (!s)
			return titan_err_nomem();
		f->s = s;
		f->cap = cap;
	}
	struct wslice *s = &f->s[f->n++];
	*s = (struct wslice){ .tensor = ti, .hash = hash };
	memcpy(s->start, t->slice_start, sizeof s->start);
	memcpy(s->shape, t->slice_shape, sizeof s->shape);
	return 0;
}

int ckpt_writer_declare(ckpt_writer *w, int rank, const ckpt_tensor *t)
{
	return declare(w, rank, t, false, 0);
}

static int by_rank(const void *a, const void *b)
{
	const struct wfile *x = a, *y = b;
	return (x->rank > y->rank) - (x->rank < y->rank);
}

static void file_name(char *buf, size_t n, int rank)
{
	snprintf(buf, n, "rank-%05d.safetensors", rank);
}

/* Declare file f[cur_file]'s slices to a new stream and write its header. */
static int open_file(ckpt_writer *w)
{
	const struct wfile *f = &w->f[w->cur_file];
	char name[32], step[24];
	file_name(name, sizeof name, f->rank);
	snprintf(step, sizeof step, "%ld", w->step);
	char *path = file_path_join(w->tmp, name);
	if (!path)
		return titan_err_nomem();
	int rc = st_stream_new(&w->out);
	if (!rc)
		rc = st_stream_meta(w->out, "format", CKPT_FORMAT);
	if (!rc)
		rc = st_stream_meta(w->out, "step", step);
	for (size_t i = 0; !rc && i < f->n; i++) {
		const struct wtensor *t = &w->t[f->s[i].tensor];
		rc = st_stream_declare(w->out, t->name, ST_F32, t->ndim, f->s[i].shape);
	}
	if (!rc)
		rc = st_stream_begin(w->out, path);
	free(path);
	return rc;
}

/* Close finished files and open the next one that has slices; files
 * written elsewhere are passed over. */
static int advance(ckpt_writer *w)
{
	while (w->cur_file < w->nf &&
	       (w->f[w->cur_file].remote || w->cur_slice == w->f[w->cur_file].n)) {
		if (w->f[w->cur_file].remote) {
			w->cur_file++;
			w->cur_slice = 0;
			continue;
		}
		int rc = 0;
		if (!w->out)
			rc = open_file(w);   /* a file of no slices still exists */
		if (!rc)
			rc = st_stream_finish(w->out);
		st_stream_free(w->out);
		w->out = NULL;
		if (rc)
			return rc;
		w->cur_file++;
		w->cur_slice = 0;
	}
	return 0;
}

/* Declarations end with the first put (or the commit): files go in rank
 * order. */
static int start_streaming(ckpt_writer *w)
{
	if (w->streaming)
		return 0;
	if (w->nf)
		qsort(w->f, w->nf, sizeof *w->f, by_rank);
	w->streaming = true;
	return advance(w);
}

/* Whether every slice written here was put; else the error naming the
 * first one missing. */
static int check_all_put(ckpt_writer *w)
{
	int rc = start_streaming(w);
	if (rc || w->cur_file == w->nf)
		return rc;
	const struct wfile *f = &w->f[w->cur_file];
	return titan_err(TITAN_EUSAGE, "'%s': tensor '%s' of rank %d: no data put", w->dir,
			 w->t[f->s[w->cur_slice].tensor].name, f->rank);
}

int ckpt_writer_put(ckpt_writer *w, const float *data, size_t n)
{
	int rc;
	if ((rc = start_streaming(w)))
		return rc;
	if (w->cur_file == w->nf)
		return titan_err(TITAN_EUSAGE, "'%s': data put past the last declared slice",
				 w->dir);
	struct wfile *f = &w->f[w->cur_file];
	struct wslice *s = &f->s[w->cur_slice];
	const struct wtensor *t = &w->t[s->tensor];
	int64_t want = ckpt_numel(t->ndim, s->shape);
	if ((int64_t)n != want)
		return titan_err(TITAN_EUSAGE,
				 "'%s': tensor '%s' of rank %d: %zu values put, the slice holds %lld",
				 w->dir, t->name, f->rank, n, (long long)want);
	if (n && !data)
		return titan_err(TITAN_EUSAGE, "'%s': tensor '%s': no data", w->dir, t->name);
	if (!w->out && (rc = open_file(w)))
		return rc;
	if ((rc = st_stream_put(w->out, data, n * sizeof *data)))
		return rc;
	s->hash = hash64(n ? (const void *)data : "", n * sizeof *data, 0);
	w->cur_slice++;
	return advance(w);
}

int ckpt_writer_attach_file(ckpt_writer *w, const char *name, const char *src)
{
	if (w->part_rank >= 0)
		return titan_err(TITAN_EUSAGE, "'%s': the writer of rank %d attaches no file",
				 w->dir, w->part_rank);
	if (!plain_name(name) || !strcmp(name, "manifest.json") ||
	    (!strncmp(name, "rank-", 5) && strstr(name, ".safetensors")))
		return titan_err(TITAN_EUSAGE, "'%s': cannot attach a file named '%s'",
				 w->dir, name);
	for (size_t i = 0; i < w->nattached; i++)
		if (!strcmp(w->attached[i], name))
			return titan_err(TITAN_EUSAGE, "'%s': file '%s' attached twice", w->dir,
					 name);
	char **a = realloc(w->attached, (w->nattached + 1) * sizeof *a);
	if (!a)
		return titan_err_nomem();
	w->attached = a;
	char *dst = file_path_join(w->tmp, name);
	char *keep = strdup(name);
	int rc = dst && keep ? file_copy(src, dst) : titan_err_nomem();
	free(dst);
	if (rc) {
		free(keep);
		return rc;
	}
	w->attached[w->nattached++] = keep;
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

/* Every tensor's slices tile it exactly once. */
static int check_coverage(const ckpt_writer *w)
{
	size_t *count = calloc(w->nt ? w->nt : 1, sizeof *count);
	size_t *first = calloc(w->nt + 1, sizeof *first);
	ckpt_box *box = NULL;
	int64_t *covered = calloc(w->nt ? w->nt : 1, sizeof *covered);
	int rc = 0;
	if (!count || !first || !covered) {
		rc = titan_err_nomem();
		goto out;
	}
	size_t total = 0;
	for (size_t i = 0; i < w->nf; i++)
		for (size_t j = 0; j < w->f[i].n; j++) {
			count[w->f[i].s[j].tensor]++;
			total++;
		}
	for (size_t k = 0; k < w->nt; k++)
		first[k + 1] = first[k] + count[k];
	box = calloc(total ? total : 1, sizeof *box);
	if (!box) {
		rc = titan_err_nomem();
		goto out;
	}
	memset(count, 0, w->nt * sizeof *count);
	for (size_t i = 0; i < w->nf; i++)
		for (size_t j = 0; j < w->f[i].n; j++) {
			const struct wslice *s = &w->f[i].s[j];
			ckpt_box *b = &box[first[s->tensor] + count[s->tensor]++];
			memcpy(b->start, s->start, sizeof b->start);
			memcpy(b->shape, s->shape, sizeof b->shape);
			b->id = i;
			covered[s->tensor] += ckpt_numel(w->t[s->tensor].ndim, s->shape);
		}
	for (size_t k = 0; !rc && k < w->nt; k++) {
		const struct wtensor *t = &w->t[k];
		size_t a, b;
		if (ckpt_boxes_overlap(t->ndim, box + first[k], count[k], &a, &b)) {
			rc = titan_err(TITAN_EUSAGE, "'%s': tensor '%s': the slices of ranks %d and %d overlap",
				       w->dir, t->name, w->f[a].rank, w->f[b].rank);
		} else if (covered[k] != ckpt_numel(t->ndim, t->shape)) {
			rc = titan_err(TITAN_EUSAGE, "'%s': tensor '%s': the slices cover %lld of its %lld values",
				       w->dir, t->name, (long long)covered[k],
				       (long long)ckpt_numel(t->ndim, t->shape));
		}
	}
out:
	free(count);
	free(first);
	free(box);
	free(covered);
	return rc;
}

static json_t *build_manifest(const ckpt_writer *w, const json_t *layout, const json_t *extra)
{
	json_t *tensors = json_object(), **shards = calloc(w->nt ? w->nt : 1, sizeof *shards);
	json_t *m = NULL;
	bool ok = tensors && shards;
	for (size_t k = 0; ok && k < w->nt; k++) {
		const struct wtensor *t = &w->t[k];
		shards[k] = json_array();
		json_t *e = json_pack("{s:s, s:o, s:O}", "dtype", "F32", "shape",
				      int_array(t->ndim, t->shape), "shards", shards[k]);
		ok = shards[k] && e && !json_object_set_new(tensors, t->name, e);
	}
	for (size_t i = 0; ok && i < w->nf; i++) {
		char file[32], hex[17];
		file_name(file, sizeof file, w->f[i].rank);
		for (size_t j = 0; ok && j < w->f[i].n; j++) {
			const struct wslice *s = &w->f[i].s[j];
			int nd = w->t[s->tensor].ndim;
			snprintf(hex, sizeof hex, "%016llx", (unsigned long long)s->hash);
			json_t *e = json_pack("{s:s, s:o, s:o, s:s}", "file", file, "start",
					      int_array(nd, s->start), "shape",
					      int_array(nd, s->shape), "hash64", hex);
			ok = e && !json_array_append_new(shards[s->tensor], e);
		}
	}
	json_t *x = extra ? json_deep_copy(extra) : json_object();
	if (ok && x)
		m = json_pack("{s:s, s:i, s:I, s:i, s:O, s:o}", "format", CKPT_FORMAT,
			      "version", CKPT_VERSION, "step", (json_int_t)w->step,
			      "nranks", (int)w->nf, "tensors", tensors, "extra", x);
	else
		json_decref(x);
	if (m && layout && json_object_set(m, "layout", (json_t *)layout)) {
		json_decref(m);
		m = NULL;
	}
	for (size_t k = 0; shards && k < w->nt; k++)
		json_decref(shards[k]);
	free(shards);
	json_decref(tensors);
	return m;
}

/* --- records: the slices one process wrote, for the one that commits --- */

int ckpt_writer_records(ckpt_writer *w, json_t **out)
{
	*out = NULL;
	int rc = check_all_put(w);
	if (rc)
		return rc;
	json_t *a = json_array();
	bool ok = a != NULL;
	for (size_t i = 0; ok && i < w->nf; i++) {
		if (w->f[i].remote)
			continue;
		for (size_t j = 0; ok && j < w->f[i].n; j++) {
			const struct wslice *s = &w->f[i].s[j];
			const struct wtensor *t = &w->t[s->tensor];
			char hex[17];
			snprintf(hex, sizeof hex, "%016llx", (unsigned long long)s->hash);
			json_t *e = json_pack("{s:i, s:s, s:o, s:o, s:o, s:s}", "rank", w->f[i].rank,
					      "name", t->name, "shape", int_array(t->ndim, t->shape),
					      "start", int_array(t->ndim, s->start), "slice",
					      int_array(t->ndim, s->shape), "hash64", hex);
			ok = e && !json_array_append_new(a, e);
		}
	}
	if (!ok) {
		json_decref(a);
		return titan_err_nomem();
	}
	*out = a;
	return 0;
}

/* dims[0..*nd) from the integer array key of record e. */
static int record_dims(json_t *e, const char *key, int *nd, int64_t *dims, const char *what,
		       const char *path)
{
	json_t *a;
	int rc = json_get_arr(e, key, &a, what, path);
	if (rc)
		return rc;
	if (json_array_size(a) > CKPT_MAX_DIMS)
		return titan_err(TITAN_EFORMAT, "'%s': %s.%s: more than %d dimensions", what, path, key,
				 CKPT_MAX_DIMS);
	*nd = (int)json_array_size(a);
	for (int d = 0; d < *nd; d++) {
		json_t *v = json_array_get(a, (size_t)d);
		if (!json_is_integer(v))
			return titan_err(TITAN_EFORMAT, "'%s': %s.%s[%d]: expected an integer", what,
					 path, key, d);
		dims[d] = json_integer_value(v);
	}
	return 0;
}

int ckpt_writer_merge(ckpt_writer *w, int rank, const json_t *records, const char *what)
{
	if (w->part_rank >= 0)
		return titan_err(TITAN_EUSAGE, "'%s': the writer of rank %d merges no records",
				 w->dir, w->part_rank);
	if (!json_is_array(records))
		return titan_err(TITAN_EFORMAT, "'%s': $: expected an array", what);
	for (size_t i = 0; i < json_array_size(records); i++) {
		json_t *e = json_array_get(records, i);
		char path[48];
		snprintf(path, sizeof path, "$[%zu]", i);
		if (!json_is_object(e))
			return titan_err(TITAN_EFORMAT, "'%s': %s: expected an object", what, path);
		ckpt_tensor t = { 0 };
		const char *hex;
		long long r;
		int nd[3];
		int rc = json_get_int(e, "rank", &r, what, path);
		if (!rc)
			rc = json_get_str(e, "name", &t.name, what, path);
		if (!rc)
			rc = json_get_str(e, "hash64", &hex, what, path);
		if (!rc)
			rc = record_dims(e, "shape", &nd[0], t.shape, what, path);
		if (!rc)
			rc = record_dims(e, "start", &nd[1], t.slice_start, what, path);
		if (!rc)
			rc = record_dims(e, "slice", &nd[2], t.slice_shape, what, path);
		if (rc)
			return rc;
		char *end;
		uint64_t hash = strtoull(hex, &end, 16);
		if (r != rank || nd[1] != nd[0] || nd[2] != nd[0] || strlen(hex) != 16 || *end)
			return titan_err(TITAN_EFORMAT,
					 "'%s': %s: tensor '%s': not a slice record of rank %d", what,
					 path, t.name, rank);
		t.ndim = nd[0];
		if ((rc = declare(w, rank, &t, true, hash)))
			return rc;
	}
	return 0;
}

int ckpt_writer_commit(ckpt_writer *w, const json_t *layout, const json_t *extra)
{
	int rc;
	if (w->part_rank >= 0)
		return titan_err(TITAN_EUSAGE, "'%s': the writer of rank %d does not commit",
				 w->dir, w->part_rank);
	if ((rc = check_all_put(w)))
		return rc;
	if ((rc = check_coverage(w)))
		return rc;
	char *man = file_path_join(w->tmp, "manifest.json");
	json_t *m = build_manifest(w, layout, extra);
	if (!man || !m) {
		rc = titan_err(TITAN_ENOMEM, "'%s': cannot build the manifest", w->dir);
		goto out;
	}
	if ((rc = json_write_path(m, man)) ||
	    (rc = file_install_dir(w->tmp, w->dir, w->force)))
		goto out;
	free(w->tmp);
	w->tmp = NULL;          /* committed: nothing to remove at free */
out:
	json_decref(m);
	free(man);
	return rc;
}

void ckpt_writer_free(ckpt_writer *w)
{
	if (!w)
		return;
	st_stream_free(w->out);
	if (w->tmp && w->part_rank < 0)
		file_discard_tree(w->tmp);
	for (size_t i = 0; i < w->nt; i++)
		free(w->t[i].name);
	free(w->t);
	ckpt_index_free(&w->tindex);
	for (size_t i = 0; i < w->nf; i++)
		free(w->f[i].s);
	free(w->f);
	for (size_t i = 0; i < w->nattached; i++)
		free(w->attached[i]);
	free(w->attached);
	free(w->dir);
	free(w->tmp);
	free(w);
}
