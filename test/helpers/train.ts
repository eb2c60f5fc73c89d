// Building training runs for tests: adapter and config files in temp folders, data files, reading results.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import zlib from 'node:zlib';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir, ROOT } from './fixtures.js';
import { readTrainConfig, type TrainConfig } from '../../src/train/config.js';
import { loadAll } from '../../src/io/safetensors.js';
import type * as T from '../../src/tensor/index.js';

export const ALL_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** The LoRA adapter of the training tests: rank 8 on every projection, no dropout. */
export const LORA_ADAPTER = { peft_type: 'LORA', r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: ALL_TARGETS };

/** The DoRA adapter of the training and adapter tests: rank 4 on q, v and down, no dropout. */
export const DORA_ADAPTER = {
  peft_type: 'LORA',
  r: 4,
  lora_alpha: 8,
  lora_dropout: 0,
  target_modules: ['q_proj', 'v_proj', 'down_proj'],
  use_dora: true,
};

/** The MixLoRA adapter of the training tests: rank 4 on every projection, 4 experts (top-2), no dropout;
 * `extra` adds or overrides keys. */
export function mixloraAdapter(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    peft_type: 'MIXLORA',
    r: 4,
    lora_alpha: 8,
    lora_dropout: 0,
    target_modules: ALL_TARGETS,
    routing_strategy: 'mixlora',
    num_experts: 4,
    top_k: 2,
    ...extra,
  };
}

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

/** A run that trains far longer than any test waits (a LoRA on q_proj over 16 BoolQ examples, 100 epochs, two
 * micro-batches a step): for tests that kill or interrupt it. */
export function longTrainingRun(): { file: string; dir: string } {
  return writeConfig({
    cutoff_len: 128,
    adapters: [
      {
        name: 'lora',
        data: commonsenseSlice('boolq.train', 16),
        prompt_template: 'none',
        batch_size: 4,
        micro_batch_size: 2,
        num_epochs: 100,
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj'] },
      },
    ],
  });
}

export function trainConfig(config: Record<string, unknown>): TrainConfig {
  return readTrainConfig(writeConfig(config).file);
}

/** One line of a run's metrics.jsonl (training steps; evaluation lines carry other keys). */
export interface MetricsLine {
  adapter: string;
  step: number;
  loss: number;
  tokens: number;
  aux: number | null;
  lr: number;
}

/** The lines of `<run>/metrics.jsonl`, in order. */
export function readMetrics(run: string): MetricsLine[] {
  return fs
    .readFileSync(path.join(run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as MetricsLine);
}

/** Resolves once the run folder `run` holds a complete checkpoint (its state.json written); rejects when
 * `child`, the run's process, exits first. */
export function checkpointWritten(run: string, child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const poll = setInterval(() => {
      const dir = path.join(run, 'checkpoints');
      const done =
        fs.existsSync(dir) &&
        fs.readdirSync(dir).some((n) => /^checkpoint-\d+$/.test(n) && fs.existsSync(path.join(dir, n, 'state.json')));
      if (done) {
        clearInterval(poll);
        resolve();
      }
    }, 5);
    child.on('exit', () => {
      clearInterval(poll);
      reject(new Error('the run ended before its first checkpoint'));
    });
  });
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
