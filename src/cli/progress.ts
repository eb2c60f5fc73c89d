// Progress on stderr: bars when stderr is a terminal, otherwise a log line at most every 10 s
// (and at the end), so logs of long runs stay readable.
import cliProgress from 'cli-progress';
import type { DownloadProgress } from '../models/hub.js';
import type { Progress, ProgressBar } from '../util/progress.js';

const LOG_INTERVAL_MS = 10_000;

function fieldText(fields: Record<string, string | number>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

/** One progress display for a command; bars of several tasks (adapters, eval tasks) stack. */
export function createProgress(opts: { quiet?: boolean } = {}): Progress {
  const tty = Boolean(process.stderr.isTTY) && !opts.quiet;
  const multi = tty
    ? new cliProgress.MultiBar(
        { stream: process.stderr, clearOnComplete: false, hideCursor: true, etaBuffer: 50, fps: 5 },
        cliProgress.Presets.shades_classic,
      )
    : null;
  return {
    bar(label, total, format) {
      if (multi) {
        const b = multi.create(
          total,
          0,
          { label, info: '' },
          { format: format ?? `{label} |{bar}| {value}/{total} {info} ETA {eta_formatted}` },
        );
        return {
          update: (v, fields) => b.update(v, { label, info: fields ? fieldText(fields) : '' }),
          stop: () => b.stop(),
        };
      }
      let last = 0;
      let lastValue = -1;
      const started = Date.now();
      const say = (v: number, fields?: Record<string, string | number>) => {
        const elapsed = (Date.now() - started) / 1000;
        const eta = v > 0 ? ((total - v) * elapsed) / v : NaN;
        if (!opts.quiet)
          process.stderr.write(
            `${label}: ${v}/${total}${fields ? `, ${fieldText(fields)}` : ''}${Number.isFinite(eta) && v < total ? `, ETA ${eta.toFixed(0)} s` : ''}\n`,
          );
      };
      let lastFields: Record<string, string | number> | undefined;
      return {
        update(v, fields) {
          lastValue = v;
          lastFields = fields;
          if (Date.now() - last >= LOG_INTERVAL_MS || v >= total) {
            last = Date.now();
            say(v, fields);
          }
        },
        stop() {
          if (lastValue >= 0 && lastValue < total && Date.now() - last > 0) say(lastValue, lastFields);
        },
      };
    },
    log(line) {
      if (opts.quiet) return;
      if (multi) multi.log(`${line}\n`);
      else process.stderr.write(`${line}\n`);
    },
    stop() {
      multi?.stop();
    },
  };
}

const MIB = 1024 * 1024;

/** A download's progress as a bar in MiB (for model ids fetched from the Hugging Face Hub). */
export function downloadProgress(progress: Progress, label: string): DownloadProgress {
  let bar: ProgressBar | null = null;
  return {
    start(total, files) {
      progress.log(`${label}: downloading ${files} files (${(total / MIB).toFixed(1)} MiB)`);
      bar = progress.bar(
        label,
        Math.max(1, Math.ceil(total / MIB)),
        '{label} |{bar}| {value}/{total} MiB ETA {eta_formatted}',
      );
    },
    update(bytes) {
      bar?.update(Math.floor(bytes / MIB));
    },
    stop() {
      bar?.stop();
    },
  };
}
