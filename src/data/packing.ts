// Packing rows of token ids into one rectangular batch, the one way every caller does it: right padding
// (training, scoring, perplexity), so each row's positions stay 0..len-1 and the mask marks the padding at
// its end. (Generation needs no padding: each sequence has its own blocks of the serving engine's cache.)
// Also the next-token targets of labelled rows, the contiguous row ranges of groups of rows, and training rows
// packed with several whole examples each (packing: true; docs/design.md §6.6).
import { tensor } from '../tensor/create.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { RowSegments } from '../nn/mask.js';
import { IGNORE_INDEX, type Example } from './examples.js';

export interface PackedIds {
  /** [B, T] int64 */
  ids: Tensor;
  /** [B, T] int64, 1 for tokens and 0 for padding; null when no row is padded. */
  mask: Tensor | null;
  /** The batch's length: the longest row (at least 1). */
  T: number;
}

function padRow(row: number[], T: number, fill: number): number[] {
  return [...row, ...Array<number>(T - row.length).fill(fill)];
}

/** Rows right-padded to the longest with the id `pad`. */
export function packIds(rows: number[][], opts: { pad: number; device: Device }): PackedIds {
  const T = Math.max(1, ...rows.map((row) => row.length));
  const padded = rows.some((row) => row.length !== T);
  return {
    ids: tensor(
      rows.map((row) => padRow(row, T, opts.pad)),
      { dtype: 'int64', device: opts.device },
    ),
    mask: padded
      ? tensor(
          rows.map((row) => padRow(Array<number>(row.length).fill(1), T, 0)),
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

/** Whole examples in rows of at most `capacity` tokens, first-fit decreasing (longest first, ties in order;
 * each goes to the first row with room): the examples' indices per row. */
export function firstFitDecreasing(lengths: number[], capacity: number): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]! || a - b);
  const rows: number[][] = [];
  const room: number[] = [];
  for (const i of order) {
    const len = lengths[i]!;
    if (len > capacity)
      throw new RangeError(`packRows: an example of ${len} tokens exceeds the row capacity ${capacity}`);
    const r = room.findIndex((left) => left >= len);
    if (r >= 0) {
      rows[r]!.push(i);
      room[r]! -= len;
    } else {
      rows.push([i]);
      room.push(capacity - len);
    }
  }
  return rows;
}

/** Capacities tried between the longest example and the limit: every one up to 512 of them, else 512 spread. */
const MAX_TRIES = 512;

/**
 * Whole examples in rows of at most `maxLen` tokens, laid out to leave the least padding: first-fit decreasing
 * at each row capacity from the longest example up to `maxLen`, keeping the layout with the fewest row slots
 * (rows × the longest row), then the shortest rows. The capacity of the longest example is among the tries, and
 * it never takes more slots than one example a row: packing never pads more than padding does. Deterministic (a
 * micro-batch always packs the same way: resume and data parallelism rely on it).
 */
export function packRows(lengths: number[], maxLen: number): number[][] {
  const longest = Math.max(...lengths);
  if (longest > maxLen)
    throw new RangeError(`packRows: an example of ${longest} tokens exceeds the row capacity ${maxLen}`);
  const span = maxLen - longest;
  const tries = Math.min(span, MAX_TRIES - 1);
  let best: { rows: number[][]; slots: number; T: number } | null = null;
  for (let k = 0; k <= tries; k++) {
    const capacity = longest + (tries === 0 ? 0 : Math.round((k * span) / tries));
    const rows = firstFitDecreasing(lengths, capacity);
    const T = Math.max(...rows.map((row) => row.reduce((n, i) => n + lengths[i]!, 0)));
    const slots = rows.length * T;
    if (!best || slots < best.slots || (slots === best.slots && T < best.T)) best = { rows, slots, T };
  }
  return best!.rows;
}

export interface TrainingRows {
  /** [B, T] int64, right-padded */
  ids: Tensor;
  /** [B, T] int64: position t holds the label of t + 1 within the same example; an example's last position and
   * the padding hold IGNORE_INDEX. */
  targets: Tensor;
  /** [B, T] int64, 1 for tokens and 0 for padding; null when no row is padded. */
  mask: Tensor | null;
  /** null when every row holds one example (then the batch is exactly the padded one). */
  segments: RowSegments | null;
  T: number;
}

/** Rows of one or more whole examples each, concatenated in order and right-padded to the longest row. */
export function trainingRows(rows: Example[][], padId: number, device: Device): TrainingRows {
  const lengths = rows.map((row) => row.reduce((n, e) => n + e.inputIds.length, 0));
  const T = Math.max(1, ...lengths);
  const ids: number[][] = [];
  const targets: number[][] = [];
  const segments: number[][] = [];
  const positions: number[][] = [];
  for (const row of rows) {
    const i: number[] = [];
    const t: number[] = [];
    const s: number[] = [];
    const p: number[] = [];
    row.forEach((e, k) => {
      const n = e.inputIds.length;
      for (let j = 0; j < n; j++) {
        i.push(e.inputIds[j]!);
        t.push(j + 1 < e.labels.length ? e.labels[j + 1]! : IGNORE_INDEX);
        s.push(k + 1);
        p.push(j);
      }
    });
    const pad = T - i.length;
    ids.push([...i, ...Array<number>(pad).fill(padId)]);
    targets.push([...t, ...Array<number>(pad).fill(IGNORE_INDEX)]);
    segments.push([...s, ...Array<number>(pad).fill(0)]);
    positions.push([...p, ...Array<number>(pad).fill(0)]);
  }
  const int64 = (v: number[][]) => tensor(v, { dtype: 'int64', device });
  return {
    ids: int64(ids),
    targets: int64(targets),
    mask: lengths.some((n) => n !== T) ? int64(segments.map((row) => row.map((x) => (x > 0 ? 1 : 0)))) : null,
    segments: rows.some((row) => row.length > 1) ? { segments: int64(segments), positions: int64(positions) } : null,
    T,
  };
}
