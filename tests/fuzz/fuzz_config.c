/* fuzz_config.c - libFuzzer target: arbitrary bytes as the trainer's
 * configuration.
 *
 * The first byte picks the form: odd, the rest is a JSON configuration file
 * (an in-memory file read through its /proc/self/fd path); even, the rest
 * is a list of "section.key=value" overrides, one a line.  Either way
 * config_load must succeed or fail with a message, never crash, and a
 * config that loads must print and load back to the same JSON. */
#include "core/base.h"
#include "config/config.h"

#include "memfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* tests/fuzz/run.sh runs from the repository root */
	setenv("TITAN_SHARE", "share/titan", 0);
	return 0;
}

/* A loaded config printed and read back is the same config. */
static void check_reload(const train_config *c)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *fp = open_memstream(&buf, &n);
	train_config again;
	if (!fp)
		return;
	if (config_print(c, fp))
		abort();
	fclose(fp);
	if (config_load(&again, fuzz_memfile(buf, n), 0, NULL))
		abort();
	if (!json_equal(c->json, again.json))
		abort();
	config_free(&again);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	train_config c;
	int rc;

	if (size < 1 || size > 8192)
		return 0;
	if (data[0] & 1) {
		rc = config_load(&c, fuzz_memfile(data + 1, size - 1), 0, NULL);
	} else {
		char *text = strndup((const char *)data + 1, size - 1);
		char *ov[64], *save = NULL;
		int n = 0;
		if (!text)
			return 0;
		for (char *line = strtok_r(text, "\n", &save); line && n < 64;
		     line = strtok_r(NULL, "\n", &save))
			ov[n++] = line;
		rc = config_load(&c, NULL, n, ov);
		free(text);
	}
	if (rc) {
		if (!*titan_errmsg())
			abort();
		return 0;
	}
	check_reload(&c);
	config_free(&c);
	return 0;
}
