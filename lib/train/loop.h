/* loop.h - the training loop of one rank: data, model, optimizer,
 * schedule, validation, metrics, checkpoints, signals.
 *
 * train_run builds everything the config describes, resumes from a
 * checkpoint when asked (or, with checkpointing on, from the folder's latest
 * one), trains to training.steps and saves at every interval and at the end.
 * SIGINT and SIGTERM are held while it runs: the step in progress finishes,
 * a checkpoint is saved (when checkpointing is on) and train_run returns 0
 * with interrupted set, which is what a preempted Slurm job wants.  A loss
 * or gradient norm that is not finite stops the run with TITAN_ERANGE naming
 * the step, before the optimizer touches the weights, so the last
 * checkpoint stays the last good one. */
#ifndef TITAN_TRAIN_LOOP_H
#define TITAN_TRAIN_LOOP_H
#include "core/base.h"
#include "core/log.h"
#include "config/config.h"
#include "dist/comm.h"

typedef struct train_result {
	long first_step, last_step;  /* steps run by this call: first..last */
	double last_loss;
	bool interrupted;            /* stopped by SIGINT/SIGTERM */
	size_t mem_peak;             /* bytes, the tracker's peak (the largest rank's) */
	size_t act_bytes;            /* activations of the chosen AC mode */
	size_t act_bytes_none;       /* ... and what no checkpointing would need */
} train_result;

/* world: every rank of the run (comm_world); the parallel layout comes
 * from cfg's parallelism section.  Collective: every rank calls it. */
int train_run(const train_config *cfg, comm *world, titan_log *log, train_result *res);

/* The threads a run uses: training.threads, else OMP_NUM_THREADS, else the
 * CPUs of this process's affinity set. */
int train_threads(const train_config *cfg);

#endif
