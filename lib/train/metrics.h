/* metrics.h - what the trainer reports every log_freq steps, three ways:
 * a human line on stderr, a JSON line per step (--metrics.jsonl) and
 * TensorBoard event files (--metrics.tensorboard DIR).
 *
 * stderr: "step   10  loss 7.1234  grad_norm 1.2345  lr 8.0000e-04
 *          tps 2,345  tflops 0.09  mfu 47.1%  data 0.3%  mem 0.52GiB"
 * (one line).  JSONL: {"step":10,"loss":...,"lr":...,"grad_norm":...,
 * "tps":...,"tflops":...,"mfu":...,"mem_peak_gib":...,"elapsed_s":...,
 * "data_s_share":...}; validation lines {"step":10,"val_loss":...,
 * "val_ppl":...}.  Each line is flushed when written, so a killed run keeps
 * every step it logged. */
#ifndef TITAN_TRAIN_METRICS_H
#define TITAN_TRAIN_METRICS_H
#include "core/base.h"

typedef struct metrics_row {
	long step;
	double loss, grad_norm, lr;
	double tps;           /* tokens/s per device */
	double tflops;        /* achieved TFLOP/s per device */
	double mfu;           /* percent of peak */
	double data_share;    /* fraction of step time waiting for data */
	double mem_peak_gib;  /* the largest of every rank's */
	double elapsed_s;     /* since training started */
	/* Data parallel (shown when ranks > 1): tokens/s of every rank
	 * together, and the fraction of step time spent communicating. */
	int ranks;
	double tps_global, comm_share;
} metrics_row;

typedef struct metrics metrics;

/* human: where the line goes (stderr; NULL: nowhere).  jsonl, tb_dir: NULL
 * or "" when off; the JSONL file is appended to (a resumed run continues
 * it); tb_dir is created, and one events.out.tfevents.TIME.HOST file
 * written in it. */
int metrics_open(metrics **out, FILE *human, const char *jsonl, const char *tb_dir);
int metrics_log(metrics *m, const metrics_row *r);
int metrics_log_val(metrics *m, long step, double val_loss);
/* Flush and close; NULL is fine. */
int metrics_close(metrics *m);

/* TensorBoard's record framing, exposed for tests. */
uint32_t crc32c(const void *buf, size_t n);
uint32_t crc32c_masked(const void *buf, size_t n);

#endif
