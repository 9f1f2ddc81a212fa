/* json.h - jansson helpers that turn JSON mistakes into clear messages.
 *
 * Lookups name the file and the JSON path of the offending value:
 *   "'tokenizer.json': $.model.type: expected a string"
 * The functions take the path so far (a string like "$.model") and the
 * file name only for the message. */
#ifndef TITAN_CORE_JSON_H
#define TITAN_CORE_JSON_H
#include <jansson.h>
#include "core/base.h"

/* Parse a whole buffer; on error the message is "'FILE': line L column C: TEXT". */
int json_parse_buf(json_t **out, const void *buf, size_t n, const char *file);
/* Read and parse FILE. */
int json_load_path(json_t **out, const char *file);

/* Required members: error names file and "$path.key" when missing or of the
 * wrong type.  *out is borrowed from obj. */
int json_get_obj(json_t *obj, const char *key, json_t **out, const char *file, const char *path);
int json_get_arr(json_t *obj, const char *key, json_t **out, const char *file, const char *path);
int json_get_str(json_t *obj, const char *key, const char **out, const char *file, const char *path);
int json_get_int(json_t *obj, const char *key, long long *out, const char *file, const char *path);
int json_get_bool(json_t *obj, const char *key, bool *out, const char *file, const char *path);
/* Optional members: missing or null leaves *out untouched and returns 0;
 * present with the wrong type is an error. */
int json_opt_str(json_t *obj, const char *key, const char **out, const char *file, const char *path);
int json_opt_int(json_t *obj, const char *key, long long *out, const char *file, const char *path);
int json_opt_bool(json_t *obj, const char *key, bool *out, const char *file, const char *path);

/* Serialize with sorted keys and 2-space indent, then write atomically. */
int json_write_path(const json_t *j, const char *file);

#endif
