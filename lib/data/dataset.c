/* dataset.c - a dataset directory: manifest.json and the shards of each
 * split (see dataset.h, titan-dataset(5)). */
#include "core/base.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "core/hash.h"
#include "core/file.h"
#include "core/json.h"

#include <fcntl.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHARD_TOKENS_DEFAULT (1ull << 28)
#define CREATED_BY "titan-pack " TITAN_VERSION

static const char *const split_names[SPLIT_COUNT] = { "train", "val" };

int dataset_split_index(const char *name, int *split)
{
	for (int s = 0; s < SPLIT_COUNT; s++) {
		if (!strcmp(name, split_names[s])) {
			*split = s;
			return 0;
		}
	}
	return titan_err(TITAN_EUSAGE, "unknown split '%s' (expected train or val)", name);
}

int dataset_split_of(const uint32_t *ids, size_t n, uint64_t seed, double val_fraction)
{
	/* The hash is of the ids' little-endian bytes, which on a
	 * little-endian host are the ids as they lie in memory. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "dataset_split_of hashes ids in place: little-endian hosts only"
#endif
	n = TITAN_MIN(n, (size_t)DATASET_SPLIT_IDS);
	uint64_t h = hash64(n ? (const void *)ids : "", n * sizeof *ids, seed);
	double u = (double)(h >> 11) * 0x1p-53;
	return u < val_fraction ? SPLIT_VAL : SPLIT_TRAIN;
}

/* ---- writer ---- */

typedef struct shard_entry {
	char file[32];
	shard_summary sum;
} shard_entry;

struct dataset_writer {
	dataset_writer_opts o;
	char *outdir, *tmpdir;
	int token_bytes;       /* as the shards store them: 2, 3 or 4 */
	shard_writer *cur[SPLIT_COUNT];
	shard_entry *shards[SPLIT_COUNT];
	size_t nshards[SPLIT_COUNT];
	double compress_cpu;   /* of the shards closed so far */
};

static void writer_free(dataset_writer *w)
{
	for (int s = 0; s < SPLIT_COUNT; s++) {
		shard_writer_abort(w->cur[s]);
		free(w->shards[s]);
	}
	free(w->outdir);
	free(w->tmpdir);
	free(w);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

int dataset_writer_open(dataset_writer **out, const dataset_writer_opts *o)
{
	*out = NULL;
	if (!o->outdir || !*o->outdir)
		return titan_err(TITAN_EUSAGE, "no output directory");
	if (!(o->val_fraction >= 0 && o->val_fraction <= 1))
		return titan_err(TITAN_EUSAGE, "validation fraction %g: expected 0 to 1",
				 o->val_fraction);
	if (o->seed > INT64_MAX)
		return titan_err(TITAN_EUSAGE, "seed %llu: at most %lld",
				 (unsigned long long)o->seed, (long long)INT64_MAX);
	if (!o->force && exists(o->outdir))
		return titan_err(TITAN_EUSAGE, "'%s' exists (use --force to replace it)",
				 o->outdir);
	dataset_writer *w = calloc(1, sizeof *w);
	if (!w)
		return titan_err_nomem();
	w->o = *o;
	if (!w->o.shard_tokens)
		w->o.shard_tokens = SHARD_TOKENS_DEFAULT;
	if (!w->o.block_tokens)
		w->o.block_tokens = SHARD_BLOCK_TOKENS_DEFAULT;
	if (!w->o.zstd_level)
		w->o.zstd_level = DATASET_ZSTD_LEVEL;
	w->token_bytes = o->tok.vocab_size <= 1u << 16 ? 2 : o->tok.vocab_size <= 1u << 24 ? 3 : 4;
	/* Trailing slashes would put the temporary name inside OUTDIR. */
	w->outdir = strdup(o->outdir);
	if (!w->outdir) {
		free(w);
		return titan_err_nomem();
	}
	for (size_t n = strlen(w->outdir); n > 1 && w->outdir[n - 1] == '/'; n--)
		w->outdir[n - 1] = '\0';
	w->o.outdir = w->outdir;
	size_t n = strlen(w->outdir) + 32;
	w->tmpdir = malloc(n);
	if (!w->tmpdir) {
		writer_free(w);
		return titan_err_nomem();
	}
	snprintf(w->tmpdir, n, "%s.tmp.%ld", w->outdir, (long)getpid());
	file_discard_tree(w->tmpdir);  /* left by a crashed run with our pid */
	if (mkdir(w->tmpdir, 0755) < 0) {
		int rc = titan_err_errno(TITAN_EIO, "cannot create directory '%s'", w->tmpdir);
		writer_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

static int close_shard(dataset_writer *w, int s)
{
	shard_writer *sw = w->cur[s];
	w->cur[s] = NULL;
	shard_entry *e = &w->shards[s][w->nshards[s] - 1];
	int rc = shard_writer_close(sw, &e->sum);
	w->compress_cpu += e->sum.compress_cpu;
	return rc;
}

static int open_shard(dataset_writer *w, int s)
{
	shard_entry *grown = realloc(w->shards[s], (w->nshards[s] + 1) * sizeof *grown);
	if (!grown)
		return titan_err_nomem();
	w->shards[s] = grown;
	shard_entry *e = &grown[w->nshards[s]];
	memset(e, 0, sizeof *e);
	snprintf(e->file, sizeof e->file, "%s-%05zu.shard", split_names[s], w->nshards[s]);
	char *path = file_path_join(w->tmpdir, e->file);
	if (!path)
		return titan_err_nomem();
	int rc = shard_writer_open(&w->cur[s], path, w->token_bytes, w->o.block_tokens,
				   w->o.zstd_level, w->o.compress_threads);
	free(path);
	if (!rc)
		w->nshards[s]++;
	return rc;
}

/* The shards' size check, here too so the message names the dataset, not
 * a temporary shard file. */
static int check_fits(const dataset_writer *w, const uint32_t *ids, size_t n)
{
	uint32_t bad_id = 0;
	if (shard_ids_fit(ids, n, w->token_bytes, &bad_id))
		return 0;
	return titan_err(TITAN_ERANGE, "'%s': token id %u does not fit in %s (vocab size %u)",
			 w->outdir, bad_id, w->token_bytes == 2 ? "u16" : "24 bits",
			 w->o.tok.vocab_size);
}

/* BOS or EOS, when there is one. */
static int check_special(const dataset_writer *w, int64_t id)
{
	uint32_t v = (uint32_t)id;
	return id >= 0 ? check_fits(w, &v, 1) : 0;
}

static int check_split(int split)
{
	if (split < 0 || split >= SPLIT_COUNT)
		return titan_err(TITAN_EUSAGE, "split %d out of range", split);
	return 0;
}

/* Roll after the document that reached the limit: documents never span
 * shards. */
static int roll_shard(dataset_writer *w, int split)
{
	if (w->cur[split] && shard_writer_tokens(w->cur[split]) >= w->o.shard_tokens)
		return close_shard(w, split);
	return 0;
}

int dataset_writer_begin(dataset_writer *w, int split, int64_t bos)
{
	uint32_t head = (uint32_t)bos;
	int rc;
	if ((rc = check_split(split)) || (rc = check_special(w, bos)))
		return rc;
	if (!w->cur[split] && (rc = open_shard(w, split)))
		return rc;
	if ((rc = shard_writer_start_doc(w->cur[split])))
		return rc;
	return bos >= 0 ? shard_writer_append(w->cur[split], &head, 1) : 0;
}

int dataset_writer_append(dataset_writer *w, int split, const uint32_t *ids, size_t n)
{
	int rc;
	if ((rc = check_split(split)) || (rc = check_fits(w, ids, n)))
		return rc;
	if (!w->cur[split])
		return titan_err(TITAN_EINTERNAL, "append to split %d without a document begun",
				 split);
	return n ? shard_writer_append(w->cur[split], ids, n) : 0;
}

int dataset_writer_end(dataset_writer *w, int split, int64_t eos)
{
	uint32_t tail = (uint32_t)eos;
	int rc;
	if (eos >= 0 && (rc = dataset_writer_append(w, split, &tail, 1)))
		return rc;
	if ((rc = check_split(split)))
		return rc;
	return roll_shard(w, split);
}

/* The three at once in one pass: most documents are short, and three calls
 * each shows in the hand-over thread's profile. */
int dataset_writer_add_wrapped(dataset_writer *w, int split, int64_t bos,
			       const uint32_t *ids, size_t n, int64_t eos)
{
	int rc;
	if ((rc = check_split(split)) || (rc = check_fits(w, ids, n)) ||
	    (rc = check_special(w, bos)) || (rc = check_special(w, eos)))
		return rc;
	if (!w->cur[split] && (rc = open_shard(w, split)))
		return rc;
	if ((rc = shard_writer_add_doc(w->cur[split], bos, ids, n, eos)))
		return rc;
	return roll_shard(w, split);
}

int dataset_writer_add(dataset_writer *w, int split, const uint32_t *ids, size_t n)
{
	return dataset_writer_add_wrapped(w, split, -1, ids, n, -1);
}

static json_t *tok_json(const dataset_tokinfo *t)
{
	return json_pack("{s:s, s:I, s:o, s:o, s:b, s:b, s:s}",
			 "sha256", t->sha256,
			 "vocab_size", (json_int_t)t->vocab_size,
			 "bos", t->bos >= 0 ? json_integer(t->bos) : json_null(),
			 "eos", t->eos >= 0 ? json_integer(t->eos) : json_null(),
			 "bos_added", t->bos_added,
			 "eos_added", t->eos_added,
			 "source", t->source);
}

static json_t *split_json(const dataset_writer *w, int s)
{
	json_t *arr = json_array();
	uint64_t tokens = 0, docs = 0;
	if (!arr)
		return NULL;
	for (size_t i = 0; i < w->nshards[s]; i++) {
		const shard_entry *e = &w->shards[s][i];
		char hex[17];
		snprintf(hex, sizeof hex, "%016llx", (unsigned long long)e->sum.xxh64);
		json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:s}",
				      "file", e->file,
				      "tokens", (json_int_t)e->sum.tokens,
				      "documents", (json_int_t)e->sum.docs,
				      "bytes", (json_int_t)e->sum.bytes,
				      "xxh64", hex);
		if (!j || json_array_append_new(arr, j)) {
			json_decref(arr);
			return NULL;
		}
		tokens += e->sum.tokens;
		docs += e->sum.docs;
	}
	return json_pack("{s:I, s:I, s:o}", "tokens", (json_int_t)tokens,
			 "documents", (json_int_t)docs, "shards", arr);
}

static int write_manifest(const dataset_writer *w)
{
	json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:o, s:{s:I, s:f}, s:I, s:{s:o, s:o}}",
			      "format", "titan-dataset",
			      "version", DATASET_VERSION,
			      "created_by", CREATED_BY,
			      "dtype", w->token_bytes == 2 ? "u16" : "u32",
			      "tokenizer", tok_json(&w->o.tok),
			      "split", "seed", (json_int_t)w->o.seed,
			      "val_fraction", w->o.val_fraction,
			      "block_tokens", (json_int_t)w->o.block_tokens,
			      "splits", "train", split_json(w, SPLIT_TRAIN),
			      "val", split_json(w, SPLIT_VAL));
	if (!m)
		return titan_err(TITAN_ENOMEM, "'%s': cannot build manifest.json", w->outdir);
	char *path = file_path_join(w->tmpdir, "manifest.json");
	int rc = path ? json_write_path(m, path) : titan_err_nomem();
	free(path);
	json_decref(m);
	return rc;
}

int dataset_writer_commit(dataset_writer *w, double *compress_cpu)
{
	int rc = 0;
	uint64_t tokens = 0;
	for (int s = 0; s < SPLIT_COUNT && !rc; s++) {
		if (w->cur[s])
			rc = close_shard(w, s);
		for (size_t i = 0; i < w->nshards[s]; i++)
			tokens += w->shards[s][i].sum.tokens;
	}
	if (!rc && !tokens)
		rc = titan_err(TITAN_EFORMAT, "empty corpus: no documents");
	if (!rc)
		rc = write_manifest(w);
	if (!rc)
		rc = file_install_dir(w->tmpdir, w->outdir, w->o.force);
	if (rc)
		file_discard_tree(w->tmpdir);
	if (compress_cpu)
		*compress_cpu = w->compress_cpu;
	writer_free(w);
	return rc;
}

void dataset_writer_abort(dataset_writer *w)
{
	if (!w)
		return;
	for (int s = 0; s < SPLIT_COUNT; s++) {
		shard_writer_abort(w->cur[s]);
		w->cur[s] = NULL;
	}
	file_discard_tree(w->tmpdir);
	writer_free(w);
}

/* ---- reader ---- */

typedef struct dshard {
	char *path;
	uint64_t tokens, docs, bytes, xxh64;
	uint64_t tok_base, doc_base;   /* of the shard within its split */
	shard_reader *r;               /* opened on first use */
} dshard;

struct dataset {
	char *dir;
	dataset_tokinfo tok;
	int token_bytes;
	uint32_t block_tokens;
	uint64_t seed;
	double val_fraction;
	dshard *shards[SPLIT_COUNT];
	size_t nshards[SPLIT_COUNT];
	uint64_t tokens[SPLIT_COUNT], docs[SPLIT_COUNT];
};

void dataset_close(dataset *d)
{
	if (!d)
		return;
	for (int s = 0; s < SPLIT_COUNT; s++) {
		for (size_t i = 0; i < d->nshards[s]; i++) {
			shard_close(d->shards[s][i].r);
			free(d->shards[s][i].path);
		}
		free(d->shards[s]);
	}
	free(d->dir);
	free(d);
}

static int get_u64(json_t *obj, const char *key, uint64_t *out, const char *file,
		   const char *path)
{
	long long v;
	int rc = json_get_int(obj, key, &v, file, path);
	if (rc)
		return rc;
	if (v < 0)
		return titan_err(TITAN_EFORMAT, "'%s': %s.%s: expected a non-negative integer",
				 file, path, key);
	*out = (uint64_t)v;
	return 0;
}

static int parse_tok(dataset *d, json_t *m, const char *file)
{
	json_t *t;
	const char *sha, *src = "";
	long long bos = -1, eos = -1;
	uint64_t vocab = 0;
	int rc;
	if ((rc = json_get_obj(m, "tokenizer", &t, file, "$")) ||
	    (rc = json_get_str(t, "sha256", &sha, file, "$.tokenizer")) ||
	    (rc = get_u64(t, "vocab_size", &vocab, file, "$.tokenizer")) ||
	    (rc = json_opt_int(t, "bos", &bos, file, "$.tokenizer")) ||
	    (rc = json_opt_int(t, "eos", &eos, file, "$.tokenizer")) ||
	    (rc = json_get_bool(t, "bos_added", &d->tok.bos_added, file, "$.tokenizer")) ||
	    (rc = json_get_bool(t, "eos_added", &d->tok.eos_added, file, "$.tokenizer")) ||
	    (rc = json_opt_str(t, "source", &src, file, "$.tokenizer")))
		return rc;
	if (vocab == 0 || vocab > UINT32_MAX)
		return titan_err(TITAN_EFORMAT, "'%s': $.tokenizer.vocab_size: out of range", file);
	if (bos < -1 || bos >= (long long)vocab || eos < -1 || eos >= (long long)vocab)
		return titan_err(TITAN_EFORMAT, "'%s': $.tokenizer: bos or eos past the vocab",
				 file);
	snprintf(d->tok.sha256, sizeof d->tok.sha256, "%s", sha);
	snprintf(d->tok.source, sizeof d->tok.source, "%s", src);
	d->tok.vocab_size = (uint32_t)vocab;
	d->tok.bos = bos;
	d->tok.eos = eos;
	return 0;
}

static int parse_shard(dataset *d, int s, size_t i, json_t *j, const char *file)
{
	char where[64];
	snprintf(where, sizeof where, "$.splits.%s.shards[%zu]", split_names[s], i);
	dshard *sh = &d->shards[s][i];
	const char *name, *hex;
	int rc;
	if (!json_is_object(j))
		return titan_err(TITAN_EFORMAT, "'%s': %s: expected an object", file, where);
	if ((rc = json_get_str(j, "file", &name, file, where)) ||
	    (rc = get_u64(j, "tokens", &sh->tokens, file, where)) ||
	    (rc = get_u64(j, "documents", &sh->docs, file, where)) ||
	    (rc = get_u64(j, "bytes", &sh->bytes, file, where)) ||
	    (rc = json_get_str(j, "xxh64", &hex, file, where)))
		return rc;
	/* A shard is a plain name inside the dataset directory. */
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return titan_err(TITAN_EFORMAT, "'%s': %s.file: '%s' is not a file name",
				 file, where, name);
	char *end;
	errno = 0;
	sh->xxh64 = strtoull(hex, &end, 16);
	if (strlen(hex) != 16 || *end || errno)
		return titan_err(TITAN_EFORMAT, "'%s': %s.xxh64: expected 16 hex digits",
				 file, where);
	sh->path = file_path_join(d->dir, name);
	if (!sh->path)
		return titan_err_nomem();
	struct stat st;
	if (stat(sh->path, &st) < 0)
		return titan_err_errno(TITAN_EFORMAT, "cannot open shard '%s'", sh->path);
	if ((uint64_t)st.st_size != sh->bytes)
		return titan_err(TITAN_EFORMAT, "'%s': size %llu, manifest says %llu",
				 sh->path, (unsigned long long)st.st_size,
				 (unsigned long long)sh->bytes);
	sh->tok_base = d->tokens[s];
	sh->doc_base = d->docs[s];
	d->tokens[s] += sh->tokens;
	d->docs[s] += sh->docs;
	return 0;
}

static int parse_split(dataset *d, json_t *splits, int s, const char *file)
{
	char where[32];
	snprintf(where, sizeof where, "$.splits.%s", split_names[s]);
	json_t *sp, *arr;
	uint64_t tokens = 0, docs = 0;
	int rc;
	if ((rc = json_get_obj(splits, split_names[s], &sp, file, "$.splits")) ||
	    (rc = get_u64(sp, "tokens", &tokens, file, where)) ||
	    (rc = get_u64(sp, "documents", &docs, file, where)) ||
	    (rc = json_get_arr(sp, "shards", &arr, file, where)))
		return rc;
	size_t n = json_array_size(arr);
	d->shards[s] = calloc(n ? n : 1, sizeof *d->shards[s]);
	if (!d->shards[s])
		return titan_err_nomem();
	for (size_t i = 0; i < n; i++) {
		d->nshards[s] = i + 1;
		if ((rc = parse_shard(d, s, i, json_array_get(arr, i), file)))
			return rc;
	}
	if (tokens != d->tokens[s] || docs != d->docs[s])
		return titan_err(TITAN_EFORMAT, "'%s': %s: counts do not match its shards",
				 file, where);
	return 0;
}

static int parse_split_params(dataset *d, json_t *m, const char *file)
{
	json_t *sp;
	int rc;
	if ((rc = json_get_obj(m, "split", &sp, file, "$")) ||
	    (rc = get_u64(sp, "seed", &d->seed, file, "$.split")))
		return rc;
	json_t *f = json_object_get(sp, "val_fraction");
	if (!json_is_number(f))
		return titan_err(TITAN_EFORMAT, "'%s': $.split.val_fraction: expected a number",
				 file);
	d->val_fraction = json_number_value(f);
	if (!(d->val_fraction >= 0 && d->val_fraction <= 1))
		return titan_err(TITAN_EFORMAT, "'%s': $.split.val_fraction: out of range [0, 1]",
				 file);
	return 0;
}

static int parse_manifest(dataset *d, json_t *m, const char *file)
{
	const char *format, *dtype;
	long long version;
	uint64_t block_tokens = 0;
	json_t *splits;
	int rc;
	if (!json_is_object(m))
		return titan_err(TITAN_EFORMAT, "'%s': $: expected an object", file);
	if ((rc = json_get_str(m, "format", &format, file, "$")))
		return rc;
	if (strcmp(format, "titan-dataset"))
		return titan_err(TITAN_EFORMAT, "'%s': $.format: '%s' is not titan-dataset",
				 file, format);
	if ((rc = json_get_int(m, "version", &version, file, "$")))
		return rc;
	if (version != DATASET_VERSION)
		return titan_err(TITAN_EFORMAT, "'%s': $.version: unsupported version %lld",
				 file, version);
	if ((rc = json_get_str(m, "dtype", &dtype, file, "$")))
		return rc;
	if (!strcmp(dtype, "u16"))
		d->token_bytes = 2;
	else if (!strcmp(dtype, "u32"))
		d->token_bytes = 4;
	else
		return titan_err(TITAN_EFORMAT, "'%s': $.dtype: '%s' is not u16 or u32",
				 file, dtype);
	if ((rc = get_u64(m, "block_tokens", &block_tokens, file, "$")))
		return rc;
	if (!block_tokens || block_tokens > UINT32_MAX)
		return titan_err(TITAN_EFORMAT, "'%s': $.block_tokens: out of range", file);
	d->block_tokens = (uint32_t)block_tokens;
	if ((rc = parse_tok(d, m, file)) || (rc = parse_split_params(d, m, file)))
		return rc;
	if ((rc = json_get_obj(m, "splits", &splits, file, "$")))
		return rc;
	for (int s = 0; s < SPLIT_COUNT; s++)
		if ((rc = parse_split(d, splits, s, file)))
			return rc;
	return 0;
}

int dataset_open(dataset **out, const char *dir)
{
	*out = NULL;
	dataset *d = calloc(1, sizeof *d);
	if (!d)
		return titan_err_nomem();
	d->dir = strdup(dir);
	char *file = file_path_join(dir, "manifest.json");
	json_t *m = NULL;
	int rc = !d->dir || !file ? titan_err_nomem() : json_load_path(&m, file);
	if (!rc)
		rc = parse_manifest(d, m, file);
	json_decref(m);
	free(file);
	if (rc) {
		dataset_close(d);
		return rc;
	}
	*out = d;
	return 0;
}

const dataset_tokinfo *dataset_tok(const dataset *d)
{
	return &d->tok;
}

int dataset_token_bytes(const dataset *d)
{
	return d->token_bytes;
}

uint64_t dataset_tokens(const dataset *d, int split)
{
	return split >= 0 && split < SPLIT_COUNT ? d->tokens[split] : 0;
}

uint64_t dataset_docs(const dataset *d, int split)
{
	return split >= 0 && split < SPLIT_COUNT ? d->docs[split] : 0;
}

size_t dataset_nshards(const dataset *d, int split)
{
	return split >= 0 && split < SPLIT_COUNT ? d->nshards[split] : 0;
}

const char *dataset_shard_path(const dataset *d, int split, size_t i)
{
	if (split < 0 || split >= SPLIT_COUNT || i >= d->nshards[split])
		return NULL;
	return d->shards[split][i].path;
}

uint32_t dataset_block_tokens(const dataset *d)
{
	return d->block_tokens;
}

void dataset_split_params(const dataset *d, uint64_t *seed, double *val_fraction)
{
	*seed = d->seed;
	*val_fraction = d->val_fraction;
}

/* The opened reader of a shard, checked against the manifest. */
static int reader_of(dshard *sh, int token_bytes, shard_reader **r)
{
	if (!sh->r) {
		int rc = shard_open(&sh->r, sh->path);
		if (rc)
			return rc;
		/* 3- and 4-byte tokens both read back as u32. */
		int dtype_bytes = shard_token_bytes(sh->r) == 2 ? 2 : 4;
		if (shard_tokens(sh->r) != sh->tokens || shard_docs(sh->r) != sh->docs ||
		    dtype_bytes != token_bytes) {
			shard_close(sh->r);
			sh->r = NULL;
			return titan_err(TITAN_EFORMAT, "'%s': counts or dtype do not match "
					 "the manifest", sh->path);
		}
	}
	*r = sh->r;
	return 0;
}

/* The last shard whose base (tok_base or doc_base) is <= x. */
static size_t find_shard(const dshard *v, size_t n, uint64_t x, bool by_doc)
{
	size_t lo = 0, hi = n;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t base = by_doc ? v[mid].doc_base : v[mid].tok_base;
		if (base <= x)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* A valid split, and tokens [pos, pos + n) inside it. */
static int check_range(const dataset *d, int split, uint64_t pos, size_t n)
{
	int rc = check_split(split);
	if (rc)
		return rc;
	uint64_t total = d->tokens[split];
	if (pos > total || n > total - pos)
		return titan_err(TITAN_ERANGE, "'%s': %s: tokens [%llu, +%zu) past the end (%llu)",
				 d->dir, split_names[split], (unsigned long long)pos, n,
				 (unsigned long long)total);
	return 0;
}

int dataset_read(dataset *d, int split, uint64_t pos, size_t n, uint32_t *out)
{
	int rc = check_range(d, split, pos, n);
	if (rc)
		return rc;
	if (!n)
		return 0;
	dshard *v = d->shards[split];
	size_t i = find_shard(v, d->nshards[split], pos, false);
	while (n) {
		/* Skip empty shards (all-empty documents). */
		while (pos - v[i].tok_base >= v[i].tokens)
			i++;
		shard_reader *r;
		if ((rc = reader_of(&v[i], d->token_bytes, &r)))
			return rc;
		uint64_t in = pos - v[i].tok_base;
		size_t take = (size_t)TITAN_MIN((uint64_t)n, v[i].tokens - in);
		if ((rc = shard_read(r, in, take, out)))
			return rc;
		out += take;
		pos += take;
		n -= take;
	}
	return 0;
}

int dataset_doc(dataset *d, int split, uint64_t k, uint64_t *start, uint64_t *len)
{
	int rc = check_split(split);
	if (rc)
		return rc;
	if (k >= d->docs[split])
		return titan_err(TITAN_ERANGE, "'%s': %s: document %llu past the last (%llu)",
				 d->dir, split_names[split], (unsigned long long)k,
				 (unsigned long long)d->docs[split]);
	dshard *v = d->shards[split];
	size_t i = find_shard(v, d->nshards[split], k, true);
	while (k - v[i].doc_base >= v[i].docs)
		i++;
	shard_reader *r;
	if ((rc = reader_of(&v[i], d->token_bytes, &r)))
		return rc;
	const uint64_t *st = shard_doc_starts(r);
	uint64_t j = k - v[i].doc_base;
	uint64_t end = j + 1 < v[i].docs ? st[j + 1] : v[i].tokens;
	*start = v[i].tok_base + st[j];
	*len = end - st[j];
	return 0;
}

int dataset_doc_starts(dataset *d, int split, uint64_t pos, size_t n, titan_u32s *out)
{
	int rc = check_range(d, split, pos, n);
	if (rc)
		return rc;
	if (n > UINT32_MAX)
		return titan_err(TITAN_ERANGE, "'%s': document starts of %zu tokens: at most 2^32",
				 d->dir, n);
	dshard *v = d->shards[split];
	uint64_t end = pos + n;
	bool have_last = false;
	uint32_t last = 0;
	for (size_t i = find_shard(v, d->nshards[split], pos, false);
	     i < d->nshards[split] && v[i].tok_base < end; i++) {
		if (!v[i].docs)
			continue;
		shard_reader *r;
		if ((rc = reader_of(&v[i], d->token_bytes, &r)))
			return rc;
		const uint64_t *st = shard_doc_starts(r);
		uint64_t lo = 0, hi = v[i].docs;
		uint64_t from = pos > v[i].tok_base ? pos - v[i].tok_base : 0;
		while (lo < hi) {  /* first start >= from */
			uint64_t mid = lo + (hi - lo) / 2;
			if (st[mid] < from)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (uint64_t j = lo; j < v[i].docs; j++) {
			uint64_t p = v[i].tok_base + st[j];
			if (p >= end)
				break;
			/* Empty documents share a start: list each position once. */
			uint32_t rel = (uint32_t)(p - pos);
			if (have_last && rel == last)
				continue;
			if ((rc = u32s_push(out, rel)))
				return rc;
			have_last = true;
			last = rel;
		}
	}
	return 0;
}

int dataset_verify(const char *dir)
{
	dataset *d;
	int rc = dataset_open(&d, dir);
	if (rc)
		return rc;
	for (int s = 0; s < SPLIT_COUNT && !rc; s++) {
		for (size_t i = 0; i < d->nshards[s] && !rc; i++) {
			dshard *sh = &d->shards[s][i];
			shard_reader *r;
			/* Block by block first, so damage is named precisely;
			 * the whole-file checksum then catches any byte the
			 * structure does not cover. */
			rc = shard_verify(sh->path);
			if (!rc)
				rc = reader_of(sh, d->token_bytes, &r);
			uint64_t h;
			if (!rc)
				rc = shard_file_xxh64(sh->path, &h);
			if (!rc && h != sh->xxh64)
				rc = titan_err(TITAN_EFORMAT, "'%s': checksum mismatch with "
					       "the manifest", sh->path);
		}
	}
	dataset_close(d);
	return rc;
}
