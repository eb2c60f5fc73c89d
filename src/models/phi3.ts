// Phi-3's fused projections (modeling_phi3.py): qkv_proj's output rows are [q | k | v] and gate_up_proj's
// are [gate | up]. Adapters see the fused projections as the checkpoint names them; the block splits the
// outputs here.
import type { Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from './config.js';

/** q [B, T, nH·D], k and v [B, T, nKV·D] from the fused output [B, T, (nH + 2·nKV)·D]. */
export function splitQkv(qkv: Tensor, c: ModelConfig): [Tensor, Tensor, Tensor] {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  return [qkv.narrow(-1, 0, q), qkv.narrow(-1, q, kv), qkv.narrow(-1, q + kv, kv)];
}

/** gate and up [.., I] from the fused output [.., 2·I] (its first half is the gate). */
export function splitGateUp(gateUp: Tensor): [Tensor, Tensor] {
  const [gate, up] = gateUp.chunk(2, -1);
  return [gate!, up!];
}
