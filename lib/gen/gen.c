/* gen.c - the completion text: UTF-8 holdback and stop strings. */
#include "core/base.h"

#include "gen/gen.h"

size_t gen_utf8_incomplete(const uint8_t *p, size_t n)
{
	for (size_t i = 1; i <= 3 && i <= n; i++) {
		uint8_t b = p[n - i];
		size_t need;

		if ((b & 0xc0) == 0x80)
			continue;  /* a continuation byte: look further back */
		if (b < 0xc0)
			return 0;  /* ASCII ends the text cleanly */
		need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
		return need > i ? i : 0;
	}
	return 0;  /* stray continuation bytes: nothing will complete them */
}

void gen_stream_init(gen_stream *s, const char *const *stops, size_t nstops)
{
	*s = (gen_stream){ .stops = stops, .nstops = stops ? nstops : 0 };
}

void gen_stream_free(gen_stream *s)
{
	bytes_free(&s->text);
	s->shown = 0;
}

/* Longest k < len(stop) such that the text ends with the first k bytes of
 * stop: what might still become the stop string. */
static size_t partial_stop(const titan_bytes *t, const char *stop)
{
	size_t len = strlen(stop);

	for (size_t k = TITAN_MIN(len - 1, t->n); k > 0; k--)
		if (!memcmp(t->v + t->n - k, stop, k))
			return k;
	return 0;
}

int gen_stream_push(gen_stream *s, const void *p, size_t len, const char **out, size_t *n)
{
	size_t before = s->text.n, hold, cut = SIZE_MAX;
	int rc;

	*out = "";
	*n = 0;
	if (s->stopped)
		return 1;
	if ((rc = bytes_append(&s->text, p, len)))
		return rc;
	for (size_t i = 0; i < s->nstops; i++) {
		size_t sl = strlen(s->stops[i]), from;
		const uint8_t *hit;

		if (!sl)
			continue;
		/* a match ending before the new bytes was found earlier */
		from = before > sl - 1 ? before - (sl - 1) : 0;
		hit = memmem(s->text.v + from, s->text.n - from, s->stops[i], sl);
		if (hit && (size_t)(hit - s->text.v) < cut)
			cut = (size_t)(hit - s->text.v);
	}
	*out = (const char *)s->text.v + s->shown;
	if (cut != SIZE_MAX) {
		s->text.n = cut;
		s->stopped = true;
		*n = cut > s->shown ? cut - s->shown : 0;
		s->shown = TITAN_MAX(s->shown, cut);
		return 1;
	}
	hold = gen_utf8_incomplete(s->text.v, s->text.n);
	for (size_t i = 0; i < s->nstops; i++)
		if (*s->stops[i])
			hold = TITAN_MAX(hold, partial_stop(&s->text, s->stops[i]));
	if (s->text.n - hold > s->shown) {
		*n = s->text.n - hold - s->shown;
		s->shown += *n;
	}
	return 0;
}

void gen_stream_finish(gen_stream *s, const char **out, size_t *n)
{
	*out = s->text.v ? (const char *)s->text.v + s->shown : "";
	*n = s->text.n > s->shown ? s->text.n - s->shown : 0;
	s->shown = s->text.n;
}

/* Bytes of the UTF-8 sequence at p[0..n): its length when it is valid
 * (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF), else
 * minus the length of its longest valid start (at least 1), the span that
 * one U+FFFD replaces (Unicode's "maximal subpart" practice, which Python
 * and browsers follow). */
static long utf8_seq(const uint8_t *p, size_t n)
{
	uint8_t b = p[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (b < 0x80)
		return 1;
	if (b < 0xc2 || b > 0xf4)
		return -1;
	len = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
	/* the second byte's range rules out overlongs, surrogates and
	 * code points past U+10FFFF */
	if (b == 0xe0)
		lo = 0xa0;
	else if (b == 0xed)
		hi = 0x9f;
	else if (b == 0xf0)
		lo = 0x90;
	else if (b == 0xf4)
		hi = 0x8f;
	for (size_t i = 1; i < len; i++) {
		if (i >= n || p[i] < lo || p[i] > hi)
			return -(long)i;
		lo = 0x80;
		hi = 0xbf;
	}
	return (long)len;
}

int gen_utf8_sanitize(const void *p, size_t n, titan_bytes *out)
{
	const uint8_t *s = p;
	size_t i = 0;
	int rc;

	while (i < n) {
		long len = utf8_seq(s + i, n - i);

		if (len > 0)
			rc = bytes_append(out, s + i, (size_t)len);
		else
			rc = bytes_append(out, "\xef\xbf\xbd", 3);
		if (rc)
			return rc;
		i += (size_t)(len > 0 ? len : -len);
	}
	return 0;
}
