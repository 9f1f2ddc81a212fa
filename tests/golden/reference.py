"""reference.py - a compact PyTorch Llama 3, the same math as torchtitan's
torchtitan/models/llama3/model.py, used as the oracle of titan's C model.

Written for torch 1.13 (Debian's python3-torch): no scaled_dot_product_attention,
so attention is scores, mask, softmax, @ v.  fp32 on the CPU.

The attention mask is causal (seg_start None) or block-causal: seg_start[b, t]
is the index in row b of the first token of t's document; query t sees keys
seg_start[b, t] .. t, and RoPE positions restart at each document
(pos = t - seg_start[b, t]).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    vocab_size: int = 64
    multiple_of: int = 16
    ffn_dim_multiplier: float = 0.0   # 0: none
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: bool = False
    rope_scaling_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_pos: int = 8192
    max_seq_len: int = 2048
    tie_embeddings: bool = False

    def ffn_hidden(self):
        hidden = 4 * self.dim
        hidden = int(2 * hidden / 3)
        if self.ffn_dim_multiplier:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


def apply_scaling(freqs, args):
    """Llama 3.1's frequency scaling: keep the high frequencies, divide the low
    ones by the factor, interpolate in between."""
    low_wavelen = args.rope_original_max_pos / args.rope_low_freq_factor
    high_wavelen = args.rope_original_max_pos / args.rope_high_freq_factor
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(freq)
        elif wavelen > low_wavelen:
            out.append(freq / args.rope_scaling_factor)
        else:
            smooth = (args.rope_original_max_pos / wavelen - args.rope_low_freq_factor) / (
                args.rope_high_freq_factor - args.rope_low_freq_factor)
            out.append((1 - smooth) * freq / args.rope_scaling_factor + smooth * freq)
    return torch.tensor(out, dtype=freqs.dtype)


def rope_branches(args):
    """Which branch of apply_scaling each frequency takes (for the tests'
    coverage check): 'keep', 'divide' or 'smooth'."""
    D = args.dim // args.n_heads
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, D, 2)[: D // 2].float() / D))
    low_wavelen = args.rope_original_max_pos / args.rope_low_freq_factor
    high_wavelen = args.rope_original_max_pos / args.rope_high_freq_factor
    names = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        names.append("keep" if wavelen < high_wavelen else
                     "divide" if wavelen > low_wavelen else "smooth")
    return names


def precompute_freqs_cis(D, end, args):
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, D, 2)[: D // 2].float() / D))
    if args.rope_scaling:
        freqs = apply_scaling(freqs, args)
    t = torch.arange(end, device=freqs.device)
    freqs = torch.outer(t, freqs).float()
    return torch.polar(torch.ones_like(freqs), freqs)  # complex64 [end, D/2]


def apply_rotary_emb(x, freqs_cis):
    """x [B, T, heads, D]; freqs_cis [B, T, D/2] (one angle set per token)."""
    x_ = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    out = torch.view_as_real(x_ * freqs_cis[:, :, None, :]).flatten(3)
    return out.type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)) * self.weight


class Attention(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.n_kv_heads
        self.head_dim = args.dim // args.n_heads
        self.wq = nn.Linear(args.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x, freqs_cis, mask):
        B, T, _ = x.shape
        H, KV, D = self.n_heads, self.n_kv_heads, self.head_dim
        xq = self.wq(x).view(B, T, H, D)
        xk = self.wk(x).view(B, T, KV, D)
        xv = self.wv(x).view(B, T, KV, D)
        xq = apply_rotary_emb(xq, freqs_cis)
        xk = apply_rotary_emb(xk, freqs_cis)
        # grouped KV: query head h reads KV head h // (H // KV)
        keys = torch.repeat_interleave(xk, H // KV, dim=2)
        values = torch.repeat_interleave(xv, H // KV, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (xq, keys, values))  # [B, H, T, D]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        scores = scores.masked_fill(~mask[:, None, :, :], float("-inf"))
        out = F.softmax(scores, dim=-1) @ v
        return self.wo(out.transpose(1, 2).reshape(B, T, H * D))


class FeedForward(nn.Module):
    def __init__(self, args):
        super().__init__()
        hidden = args.ffn_hidden()
        self.w1 = nn.Linear(args.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, freqs_cis, mask):
        h = x + self.attention(self.attention_norm(x), freqs_cis, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(args)
                                     for i in range(args.n_layers)})
        self.norm = RMSNorm(args.dim, args.norm_eps)
        if not args.tie_embeddings:
            self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.register_buffer("freqs_cis", precompute_freqs_cis(
            args.dim // args.n_heads, args.max_seq_len, args), persistent=False)

    def forward(self, tokens, seg_start=None):
        """tokens [B, T] -> logits [B, T, V]; seg_start [B, T] or None."""
        B, T = tokens.shape
        # on the tokens' device: the mask indexes scores there (CUDA too)
        t = torch.arange(T, device=tokens.device)
        if seg_start is None:
            pos = t.expand(B, T)
            mask = (t[None, :] <= t[:, None]).expand(B, T, T)
        else:
            seg_start = seg_start.long()
            pos = t[None, :] - seg_start
            j = t[None, None, :]
            mask = (seg_start[:, :, None] <= j) & (j <= t[None, :, None])
        freqs_cis = self.freqs_cis[pos]  # [B, T, D/2]
        h = self.tok_embeddings(tokens)
        for layer in self.layers.values():
            h = layer(h, freqs_cis, mask)
        h = self.norm(h)
        if self.args.tie_embeddings:
            return h @ self.tok_embeddings.weight.t()
        return self.output(h)


def loss_fn(logits, labels):
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(0, 1).long())


def flops_per_token(model, seq_len):
    """torchtitan's count: 6 * (params - embedding params) + 12 * L * H * D * T."""
    a = model.args
    params = sum(p.numel() for p in model.parameters())
    dense = params - model.tok_embeddings.weight.numel()
    return 6 * dense + 12 * a.n_layers * a.n_heads * (a.dim // a.n_heads) * seq_len
