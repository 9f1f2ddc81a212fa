#!/usr/bin/env node
// Encoding throughput of the reference tokenizers, timed like titan-tok
// --stats: the tokenizer is loaded and the text read before the clock starts;
// only the encode calls are timed.
//
//   node tok_bench.js --impl tiktoken --tiktoken RANKS --pattern-file P
//                     --specials-file S [--threads N] [--runs R] FILE
//   node tok_bench.js --impl hf --hf TOKENIZER.json [--threads 1|0] [--runs R] FILE
//
// tiktoken, 1 thread: one encode() of the whole text.  N threads (0 = all
// cores): N worker_threads, each with its own encoder, each encoding one of
// N shares of the text cut at line ends; the time is from the start signal
// to the last worker's answer.
// hf: encodeBatch() of the text's paragraphs (cut after blank lines); with
// 1 thread under TOKENIZERS_PARALLELISM=false, else on the library's own
// thread pool, which uses every core.  (One encode() of the whole text is
// about half as fast as the batch on one thread, so the batch is the fairer
// reference.)
//
// Prints the best of R runs (default 3) as one line:
//   MBPS THREADS TOKENS
// with MB = 10^6 bytes of UTF-8 input.
'use strict';

const fs = require('fs');
const os = require('os');
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');

function usage(msg) {
	if (msg)
		process.stderr.write(`tok_bench.js: ${msg}\n`);
	process.stderr.write('usage: tok_bench.js --impl tiktoken|hf (--hf JSON | --tiktoken RANKS ' +
		'--pattern-file P --specials-file S) [--threads N] [--runs R] FILE\n');
	process.exit(2);
}

function parseArgs(argv) {
	const opt = { threads: 1, runs: 3 };
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		const value = () => {
			if (i + 1 >= argv.length)
				usage(`'${a}' needs a value`);
			return argv[++i];
		};
		switch (a) {
		case '--impl': opt.impl = value(); break;
		case '--hf': opt.hf = value(); break;
		case '--tiktoken': opt.tiktoken = value(); break;
		case '--pattern-file': opt.patternFile = value(); break;
		case '--specials-file': opt.specialsFile = value(); break;
		case '--threads': opt.threads = Number(value()); break;
		case '--runs': opt.runs = Number(value()); break;
		default:
			if (a.startsWith('-'))
				usage(`unknown option '${a}'`);
			opt.file = a;
		}
	}
	if (!opt.file)
		usage('no input file');
	if (opt.impl === 'hf' && !opt.hf)
		usage('--impl hf needs --hf');
	if (opt.impl === 'tiktoken' && (!opt.tiktoken || !opt.patternFile || !opt.specialsFile))
		usage('--impl tiktoken needs --tiktoken, --pattern-file and --specials-file');
	if (opt.impl !== 'hf' && opt.impl !== 'tiktoken')
		usage('--impl is tiktoken or hf');
	if (!Number.isInteger(opt.threads) || opt.threads < 0)
		usage('--threads is a count, 0 for all cores');
	if (!Number.isInteger(opt.runs) || opt.runs < 1)
		usage('--runs is a positive count');
	if (opt.threads === 0)
		opt.threads = os.availableParallelism ? os.availableParallelism() : os.cpus().length;
	return opt;
}

function loadTiktoken(o) {
	const { Tiktoken } = require('tiktoken/lite');
	return new Tiktoken(fs.readFileSync(o.tiktoken, 'utf8'),
		JSON.parse(fs.readFileSync(o.specialsFile, 'utf8')),
		fs.readFileSync(o.patternFile, 'utf8'));
}

// Cut text into n shares of about equal size, each ending at a line end.
function shares(text, n) {
	const out = [];
	let start = 0;
	for (let i = 1; i <= n && start < text.length; i++) {
		let end = i === n ? text.length : Math.floor(text.length * i / n);
		if (end < start)
			end = start;
		const nl = text.indexOf('\n', end);
		end = i === n || nl < 0 ? text.length : nl + 1;
		out.push(text.slice(start, end));
		start = end;
	}
	return out;
}

function seconds(t0) {
	return Number(process.hrtime.bigint() - t0) / 1e9;
}

// The worker side of the threaded tiktoken run: load, say ready, then encode
// the share on each 'go'.
function tiktokenWorker() {
	const enc = loadTiktoken(workerData.opt);
	const text = workerData.text;
	parentPort.on('message', (msg) => {
		if (msg === 'go') {
			parentPort.postMessage(enc.encode(text, 'all').length);
		} else {
			enc.free();
			parentPort.close();
		}
	});
	parentPort.postMessage('ready');
}

async function benchTiktoken(opt, text) {
	if (opt.threads === 1) {
		const enc = loadTiktoken(opt);
		let best = Infinity, tokens = 0;
		for (let r = 0; r < opt.runs; r++) {
			const t0 = process.hrtime.bigint();
			tokens = enc.encode(text, 'all').length;
			best = Math.min(best, seconds(t0));
		}
		enc.free();
		return { best, tokens };
	}
	const workers = shares(text, opt.threads).map((share) =>
		new Worker(__filename, { workerData: { opt, text: share } }));
	const next = (w) => new Promise((resolve, reject) => {
		w.once('message', resolve);
		w.once('error', reject);
	});
	await Promise.all(workers.map(next));
	let best = Infinity, tokens = 0;
	for (let r = 0; r < opt.runs; r++) {
		const done = workers.map(next);
		const t0 = process.hrtime.bigint();
		for (const w of workers)
			w.postMessage('go');
		const counts = await Promise.all(done);
		best = Math.min(best, seconds(t0));
		tokens = counts.reduce((a, b) => a + b, 0);
	}
	for (const w of workers)
		w.postMessage('stop');
	return { best, tokens };
}

async function benchHF(opt, text) {
	// The library parallelizes encodeBatch unless told not to; it reads
	// this variable on each call (RAYON_NUM_THREADS has no effect here).
	if (opt.threads === 1)
		process.env.TOKENIZERS_PARALLELISM = 'false';
	const { Tokenizer } = require('tokenizers');
	const tok = Tokenizer.fromFile(opt.hf);
	const eo = { addSpecialTokens: false };
	const paragraphs = text.split(/(?<=\n\n)/);
	let best = Infinity, tokens = 0;
	for (let r = 0; r < opt.runs; r++) {
		const t0 = process.hrtime.bigint();
		const encs = await tok.encodeBatch(paragraphs, eo);
		best = Math.min(best, seconds(t0));
		tokens = encs.reduce((a, e) => a + e.getIds().length, 0);
	}
	return { best, tokens };
}

async function main() {
	const opt = parseArgs(process.argv.slice(2));
	const text = fs.readFileSync(opt.file, 'utf8');
	const bytes = Buffer.byteLength(text, 'utf8');
	const r = opt.impl === 'hf' ? await benchHF(opt, text) : await benchTiktoken(opt, text);
	process.stdout.write(`${(bytes / 1e6 / r.best).toFixed(2)} ${opt.threads} ${r.tokens}\n`);
}

if (isMainThread) {
	main().catch((e) => {
		process.stderr.write(`tok_bench.js: ${e && e.message ? e.message : e}\n`);
		process.exit(1);
	});
} else {
	tiktokenWorker();
}
