/* test_pp.c - the pipeline schedules as tables: every micro-batch's
 * forward and backward on every local stage exactly once, forward before
 * backward, the orders GPipe, 1F1B (PipeDream-flush) and Interleaved1F1B
 * (Megatron-LM's) prescribe, activation sets never shared by two
 * micro-batches in flight, and every rank's table run against the others'
 * without deadlock. */
#include "core/base.h"

#include "check.h"
#include "dist/pp.h"

enum { MAXOPS = 512 };

static void expect(pp_schedule_kind k, int pp, int rank, int n, int v, const char *want)
{
	pp_op ops[MAXOPS];
	char got[2048];

	pp_schedule(k, pp, rank, n, v, ops);
	pp_schedule_format(ops, 2 * n * v, v, got, sizeof got);
	CHECK(!strcmp(got, want), "%s pp %d rank %d n %d v %d: '%s', want '%s'",
	      pp_schedule_name(k), pp, rank, n, v, got, want);
}

static void test_tables(void)
{
	expect(PP_GPIPE, 2, 0, 3, 1, "F0 F1 F2 B0 B1 B2");
	expect(PP_GPIPE, 4, 3, 2, 1, "F0 F1 B0 B1");
	expect(PP_1F1B, 4, 0, 6, 1, "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5");
	expect(PP_1F1B, 4, 1, 6, 1, "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5");
	expect(PP_1F1B, 4, 3, 6, 1, "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5");
	/* fewer micro-batches than stages: every forward first */
	expect(PP_1F1B, 4, 0, 2, 1, "F0 F1 B0 B1");
	expect(PP_1F1B, 1, 0, 1, 1, "F0 B0");
	/* Interleaved1F1B, 2 ranks, 2 local stages, 4 micro-batches:
	 * groups of 2 micro-batches through local stage 0 then 1; rank 0
	 * warms up with (2 - 0 - 1) * 2 + (2 - 1) * 2 = 4 forwards */
	expect(PP_INTERLEAVED_1F1B, 2, 0, 4, 2,
	       "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 "
	       "B2.1 B3.1 B2.0 B3.0");
	expect(PP_INTERLEAVED_1F1B, 2, 1, 4, 2,
	       "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 "
	       "F3.1 B3.1 B2.0 B3.0");
	/* as many micro-batches as ranks: every forward first */
	expect(PP_INTERLEAVED_1F1B, 2, 1, 2, 2, "F0.0 F1.0 F0.1 F1.1 B0.1 B1.1 B0.0 B1.0");
	/* one local stage is 1F1B */
	expect(PP_INTERLEAVED_1F1B, 4, 1, 6, 1, "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5");
}

/* Every pass once, forwards before backwards and through the local stages
 * in order (backwards in reverse), and no set holding two micro-batches. */
static void check_rank(pp_schedule_kind k, int pp, int r, int n, int v)
{
	pp_op ops[MAXOPS];
	int fwd[64][4] = { { 0 } }, bwd[64][4] = { { 0 } }, holder[64], left[64];
	int sets = pp_schedule(k, pp, r, n, v, ops);

	CHECK(sets >= 1 && sets <= n, "%d sets", sets);
	for (int i = 0; i < 64; i++)
		holder[i] = -1, left[i] = v;
	for (int i = 0; i < 2 * n * v; i++) {
		int mb = ops[i].mb, s = ops[i].stage;

		CHECK(mb >= 0 && mb < n && s >= 0 && s < v && ops[i].set < sets,
		      "op %d: F/B %d.%d set %d", i, mb, s, ops[i].set);
		if (ops[i].backward) {
			CHECK(fwd[mb][v - 1] && !bwd[mb][s] && (s == v - 1 || bwd[mb][s + 1]),
			      "B%d.%d out of order", mb, s);
			CHECK(holder[ops[i].set] == mb, "B%d: set %d holds %d", mb, ops[i].set,
			      holder[ops[i].set]);
			bwd[mb][s]++;
			if (--left[mb] == 0)
				holder[ops[i].set] = -1;
		} else {
			CHECK(!fwd[mb][s] && (s == 0 || fwd[mb][s - 1]), "F%d.%d out of order", mb,
			      s);
			if (s == 0) {
				CHECK(holder[ops[i].set] == -1, "F%d: set %d still holds %d", mb,
				      ops[i].set, holder[ops[i].set]);
				holder[ops[i].set] = mb;
			}
			fwd[mb][s]++;
		}
	}
	for (int mb = 0; mb < n; mb++)
		for (int s = 0; s < v; s++)
			CHECK(fwd[mb][s] == 1 && bwd[mb][s] == 1, "mb %d stage %d: %d F, %d B", mb,
			      s, fwd[mb][s], bwd[mb][s]);
	/* 1F1B holds at most pp - r micro-batches, GPipe all of them */
	if (k == PP_1F1B)
		CHECK(sets <= TITAN_MAX(1, TITAN_MIN(n, pp - r)), "1F1B rank %d: %d sets", r, sets);
	if (k == PP_GPIPE)
		CHECK(sets == n, "GPipe: %d sets", sets);
}

/* Run the pp ranks' tables together as the trainer does: a forward waits
 * for the previous global stage's send of its micro-batch, a backward for
 * the next one's; sends return at once but complete only when received
 * (rendezvous: the worst case of MPI's protocols); a forward that reuses a
 * set waits for the sends from that set to complete.  Every rank must get
 * through its table.  (Waiting for all of a rank's sends there instead
 * deadlocks Interleaved1F1B.) */
static void check_no_deadlock(pp_schedule_kind k, int pp, int n, int v)
{
	static pp_op ops[8][MAXOPS];
	/* sent[mb][g][dir]: stage g's send of mb (dir 0 activation to g + 1,
	 * 1 gradient to g - 1): 0 none, 1 posted, 2 received */
	static char sent[64][32][2];
	int at[8] = { 0 }, nops = 2 * n * v, S = pp * v, last_mb[8][64];
	bool moved = true;

	memset(sent, 0, sizeof sent);
	for (int r = 0; r < pp; r++)
		pp_schedule(k, pp, r, n, v, ops[r]);
	while (moved) {
		moved = false;
		for (int r = 0; r < pp; r++) {
			const pp_op *o;
			int g;

			if (at[r] == nops)
				continue;
			o = &ops[r][at[r]];
			g = o->stage * pp + r;
			if (o->reuse) {
				/* the sends of the set's last micro-batch */
				int last = last_mb[r][o->set];
				bool clear = true;

				for (int s = 0; s < v; s++)
					for (int d = 0; d < 2; d++)
						clear &= sent[last][s * pp + r][d] != 1;
				if (!clear)
					continue;
			}
			if (!o->backward)
				last_mb[r][o->set] = o->mb;
			if (!o->backward && g > 0) {
				if (!sent[o->mb][g - 1][0])
					continue;
				sent[o->mb][g - 1][0] = 2;
			}
			if (o->backward && g < S - 1) {
				if (!sent[o->mb][g + 1][1])
					continue;
				sent[o->mb][g + 1][1] = 2;
			}
			if (!o->backward && g < S - 1)
				sent[o->mb][g][0] = 1;
			if (o->backward && g > 0)
				sent[o->mb][g][1] = 1;
			at[r]++;
			moved = true;
		}
	}
	for (int r = 0; r < pp; r++)
		CHECK(at[r] == nops, "%s pp %d n %d v %d: rank %d stuck at op %d of %d",
		      pp_schedule_name(k), pp, n, v, r, at[r], nops);
}

static void test_invariants(void)
{
	for (int k = 0; k < 3; k++)
		for (int pp = 1; pp <= 8; pp++)
			/* one rank is no pipeline: the trainer runs no table */
			for (int v = 1; v <= (k == PP_INTERLEAVED_1F1B && pp > 1 ? 4 : 1); v++)
				for (int n = 1; n <= 16; n++) {
					if (pp_check((pp_schedule_kind)k, pp, n, v)) {
						CHECK(k == PP_INTERLEAVED_1F1B && n % pp,
						      "%d %d %d %d refused", k, pp, n, v);
						continue;
					}
					for (int r = 0; r < pp; r++)
						check_rank((pp_schedule_kind)k, pp, r, n, v);
					check_no_deadlock((pp_schedule_kind)k, pp, n, v);
				}
}

static void test_check(void)
{
	CHECK(pp_check(PP_1F1B, 2, 4, 2) == TITAN_EUSAGE, "1F1B with 2 stages a rank");
	CHECK(strstr(titan_errmsg(), "runs one stage a rank"), "%s", titan_errmsg());
	CHECK(pp_check(PP_INTERLEAVED_1F1B, 4, 6, 2) == TITAN_EUSAGE, "6 micro-batches, 4 ranks");
	CHECK(strstr(titan_errmsg(), "not a multiple of the 4 pipeline ranks"), "%s",
	      titan_errmsg());
	CHECK(pp_check(PP_INTERLEAVED_1F1B, 4, 8, 2) == 0, "8 micro-batches, 4 ranks");
}

int main(void)
{
	RUN(test_tables);
	RUN(test_invariants);
	RUN(test_check);
	return check_done();
}
