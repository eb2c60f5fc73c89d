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
import { readTorchCheckpoint, writeTorchCheckpoint, type TorchReadLimits } from '../io/torch-zip.js';
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
import {
  adapterParams,
  buildAdapterLayers,
  expertTargets,
  plainTargets,
  type AdapterLayer,
  type ModuleKey,
} from './params.js';

export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';
export const TORCH_WEIGHTS_FILE = 'adapter_model.bin';

/** The weight files an adapter folder can hold: ours (safetensors) and the reference tools' (.bin). */
export type WeightsFormat = 'safetensors' | 'bin';
export const WEIGHTS_FORMATS: readonly WeightsFormat[] = ['safetensors', 'bin'];

function writeWeights(dir: string, format: WeightsFormat, tensors: Map<string, Tensor>): void {
  if (format === 'safetensors') saveSafetensors(path.join(dir, WEIGHTS_FILE), tensors, { format: 'pt' });
  else writeTorchCheckpoint(path.join(dir, TORCH_WEIGHTS_FILE), tensors);
}

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
      magnitude: (key, shape, m) => {
        const W = model.weights.layers[key.layer]!.proj[key.proj].weight;
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
      },
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

/** Writes adapter_config.json + adapter_model.safetensors (and/or adapter_model.bin, per `formats`)
 * into `dir` (replaced atomically). */
export function saveAdapter(
  dir: string,
  a: Adapter,
  opts: { baseModel?: string | null; formats?: readonly WeightsFormat[] } = {},
): void {
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
          for (const f of opts.formats ?? ['safetensors']) writeWeights(tmp, f, tensors);
        },
        // Replacing a previous save: only our own files may be in the folder.
        { replace: true, owned: [CONFIG_FILE, WEIGHTS_FILE, TORCH_WEIGHTS_FILE] },
      );
    }),
  );
}

/** A copy of the adapter folder `dir` in `out` whose weights are in `format`: the tensors under the
 * same names, adapter_config.json copied as it is. Returns the number of tensors. */
export async function convertAdapterWeights(
  dir: string,
  out: string,
  format: WeightsFormat,
  opts: { overwrite: boolean },
): Promise<number> {
  const configFile = path.join(dir, CONFIG_FILE);
  readAdapterConfig(dir); // refuses a folder that is not an adapter before anything is written
  const source = path.join(dir, format === 'bin' ? WEIGHTS_FILE : TORCH_WEIGHTS_FILE);
  if (!fs.existsSync(source))
    throw new UserError(
      `${dir}: no ${path.basename(source)} to convert to ${format === 'bin' ? TORCH_WEIGHTS_FILE : WEIGHTS_FILE}`,
    );
  if (fs.existsSync(out) && !opts.overwrite) throw new UserError(`${out} already exists (use --force to replace it)`);
  const tensors = format === 'bin' ? loadAll(source).tensors : await readTorchCheckpoint(source);
  try {
    const config = fs.readFileSync(configFile);
    writeDirAtomic(
      out,
      (tmp) => {
        writeFileAtomic(path.join(tmp, CONFIG_FILE), config);
        writeWeights(tmp, format, tensors);
      },
      { replace: opts.overwrite },
    );
    return tensors.size;
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}
