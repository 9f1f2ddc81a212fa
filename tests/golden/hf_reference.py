"""hf_reference.py - the logits of a Hugging Face Llama directory, computed
the way transformers' LlamaForCausalLM computes them, compared with titan's.

    hf_reference.py HF_DIR IDS_FILE TITAN_LOGITS.safetensors [--tol 1e-5]

HF_DIR is what `titan-ckpt export --to hf` writes (config.json and
model.safetensors or an index-sharded set); IDS_FILE holds token ids
separated by white space; TITAN_LOGITS holds "logits" F32 [T, V]
(tests/tools/ckpt_logits).  Prints the largest absolute difference and
exits 1 when it is above the tolerance.

The model is written out in plain torch (1.13, Debian's python3-torch; no
transformers, no safetensors package): RoPE rotates halves (rotate_half)
of the q/k heads as exported, with cos/sin from inv_freq @ positions in
fp32 and Llama 3.1 scaling as transformers' _compute_llama3_parameters;
grouped KV heads by repeat_kv; RMSNorm in fp32; SiLU-gated MLP; causal
mask.  fp32 on the CPU.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F


def read_safetensors(path):
    """{name: fp32 tensor} of a safetensors file (F32, BF16 or F16)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    buf = bytearray(raw)
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        shape = e["shape"]
        count = math.prod(shape) if shape else 1
        off = base + begin
        if e["dtype"] == "F32":
            t = torch.frombuffer(buf, dtype=torch.float32, count=count, offset=off).clone()
        elif e["dtype"] == "BF16":
            h = torch.frombuffer(buf, dtype=torch.int16, count=count, offset=off)
            t = (h.to(torch.int32) << 16).view(torch.float32)
        elif e["dtype"] == "F16":
            t = torch.frombuffer(buf, dtype=torch.float16, count=count, offset=off).float()
        else:
            raise SystemExit(f"{path}: tensor {name}: dtype {e['dtype']} not supported")
        assert end - begin == count * (4 if e["dtype"] == "F32" else 2), name
        out[name] = t.reshape(shape)
    return out


def read_weights(d):
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for name in files:
        w.update(read_safetensors(os.path.join(d, name)))
    return w


def llama3_inv_freq(cfg, head_dim):
    """transformers' _compute_default_rope_parameters, then
    _compute_llama3_parameters when rope_scaling says llama3."""
    base = cfg.get("rope_theta", 10000.0)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv_freq
    assert rs.get("rope_type", rs.get("type")) == "llama3", rs
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def rms_norm(x, weight, eps):
    x32 = x.to(torch.float32)
    var = x32.pow(2).mean(-1, keepdim=True)
    return weight * (x32 * torch.rsqrt(var + eps)).to(x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    b, kv, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


def forward(cfg, w, ids):
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    D = cfg.get("head_dim") or C // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    assert cfg.get("model_type") == "llama"
    assert not cfg.get("attention_bias") and not cfg.get("mlp_bias")
    T = len(ids)
    tokens = torch.tensor([ids], dtype=torch.long)

    inv_freq = llama3_inv_freq(cfg, D)
    pos = torch.arange(T)[None, :]
    inv = inv_freq[None, :, None].float().expand(1, -1, 1)
    freqs = (inv.float() @ pos[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]  # [1, 1, T, D]

    mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)

    x = F.embedding(tokens, w["model.embed_tokens.weight"])
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(1, T, H, D).transpose(1, 2)
        k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(1, T, KV, D).transpose(1, 2)
        v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(1, T, KV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, H // KV)
        v = repeat_kv(v, H // KV)
        att = (q @ k.transpose(2, 3)) / math.sqrt(D) + mask
        att = F.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
        o = (att @ v).transpose(1, 2).reshape(1, T, H * D)
        x = x + F.linear(o, w[p + "self_attn.o_proj.weight"])
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = F.linear(h, w[p + "mlp.gate_proj.weight"])
        up = F.linear(h, w[p + "mlp.up_proj.weight"])
        x = x + F.linear(F.silu(gate) * up, w[p + "mlp.down_proj.weight"])
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight")
    if head is None or cfg.get("tie_word_embeddings"):
        head = w["model.embed_tokens.weight"]
    return F.linear(x, head)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hf_dir")
    ap.add_argument("ids_file")
    ap.add_argument("titan_logits")
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with open(os.path.join(a.hf_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(a.ids_file) as f:
        ids = [int(s) for s in f.read().split()]
    with torch.no_grad():
        ref = forward(cfg, read_weights(a.hf_dir), ids)
    got = read_safetensors(a.titan_logits)["logits"]
    if got.shape != ref.shape:
        print(f"shape: titan {list(got.shape)}, reference {list(ref.shape)}")
        return 1
    diff = (got - ref).abs().max().item()
    print(f"max abs diff {diff:.3g} over {ref.numel()} logits "
          f"(largest |logit| {ref.abs().max().item():.3g}, tolerance {a.tol:g})")
    return 0 if diff <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
