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

#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* tests/fuzz/run.sh runs from the repository root */
	setenv("TITAN_SHARE", "share/titan", 0);
	return 0;
}

static int write_memfd(const void *p, size_t n, char *path, size_t pn)
{
	int fd = memfd_create("fuzz", 0);
	if (fd < 0)
		return -1;
	if (n && write(fd, p, n) != (ssize_t)n) {
		close(fd);
		return -1;
	}
	snprintf(path, pn, "/proc/self/fd/%d", fd);
	return fd;
}

/* A loaded config printed and read back is the same config. */
static void check_reload(const train_config *c)
{
	char *buf = NULL, path[64];
	size_t n = 0;
	FILE *fp = open_memstream(&buf, &n);
	train_config again;
	if (!fp)
		return;
	if (config_print(c, fp))
		abort();
	fclose(fp);
	int fd = write_memfd(buf, n, path, sizeof path);
	if (fd >= 0) {
		if (config_load(&again, path, 0, NULL))
			abort();
		if (!json_equal(c->json, again.json))
			abort();
		config_free(&again);
		close(fd);
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	train_config c;
	char path[64];
	int rc;

	if (size < 1 || size > 8192)
		return 0;
	if (data[0] & 1) {
		int fd = write_memfd(data + 1, size - 1, path, sizeof path);
		if (fd < 0)
			return 0;
		rc = config_load(&c, path, 0, NULL);
		close(fd);
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
