#!/usr/bin/env python3
"""gguf_reader.py - an independent reader of the GGUF files titan exports.

    gguf_reader.py FILE.gguf                     parse and check; tensor list
    gguf_reader.py FILE.gguf --meta              also print the metadata
    gguf_reader.py FILE.gguf --compare CKPT_DIR  also compare every tensor
                                                 with the titan checkpoint

Written from the GGUF specification (ggml's docs/gguf.md), with nothing but
struct, json and numpy, so that it checks titan's writer rather than sharing
its mistakes.  It parses the whole file, checks the alignment of the data
section and of every tensor, that tensors neither overlap nor run past the
end, that the metadata llama.cpp's "llama" architecture needs is present
with the right types and agrees with the tensor shapes.  --compare reads
the checkpoint's manifest.json and rank-*.safetensors by hand, maps titan
names to llama.cpp's and compares the values: F32 exactly, F16 and BF16
within half a unit in the last place of the format.

Exit status 0 when everything holds, 1 on the first problem (named on
stderr), 2 on a usage error.
"""
import json
import math
import mmap
import os
import re
import struct
import sys

import numpy as np

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
          F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
TYPE_NAME = {U8: "u8", I8: "i8", U16: "u16", I16: "i16", U32: "u32", I32: "i32",
             F32: "f32", BOOL: "bool", STRING: "str", ARRAY: "arr", U64: "u64",
             I64: "i64", F64: "f64"}
# ggml tensor types this reader understands: name, bytes per element
GGML = {0: ("F32", 4), 1: ("F16", 2), 30: ("BF16", 2)}
FILE_TYPE = {0: "F32", 1: "F16", 32: "BF16"}


class Bad(Exception):
    pass


class Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise Bad("offset %d: truncated (want %d bytes, file has %d)"
                      % (self.pos, n, len(self.buf)))
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def scalar(self, t):
        fmt = SCALAR[t]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.scalar(U64)
        at = self.pos
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError:
            raise Bad("offset %d: string is not UTF-8" % at)

    def value(self, t):
        if t in SCALAR:
            return self.scalar(t)
        if t == STRING:
            return self.string()
        if t == ARRAY:
            et = self.scalar(U32)
            n = self.scalar(U64)
            if et == ARRAY:
                raise Bad("offset %d: nested arrays are not used here" % self.pos)
            if et in SCALAR:   # read numeric arrays in one go
                dt = np.dtype(SCALAR[et])
                a = np.frombuffer(self.take(n * dt.itemsize), dtype=dt)
                return (et, a)
            if et != STRING:
                raise Bad("offset %d: unknown array element type %d" % (self.pos, et))
            return (et, [self.string() for _ in range(n)])
        raise Bad("offset %d: unknown value type %d" % (self.pos, t))


def parse(path):
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise Bad("empty file")
        buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    r = Reader(buf)
    if bytes(r.take(4)) != b"GGUF":
        raise Bad("not a GGUF file (magic %r)" % bytes(buf[:4]))
    version = r.scalar(U32)
    if version != 3:
        raise Bad("version %d, expected 3" % version)
    ntensors = r.scalar(U64)
    nkv = r.scalar(U64)
    meta = {}
    for _ in range(nkv):
        key = r.string()
        t = r.scalar(U32)
        if key in meta:
            raise Bad("key '%s' appears twice" % key)
        meta[key] = (t, r.value(t))
    tensors = []
    names = set()
    for _ in range(ntensors):
        name = r.string()
        ndim = r.scalar(U32)
        if not 1 <= ndim <= 4:
            raise Bad("tensor '%s': %d dimensions" % (name, ndim))
        ne = [r.scalar(U64) for _ in range(ndim)]
        gt = r.scalar(U32)
        off = r.scalar(U64)
        if gt not in GGML:
            raise Bad("tensor '%s': ggml type %d is not F32, F16 or BF16" % (name, gt))
        if name in names:
            raise Bad("tensor '%s' appears twice" % name)
        names.add(name)
        tensors.append({"name": name, "ne": ne, "type": gt, "offset": off,
                        "bytes": int(np.prod(ne)) * GGML[gt][1]})
    align = 32
    if "general.alignment" in meta:
        t, align = meta["general.alignment"]
        if t != U32 or align == 0 or align & (align - 1):
            raise Bad("general.alignment: expected a power of two u32")
    header_end = r.pos
    data = (header_end + align - 1) // align * align
    if any(buf[header_end:data]):
        raise Bad("padding after the header (offsets %d..%d) is not zero"
                  % (header_end, data))
    spans = []
    for t in tensors:
        if t["offset"] % align:
            raise Bad("tensor '%s': offset %d is not a multiple of %d"
                      % (t["name"], t["offset"], align))
        end = data + t["offset"] + t["bytes"]
        if end > len(buf):
            raise Bad("tensor '%s': data ends at %d, past the end of the file (%d)"
                      % (t["name"], end, len(buf)))
        spans.append((t["offset"], t["offset"] + t["bytes"], t["name"]))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            raise Bad("tensors '%s' and '%s' overlap" % (a[2], b[2]))
    return {"buf": buf, "meta": meta, "tensors": tensors, "data": data,
            "align": align, "header_end": header_end}


def tensor_values(g, t):
    """The tensor as float32 in PyTorch's order (ne reversed)."""
    raw = g["buf"][g["data"] + t["offset"]:g["data"] + t["offset"] + t["bytes"]]
    shape = tuple(reversed(t["ne"]))
    if t["type"] == 0:
        return np.frombuffer(raw, dtype="<f4").reshape(shape)
    if t["type"] == 1:
        return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape)
    bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(shape)


def need(meta, key, t, elem=None):
    if key not in meta:
        raise Bad("metadata '%s' is missing" % key)
    have, v = meta[key]
    if have != t:
        raise Bad("metadata '%s': type %s, expected %s"
                  % (key, TYPE_NAME.get(have, have), TYPE_NAME[t]))
    if elem is not None and v[0] != elem:
        raise Bad("metadata '%s': array of %s, expected %s"
                  % (key, TYPE_NAME.get(v[0], v[0]), TYPE_NAME[elem]))
    return v if elem is None else v[1]


LAYER = {"attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
         "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate",
         "feed_forward.w2": "ffn_down", "feed_forward.w3": "ffn_up",
         "attention_norm": "attn_norm", "ffn_norm": "ffn_norm"}
TOP = {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
       "output.weight": "output.weight"}


def gguf_name(titan):
    if titan in TOP:
        return TOP[titan]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", titan)
    if m and m.group(2) in LAYER:
        return "blk.%s.%s.weight" % (m.group(1), LAYER[m.group(2)])
    return None


def check_llama(g):
    """The metadata llama.cpp needs, with its types, against the tensors."""
    meta = g["meta"]
    if need(meta, "general.architecture", STRING) != "llama":
        raise Bad("general.architecture is not 'llama'")
    need(meta, "general.name", STRING)
    ft = need(meta, "general.file_type", U32)
    h = {}
    for k in ("context_length", "embedding_length", "block_count", "feed_forward_length",
              "attention.head_count", "attention.head_count_kv", "rope.dimension_count",
              "vocab_size"):
        h[k] = need(meta, "llama." + k, U32)
    for k in ("rope.freq_base", "attention.layer_norm_rms_epsilon"):
        h[k] = need(meta, "llama." + k, F32)
    if need(meta, "tokenizer.ggml.model", STRING) != "gpt2":
        raise Bad("tokenizer.ggml.model is not 'gpt2'")
    need(meta, "tokenizer.ggml.pre", STRING)
    toks = need(meta, "tokenizer.ggml.tokens", ARRAY, STRING)
    types = need(meta, "tokenizer.ggml.token_type", ARRAY, I32)
    merges = need(meta, "tokenizer.ggml.merges", ARRAY, STRING)
    V = h["vocab_size"]
    if len(toks) != V or len(types) != V:
        raise Bad("%d tokens and %d token types for llama.vocab_size %d"
                  % (len(toks), len(types), V))
    if len(set(toks)) != len(toks):
        raise Bad("tokenizer.ggml.tokens holds duplicates")
    bad = set(int(x) for x in np.unique(types)) - {1, 2, 3, 4, 5, 6}
    if bad:
        raise Bad("tokenizer.ggml.token_type holds unknown types %s" % sorted(bad))
    for i, m in enumerate(merges):
        if m.count(" ") != 1 or m.startswith(" ") or m.endswith(" "):
            raise Bad("tokenizer.ggml.merges[%d] = %r is not 'a b'" % (i, m))
    for k in ("add_bos_token", "clean_spaces"):
        if "tokenizer.ggml." + k in meta:
            need(meta, "tokenizer.ggml." + k, BOOL)
    for k in ("bos", "eos"):
        key = "tokenizer.ggml.%s_token_id" % k
        if key in meta and need(meta, key, U32) >= V:
            raise Bad("%s %d is past the vocabulary" % (key, meta[key][1]))

    C, L, F = h["embedding_length"], h["block_count"], h["feed_forward_length"]
    H, KV = h["attention.head_count"], h["attention.head_count_kv"]
    D = C // H
    if h["rope.dimension_count"] != D:
        raise Bad("llama.rope.dimension_count %d, head dim is %d" % (h["rope.dimension_count"], D))
    want = {"token_embd.weight": [C, V], "output_norm.weight": [C]}
    for l in range(L):
        b = "blk.%d." % l
        want.update({b + "attn_norm.weight": [C], b + "ffn_norm.weight": [C],
                     b + "attn_q.weight": [C, H * D], b + "attn_k.weight": [C, KV * D],
                     b + "attn_v.weight": [C, KV * D], b + "attn_output.weight": [H * D, C],
                     b + "ffn_gate.weight": [C, F], b + "ffn_up.weight": [C, F],
                     b + "ffn_down.weight": [F, C]})
    have = {t["name"]: t for t in g["tensors"]}
    optional = {"output.weight": [C, V], "rope_freqs.weight": [D // 2]}
    for name, ne in list(want.items()) + list(optional.items()):
        if name not in have:
            if name in want:
                raise Bad("tensor '%s' is missing" % name)
            continue
        if have[name]["ne"] != ne:
            raise Bad("tensor '%s': ne %s, expected %s" % (name, have[name]["ne"], ne))
        if len(ne) == 1 and have[name]["type"] != 0:
            raise Bad("tensor '%s': 1-D tensors must be F32" % name)
    extra = set(have) - set(want) - set(optional)
    if extra:
        raise Bad("unexpected tensors: %s" % ", ".join(sorted(extra)))
    types2 = {have[n]["type"] for n in have if len(have[n]["ne"]) == 2}
    expect = {0: {0}, 1: {1}, 32: {30}}.get(ft)
    if expect is None or types2 != expect:
        raise Bad("general.file_type %d but the matrices are %s"
                  % (ft, sorted(GGML[t][0] for t in types2)))
    return h


def step_dir(path):
    if os.path.exists(os.path.join(path, "manifest.json")):
        return path
    steps = []
    for e in os.listdir(path):
        m = re.fullmatch(r"step-(\d+)", e)
        if m and os.path.exists(os.path.join(path, e, "manifest.json")):
            steps.append((int(m.group(1)), e))
    if not steps:
        raise Bad("'%s': no manifest.json and no complete step-N directory" % path)
    return os.path.join(path, max(steps)[1])


class Safetensors:
    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        n = struct.unpack("<Q", self.buf[:8])[0]
        self.head = json.loads(self.buf[8:8 + n])
        self.data = 8 + n
        self.path = path

    def get(self, name):
        e = self.head.get(name)
        if e is None:
            raise Bad("'%s': no tensor '%s'" % (self.path, name))
        if e["dtype"] != "F32":
            raise Bad("'%s': tensor '%s' is %s, expected F32" % (self.path, name, e["dtype"]))
        a, b = e["data_offsets"]
        return np.frombuffer(self.buf[self.data + a:self.data + b], dtype="<f4").reshape(e["shape"])


def read_checkpoint(path):
    """The step directory, its manifest, and a loader of whole model tensors
    (assembled from their slices), so one tensor is in memory at a time."""
    d = step_dir(path)
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    files = {}

    def load(name):
        e = man["tensors"][name]
        full = np.empty(e["shape"], dtype=np.float32)
        covered = np.zeros(e["shape"], dtype=bool)
        for sh in e["shards"]:
            if sh["file"] not in files:
                files[sh["file"]] = Safetensors(os.path.join(d, sh["file"]))
            part = files[sh["file"]].get(name)
            sl = tuple(slice(s, s + n) for s, n in zip(sh["start"], sh["shape"]))
            full[sl] = part.reshape(sh["shape"])
            covered[sl] = True
        if not covered.all():
            raise Bad("'%s': tensor '%s' is not covered by its shards" % (d, name))
        return full

    names = [n for n in man["tensors"] if gguf_name(n) is not None]   # no optimizer state
    return d, man, names, load


def rope_factors(m, D):
    """Llama 3.1 frequency scaling as a divisor per rotary frequency."""
    theta, factor = m["rope_theta"], m["rope_scaling_factor"]
    low, high, orig = m["rope_low_freq_factor"], m["rope_high_freq_factor"], m["rope_original_max_pos"]
    out = []
    for i in range(D // 2):
        freq = 1.0 / theta ** (2 * i / D)
        wl = 2 * math.pi / freq
        if wl < orig / high:
            out.append(1.0)
        elif wl > orig / low:
            out.append(factor)
        else:
            s = (orig / wl - low) / (high - low)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float64)


def half_ulp(ref, gt):
    """Largest rounding error of ref in the tensor's format."""
    if gt == 0:
        return np.zeros_like(ref)
    bits = 8 if gt == 30 else 11            # significand bits, hidden bit included
    mag = np.abs(ref.astype(np.float64))
    e = np.floor(np.log2(np.maximum(mag, 1e-300)))
    if gt == 1:
        e = np.maximum(e, -14)              # f16 subnormals: a fixed step
    return np.ldexp(1.0, (e - bits).astype(np.int64))


def within_rounding(gn, name, got, ref, gt, chunk=1 << 20):
    """Check got is ref rounded to the 16-bit format, a chunk at a time to
    keep memory small; the largest relative difference among normal values."""
    worst = 0.0
    tiny = 2.0 ** -14 if gt == 1 else 2.0 ** -126
    for a in range(0, ref.size, chunk):
        r = ref[a:a + chunk].astype(np.float64)
        err = np.abs(got[a:a + chunk].astype(np.float64) - r)
        tol = half_ulp(r, gt)
        if not (err <= tol).all():
            i = a + int(np.argmax(err - tol))
            raise Bad("tensor '%s' (checkpoint '%s') differs: element %d is %r, expected %r"
                      % (gn, name, i, float(got[i]), float(ref[i])))
        normal = np.abs(r) >= tiny
        if normal.any():
            worst = max(worst, float((err[normal] / np.abs(r[normal])).max()))
    return worst


def compare(g, h, ckpt):
    d, man, names, load = read_checkpoint(ckpt)
    m = man.get("extra", {}).get("config", {}).get("model", {})
    checks = [("embedding_length", "dim"), ("block_count", "n_layers"),
              ("attention.head_count", "n_heads"), ("attention.head_count_kv", "n_kv_heads"),
              ("vocab_size", "vocab_size"), ("context_length", "max_seq_len")]
    for k, c in checks:
        if c in m and h[k] != m[c]:
            raise Bad("llama.%s = %d, checkpoint model.%s = %d" % (k, h[k], c, m[c]))
    for k, c in (("rope.freq_base", "rope_theta"), ("attention.layer_norm_rms_epsilon", "norm_eps")):
        if c in m and h[k] != np.float32(m[c]):
            raise Bad("llama.%s = %r, checkpoint model.%s = %r" % (k, h[k], c, m[c]))
    have = {t["name"]: t for t in g["tensors"]}
    if "feed_forward_length" in h and "layers.0.feed_forward.w1.weight" in names:
        F = man["tensors"]["layers.0.feed_forward.w1.weight"]["shape"][0]
        if h["feed_forward_length"] != F:
            raise Bad("llama.feed_forward_length %d, checkpoint w1 has %d rows"
                      % (h["feed_forward_length"], F))
    seen = set()
    worst = 0.0
    for name in names:
        ref = load(name)
        gn = gguf_name(name)
        if gn not in have:
            raise Bad("checkpoint tensor '%s' has no GGUF tensor '%s'" % (name, gn))
        t = have[gn]
        got = tensor_values(g, t)
        if got.shape != ref.shape:
            raise Bad("tensor '%s': shape %s, checkpoint '%s' has %s"
                      % (gn, got.shape, name, ref.shape))
        if t["type"] == 0:
            if not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
                i = int(np.argmax(got.view(np.uint32) != ref.view(np.uint32)))
                raise Bad("tensor '%s' (checkpoint '%s') differs: element %d is %r, expected %r"
                          % (gn, name, i, float(got.flat[i]), float(ref.flat[i])))
        else:
            worst = max(worst, within_rounding(gn, name, got.ravel(), ref.ravel(), t["type"]))
        seen.add(gn)
    if "rope_freqs.weight" in have:
        if not m.get("rope_scaling", False):
            raise Bad("rope_freqs.weight present but the checkpoint has no rope_scaling")
        want = rope_factors(m, h["embedding_length"] // h["attention.head_count"])
        got = tensor_values(g, have["rope_freqs.weight"]).astype(np.float64)
        if not np.allclose(got, want, rtol=1e-6, atol=0):
            raise Bad("rope_freqs.weight is %s, expected %s" % (got, want))
        seen.add("rope_freqs.weight")
    elif m.get("rope_scaling", False):
        raise Bad("the checkpoint has rope_scaling but the file has no rope_freqs.weight")
    left = set(have) - seen
    if left:
        raise Bad("GGUF tensors not in the checkpoint: %s" % ", ".join(sorted(left)))
    print("compare: %d tensors match '%s' (largest relative difference of a normal "
          "value %.3g)"
          % (len(seen), d, worst))


def show_meta(meta):
    for k, (t, v) in meta.items():
        if t == ARRAY:
            et, a = v
            head = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in list(a[:5]))
            print("%-45s arr[%s, %d] [%s%s]" % (k, TYPE_NAME[et], len(a), head,
                                                ", ..." if len(a) > 5 else ""))
        else:
            print("%-45s %-4s %r" % (k, TYPE_NAME[t], v))


def main(argv):
    args = argv[1:]
    meta = "--meta" in args
    args = [a for a in args if a != "--meta"]
    ckpt = None
    if "--compare" in args:
        i = args.index("--compare")
        if i + 1 >= len(args):
            print("usage: gguf_reader.py FILE.gguf [--meta] [--compare CKPT_DIR]", file=sys.stderr)
            return 2
        ckpt = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: gguf_reader.py FILE.gguf [--meta] [--compare CKPT_DIR]", file=sys.stderr)
        return 2
    path = args[0]
    try:
        g = parse(path)
        h = check_llama(g)
        size = len(g["buf"])
        print("%s: GGUF v3, %d bytes, %d metadata keys, %d tensors, alignment %d, "
              "data at %d" % (path, size, len(g["meta"]), len(g["tensors"]), g["align"], g["data"]))
        print("file_type %s, vocab %d, %d merges, pre '%s'"
              % (FILE_TYPE.get(g["meta"]["general.file_type"][1], "?"), h["vocab_size"],
                 len(g["meta"]["tokenizer.ggml.merges"][1][1]),
                 g["meta"]["tokenizer.ggml.pre"][1]))
        if meta:
            show_meta(g["meta"])
            for t in g["tensors"]:
                print("%-32s %-5s ne=%-18s offset %d" % (t["name"], GGML[t["type"]][0],
                                                        t["ne"], t["offset"]))
        if ckpt:
            compare(g, h, ckpt)
    except (Bad, OSError, ValueError, KeyError) as e:
        print("gguf_reader: %s: %s" % (path, e), file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
