/* file.c - whole-file reads and atomic writes (see file.h). */
#include "core/base.h"
#include "core/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* The name a message uses for path: "-" is a stream, not a file. */
static const char *shown(const char *path, bool writing)
{
	if (strcmp(path, "-"))
		return path;
	return writing ? "<stdout>" : "<stdin>";
}

/* Read fd to EOF into out; hint is the expected size (0 when unknown). */
static int read_fd(int fd, const char *path, titan_bytes *out, size_t hint)
{
	/* One byte past the size so a regular file is read in one call
	 * and the next read sees EOF; streams grow by doubling. */
	int rc = bytes_reserve(out, hint ? hint + 1 : 65536);
	if (rc)
		return rc;
	for (;;) {
		if (out->cap == out->n) {
			rc = bytes_reserve(out, out->cap);
			if (rc)
				return rc;
		}
		size_t want = TITAN_MIN(out->cap - out->n, (size_t)1 << 30);
		ssize_t got = read(fd, out->v + out->n, want);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return titan_err_errno(TITAN_EIO, "cannot read '%s'", shown(path, false));
		}
		if (got == 0)
			return 0;
		out->n += (size_t)got;
	}
}

int file_read_all(const char *path, titan_bytes *out)
{
	bool is_stdin = !strcmp(path, "-");
	int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return titan_err_errno(TITAN_EIO, "cannot open '%s'", path);

	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot stat '%s'", shown(path, false));
	} else if (S_ISDIR(st.st_mode)) {
		rc = titan_err(TITAN_EIO, "'%s' is a directory", path);
	} else {
		size_t hint = 0;
		if (S_ISREG(st.st_mode) && st.st_size > 0 &&
		    (uint64_t)st.st_size < SIZE_MAX - 1)
			hint = (size_t)st.st_size;
		rc = read_fd(fd, path, out, hint);
	}
	if (!is_stdin)
		close(fd);
	return rc;
}

static void atomic_release(titan_atomic *a)
{
	free(a->path);
	free(a->tmp);
	*a = (titan_atomic){0};
}

int atomic_open(titan_atomic *a, const char *path)
{
	*a = (titan_atomic){0};
	a->path = strdup(path);
	if (!a->path)
		return titan_err_nomem();
	if (!strcmp(path, "-")) {
		a->fp = stdout;
		return 0;
	}

	size_t n = strlen(path) + 32;
	a->tmp = malloc(n);
	if (!a->tmp) {
		atomic_release(a);
		return titan_err_nomem();
	}
	snprintf(a->tmp, n, "%s.tmp.%ld", path, (long)getpid());

	/* O_EXCL: never write through a link or into someone else's file;
	 * the kernel applies the umask to 0666. */
	int fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0) {
		int rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", path);
		atomic_release(a);
		return rc;
	}
	a->fp = fdopen(fd, "w");
	if (!a->fp) {
		int rc = titan_err_errno(TITAN_EIO, "cannot create '%s'", path);
		close(fd);
		unlink(a->tmp);
		atomic_release(a);
		return rc;
	}
	return 0;
}

char *file_path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

int file_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return titan_err_errno(TITAN_EIO, "cannot open directory '%s'", dir);
	/* Some filesystems cannot fsync a directory (EINVAL); a rename is then
	 * as durable as they allow. */
	if (fsync(fd) < 0 && errno != EINVAL)
		rc = titan_err_errno(TITAN_EIO, "cannot sync directory '%s'", dir);
	close(fd);
	return rc;
}

int file_sync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int rc;

	if (!slash)
		return file_sync_dir(".");
	if (slash == path)
		return file_sync_dir("/");
	dir = strndup(path, (size_t)(slash - path));
	if (!dir)
		return titan_err_nomem();
	rc = file_sync_dir(dir);
	free(dir);
	return rc;
}

int atomic_commit(titan_atomic *a)
{
	int rc = 0;

	if (!a->fp)
		return titan_err(TITAN_EINTERNAL, "atomic_commit without atomic_open");

	if (!a->tmp) {
		/* stdout: nothing to rename, but a full disk or a closed pipe
		 * must still fail the run. */
		if (fflush(a->fp) == EOF || ferror(a->fp))
			rc = titan_err_errno(TITAN_EIO, "cannot write '<stdout>'");
		atomic_release(a);
		return rc;
	}

	if (fflush(a->fp) == EOF || ferror(a->fp))
		rc = titan_err_errno(TITAN_EIO, "cannot write '%s'", a->path);
	else if (fsync(fileno(a->fp)) < 0)
		rc = titan_err_errno(TITAN_EIO, "cannot sync '%s'", a->path);
	if (fclose(a->fp) == EOF && !rc)
		rc = titan_err_errno(TITAN_EIO, "cannot write '%s'", a->path);
	a->fp = NULL;
	if (!rc && rename(a->tmp, a->path) < 0)
		rc = titan_err_errno(TITAN_EIO, "cannot rename '%s' to '%s'", a->tmp,
				     a->path);
	if (rc) {
		unlink(a->tmp);
		atomic_release(a);
		return rc;
	}
	rc = file_sync_parent(a->path);
	atomic_release(a);
	return rc;
}

void atomic_abort(titan_atomic *a)
{
	if (a->tmp) {
		if (a->fp)
			fclose(a->fp);
		unlink(a->tmp);
	}
	atomic_release(a);
}

int atomic_write_file(const char *path, const void *buf, size_t n)
{
	titan_atomic a;
	int rc = atomic_open(&a, path);
	if (rc)
		return rc;
	rc = file_write(a.fp, path, buf, n);
	if (rc) {
		atomic_abort(&a);
		return rc;
	}
	return atomic_commit(&a);
}

int file_write(FILE *fp, const char *path, const void *buf, size_t n)
{
	if (n && fwrite(buf, 1, n, fp) != n)
		return titan_err_errno(TITAN_EIO, "cannot write '%s'", shown(path, true));
	return 0;
}

/* Remove what dirfd holds, depth first, never following links; closes
 * dirfd.  shown names the directory in messages. */
static int remove_contents(int dirfd, const char *shown)
{
	DIR *d = fdopendir(dirfd);
	struct dirent *de;
	int rc = 0;

	if (!d) {
		close(dirfd);
		return titan_err_errno(TITAN_EIO, "cannot read '%s'", shown);
	}
	while (!rc && (de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = titan_err_errno(TITAN_EIO, "cannot stat '%s/%s'", shown, de->d_name);
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				rc = titan_err_errno(TITAN_EIO, "cannot open '%s/%s'", shown,
						     de->d_name);
			else
				rc = remove_contents(sub, shown);
		}
		if (!rc && unlinkat(dirfd, de->d_name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0)
			rc = titan_err_errno(TITAN_EIO, "cannot remove '%s/%s'", shown, de->d_name);
	}
	closedir(d);
	return rc;
}

int file_remove_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : titan_err_errno(TITAN_EIO, "cannot stat '%s'", path);
	if (S_ISDIR(st.st_mode)) {
		int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int rc;

		if (fd < 0)
			return titan_err_errno(TITAN_EIO, "cannot open '%s'", path);
		if ((rc = remove_contents(fd, path)))
			return rc;
		if (rmdir(path) < 0)
			return titan_err_errno(TITAN_EIO, "cannot remove '%s'", path);
		return 0;
	}
	if (unlink(path) < 0)
		return titan_err_errno(TITAN_EIO, "cannot remove '%s'", path);
	return 0;
}

void file_discard_tree(const char *path)
{
	char *msg = strdup(titan_errmsg());

	file_remove_tree(path);
	if (msg) {
		titan_err(TITAN_EIO, "%s", msg);
		free(msg);
	}
}

int file_check_new(const char *path, bool replace)
{
	struct stat st;

	if (!replace && lstat(path, &st) == 0)
		return titan_err(TITAN_EUSAGE, "'%s' already exists (use --force to replace it)",
				 path);
	return 0;
}

int file_install_dir(const char *tmp, const char *dir, bool replace)
{
	size_t len = strlen(dir) + 32;
	char *old = malloc(len);
	bool replaced = false;
	struct stat st;
	int rc;

	if (!old)
		return titan_err_nomem();
	snprintf(old, len, "%s.old.%ld", dir, (long)getpid());
	if ((rc = file_sync_dir(tmp)))
		goto out;
	if ((rc = file_check_new(dir, replace)))
		goto out;
	if (lstat(dir, &st) == 0) {
		if ((rc = file_remove_tree(old)))
			goto out;
		if (rename(dir, old) < 0) {
			rc = titan_err_errno(TITAN_EIO, "cannot rename '%s' to '%s'", dir, old);
			goto out;
		}
		replaced = true;
	}
	if (rename(tmp, dir) < 0) {
		rc = titan_err_errno(TITAN_EIO, "cannot rename '%s' to '%s'", tmp, dir);
		if (replaced)
			rename(old, dir);
		goto out;
	}
	if ((rc = file_sync_parent(dir)))
		goto out;
	if (replaced)
		rc = file_remove_tree(old);
out:
	free(old);
	return rc;
}

int file_copy(const char *src, const char *dst)
{
	titan_bytes b = {0};
	int rc = file_read_all(src, &b);

	if (!rc)
		rc = atomic_write_file(dst, b.v ? (const void *)b.v : "", b.n);
	bytes_free(&b);
	return rc;
}
