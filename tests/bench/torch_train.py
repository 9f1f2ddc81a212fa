#!/usr/bin/python3
"""torch_train.py - PyTorch's training throughput on the CPU, the reference
titan-train is measured against: eager fp32, the model of
tests/golden/reference.py with the causal mask, AdamW, random token batches.

    /usr/bin/python3 tests/bench/torch_train.py --dim 256 --n-layers 6 \\
        --n-heads 16 --n-kv-heads 16 --vocab 2048 --multiple-of 256 \\
        --batch 8 --seq 256 --steps 5 --warmup 2 --threads 2

Prints one JSON line: tokens per second and seconds per step over the timed
steps, the parameter count and torchtitan's training FLOPs per token.
"""
import argparse
import json
import os
import sys
import time

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(here, "..", "golden"))
from reference import ModelArgs, Transformer, flops_per_token, loss_fn  # noqa: E402


def use_sdpa():
    """The reference's attention with PyTorch's fused causal kernel (the
    bench's batches are causal, never document-masked)."""
    import reference
    F = torch.nn.functional
    if not hasattr(F, "scaled_dot_product_attention"):
        sys.exit("torch_train.py: --sdpa: this torch has no scaled_dot_product_attention")

    def forward(self, x, freqs_cis, mask):
        B, T, _ = x.shape
        H, KV, D = self.n_heads, self.n_kv_heads, self.head_dim
        xq = reference.apply_rotary_emb(self.wq(x).view(B, T, H, D), freqs_cis)
        xk = reference.apply_rotary_emb(self.wk(x).view(B, T, KV, D), freqs_cis)
        xv = self.wv(x).view(B, T, KV, D)
        keys = torch.repeat_interleave(xk, H // KV, dim=2)
        values = torch.repeat_interleave(xv, H // KV, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (xq, keys, values))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(B, T, H * D))

    reference.Attention.forward = forward


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--n-heads", type=int, default=16)
    p.add_argument("--n-kv-heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--multiple-of", type=int, default=256)
    p.add_argument("--ffn-dim-multiplier", type=float, default=0.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--device", default="cpu", help="cpu or cuda (fp32, TF32 off)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--bf16", action="store_true",
                   help="autocast forward and loss to bfloat16 (fp32 weights, gradients"
                        " and optimizer), as titan's training.matmul_dtype=bfloat16 compares")
    p.add_argument("--sdpa", action="store_true",
                   help="attention through F.scaled_dot_product_attention (causal),"
                        " PyTorch's fused kernels, where this torch has it")
    a = p.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        # the fp32 titan backend computes without TF32: the same arithmetic
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    args = ModelArgs(dim=a.dim, n_layers=a.n_layers, n_heads=a.n_heads,
                     n_kv_heads=a.n_kv_heads, vocab_size=a.vocab,
                     multiple_of=a.multiple_of, ffn_dim_multiplier=a.ffn_dim_multiplier,
                     max_seq_len=a.seq)
    if a.sdpa:
        use_sdpa()
    model = Transformer(args).to(dev)
    fwd = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95),
                            eps=1e-8, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)

    def step():
        tokens = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g).to(dev)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = loss_fn(fwd(tokens[:, :-1]), tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    step_s = elapsed / max(a.steps, 1)
    print(json.dumps({
        "tps": round(a.batch * a.seq / step_s, 2),
        "step_s": round(step_s, 4),
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_token": flops_per_token(model, a.seq),
        "loss": round(loss, 4) if a.steps else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": a.device + (" compiled" if a.compile else "") + (" bf16" if a.bf16 else "")
        + (" sdpa" if a.sdpa else ""),
    }))


if __name__ == "__main__":
    main()
