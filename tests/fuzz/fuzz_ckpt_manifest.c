/* fuzz_ckpt_manifest.c - libFuzzer target: arbitrary bytes as a checkpoint
 * step directory's manifest.json.
 *
 * The step directory is made once per process in TMPDIR: manifest.json is a
 * link to the in-memory input file, and two valid shard files sit beside
 * it, rank-00000.safetensors (F32 "a" [3, 4] and "b" [5]) and
 * rank-00001.safetensors ("a" [2, 4] and "b" [5]), so that a manifest can
 * name one file or split tensors across both.  When ckpt_reader_open
 * accepts the manifest, every tensor is read whole (those of a few MB or
 * less: a manifest can declare any shape) and the checkpoint verified;
 * either may fail with a message, never crash.
 *
 * The first byte picks a mode: odd, the rest is taken as it is; even, when
 * the rest parses as a JSON object its "format" and "version" are set to a
 * checkpoint's, so that mutated manifests get past that check to the
 * tensors behind it. */
#include "core/base.h"
#include "ckpt/ckpt.h"
#include "ckpt/safetensors.h"
#include "core/file.h"

#include "memfile.h"
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Tensors above this are declared, not read. */
#define READ_MAX_FLOATS ((int64_t)1 << 20)

/* The values of rank's tensor: fixed, so the seeds' hash64 match. */
static void fill(float *p, int n, int rank, int tensor)
{
	for (int i = 0; i < n; i++)
		p[i] = (float)(rank * 100 + tensor * 10) + (float)i * 0.25f;
}

static void write_shard(const char *dir, int rank, int64_t a_rows)
{
	float a[3 * 4], b[5];
	int64_t sa[2] = { a_rows, 4 }, sb[1] = { 5 };
	char name[64], *path;
	st_writer *w;

	fill(a, (int)(a_rows * 4), rank, 0);
	fill(b, 5, rank, 1);
	snprintf(name, sizeof name, "rank-%05d.safetensors", rank);
	if (!(path = file_path_join(dir, name)) || st_writer_new(&w) ||
	    st_writer_add(w, "a", ST_F32, 2, sa, a) || st_writer_add(w, "b", ST_F32, 1, sb, b) ||
	    st_writer_write(w, path)) {
		fprintf(stderr, "fuzz_ckpt_manifest: %s\n", titan_errmsg());
		abort();
	}
	st_writer_free(w);
	free(path);
}

static char dir[256];

static void remove_step_dir(void)
{
	file_remove_tree(dir);
}

/* The step directory, made on the first call and removed at exit. */
static const char *step_dir(void)
{
	const char *tmp = getenv("TMPDIR");
	char *man;

	if (dir[0])
		return dir;
	snprintf(dir, sizeof dir, "%s/fuzz_ckpt_manifest.%ld", tmp && *tmp ? tmp : "/tmp",
		 (long)getpid());
	if (file_remove_tree(dir) || mkdir(dir, 0777) < 0)
		abort();
	write_shard(dir, 0, 3);
	write_shard(dir, 1, 2);
	if (!(man = file_path_join(dir, "manifest.json")) ||
	    symlink(fuzz_memfile("", 0), man) < 0)
		abort();
	free(man);
	atexit(remove_step_dir);
	return dir;
}

/* The input with a checkpoint's format and version, when it is an object. */
static void repair(uint8_t **p, size_t *size)
{
	json_t *m = json_loadb((const char *)*p, *size, 0, NULL);
	char *text;

	if (!json_is_object(m) ||
	    json_object_set_new(m, "format", json_string("titan-checkpoint")) ||
	    json_object_set_new(m, "version", json_integer(1)) ||
	    !(text = json_dumps(m, JSON_COMPACT))) {
		json_decref(m);
		return;
	}
	json_decref(m);
	free(*p);
	*p = (uint8_t *)text;
	*size = strlen(text);
}

static void read_all(ckpt_reader *r)
{
	for (size_t i = 0; i < ckpt_reader_count(r); i++) {
		const ckpt_tensor_info *t = ckpt_reader_tensor(r, i);
		int64_t n = 1;
		for (int k = 0; k < t->ndim && n <= READ_MAX_FLOATS; k++)
			n = t->shape[k] ? n * t->shape[k] : 0;
		if (n > READ_MAX_FLOATS)
			continue;
		float *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
		if (!buf)
			abort();
		if (ckpt_reader_find(r, t->name) != t)
			abort();
		if (ckpt_reader_read(r, t->name, NULL, NULL, buf) && !*titan_errmsg())
			abort();
		free(buf);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *step = step_dir();
	ckpt_reader *r;
	bool fix;
	uint8_t *copy = fuzz_take(data, &size, &fix);

	if (!copy)
		return 0;
	if (fix)
		repair(&copy, &size);
	fuzz_memfile(copy, size);
	free(copy);

	if (ckpt_reader_open(&r, step)) {
		if (!*titan_errmsg())
			abort();
		return 0;
	}
	read_all(r);
	if (ckpt_reader_verify(r, NULL, NULL) && !*titan_errmsg())
		abort();
	ckpt_reader_close(r);
	return 0;
}
