// What the package ships to try things with, found inside the installed package (wherever npm put it).
import path from 'node:path';
import { packageRoot } from '../util/package.js';

/** A bundled model: the checkpoint and its tokenizer (pass both to {@link LLM.load} or a training config). */
export interface BundledModel {
  /** The model file (for `LLM.load(model, { tokenizer })`, or a config's `base_model`). */
  model: string;
  /** Its tokenizer (`tokenizer` option or config key). */
  tokenizer: string;
}

/**
 * stories260K, bundled with the package: Karpathy's llama2.c model of 260K parameters trained on TinyStories
 * (dim 64, 5 layers, context 512, vocabulary 512), with its tokenizer. It writes small children's stories:
 * enough to run every part of the library in seconds on a CPU.
 */
export function stories260K(): BundledModel {
  const dir = path.join(packageRoot(), 'assets', 'models', 'stories260K');
  return { model: path.join(dir, 'stories260K.bin'), tokenizer: path.join(dir, 'tok512.bin') };
}

/**
 * A bundled commonsense-QA data file (LLM-Adapters JSON lines, gzipped), by name: `<task>.train` (arc-e, arc-c,
 * boolq, obqa: 1,000 records each) or `<task>.test` (those and piqa, siqa, winogrande: 500 each).
 */
export function bundledDataFile(name: string): string {
  return path.join(packageRoot(), 'assets', 'data', 'commonsense', `${name}.jsonl.gz`);
}
