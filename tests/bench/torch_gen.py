#!/usr/bin/python3
"""torch_gen.py - PyTorch's prefill and decode speed on the CPU with a KV
cache, the reference titan-gen is measured against: eager fp32, the model
of tests/golden/reference.py (random weights of the given shapes), batch 1,
greedy decoding.

    /usr/bin/python3 tests/bench/torch_gen.py --dim 256 --n-layers 6 \\
        --n-heads 16 --n-kv-heads 16 --vocab 2048 --multiple-of 256 \\
        --prompt 256 --new 128 --threads 2

The cache is preallocated for prompt + new tokens; prefill is one forward
of the prompt that fills it, each decode step one forward of one token that
reads it.  Prints one JSON line: prefill and decode tokens per second (the
best of --runs runs, after one untimed warm-up run).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(here, "..", "golden"))
from reference import ModelArgs, Transformer, apply_rotary_emb  # noqa: E402


class Cache:
    def __init__(self, args, length):
        D = args.dim // args.n_heads
        shape = (1, length, args.n_kv_heads, D)
        self.k = [torch.zeros(shape) for _ in range(args.n_layers)]
        self.v = [torch.zeros(shape) for _ in range(args.n_layers)]


def forward(model, tokens, cache, start):
    """Logits of the last of tokens [1, T], which sit at positions start..;
    the cache receives their keys and values."""
    a = model.args
    B, T = tokens.shape
    H, KV, D = a.n_heads, a.n_kv_heads, a.dim // a.n_heads
    end = start + T
    freqs = model.freqs_cis[start:end][None]
    h = model.tok_embeddings(tokens)
    mask = None
    if T > 1:
        i = torch.arange(start, end)[:, None]
        mask = torch.arange(end)[None, :] <= i
    for l, layer in enumerate(model.layers.values()):
        att = layer.attention
        x = layer.attention_norm(h)
        xq = apply_rotary_emb(att.wq(x).view(B, T, H, D), freqs)
        cache.k[l][:, start:end] = apply_rotary_emb(att.wk(x).view(B, T, KV, D), freqs)
        cache.v[l][:, start:end] = att.wv(x).view(B, T, KV, D)
        keys = torch.repeat_interleave(cache.k[l][:, :end], H // KV, dim=2)
        values = torch.repeat_interleave(cache.v[l][:, :end], H // KV, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (xq, keys, values))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = F.softmax(scores, dim=-1) @ v
        h = h + att.wo(out.transpose(1, 2).reshape(B, T, H * D))
        h = h + layer.feed_forward(layer.ffn_norm(h))
    h = model.norm(h[:, -1:])
    if a.tie_embeddings:
        return h @ model.tok_embeddings.weight.t()
    return model.output(h)


def run(model, prompt, new):
    cache = Cache(model.args, prompt.shape[1] + new)
    t0 = time.perf_counter()
    logits = forward(model, prompt, cache, 0)
    t1 = time.perf_counter()
    pos = prompt.shape[1]
    for _ in range(new):
        nxt = torch.argmax(logits[0, -1]).view(1, 1)
        logits = forward(model, nxt, cache, pos)
        pos += 1
    t2 = time.perf_counter()
    return prompt.shape[1] / (t1 - t0), new / (t2 - t1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--n-heads", type=int, default=16)
    p.add_argument("--n-kv-heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--multiple-of", type=int, default=256)
    p.add_argument("--prompt", type=int, default=256, help="prompt tokens")
    p.add_argument("--new", type=int, default=128, help="tokens decoded")
    p.add_argument("--runs", type=int, default=1, help="timed runs; the best counts")
    p.add_argument("--threads", type=int, default=0, help="0: torch's default")
    a = p.parse_args()

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    args = ModelArgs(dim=a.dim, n_layers=a.n_layers, n_heads=a.n_heads,
                     n_kv_heads=a.n_kv_heads, vocab_size=a.vocab,
                     multiple_of=a.multiple_of, max_seq_len=a.prompt + a.new)
    model = Transformer(args).eval()
    prompt = torch.randint(0, a.vocab, (1, a.prompt), generator=torch.Generator().manual_seed(0))
    best = (0.0, 0.0)
    with torch.no_grad():
        run(model, prompt, min(a.new, 8))  # warm-up
        for _ in range(a.runs):
            pre, dec = run(model, prompt, a.new)
            best = (max(best[0], pre), max(best[1], dec))
    print(json.dumps({"prefill_tps": best[0], "decode_tps": best[1],
                      "params": sum(p.numel() for p in model.parameters()),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
