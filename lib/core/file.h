/* file.h - reading whole inputs and writing outputs atomically.
 *
 * Every output a tool produces goes through titan_atomic: the data is written
 * to "PATH.tmp.PID", fsynced, renamed over PATH, and the directory fsynced, so
 * an interrupted run never leaves a half-written PATH that looks complete.
 * "-" means stdin for reads and stdout for writes (no atomicity there). */
#ifndef TITAN_CORE_FILE_H
#define TITAN_CORE_FILE_H
#include "core/base.h"
#include "core/buf.h"

/* Read all of PATH ("-": stdin) into *out (appended). */
int file_read_all(const char *path, titan_bytes *out);

typedef struct titan_atomic {
	FILE *fp;        /* write here */
	char *path;      /* final name (owned) */
	char *tmp;       /* temporary name (owned), NULL for stdout */
} titan_atomic;

/* Open PATH for an atomic write ("-": stdout). */
int atomic_open(titan_atomic *a, const char *path);
/* Flush, fsync, rename into place, fsync the directory; frees a. */
int atomic_commit(titan_atomic *a);
/* Remove the temporary file and free a (safe after a failed commit too). */
void atomic_abort(titan_atomic *a);
/* Write buf to PATH atomically in one call. */
int atomic_write_file(const char *path, const void *buf, size_t n);

/* "DIR/NAME", allocated; NULL when memory runs out (no message set). */
char *file_path_join(const char *dir, const char *name);

/* fsync a directory (after creating, renaming or removing entries in it),
 * or the directory that holds path, so the change itself is durable. */
int file_sync_dir(const char *dir);
int file_sync_parent(const char *path);

/* rm -r path, never following links; a missing path is not an error. */
int file_remove_tree(const char *path);

/* The same for cleaning up after a failure: errors are ignored and the
 * failure's message (titan_errmsg) is kept. */
void file_discard_tree(const char *path);

/* 0 when path does not exist or replace is set; else TITAN_EUSAGE "'PATH'
 * already exists (use --force to replace it)".  Tools check this before
 * the work, file_install_dir again at the end. */
int file_check_new(const char *path, bool replace);

/* Put the finished directory tmp in place as dir: fsync tmp, move an
 * existing dir aside (to dir.old.PID) so that some complete dir exists at
 * every moment but one rename, rename tmp to dir, fsync dir's parent, and
 * remove the old one.  An existing dir is TITAN_EUSAGE ("already exists
 * (use --force to replace it)") unless replace. */
int file_install_dir(const char *tmp, const char *dir, bool replace);

/* Copy src to dst atomically (titan_atomic). */
int file_copy(const char *src, const char *dst);

/* fwrite that records a titan error naming path on failure. */
int file_write(FILE *fp, const char *path, const void *buf, size_t n);

#endif
