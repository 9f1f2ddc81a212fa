/* check.h - the unit tests' assert header: TAP output that tests/run.sh counts.
 *
 *   static void test_roundtrip(void) { CHECK(x == y, "x=%d y=%d", x, y); }
 *   int main(void) { RUN(test_roundtrip); return check_done(); }
 *
 * CHECK records a failure and goes on; REQUIRE also returns from the test.
 * SKIP("why") marks the running test skipped (data absent, ...). */
#ifndef TITAN_TESTS_CHECK_H
#define TITAN_TESTS_CHECK_H
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct check_state {
	int run, failed, cur_failed, cur_skipped;
	char skip_reason[256];
};
static struct check_state check_st;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			check_st.cur_failed++;                                  \
			printf("#   %s:%d: check failed: %s: ", __FILE__, __LINE__, \
			       #cond);                                          \
			printf(__VA_ARGS__);                                    \
			printf("\n");                                           \
		}                                                               \
	} while (0)

#define REQUIRE(cond, ...)                                                      \
	do {                                                                    \
		int check_before_ = check_st.cur_failed;                        \
		CHECK(cond, __VA_ARGS__);                                       \
		if (check_st.cur_failed != check_before_)                       \
			return;                                                 \
	} while (0)

#define SKIP(...)                                                               \
	do {                                                                    \
		check_st.cur_skipped = 1;                                       \
		snprintf(check_st.skip_reason, sizeof check_st.skip_reason,     \
			 __VA_ARGS__);                                          \
		return;                                                         \
	} while (0)

#define RUN(fn) check_run(fn, #fn)

static inline void check_run(void (*fn)(void), const char *name)
{
	check_st.cur_failed = 0;
	check_st.cur_skipped = 0;
	fflush(stdout);
	fn();
	check_st.run++;
	if (check_st.cur_skipped && !check_st.cur_failed)
		printf("ok %d - %s # skip %s\n", check_st.run, name, check_st.skip_reason);
	else if (check_st.cur_failed) {
		printf("not ok %d - %s\n", check_st.run, name);
		check_st.failed++;
	} else
		printf("ok %d - %s\n", check_st.run, name);
	fflush(stdout);
}

static inline int check_done(void)
{
	printf("1..%d\n", check_st.run);
	return check_st.failed ? 1 : 0;
}

/* Directory of the shared test data: $TITAN_DATA, or NULL (tests then SKIP). */
static inline const char *check_data_dir(void)
{
	const char *d = getenv("TITAN_DATA");
	return d && *d ? d : NULL;
}

/* kjv.txt with its verses unnumbered, in place: the blanks and numbers
 * after each '\n' go, so that a letter follows it, where every tokenizer's
 * pattern may be cut (tok_next_cut).  Returns the new length. */
static inline size_t check_unnumber_verses(uint8_t *text, size_t n)
{
	size_t kept = 0;
	for (size_t i = 0; i < n; i++)
		if (!kept || text[kept - 1] != '\n' || !memchr(" 0123456789", text[i], 11))
			text[kept++] = text[i];
	return kept;
}

/* The test program's scratch directory, made by check_scratch_open() under
 * $TMPDIR (or /tmp) and removed with all it holds by check_rmtree(). */
static char check_scratch[256];

static inline int check_scratch_open(const char *name)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(check_scratch, sizeof check_scratch, "%s/%s.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp", name);
	if (!mkdtemp(check_scratch)) {
		perror("mkdtemp");
		return -1;
	}
	return 0;
}

static inline int check_rm_entry(const char *path, const struct stat *st, int flag,
				 struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* Remove path and everything below it (links are removed, not followed). */
static inline void check_rmtree(const char *path)
{
	nftw(path, check_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
