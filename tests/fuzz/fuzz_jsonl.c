/* fuzz_jsonl.c - libFuzzer target: the JSONL scanner against jansson.
 *
 * The first byte picks a field path, the rest is one line.  The scanner and
 * json_loadb(JSON_ALLOW_NUL) must agree on valid or not, on whether the path
 * names a string, and on its bytes; any difference aborts.  JSONL_UNSURE
 * (the scanner asking for a full parser) agrees with everything. */
#include "core/base.h"

#include <jansson.h>

#include "data/jsonl.h"
#include "../unit/jsonl_reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const text_path[] = { "text" };
static const char *const meta_path[] = { "meta", "body" };
static const char *const empty_path[] = { "" };
static const char *const deep_path[] = { "a", "a", "a" };

static const struct {
	const char *const *path;
	size_t n;
} paths[] = {
	{ text_path, 1 }, { meta_path, 2 }, { empty_path, 1 }, { deep_path, 3 },
};


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *const *path = paths[data[0] % ARRAY_SIZE(paths)].path;
	size_t npath = paths[data[0] % ARRAY_SIZE(paths)].n;
	/* A copy of exactly the line, so that ASan sees any read past it. */
	size_t n = size - 1;
	uint8_t *line = malloc(n ? n : 1);
	if (!line)
		abort();
	memcpy(line, data + 1, n);

	jsonl_scanner s;
	jsonl_init(&s, path, npath);
	const uint8_t *t = NULL;
	size_t tn = 0;
	int got = jsonl_field(&s, line, n, &t, &tn);
	json_t *root;
	const char *rt = NULL;
	size_t rn = 0;
	int want = reference(line, n, path, npath, &root, &rt, &rn);
	if (got < 0)
		abort();
	if (got != JSONL_UNSURE && got != want)
		abort();
	if (got == JSONL_STRING && (tn != rn || (tn && memcmp(t, rt, tn))))
		abort();
	json_decref(root);
	jsonl_free(&s);
	free(line);
	return 0;
}
