#!/usr/bin/python3
"""make_golden.py - write the golden files the C model is tested against.

    /usr/bin/python3 tests/golden/make_golden.py [OUTDIR]   (default: this directory)

Each case is one safetensors file (written with struct + json, no package
needed) holding a tiny Llama 3's weights under torchtitan's names, a batch,
the logits, the mean loss, every parameter's gradient, and three AdamW steps
with gradient-norm clipping: the loss and grad norm before each step and the
parameters after the last one.  "__metadata__"."config" is a JSON string with
every llama_config field, the batch shape, the mask and the optimizer's
hyperparameters.  The output is the same bytes on every run.
"""
import json
import os
import struct
import sys

import torch

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import ModelArgs, Transformer, loss_fn, rope_branches  # noqa: E402

B, T = 2, 16
STEPS = 3
ADAMW = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


def tiny_args(tie):
    return ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64,
                     multiple_of=16, ffn_dim_multiplier=1.3, norm_eps=1e-5,
                     rope_theta=500000.0, rope_scaling=True, rope_scaling_factor=8.0,
                     rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                     rope_original_max_pos=8192, max_seq_len=T, tie_embeddings=tie)


def init_weights(model, seed):
    """Not torchtitan's init: larger, uneven values so that every path of the
    forward and backward moves the result (norm weights 1 + 0.1 * randn)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "tok_embeddings" in name or name == "output.weight":
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def seg_starts(doc_lengths):
    """[B, T] start index of each token's document, from per-row lengths."""
    rows = []
    for lengths in doc_lengths:
        assert sum(lengths) == T, lengths
        row = []
        for n in lengths:
            row += [len(row)] * n
        rows.append(row)
    return torch.tensor(rows, dtype=torch.int32)


def config_json(args, mask, max_norm):
    c = dict(dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads,
             n_kv_heads=args.n_kv_heads, vocab_size=args.vocab_size,
             multiple_of=args.multiple_of, ffn_dim_multiplier=args.ffn_dim_multiplier,
             ffn_hidden=args.ffn_hidden(), norm_eps=args.norm_eps,
             rope_theta=args.rope_theta, rope_scaling=args.rope_scaling,
             rope_scaling_factor=args.rope_scaling_factor,
             rope_low_freq_factor=args.rope_low_freq_factor,
             rope_high_freq_factor=args.rope_high_freq_factor,
             rope_original_max_pos=args.rope_original_max_pos,
             max_seq_len=args.max_seq_len, tie_embeddings=args.tie_embeddings,
             depth_init=False, B=B, T=T, mask=mask, steps=STEPS,
             max_norm=max_norm, **ADAMW)
    return json.dumps(c)


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor) in file order; F32 or I32 only."""
    header, blobs, off = {}, [], 0
    for name, t in tensors:
        t = t.detach().contiguous()
        dtype = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        data = t.numpy().astype("<f4" if dtype == "F32" else "<i4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)


def make_case(path, tie, doc_lengths, seed):
    args = tiny_args(tie)
    branches = rope_branches(args)
    assert {"keep", "divide", "smooth"} <= set(branches), branches
    torch.manual_seed(seed)
    model = Transformer(args)
    init_weights(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randint(0, args.vocab_size, (B, T), generator=g, dtype=torch.int64)
    labels = torch.randint(0, args.vocab_size, (B, T), generator=g, dtype=torch.int64)
    seg = seg_starts(doc_lengths) if doc_lengths else None
    params = list(model.named_parameters())

    out = [(name, p.detach().clone()) for name, p in params]
    out.append(("inputs", inputs.int()))
    out.append(("labels", labels.int()))
    if seg is not None:
        out.append(("seg_start", seg))

    logits = model(inputs, seg)
    loss = loss_fn(logits, labels)
    loss.backward()
    out.append(("logits", logits.detach().clone()))
    out.append(("loss", loss.detach().reshape(1).clone()))
    out += [("grad." + name, p.grad.detach().clone()) for name, p in params]

    # A max norm below the first step's norm, so clipping is active at least
    # there; rounded so that the file states a plain number.
    norm0 = torch.norm(torch.stack([p.grad.norm(2) for _, p in params]), 2).item()
    max_norm = float("%.2g" % (0.8 * norm0))

    opt = torch.optim.AdamW([p for _, p in params], lr=ADAMW["lr"],
                            betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"], foreach=False)
    losses, norms = [], []
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs, seg), labels)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], max_norm)
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    assert any(n > max_norm for n in norms), (norms, max_norm)
    out.append(("losses", torch.tensor(losses, dtype=torch.float32)))
    out.append(("grad_norms", torch.tensor(norms, dtype=torch.float32)))
    out += [("step3." + name, p.detach().clone()) for name, p in params]

    mask = "block_causal" if seg is not None else "causal"
    write_safetensors(path, out, {"config": config_json(args, mask, max_norm)})
    print("%s: loss %.6f, grad norms %s, max_norm %g, rope branches %s" %
          (os.path.basename(path), losses[0], " ".join("%.4f" % n for n in norms),
           max_norm, ",".join(branches)))


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    make_case(os.path.join(outdir, "llama_causal.safetensors"), False, None, 1234)
    # Documents differ per row; row 1 holds a document of one token.
    make_case(os.path.join(outdir, "llama_block_tied.safetensors"), True,
              [[5, 7, 4], [3, 1, 6, 2, 4]], 4321)


if __name__ == "__main__":
    main()
