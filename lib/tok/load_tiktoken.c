/* load_tiktoken.c - tiktoken rank files: "<base64 token bytes> <rank>" per
 * line, rank == id, plus a split pattern and special tokens given apart.
 *
 * A rank file has no merge list; tiktoken merges the adjacent pair whose
 * concatenation has the lowest rank.  The equivalent pair table holds, for
 * every token t and every split t = x + y into two tokens, (x, y) -> t at
 * rank(t), so the one merge loop serves both formats. */
#include "core/base.h"

#include <unistd.h>

#include "core/file.h"
#include "core/json.h"
#include "tok/tok_internal.h"

static int b64_value(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decode standard padded base64 s[0..n) onto out; -1 when malformed. */
static int b64_decode(const uint8_t *s, size_t n, titan_bytes *out)
{
	if (!n || n % 4)
		return -1;
	if (bytes_reserve(out, n / 4 * 3))
		return -2;
	for (size_t i = 0; i < n; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			if (s[i + k] == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad)
				return -1;
			v[k] = b64_value(s[i + k]);
			if (v[k] < 0)
				return -1;
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
			     (uint32_t)v[2] << 6 | (uint32_t)v[3];
		out->v[out->n++] = (uint8_t)(w >> 16);
		if (pad < 2)
			out->v[out->n++] = (uint8_t)(w >> 8);
		if (pad < 1)
			out->v[out->n++] = (uint8_t)w;
	}
	return 0;
}

/* A first line that reads "<base64> <digits>". */
static bool looks_like_rank_line(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n && (b64_value((uint8_t)s[i]) >= 0 || s[i] == '='))
		i++;
	if (!i || i >= n || s[i] != ' ')
		return false;
	size_t d = ++i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	return i > d && (i == n || s[i] == '\n' || s[i] == '\r');
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && !strcmp(s + n - k, suffix);
}

bool tok_is_tiktoken(const char *path)
{
	if (has_suffix(path, ".tiktoken"))
		return true;
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return false;
	char line[512];
	size_t n = fread(line, 1, sizeof line, fp);
	fclose(fp);
	const char *nl = memchr(line, '\n', n);
	return looks_like_rank_line(line, nl ? (size_t)(nl - line) : n);
}

/* Copy n bytes of s into buf (size sz) as a string; false if too long. */
static bool copy_str(char *buf, size_t sz, const char *s, size_t n)
{
	if (n >= sz)
		return false;
	memcpy(buf, s, n);
	buf[n] = 0;
	return true;
}

/* "DIR/" and the file's stem (name less ".tiktoken", or less its last
 * extension), for the files that sit beside it. */
static bool split_path(const char *path, char *dir, size_t dsz, char *stem, size_t ssz)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	size_t n = strlen(name);
	if (has_suffix(name, ".tiktoken")) {
		n -= strlen(".tiktoken");
	} else {
		const char *dot = strrchr(name, '.');
		if (dot && dot != name)
			n = (size_t)(dot - name);
	}
	return copy_str(dir, dsz, path, (size_t)(name - path)) && copy_str(stem, ssz, name, n);
}

/* The first of DIR/STEM.SUFFIX and DIR/SUFFIX that exists, into buf. */
static bool beside(const char *dir, const char *stem, const char *suffix, char *buf, size_t n)
{
	int k = snprintf(buf, n, "%s%s.%s", dir, stem, suffix);
	if (k > 0 && (size_t)k < n && !access(buf, R_OK))
		return true;
	size_t dl = strlen(dir), sl = strlen(suffix);
	if (dl + sl >= n)
		return false;
	memcpy(buf, dir, dl);
	memcpy(buf + dl, suffix, sl + 1);
	return !access(buf, R_OK);
}

static int add_special(struct tok_added **added, size_t *n, size_t *cap,
		       const char *s, size_t len, long long id, const char *where)
{
	if (id < 0 || id >= TOK_MAX_ID)
		return titan_err(TITAN_EFORMAT, "%s: special token id %lld is out of range",
				 where, id);
	if (!len)
		return titan_err(TITAN_EFORMAT, "%s: empty special token", where);
	if (*n == *cap) {
		size_t ncap = *cap ? 2 * *cap : 8;
		struct tok_added *p = realloc(*added, ncap * sizeof *p);
		if (!p)
			return titan_err_nomem();
		*added = p;
		*cap = ncap;
	}
	char *c = malloc(len + 1);
	if (!c)
		return titan_err_nomem();
	memcpy(c, s, len);
	c[len] = 0;
	(*added)[(*n)++] = (struct tok_added){ .content = c, .len = len, .id = (uint32_t)id,
					       .special = true };
	return 0;
}

static int read_specials(const tok_load_opts *opts, const char *dir, const char *stem,
			 struct tok_added **added, size_t *n, size_t *cap)
{
	if (opts && opts->nspecials) {
		for (size_t i = 0; i < opts->nspecials; i++) {
			const char *s = opts->specials[i], *eq = strrchr(s, '=');
			char *end;
			long long id = eq ? strtoll(eq + 1, &end, 10) : -1;
			if (!eq || eq == s || !eq[1] || *end)
				return titan_err(TITAN_EUSAGE,
						 "special token '%s': expected TOKEN=ID", s);
			char where[64];
			snprintf(where, sizeof where, "special token %zu", i + 1);
			int rc = add_special(added, n, cap, s, (size_t)(eq - s), id, where);
			if (rc)
				return rc == TITAN_EFORMAT ? TITAN_EUSAGE : rc;
		}
		return 0;
	}
	char file[4096];
	if (!beside(dir, stem, "special_tokens.json", file, sizeof file))
		return 0;
	json_t *j;
	int rc = json_load_path(&j, file);
	if (rc)
		return rc;
	if (!json_is_object(j)) {
		json_decref(j);
		return titan_err(TITAN_EFORMAT, "'%s': $: expected an object of token: id", file);
	}
	const char *key;
	json_t *v;
	json_object_foreach(j, key, v) {
		char where[4200];
		snprintf(where, sizeof where, "'%s': $.%s", file, key);
		if (!json_is_integer(v)) {
			rc = titan_err(TITAN_EFORMAT, "%s: expected an integer", where);
			break;
		}
		rc = add_special(added, n, cap, key, strlen(key), json_integer_value(v), where);
		if (rc)
			break;
	}
	json_decref(j);
	return rc;
}

/* The split pattern: opts->pattern (a name or a regex), else the pattern
 * file beside the rank file.  *owned is set when it was read from a file. */
static int find_pattern(const tok_load_opts *opts, const char *path, const char *dir,
			const char *stem, const char **pattern, titan_bytes *owned)
{
	if (opts && opts->pattern) {
		const char *named = pretok_named_pattern(opts->pattern);
		*pattern = named ? named : opts->pattern;
		return 0;
	}
	char file[4096];
	if (!beside(dir, stem, "pattern.txt", file, sizeof file))
		return titan_err(TITAN_EUSAGE, "'%s' is a tiktoken rank file: give --pattern "
				 "(gpt2, cl100k, llama3, o200k or a regex)", path);
	int rc = file_read_all(file, owned);
	if (!rc)
		rc = bytes_append(owned, "", 1);
	if (rc)
		return rc;
	/* An editor's final newline is not part of the regex. */
	char *s = (char *)owned->v;
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = 0;
	if (!n)
		return titan_err(TITAN_EFORMAT, "'%s': empty pattern", file);
	*pattern = s;
	return 0;
}

/* Every split of every token into two tokens is a merge at the token's
 * rank; visiting ids in order keeps the merge list in rank order. */
static int build_pairs(titan_tok *t, size_t ntoks)
{
	int rc = tok_pairs_init(t, 2 * ntoks);
	for (uint32_t id = 0; id < t->nids && !rc; id++) {
		if (!t->used[id])
			continue;
		const uint8_t *p = t->blob + t->off[id];
		size_t n = t->off[id + 1] - t->off[id];
		if (n < 2 || tok_vocab_find(t, p, n) != id)
			continue;       /* an added token's slot */
		for (size_t k = 1; k < n && !rc; k++) {
			uint32_t x = tok_vocab_find(t, p, k);
			if (x == TOK_NONE)
				continue;
			uint32_t y = tok_vocab_find(t, p + k, n - k);
			if (y != TOK_NONE)
				rc = tok_pair_add(t, x, y, id, id);
		}
	}
	return rc;
}

int tok_load_tiktoken(titan_tok **out, const char *path, const tok_load_opts *opts)
{
	titan_bytes text = {0}, blob = {0}, pat = {0};
	titan_u32s toks = {0};
	struct tok_added *added = NULL;
	size_t nadded = 0, cap = 0;
	titan_tok *t = NULL;
	char dir[4096], stem[1024];
	const char *pattern = NULL;
	if (!split_path(path, dir, sizeof dir, stem, sizeof stem))
		return titan_err(TITAN_EUSAGE, "'%.200s...': path too long", path);

	int rc = file_read_all(path, &text);
	if (rc)
		goto fail;
	const uint8_t *s = text.v, *end = text.v + text.n;
	for (size_t line = 1; s < end && !rc; line++) {
		const uint8_t *nl = memchr(s, '\n', (size_t)(end - s));
		const uint8_t *e = nl ? nl : end;
		const uint8_t *next = nl ? nl + 1 : end;
		if (e > s && e[-1] == '\r')
			e--;
		if (e == s) {
			s = next;
			continue;
		}
		const uint8_t *sp = memchr(s, ' ', (size_t)(e - s));
		if (!sp) {
			rc = titan_err(TITAN_EFORMAT, "'%s': line %zu: expected '<base64> <rank>'",
				       path, line);
			break;
		}
		uint64_t rank = 0;
		const uint8_t *d = sp + 1;
		for (; d < e && *d >= '0' && *d <= '9'; d++)
			if (rank < TOK_MAX_ID)
				rank = rank * 10 + (uint64_t)(*d - '0');
		if (d == sp + 1 || d != e) {
			rc = titan_err(TITAN_EFORMAT, "'%s': line %zu: invalid rank '%.*s'",
				       path, line, (int)TITAN_MIN(e - sp - 1, 40),
				       (const char *)sp + 1);
			break;
		}
		if (rank >= TOK_MAX_ID) {
			rc = titan_err(TITAN_EFORMAT, "'%s': line %zu: rank too large", path, line);
			break;
		}
		size_t off = blob.n;
		int b = b64_decode(s, (size_t)(sp - s), &blob);
		if (b == -2) {
			rc = titan_err_nomem();
			break;
		}
		if (b) {
			rc = titan_err(TITAN_EFORMAT, "'%s': line %zu: invalid base64 '%.*s'",
				       path, line, (int)TITAN_MIN(sp - s, 40), (const char *)s);
			break;
		}
		uint32_t tri[3] = { (uint32_t)rank, (uint32_t)off, (uint32_t)(blob.n - off) };
		rc = u32s_append(&toks, tri, 3);
		s = next;
	}
	if (!rc && !toks.n)
		rc = titan_err(TITAN_EFORMAT, "'%s': no tokens", path);
	if (!rc)
		rc = find_pattern(opts, path, dir, stem, &pattern, &pat);
	if (!rc)
		rc = read_specials(opts, dir, stem, &added, &nadded, &cap);
	if (rc)
		goto fail;
	if (!rc)
		rc = tok_alloc(&t, "tiktoken");
	if (rc)
		goto fail;
	t->ignore_merges = true;
	rc = tok_set_vocab(t, path, "rank file", blob.v, toks.v, toks.n / 3, added, nadded);
	added = NULL;
	if (!rc)
		rc = build_pairs(t, toks.n / 3);
	if (!rc)
		rc = tok_finish(t, pattern, path);
	if (rc)
		goto fail;
	tok_default_bos_eos(t);
	*out = t;
	bytes_free(&text);
	bytes_free(&blob);
	bytes_free(&pat);
	u32s_free(&toks);
	return 0;
fail:
	for (size_t i = 0; added && i < nadded; i++)
		free(added[i].content);
	free(added);
	tok_free(t);
	bytes_free(&text);
	bytes_free(&blob);
	bytes_free(&pat);
	u32s_free(&toks);
	return rc;
}
