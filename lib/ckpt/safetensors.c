/* safetensors.c - read (mapped, fully validated) and write safetensors files.
 *
 * The header is untrusted input: every size and offset is checked, with
 * overflow in mind, before st_data() can hand out a pointer into the map. */
#include "core/base.h"
#include "ckpt/safetensors.h"

#include <fcntl.h>
#include <jansson.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"

/* Hugging Face's reader refuses headers past 100 MB; so do we. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

static const struct {
	const char *name;
	size_t size;
} dtypes[ST_NDTYPES] = {
	[ST_F32] = { "F32", 4 },   [ST_F16] = { "F16", 2 },
	[ST_BF16] = { "BF16", 2 }, [ST_F64] = { "F64", 8 },
	[ST_I8] = { "I8", 1 },     [ST_U8] = { "U8", 1 },
	[ST_I16] = { "I16", 2 },   [ST_I32] = { "I32", 4 },
	[ST_I64] = { "I64", 8 },   [ST_U16] = { "U16", 2 },
	[ST_U32] = { "U32", 4 },   [ST_U64] = { "U64", 8 },
	[ST_BOOL] = { "BOOL", 1 },
};

const char *st_dtype_name(st_dtype d)
{
	return (unsigned)d < ST_NDTYPES ? dtypes[d].name : "?";
}

size_t st_dtype_size(st_dtype d)
{
	return (unsigned)d < ST_NDTYPES ? dtypes[d].size : 0;
}

static int dtype_parse(const char *s, st_dtype *d)
{
	for (int i = 0; i < ST_NDTYPES; i++) {
		if (!strcmp(s, dtypes[i].name)) {
			*d = (st_dtype)i;
			return 0;
		}
	}
	return -1;
}

/* bytes = product(shape) * elem, or -1 when it does not fit in 64 bits. */
static int tensor_bytes(const int64_t *shape, int ndim, size_t elem, uint64_t *bytes)
{
	uint64_t n = elem;
	for (int i = 0; i < ndim; i++) {
		uint64_t d = (uint64_t)shape[i];
		if (d && n > UINT64_MAX / d)
			return -1;
		n *= d;
	}
	*bytes = n;
	return 0;
}

/* --- reader --- */

static int parse_meta(st_file *f, json_t *meta)
{
	if (!json_is_object(meta))
		return titan_err(TITAN_EFORMAT, "'%s': __metadata__: expected an object",
				 f->path);
	size_t n = json_object_size(meta);
	f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
	f->meta_vals = calloc(n ? n : 1, sizeof *f->meta_vals);
	if (!f->meta_keys || !f->meta_vals)
		return titan_err_nomem();
	const char *key;
	json_t *v;
	json_object_foreach(meta, key, v) {
		if (!json_is_string(v))
			return titan_err(TITAN_EFORMAT,
					 "'%s': __metadata__.%s: expected a string",
					 f->path, key);
		size_t i = f->nmeta;
		f->meta_keys[i] = strdup(key);
		f->meta_vals[i] = strndup(json_string_value(v), json_string_length(v));
		if (!f->meta_keys[i] || !f->meta_vals[i]) {
			free(f->meta_keys[i]);
			free(f->meta_vals[i]);
			return titan_err_nomem();
		}
		f->nmeta++;
	}
	return 0;
}

static int parse_tensor(st_file *f, const char *name, json_t *e, st_tensor *t)
{
	const char *p = f->path;
	if (!json_is_object(e))
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': expected an object",
				 p, name);

	json_t *dt = json_object_get(e, "dtype");
	if (!json_is_string(dt))
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': dtype: expected a string",
				 p, name);
	if (dtype_parse(json_string_value(dt), &t->dtype))
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': unknown dtype '%s'",
				 p, name, json_string_value(dt));

	json_t *sh = json_object_get(e, "shape");
	if (!json_is_array(sh))
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': shape: expected an array",
				 p, name);
	if (json_array_size(sh) > ST_MAX_DIMS)
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s': shape has %zu dimensions, at most %d",
				 p, name, json_array_size(sh), ST_MAX_DIMS);
	t->ndim = (int)json_array_size(sh);
	for (int i = 0; i < t->ndim; i++) {
		json_t *d = json_array_get(sh, (size_t)i);
		if (!json_is_integer(d) || json_integer_value(d) < 0)
			return titan_err(TITAN_EFORMAT,
					 "'%s': tensor '%s': shape[%d]: expected a non-negative integer",
					 p, name, i);
		t->shape[i] = json_integer_value(d);
	}

	json_t *off = json_object_get(e, "data_offsets");
	if (!json_is_array(off) || json_array_size(off) != 2)
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s': data_offsets: expected [begin, end]",
				 p, name);
	json_t *b = json_array_get(off, 0), *en = json_array_get(off, 1);
	if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
	    json_integer_value(en) < json_integer_value(b))
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s': data_offsets: expected 0 <= begin <= end",
				 p, name);
	t->begin = (uint64_t)json_integer_value(b);
	t->end = (uint64_t)json_integer_value(en);

	uint64_t want;
	if (tensor_bytes(t->shape, t->ndim, st_dtype_size(t->dtype), &want))
		return titan_err(TITAN_EFORMAT, "'%s': tensor '%s': shape too large",
				 p, name);
	if (t->end - t->begin != want)
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s': data_offsets span %llu bytes, shape and dtype need %llu",
				 p, name, (unsigned long long)(t->end - t->begin),
				 (unsigned long long)want);
	uint64_t data_size = f->size - f->data_off;
	if (t->end > data_size)
		return titan_err(TITAN_EFORMAT,
				 "'%s': tensor '%s': data ends at byte %llu, past the %llu bytes of data",
				 p, name, (unsigned long long)t->end,
				 (unsigned long long)data_size);
	t->name = strdup(name);
	if (!t->name)
		return titan_err_nomem();
	return 0;
}

static int by_offset(const void *a, const void *b)
{
	const st_tensor *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int parse_header(st_file *f, json_t *h)
{
	if (!json_is_object(h))
		return titan_err(TITAN_EFORMAT, "'%s': header: expected a JSON object",
				 f->path);
	size_t n = json_object_size(h);
	f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
	if (!f->tensors)
		return titan_err_nomem();

	const char *key;
	json_t *v;
	json_object_foreach(h, key, v) {
		int rc;
		if (!strcmp(key, "__metadata__"))
			rc = parse_meta(f, v);
		else if ((rc = parse_tensor(f, key, v, &f->tensors[f->n])) == 0)
			f->n++;
		if (rc)
			return rc;
	}

	/* Zero-byte tensors hold no data, so they cannot overlap anything. */
	qsort(f->tensors, f->n, sizeof *f->tensors, by_offset);
	const st_tensor *prev = NULL;
	for (size_t i = 0; i < f->n; i++) {
		const st_tensor *t = &f->tensors[i];
		if (t->begin == t->end)
			continue;
		if (prev && t->begin < prev->end)
			return titan_err(TITAN_EFORMAT,
					 "'%s': tensor '%s' overlaps tensor '%s'",
					 f->path, t->name, prev->name);
		if (!prev || t->end > prev->end)
			prev = t;
	}
	return 0;
}

int st_open(st_file **out, const char *path)
{
	*out = NULL;
	st_file *f = calloc(1, sizeof *f);
	if (!f)
		return titan_err_nomem();
	f->path = strdup(path);
	if (!f->path) {
		free(f);
		return titan_err_nomem();
	}

	int rc = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
		goto fail;
	}
	if (fstat(fd, &st) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot stat '%s'", path);
		close(fd);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = titan_err(TITAN_EIO, "'%s' is not a regular file", path);
		close(fd);
		goto fail;
	}
	if (st.st_size < 8) {
		rc = titan_err(TITAN_EFORMAT, "'%s': %lld bytes, too short for a safetensors header",
			       path, (long long)st.st_size);
		close(fd);
		goto fail;
	}
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		rc = titan_err_errno(TITAN_EIO, "cannot map '%s'", path);
		goto fail;
	}
	f->map = map;
	f->size = (size_t)st.st_size;

	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | f->map[i];
	if (hlen > ST_MAX_HEADER || hlen > f->size - 8) {
		rc = titan_err(TITAN_EFORMAT,
			       "'%s': header size %llu exceeds the file (%zu bytes) or 100 MB",
			       path, (unsigned long long)hlen, f->size);
		goto fail;
	}
	f->data_off = 8 + (size_t)hlen;

	/* Duplicate keys would make a tensor ambiguous: refuse them. */
	json_error_t jerr;
	json_t *h = json_loadb((const char *)f->map + 8, (size_t)hlen,
			       JSON_REJECT_DUPLICATES, &jerr);
	if (!h) {
		rc = titan_err(TITAN_EFORMAT, "'%s': header: line %d column %d: %s",
			       path, jerr.line, jerr.column, jerr.text);
		goto fail;
	}
	rc = parse_header(f, h);
	json_decref(h);
	if (rc)
		goto fail;
	*out = f;
	return 0;
fail:
	st_close(f);
	return rc;
}

void st_close(st_file *f)
{
	if (!f)
		return;
	if (f->map)
		munmap((void *)f->map, f->size);
	for (size_t i = 0; i < f->n; i++)
		free(f->tensors[i].name);
	free(f->tensors);
	for (size_t i = 0; i < f->nmeta; i++) {
		free(f->meta_keys[i]);
		free(f->meta_vals[i]);
	}
	free(f->meta_keys);
	free(f->meta_vals);
	free(f->path);
	free(f);
}

const st_tensor *st_find(const st_file *f, const char *name)
{
	for (size_t i = 0; i < f->n; i++)
		if (!strcmp(f->tensors[i].name, name))
			return &f->tensors[i];
	return NULL;
}

const void *st_data(const st_file *f, const st_tensor *t)
{
	return f->map + f->data_off + t->begin;
}

const char *st_meta(const st_file *f, const char *key)
{
	for (size_t i = 0; i < f->nmeta; i++)
		if (!strcmp(f->meta_keys[i], key))
			return f->meta_vals[i];
	return NULL;
}

/* --- streaming writer --- */

struct st_entry {
	char *name;
	st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	uint64_t bytes;
};

struct st_stream {
	struct st_entry *e;
	size_t n, cap;
	json_t *meta;
	uint64_t data_bytes;
	titan_atomic out;           /* .fp set between begin and finish */
	size_t cur;                 /* the tensor being put */
	uint64_t cur_done;          /* its bytes so far */
	bool begun, finished, failed;
};

int st_stream_new(st_stream **out)
{
	st_stream *w = calloc(1, sizeof *w);
	if (!w)
		return titan_err_nomem();
	w->meta = json_object();
	if (!w->meta) {
		free(w);
		return titan_err_nomem();
	}
	*out = w;
	return 0;
}

int st_stream_declare(st_stream *w, const char *name, st_dtype dtype, int ndim,
		      const int64_t *shape)
{
	if (w->begun)
		return titan_err(TITAN_EUSAGE, "tensor '%s': declared after the header was written",
				 name);
	if ((unsigned)dtype >= ST_NDTYPES)
		return titan_err(TITAN_EUSAGE, "tensor '%s': bad dtype %d", name, (int)dtype);
	if (ndim < 0 || ndim > ST_MAX_DIMS)
		return titan_err(TITAN_EUSAGE, "tensor '%s': %d dimensions, at most %d",
				 name, ndim, ST_MAX_DIMS);
	if (!strcmp(name, "__metadata__"))
		return titan_err(TITAN_EUSAGE, "'__metadata__' cannot name a tensor");
	for (size_t i = 0; i < w->n; i++)
		if (!strcmp(w->e[i].name, name))
			return titan_err(TITAN_EUSAGE, "tensor '%s' added twice", name);
	for (int i = 0; i < ndim; i++)
		if (shape[i] < 0)
			return titan_err(TITAN_EUSAGE, "tensor '%s': negative shape[%d]",
					 name, i);
	uint64_t bytes;
	if (tensor_bytes(shape, ndim, st_dtype_size(dtype), &bytes) ||
	    bytes > (uint64_t)INT64_MAX - w->data_bytes)
		return titan_err(TITAN_EUSAGE, "tensor '%s': shape too large", name);

	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 16;
		struct st_entry *e = realloc(w->e, cap * sizeof *e);
		if (!e)
			return titan_err_nomem();
		w->e = e;
		w->cap = cap;
	}
	struct st_entry *e = &w->e[w->n];
	*e = (struct st_entry){ .dtype = dtype, .ndim = ndim, .bytes = bytes };
	memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
	e->name = strdup(name);
	if (!e->name)
		return titan_err_nomem();
	w->n++;
	w->data_bytes += bytes;
	return 0;
}

int st_stream_meta(st_stream *w, const char *key, const char *value)
{
	if (w->begun)
		return titan_err(TITAN_EUSAGE, "metadata '%s': set after the header was written",
				 key);
	json_t *v = json_string(value);
	if (!v || json_object_set_new(w->meta, key, v))
		return titan_err(TITAN_EUSAGE, "metadata '%s': not valid UTF-8", key);
	return 0;
}

uint64_t st_stream_data_bytes(const st_stream *w)
{
	return w->data_bytes;
}

/* The header JSON, padded with spaces to a multiple of 8 bytes so the data
 * section starts aligned. */
static int build_header(const st_stream *w, const char *path, char **text, size_t *len)
{
	json_t *h = json_object();
	if (!h)
		return titan_err_nomem();
	int rc = 0;
	if (json_object_size(w->meta) && json_object_set(h, "__metadata__", w->meta))
		rc = titan_err_nomem();
	uint64_t off = 0;
	for (size_t i = 0; !rc && i < w->n; i++) {
		const struct st_entry *e = &w->e[i];
		json_t *shape = json_array();
		json_t *offs = json_pack("[II]", (json_int_t)off, (json_int_t)(off + e->bytes));
		json_t *ent = json_object();
		if (!shape || !offs || !ent) {
			json_decref(shape);
			json_decref(offs);
			json_decref(ent);
			rc = titan_err_nomem();
			break;
		}
		for (int d = 0; d < e->ndim; d++)
			json_array_append_new(shape, json_integer(e->shape[d]));
		json_object_set_new(ent, "dtype", json_string(st_dtype_name(e->dtype)));
		json_object_set_new(ent, "shape", shape);
		json_object_set_new(ent, "data_offsets", offs);
		if (json_object_set_new(h, e->name, ent))
			rc = titan_err(TITAN_EUSAGE, "'%s': tensor name '%s' is not valid UTF-8",
				       path, e->name);
		off += e->bytes;
	}
	char *s = rc ? NULL : json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(h);
	if (rc)
		return rc;
	if (!s)
		return titan_err(TITAN_ENOMEM, "'%s': cannot serialize the header", path);
	size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
	char *t = realloc(s, padded + 1);
	if (!t) {
		free(s);
		return titan_err_nomem();
	}
	memset(t + n, ' ', padded - n);
	t[padded] = '\0';
	*text = t;
	*len = padded;
	return 0;
}

/* PATH.tmp, not titan_atomic's PATH.tmp.PID: a stream is written by one
 * process into a directory it owns, and a stale PATH.tmp left by a crash is
 * simply overwritten. */
static int stream_create(titan_atomic *a, const char *path)
{
	size_t n = strlen(path) + 5;
	*a = (titan_atomic){0};
	a->path = strdup(path);
	a->tmp = malloc(n);
	if (!a->path || !a->tmp)
		goto nomem;
	snprintf(a->tmp, n, "%s.tmp", path);
	int fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0) {
		int rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", a->tmp);
		free(a->path);
		free(a->tmp);
		*a = (titan_atomic){0};
		return rc;
	}
	a->fp = fdopen(fd, "w");
	if (!a->fp) {
		int rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", a->tmp);
		close(fd);
		unlink(a->tmp);
		free(a->path);
		free(a->tmp);
		*a = (titan_atomic){0};
		return rc;
	}
	return 0;
nomem:
	free(a->path);
	free(a->tmp);
	*a = (titan_atomic){0};
	return titan_err_nomem();
}

int st_stream_begin(st_stream *w, const char *path)
{
	if (w->begun)
		return titan_err(TITAN_EUSAGE, "'%s': stream already begun", path);
	char *hdr = NULL;
	size_t hlen = 0;
	int rc = build_header(w, path, &hdr, &hlen);
	if (rc)
		return rc;
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
	if ((rc = stream_create(&w->out, path))) {
		free(hdr);
		return rc;
	}
	w->begun = true;
	rc = file_write(w->out.fp, path, le, sizeof le);
	if (!rc)
		rc = file_write(w->out.fp, path, hdr, hlen);
	free(hdr);
	w->failed = rc != 0;
	return rc;
}

int st_stream_put(st_stream *w, const void *data, size_t bytes)
{
	if (!w->begun || w->finished)
		return titan_err(TITAN_EUSAGE, "safetensors stream: put outside begin..finish");
	const char *path = w->out.path;
	if (w->failed)
		return titan_err(TITAN_EIO, "'%s': an earlier write failed", path);
	const uint8_t *p = data;
	while (bytes) {
		/* Skip tensors of zero bytes: they take no data. */
		while (w->cur < w->n && w->cur_done == w->e[w->cur].bytes) {
			w->cur++;
			w->cur_done = 0;
		}
		if (w->cur == w->n)
			return titan_err(TITAN_EUSAGE,
					 "'%s': %zu bytes past the end of the declared tensors",
					 path, bytes);
		uint64_t left = w->e[w->cur].bytes - w->cur_done;
		size_t k = bytes < left ? bytes : (size_t)left;
		int rc = file_write(w->out.fp, path, p, k);
		if (rc) {
			w->failed = true;
			return rc;
		}
		w->cur_done += k;
		p += k;
		bytes -= k;
	}
	return 0;
}

int st_stream_finish(st_stream *w)
{
	if (!w->begun || w->finished)
		return titan_err(TITAN_EUSAGE, "safetensors stream: finish without begin");
	const char *path = w->out.path;
	if (w->failed)
		return titan_err(TITAN_EIO, "'%s': an earlier write failed", path);
	while (w->cur < w->n && w->cur_done == w->e[w->cur].bytes) {
		w->cur++;
		w->cur_done = 0;
	}
	if (w->cur < w->n)
		return titan_err(TITAN_EUSAGE,
				 "'%s': tensor '%s': %llu of its %llu bytes written",
				 path, w->e[w->cur].name, (unsigned long long)w->cur_done,
				 (unsigned long long)w->e[w->cur].bytes);
	w->finished = true;
	return atomic_commit(&w->out);
}

void st_stream_free(st_stream *w)
{
	if (!w)
		return;
	if (w->begun && !w->finished)
		atomic_abort(&w->out);
	for (size_t i = 0; i < w->n; i++)
		free(w->e[i].name);
	free(w->e);
	json_decref(w->meta);
	free(w);
}

/* --- writer: a stream whose data is all in memory --- */

struct st_writer {
	st_stream *s;
	const void **data;
	size_t cap;
};

int st_writer_new(st_writer **out)
{
	st_writer *w = calloc(1, sizeof *w);
	if (!w)
		return titan_err_nomem();
	int rc = st_stream_new(&w->s);
	if (rc) {
		free(w);
		return rc;
	}
	*out = w;
	return 0;
}

int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim,
		  const int64_t *shape, const void *data)
{
	size_t n = w->s->n;
	if (n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 16;
		const void **d = realloc(w->data, cap * sizeof *d);
		if (!d)
			return titan_err_nomem();
		w->data = d;
		w->cap = cap;
	}
	int rc = st_stream_declare(w->s, name, dtype, ndim, shape);
	if (rc)
		return rc;
	if (w->s->e[n].bytes && !data) {
		free(w->s->e[n].name);
		w->s->data_bytes -= w->s->e[n].bytes;
		w->s->n--;
		return titan_err(TITAN_EUSAGE, "tensor '%s': no data", name);
	}
	w->data[n] = data;
	return 0;
}

int st_writer_meta(st_writer *w, const char *key, const char *value)
{
	return st_stream_meta(w->s, key, value);
}

int st_writer_write(st_writer *w, const char *path)
{
	int rc = st_stream_begin(w->s, path);
	for (size_t i = 0; !rc && i < w->s->n; i++)
		rc = st_stream_put(w->s, w->data[i], (size_t)w->s->e[i].bytes);
	if (!rc)
		rc = st_stream_finish(w->s);
	return rc;
}

void st_writer_free(st_writer *w)
{
	if (!w)
		return;
	st_stream_free(w->s);
	free(w->data);
	free(w);
}

void st_release(const st_file *f, const void *p, size_t bytes)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = (uintptr_t)p & ~(page - 1);
	uintptr_t hi = ((uintptr_t)p + bytes + page - 1) & ~(page - 1);
	uintptr_t end = (uintptr_t)f->map + f->size;

	if (hi > end)
		hi = end;
	if (bytes && hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}
