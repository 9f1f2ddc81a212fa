/* memfile.h - the fuzz targets' input file: bytes written to one memfd per
 * process, which the parser under test opens by its /proc/self/fd path
 * like any file.  Each call replaces the previous content. */
#ifndef TITAN_FUZZ_MEMFILE_H
#define TITAN_FUZZ_MEMFILE_H
#include <stdio.h>
#include <stdlib.h>
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

#endif
