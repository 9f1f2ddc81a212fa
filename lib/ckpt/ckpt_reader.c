/* ckpt_reader.c - read a checkpoint step directory tensor by tensor: the
 * manifest checked once at open, shard files mapped on demand (a bounded
 * cache, so a checkpoint of a thousand files reads with a few open), any
 * slice assembled from the shards that overlap it, and a full verify.
 * (man 5 titan-checkpoint) */
#include "core/base.h"
#include "ckpt/ckpt.h"

#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_priv.h"
#include "ckpt/safetensors.h"
#include "core/file.h"
#include "core/hash.h"
#include "core/json.h"

/* Shard files kept mapped at once. */
#define OPEN_FILES_MAX 64

/* --- name index and box overlap (shared with the writer) --- */

static size_t slot_of(const char *name, size_t cap)
{
	return (size_t)hash64(name, strlen(name), 0) & (cap - 1);
}

int ckpt_index_add(ckpt_index *x, size_t i, ckpt_name_fn name, const void *ctx)
{
	if (2 * (x->n + 1) > x->cap) {
		size_t cap = x->cap ? 2 * x->cap : 64;
		size_t *slot = calloc(cap, sizeof *slot);
		if (!slot)
			return titan_err_nomem();
		for (size_t k = 0; k < x->cap; k++) {
			if (!x->slot[k])
				continue;
			size_t h = slot_of(name(ctx, x->slot[k] - 1), cap);
			while (slot[h])
				h = (h + 1) & (cap - 1);
			slot[h] = x->slot[k];
		}
		free(x->slot);
		x->slot = slot;
		x->cap = cap;
	}
	size_t h = slot_of(name(ctx, i), x->cap);
	while (x->slot[h])
		h = (h + 1) & (x->cap - 1);
	x->slot[h] = i + 1;
	x->n++;
	return 0;
}

size_t ckpt_index_find(const ckpt_index *x, const char *name, ckpt_name_fn fn,
		       const void *ctx)
{
	if (!x->cap)
		return SIZE_MAX;
	for (size_t h = slot_of(name, x->cap); x->slot[h]; h = (h + 1) & (x->cap - 1))
		if (!strcmp(fn(ctx, x->slot[h] - 1), name))
			return x->slot[h] - 1;
	return SIZE_MAX;
}

void ckpt_index_free(ckpt_index *x)
{
	free(x->slot);
	*x = (ckpt_index){0};
}

static int by_first_start(const void *a, const void *b)
{
	const ckpt_box *x = a, *y = b;
	if (x->start[0] != y->start[0])
		return x->start[0] < y->start[0] ? -1 : 1;
	return (x->id > y->id) - (x->id < y->id);
}

static bool box_meets(int ndim, const ckpt_box *a, const ckpt_box *b)
{
	for (int k = 0; k < ndim; k++)
		if (TITAN_MAX(a->start[k], b->start[k]) >=
		    TITAN_MIN(a->start[k] + a->shape[k], b->start[k] + b->shape[k]))
			return false;
	return true;
}

/* Sorted by the first dimension's start, a box can only meet the boxes that
 * start before it ends there: row-sharded tensors check in n log n. */
bool ckpt_boxes_overlap(int ndim, ckpt_box *b, size_t n, size_t *a, size_t *b2)
{
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (ckpt_numel(ndim, b[i].shape))
			b[m++] = b[i];
	if (ndim == 0) {
		if (m < 2)
			return false;
		*a = TITAN_MIN(b[0].id, b[1].id);
		*b2 = TITAN_MAX(b[0].id, b[1].id);
		return true;
	}
	qsort(b, m, sizeof *b, by_first_start);
	for (size_t i = 0; i < m; i++)
		for (size_t j = i + 1; j < m && b[j].start[0] < b[i].start[0] + b[i].shape[0]; j++)
			if (box_meets(ndim, &b[i], &b[j])) {
				*a = TITAN_MIN(b[i].id, b[j].id);
				*b2 = TITAN_MAX(b[i].id, b[j].id);
				return true;
			}
	return false;
}

/* --- the reader --- */

struct open_file {
	const char *name;      /* borrowed from the manifest */
	st_file *f;
	uint64_t used;         /* LRU clock */
};

struct ckpt_reader {
	char *dir, *man;
	json_t *m;
	long step;
	ckpt_tensor_info *t;
	size_t n;
	ckpt_shard_info *shards;
	ckpt_index index;
	struct open_file open[OPEN_FILES_MAX];
	size_t nopen;
	uint64_t clock;
};

static const char *tensor_name(const void *ctx, size_t i)
{
	const ckpt_reader *r = ctx;
	return r->t[i].name;
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

static int parse_hash(const char *s, uint64_t *out)
{
	if (strlen(s) != 16)
		return -1;
	uint64_t h = 0;
	for (int i = 0; i < 16; i++) {
		int c = s[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			return -1;
		h = h << 4 | (uint64_t)d;
	}
	*out = h;
	return 0;
}

static int parse_shard(const ckpt_reader *r, const ckpt_tensor_info *t, json_t *sh,
		       size_t i, ckpt_shard_info *s)
{
	char where[256];
	snprintf(where, sizeof where, "$.tensors.%s.shards[%zu]", t->name, i);
	const char *hash = NULL;
	int d0 = t->ndim, d1 = t->ndim;
	int rc;
	if ((rc = json_get_str(sh, "file", &s->file, r->man, where)) ||
	    (rc = read_dims(sh, "start", s->start, &d0, r->man, where)) ||
	    (rc = read_dims(sh, "shape", s->shape, &d1, r->man, where)) ||
	    (rc = json_opt_str(sh, "hash64", &hash, r->man, where)))
		return rc;
	/* The manifest names files inside the directory, nothing else. */
	if (!*s->file || strchr(s->file, '/') || !strcmp(s->file, ".") || !strcmp(s->file, ".."))
		return titan_err(TITAN_EFORMAT, "'%s': %s.file: '%s' is not a plain file name",
				 r->man, where, s->file);
	if (hash) {
		if (parse_hash(hash, &s->checksum))
			return titan_err(TITAN_EFORMAT,
					 "'%s': %s.hash64: '%s' is not 16 lowercase hex digits",
					 r->man, where, hash);
		s->has_checksum = true;
	}
	for (int k = 0; k < t->ndim; k++)
		if (s->start[k] > t->shape[k] || s->shape[k] > t->shape[k] - s->start[k])
			return titan_err(TITAN_EFORMAT,
					 "'%s': tensor '%s': shard %zu (file '%s') lies outside the tensor",
					 r->man, t->name, i, s->file);
	return 0;
}

static int check_overlap(const ckpt_reader *r, const ckpt_tensor_info *t)
{
	if (t->nshards < 2)
		return 0;
	ckpt_box *b = calloc(t->nshards, sizeof *b);
	if (!b)
		return titan_err_nomem();
	for (size_t i = 0; i < t->nshards; i++) {
		memcpy(b[i].start, t->shards[i].start, sizeof b[i].start);
		memcpy(b[i].shape, t->shards[i].shape, sizeof b[i].shape);
		b[i].id = i;
	}
	size_t x, y;
	int rc = 0;
	if (ckpt_boxes_overlap(t->ndim, b, t->nshards, &x, &y))
		rc = titan_err(TITAN_EFORMAT,
			       "'%s': tensor '%s': shards %zu (file '%s') and %zu (file '%s') overlap",
			       r->man, t->name, x, t->shards[x].file, y, t->shards[y].file);
	free(b);
	return rc;
}

static bool bytes_fit(int ndim, const int64_t *shape)
{
	int64_t n = 1;
	for (int k = 0; k < ndim; k++)
		if (__builtin_mul_overflow(n, shape[k], &n))
			return false;
	return n <= INT64_MAX / (int64_t)sizeof(float);
}

static int parse_manifest(ckpt_reader *r)
{
	json_t *tensors;
	long long step = 0;
	int rc = json_get_obj(r->m, "tensors", &tensors, r->man, "$");
	if (!rc)
		rc = json_opt_int(r->m, "step", &step, r->man, "$");
	if (rc)
		return rc;
	r->step = (long)step;
	size_t n = json_object_size(tensors), nshards = 0;
	const char *key;
	json_t *e;
	json_object_foreach(tensors, key, e) {
		json_t *sh = json_object_get(e, "shards");
		nshards += json_is_array(sh) ? json_array_size(sh) : 0;
	}
	r->t = calloc(n ? n : 1, sizeof *r->t);
	r->shards = calloc(nshards ? nshards : 1, sizeof *r->shards);
	if (!r->t || !r->shards)
		return titan_err_nomem();
	size_t used = 0;
	json_object_foreach(tensors, key, e) {
		ckpt_tensor_info *t = &r->t[r->n];
		char where[256];
		const char *dtype;
		json_t *sh;
		snprintf(where, sizeof where, "$.tensors.%s", key);
		if (!json_is_object(e))
			return titan_err(TITAN_EFORMAT, "'%s': %s: expected an object", r->man,
					 where);
		t->name = key;
		t->ndim = -1;
		if ((rc = json_get_str(e, "dtype", &dtype, r->man, where)) ||
		    (rc = read_dims(e, "shape", t->shape, &t->ndim, r->man, where)) ||
		    (rc = json_get_arr(e, "shards", &sh, r->man, where)))
			return rc;
		if (strcmp(dtype, "F32"))
			return titan_err(TITAN_EFORMAT, "'%s': tensor '%s' has dtype %s, expected F32",
					 r->man, key, dtype);
		/* Each dimension is bounded, their product is not: every byte
		 * count below is an int64_t. */
		if (!bytes_fit(t->ndim, t->shape)) {
			char shape[160];
			ckpt_shape_text(shape, sizeof shape, t->ndim, t->shape);
			return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': shape %s is too large",
					 r->man, key, shape);
		}
		ckpt_shard_info *s = r->shards + used;
		t->shards = s;
		t->nshards = json_array_size(sh);
		used += t->nshards;
		for (size_t i = 0; i < t->nshards; i++)
			if ((rc = parse_shard(r, t, json_array_get(sh, i), i, &s[i])))
				return rc;
		if ((rc = check_overlap(r, t)))
			return rc;
		r->n++;
		if ((rc = ckpt_index_add(&r->index, r->n - 1, tensor_name, r)))
			return rc;
	}
	return 0;
}

int ckpt_reader_open(ckpt_reader **out, const char *path)
{
	*out = NULL;
	char *man = file_path_join(path, "manifest.json"), *dir = NULL;
	if (!man)
		return titan_err_nomem();
	int rc;
	struct stat st;
	if (stat(man, &st) == 0)
		rc = (dir = strdup(path)) ? 0 : titan_err_nomem();
	else
		rc = ckpt_resolve(path, "latest", &dir);
	free(man);
	if (rc)
		return rc;
	ckpt_reader *r = calloc(1, sizeof *r);
	if (!r) {
		free(dir);
		return titan_err_nomem();
	}
	r->dir = dir;
	r->man = file_path_join(dir, "manifest.json");
	if (!r->man)
		rc = titan_err_nomem();
	if (!rc)
		rc = ckpt_read_manifest(dir, &r->m);
	if (!rc)
		rc = parse_manifest(r);
	if (rc) {
		ckpt_reader_close(r);
		return rc;
	}
	*out = r;
	return 0;
}

void ckpt_reader_close(ckpt_reader *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nopen; i++)
		st_close(r->open[i].f);
	ckpt_index_free(&r->index);
	free(r->t);
	free(r->shards);
	json_decref(r->m);
	free(r->man);
	free(r->dir);
	free(r);
}

const char *ckpt_reader_dir(const ckpt_reader *r)
{
	return r->dir;
}

const json_t *ckpt_reader_manifest(const ckpt_reader *r)
{
	return r->m;
}

long ckpt_reader_step(const ckpt_reader *r)
{
	return r->step;
}

size_t ckpt_reader_count(const ckpt_reader *r)
{
	return r->n;
}

const ckpt_tensor_info *ckpt_reader_tensor(const ckpt_reader *r, size_t i)
{
	return i < r->n ? &r->t[i] : NULL;
}

const ckpt_tensor_info *ckpt_reader_find(const ckpt_reader *r, const char *name)
{
	size_t i = ckpt_index_find(&r->index, name, tensor_name, r);
	return i == SIZE_MAX ? NULL : &r->t[i];
}

/* The shard file, mapped; the least recently used one is closed when the
 * cache is full. */
static int shard_file(ckpt_reader *r, const char *name, st_file **out)
{
	size_t victim = 0;
	for (size_t i = 0; i < r->nopen; i++) {
		if (!strcmp(r->open[i].name, name)) {
			r->open[i].used = ++r->clock;
			*out = r->open[i].f;
			return 0;
		}
		if (r->open[i].used < r->open[victim].used)
			victim = i;
	}
	char *path = file_path_join(r->dir, name);
	if (!path)
		return titan_err_nomem();
	st_file *f;
	int rc = st_open(&f, path);
	free(path);
	if (rc)
		return rc;
	if (r->nopen < OPEN_FILES_MAX)
		victim = r->nopen++;
	else
		st_close(r->open[victim].f);
	r->open[victim] = (struct open_file){ name, f, ++r->clock };
	*out = f;
	return 0;
}

/* The slice s of t in its shard file, checked against the manifest. */
static int shard_data(ckpt_reader *r, const ckpt_tensor_info *t, const ckpt_shard_info *s,
		      const uint8_t **data, st_file **file)
{
	st_file *f = NULL;
	int rc = shard_file(r, s->file, &f);
	if (rc)
		return rc;
	const st_tensor *st = st_find(f, t->name);
	if (!st)
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s' missing from the shard file",
				 f->path, t->name);
	bool same = st->dtype == ST_F32 && st->ndim == t->ndim;
	for (int k = 0; same && k < t->ndim; k++)
		same = st->shape[k] == s->shape[k];
	if (!same) {
		char have[160], exp[160];
		ckpt_shape_text(have, sizeof have, st->ndim, st->shape);
		ckpt_shape_text(exp, sizeof exp, t->ndim, s->shape);
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s' is %s %s, the manifest says F32 %s",
				 f->path, t->name, st_dtype_name(st->dtype), have, exp);
	}
	*data = st_data(f, st);
	if (file)
		*file = f;
	return 0;
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

int ckpt_reader_read(ckpt_reader *r, const char *name, const int64_t *start,
		     const int64_t *shape, float *dst)
{
	const ckpt_tensor_info *t = ckpt_reader_find(r, name);
	if (!t)
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s' not in the checkpoint", r->dir,
				 name);
	int64_t zero[CKPT_MAX_DIMS] = {0};
	if (!start || !shape) {
		start = zero;
		shape = t->shape;
	}
	for (int k = 0; k < t->ndim; k++)
		if (start[k] < 0 || shape[k] < 0 || start[k] > t->shape[k] ||
		    shape[k] > t->shape[k] - start[k])
			return titan_err(TITAN_EFORMAT,
					 "'%s': tensor '%s': requested slice [%lld, +%lld) outside dimension %d (size %lld)",
					 r->dir, name, (long long)start[k], (long long)shape[k],
					 k, (long long)t->shape[k]);
	int64_t want = ckpt_numel(t->ndim, shape), got = 0;
	if (!want)
		return 0;
	for (size_t i = 0; i < t->nshards; i++) {
		const ckpt_shard_info *s = &t->shards[i];
		if (!ckpt_numel(t->ndim, s->shape))
			continue;
		bool meets = true;
		for (int k = 0; meets && k < t->ndim; k++)
			meets = TITAN_MAX(s->start[k], start[k]) <
				TITAN_MIN(s->start[k] + s->shape[k], start[k] + shape[k]);
		if (!meets)
			continue;
		const uint8_t *data;
		st_file *f = NULL;
		int rc = shard_data(r, t, s, &data, &f);
		if (rc)
			return rc;
		got += copy_box(t->ndim, s->start, s->shape, data, start, shape, dst);
		st_release(f, data, (size_t)ckpt_numel(t->ndim, s->shape) * sizeof(float));
	}
	if (got != want)
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s': the shards cover %lld of the %lld values requested",
				 r->dir, name, (long long)got, (long long)want);
	return 0;
}

char *ckpt_reader_file(const ckpt_reader *r, const char *name)
{
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return NULL;
	char *p = file_path_join(r->dir, name);
	struct stat st;
	if (p && (stat(p, &st) < 0 || !S_ISREG(st.st_mode))) {
		free(p);
		p = NULL;
	}
	return p;
}

int ckpt_reader_verify(ckpt_reader *r, ckpt_progress_fn progress, void *arg)
{
	uint64_t total = 0, done = 0;
	for (size_t i = 0; i < r->n; i++)
		total += (uint64_t)ckpt_numel(r->t[i].ndim, r->t[i].shape) * sizeof(float);
	for (size_t i = 0; i < r->n; i++) {
		const ckpt_tensor_info *t = &r->t[i];
		int64_t covered = 0;
		for (size_t j = 0; j < t->nshards; j++) {
			const ckpt_shard_info *s = &t->shards[j];
			const uint8_t *data;
			st_file *f = NULL;
			int rc = shard_data(r, t, s, &data, &f);
			if (rc)
				return rc;
			int64_t k = ckpt_numel(t->ndim, s->shape);
			covered += k;
			if (!s->has_checksum)
				continue;
			uint64_t h = hash64(data, (size_t)k * sizeof(float), 0);
			st_release(f, data, (size_t)k * sizeof(float));
			if (h != s->checksum)
				return titan_err(TITAN_EFORMAT,
						 "'%s': tensor '%s': checksum %016llx, the manifest says %016llx",
						 f->path, t->name, (unsigned long long)h,
						 (unsigned long long)s->checksum);
		}
		/* No overlap (checked at open), so the count tells a gap. */
		int64_t want = ckpt_numel(t->ndim, t->shape);
		if (covered != want)
			return titan_err(TITAN_EFORMAT,
					 "'%s': tensor '%s': the shards cover %lld of its %lld values (a gap)",
					 r->man, t->name, (long long)covered, (long long)want);
		done += (uint64_t)want * sizeof(float);
		if (progress)
			progress(arg, done, total);
	}
	return 0;
}
