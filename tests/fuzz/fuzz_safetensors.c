/* fuzz_safetensors.c - libFuzzer target: arbitrary bytes as a safetensors
 * file.
 *
 * The bytes become an in-memory file (memfd) that st_open maps by its
 * /proc/self/fd path.  When it opens, every tensor's bytes are read (so the
 * sanitizers see an offset the checks let through), the invariants the
 * reader promises are checked, and the file is written back with st_writer
 * and reopened: it must give the same tensors and metadata.
 *
 * The first byte picks a mode: odd, the rest is taken as it is; even, the
 * header length is set to end at the last '}' of the input, so that mutated
 * JSON gets past the length check to the checks behind it. */
#include "core/base.h"
#include "ckpt/safetensors.h"

#include "memfile.h"
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fix_length(uint8_t *p, size_t size)
{
	if (size < 9)
		return;
	const uint8_t *end = memrchr(p + 8, '}', size - 8);
	if (!end)
		return;
	uint64_t n = (uint64_t)(end - p) + 1 - 8;
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(n >> (8 * i));
}

static void check_invariants(const st_file *f)
{
	uint64_t data_size = f->size - f->data_off, prev_end = 0;
	volatile uint8_t sink = 0;
	for (size_t i = 0; i < f->n; i++) {
		const st_tensor *t = &f->tensors[i];
		if (t->begin > t->end || t->end > data_size || t->ndim > ST_MAX_DIMS)
			abort();
		if (i && t->begin < f->tensors[i - 1].begin)
			abort();
		if (t->begin != t->end) {
			if (t->begin < prev_end)
				abort();
			prev_end = t->end;
		}
		const uint8_t *p = st_data(f, t);
		for (uint64_t k = 0; k < t->end - t->begin; k++)
			sink ^= p[k];
		if (st_find(f, t->name) != t)
			abort();
	}
	for (size_t i = 0; i < f->nmeta; i++)
		if (!st_meta(f, f->meta_keys[i]))
			abort();
	(void)sink;
}

/* Write f back out and reopen it: the same tensors, bytes and metadata. */
static void check_rewrite(const st_file *f, const char *path)
{
	st_writer *w;
	if (st_writer_new(&w))
		abort();
	for (size_t i = 0; i < f->n; i++) {
		const st_tensor *t = &f->tensors[i];
		if (st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, st_data(f, t)))
			abort();
	}
	for (size_t i = 0; i < f->nmeta; i++)
		if (st_writer_meta(w, f->meta_keys[i], f->meta_vals[i]))
			abort();
	if (st_writer_write(w, path)) {
		fprintf(stderr, "fuzz_safetensors: write: %s\n", titan_errmsg());
		abort();
	}
	st_writer_free(w);

	st_file *g;
	if (st_open(&g, path)) {
		fprintf(stderr, "fuzz_safetensors: reopen: %s\n", titan_errmsg());
		abort();
	}
	if (g->n != f->n || g->nmeta != f->nmeta || g->data_off % 8)
		abort();
	for (size_t i = 0; i < f->n; i++) {
		const st_tensor *a = &f->tensors[i], *b = st_find(g, a->name);
		if (!b || b->dtype != a->dtype || b->ndim != a->ndim ||
		    b->end - b->begin != a->end - a->begin ||
		    memcmp(b->shape, a->shape, (size_t)a->ndim * sizeof *a->shape) ||
		    memcmp(st_data(g, b), st_data(f, a), (size_t)(a->end - a->begin)))
			abort();
	}
	for (size_t i = 0; i < f->nmeta; i++) {
		const char *v = st_meta(g, f->meta_keys[i]);
		if (!v || strcmp(v, f->meta_vals[i]))
			abort();
	}
	st_close(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[256];
	if (!out[0]) {
		const char *tmp = getenv("TMPDIR");
		snprintf(out, sizeof out, "%s/fuzz_safetensors.%ld.safetensors",
			 tmp && *tmp ? tmp : "/tmp", (long)getpid());
	}
	bool fix;
	uint8_t *copy = fuzz_take(data, &size, &fix);
	if (!copy)
		return 0;
	if (fix)
		fix_length(copy, size);
	const char *path = fuzz_memfile(copy, size);
	free(copy);

	st_file *f;
	if (st_open(&f, path))
		return 0;
	check_invariants(f);
	check_rewrite(f, out);
	st_close(f);
	unlink(out);
	return 0;
}
