/* test_sample.c - sampling (greedy, temperature, top-k, top-p) against the
 * distributions it should draw from, its determinism, log-probabilities,
 * and the text stream: UTF-8 holdback and stop strings. */
#include "core/base.h"

#include <math.h>

#include "check.h"
#include "gen/gen.h"
#include "gen/sample.h"

enum { DRAWS = 40000 };

/* Frequencies of DRAWS samples. */
static void histogram(const gen_sampling *p, const float *logits, int V, double *freq)
{
	gen_sampler *s;
	titan_rng r;

	memset(freq, 0, (size_t)V * sizeof *freq);
	if (gen_sampler_new(&s, p, V))
		return;
	rng_seed(&r, 1, 0);
	for (int i = 0; i < DRAWS; i++)
		freq[gen_sample(s, logits, &r)] += 1.0 / DRAWS;
	gen_sampler_free(s);
}

/* Probabilities 0.5, 0.3, 0.15, 0.05 as logits. */
static void four(float *l)
{
	const double p[4] = { 0.5, 0.3, 0.15, 0.05 };

	for (int i = 0; i < 4; i++)
		l[i] = (float)log(p[i]) + 3.0f;
}

static void test_rng(void)
{
	titan_rng a, b, c;
	bool differ = false;

	rng_seed(&a, 42, 0);
	rng_seed(&b, 42, 0);
	rng_seed(&c, 42, 1);
	for (int i = 0; i < 100; i++) {
		uint64_t x = rng_next(&a), y = rng_next(&b), z = rng_next(&c);

		CHECK(x == y, "same seed and stream, draw %d", i);
		differ |= x != z;
	}
	CHECK(differ, "streams 0 and 1 gave the same draws");
	for (int i = 0; i < 1000; i++) {
		double u = rng_unit(&a);

		REQUIRE(u >= 0 && u < 1, "unit %g", u);
	}
}

static void test_greedy(void)
{
	const float l[5] = { 1, 3, -2, 3, 0 };
	gen_sampling p = { .temperature = 0, .top_k = 0, .top_p = 1 };
	gen_sampler *s;
	titan_rng r;

	CHECK(gen_argmax(l, 5) == 1, "argmax %u: the lowest id wins a tie", gen_argmax(l, 5));
	REQUIRE(!gen_sampler_new(&s, &p, 5), "%s", titan_errmsg());
	rng_seed(&r, 0, 0);
	for (int i = 0; i < 10; i++)
		CHECK(gen_sample(s, l, &r) == 1, "greedy");
	gen_sampler_free(s);
	/* top-k 1 is greedy at any temperature */
	p = (gen_sampling){ .temperature = 5, .top_k = 1, .top_p = 1 };
	REQUIRE(!gen_sampler_new(&s, &p, 5), "%s", titan_errmsg());
	for (int i = 0; i < 100; i++)
		CHECK(gen_sample(s, l, &r) == 1, "top-k 1");
	gen_sampler_free(s);
}

static void test_temperature(void)
{
	float l[4];
	double f[4], want[4], z = 0;
	gen_sampling p = { .temperature = 1, .top_k = 0, .top_p = 1 };

	four(l);
	histogram(&p, l, 4, f);
	CHECK(fabs(f[0] - 0.5) < 0.01 && fabs(f[1] - 0.3) < 0.01 && fabs(f[2] - 0.15) < 0.01 &&
	      fabs(f[3] - 0.05) < 0.01, "T=1: %g %g %g %g", f[0], f[1], f[2], f[3]);
	/* T = 0.5 squares the probabilities */
	p.temperature = 0.5;
	for (int i = 0; i < 4; i++)
		z += want[i] = exp(2.0 * l[i]);
	histogram(&p, l, 4, f);
	for (int i = 0; i < 4; i++)
		CHECK(fabs(f[i] - want[i] / z) < 0.01, "T=0.5, token %d: %g vs %g", i, f[i],
		      want[i] / z);
}

static void test_top_k_top_p(void)
{
	float l[4];
	double f[4];
	gen_sampling p = { .temperature = 1, .top_k = 2, .top_p = 1 };

	four(l);
	histogram(&p, l, 4, f);
	CHECK(f[2] == 0 && f[3] == 0, "top-k 2 drew %g %g", f[2], f[3]);
	CHECK(fabs(f[0] - 0.625) < 0.01, "top-k 2: %g vs 0.625", f[0]);
	/* 0.5 + 0.3 reach 0.75: the nucleus is the first two */
	p = (gen_sampling){ .temperature = 1, .top_k = 0, .top_p = 0.75 };
	histogram(&p, l, 4, f);
	CHECK(f[2] == 0 && f[3] == 0, "top-p 0.75 drew %g %g", f[2], f[3]);
	CHECK(fabs(f[0] - 0.625) < 0.01, "top-p 0.75: %g vs 0.625", f[0]);
	/* 0.9: three tokens */
	p.top_p = 0.9;
	histogram(&p, l, 4, f);
	CHECK(f[3] == 0 && f[2] > 0.1, "top-p 0.9: %g %g", f[2], f[3]);
	CHECK(fabs(f[0] - 0.5 / 0.95) < 0.01, "top-p 0.9: %g vs %g", f[0], 0.5 / 0.95);
	/* top-k, then top-p over what top-k kept: 0.5/0.8 > 0.6 */
	p = (gen_sampling){ .temperature = 1, .top_k = 2, .top_p = 0.6 };
	histogram(&p, l, 4, f);
	CHECK(f[1] == 0 && f[0] > 0.9999, "top-k 2 then top-p 0.6: %g", f[0]);
}

/* A large vocabulary: the same seed gives the same tokens, another seed
 * other ones, and top-k never leaves the k best. */
static void test_deterministic(void)
{
	enum { V = 5000, N = 200 };
	float *l = malloc(V * sizeof *l);
	gen_sampling p = { .temperature = 0.9, .top_k = 50, .top_p = 0.9 };
	uint32_t a[N], b[N], c[N];
	gen_sampler *s;
	titan_rng r;
	int same = 0;

	REQUIRE(l, "out of memory");
	for (int i = 0; i < V; i++)
		l[i] = (float)sin(i * 0.37) * 4;
	REQUIRE(!gen_sampler_new(&s, &p, V), "%s", titan_errmsg());
	rng_seed(&r, 7, 3);
	for (int i = 0; i < N; i++)
		a[i] = gen_sample(s, l, &r);
	rng_seed(&r, 7, 3);
	for (int i = 0; i < N; i++)
		b[i] = gen_sample(s, l, &r);
	rng_seed(&r, 8, 3);
	for (int i = 0; i < N; i++)
		c[i] = gen_sample(s, l, &r);
	CHECK(!memcmp(a, b, sizeof a), "same seed, other tokens");
	for (int i = 0; i < N; i++)
		same += a[i] == c[i];
	CHECK(same < N, "seeds 7 and 8 drew the same %d tokens", N);
	for (int i = 0; i < N; i++) {
		int above = 0;

		for (int j = 0; j < V; j++)
			above += l[j] > l[a[i]];
		CHECK(above < 50, "token %u has %d better ones", a[i], above);
	}
	gen_sampler_free(s);
	free(l);
}

static void test_logprob_and_checks(void)
{
	const float l[3] = { 1000, 1001, 999 };
	double z = exp(-1) + 1 + exp(-2);
	gen_sampling bad[] = {
		{ .temperature = -1, .top_p = 1 },
		{ .temperature = NAN, .top_p = 1 },
		{ .temperature = 1, .top_k = -3, .top_p = 1 },
		{ .temperature = 1, .top_p = 0 },
		{ .temperature = 1, .top_p = 1.5 },
	};
	const char *opt[] = { "--temperature", "--temperature", "--top-k", "--top-p", "--top-p" };

	/* large logits: no overflow */
	CHECK(fabs(gen_logprob(l, 3, 1) - (-log(z))) < 1e-12, "%.15g", gen_logprob(l, 3, 1));
	CHECK(fabs(gen_logprob(l, 3, 2) - (-2 - log(z))) < 1e-12, "%.15g", gen_logprob(l, 3, 2));
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		CHECK(gen_sampling_check(&bad[i]) == TITAN_EUSAGE, "case %zu", i);
		CHECK(strstr(titan_errmsg(), opt[i]), "case %zu: %s", i, titan_errmsg());
	}
}

/* Push the parts one by one; what was shown, concatenated. */
static int feed(gen_stream *s, const char *const *parts, int n, char *shown, size_t cap)
{
	size_t at = 0;
	int stop = 0;

	shown[0] = 0;
	for (int i = 0; i < n && !stop; i++) {
		const char *out;
		size_t len;

		stop = gen_stream_push(s, parts[i], strlen(parts[i]), &out, &len);
		if (stop < 0 || at + len >= cap)
			return -1;
		memcpy(shown + at, out, len);
		at += len;
	}
	if (!stop) {
		const char *out;
		size_t len;

		gen_stream_finish(s, &out, &len);
		if (at + len >= cap)
			return -1;
		memcpy(shown + at, out, len);
		at += len;
	}
	shown[at] = 0;
	return stop;
}

static void test_utf8_holdback(void)
{
	gen_stream s;
	const char *out;
	size_t n;
	char shown[64];
	/* "é" (C3 A9) and "😀" (F0 9F 98 80) cut between tokens */
	const char *parts[] = { "caf\xc3", "\xa9 ", "\xf0\x9f", "\x98", "\x80!" };

	CHECK(gen_utf8_incomplete((const uint8_t *)"ab\xc3", 3) == 1, "2-byte lead");
	CHECK(gen_utf8_incomplete((const uint8_t *)"\xe2\x82", 2) == 2, "3-byte, 2 in");
	CHECK(gen_utf8_incomplete((const uint8_t *)"\xe2\x82\xac", 3) == 0, "complete");
	CHECK(gen_utf8_incomplete((const uint8_t *)"\xf0\x9f\x98", 3) == 3, "4-byte, 3 in");
	CHECK(gen_utf8_incomplete((const uint8_t *)"\x80\x80\x80", 3) == 0, "stray");

	gen_stream_init(&s, NULL, 0);
	REQUIRE(gen_stream_push(&s, parts[0], strlen(parts[0]), &out, &n) == 0, "push");
	CHECK(n == 3 && !memcmp(out, "caf", 3), "shown %zu bytes", n);
	REQUIRE(gen_stream_push(&s, parts[1], strlen(parts[1]), &out, &n) == 0, "push");
	CHECK(n == 3 && !memcmp(out, "\xc3\xa9 ", 3), "the whole character: %zu bytes", n);
	REQUIRE(gen_stream_push(&s, parts[2], strlen(parts[2]), &out, &n) == 0, "push");
	CHECK(n == 0, "half an emoji shown: %zu bytes", n);
	REQUIRE(gen_stream_push(&s, parts[3], strlen(parts[3]), &out, &n) == 0, "push");
	CHECK(n == 0, "three quarters shown: %zu bytes", n);
	REQUIRE(gen_stream_push(&s, parts[4], strlen(parts[4]), &out, &n) == 0, "push");
	CHECK(n == 5 && !memcmp(out, "\xf0\x9f\x98\x80!", 5), "emoji: %zu bytes", n);
	gen_stream_free(&s);

	/* an incomplete sequence at the very end is shown as it is */
	gen_stream_init(&s, NULL, 0);
	CHECK(feed(&s, (const char *[]){ "ab\xe2\x82" }, 1, shown, sizeof shown) == 0, "feed");
	CHECK(!strcmp(shown, "ab\xe2\x82"), "'%s'", shown);
	gen_stream_free(&s);
}

static void test_stop_strings(void)
{
	const char *stops[] = { "END", "", "\n\n" };
	gen_stream s;
	char shown[64];

	gen_stream_init(&s, stops, 3);
	CHECK(feed(&s, (const char *[]){ "abcE", "N", "Dxyz", "more" }, 4, shown,
		   sizeof shown) == 1, "stopped");
	CHECK(!strcmp(shown, "abc"), "shown '%s'", shown);
	CHECK(s.text.n == 3 && s.stopped, "text %zu bytes", s.text.n);
	gen_stream_free(&s);

	/* a prefix that does not become the stop string is shown after all */
	gen_stream_init(&s, stops, 3);
	CHECK(feed(&s, (const char *[]){ "xEN", "Q", "\n" }, 3, shown, sizeof shown) == 0,
	      "not stopped");
	CHECK(!strcmp(shown, "xENQ\n"), "shown '%s'", shown);
	gen_stream_free(&s);

	/* the stop string inside one token; the earliest of two wins */
	gen_stream_init(&s, stops, 3);
	CHECK(feed(&s, (const char *[]){ "one\n\ntwo END" }, 1, shown, sizeof shown) == 1,
	      "stopped");
	CHECK(!strcmp(shown, "one"), "shown '%s'", shown);
	gen_stream_free(&s);
}

static void test_sanitize(void)
{
	titan_bytes b = {0};

	REQUIRE(!gen_utf8_sanitize("a\xc3\xa9\xff" "b\xc3", 6, &b), "%s", titan_errmsg());
	CHECK(b.n == 10 && !memcmp(b.v, "a\xc3\xa9\xef\xbf\xbd" "b\xef\xbf\xbd", 10),
	      "%zu bytes", b.n);
	b.n = 0;
	/* an overlong '/' and a surrogate: one U+FFFD a byte; a cut
	 * 3-byte sequence: one for both bytes */
	REQUIRE(!gen_utf8_sanitize("\xc0\xaf\xed\xa0\x80", 5, &b), "%s", titan_errmsg());
	CHECK(b.n == 15, "%zu bytes", b.n);
	b.n = 0;
	REQUIRE(!gen_utf8_sanitize("\xe2\x82" "A\xf4\x90", 5, &b), "%s", titan_errmsg());
	CHECK(b.n == 10 && !memcmp(b.v, "\xef\xbf\xbd" "A\xef\xbf\xbd\xef\xbf\xbd", 10),
	      "%zu bytes", b.n);
	bytes_free(&b);
}

int main(void)
{
	RUN(test_rng);
	RUN(test_greedy);
	RUN(test_temperature);
	RUN(test_top_k_top_p);
	RUN(test_deterministic);
	RUN(test_logprob_and_checks);
	RUN(test_utf8_holdback);
	RUN(test_stop_strings);
	RUN(test_sanitize);
	return check_done();
}
