/* mesh.c - the device mesh's communicators (mesh.h). */
#include "core/base.h"
#include "dist/mesh.h"

int mesh_new(mesh **out, comm *world, const par_layout *l)
{
	int size = comm_size(world), rank = comm_rank(world), rc = 0;
	char text[128];
	mesh *m;

	*out = NULL;
	if (par_layout_world(l) != size) {
		par_layout_format(l, text, sizeof text);
		return titan_err(TITAN_EUSAGE, "parallelism: %s makes %d ranks, but %d were "
				 "launched", text, par_layout_world(l), size);
	}
	m = calloc(1, sizeof *m);
	if (!m)
		return titan_err_nomem();
	m->layout = *l;
	m->world = world;
	m->me = par_layout_coord(l, rank);
	m->dp_size = l->dp_replicate * l->dp_shard;
	m->dp_rank = m->me.dp_replicate * l->dp_shard + m->me.dp_shard;
	{
		/* ranks that share every other coordinate form a group */
		const par_coord *c = &m->me;
		int other = (c->pp * l->cp + c->cp) * l->tp + c->tp;
		int shard_color = (c->pp * l->dp_replicate + c->dp_replicate) * l->tp + c->tp;
		int rep_color = other * l->dp_shard + c->dp_shard;
		int cp_color = rank / (l->cp * l->tp) * l->tp + c->tp;

		/* parameters are sharded over dp_shard x cp, as torchtitan does */
		if (l->dp_shard * l->cp > 1)
			rc = comm_split(world, shard_color, c->dp_shard * l->cp + c->cp,
					l->cp > 1 ? "dp_shard_cp" : "dp_shard", &m->dp_shard);
		if (!rc && l->dp_replicate > 1)
			rc = comm_split(world, rep_color, c->dp_replicate, "dp_replicate",
					&m->dp_replicate);
		if (!rc && m->dp_size > 1)
			rc = comm_split(world, other, m->dp_rank, "dp", &m->dp);
		if (!rc && l->cp > 1)
			rc = comm_split(world, cp_color, c->cp, "cp", &m->cp);
		if (!rc && l->tp > 1)
			rc = comm_split(world, rank / l->tp, c->tp, "tp", &m->tp);
		/* pp is the outermost dimension */
		if (!rc && l->pp > 1)
			rc = comm_split(world, rank % (size / l->pp), c->pp, "pp", &m->pp);
	}
	if (rc) {
		mesh_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

void mesh_free(mesh *m)
{
	if (!m)
		return;
	comm_free(m->pp);
	comm_free(m->tp);
	comm_free(m->cp);
	comm_free(m->dp);
	comm_free(m->dp_replicate);
	comm_free(m->dp_shard);
	free(m);
}

comm *mesh_comm(const mesh *m, mesh_comm_kind k)
{
	switch (k) {
	case MESH_DP_SHARD:
		return m->dp_shard;
	case MESH_DP_REPLICATE:
		return m->dp_replicate;
	case MESH_TP:
		return m->tp;
	case MESH_PP:
		return m->pp;
	case MESH_CP:
		return m->cp;
	case MESH_NCOMM:
		break;
	}
	return NULL;
}
