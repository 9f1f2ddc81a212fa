/* safetensors.h - read and write Hugging Face's safetensors format.
 *
 * A file is: u64 little-endian header length N, N bytes of JSON
 * {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *  "__metadata__": {"k": "v"}}, then the data; offsets are relative to the
 * end of the header.  The reader maps the file and checks everything a
 * corrupt or hostile file could get wrong (header size, JSON, dtypes, shape
 * products against offsets, offsets inside the file, no overlaps) before
 * handing out a pointer. */
#ifndef TITAN_CKPT_SAFETENSORS_H
#define TITAN_CKPT_SAFETENSORS_H
#include "core/base.h"

typedef enum {
	ST_F32, ST_F16, ST_BF16, ST_F64, ST_I8, ST_U8, ST_I16, ST_I32, ST_I64,
	ST_U16, ST_U32, ST_U64, ST_BOOL, ST_NDTYPES
} st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
	char *name;
	st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	uint64_t begin, end;        /* byte offsets in the data section */
} st_tensor;

typedef struct st_file {
	char *path;
	const uint8_t *map;         /* the whole file, read-only */
	size_t size;
	size_t data_off;            /* 8 + header length */
	st_tensor *tensors;         /* in data order */
	size_t n;
	char **meta_keys, **meta_vals;  /* __metadata__ (strings) */
	size_t nmeta;
} st_file;

const char *st_dtype_name(st_dtype d);   /* "F32" */
size_t st_dtype_size(st_dtype d);        /* bytes per element */

/* Open and validate PATH; errors name the file and the tensor or key. */
int st_open(st_file **out, const char *path);
void st_close(st_file *f);
/* NULL when absent. */
const st_tensor *st_find(const st_file *f, const char *name);
const void *st_data(const st_file *f, const st_tensor *t);
/* Let the kernel take back the mapped pages of bytes at p (inside f's map)
 * once they are read: the map is read-only, so they come back from the
 * page cache if needed again, and a pass over a file larger than memory
 * keeps one tensor resident, not the file. */
void st_release(const st_file *f, const void *p, size_t bytes);
/* NULL when absent. */
const char *st_meta(const st_file *f, const char *key);

/* Writer: add tensors (data borrowed until st_writer_write), metadata, then
 * write atomically.  Tensors are written in the order added. */
typedef struct st_writer st_writer;
int st_writer_new(st_writer **out);
int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim,
		  const int64_t *shape, const void *data);
int st_writer_meta(st_writer *w, const char *key, const char *value);
int st_writer_write(st_writer *w, const char *path);
void st_writer_free(st_writer *w);

/* Streaming writer, for files larger than memory: declare every tensor
 * (and metadata), then st_stream_begin writes the header to PATH.tmp, then
 * st_stream_put hands over the tensors' bytes in declaration order (a
 * tensor may come in several pieces), and st_stream_finish checks that
 * every byte came, fsyncs and renames PATH.tmp to PATH.  Freeing an
 * unfinished stream removes PATH.tmp. */
typedef struct st_stream st_stream;
int st_stream_new(st_stream **out);
int st_stream_declare(st_stream *w, const char *name, st_dtype dtype, int ndim,
		      const int64_t *shape);
int st_stream_meta(st_stream *w, const char *key, const char *value);
/* Bytes of the data section declared so far. */
uint64_t st_stream_data_bytes(const st_stream *w);
int st_stream_begin(st_stream *w, const char *path);
int st_stream_put(st_stream *w, const void *data, size_t bytes);
int st_stream_finish(st_stream *w);
void st_stream_free(st_stream *w);

#endif
