/* ingest.c - documents out of files, directories, stdin and archives (see
 * ingest.h).
 *
 * The inputs' bytes come from readahead.h, decompressed and cut into
 * entries, in blocks of 1 MiB, so line and JSONL inputs stream in constant
 * memory whatever their size.
 *
 * JSONL lines go through the scanner of jsonl.h, which validates a line as
 * jansson would and pulls the field out without building a tree.  Only the
 * lines it turns down (invalid, field missing or not a string, or too odd to
 * settle) are parsed again by jansson, so the messages stay jansson's. */
#include "core/base.h"

#include <dirent.h>
#include <jansson.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "data/ingest.h"
#include "data/jsonl.h"
#include "data/readahead.h"

/* The parts a whole-file document comes in (pieces) */
#define INGEST_PART RA_BLOCK

struct ingest {
	ingest_opts opts;
	char *field_path;   /* the dotted field path as given, for messages */
	char **field;       /* the dotted field path, split */
	size_t nfield;

	ra_input *inputs;   /* directories already expanded; paths owned */
	uint64_t *sizes;    /* of regular files; 0 otherwise */
	size_t ninputs, cur_input;
	uint64_t bytes_total, bytes_finished, cur_bytes;
	uint64_t skipped;
	int failed;         /* sticky: once an error is returned, keep it */
	ra_stream *ra;

	/* The entry being read. */
	bool in_entry;
	bool entry_done;    /* whole-file text entry already returned */
	ingest_format format;
	char *source;
	uint64_t line;

	const uint8_t *blk; /* the block read last, until the next */
	size_t blk_pos, blk_len;
	bool data_eof;
	titan_bytes pending; /* a line that spans blocks, or a whole file */
	jsonl_scanner jsonl; /* the fast path for JSONL lines */
	json_t *held;       /* owns the string the last JSONL document points to */
};

static const char *const compress_suffixes[] = {
	".gz", ".zst", ".zstd", ".xz", ".bz2", ".lz4", ".lzma",
};

static bool has_suffix(const char *s, size_t n, const char *suf)
{
	size_t k = strlen(suf);
	return n >= k && strncasecmp(s + n - k, suf, k) == 0;
}

/* The format a name implies once compression suffixes are removed. */
static ingest_format format_of_name(const char *name)
{
	size_t n = strlen(name);
	bool stripped = true;
	while (stripped) {
		stripped = false;
		for (size_t i = 0; i < ARRAY_SIZE(compress_suffixes); i++) {
			if (has_suffix(name, n, compress_suffixes[i])) {
				n -= strlen(compress_suffixes[i]);
				stripped = true;
			}
		}
	}
	if (has_suffix(name, n, ".jsonl") || has_suffix(name, n, ".ndjson") ||
	    has_suffix(name, n, ".json"))
		return INGEST_JSONL;
	return INGEST_TEXT;
}

int ingest_parse_format(const char *s, ingest_format *out)
{
	if (!strcmp(s, "auto"))
		*out = INGEST_AUTO;
	else if (!strcmp(s, "text"))
		*out = INGEST_TEXT;
	else if (!strcmp(s, "jsonl"))
		*out = INGEST_JSONL;
	else
		return titan_err(TITAN_EUSAGE,
				 "unknown format '%s' (expected auto, text or jsonl)", s);
	return 0;
}

static int add_input(ingest *in, size_t *cap, const char *path, bool regular, uint64_t size)
{
	if (in->ninputs == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		void *p = realloc(in->inputs, ncap * sizeof *in->inputs);
		if (!p)
			return titan_err_nomem();
		in->inputs = p;
		if (!(p = realloc(in->sizes, ncap * sizeof *in->sizes)))
			return titan_err_nomem();
		in->sizes = p;
		*cap = ncap;
	}
	char *copy = strdup(path);
	if (!copy)
		return titan_err_nomem();
	in->inputs[in->ninputs] = (ra_input){ copy, regular };
	in->sizes[in->ninputs++] = size;
	in->bytes_total += size;
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The entries of dir that do not start with '.', sorted by strcmp. */
static int list_dir(const char *dir, char ***out, size_t *nout)
{
	DIR *d = opendir(dir);
	if (!d)
		return titan_err_errno(TITAN_EIO, "cannot open directory '%s'", dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	struct dirent *de;
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				rc = titan_err_errno(TITAN_EIO, "cannot read directory '%s'", dir);
			break;
		}
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 32;
			void *p = realloc(names, ncap * sizeof *names);
			if (!p) {
				rc = titan_err_nomem();
				break;
			}
			names = p;
			cap = ncap;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			rc = titan_err_nomem();
			break;
		}
		n++;
	}
	closedir(d);
	if (rc) {
		free_names(names, n);
		return rc;
	}
	qsort(names, n, sizeof *names, cmp_names);
	*out = names;
	*nout = n;
	return 0;
}

/* Add the regular files under dir, depth first in name order.  Symbolic
 * links to files are followed; links to directories are not, so a link
 * cycle cannot make the walk endless. */
static int walk_dir(ingest *in, size_t *cap, const char *dir)
{
	char **names = NULL;
	size_t n = 0;
	int rc = list_dir(dir, &names, &n);
	if (rc)
		return rc;
	size_t dlen = strlen(dir);
	bool slash = dlen && dir[dlen - 1] == '/';
	for (size_t i = 0; i < n && !rc; i++) {
		size_t len = dlen + 1 + strlen(names[i]) + 1;
		char *path = malloc(len);
		if (!path) {
			rc = titan_err_nomem();
			break;
		}
		snprintf(path, len, "%s%s%s", dir, slash ? "" : "/", names[i]);
		struct stat lst, st;
		if (lstat(path, &lst) == 0 && stat(path, &st) == 0) {
			if (S_ISREG(st.st_mode))
				rc = add_input(in, cap, path, true, (uint64_t)st.st_size);
			else if (S_ISDIR(st.st_mode) && !S_ISLNK(lst.st_mode))
				rc = walk_dir(in, cap, path);
		}
		/* A dangling link or an entry gone since readdir: not a file. */
		free(path);
	}
	free_names(names, n);
	return rc;
}

static int split_field(ingest *in, const char *field)
{
	size_t n = 1;
	for (const char *p = field; *p; p++)
		n += *p == '.';
	in->field = calloc(n, sizeof *in->field);
	if (!in->field)
		return titan_err_nomem();
	const char *p = field;
	for (size_t i = 0; i < n; i++) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		in->field[i] = strndup(p, len);
		if (!in->field[i])
			return titan_err_nomem();
		in->nfield = i + 1;
		p = dot ? dot + 1 : p + len;
	}
	return 0;
}

int ingest_open(ingest **out, const char *const *inputs, size_t n, const ingest_opts *opts)
{
	*out = NULL;
	ingest *in = calloc(1, sizeof *in);
	if (!in)
		return titan_err_nomem();
	in->opts = *opts;
	in->opts.field = NULL;
	const char *field = opts->field ? opts->field : "text";
	int rc = 0;
	bool size_known = true;
	size_t cap = 0;

	if (!*field) {
		rc = titan_err(TITAN_EUSAGE, "empty JSONL field path");
		goto fail;
	}
	in->field_path = strdup(field);
	rc = in->field_path ? split_field(in, field) : titan_err_nomem();
	if (rc)
		goto fail;
	jsonl_init(&in->jsonl, (const char *const *)in->field, in->nfield);
	for (size_t i = 0; i < n && !rc; i++) {
		const char *path = inputs[i];
		struct stat st;
		if (!strcmp(path, "-")) {
			size_known = false;
			rc = add_input(in, &cap, path, false, 0);
		} else if (stat(path, &st) != 0) {
			rc = titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
		} else if (S_ISDIR(st.st_mode)) {
			rc = walk_dir(in, &cap, path);
		} else if (access(path, R_OK) != 0) {
			rc = titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
		} else {
			/* A pipe or a device ("<(zcat x)"): read, size unknown. */
			if (!S_ISREG(st.st_mode))
				size_known = false;
			rc = add_input(in, &cap, path, S_ISREG(st.st_mode),
				       S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0);
		}
	}
	if (!rc)
		rc = readahead_open(&in->ra, in->inputs, in->ninputs, opts->readers,
				    opts->read_ahead);
	if (rc)
		goto fail;
	if (!size_known)
		in->bytes_total = 0;
	*out = in;
	return 0;
fail:
	ingest_close(in);
	return rc;
}

/* Start the entry ev announces: a member of an archive, or a plain (or
 * compressed) input named by its path. */
static int begin_entry(ingest *in, const ra_event *ev)
{
	free(in->source);
	if (!(in->source = strdup(ev->source)))
		return titan_err_nomem();
	const char *path = in->inputs[in->cur_input].path;
	in->format = in->opts.format;
	if (in->format == INGEST_AUTO)
		in->format = !ev->member && !strcmp(path, "-") ?
				     INGEST_TEXT : format_of_name(ev->member ? ev->member : path);
	in->in_entry = true;
	in->entry_done = false;
	in->line = 0;
	in->blk = (const uint8_t *)"";
	in->blk_pos = in->blk_len = 0;
	in->data_eof = false;
	in->pending.n = 0;
	return 0;
}

/* The next event of the inputs; 0 after the last. */
static int next_event(ingest *in, ra_event *ev)
{
	int rc = readahead_next(in->ra, ev);
	if (rc <= 0)
		return rc;
	in->cur_bytes = ev->bytes_read;
	if (ev->kind == RA_INPUT_END) {
		/* Whole regular files, so that done reaches total even where
		 * libarchive stops before an archive's trailing padding. */
		uint64_t size = in->sizes[in->cur_input++];
		in->bytes_finished += size ? size : ev->bytes_read;
		in->cur_bytes = 0;
	}
	return 1;
}

/* Move to the next regular-file entry: 1, 0 after the last input, < 0. */
static int next_entry(ingest *in)
{
	ra_event ev;
	int rc;
	while ((rc = next_event(in, &ev)) == 1) {
		if (ev.kind != RA_ENTRY)
			continue;
		if ((rc = begin_entry(in, &ev)))
			return rc;
		return 1;
	}
	return rc;
}

/* Read the next block of entry data: 1, 0 at the end of the entry, < 0. */
static int refill(ingest *in)
{
	if (in->data_eof)
		return 0;
	ra_event ev;
	int rc = next_event(in, &ev);
	/* The block read last went back to the reader with that call. */
	in->blk = (const uint8_t *)"";
	in->blk_pos = in->blk_len = 0;
	if (rc < 0)
		return rc;
	if (rc == 0 || ev.kind != RA_DATA) {
		in->data_eof = true;
		return 0;
	}
	in->blk = ev.data;
	in->blk_len = ev.len;
	return 1;
}

/* The next line of the entry without its "\n": 1, 0 at the end, < 0.
 * *p stays valid until the next call. */
static int read_line(ingest *in, const uint8_t **p, size_t *n)
{
	in->pending.n = 0;
	for (;;) {
		const uint8_t *start = in->blk + in->blk_pos;
		size_t avail = in->blk_len - in->blk_pos;
		const uint8_t *nl = avail ? memchr(start, '\n', avail) : NULL;
		if (nl) {
			size_t len = (size_t)(nl - start);
			in->blk_pos += len + 1;
			in->line++;
			if (!in->pending.n) {
				*p = start;
				*n = len;
				return 1;
			}
			int rc = bytes_append(&in->pending, start, len);
			if (rc)
				return rc;
			*p = in->pending.v;
			*n = in->pending.n;
			return 1;
		}
		int rc = bytes_append(&in->pending, start, avail);
		if (rc)
			return rc;
		in->blk_pos = in->blk_len;
		rc = refill(in);
		if (rc < 0)
			return rc;
		if (rc == 0) {
			if (!in->pending.n)
				return 0;
			/* The last line, without a "\n". */
			in->line++;
			*p = in->pending.v;
			*n = in->pending.n;
			return 1;
		}
	}
}

/* The entry's data in pending, up to its end (0) or, when limit is
 * reached first, a part of limit bytes or more with more to come (1). */
static int read_all(ingest *in, size_t limit)
{
	in->pending.n = 0;
	for (;;) {
		int rc = bytes_append(&in->pending, in->blk + in->blk_pos,
				      in->blk_len - in->blk_pos);
		if (rc)
			return rc;
		in->blk_pos = in->blk_len;
		if (in->pending.n >= limit)
			return 1;
		rc = refill(in);
		if (rc <= 0)
			return rc;
	}
}

static bool blank(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t')
			return false;
	return true;
}

static int bad_line(ingest *in, int code)
{
	if (!in->opts.skip_bad)
		return code;
	in->skipped++;
	return 0;
}

/* Parse one JSONL line into doc: 1, 0 when the line was skipped, < 0.
 * The scanner takes the lines that hold the field as a string; the rest
 * go through jansson, whose verdict and messages are the reference. */
static int jsonl_doc(ingest *in, const uint8_t *p, size_t n, ingest_doc *doc)
{
	const uint8_t *text;
	size_t len;
	int res = jsonl_field(&in->jsonl, p, n, &text, &len);
	if (res < 0)
		return res;
	if (res == JSONL_STRING) {
		doc->text = text;
		doc->len = len;
		return 1;
	}

	json_error_t jerr;
	json_t *root = json_loadb((const char *)p, n, JSON_ALLOW_NUL, &jerr);
	if (!root)
		return bad_line(in, titan_err(TITAN_EFORMAT, "%s:%llu: invalid JSON: %s (column %d)",
					      in->source, (unsigned long long)in->line,
					      jerr.text, jerr.column));
	json_t *v = root;
	for (size_t i = 0; i < in->nfield && v; i++)
		v = json_is_object(v) ? json_object_get(v, in->field[i]) : NULL;
	const char *field = in->field_path;
	int rc = 0;
	if (!v)
		rc = titan_err(TITAN_EFORMAT, "%s:%llu: field '%s' is missing", in->source,
			       (unsigned long long)in->line, field);
	else if (!json_is_string(v))
		rc = titan_err(TITAN_EFORMAT, "%s:%llu: field '%s' is not a string", in->source,
			       (unsigned long long)in->line, field);
	if (rc) {
		json_decref(root);
		return bad_line(in, rc);
	}
	in->held = root;
	doc->text = (const uint8_t *)json_string_value(v);
	doc->len = json_string_length(v);
	return 1;
}

/* The next document of the current entry: 1, 0 at its end, < 0. */
static int entry_doc(ingest *in, ingest_doc *doc)
{
	const uint8_t *p = NULL;
	size_t n = 0;
	int rc;

	doc->source = in->source;
	doc->more = false;
	if (in->format == INGEST_TEXT && !in->opts.lines) {
		if (in->entry_done)
			return 0;
		rc = read_all(in, in->opts.pieces ? INGEST_PART : SIZE_MAX);
		if (rc < 0)
			return rc;
		doc->more = rc == 1;
		in->entry_done = !doc->more;
		doc->text = in->pending.v ? in->pending.v : (const uint8_t *)"";
		doc->len = in->pending.n;
		doc->line = 0;
		return 1;
	}
	for (;;) {
		rc = read_line(in, &p, &n);
		if (rc <= 0)
			return rc;
		doc->line = in->line;
		if (in->format == INGEST_TEXT) {
			/* Only the "\n" goes: a "\r" stays, so that joining
			 * the lines with "\n" gives back the input exactly. */
			doc->text = n ? p : (const uint8_t *)"";
			doc->len = n;
			return 1;
		}
		if (n && p[n - 1] == '\r')
			n--;
		if (blank(p, n))
			continue;
		rc = jsonl_doc(in, p, n, doc);
		if (rc)
			return rc;
	}
}

int ingest_next(ingest *in, ingest_doc *doc)
{
	if (in->failed)
		return in->failed;
	if (in->held) {
		json_decref(in->held);
		in->held = NULL;
	}
	int rc;
	for (;;) {
		if (!in->in_entry && (rc = next_entry(in)) <= 0)
			break;
		rc = entry_doc(in, doc);
		if (rc)
			break;
		in->in_entry = false;
	}
	if (rc < 0)
		in->failed = rc;
	return rc;
}

uint64_t ingest_skipped(const ingest *in)
{
	return in->skipped;
}

uint64_t ingest_bytes_done(const ingest *in)
{
	return in->bytes_finished + in->cur_bytes;
}

uint64_t ingest_bytes_total(const ingest *in)
{
	return in->bytes_total;
}

void ingest_close(ingest *in)
{
	if (!in)
		return;
	readahead_close(in->ra);
	json_decref(in->held);
	jsonl_free(&in->jsonl);
	for (size_t i = 0; i < in->ninputs; i++)
		free((char *)in->inputs[i].path);
	free(in->inputs);
	free(in->sizes);
	for (size_t i = 0; i < in->nfield; i++)
		free(in->field[i]);
	free(in->field);
	free(in->field_path);
	free(in->source);
	bytes_free(&in->pending);
	free(in);
}
