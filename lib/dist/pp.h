/* pp.h - pipeline schedules: the order in which a stage runs the forward
 * and backward passes of a step's micro-batches, as a table.
 *
 * GPipe: every forward, then every backward (each stage holds every
 * micro-batch's activations).  1F1B: stage s runs pp - 1 - s forwards
 * ahead, then alternates one forward and one backward, then drains the
 * backwards (PipeDream-flush, torchtitan's default), so it holds at most
 * pp - s micro-batches' activations where GPipe holds all.  Both leave a bubble
 * of (pp - 1) / (m + pp - 1) of the step idle.  Sends are non-blocking
 * and receives wait, so neither schedule can deadlock. */
#ifndef TITAN_DIST_PP_H
#define TITAN_DIST_PP_H
#include "core/base.h"

typedef enum { PP_1F1B, PP_GPIPE } pp_schedule_kind;

typedef struct pp_op {
	bool backward;
	int mb;            /* micro-batch */
} pp_op;

/* The 2 n operations of stage (0..pp-1) with n micro-batches into ops. */
void pp_schedule(pp_schedule_kind kind, int pp, int stage, int n, pp_op *ops);
/* The most micro-batches stage holds between their forward and backward:
 * n under GPipe, min(n, pp - stage) under 1F1B.  Micro-batch i can use
 * activation set i % pp_in_flight: its set is free again by then. */
int pp_in_flight(pp_schedule_kind kind, int pp, int stage, int n);
/* "F0 F1 B0 ..." into buf (for tests and -v). */
void pp_schedule_format(const pp_op *ops, int nops, char *buf, size_t cap);

#endif
