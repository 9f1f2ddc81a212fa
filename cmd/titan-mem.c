/* titan-mem - per-device memory estimate for a training config, without
 * building the model (lib/mem/memmodel.h). */
#include "core/base.h"
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <unistd.h>
#include "cli.h"
#include "config/config.h"
#include "mem/memmodel.h"

#define PROG "titan-mem"
#define MEM_SYNOPSIS "titan-mem [-c CONFIG.json] [--section.key=value ...] [--json] [options]"

static const char usage_top[] =
	"usage: " MEM_SYNOPSIS "\n"
	"\n"
	"Estimate the memory each rank of a training run holds: the configuration\n"
	"is titan-train's (defaults, flavor, CONFIG.json, --section.key=value), e.g.\n"
	"  titan-mem --model.flavor=llama3_8b --training.device=cuda \\\n"
	"            --training.seq_len=8192 --training.local_batch_size=2 \\\n"
	"            --activation_checkpoint.mode=selective --world-size 8\n"
	"\n"
	"options:\n"
	"  -c, --config FILE          JSON configuration file\n"
	"      --json                 one JSON object instead of the table\n"
	"      --world-size N         ranks (default: the product of the degrees)\n"
	"      --device-memory SIZE   memory of one device, e.g. 80GiB (default: cpu:\n"
	"                             this machine's RAM, cuda: 80GiB)\n"
	"      --precision P          fp32 (default, the trainer's) or bf16\n"
	"      --pp-schedule S        gpipe, 1f1b or interleaved (default 1f1b)\n"
	"      --pp-microbatches N    microbatches per step under pp (default: one\n"
	"                             sequence each)\n"
	"      --pp-virtual-stages N  interleaved: stages per rank (default 2)\n"
	"      --no-sequence-parallel TP without sequence parallel\n"
	"      --reshard-after-forward yes or no: FSDP frees gathered blocks after\n"
	"                             forward (default: yes, no under pp)\n"
	"  -h, --help                 this help\n"
	"      --version              the version\n"
	"\n"
	"man titan-mem for every line of the table and its formula.\n";

static size_t machine_memory(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);

	return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}

struct mem_args {
	const char *config, *device_memory, *precision, *schedule, *reshard;
	long long world, microbatches, virtual_stages;
	bool json, no_sp;
};

static int apply_args(const struct mem_args *a, mem_model_opts *o)
{
	if (a->precision) {
		if (!strcmp(a->precision, "fp32"))
			o->prec = MEM_PREC_FP32;
		else if (!strcmp(a->precision, "bf16"))
			o->prec = MEM_PREC_BF16;
		else
			return titan_err(TITAN_EUSAGE, "--precision: '%s' is not fp32 or bf16",
					 a->precision);
	}
	if (a->schedule) {
		if (!strcmp(a->schedule, "gpipe"))
			o->pp_schedule = MEM_PP_GPIPE;
		else if (!strcmp(a->schedule, "1f1b"))
			o->pp_schedule = MEM_PP_1F1B;
		else if (!strcmp(a->schedule, "interleaved"))
			o->pp_schedule = MEM_PP_INTERLEAVED;
		else
			return titan_err(TITAN_EUSAGE, "--pp-schedule: '%s' is not gpipe, 1f1b "
					 "or interleaved", a->schedule);
	}
	/* interleaving asked for here, not by the configuration */
	if (o->pp_schedule == MEM_PP_INTERLEAVED && o->pp_virtual < 2)
		o->pp_virtual = 2;
	if (a->virtual_stages) {
		if (a->virtual_stages < 1 || a->virtual_stages > 1024)
			return titan_err(TITAN_EUSAGE, "--pp-virtual-stages: %lld is not in 1..1024",
					 a->virtual_stages);
		o->pp_virtual = (int)a->virtual_stages;
	}
	if (a->microbatches) {
		if (a->microbatches < 1 || a->microbatches > INT_MAX)
			return titan_err(TITAN_EUSAGE, "--pp-microbatches: %lld must be positive",
					 a->microbatches);
		o->pp_microbatches = (int)a->microbatches;
	}
	if (a->reshard) {
		if (!strcmp(a->reshard, "yes"))
			o->reshard_after_forward = true;
		else if (!strcmp(a->reshard, "no"))
			o->reshard_after_forward = false;
		else
			return titan_err(TITAN_EUSAGE, "--reshard-after-forward: '%s' is not yes "
					 "or no", a->reshard);
	}
	if (a->no_sp)
		o->sequence_parallel = false;
	return mem_model_check(o, 0);
}

static const char *const ac_name[] = { "none", "full", "selective" };
static const char *const sched_name[] = { "gpipe", "1f1b", "interleaved" };

static double gib(size_t b)
{
	return (double)b / 0x1p30;
}

static void print_table(const train_config *c, const mem_model_opts *o,
			const mem_model_report *r, size_t device, int max_batch)
{
	const mem_stage *w = &r->stage[r->worst];
	const par_layout *p = &o->par;
	int world = p->pp * p->dp_replicate * p->dp_shard * p->cp * p->tp;
	bool any_model_only = false, stages_differ = false;

	printf("model %s: %" PRIu64 " parameters; %d rank%s (pp=%d dp_replicate=%d "
	       "dp_shard=%d cp=%d tp=%d%s)\n", c->flavor, llama_param_count(&o->model), world,
	       world == 1 ? "" : "s", p->pp, p->dp_replicate, p->dp_shard, p->cp, p->tp,
	       p->tp > 1 ? (o->sequence_parallel ? ", sequence parallel" : ", no sequence "
			    "parallel") : "");
	printf("%s%s on %s; batch %d x %d tokens per rank; activation_checkpoint=%s",
	       o->prec == MEM_PREC_BF16 ? "bf16 mixed precision (fp32 master weights, "
	       "moments, gradients)" : "fp32", o->matmul_bf16 ? ", bf16 GEMM operands" : "",
	       o->cuda ? "cuda" : "cpu", o->batch, o->seq_len, ac_name[o->ac]);
	if (o->ac == LLAMA_AC_SELECTIVE)
		printf(" (every %d)", o->ac_every);
	printf("\n");
	if (p->pp > 1)
		printf("pipeline: %s, %d microbatches of %d sequence%s%s\n",
		       sched_name[o->pp_schedule], o->batch / w->micro_batch, w->micro_batch,
		       w->micro_batch == 1 ? "" : "s",
		       o->pp_schedule == MEM_PP_INTERLEAVED ? ", virtual stages" : "");
	printf("\nlargest rank: %s%d of %d, %" PRIu64 " parameters held, %d blocks, %d "
	       "microbatch%s in flight\n\n", "pp stage ", r->worst, r->nstages, w->params,
	       w->layers, w->in_flight, w->in_flight == 1 ? "" : "es");
	printf("%-28s %16s %12s\n", "", "bytes", "MiB");
	for (int i = 0; i < MEM_NROWS; i++) {
		const mem_row_info *ri = &mem_row_infos[i];
		bool off_device = o->cuda && ri->host;

		if (!w->row[i])
			continue;
		printf("%-28s %16zu %12.1f%s%s\n", ri->label, w->row[i],
		       (double)w->row[i] / 0x1p20, w->model_only[i] ? "  *" : "",
		       off_device ? "  (host memory, not in the total)" : "");
		any_model_only |= w->model_only[i];
	}
	printf("%-28s %16zu %12.1f  (%.2f GiB)\n", "total", w->total,
	       (double)w->total / 0x1p20, gib(w->total));
	if (!o->cuda)
		printf("%-28s %16zu %12.1f  (what titan-train's peak memory counts)\n",
		       "tracked by the trainer", w->tracked, (double)w->tracked / 0x1p20);
	printf("%-28s %16zu %12.1f  (activation_checkpoint=none would need)\n",
	       "activations without AC", w->act_none, (double)w->act_none / 0x1p20);
	if (p->tp > 1)
		printf("%-28s %16zu %12.1f  (activations, logits, scratch %s sequence "
		       "parallel)\n", o->sequence_parallel ? "without sequence parallel" :
		       "with sequence parallel", w->act_other_sp,
		       (double)w->act_other_sp / 0x1p20, o->sequence_parallel ? "without" : "with");
	if (any_model_only)
		printf("\n* model only, not yet measured: no trainer runs this layout or "
		       "precision yet\n");

	for (int s = 1; s < r->nstages; s++)
		stages_differ |= r->stage[s].total != r->stage[0].total;
	if (stages_differ) {
		printf("\n%-8s %14s %10s %12s\n", "pp stage", "parameters", "in flight", "GiB");
		for (int s = 0; s < r->nstages; s++)
			printf("%-8d %14" PRIu64 " %10d %12.2f\n", s, r->stage[s].params,
			       r->stage[s].in_flight, gib(r->stage[s].total));
	}
	printf("\ndevice memory %.2f GiB: %s (%.2f GiB %s)\n", gib(device),
	       w->total <= device ? "fits" : "does not fit",
	       fabs(gib(device) - gib(w->total)),
	       w->total <= device ? "to spare" : "short");
	if (max_batch > 0)
		printf("largest training.local_batch_size that fits: %d\n", max_batch);
	else if (max_batch < 0)
		printf("largest training.local_batch_size that fits: any (more sequences are "
		       "more microbatches of %d, not more memory)\n", w->micro_batch);
	else
		printf("largest training.local_batch_size that fits: none (even 1 does not)\n");
}

static json_t *breakdown_json(const mem_stage *st)
{
	json_t *b = json_object();

	for (int i = 0; b && i < MEM_NROWS; i++)
		json_object_set_new(b, mem_row_infos[i].key, json_integer((json_int_t)st->row[i]));
	return b;
}

static int print_json(const train_config *c, const mem_model_opts *o,
		      const mem_model_report *r, size_t device, int max_batch)
{
	const mem_stage *w = &r->stage[r->worst];
	const par_layout *p = &o->par;
	json_t *root, *stages, *mo;
	int rc;

	mo = json_array();
	for (int i = 0; mo && i < MEM_NROWS; i++)
		if (w->model_only[i] && w->row[i])
			json_array_append_new(mo, json_string(mem_row_infos[i].key));
	stages = json_array();
	for (int s = 0; stages && s < r->nstages; s++)
		json_array_append_new(stages, json_pack(
			"{s:i, s:I, s:I, s:i, s:i, s:o}", "stage", s,
			"total_bytes", (json_int_t)r->stage[s].total,
			"params", (json_int_t)r->stage[s].params,
			"layers", r->stage[s].layers, "in_flight", r->stage[s].in_flight,
			"breakdown", breakdown_json(&r->stage[s])));
	root = json_pack("{s:s, s:I, s:i, s:i, s:s, s:s, s:s, s:s, s:{s:i, s:i, s:i, s:i, s:i}, "
			 "s:b, s:I, s:I, s:I, s:I, s:o, s:o, s:i, s:I, s:b, s:i, s:o}",
			 "flavor", c->flavor,
			 "model_params", (json_int_t)llama_param_count(&o->model),
			 "local_batch_size", o->batch, "seq_len", o->seq_len,
			 "activation_checkpoint", ac_name[o->ac],
			 "precision", o->prec == MEM_PREC_BF16 ? "bf16" : "fp32",
			 "matmul_dtype", o->matmul_bf16 ? "bfloat16" : "float32",
			 "device", o->cuda ? "cuda" : "cpu",
			 "parallelism", "pp", p->pp, "dp_replicate", p->dp_replicate,
			 "dp_shard", p->dp_shard, "cp", p->cp, "tp", p->tp,
			 "sequence_parallel", o->sequence_parallel && p->tp > 1,
			 "total_bytes", (json_int_t)w->total,
			 "tracked_bytes", (json_int_t)w->tracked,
			 "activations_without_ac_bytes", (json_int_t)w->act_none,
			 "activations_other_sequence_parallel_bytes", (json_int_t)w->act_other_sp,
			 "breakdown", breakdown_json(w),
			 "model_only", mo ? mo : json_array(),
			 "stage", r->worst,
			 "device_memory_bytes", (json_int_t)device,
			 "fits", w->total <= device,
			 "max_local_batch_size", max_batch,
			 "stages", stages ? stages : json_array());
	if (!root)
		return titan_err_nomem();
	rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (rc)
		return titan_err(TITAN_EIO, "cannot write standard output");
	putchar('\n');
	return cli_finish_stdout();
}

static int estimate(const train_config *c, const struct mem_args *a)
{
	mem_model_opts o;
	mem_model_report r;
	size_t device = 0;
	int rc, max_batch;

	if (a->world < 0 || a->world > INT_MAX)
		return titan_err(TITAN_EUSAGE, "--world-size: %lld must be positive", a->world);
	if ((rc = mem_model_from_config(&o, c, (int)a->world)) || (rc = apply_args(a, &o)))
		return rc;
	if (a->device_memory) {
		uint64_t bytes;
		if ((rc = cli_parse_size("--device-memory", a->device_memory, &bytes)))
			return rc;
		device = (size_t)bytes;
	} else {
		device = o.cuda ? (size_t)80 << 30 : machine_memory();
	}
	if ((rc = mem_model_estimate(&o, &r)))
		return rc;
	if (!(rc = mem_model_max_batch(&o, device, &max_batch))) {
		if (a->json)
			rc = print_json(c, &o, &r, device, max_batch);
		else {
			print_table(c, &o, &r, device, max_batch);
			rc = cli_finish_stdout();
		}
	}
	mem_model_report_free(&r);
	return rc;
}

static int cmd_mem(int argc, char **argv, titan_log *log)
{
	struct mem_args a = { 0 };
	opt_spec specs[] = {
		{"config", 'c', OPT_STR, &a.config, "FILE", "JSON configuration file"},
		{"json", 0, OPT_FLAG, &a.json, NULL, "one JSON object"},
		{"world-size", 0, OPT_INT, &a.world, "N", "ranks"},
		{"device-memory", 0, OPT_STR, &a.device_memory, "SIZE", "memory of one device"},
		{"precision", 0, OPT_STR, &a.precision, "P", "fp32 or bf16"},
		{"pp-schedule", 0, OPT_STR, &a.schedule, "S", "gpipe, 1f1b or interleaved"},
		{"pp-microbatches", 0, OPT_INT, &a.microbatches, "N", "microbatches under pp"},
		{"pp-virtual-stages", 0, OPT_INT, &a.virtual_stages, "N", "interleaved stages"},
		{"no-sequence-parallel", 0, OPT_FLAG, &a.no_sp, NULL, "TP without SP"},
		{"reshard-after-forward", 0, OPT_STR, &a.reshard, "yes|no", "FSDP resharding"},
		{0},
	};
	char **overrides;
	int noverrides, rc;
	train_config cfg;

	(void)log;
	if ((rc = cli_parse_config_args(specs, argc, argv, &overrides, &noverrides)))
		return rc;
	if ((rc = config_load(&cfg, a.config, noverrides, overrides)))
		goto out;
	rc = estimate(&cfg, &a);
	config_free(&cfg);
out:
	free(overrides);
	return rc;
}

int main(int argc, char **argv)
{
	static const cli_command cmds[] = { {0} };
	const cli_tool tool = {.prog = PROG, .usage = usage_top, .cmds = cmds, .bare = cmd_mem};

	return cli_main(&tool, argc, argv);
}
