// Adapter folders: adapter_config.json + adapter_model.safetensors (float32), or the reference tools'
// adapter_model.bin (a PyTorch zip read with the restricted unpickler). Loading checks every tensor's
// name and shape against the base model.
import fs from 'node:fs';
import path from 'node:path';
import { noGrad } from '../tensor/autograd.js';
import { stack as stackTensors } from '../tensor/ops.js';
import { tidy } from '../tensor/scope.js';
import { isFloating } from '../tensor/dtype.js';
import { allFinite } from '../tensor/checks.js';
import type { Tensor } from '../tensor/tensor.js';
import { loadAll, saveSafetensors } from '../io/safetensors.js';
import { readTorchCheckpoint, type TorchReadLimits } from '../io/torch-zip.js';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import type { CausalLM } from '../models/llama.js';
import type { ModelConfig } from '../models/config.js';
import { projectionShape, type ProjName } from '../models/weights.js';
import { UserError } from '../util/errors.js';
import { readJsonObject } from '../util/files.js';
import { Adapter } from './adapter.js';
import { exportAdapterConfig, parseAdapterConfig, scaling, type AdapterConfig, type LoraSettings } from './config.js';
import { alternativeKey, expertKey, modernizeLegacy, plainKey, routerKey } from './keys.js';
import { doraWeightNorm } from './lora.js';
import { expertTargets, plainTargets, type AdapterLayer, type MlpProj, type StackedLora } from './params.js';

export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';
export const TORCH_WEIGHTS_FILE = 'adapter_model.bin';

/** The raw tensors of an adapter folder (safetensors preferred, else the PyTorch .bin). With
 * `maxElements` (the parameters the adapter should have), a .bin holding more is refused before
 * anything is inflated. */
export async function readAdapterTensors(
  dir: string,
  limits: TorchReadLimits = {},
): Promise<{ tensors: Map<string, Tensor>; file: string }> {
  const st = path.join(dir, WEIGHTS_FILE);
  if (fs.existsSync(st)) return { tensors: loadAll(st).tensors, file: st };
  const bin = path.join(dir, TORCH_WEIGHTS_FILE);
  if (fs.existsSync(bin)) return { tensors: await readTorchCheckpoint(bin, limits), file: bin };
  throw new UserError(`${dir}: no ${WEIGHTS_FILE} or ${TORCH_WEIGHTS_FILE}`);
}

/** How many numbers an adapter of config `c` holds for model `mc` (DoRA magnitudes included). */
export function adapterElementCount(c: AdapterConfig, mc: ModelConfig): number {
  const lora = (p: ProjName, s: LoraSettings) => {
    const [out, inp] = projectionShape(mc, p);
    return s.r * inp + out * s.r + (s.useDora ? out : 0);
  };
  let perLayer = 0;
  for (const p of plainTargets(c)) perLayer += lora(p, c.lora);
  if (c.moe) {
    perLayer += c.moe.numExperts * mc.hiddenSize;
    for (const p of expertTargets(c)) perLayer += c.moe.numExperts * lora(p, c.moe.expert);
  }
  return perLayer * mc.numLayers;
}

/** Reads an adapter folder's config (legacy m-LoRA configs converted). */
export function readAdapterConfig(dir: string): {
  config: AdapterConfig;
  raw: Record<string, unknown>;
  legacy: boolean;
} {
  const file = path.join(dir, CONFIG_FILE);
  if (!fs.existsSync(dir)) throw new UserError(`${dir}: no such adapter folder`);
  const raw = readJsonObject(file);
  const modern = modernizeLegacy(raw, []);
  return { config: parseAdapterConfig(modern ? modern.config : raw, file), raw, legacy: modern !== null };
}

/** Loads an adapter for `model`, checking names and shapes; DoRA magnitudes missing from the file are
 * initialised from the loaded weights (the reference's behaviour). */
export async function loadAdapter(
  dir: string,
  model: CausalLM,
  name = path.basename(path.resolve(dir)),
): Promise<Adapter> {
  const { config: parsed, raw } = readAdapterConfig(dir);
  const { tensors, file } = await readAdapterTensors(dir, { maxElements: adapterElementCount(parsed, model.config) });
  const legacy = modernizeLegacy(raw, [...tensors.keys()]);
  if (legacy) {
    for (const [from, to] of legacy.rename) {
      tensors.set(to, tensors.get(from)!);
      tensors.delete(from);
    }
  }
  try {
    return new Adapter(name, parsed, buildLayers(parsed, model, tensors, file));
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
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
  const layers = tidy(() =>
    Array.from({ length: mc.numLayers }, (_, l): AdapterLayer => {
      const layer: AdapterLayer = { lora: {}, moe: null };
      for (const p of plainTargets(c)) {
        const [out, inp] = projectionShape(mc, p);
        const s = c.lora;
        const A = take(plainKey(c, l, p, 'lora_A'), [s.r, inp])!;
        const B = take(plainKey(c, l, p, 'lora_B'), [out, s.r])!;
        const scale = scaling(s);
        const magnitude = s.useDora
          ? (take(plainKey(c, l, p, 'magnitude'), [out], true) ??
            doraWeightNorm(model.weights.layers[l]!.proj[p].weight, A, B, scale).keep())
          : null;
        layer.lora[p] = { A, B, magnitude, settings: s, scale };
      }
      if (c.moe) {
        const m = c.moe;
        const E = m.numExperts;
        const router = take(routerKey(l), [E, mc.hiddenSize])!;
        const experts: Partial<Record<MlpProj, StackedLora>> = {};
        for (const p of expertTargets(c)) {
          const [out, inp] = projectionShape(mc, p);
          const s = m.expert;
          const scale = scaling(s);
          const As: Tensor[] = [];
          const Bs: Tensor[] = [];
          const Ms: Tensor[] = [];
          for (let e = 0; e < E; e++) {
            const A = take(expertKey(l, p, e, 'lora_A'), [s.r, inp])!;
            const B = take(expertKey(l, p, e, 'lora_B'), [out, s.r])!;
            As.push(A);
            Bs.push(B);
            if (s.useDora)
              Ms.push(
                take(expertKey(l, p, e, 'magnitude'), [out], true) ??
                  doraWeightNorm(model.weights.layers[l]!.proj[p].weight, A, B, scale).keep(),
              );
          }
          const stack = (ts: Tensor[]) => {
            const out = noGrad(() => stackTensors(ts)).keep();
            ts.forEach((t) => t.dispose());
            return out;
          };
          experts[p] = { A: stack(As), B: stack(Bs), magnitude: s.useDora ? stack(Ms) : null, settings: s, scale };
        }
        layer.moe = { router, experts, settings: m };
      }
      return layer;
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

/** Tensors under their file names (experts unstacked as views), for saving. `pick` maps each
 * parameter to a tensor of the same shape first (e.g. its gradient). */
export function adapterStateDict(a: Adapter, pick: (param: Tensor) => Tensor = (t) => t): Map<string, Tensor> {
  const c = a.config;
  const out = new Map<string, Tensor>();
  a.layers.forEach((layer, l) => {
    for (const p of plainTargets(c)) {
      const m = layer.lora[p]!;
      out.set(plainKey(c, l, p, 'lora_A'), pick(m.A));
      out.set(plainKey(c, l, p, 'lora_B'), pick(m.B));
      if (m.magnitude) out.set(plainKey(c, l, p, 'magnitude'), pick(m.magnitude));
    }
    if (layer.moe) {
      out.set(routerKey(l), pick(layer.moe.router));
      for (const p of expertTargets(c)) {
        const s = layer.moe.experts[p]!;
        const [A, B, M] = [pick(s.A), pick(s.B), s.magnitude ? pick(s.magnitude) : null];
        for (let e = 0; e < c.moe!.numExperts; e++) {
          out.set(expertKey(l, p, e, 'lora_A'), A.select(0, e));
          out.set(expertKey(l, p, e, 'lora_B'), B.select(0, e));
          if (M) out.set(expertKey(l, p, e, 'magnitude'), M.select(0, e));
        }
      }
    }
  });
  return out;
}

/** Writes adapter_config.json + adapter_model.safetensors into `dir` (replaced atomically). */
export function saveAdapter(dir: string, a: Adapter, opts: { baseModel?: string | null } = {}): void {
  const config = { ...a.config, baseModel: opts.baseModel ?? a.config.baseModel };
  tidy(() =>
    noGrad(() => {
      const tensors = new Map(
        [...adapterStateDict(a)].map(
          ([k, t]) => [k, t.detach().to({ dtype: 'float32', device: 'cpu' }).contiguous()] as const,
        ),
      );
      writeDirAtomic(
        dir,
        (tmp) => {
          writeFileAtomic(path.join(tmp, CONFIG_FILE), JSON.stringify(exportAdapterConfig(config), null, 2) + '\n');
          saveSafetensors(path.join(tmp, WEIGHTS_FILE), tensors, { format: 'pt' });
        },
        // Replacing a previous save: only our own files may be in the folder.
        { replace: true, owned: [CONFIG_FILE, WEIGHTS_FILE, TORCH_WEIGHTS_FILE] },
      );
    }),
  );
}
