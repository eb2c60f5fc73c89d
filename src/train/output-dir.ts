// The output folder of a training run holds only what the run writes: per adapter a folder of adapter
// files, metrics.jsonl, loss.png/loss.svg, eval.png/eval.svg, train_config.json, checkpoints/, the run's
// lock, eval/ (evaluation reports), best/<adapter>/ (the best adapter by an evaluation metric) and
// tensorboard/<adapter>/ (TensorBoard event files). Before a
// run starts, anything else there is refused naming the file (a user's files are never overwritten or
// deleted), and so are output folders that would hold the run's own inputs; then the folder is locked
// for the run's life (one run per folder).
import fs from 'node:fs';
import path from 'node:path';
import { TEMP_NAME } from '../io/atomic.js';
import { acquireRunLock, LOCK_FILE, type RunLock } from '../io/run-lock.js';
import { UserError } from '../util/errors.js';
import type { TrainConfig } from './config.js';

/** Files and folders of the run itself, at the top of output_dir. */
export const RUN_FILES = [
  'metrics.jsonl',
  'loss.png',
  'loss.svg',
  'eval.png',
  'eval.svg',
  'train_config.json',
] as const;
export const CHECKPOINTS_DIR = 'checkpoints';
/** What an adapter folder may hold (the .bin of the reference tools' format included). */
export const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors', 'adapter_model.bin'] as const;
/** `eval/`: what `mixlora eval --out <output_dir>/eval` writes (and evaluation during training). */
export const EVAL_DIR = 'eval';
const EVAL_FILE = /^(results\.(json|md)|expert_load\.json|expert-load-[A-Za-z0-9._-]+\.(svg|png))$/;
/** Evaluation during training: best/<adapter>/ holds adapter files, tensorboard/<adapter>/ event files. */
export const BEST_DIR = 'best';
export const TENSORBOARD_DIR = 'tensorboard';
const EVENT_FILE = /^events\.out\.tfevents\.[A-Za-z0-9._-]+$/;
/** Names an adapter may not take: they are the run's own files. */
export const RESERVED_NAMES = [...RUN_FILES, CHECKPOINTS_DIR, LOCK_FILE, 'loss', EVAL_DIR, BEST_DIR, TENSORBOARD_DIR];

/** Why `name` cannot name an adapter's output folder, or null when it can. */
export function adapterNameProblem(name: string): string | null {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || name.length > 100)
    return `'${name}' must start with a letter or digit and use letters, digits, '.', '_' and '-' only, at most 100 (it names a folder)`;
  if (RESERVED_NAMES.some((reserved) => reserved.toLowerCase() === name.toLowerCase()))
    return `'${name}' is the name of one of the run's own files (${RESERVED_NAMES.join(', ')})`;
  return null;
}

function inside(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The real path of `p`, or of its nearest existing parent joined with the rest. */
function realish(p: string): string {
  const abs = path.resolve(p);
  if (fs.existsSync(abs)) return fs.realpathSync(abs);
  const parent = path.dirname(abs);
  return parent === abs ? abs : path.join(realish(parent), path.basename(abs));
}

function foreign(dir: string, entry: string): never {
  throw new UserError(
    `${dir}: holds '${entry}', which is not a file of a mixlora training run; choose an empty or new output_dir (nothing was changed)`,
  );
}

function checkFolder(dir: string, rel: string, ok: (e: fs.Dirent) => boolean): void {
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true }))
    if (!TEMP_NAME.test(e.name) && !ok(e)) foreign(dir, path.join(rel, e.name));
}

/** Refuses an output_dir that is a parent of the run's inputs or holds anything the run does not
 * write; returns whether it already holds (some of) a run. Changes nothing. */
export function checkOutputDir(cfg: TrainConfig): { holdsRun: boolean } {
  const dir = realish(cfg.outputDir);
  if (path.dirname(dir) === dir) throw new UserError(`${cfg.file}: output_dir ${cfg.outputDir} is a file-system root`);
  const inputs = [
    cfg.file,
    cfg.baseModel,
    ...(cfg.tokenizer ? [cfg.tokenizer] : []),
    ...cfg.adapters.flatMap((a) => [...a.data, ...(a.initFrom ? [a.initFrom] : [])]),
  ];
  for (const f of inputs) {
    if (inside(dir, realish(f)))
      throw new UserError(
        `${cfg.file}: output_dir ${cfg.outputDir} contains ${f}, an input of this run; choose an output_dir of its own`,
      );
  }
  if (!fs.existsSync(dir)) return { holdsRun: false };
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`${cfg.outputDir}: output_dir exists and is not a folder`);
  const adapters = new Set(cfg.adapters.map((a) => a.name));
  let holdsRun = false;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const n = e.name;
    if (TEMP_NAME.test(n) || (n === LOCK_FILE && e.isFile())) continue;
    if ((RUN_FILES as readonly string[]).includes(n) && e.isFile()) {
      holdsRun = true;
    } else if (n === CHECKPOINTS_DIR && e.isDirectory()) {
      checkFolder(dir, n, (c) => /^checkpoint-\d+$/.test(c.name) && c.isDirectory());
      for (const c of fs.readdirSync(path.join(dir, n)).filter((c) => !TEMP_NAME.test(c)))
        checkFolder(
          dir,
          path.join(n, c),
          (f) => f.isFile() && (f.name === 'state.json' || f.name.endsWith('.safetensors')),
        );
      holdsRun = true;
    } else if (n === EVAL_DIR && e.isDirectory()) {
      checkFolder(dir, n, (f) => f.isFile() && EVAL_FILE.test(f.name));
    } else if ((n === BEST_DIR || n === TENSORBOARD_DIR) && e.isDirectory()) {
      const fileOk = (f: fs.Dirent) =>
        f.isFile() &&
        (n === BEST_DIR ? (ADAPTER_FILES as readonly string[]).includes(f.name) : EVENT_FILE.test(f.name));
      checkFolder(dir, n, (a) => adapters.has(a.name) && a.isDirectory());
      for (const a of fs.readdirSync(path.join(dir, n)).filter((a) => !TEMP_NAME.test(a)))
        checkFolder(dir, path.join(n, a), fileOk);
      holdsRun = true;
    } else if (adapters.has(n) && e.isDirectory()) {
      checkFolder(dir, n, (f) => f.isFile() && (ADAPTER_FILES as readonly string[]).includes(f.name));
      holdsRun = true;
    } else {
      foreign(dir, n);
    }
  }
  return { holdsRun };
}

/** Checks output_dir (above), creates it and takes its lock. Without `resume`, a folder that already
 * holds a run is refused (continuing it needs --resume; nothing is overwritten). */
export function openOutputDir(cfg: TrainConfig, opts: { resume: boolean }): RunLock {
  const check = () => {
    if (checkOutputDir(cfg).holdsRun && !opts.resume)
      throw new UserError(
        `${cfg.outputDir} already holds a training run: continue it with --resume, or choose another output_dir`,
      );
  };
  checkOutputDir(cfg); // foreign files first: refused before the folder is touched
  try {
    fs.mkdirSync(cfg.outputDir, { recursive: true });
  } catch (e) {
    throw new UserError(`${cfg.outputDir}: cannot create output_dir (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  const lock = acquireRunLock(cfg.outputDir);
  try {
    // Under the lock (a running run is named by the lock; another may have written before it).
    check();
  } catch (e) {
    lock.release();
    throw e;
  }
  return lock;
}
