/* test_cuda.c - the CUDA backend links, and either works or fails cleanly.
 *
 * Without a GPU (or in a build without CUDA) the probe must return an error
 * with a message, never crash; the test then skips.  TITAN_REQUIRE_CUDA=1
 * (make test-cuda) turns that skip into a failure. */
#include "core/base.h"
#include "kernels.h"
#include "check.h"

static void test_cuda_probe(void)
{
	char info[256];
	bool required = getenv("TITAN_REQUIRE_CUDA") != NULL;
	int rc = kernels_cuda_probe(info, sizeof info);
	if (rc) {
		CHECK(titan_errmsg()[0], "the probe failed without a message");
		CHECK(!required, "CUDA required: %s", titan_errmsg());
		if (!required)
			SKIP("%s", titan_errmsg());
		return;
	}
	CHECK(kernels_cuda_built(), "a probe succeeded in a build without CUDA");
	printf("# cuda: %s\n", info);
}

int main(void)
{
	RUN(test_cuda_probe);
	return check_done();
}
