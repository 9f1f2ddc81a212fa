/* test_config.c - config_load: defaults, flavors, file and override order,
 * every error message, printing and reloading.
 *
 * The flavors are found next to the test binary (build/tests/../../share)
 * or in $TITAN_SHARE/flavors. */
#include "core/base.h"

#include <unistd.h>

#include "check.h"
#include "config/config.h"

static bool have_flavors;

/* Write text to NAME in the scratch directory; the path goes to out. */
static void scratch_file(char *out, size_t n, const char *name, const char *text)
{
	snprintf(out, n, "%s/%s", check_scratch, name);
	FILE *fp = fopen(out, "w");
	if (fp) {
		fputs(text, fp);
		fclose(fp);
	}
}

static int load(train_config *c, const char *file, int n, const char **ov)
{
	return config_load(c, file, n, (char **)ov);
}

/* Loading fails with TITAN_EUSAGE and a message containing want. */
static void expect_error(const char *file, int n, const char **ov, const char *want)
{
	train_config c;
	int rc = load(&c, file, n, ov);
	CHECK(rc == TITAN_EUSAGE, "rc=%d msg='%s' (want '%s')", rc, titan_errmsg(), want);
	CHECK(strstr(titan_errmsg(), want), "message '%s' lacks '%s'", titan_errmsg(), want);
	CHECK(c.json == NULL, "a failed load keeps its JSON");
	if (!rc)
		config_free(&c);
}

static void expect_override_error(const char *ov, const char *want)
{
	expect_error(NULL, 1, &ov, want);
}

static void expect_file_error(const char *text, const char *want)
{
	char path[512];
	scratch_file(path, sizeof path, "bad.json", text);
	expect_error(path, 0, NULL, want);
}

static void test_defaults(void)
{
	train_config c;
	if (!have_flavors)
		SKIP("no flavor directory: %s", titan_errmsg());
	int rc = load(&c, NULL, 0, NULL);
	REQUIRE(rc == 0, "rc=%d %s", rc, titan_errmsg());
	CHECK(!strcmp(c.flavor, "debugmodel"), "flavor %s", c.flavor);
	CHECK(c.model.dim == 256 && c.model.n_layers == 6 && c.model.n_heads == 16 &&
	      c.model.n_kv_heads == 16 && c.model.vocab_size == 2048, "model dims");
	CHECK(c.model.ffn_hidden == 768, "ffn_hidden %d", c.model.ffn_hidden);
	CHECK(c.model.norm_eps == 1e-5 && c.model.rope_theta == 500000.0, "norm/rope");
	CHECK(!c.model.rope_scaling && c.model.rope_scaling_factor == 8.0 &&
	      c.model.rope_original_max_pos == 8192, "rope scaling fields");
	CHECK(c.model.max_seq_len == 2048 && !c.model.tie_embeddings && c.model.depth_init,
	      "max_seq_len/tie/depth_init");
	CHECK(!strcmp(c.data.dataset, "") && c.data.mask == MASK_BLOCK_CAUSAL, "data");
	CHECK(c.training.steps == 10 && c.training.local_batch_size == 8 &&
	      c.training.global_batch_size == -1 && c.training.seq_len == 2048 &&
	      c.training.seed == 0 && !strcmp(c.training.device, "cpu") &&
	      c.training.max_norm == 1.0 && c.training.threads == 0, "training");
	CHECK(!strcmp(c.optimizer.name, "AdamW") && c.optimizer.lr == 8e-4 &&
	      c.optimizer.weight_decay == 0.1 && c.optimizer.beta1 == 0.9 &&
	      c.optimizer.beta2 == 0.95 && c.optimizer.eps == 1e-8 &&
	      c.optimizer.decay_embeddings_and_norms, "optimizer");
	CHECK(c.lr_scheduler.warmup_steps == 2 && c.lr_scheduler.decay_ratio == -1 &&
	      c.lr_scheduler.decay_type == DECAY_LINEAR && c.lr_scheduler.min_lr_factor == 0,
	      "lr_scheduler");
	CHECK(!c.checkpoint.enable && !strcmp(c.checkpoint.folder, "checkpoint") &&
	      c.checkpoint.interval == 500 && c.checkpoint.keep_latest_k == 10 &&
	      !strcmp(c.checkpoint.load, "") && !c.checkpoint.async, "checkpoint");
	CHECK(c.metrics.log_freq == 10 && !strcmp(c.metrics.jsonl, "") &&
	      !strcmp(c.metrics.tensorboard, "") && c.metrics.peak_flops == 0, "metrics");
	CHECK(c.activation_checkpoint.mode == LLAMA_AC_NONE &&
	      c.activation_checkpoint.selective_every == 2, "activation_checkpoint");
	CHECK(c.validation.freq == 0 && c.validation.steps == 10, "validation");
	CHECK(c.parallelism.data_parallel_replicate_degree == 1 &&
	      c.parallelism.data_parallel_shard_degree == -1 &&
	      c.parallelism.tensor_parallel_degree == 1 &&
	      c.parallelism.pipeline_parallel_degree == 1 &&
	      c.parallelism.context_parallel_degree == 1, "parallelism");
	CHECK(json_is_real(json_object_get(json_object_get(c.json, "optimizer"), "lr")),
	      "floats are reals in the merged JSON");
	config_free(&c);
}

static void test_flavors(void)
{
	static const struct {
		const char *name;
		int dim, n_layers, n_heads, n_kv_heads, ffn_hidden;
		bool tie;
		double factor;
	} want[] = {
		{ "debugmodel", 256, 6, 16, 16, 768, false, 8 },
		{ "llama3_1b", 2048, 16, 32, 8, 8192, true, 32 },
		{ "llama3_3b", 3072, 28, 24, 8, 8192, true, 32 },
		{ "llama3_8b", 4096, 32, 32, 8, 14336, false, 8 },
		{ "llama3_70b", 8192, 80, 64, 8, 28672, false, 8 },
		{ "llama3_405b", 16384, 126, 128, 8, 53248, false, 8 },
	};
	char **names, ov[64];
	int n;

	if (!have_flavors)
		SKIP("no flavor directory");
	REQUIRE(config_list_flavors(&names, &n) == 0, "%s", titan_errmsg());
	CHECK(n >= (int)ARRAY_SIZE(want), "%d flavors", n);
	for (int i = 0; i + 1 < n; i++)
		CHECK(strcmp(names[i], names[i + 1]) < 0, "unsorted: %s %s", names[i],
		      names[i + 1]);
	for (int i = 0; i < n; i++) {
		train_config c;
		const char *arg = ov;
		snprintf(ov, sizeof ov, "model.flavor=%s", names[i]);
		int rc = load(&c, NULL, 1, &arg);
		CHECK(rc == 0, "%s: %s", names[i], titan_errmsg());
		if (!rc) {
			CHECK(!strcmp(c.flavor, names[i]), "flavor %s", c.flavor);
			config_free(&c);
		}
		free(names[i]);
	}
	free(names);

	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		train_config c;
		const char *arg = ov;
		snprintf(ov, sizeof ov, "model.flavor=%s", want[i].name);
		if (load(&c, NULL, 1, &arg)) {
			CHECK(0, "%s: %s", want[i].name, titan_errmsg());
			continue;
		}
		CHECK(c.model.dim == want[i].dim && c.model.n_layers == want[i].n_layers &&
		      c.model.n_heads == want[i].n_heads &&
		      c.model.n_kv_heads == want[i].n_kv_heads, "%s: shape", want[i].name);
		CHECK(c.model.ffn_hidden == want[i].ffn_hidden, "%s: ffn_hidden %d want %d",
		      want[i].name, c.model.ffn_hidden, want[i].ffn_hidden);
		CHECK(c.model.tie_embeddings == want[i].tie, "%s: tie", want[i].name);
		CHECK(c.model.rope_scaling_factor == want[i].factor &&
		      c.model.rope_low_freq_factor == 1 && c.model.rope_high_freq_factor == 4 &&
		      c.model.rope_original_max_pos == 8192, "%s: rope", want[i].name);
		if (i > 0)
			CHECK(c.model.vocab_size == 128256 && c.model.rope_scaling &&
			      c.model.max_seq_len == 131072, "%s: vocab/rope/max_seq_len",
			      want[i].name);
		config_free(&c);
	}
}

static void test_order(void)
{
	char path[512];
	train_config c;
	const char *ov[] = { "training.steps=30", "model.n_layers=3", "optimizer.lr=1e-3" };

	if (!have_flavors)
		SKIP("no flavor directory");
	scratch_file(path, sizeof path, "run.json",
		     "{\"training\": {\"steps\": 20, \"seq_len\": 512},\n"
		     " \"model\": {\"flavor\": \"debugmodel\", \"n_layers\": 2, \"dim\": 128},\n"
		     " \"optimizer\": {\"lr\": 3, \"beta2\": 0.99}}\n");
	REQUIRE(load(&c, path, 0, NULL) == 0, "%s", titan_errmsg());
	CHECK(c.training.steps == 20 && c.training.seq_len == 512, "file keys");
	CHECK(c.model.n_layers == 2 && c.model.dim == 128 && c.model.n_heads == 16,
	      "file model keys over the flavor");
	CHECK(c.optimizer.lr == 3.0 && c.optimizer.beta2 == 0.99, "integer accepted as float");
	config_free(&c);

	REQUIRE(load(&c, path, 3, ov) == 0, "%s", titan_errmsg());
	CHECK(c.training.steps == 30 && c.model.n_layers == 3 && c.optimizer.lr == 1e-3,
	      "overrides win");
	CHECK(c.training.seq_len == 512 && c.model.dim == 128, "file keys kept");
	config_free(&c);

	/* the override picks the flavor; the file's model keys still apply on top */
	const char *fl[] = { "model.flavor=llama3_8b", "training.steps=5",
			     "training.steps=6" };
	REQUIRE(load(&c, path, 3, fl) == 0, "%s", titan_errmsg());
	CHECK(!strcmp(c.flavor, "llama3_8b"), "flavor %s", c.flavor);
	CHECK(c.model.n_kv_heads == 8 && c.model.n_layers == 2 && c.model.dim == 128,
	      "flavor then file: kv %d layers %d dim %d", c.model.n_kv_heads,
	      c.model.n_layers, c.model.dim);
	CHECK(c.training.steps == 6, "later override wins");
	CHECK(!strcmp(json_string_value(json_object_get(json_object_get(c.json, "model"),
							"flavor")), "llama3_8b"),
	      "merged JSON names the loaded flavor");
	config_free(&c);
}

static void test_bools(void)
{
	train_config c;
	const char *ov[] = { "checkpoint.enable", "checkpoint.async=yes",
			     "optimizer.decay_embeddings_and_norms=0", "model.tie_embeddings=1",
			     "model.rope_scaling=no", "data.mask=causal",
			     "activation_checkpoint.mode=selective",
			     "lr_scheduler.decay_type=cosine", "training.device=cuda",
			     "data.dataset=a=b" };

	if (!have_flavors)
		SKIP("no flavor directory");
	REQUIRE(load(&c, NULL, (int)ARRAY_SIZE(ov), ov) == 0, "%s", titan_errmsg());
	CHECK(c.checkpoint.enable && c.checkpoint.async, "bool without value, yes");
	CHECK(!c.optimizer.decay_embeddings_and_norms && c.model.tie_embeddings &&
	      !c.model.rope_scaling, "0/1/no");
	CHECK(c.data.mask == MASK_CAUSAL && c.activation_checkpoint.mode == LLAMA_AC_SELECTIVE &&
	      c.lr_scheduler.decay_type == DECAY_COSINE && !strcmp(c.training.device, "cuda"),
	      "enums");
	CHECK(!strcmp(c.data.dataset, "a=b"), "value split at the first '=': %s",
	      c.data.dataset);
	config_free(&c);

	/* n_kv_heads 0 means one per query head, and the merged JSON says so */
	const char *kv = "model.n_kv_heads=0";
	REQUIRE(load(&c, NULL, 1, &kv) == 0, "%s", titan_errmsg());
	CHECK(c.model.n_kv_heads == 16, "n_kv_heads %d", c.model.n_kv_heads);
	CHECK(json_integer_value(json_object_get(json_object_get(c.json, "model"),
						 "n_kv_heads")) == 16, "JSON n_kv_heads");
	config_free(&c);
}

static void test_errors(void)
{
	if (!have_flavors)
		SKIP("no flavor directory");
	expect_file_error("{\"training\": {\"stpes\": 20}}",
			  "bad.json': $.training.stpes: unknown key; did you mean "
			  "'training.steps'?");
	expect_file_error("{\"optimizer\": {\"lr\": \"fast\"}}",
			  "bad.json': $.optimizer.lr: expected a number, got \"fast\"");
	expect_file_error("{\"training\": {\"steps\": 1.5}}",
			  "$.training.steps: expected an integer, got 1.5");
	expect_file_error("{\"training\": {\"seq_len\": 4096}}",
			  "training.seq_len: 4096 exceeds model.max_seq_len 2048");
	expect_file_error("{\"trainig\": {\"steps\": 2}}",
			  "$.trainig: unknown section; did you mean 'training'?");
	expect_file_error("{\"zzz\": {\"steps\": 2}}", "$.zzz: unknown section (sections: model, data, training, ");
	expect_file_error("{\"training\": 3}", "$.training: expected an object, got 3");
	expect_file_error("[1]", "expected a JSON object");

	train_config c0;
	char missing[512];
	snprintf(missing, sizeof missing, "%s/absent.json", check_scratch);
	int rc0 = load(&c0, missing, 0, NULL);
	CHECK(rc0 == TITAN_EIO && strstr(titan_errmsg(), "absent.json"), "rc=%d %s", rc0,
	      titan_errmsg());
	scratch_file(missing, sizeof missing, "syntax.json", "{\"training\": {\"steps\": 2,}}");
	rc0 = load(&c0, missing, 0, NULL);
	CHECK(rc0 == TITAN_EFORMAT && strstr(titan_errmsg(), "syntax.json': line 1"),
	      "rc=%d %s", rc0, titan_errmsg());
	expect_file_error("{\"model\": {\"flavor\": 3}}",
			  "$.model.flavor: expected a string, got 3");
	expect_file_error("{\"data\": {\"mask\": \"foo\"}}",
			  "$.data.mask: expected one of causal, block_causal, got \"foo\"");
	expect_file_error("{\"checkpoint\": {\"enable\": 1}}",
			  "$.checkpoint.enable: expected true or false, got 1");
	expect_file_error("{\"training\": {\"local_batch_size\": 1e12}}",
			  "$.training.local_batch_size: 1000000000000.0 is out of range");

	expect_override_error("training.steps=abc", "--training.steps=abc: expected an integer");
	expect_override_error("training.steps=", "--training.steps=: expected an integer");
	expect_override_error("training.steps=1.0", "--training.steps=1.0: expected an integer");
	expect_override_error("model.dim=99999999999", "--model.dim=99999999999: out of range");
	expect_override_error("optimizer.lr=inf", "--optimizer.lr=inf: expected a finite number");
	expect_override_error("optimizer.lr=1e-3x", "expected a finite number");
	expect_override_error("data.mask=foo", "--data.mask=foo: expected one of causal, "
			      "block_causal");
	expect_override_error("checkpoint.enable=maybe", "--checkpoint.enable=maybe: expected true");
	expect_override_error("training.steps", "--training.steps: expected '=VALUE'");
	expect_override_error("training.stpes=3",
			      "--training.stpes: unknown key; did you mean 'training.steps'?");
	expect_override_error("trainig.steps=3", "did you mean 'training.steps'?");
	expect_override_error("steps=3", "--steps: unknown key; did you mean 'training.steps'?");
	expect_override_error("optimizer.learning_rate=3",
			      "--optimizer.learning_rate: unknown key (optimizer keys: name, lr, ");
	expect_override_error("nonsense.thing=3", "unknown key (sections: model, data, training, ");
	expect_override_error("model.flavor=debugmdl",
			      "model.flavor: no flavor 'debugmdl'; did you mean 'debugmodel'? "
			      "(known: debugmodel, llama3_1b, ");
	expect_override_error("model.flavor=zzzzzzzzzzzzz", "no flavor 'zzzzzzzzzzzzz' (known: ");

	/* validation names the key */
	expect_override_error("training.steps=0", "training.steps: must be >= 1, got 0");
	expect_override_error("training.local_batch_size=0", "training.local_batch_size: must be");
	expect_override_error("training.seq_len=4096",
			      "training.seq_len: 4096 exceeds model.max_seq_len 2048");
	expect_override_error("training.global_batch_size=12", "training.global_batch_size: 12");
	expect_override_error("training.global_batch_size=0", "training.global_batch_size: 0");
	expect_override_error("training.seed=-1", "training.seed: must be >= 0");
	expect_override_error("training.threads=-2", "training.threads");
	expect_override_error("optimizer.lr=-1", "optimizer.lr: must be >= 0");
	expect_override_error("optimizer.beta1=1", "optimizer.beta1: must be in [0, 1), got 1.0");
	expect_override_error("optimizer.beta2=-0.1", "optimizer.beta2: must be in [0, 1)");
	expect_override_error("optimizer.eps=0", "optimizer.eps: must be > 0");
	expect_override_error("optimizer.weight_decay=-0.5", "optimizer.weight_decay");
	expect_override_error("lr_scheduler.warmup_steps=-1", "lr_scheduler.warmup_steps");
	expect_override_error("lr_scheduler.decay_ratio=2",
			      "lr_scheduler.decay_ratio: must be -1 or in [0, 1], got 2.0");
	expect_override_error("lr_scheduler.min_lr_factor=1.5", "lr_scheduler.min_lr_factor");
	expect_override_error("checkpoint.interval=0", "checkpoint.interval");
	expect_override_error("checkpoint.keep_latest_k=-1", "checkpoint.keep_latest_k");
	expect_override_error("metrics.log_freq=0", "metrics.log_freq");
	expect_override_error("activation_checkpoint.selective_every=0",
			      "activation_checkpoint.selective_every");
	expect_override_error("validation.steps=0", "validation.steps: must be -1 or >= 1");
	expect_override_error("parallelism.data_parallel_shard_degree=0",
			      "parallelism.data_parallel_shard_degree");
	expect_override_error("parallelism.tensor_parallel_degree=-1",
			      "parallelism.tensor_parallel_degree");
	expect_override_error("model.n_kv_heads=5", "model.n_kv_heads");

	/* edge values that are fine */
	const char *ok[] = { "training.global_batch_size=16", "lr_scheduler.decay_ratio=0",
			     "validation.steps=-1", "parallelism.data_parallel_shard_degree=2",
			     "training.seq_len=2048", "optimizer.beta1=0" };
	train_config c;
	int rc = load(&c, NULL, (int)ARRAY_SIZE(ok), ok);
	CHECK(rc == 0, "%s", titan_errmsg());
	if (!rc)
		config_free(&c);
}

static void test_flavor_files(void)
{
	char path[512], ov[600];
	const char *arg = ov;
	train_config c;

	if (!have_flavors)
		SKIP("no flavor directory");
	scratch_file(path, sizeof path, "tiny.json",
		     "{\"dim\": 64, \"n_layers\": 2, \"n_heads\": 4, \"n_kv_heads\": 2,"
		     " \"vocab_size\": 256, \"multiple_of\": 32, \"ffn_dim_multiplier\": 0,"
		     " \"norm_eps\": 1e-5, \"rope_theta\": 10000, \"rope_scaling\": false,"
		     " \"rope_scaling_factor\": 8, \"rope_low_freq_factor\": 1,"
		     " \"rope_high_freq_factor\": 4, \"rope_original_max_pos\": 8192,"
		     " \"max_seq_len\": 128, \"tie_embeddings\": true, \"depth_init\": false}");
	snprintf(ov, sizeof ov, "model.flavor=%s", path);
	const char *tiny[] = { ov, "training.seq_len=128" };
	REQUIRE(load(&c, NULL, 2, tiny) == 0, "%s", titan_errmsg());
	CHECK(c.model.dim == 64 && c.model.rope_theta == 10000 && c.model.max_seq_len == 128,
	      "a flavor by path");
	config_free(&c);

	scratch_file(path, sizeof path, "typo.json", "{\"dim\": 64, \"n_layerz\": 2}");
	snprintf(ov, sizeof ov, "model.flavor=%s", path);
	expect_error(NULL, 1, &arg, "typo.json': $.n_layerz: unknown key; did you mean "
		     "'model.n_layers'?");
	scratch_file(path, sizeof path, "flav.json", "{\"dim\": 64, \"flavor\": \"x\"}");
	snprintf(ov, sizeof ov, "model.flavor=%s", path);
	expect_error(NULL, 1, &arg, "flav.json': $.flavor: unknown key");
	scratch_file(path, sizeof path, "short.json", "{\"dim\": 64}");
	snprintf(ov, sizeof ov, "model.flavor=%s", path);
	expect_error(NULL, 1, &arg, "short.json': missing model key 'n_layers'");
}

static char *print_to_string(const train_config *c)
{
	char *s = NULL;
	size_t n = 0;
	FILE *fp = open_memstream(&s, &n);
	if (!fp)
		return NULL;
	int rc = config_print(c, fp);
	fclose(fp);
	if (rc) {
		free(s);
		return NULL;
	}
	return s;
}

static void test_roundtrip(void)
{
	char path[512];
	train_config a, b;
	const char *ov[] = { "optimizer.lr=3e-4", "training.seed=18446744073709551",
			     "data.dataset=dir with \"quotes\"", "model.norm_eps=1e-6",
			     "metrics.peak_flops=989e12", "lr_scheduler.decay_ratio=0.1",
			     "model.flavor=llama3_1b", "model.rope_theta=123456.789" };

	if (!have_flavors)
		SKIP("no flavor directory");
	REQUIRE(load(&a, NULL, (int)ARRAY_SIZE(ov), ov) == 0, "%s", titan_errmsg());
	char *s1 = print_to_string(&a);
	REQUIRE(s1, "print failed: %s", titan_errmsg());
	CHECK(strstr(s1, "\"lr\": 0.0003,"), "lr prints readably:\n%s", s1);
	CHECK(strstr(s1, "\"max_norm\": 1.0,"), "reals keep a point");
	CHECK(strstr(s1, "\"eps\": 1e-08"), "eps");
	CHECK(strstr(s1, "\"flavor\": \"llama3_1b\""), "flavor");
	CHECK(s1[0] == '{' && strstr(s1, "\n  \"activation_checkpoint\": {\n    \"mode\""),
	      "indented, sorted:\n%.200s", s1);
	scratch_file(path, sizeof path, "printed.json", s1);
	int rc = load(&b, path, 0, NULL);
	CHECK(rc == 0, "reload: %s", titan_errmsg());
	if (!rc) {
		char *s2 = print_to_string(&b);
		CHECK(s2 && !strcmp(s1, s2), "print differs after reload:\n%s\n%s", s1,
		      s2 ? s2 : "(null)");
		CHECK(json_equal(a.json, b.json), "merged JSON differs after reload");
		CHECK(b.optimizer.lr == 3e-4 && b.model.rope_theta == 123456.789 &&
		      b.training.seed == 18446744073709551ULL, "values survive the trip");
		free(s2);
		config_free(&b);
	}
	free(s1);
	config_free(&a);
}

static void test_print_keys(void)
{
	char *s = NULL;
	size_t n = 0;
	FILE *fp = open_memstream(&s, &n);
	REQUIRE(fp, "open_memstream");
	config_print_keys(fp);
	fclose(fp);
	int lines = 0;
	for (char *p = s; *p; p++)
		lines += *p == '\n';
	CHECK(lines >= 55, "%d lines", lines);
	char *line = strstr(s, "training.steps ");
	CHECK(line && strstr(line, "int") && strstr(line, "10") &&
	      strstr(line, "optimizer steps to run"), "training.steps line");
	CHECK(strstr(s, "causal|block_causal"), "enum choices");
	CHECK(strstr(s, "(flavor)"), "model keys default to the flavor");
	/* aligned: the help column starts at the same offset on every line */
	char *l1 = strstr(s, "model.dim "), *l2 = strstr(s, "training.steps ");
	if (l1 && l2)
		CHECK(strstr(l1, "model width") - l1 == strstr(l2, "optimizer steps") - l2,
		      "help columns align");
	free(s);
}

static bool find_flavors(void)
{
	char **names;
	int n;

	if (config_list_flavors(&names, &n))
		return false;
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return n > 0;
}

int main(void)
{
	have_flavors = find_flavors();
	/* a binary built outside build/ finds the flavors from the tree's root */
	if (!have_flavors && !getenv("TITAN_SHARE") && !access("share/titan/flavors", R_OK)) {
		setenv("TITAN_SHARE", "share/titan", 1);
		have_flavors = find_flavors();
	}
	if (check_scratch_open("test_config"))
		return 1;
	RUN(test_defaults);
	RUN(test_flavors);
	RUN(test_order);
	RUN(test_bools);
	RUN(test_errors);
	RUN(test_flavor_files);
	RUN(test_roundtrip);
	RUN(test_print_keys);
	check_rmtree(check_scratch);
	return check_done();
}
