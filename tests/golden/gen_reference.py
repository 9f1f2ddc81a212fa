#!/usr/bin/python3
"""gen_reference.py - PyTorch's greedy continuation and per-token
log-probabilities for a titan checkpoint, the oracle titan-gen is tested
against (tests/titan-gen.bats).

    /usr/bin/python3 tests/golden/gen_reference.py CKPT --ids "1 5 9" --greedy 20 [--eos ID]
    /usr/bin/python3 tests/golden/gen_reference.py CKPT --ids "1 5 9" --score

CKPT is a single-rank step directory (or a folder: its latest step-N).  The
weights are read by hand from rank-00000.safetensors (a little-endian u64
header length, the JSON header, then the raw tensors), the model is
reference.py's Transformer built from the manifest's extra.config.model, and
every step is a full forward of the whole sequence (no cache), so that the
KV cache of titan-gen is checked against plain attention.

Prints one JSON line: {"ids": [...]} (the generated ids, stopping before
EOS) or {"tokens": N, "mean_nll": x, "logprobs": [...]}.
"""
import argparse
import json
import os
import re
import struct
import sys

import torch

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import ModelArgs, Transformer  # noqa: E402

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def step_dir(path):
    if os.path.exists(os.path.join(path, "manifest.json")):
        return path
    steps = [(int(m.group(1)), d) for d in os.listdir(path)
             if (m := re.fullmatch(r"step-(\d+)", d))]
    if not steps:
        sys.exit("gen_reference.py: '%s': no checkpoint" % path)
    return os.path.join(path, max(steps)[1])


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        x = torch.frombuffer(bytearray(data[b:e]), dtype=DTYPES[t["dtype"]])
        out[name] = x.reshape(t["shape"]).float()
    return out


def load(path):
    d = step_dir(path)
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    m = man["extra"]["config"]["model"]
    args = ModelArgs(
        dim=m["dim"], n_layers=m["n_layers"], n_heads=m["n_heads"],
        n_kv_heads=m["n_kv_heads"] or m["n_heads"], vocab_size=m["vocab_size"],
        multiple_of=m["multiple_of"], ffn_dim_multiplier=m["ffn_dim_multiplier"],
        norm_eps=m["norm_eps"], rope_theta=m["rope_theta"],
        rope_scaling=m["rope_scaling"], rope_scaling_factor=m["rope_scaling_factor"],
        rope_low_freq_factor=m["rope_low_freq_factor"],
        rope_high_freq_factor=m["rope_high_freq_factor"],
        rope_original_max_pos=m["rope_original_max_pos"],
        max_seq_len=m["max_seq_len"], tie_embeddings=m["tie_embeddings"])
    if m.get("ffn_hidden", 0) > 0:
        hidden = m["ffn_hidden"]
        args.ffn_hidden = lambda: hidden
    model = Transformer(args)
    weights = read_safetensors(os.path.join(d, "rank-00000.safetensors"))
    state = {k: weights[k] for k in model.state_dict()}
    model.load_state_dict(state)
    model.eval()
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--ids", required=True, help="whitespace-separated token ids")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--greedy", type=int, metavar="N", help="generate N tokens greedily")
    g.add_argument("--score", action="store_true", help="log-probability of each token")
    p.add_argument("--eos", type=int, default=-1, help="stop before this id")
    a = p.parse_args()

    torch.set_num_threads(1)
    model = load(a.ckpt)
    ids = [int(x) for x in a.ids.split()]
    with torch.no_grad():
        if a.score:
            logits = model(torch.tensor([ids]))[0, :-1]
            lp = torch.log_softmax(logits.double(), dim=-1)
            lp = lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].tolist()
            print(json.dumps({"tokens": len(lp), "mean_nll": -sum(lp) / len(lp),
                              "logprobs": lp}))
            return
        out = []
        for _ in range(a.greedy):
            if len(ids) >= model.args.max_seq_len:
                break
            nxt = int(torch.argmax(model(torch.tensor([ids]))[0, -1]))
            if nxt == a.eos:
                break
            out.append(nxt)
            ids.append(nxt)
        print(json.dumps({"ids": out}))


if __name__ == "__main__":
    main()
