"""Independent reference for mixlora's 8-bit AdamW (native/kernels/optim_8bit.cc, src/optim/adamw-8bit.ts), in
numpy, from the rules as Dettmers et al. 2022 ("8-bit Optimizers via Block-wise Quantization") and
bitsandbytes' AdamW8bit state them, sharing no code or formulation with the implementation:

- The maps: bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8) for the first
  moment (signed) and the second (unsigned), evaluated in float32 as torch.linspace does.
- The state: blocks of 256 consecutive values of the flattened parameter (the last one short); per block
  a float32 absmax and per value the index of the map entry nearest value / absmax (argmin of float64
  distances: the first, lower entry on a tie); an all-zero block keeps absmax 0.
- A step: dequantise (entry * absmax), then PyTorch's AdamW in float32 with the fresh moments (decoupled
  decay, m += (1 - beta1)(g - m), v = beta2 v + (1 - beta2) g², bias corrections), then requantise
  against the new absmax.

Usage: adamw_8bit.py OUT.safetensors   writes the maps and, per case, its inputs and expected state
"""
import sys

import numpy as np
import torch

from common import save_safetensors

BLOCK = 256
HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
STEPS = 4


def dynamic_map(signed):
    data = []
    for i in range(7):
        items = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
        # The grid as bitsandbytes makes it: torch.linspace in float32.
        bounds = torch.linspace(0.1, 1, items, dtype=torch.float32).numpy()
        means = (bounds[:-1] + bounds[1:]) / np.float32(2.0)
        scale = 10.0 ** (-6 + i)
        data += list((means * np.float32(scale)).astype(np.float32))
        if signed:
            data += list((means * np.float32(-scale)).astype(np.float32))
    data += [np.float32(0), np.float32(1)]
    assert len(data) == 256
    return np.sort(np.array(data, dtype=np.float32))


SIGNED, UNSIGNED = dynamic_map(True), dynamic_map(False)


def quantise(x, qmap):
    """x float32 [n] -> (codes uint8 [n], absmax float32 [blocks])."""
    n = x.size
    blocks = -(-n // BLOCK)
    padded = np.zeros(blocks * BLOCK, dtype=np.float32)
    padded[:n] = x
    padded = padded.reshape(blocks, BLOCK)
    absmax = np.abs(padded).max(axis=1).astype(np.float32)
    safe = np.where(absmax > 0, absmax, np.float32(1))
    norm = (padded / safe[:, None]).astype(np.float32)
    dist = np.abs(norm.astype(np.float64)[..., None] - qmap.astype(np.float64)[None, None, :])
    codes = dist.argmin(axis=-1).astype(np.uint8).reshape(-1)[:n]
    return codes, absmax


def dequantise(codes, absmax, qmap):
    n = codes.size
    scales = np.repeat(absmax, BLOCK)[:n]
    return (qmap[codes] * scales).astype(np.float32)


def run(p0, grads):
    p = p0.astype(np.float32).reshape(-1).copy()
    mc, ma = quantise(np.zeros_like(p), SIGNED)
    vc, va = quantise(np.zeros_like(p), UNSIGNED)
    h = HYPER
    f = np.float32
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float32).reshape(-1)
        m = dequantise(mc, ma, SIGNED)
        v = dequantise(vc, va, UNSIGNED)
        p = p * f(1 - h['lr'] * h['weight_decay'])
        m = m + f(1 - h['beta1']) * (g - m)
        v = v * f(h['beta2']) + f(1 - h['beta2']) * (g * g)
        denom = np.sqrt(v) / f(np.sqrt(1 - h['beta2'] ** t)) + f(h['eps'])
        p = p - f(h['lr'] / (1 - h['beta1'] ** t)) * (m / denom)
        mc, ma = quantise(m, SIGNED)
        vc, va = quantise(v, UNSIGNED)
    return p.reshape(p0.shape), mc, ma, vc, va


def cases():
    rng = np.random.default_rng(7)
    out = {'map.signed': SIGNED, 'map.unsigned': UNSIGNED}
    shapes = {'even': (16, 256), 'tail': (5000,), 'zero_block': (6, 700), 'scales': (8, 640)}
    for name, shape in shapes.items():
        p0 = rng.standard_normal(shape).astype(np.float32)
        grads = rng.standard_normal((STEPS,) + shape).astype(np.float32)
        if name == 'zero_block':
            grads.reshape(STEPS, -1)[:, :BLOCK] = 0  # the first block never moves: absmax stays 0
        if name == 'scales':
            # Each block its own magnitude, 1e-6 .. 1e2: the dynamic map's range.
            mags = 10.0 ** rng.uniform(-6, 2, size=-(-int(np.prod(shape)) // BLOCK))
            flat = grads.reshape(STEPS, -1)
            flat *= np.repeat(mags, BLOCK)[: flat.shape[1]].astype(np.float32)
        p, mc, ma, vc, va = run(p0, grads)
        out.update({
            f'{name}.p0': p0, f'{name}.grads': grads, f'{name}.p': p,
            f'{name}.m_codes': mc, f'{name}.m_absmax': ma, f'{name}.v_codes': vc, f'{name}.v_absmax': va,
        })
    return out


if __name__ == '__main__':
    save_safetensors(sys.argv[1], {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in cases().items()})
