/* titan-train - pretrain a Llama 3 model on a titan-pack dataset. */
#include "core/base.h"
#include <pthread.h>
#include <signal.h>
#include "cli.h"
#include "config/config.h"
#include "dist/comm.h"
#include "train/loop.h"

#define PROG "titan-train"
#define TRAIN_SYNOPSIS "titan-train [-c CONFIG.json] [--section.key=value ...] [-q] [-v]"
#define PRINT_SYNOPSIS "titan-train [-c CONFIG.json] [--section.key=value ...] --print-config"
#define KEYS_SYNOPSIS "titan-train --list-keys | --list-flavors"

static const char usage_top[] =
	"usage: " TRAIN_SYNOPSIS "\n"
	"       " PRINT_SYNOPSIS "\n"
	"       " KEYS_SYNOPSIS "\n"
	"\n"
	"Train a Llama 3 model: the configuration is the built-in defaults, the\n"
	"model flavor, CONFIG.json, then each --section.key=value in order, e.g.\n"
	"  titan-train --model.flavor=debugmodel --data.dataset=kjv.ds --training.steps=100\n"
	"\n"
	"options:\n"
	"  -c, --config FILE   JSON configuration file\n"
	"      --device NAME   where to train: cpu (default), cuda, cpu-fenced\n"
	"      --print-config  print the merged configuration and exit\n"
	"      --list-keys     every configuration key with its type, default and meaning\n"
	"      --list-flavors  the model flavors this installation has\n"
	"  -q, --quiet         only errors\n"
	"  -v, --verbose       more detail\n"
	"  -h, --help          this help\n"
	"      --version       the version\n"
	"\n"
	"man titan-train for the keys, the metrics and the checkpoints.\n";

static int list_flavors(void)
{
	char **names;
	int n, rc = config_list_flavors(&names, &n);
	if (rc)
		return rc;
	for (int i = 0; i < n; i++) {
		printf("%s\n", names[i]);
		free(names[i]);
	}
	free(names);
	return cli_finish_stdout();
}

static int cmd_train(int argc, char **argv, titan_log *log)
{
	const char *config_file = NULL, *device = NULL;
	char *device_key = NULL;
	bool print_config = false, list_keys = false, flavors = false;
	int verbose = 0;
	opt_spec specs[] = {
		{"config", 'c', OPT_STR, &config_file, "FILE", "JSON configuration file"},
		{"device", 0, OPT_STR, &device, "NAME", "training.device: cpu, cuda, cpu-fenced"},
		{"print-config", 0, OPT_FLAG, &print_config, NULL, "print the merged configuration"},
		{"list-keys", 0, OPT_FLAG, &list_keys, NULL, "every configuration key"},
		{"list-flavors", 0, OPT_FLAG, &flavors, NULL, "the model flavors"},
		{"quiet", 'q', OPT_DEC, &verbose, NULL, "only errors"},
		{"verbose", 'v', OPT_INC, &verbose, NULL, "more detail"},
		{0},
	};
	char **overrides;
	int noverrides, rc;
	train_config cfg;
	train_result res;
	comm *world = NULL;
	sigset_t stop, old_mask;
	bool config_failed;

	if ((rc = cli_parse_config_args(specs, argc, argv, &overrides, &noverrides)))
		return rc;
	/* --device NAME is the last word on training.device (the overrides
	 * array has room: NAME took an argument of its own) */
	if (device) {
		if (asprintf(&device_key, "training.device=%s", device) < 0) {
			device_key = NULL;
			rc = titan_err_nomem();
			goto out;
		}
		overrides[noverrides++] = device_key;
	}
	log->verbosity += verbose;
	if (list_keys) {
		config_print_keys(stdout);
		rc = cli_finish_stdout();
		goto out;
	}
	if (flavors) {
		rc = list_flavors();
		goto out;
	}
	if (print_config) {
		config_failed = (rc = config_load(&cfg, config_file, noverrides, overrides)) != 0;
	if (!rc) {
			rc = config_print(&cfg, stdout);
			if (!rc)
				rc = cli_finish_stdout();
			config_free(&cfg);
		}
		goto out;
	}
	/* Under mpirun or srun every rank runs this; the ranks meet first, so
	 * that each message can say which rank it comes from.  MPI starts
	 * threads of its own: they must inherit SIGINT and SIGTERM blocked, or
	 * one of them takes the signal and the process dies instead of saving
	 * (train_run decides when to stop). */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, &old_mask);
	if ((rc = comm_world(&world, 0))) {
		pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
		goto out;
	}
	if (comm_rank(world) > 0 && verbose <= 0)
		log->verbosity = 0;   /* rank 0 speaks for the run unless -v */
	config_failed = (rc = config_load(&cfg, config_file, noverrides, overrides)) != 0;
	if (!rc) {
		double t0 = titan_now();
		rc = train_run(&cfg, world, log, &res);
		if (!rc && res.last_step >= res.first_step)
			log_info(log, "done: steps %ld..%ld in %.1f s, loss %.4f, peak memory "
				 "%.1f MiB%s%s", res.first_step, res.last_step, titan_now() - t0,
				 res.last_loss, res.mem_peak / (1024.0 * 1024.0),
				 comm_size(world) > 1 ? " (largest rank)" : "",
				 res.interrupted ? " (interrupted)" : "");
		config_free(&cfg);
	}
	if (rc && comm_size(world) > 1)
		cli_rank_failed(world, log, rc, config_failed);
	comm_free(world);
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
out:
	free(device_key);
	free(overrides);
	return rc;
}

int main(int argc, char **argv)
{
	static const cli_command cmds[] = { {0} };
	const cli_tool tool = {.prog = PROG, .usage = usage_top, .cmds = cmds, .bare = cmd_train};
	return cli_main(&tool, argc, argv);
}
