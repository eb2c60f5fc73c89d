// Packing rows of token ids into one rectangular batch, the one way every caller does it:
//  - right padding (training, scoring, perplexity): each row's positions stay 0..len-1, the mask marks
//    the padding at its end;
//  - left padding (generation): every row's last token sits at the end, where the next one is sampled;
//    positions come from the mask (docs/design.md §2), so a padded row computes as the prompt alone.
// Also the next-token targets of labelled rows, and the contiguous row ranges of groups of rows.
import { tensor } from '../tensor/create.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { IGNORE_INDEX, type Example } from './examples.js';

export type PadSide = 'right' | 'left';

export interface PackedIds {
  /** [B, T] int64 */
  ids: Tensor;
  /** [B, T] int64, 1 for tokens and 0 for padding; null when no row is padded. */
  mask: Tensor | null;
  /** The batch's length: the longest row (at least 1). */
  T: number;
}

function padRow(row: number[], T: number, fill: number, side: PadSide): number[] {
  const pad = Array<number>(T - row.length).fill(fill);
  return side === 'right' ? [...row, ...pad] : [...pad, ...row];
}

/** Rows padded on `side` to the longest; `pad` fills the padding (an id, or one chosen per row). */
export function packIds(
  rows: number[][],
  opts: { side: PadSide; pad: number | ((row: number[]) => number); device: Device },
): PackedIds {
  const T = Math.max(1, ...rows.map((row) => row.length));
  const fill = (row: number[]) => (typeof opts.pad === 'number' ? opts.pad : opts.pad(row));
  const padded = rows.some((row) => row.length !== T);
  return {
    ids: tensor(
      rows.map((row) => padRow(row, T, fill(row), opts.side)),
      { dtype: 'int64', device: opts.device },
    ),
    mask: padded
      ? tensor(
          rows.map((row) => padRow(Array<number>(row.length).fill(1), T, 0, opts.side)),
          { dtype: 'int64', device: opts.device },
        )
      : null,
    T,
  };
}

/** Next-token targets of right-padded rows, [B, T] int64: position t holds label t + 1; the last
 * position and the padding hold IGNORE_INDEX (so the logits are scored in place, unshifted). */
export function nextTokenTargets(rows: Example[], T: number, device: Device): Tensor {
  return tensor(
    rows.map((e) => Array.from({ length: T }, (_, t) => (t + 1 < e.labels.length ? e.labels[t + 1]! : IGNORE_INDEX))),
    { dtype: 'int64', device },
  );
}

/** Groups of `counts[i]` consecutive rows as contiguous ranges, in order. */
export function rowRanges(counts: number[]): { start: number; count: number }[] {
  let start = 0;
  return counts.map((count) => {
    const range = { start, count };
    start += count;
    return range;
  });
}
