// The run's metrics.jsonl: one line per optimizer step of each adapter (and, from eval-during.ts,
// evaluation lines). Resuming cuts it back to the lines the checkpoint had seen.
import fs from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';
import type { LossPoint } from './loss-chart.js';

export interface MetricsLine {
  adapter: string;
  step: number;
  epoch: number;
  loss: number;
  aux: number | null;
  lr: number;
  tokens: number;
  tokens_per_s: number;
  grad_norm: number | null;
}

function nonEmptyLines(file: string): string[] {
  return fs.existsSync(file)
    ? fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim())
    : [];
}

export function countLines(file: string): number {
  return nonEmptyLines(file).length;
}

/** Keeps the first n lines (none: an empty file). */
export function truncateLines(file: string, n: number): void {
  writeFileAtomic(
    file,
    nonEmptyLines(file)
      .slice(0, n)
      .map((l) => `${l}\n`)
      .join(''),
  );
}

/** The training lines of a metrics file, as points of the loss chart. */
export function readMetrics(file: string): LossPoint[] {
  return nonEmptyLines(file)
    .map((l) => JSON.parse(l) as MetricsLine & { split?: string })
    .filter((m) => m.split !== 'eval') // evaluation lines (eval-during.ts)
    .map((m) => {
      return { adapter: m.adapter, step: m.step, loss: m.loss, aux: m.aux };
    });
}
