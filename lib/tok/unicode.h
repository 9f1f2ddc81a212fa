/* unicode.h - the character classes the pre-tokenizer regexes ask about,
 * from tables generated out of the Unicode Character Database (see
 * mkunicode.py), and strict UTF-8 decoding.
 *
 * Invalid UTF-8 (overlong forms, surrogates, > U+10FFFF, truncated or stray
 * bytes) decodes one byte at a time to UC_INVALID, whose class is 0: to the
 * pre-tokenizer such a byte is "punctuation" (not a letter, number or space).
 * Byte-level BPE then keeps the byte as is, so decode(encode(x)) == x for any
 * bytes x. */
#ifndef TITAN_TOK_UNICODE_H
#define TITAN_TOK_UNICODE_H
#include "core/base.h"

enum {
	UC_L = 1 << 0,       /* \p{L}: Lu Ll Lt Lm Lo */
	UC_N = 1 << 1,       /* \p{N}: Nd Nl No */
	UC_WS = 1 << 2,      /* \s: the White_Space property */
	UC_M = 1 << 3,       /* \p{M}: Mn Mc Me */
	UC_UPPERISH = 1 << 4,/* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] (o200k) */
	UC_LOWERISH = 1 << 5,/* [\p{Ll}\p{Lm}\p{Lo}\p{M}] (o200k) */
};

#define UC_INVALID 0x110000u

/* Class bits of code point cp (0 for UC_INVALID and unassigned points). */
uint8_t uc_class(uint32_t cp);

/* Unicode version the tables were generated from, e.g. "15.0.0". */
const char *uc_version(void);

/* Decode the character at s[0..n), n >= 1.  Returns its length (1..4) and
 * sets *cp; an invalid sequence gives length 1 and UC_INVALID. */
size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);

#endif
