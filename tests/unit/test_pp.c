/* test_pp.c - the pipeline schedules as tables: every micro-batch's
 * forward and backward exactly once, forward before backward, and the
 * orders GPipe and 1F1B (PipeDream-flush) prescribe. */
#include "core/base.h"

#include "check.h"
#include "dist/pp.h"

static void expect(pp_schedule_kind k, int pp, int stage, int n, const char *want)
{
	pp_op ops[64];
	char got[512];

	pp_schedule(k, pp, stage, n, ops);
	pp_schedule_format(ops, 2 * n, got, sizeof got);
	CHECK(!strcmp(got, want), "%s pp %d stage %d n %d: '%s', want '%s'",
	      k == PP_GPIPE ? "GPipe" : "1F1B", pp, stage, n, got, want);
}

static void test_tables(void)
{
	expect(PP_GPIPE, 2, 0, 3, "F0 F1 F2 B0 B1 B2");
	expect(PP_GPIPE, 4, 3, 2, "F0 F1 B0 B1");
	expect(PP_1F1B, 4, 0, 6, "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5");
	expect(PP_1F1B, 4, 1, 6, "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5");
	expect(PP_1F1B, 4, 3, 6, "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5");
	/* fewer micro-batches than stages: every forward first */
	expect(PP_1F1B, 4, 0, 2, "F0 F1 B0 B1");
	expect(PP_1F1B, 1, 0, 1, "F0 B0");
}

static void test_invariants(void)
{
	for (int k = 0; k < 2; k++)
		for (int pp = 1; pp <= 8; pp++)
			for (int s = 0; s < pp; s++)
				for (int n = 1; n <= 12; n++) {
					pp_op ops[24];
					int fwd[12] = { 0 }, bwd[12] = { 0 }, inflight = 0, most = 0;

					int sets = pp_in_flight((pp_schedule_kind)k, pp, s, n);
					int holder[12];

					for (int i = 0; i < 12; i++)
						holder[i] = -1;
					pp_schedule((pp_schedule_kind)k, pp, s, n, ops);
					for (int i = 0; i < 2 * n; i++) {
						int mb = ops[i].mb;

						if (ops[i].backward) {
							CHECK(holder[mb % sets] == mb,
							      "B%d: set %d holds %d", mb, mb % sets,
							      holder[mb % sets]);
							holder[mb % sets] = -1;
						} else {
							CHECK(holder[mb % sets] == -1,
							      "F%d: set %d still holds %d", mb,
							      mb % sets, holder[mb % sets]);
							holder[mb % sets] = mb;
						}
						if (ops[i].backward) {
							CHECK(fwd[mb] && !bwd[mb], "B%d before F%d", mb, mb);
							bwd[mb]++;
							inflight--;
						} else {
							CHECK(!fwd[mb], "F%d twice", mb);
							fwd[mb]++;
							inflight++;
							if (inflight > most)
								most = inflight;
						}
					}
					/* no more in flight than pp_in_flight says (1F1B
					 * holds at most pp - s), and micro-batch i's set
					 * i % that is free when i's forward comes */
					CHECK(most <= pp_in_flight((pp_schedule_kind)k, pp, s, n),
					      "pp %d stage %d n %d: %d in flight", pp, s, n, most);
				}
}

int main(void)
{
	RUN(test_tables);
	RUN(test_invariants);
	return check_done();
}
