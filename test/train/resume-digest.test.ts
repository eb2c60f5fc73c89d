// Which config changes a checkpoint survives: the memory settings (recompute, optimizer_in_backward) may be
// turned on or off between a run and its resume (a run out of memory continues with them); anything else
// that changes is refused, naming the checkpoint. Checkpoints written before the memory settings were left
// out of the digest (their digest covers the whole config) still resume under the config they were written with.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { commonsenseSlice } from '../helpers/train.js';
import { readTrainConfig, type TrainConfig } from '../../src/train/config.js';
import { configDigest, legacyConfigDigest } from '../../src/train/checkpoint.js';
import { resumePoint } from '../../src/train/resume.js';

const data = commonsenseSlice('boolq.train', 4);

function config(dir: string, extra: string, lr = '1e-3'): TrainConfig {
  const file = path.join(dir, 'train.yaml');
  fs.writeFileSync(
    file,
    `base_model: ${STORIES_BIN}\ntokenizer: ${STORIES_TOK}\noutput_dir: run\n${extra}` +
      `adapters:\n  - name: a\n    data: ${data}\n    lr: ${lr}\n    batch_size: 2\n` +
      `    adapter: {peft_type: LORA, r: 4, lora_alpha: 8, target_modules: [q_proj]}\n`,
  );
  return readTrainConfig(file);
}

/** A run folder whose one complete checkpoint carries `digest`. */
function runWithCheckpoint(dir: string, digest: string): void {
  const ckpt = path.join(dir, 'run', 'checkpoints', 'checkpoint-2');
  fs.mkdirSync(ckpt, { recursive: true });
  fs.writeFileSync(path.join(ckpt, 'state.json'), JSON.stringify({ format: 1, fusedStep: 2, configDigest: digest }));
}

const resumes = (cfg: TrainConfig) => resumePoint(cfg, true, path.join(cfg.outputDir, 'metrics.jsonl'), () => {});

test('recompute and optimizer_in_backward may change between a run and its resume; the learning rate may not', () => {
  const dir = tempDir();
  const plain = config(dir, '');
  runWithCheckpoint(dir, configDigest(plain));
  const lean = config(dir, 'recompute: true\noptimizer_in_backward: true\n');
  assert.equal(configDigest(lean), configDigest(plain));
  assert.match(resumes(lean).from ?? '', /checkpoint-2$/);
  assert.match(resumes(plain).from ?? '', /checkpoint-2$/);
  const otherLr = config(dir, '', '2e-3');
  assert.throws(() => resumes(otherLr), /checkpoint-2: the config changed since this checkpoint was written/);
});

test('a checkpoint with the digest of the whole config (written before) resumes under its own config only', () => {
  const dir = tempDir();
  const lean = config(dir, 'recompute: true\n');
  runWithCheckpoint(dir, legacyConfigDigest(lean));
  assert.notEqual(legacyConfigDigest(lean), configDigest(lean));
  assert.match(resumes(lean).from ?? '', /checkpoint-2$/);
  assert.throws(() => resumes(config(dir, '', '2e-3')), /the config changed/);
});
