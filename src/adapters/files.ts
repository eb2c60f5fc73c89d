// An adapter folder's files: adapter_config.json and the weights, adapter_model.safetensors (float32)
// or the reference tools' adapter_model.bin (a PyTorch zip read with the restricted unpickler); reading
// them raw, and converting the weights from one format to the other.
import fs from 'node:fs';
import path from 'node:path';
import type { Tensor } from '../tensor/tensor.js';
import { loadAll, saveSafetensors } from '../io/safetensors.js';
import { readTorchCheckpoint, writeTorchCheckpoint, type TorchReadLimits } from '../io/torch-zip.js';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import { UserError } from '../util/errors.js';
import { readJsonObject } from '../util/files.js';
import { parseAdapterConfig, type AdapterConfig } from './config.js';
import { modernizeLegacy } from './keys.js';

export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';
export const TORCH_WEIGHTS_FILE = 'adapter_model.bin';

/** The weight files an adapter folder can hold: ours (safetensors) and the reference tools' (.bin). */
export type WeightsFormat = 'safetensors' | 'bin';
export const WEIGHTS_FORMATS: readonly WeightsFormat[] = ['safetensors', 'bin'];

export function writeWeights(dir: string, format: WeightsFormat, tensors: Map<string, Tensor>): void {
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
