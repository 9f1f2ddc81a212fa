/* jsonl.h - one string field out of one JSON line, without building a tree.
 *
 * The scanner validates the whole line in one pass the way jansson's
 * json_loadb(JSON_ALLOW_NUL) does: strict JSON (RFC 8259) with a top-level
 * object or array, strict UTF-8 everywhere, integers that fit int64_t, reals
 * that do not overflow a double, at most 2048 levels of values, no "\u0000"
 * in keys.  It follows the dotted field path through nested objects, taking
 * the last of duplicate keys as jansson does, and decodes the string found
 * there.  Whatever jansson would accept, it accepts, with the same string;
 * whatever jansson rejects, it rejects.  A few rare cases it cannot settle
 * cheaply (a real within a factor of ten of DBL_MAX) it leaves to a full
 * parser with JSONL_UNSURE.  It makes no error messages: a caller that needs
 * one parses the line again with jansson. */
#ifndef TITAN_DATA_JSONL_H
#define TITAN_DATA_JSONL_H
#include "core/base.h"
#include "core/buf.h"

enum jsonl_result {
	JSONL_STRING = 1,     /* valid; the path names a string */
	JSONL_INVALID,        /* not valid JSON (jansson rejects it) */
	JSONL_MISSING,        /* valid; nothing at the path */
	JSONL_NOT_STRING,     /* valid; the value at the path is not a string */
	JSONL_UNSURE,         /* ask a full parser */
};

typedef struct jsonl_scanner {
	const char *const *path;  /* the field path, split at the dots */
	size_t npath;
	titan_bytes text;         /* the decoded field when it had escapes */
	titan_bytes key;          /* a key with escapes, decoded */
} jsonl_scanner;

/* path (npath >= 1 names) must outlive the scanner. */
void jsonl_init(jsonl_scanner *s, const char *const *path, size_t npath);
void jsonl_free(jsonl_scanner *s);

/* Scan line[0..n): a jsonl_result, or < 0 when memory ran out.  On
 * JSONL_STRING, *text and *len are the string's bytes, which point into line
 * or into the scanner and stay valid until the next call or line changes. */
int jsonl_field(jsonl_scanner *s, const uint8_t *line, size_t n,
		const uint8_t **text, size_t *len);

#endif
