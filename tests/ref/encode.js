#!/usr/bin/env node
// Reference encoder: prints token ids in titan-tok's text format so the two
// outputs can be compared with cmp.
//
//   node encode.js --hf TOKENIZER.json [--lines] FILE
//   node encode.js --tiktoken RANKFILE --pattern-file P --specials-file S [--lines] FILE
//
// One line per document, ids separated by single spaces.  A document is the
// whole file, or with --lines each line without its "\n" (a last line with no
// "\n" is a document too; a final "\n" does not start an empty one).  Ids are
// Hugging Face tokenizers' with addSpecialTokens=false and tiktoken's with
// allowed_special="all": text spelling a special token encodes as that token.
//
// The packages are looked up in NODE_PATH, then next to this script, so the
// caller points NODE_PATH at the node_modules that tests/ref/setup.sh filled.
'use strict';

const fs = require('fs');

function usage(msg) {
	if (msg)
		process.stderr.write(`encode.js: ${msg}\n`);
	process.stderr.write('usage: encode.js (--hf TOKENIZER.json | --tiktoken RANKFILE ' +
		'--pattern-file P --specials-file S) [--lines] FILE\n');
	process.exit(2);
}

function parseArgs(argv) {
	const opt = { lines: false };
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		const value = () => {
			if (i + 1 >= argv.length)
				usage(`'${a}' needs a value`);
			return argv[++i];
		};
		switch (a) {
		case '--hf': opt.hf = value(); break;
		case '--tiktoken': opt.tiktoken = value(); break;
		case '--pattern-file': opt.patternFile = value(); break;
		case '--specials-file': opt.specialsFile = value(); break;
		case '--lines': opt.lines = true; break;
		case '-h': case '--help': usage(); break;
		default:
			if (a.startsWith('-') && a !== '-')
				usage(`unknown option '${a}'`);
			if (opt.file !== undefined)
				usage('one input file only');
			opt.file = a;
		}
	}
	if (opt.file === undefined)
		usage('no input file');
	if (!opt.hf === !opt.tiktoken)
		usage('give exactly one of --hf and --tiktoken');
	if (opt.tiktoken && (!opt.patternFile || !opt.specialsFile))
		usage('--tiktoken needs --pattern-file and --specials-file');
	return opt;
}

function documents(text, lines) {
	if (!lines)
		return [text];
	const docs = text.split('\n');
	if (docs.length > 0 && docs[docs.length - 1] === '')
		docs.pop();
	return docs;
}

// HF's encodeBatch runs on its own thread pool; batches of this many
// documents keep memory flat without losing the parallelism.
const HF_BATCH = 4096;

async function encodeHF(file, docs) {
	const { Tokenizer } = require('tokenizers');
	const tok = Tokenizer.fromFile(file);
	const opts = { addSpecialTokens: false };
	const out = [];
	if (docs.length === 1) {
		const enc = await tok.encode(docs[0], null, opts);
		out.push(enc.getIds().join(' '));
		return out;
	}
	for (let i = 0; i < docs.length; i += HF_BATCH) {
		const encs = await tok.encodeBatch(docs.slice(i, i + HF_BATCH), opts);
		for (const enc of encs)
			out.push(enc.getIds().join(' '));
	}
	return out;
}

function encodeTiktoken(rankFile, patternFile, specialsFile, docs) {
	const { Tiktoken } = require('tiktoken/lite');
	const ranks = fs.readFileSync(rankFile, 'utf8');
	const pattern = fs.readFileSync(patternFile, 'utf8');
	const specials = JSON.parse(fs.readFileSync(specialsFile, 'utf8'));
	const enc = new Tiktoken(ranks, specials, pattern);
	try {
		return docs.map((d) => enc.encode(d, 'all').join(' '));
	} finally {
		enc.free();
	}
}

async function main() {
	const opt = parseArgs(process.argv.slice(2));
	const text = fs.readFileSync(opt.file === '-' ? 0 : opt.file, 'utf8');
	const docs = documents(text, opt.lines);
	const out = opt.hf ? await encodeHF(opt.hf, docs)
		: encodeTiktoken(opt.tiktoken, opt.patternFile, opt.specialsFile, docs);
	if (out.length === 0)
		return;
	// One write of the whole result: stdout may be a pipe, and
	// process.exit() after many small writes could cut it short.
	fs.writeFileSync(1, out.join('\n') + '\n');
}

main().catch((e) => {
	process.stderr.write(`encode.js: ${e && e.message ? e.message : e}\n`);
	process.exit(1);
});
