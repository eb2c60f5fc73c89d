"""Independent reference for mixlora's quantised frozen weights (src/quant, native/kernels/quant.cc), in numpy,
from the rules as QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs") and
bitsandbytes state them, sharing no code or formulation with the implementation:

- NF4: bitsandbytes' 16 levels; blocks of 64 consecutive values of the row-major flattened weight (blocks
  cross rows; the last is padded with zeros, as bitsandbytes' kernel pads a partial block); a float32
  absmax per block; each value's code is the level nearest to w / absmax (float32 division), an exact
  tie going to the lower level (here: argmin of float64 distances, which picks the first index on a
  tie); two codes per byte, the first in the high nibble; dequantised as level * absmax in float32.
- int8: per output row scale = absmax / 127 (float32), q = round(w / scale) (half to even) clamped to
  [-127, 127]; dequantised as q * scale.
A zero block (or row) divides by 1 (its values are all 0).

Usage:
  quant.py cases OUT.safetensors           the test cases: inputs and their expected codes, scales, values
  quant.py dequantise-model IN OUT FORMAT  IN/model.safetensors with every decoder projection weight
                                           replaced by its quantised-then-dequantised float32 value
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

from common import save_safetensors

NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=np.float32)


def nf4_quantise(w):
    flat = np.asarray(w, dtype=np.float32).reshape(-1)
    n = flat.size
    blocks = -(-n // 64)
    padded = np.zeros(blocks * 64, dtype=np.float32)
    padded[:n] = flat
    b = padded.reshape(blocks, 64)
    absmax = np.abs(b).max(axis=1).astype(np.float32)
    divisor = np.where(absmax == 0, np.float32(1), absmax).astype(np.float32)
    x = (b / divisor[:, None]).astype(np.float32)
    dist = np.abs(x.astype(np.float64)[..., None] - NF4.astype(np.float64)[None, None, :])
    codes = dist.argmin(axis=-1).astype(np.uint8).reshape(-1)[: 2 * ((n + 1) // 2)]
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    return packed, absmax


def nf4_dequantise(packed, absmax, shape):
    n = int(np.prod(shape))
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 15
    values = np.zeros(absmax.size * 64, dtype=np.float32)
    values[: codes.size] = NF4[codes]
    return (values.reshape(-1, 64) * absmax[:, None]).astype(np.float32).reshape(-1)[:n].reshape(shape)


def int8_quantise(w):
    w = np.asarray(w, dtype=np.float32)
    scale = (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32)
    divisor = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
    q = np.clip(np.round((w / divisor[:, None]).astype(np.float32)), -127, 127).astype(np.int8)
    return q, scale


def int8_dequantise(q, scale):
    return (q.astype(np.float32) * scale[:, None]).astype(np.float32)


# ---- safetensors -------------------------------------------------------------------------------------
FROM_DT = {'F32': np.float32, 'U8': np.uint8, 'I8': np.int8}


def save(path, tensors):
    """Writes numpy arrays with the reference's one safetensors writer (common.py)."""
    save_safetensors(path, {name: torch.from_numpy(np.array(a)) for name, a in tensors.items()})


def load(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        lo, hi = e['data_offsets']
        out[name] = np.frombuffer(data[lo:hi], dtype=FROM_DT[e['dtype']]).reshape(e['shape'])
    return out


# ---- cases -------------------------------------------------------------------------------------------
def tie_rows():
    """Values at every float32-representable NF4 midpoint (exact ties), and one float32 step either side of
    every midpoint, with absmax 1 (w / absmax = w) and absmax 2 (an exact division too)."""
    vals = []
    for i in range(15):
        m = (float(NF4[i]) + float(NF4[i + 1])) / 2
        m32 = np.float32(m)
        if float(m32) == m:
            vals.append(m32)
        vals.append(np.nextafter(m32, np.float32(2)))
        vals.append(np.nextafter(m32, np.float32(-2)))
    vals = np.array(vals, dtype=np.float32)
    row = np.zeros(64, dtype=np.float32)
    row[0] = 1.0
    row[1: 1 + vals.size] = vals
    return np.stack([row, 2 * row]).astype(np.float32)  # [2, 64]: one block each


def cases():
    rng = np.random.default_rng(7)
    nf4 = {
        'ties': tie_rows(),
        'cross_rows': rng.standard_normal((3, 40)).astype(np.float32),       # 120 values: block 0 spans rows 0-1
        'odd': rng.standard_normal((5, 13)).astype(np.float32),              # 65 values: a last block of one
        'zero_block': np.concatenate([rng.standard_normal((1, 64)), np.zeros((1, 64))]).astype(np.float32),
        'random': (0.02 * rng.standard_normal((24, 80))).astype(np.float32),  # a weight-like scale
    }
    int8 = {
        # absmax 127 -> scale exactly 1: the halves are exact ties of round-half-to-even.
        'ties': np.array([[127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=np.float32),
        'random': (0.02 * rng.standard_normal((16, 48))).astype(np.float32),
    }
    out = {}
    for name, w in nf4.items():
        packed, absmax = nf4_quantise(w)
        out[f'nf4.{name}.w'] = w
        out[f'nf4.{name}.packed'] = packed
        out[f'nf4.{name}.absmax'] = absmax
        out[f'nf4.{name}.dequantised'] = nf4_dequantise(packed, absmax, w.shape)
    for name, w in int8.items():
        q, scale = int8_quantise(w)
        out[f'int8.{name}.w'] = w
        out[f'int8.{name}.q'] = q
        out[f'int8.{name}.scale'] = scale
        out[f'int8.{name}.dequantised'] = int8_dequantise(q, scale)
    return out


PROJECTION = __import__('re').compile(r'^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$')


def dequantise_model(src, dst, fmt):
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if f != 'model.safetensors':
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    tensors = load(os.path.join(src, 'model.safetensors'))
    out = {}
    for name, w in tensors.items():
        w = w.astype(np.float32)
        if PROJECTION.match(name) and w.ndim == 2:
            if fmt == 'nf4':
                w = nf4_dequantise(*nf4_quantise(w), w.shape)
            else:
                w = int8_dequantise(*int8_quantise(w))
        out[name] = w
    save(os.path.join(dst, 'model.safetensors'), out)


if __name__ == '__main__':
    if sys.argv[1] == 'cases':
        save(sys.argv[2], cases())
    elif sys.argv[1] == 'dequantise-model':
        dequantise_model(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)
