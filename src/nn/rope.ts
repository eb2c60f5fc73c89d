// Rotary position embeddings, Hugging Face "rotate_half" layout, with linear and llama3 scaling.
import { tensor } from '../tensor/create.js';
import { cat } from '../tensor/ops.js';
import type { DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';

/** How the rotary frequencies are stretched for longer contexts (config.json's rope_scaling). */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

/** inv_freq_i = θ^(-2i/d), adjusted by the scaling rule; float64 in JS, returned as numbers. */
export function inverseFrequencies(headDim: number, theta: number, scaling: RopeScaling | null): number[] {
  const inv: number[] = [];
  for (let i = 0; i < headDim; i += 2) inv.push(1 / theta ** (i / headDim));
  if (scaling === null) return inv;
  if (scaling.type === 'linear') return inv.map((f) => f / scaling.factor);
  // llama3: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: ctx } = scaling;
  const lowWavelen = ctx / lowFreqFactor;
  const highWavelen = ctx / highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / factor;
    const smooth = (ctx / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

export interface RotaryTables {
  cos: Tensor;
  sin: Tensor;
}

/** cos/sin [B, 1, T, D] for positions [B, T] (int64), computed in float32 then cast to `dtype` (the
 * activations'). */
export function rotaryTables(positions: Tensor, invFreq: number[], dtype: DType): RotaryTables {
  const inv = tensor(invFreq, { dtype: 'float32', device: positions.device }); // [D/2]
  const freqs = positions.to('float32').unsqueeze(-1).mul(inv); // [B, T, D/2]
  const emb = cat([freqs, freqs], -1).unsqueeze(1); // [B, 1, T, D]
  return { cos: emb.cos().to(dtype), sin: emb.sin().to(dtype) };
}

/** x·cos + rotate_half(x)·sin, rotate_half([x1, x2]) = [-x2, x1]; x [B, H, T, D]. Tables narrower than D
 * (Phi-3's partial_rotary_factor) rotate the first R dimensions and pass the rest through. */
export function applyRotary(x: Tensor, t: RotaryTables): Tensor {
  const D = x.size(-1);
  const R = t.cos.size(-1);
  if (R < D) return cat([rotate(x.narrow(-1, 0, R), t), x.narrow(-1, R, D - R)], -1); // [B, H, T, D]
  return rotate(x, t);
}

function rotate(x: Tensor, t: RotaryTables): Tensor {
  const [x1, x2] = x.chunk(2, -1); // [B, H, T, R/2] each
  return x.mul(t.cos).add(cat([x2!.neg(), x1!], -1).mul(t.sin));
}
