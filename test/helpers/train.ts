// Building training runs for tests: config files in temp folders, data files, reading results.
import fs from 'node:fs';
import zlib from 'node:zlib';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir, ROOT } from './fixtures.js';
import { readTrainConfig, type TrainConfig } from '../../src/train/config.js';
import { loadAll } from '../../src/io/safetensors.js';
import type * as T from '../../src/tensor/index.js';

export const ALL_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** A slice of the bundled commonsense data (LLM-Adapters shape). */
export function commonsenseSlice(task: string, n: number, offset = 0): string {
  const file = path.join(ROOT, 'assets', 'data', 'commonsense', `${task}.jsonl.gz`);
  const lines = zlib
    .gunzipSync(fs.readFileSync(file))
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim())
    .slice(offset, offset + n);
  const out = path.join(tempDir(), `${task}-${n}.jsonl`);
  fs.writeFileSync(out, lines.join('\n') + '\n');
  return out;
}

/** Writes `config` (JSON) in a fresh folder, with the stories260K base model unless given. */
export function writeConfig(config: Record<string, unknown>, dir = tempDir()): { file: string; dir: string } {
  const file = path.join(dir, 'train.json');
  fs.writeFileSync(
    file,
    JSON.stringify(
      { base_model: STORIES_BIN, tokenizer: STORIES_TOK, output_dir: path.join(dir, 'run'), seed: 3, ...config },
      null,
      2,
    ),
  );
  return { file, dir };
}

export function trainConfig(config: Record<string, unknown>): TrainConfig {
  return readTrainConfig(writeConfig(config).file);
}

export function adapterTensors(dir: string): Map<string, T.Tensor> {
  return loadAll(path.join(dir, 'adapter_model.safetensors')).tensors;
}

export function maxDiff(a: Map<string, T.Tensor>, b: Map<string, T.Tensor>): number {
  let m = 0;
  for (const [k, t] of a) {
    const u = b.get(k);
    if (!u) throw new Error(`missing ${k}`);
    const x = t.toFloat32Array();
    const y = u.toFloat32Array();
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  }
  return m;
}
