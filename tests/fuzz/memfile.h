/* memfile.h - the fuzz targets' input file: bytes written to one memfd per
 * process, which the parser under test opens by its /proc/self/fd path
 * like any file.  Each call replaces the previous content. */
#ifndef TITAN_FUZZ_MEMFILE_H
#define TITAN_FUZZ_MEMFILE_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *fuzz_memfile(const void *data, size_t size)
{
	static int fd = -1;
	static char path[64];

	if (fd < 0) {
		fd = (int)syscall(SYS_memfd_create, "fuzz", 0);
		if (fd < 0)
			abort();
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) < 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
	return path;
}

/* The targets' common input convention: the first byte picks a mode (its
 * low bit: 0 means "repair the input so it passes the outer checks"), the
 * rest is the data, returned as a copy the target may repair (free it);
 * NULL for an empty input. */
static uint8_t *fuzz_take(const uint8_t *data, size_t *size, bool *repair)
{
	uint8_t *copy;

	if (*size < 1)
		return NULL;
	*repair = !(data[0] & 1);
	(*size)--;
	copy = malloc(*size ? *size : 1);
	if (!copy)
		abort();
	memcpy(copy, data + 1, *size);
	return copy;
}

#endif
