/* jsonl_reference.h - the verdict jansson gives on one JSON line and a field
 * path: what the JSON lines scanner must agree with (unit test and fuzzer). */
#ifndef TITAN_TESTS_JSONL_REFERENCE_H
#define TITAN_TESTS_JSONL_REFERENCE_H
#include <jansson.h>
#include "data/jsonl.h"

static int reference(const uint8_t *line, size_t n, const char *const *path, size_t npath,
		     json_t **root, const char **text, size_t *len)
{
	json_error_t err;
	*root = json_loadb((const char *)line, n, JSON_ALLOW_NUL, &err);
	if (!*root)
		return JSONL_INVALID;
	json_t *v = *root;
	for (size_t i = 0; i < npath && v; i++)
		v = json_is_object(v) ? json_object_get(v, path[i]) : NULL;
	if (!v)
		return JSONL_MISSING;
	if (!json_is_string(v))
		return JSONL_NOT_STRING;
	*text = json_string_value(v);
	*len = json_string_length(v);
	return JSONL_STRING;
}

#endif
