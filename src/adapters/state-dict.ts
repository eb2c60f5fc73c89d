// An adapter's tensors under their file names, both ways: the file's tensors checked (names, shapes,
// dtype, finite values) against the base model and built into the parameter tree, and the tree flattened
// back to file names for saving.
import { noGrad } from '../tensor/autograd.js';
import { stack as stackTensors } from '../tensor/ops.js';
import { tidy } from '../tensor/scope.js';
import { isFloating } from '../tensor/dtype.js';
import { allFinite } from '../tensor/checks.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/causal-lm.js';
import { linearOf } from '../models/weights.js';
import { UserError } from '../util/errors.js';
import type { Adapter } from './adapter.js';
import type { AdapterConfig } from './config.js';
import { alternativeKey, expertKey, plainKey, routerKey } from './keys.js';
import { doraWeightNorm } from './lora.js';
import { adapterParams, buildAdapterLayers, type AdapterLayer, type ModuleKey } from './params.js';

/** Stacks kept per-expert tensors into one kept tensor [E, ...], freeing the parts. */
function stackKept(parts: Tensor[]): Tensor {
  const out = noGrad(() => stackTensors(parts)).keep();
  parts.forEach((t) => t.dispose());
  return out;
}

/** Adapter tensors (file names and layout) -> the parameter tree, float32 on the model's device. */
export function buildLayers(
  c: AdapterConfig,
  model: CausalLM,
  tensors: Map<string, Tensor>,
  file: string,
): AdapterLayer[] {
  const mc = model.config;
  const used = new Set<string>();
  const take = (key: string, shape: number[], optional = false): Tensor | null => {
    let k = key;
    if (!tensors.has(k)) {
      const alt = alternativeKey(key);
      if (alt && tensors.has(alt)) k = alt;
      else if (optional) return null;
      else throw new UserError(`${file}: missing tensor '${key}' (does this adapter belong to this base model?)`);
    }
    const t = tensors.get(k)!;
    if (t.shape.join(',') !== shape.join(',')) {
      throw new UserError(
        `${file}: tensor '${k}' has shape [${t.shape.join(', ')}] but the base model needs [${shape.join(', ')}]`,
      );
    }
    if (!isFloating(t.dtype))
      throw new UserError(`${file}: tensor '${k}' is ${t.dtype}; adapter weights must be floating point`);
    used.add(k);
    const out = noGrad(() => t.to({ dtype: 'float32', device: model.device }).clone().keep());
    if (!allFinite(out)) {
      out.dispose();
      throw new UserError(`${file}: tensor '${k}' holds NaN or infinite values`);
    }
    return out;
  };
  // A or B of a module: the plain tensor, or the experts' tensors stacked.
  const fromFile = (key: ModuleKey, part: 'lora_A' | 'lora_B', shape: number[]): Tensor => {
    if (key.experts === null) return take(plainKey(c, key.layer, key.proj, part), shape)!;
    return stackKept(
      Array.from({ length: key.experts }, (_, e) => take(expertKey(key.layer, key.proj, e, part), shape.slice(1))!),
    );
  };
  const layers = tidy(() =>
    buildAdapterLayers(c, mc, {
      router: (layer, shape) => take(routerKey(layer), shape)!,
      A: (key, shape) => fromFile(key, 'lora_A', shape),
      B: (key, shape) => fromFile(key, 'lora_B', shape),
      // The base weight is in place for the call (a sharded base gathers its layer), and used only when the
      // file has no magnitude.
      magnitude: (key, shape, m) =>
        model.withWeights(key.layer, () => {
          const W = linearOf(model.weights.layers[key.layer]!, key.proj).weight;
          if (key.experts === null)
            return (
              take(plainKey(c, key.layer, key.proj, 'magnitude'), shape, true) ??
              doraWeightNorm(W, m.A, m.B, m.scale).keep()
            );
          // Per expert: the file's magnitude, or one initialised from that expert's loaded A and B.
          const parts = Array.from(
            { length: key.experts },
            (_, e) =>
              take(expertKey(key.layer, key.proj, e, 'magnitude'), shape.slice(1), true) ??
              doraWeightNorm(W, m.A.select(0, e), m.B.select(0, e), m.scale).keep(),
          );
          return stackKept(parts);
        }),
    }),
  );
  const extra = [...tensors.keys()].filter((k) => !used.has(k));
  if (extra.length > 0) {
    throw new UserError(
      `${file}: unexpected tensor '${extra[0]}'${extra.length > 1 ? ` (and ${extra.length - 1} more)` : ''}: the adapter does not match its config or this base model`,
    );
  }
  return layers;
}

/** Tensors under their file names (experts unstacked as views), for saving. `tensorOf` maps each
 * parameter to a tensor of the same shape first (e.g. its gradient). */
export function adapterStateDict(a: Adapter, tensorOf: (param: Tensor) => Tensor = (t) => t): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [k, param] of adapterParams(a.layers)) {
    const t = tensorOf(param);
    if (k.part === 'router') out.set(routerKey(k.layer), t);
    else if (k.experts === null) out.set(plainKey(a.config, k.layer, k.proj, k.part), t);
    else for (let e = 0; e < k.experts; e++) out.set(expertKey(k.layer, k.proj, e, k.part), t.select(0, e));
  }
  return out;
}
