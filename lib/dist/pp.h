/* pp.h - pipeline schedules: the order in which a rank runs the forward
 * and backward passes of a step's micro-batches, as a table.
 *
 * The model's layers are cut into pp x v stages of equal depth; rank r
 * runs stages r, r + pp, ..., r + (v - 1) pp (its "local" stages 0..v-1),
 * so a micro-batch goes round the ranks v times.
 *
 * GPipe (v = 1): every forward, then every backward (each rank holds every
 * micro-batch's activations).  1F1B (v = 1): rank r runs pp - 1 - r
 * forwards ahead, then alternates one forward and one backward, then
 * drains the backwards (PipeDream-flush, torchtitan's default), so it holds
 * at most pp - r micro-batches where GPipe holds all.  Both leave a bubble
 * of (pp - 1) / (m + pp - 1) of the step idle.  Interleaved1F1B (v >= 1,
 * Megatron-LM's interleaved schedule): 1F1B over the v local stages, whose
 * warm-up runs micro-batches in groups of pp through each local stage in
 * turn; the bubble shrinks to (pp - 1) / (v m + pp - 1), for more
 * messages and more activations held.  It needs m to be a multiple of pp.
 *
 * Sends are non-blocking and receives wait; a rank waits for its sends
 * to leave only before a forward reuses an activation set (op.reuse) and
 * at the end of the step.  tests/unit/test_pp.c runs every rank's table
 * against the others' with sends that complete only when received, and
 * checks that no schedule can deadlock. */
#ifndef TITAN_DIST_PP_H
#define TITAN_DIST_PP_H
#include "core/base.h"

/* the order of the config enum parallelism.pipeline_parallel_schedule */
typedef enum { PP_1F1B, PP_GPIPE, PP_INTERLEAVED_1F1B } pp_schedule_kind;

typedef struct pp_op {
	bool backward;
	int mb;            /* micro-batch */
	int stage;         /* local stage 0..v-1: global stage stage * pp + rank */
	/* The activation set (0..sets-1) the micro-batch uses on this rank,
	 * from its first forward to its last backward; reuse: this forward
	 * takes a set an earlier micro-batch used, so what was sent from it
	 * must have left first. */
	int set;
	bool reuse;
} pp_op;

/* Whether the schedule takes n micro-batches and v stages a rank on pp
 * ranks: TITAN_EUSAGE naming the constraint otherwise (1F1B and GPipe
 * run one stage a rank; Interleaved1F1B needs n a multiple of pp). */
int pp_check(pp_schedule_kind kind, int pp, int n, int v);
/* The 2 n v operations of rank (0..pp-1) into ops (checked beforehand);
 * returns the number of activation sets the table uses. */
int pp_schedule(pp_schedule_kind kind, int pp, int rank, int n, int v, pp_op *ops);
/* "F0 F1 B0 ..." into buf, with the local stage when v > 1: "F0.1" is
 * micro-batch 0 on local stage 1 (for tests and -v). */
void pp_schedule_format(const pp_op *ops, int nops, int v, char *buf, size_t cap);
/* Name as torchtitan spells it: "1F1B", "GPipe", "Interleaved1F1B". */
const char *pp_schedule_name(pp_schedule_kind kind);

#endif
