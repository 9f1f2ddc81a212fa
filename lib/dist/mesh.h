/* mesh.h - the device mesh: this rank's place in the parallel layout and
 * one communicator per data-parallel dimension.
 *
 * The layout is lib/model/shard.h's pp x dp_replicate x dp_shard x cp x tp
 * with world rank = (((pp_i * dp_replicate + dr_i) * dp_shard + ds_i) * cp
 * + cp_i) * tp + tp_i.  The shard group is the ranks that differ only in
 * ds_i and cp_i (parameters are sharded over dp_shard x cp, rank ds_i * cp
 * + cp_i, as lib/model/shard.h cuts them), the replicate group those that
 * differ only in dr_i, the dp group those that differ in dr_i or ds_i (the
 * loader stripes windows over it and the loss is averaged over it and the
 * cp group), the cp group those that differ only in cp_i (ring attention's
 * ring, in cp_i order), the tp group those that differ only in tp_i. */
#ifndef TITAN_DIST_MESH_H
#define TITAN_DIST_MESH_H
#include "core/base.h"
#include "dist/comm.h"
#include "model/shard.h"

typedef struct mesh {
	par_layout layout;
	par_coord me;
	comm *world;           /* borrowed */
	comm *dp_shard;        /* NULL when dp_shard x cp is 1 */
	comm *dp_replicate;    /* NULL when dp_replicate is 1 */
	comm *dp;              /* NULL when both are 1 */
	comm *cp;              /* NULL when cp is 1 */
	comm *tp;              /* NULL when tp is 1 */
	comm *pp;              /* the pipeline's stages in order; NULL when pp is 1 */
	int dp_rank, dp_size;  /* dr_i * dp_shard + ds_i, dp_replicate * dp_shard */
} mesh;

/* The communicators the model's collectives use, by kind (mesh_comm: the
 * field of that name, NULL when the layout has none). */
typedef enum {
	MESH_DP_SHARD, MESH_DP_REPLICATE, MESH_TP, MESH_PP, MESH_CP, MESH_NCOMM
} mesh_comm_kind;
comm *mesh_comm(const mesh *m, mesh_comm_kind k);

/* Collective over world: the layout's product must be the world's size
 * (TITAN_EUSAGE naming every degree). */
int mesh_new(mesh **out, comm *world, const par_layout *l);
void mesh_free(mesh *m);

#endif
