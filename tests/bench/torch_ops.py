#!/usr/bin/python3
"""torch_ops.py - PyTorch's ops alone at the shapes of bench_ops.c, the rows
titan's are read against: the same names, milliseconds per call and rate,
the best of a few calls after a warm-up, each waited for.

    /usr/bin/python3 tests/bench/torch_ops.py [--device cuda|cpu] [--small]

The bf16 rows take operands that are bf16 already (autocast keeps the bf16
copies of the weights for a forward, and the activations of a bf16 run are
bf16), as titan's take their weight and input (backward casts the fp32
output gradient, chunk by chunk); attention is
scaled_dot_product_attention on bf16 inputs with the key/value heads
repeated for the query heads, as the training reference does.  --small
takes bench_ops --small's shapes.  Rows a PyTorch lacks (no
scaled_dot_product_attention before 2.0, no rms_norm before 2.4) say so.
"""
import argparse
import time

import torch
import torch.nn.functional as F

CALLS = 5


def best_of(fn, sync):
    best = None
    for i in range(CALLS + 1):
        t0 = time.perf_counter()
        fn()
        sync()
        dt = time.perf_counter() - t0
        if i > 0 and (best is None or dt < best):
            best = dt
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true")
    a = p.parse_args()
    if a.small:
        B, T, C, H, KV, D, Fd, V = 1, 128, 64, 4, 2, 16, 192, 512
    else:
        B, T, C, H, KV, D, Fd, V = 2, 2048, 2048, 32, 8, 64, 8192, 128256
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        sync = torch.cuda.synchronize
    else:
        def sync():
            pass
    N = B * T

    def r(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, device=dev, dtype=dtype).mul_(0.5).requires_grad_(grad)

    x, w, head = r(N, C), r(Fd, C), r(V, C)
    dout = r(N, Fd)
    xb, wb, headb, doutb = x.bfloat16(), w.bfloat16(), head.bfloat16(), dout.bfloat16()
    q32, k32, v32 = r(B, H, T, D), r(B, KV, T, D), r(B, KV, T, D)

    def attention(dtype, backward):
        if not hasattr(F, "scaled_dot_product_attention"):
            return None
        q = q32.to(dtype).requires_grad_(backward)
        k = k32.to(dtype).repeat_interleave(H // KV, dim=1).requires_grad_(backward)
        v = v32.to(dtype).repeat_interleave(H // KV, dim=1).requires_grad_(backward)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        g = torch.ones_like(out)
        if not backward:
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return lambda: torch.autograd.grad(
            F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), g)

    xn = r(N, C, grad=True)
    normw = r(C)
    normed = F.rms_norm(xn, (C,), normw, 1e-5) if hasattr(F, "rms_norm") else None
    a1, b1 = r(N, Fd, grad=True), r(N, Fd, grad=True)
    logits = r(N, V)
    labels = torch.randint(0, V, (N,), device=dev)
    resid = r(N, C)
    n_adam = 4 * C * Fd
    params = [torch.zeros(n_adam, device=dev, requires_grad=True)]
    params[0].grad = r(n_adam)
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if dev.type == "cuda" else {}))

    mm = 2.0 * N * C * Fd
    att = 2.0 * B * H * T * T * D
    rows = [
        ("matmul fwd fp32 [N,C]x[F,C]", mm, 0, lambda: x @ w.t()),
        ("matmul fwd bf16", mm, 0, lambda: (xb @ wb.t()).float()),
        ("matmul bwd fp32", 2 * mm, 0, lambda: (dout @ w, dout.t() @ x)),
        ("matmul bwd bf16", 2 * mm, 0, lambda: (doutb @ wb, doutb.t() @ xb)),
        ("head fwd bf16 [N,C]x[V,C]", 2.0 * N * C * V, 0, lambda: (xb @ headb.t()).float()),
        ("attention fwd fp32", att, 0, attention(torch.float32, False)),
        ("attention fwd bf16", att, 0, attention(torch.bfloat16, False)),
        ("attention bwd fp32", 2.5 * att, 0, attention(torch.float32, True)),
        ("attention bwd bf16", 2.5 * att, 0, attention(torch.bfloat16, True)),
    ]
    if normed is None:
        rows += [("rmsnorm fwd", 0, 0, None), ("rmsnorm bwd", 0, 0, None)]
    else:
        gn = torch.ones_like(normed)
        rows += [
            ("rmsnorm fwd", 0, 2.0 * N * C * 4, lambda: F.rms_norm(xn, (C,), normw, 1e-5)),
            ("rmsnorm bwd", 0, 3.0 * N * C * 4,
             lambda: torch.autograd.grad(F.rms_norm(xn, (C,), normw, 1e-5), xn, gn)),
        ]
    gs = torch.ones(N, Fd, device=dev)
    rows += [
        ("swiglu fwd", 0, 3.0 * N * Fd * 4, lambda: F.silu(a1) * b1),
        ("swiglu bwd", 0, 5.0 * N * Fd * 4,
         lambda: torch.autograd.grad(F.silu(a1) * b1, (a1, b1), gs)),
        ("cross-entropy + grad", 0, 2.0 * N * V * 4,
         lambda: torch.autograd.grad(F.cross_entropy(logits.requires_grad_(), labels), logits)),
        ("cast to bf16 [F,C]", 0, 6.0 * Fd * C, lambda: w.to(torch.bfloat16)),
        ("residual add", 0, 3.0 * N * C * 4, lambda: resid.add_(x)),
        ("adamw (4 C F params)", 0, 7.0 * n_adam * 4, opt.step),
    ]
    print(f"torch_ops: {dev.type} (PyTorch {torch.__version__}), B {B} T {T} C {C} H {H} "
          f"KV {KV} D {D} F {Fd} V {V}; best of {CALLS} calls")
    for name, flops, nbytes, fn in rows:
        if fn is None:
            print(f"{name:<30} (not in this PyTorch)")
            continue
        try:
            t = best_of(fn, sync)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            print(f"{name:<30} FAILED: {str(e).splitlines()[0]}")
            continue
        if flops:
            print(f"{name:<30} {t * 1e3:10.3f} ms {flops / t / 1e12:9.1f} TFLOP/s")
        else:
            print(f"{name:<30} {t * 1e3:10.3f} ms {nbytes / t / 1e9:9.1f} GB/s")


if __name__ == "__main__":
    main()
