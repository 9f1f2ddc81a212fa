/* json.c - jansson helpers with messages that name the file and JSON path. */
#include "core/base.h"
#include "core/file.h"
#include "core/json.h"

int json_parse_buf(json_t **out, const void *buf, size_t n, const char *file)
{
	json_error_t jerr;
	json_t *j = json_loadb(buf, n, JSON_ALLOW_NUL, &jerr);
	if (!j)
		return titan_err(TITAN_EFORMAT, "'%s': line %d column %d: %s", file,
				 jerr.line, jerr.column, jerr.text);
	*out = j;
	return 0;
}

int json_load_path(json_t **out, const char *file)
{
	titan_bytes b = {0};
	int rc = file_read_all(file, &b);
	if (!rc)
		rc = json_parse_buf(out, b.v ? (const void *)b.v : "", b.n, file);
	bytes_free(&b);
	return rc;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a real number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "an unknown value";
}

/* Find key in obj.  required: a missing key (or a non-object obj) is an
 * error; otherwise a missing or null member yields *v == NULL. */
static int member(json_t *obj, const char *key, json_t **v, bool required,
		  const char *file, const char *path)
{
	if (!path)
		path = "$";
	if (!json_is_object(obj))
		return titan_err(TITAN_EFORMAT, "'%s': %s: expected an object, got %s",
				 file, path, obj ? type_name(obj) : "nothing");
	json_t *m = json_object_get(obj, key);
	if (!m && required)
		return titan_err(TITAN_EFORMAT, "'%s': %s: missing key '%s'", file,
				 path, key);
	if (m && json_is_null(m) && !required)
		m = NULL;
	*v = m;
	return 0;
}

static int wrong_type(const json_t *v, const char *want, const char *key,
		      const char *file, const char *path)
{
	return titan_err(TITAN_EFORMAT, "'%s': %s.%s: expected %s, got %s", file,
			 path ? path : "$", key, want, type_name(v));
}

int json_get_obj(json_t *obj, const char *key, json_t **out, const char *file,
		 const char *path)
{
	json_t *v;
	int rc = member(obj, key, &v, true, file, path);
	if (rc)
		return rc;
	if (!json_is_object(v))
		return wrong_type(v, "an object", key, file, path);
	*out = v;
	return 0;
}

int json_get_arr(json_t *obj, const char *key, json_t **out, const char *file,
		 const char *path)
{
	json_t *v;
	int rc = member(obj, key, &v, true, file, path);
	if (rc)
		return rc;
	if (!json_is_array(v))
		return wrong_type(v, "an array", key, file, path);
	*out = v;
	return 0;
}

static int get_str(json_t *obj, const char *key, const char **out, bool required,
		   const char *file, const char *path)
{
	json_t *v;
	int rc = member(obj, key, &v, required, file, path);
	if (rc || !v)
		return rc;
	if (!json_is_string(v))
		return wrong_type(v, "a string", key, file, path);
	*out = json_string_value(v);
	return 0;
}

static int get_int(json_t *obj, const char *key, long long *out, bool required,
		   const char *file, const char *path)
{
	json_t *v;
	int rc = member(obj, key, &v, required, file, path);
	if (rc || !v)
		return rc;
	if (!json_is_integer(v))
		return wrong_type(v, "an integer", key, file, path);
	*out = (long long)json_integer_value(v);
	return 0;
}

static int get_bool(json_t *obj, const char *key, bool *out, bool required,
		    const char *file, const char *path)
{
	json_t *v;
	int rc = member(obj, key, &v, required, file, path);
	if (rc || !v)
		return rc;
	if (!json_is_boolean(v))
		return wrong_type(v, "a boolean", key, file, path);
	*out = json_is_true(v);
	return 0;
}

int json_get_str(json_t *obj, const char *key, const char **out, const char *file,
		 const char *path)
{
	return get_str(obj, key, out, true, file, path);
}

int json_get_int(json_t *obj, const char *key, long long *out, const char *file,
		 const char *path)
{
	return get_int(obj, key, out, true, file, path);
}

int json_get_bool(json_t *obj, const char *key, bool *out, const char *file,
		  const char *path)
{
	return get_bool(obj, key, out, true, file, path);
}

int json_opt_str(json_t *obj, const char *key, const char **out, const char *file,
		 const char *path)
{
	return get_str(obj, key, out, false, file, path);
}

int json_opt_int(json_t *obj, const char *key, long long *out, const char *file,
		 const char *path)
{
	return get_int(obj, key, out, false, file, path);
}

int json_opt_bool(json_t *obj, const char *key, bool *out, const char *file,
		  const char *path)
{
	return get_bool(obj, key, out, false, file, path);
}

int json_write_path(const json_t *j, const char *file)
{
	char *s = json_dumps(j, JSON_SORT_KEYS | JSON_INDENT(2) | JSON_ENCODE_ANY);
	if (!s)
		return titan_err(TITAN_ENOMEM, "'%s': cannot serialize JSON", file);
	size_t n = strlen(s);
	char *text = realloc(s, n + 2);
	if (!text) {
		free(s);
		return titan_err_nomem();
	}
	text[n] = '\n';
	text[n + 1] = '\0';
	int rc = atomic_write_file(file, text, n + 1);
	free(text);
	return rc;
}
