// The new-run form's config: checked by the parser of `mixlora train` (train/config.ts), its error mapped
// back to the field that caused it; written as the YAML a person would run by hand; and a preview of the
// first records of its data as the trainer tokenises them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { parseTrainConfig, type TrainConfig } from '../train/config.js';
import { adapterNameProblem } from '../train/output-dir.js';
import { loadExamples, IGNORE_INDEX } from '../data/examples.js';
import { readRecords } from '../data/jsonl.js';
import { isModelId, parseModelId, findCached } from '../models/hub.js';
import { modelFormatOf, readConfigOf } from '../models/folder.js';
import { modelTokenizer } from '../models/model-tokenizer.js';
import type { ConfigFile } from '../util/config-file.js';
import { UserError } from '../util/errors.js';
import type { Confinement } from './paths.js';

/** An error of the form: `field` is the config path of the input it belongs to (`adapters.0.lr`), or null. */
export interface FieldError {
  field: string | null;
  message: string;
}

export interface CheckedConfig {
  /** The config with its paths as the YAML file beside the run holds them (absolute, confined). */
  value: Record<string, unknown>;
  /** Where the config goes: <runs>/<name>.yaml. */
  file: string;
  parsed: TrainConfig;
}

const MARK = '\u0001';
const RUN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** The field a parser message names (its locate() output carries the path between marks), and the message
 * without the file and line. */
export function fieldOf(message: string): FieldError {
  const m = new RegExp(`${MARK}(\\[.*?\\])${MARK}: (?:field '[^']*' )?([\\s\\S]*)$`).exec(message);
  if (!m) return { field: null, message: message.replace(new RegExp(`${MARK}[^${MARK}]*${MARK}:? ?`, 'g'), '') };
  const where = JSON.parse(m[1]!) as (string | number)[];
  return { field: where.join('.'), message: m[2]! };
}

/** A ConfigFile over a value (no file to read), whose locate() marks the field's path for fieldOf. */
function virtualConfig(file: string, value: unknown): ConfigFile {
  return { file, value, locate: (p) => `${MARK}${JSON.stringify(p)}${MARK}` };
}

/** Path fields of the config: each must resolve inside the studio's folders. */
function pathFields(value: Record<string, unknown>): [string, string][] {
  const out: [string, string][] = [];
  const add = (field: string, v: unknown) => {
    if (typeof v === 'string') out.push([field, v]);
    else if (Array.isArray(v)) v.forEach((x, i) => typeof x === 'string' && out.push([`${field}.${i}`, x]));
  };
  add('base_model', value.base_model);
  add('tokenizer', value.tokenizer);
  if (Array.isArray(value.adapters))
    value.adapters.forEach((a: unknown, i) => {
      if (a && typeof a === 'object') {
        add(`adapters.${i}.data`, (a as Record<string, unknown>).data);
        add(`adapters.${i}.init_from`, (a as Record<string, unknown>).init_from);
      }
    });
  const ev = value.eval as Record<string, unknown> | undefined;
  if (ev && typeof ev === 'object') add('eval.data', ev.data);
  return out;
}

/** Checks a run's name and config as `mixlora train` would, with every path confined to the studio's
 * folders; throws a FieldError-carrying StudioFormError. `resume`: the run folder may exist. */
export function checkConfig(
  conf: Confinement,
  name: unknown,
  raw: unknown,
  opts: { resume?: boolean } = {},
): CheckedConfig {
  if (typeof name !== 'string' || !RUN_NAME.test(name))
    throw new FormError(
      'name',
      'must start with a letter or digit and use letters, digits, . _ - only (it names a folder)',
    );
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new FormError(null, 'the config must be an object');
  const value = structuredClone(raw) as Record<string, unknown>;
  const runDir = path.join(conf.runs, name);
  if (!opts.resume && fs.existsSync(runDir))
    throw new FormError('name', `a run named '${name}' already exists under the runs folder`);
  if (!opts.resume && fs.existsSync(`${runDir}.yaml`))
    throw new FormError('name', `runs/${name}.yaml already exists: choose another name`);
  if (value.output_dir !== undefined && value.output_dir !== name)
    throw new FormError('output_dir', 'is the run name (the run goes to its folder under the runs folder)');
  value.output_dir = name;
  // Paths: confined, written absolute into the config (a Hub id cached on this machine stays an id).
  for (const [field, p] of pathFields(value)) {
    if (field === 'base_model' && !fs.existsSync(p) && isModelId(p) && conf.resolve(p) === null) {
      if (findCached(parseModelId(p)) === null)
        throw new FormError(
          field,
          `'${p}' is not in the Hugging Face cache of this machine (the studio downloads nothing)`,
        );
      continue;
    }
    const real = conf.fromShown(p);
    if (real === null) throw new FormError(field, `'${p}' was not found in the folders this studio may read`);
    setPath(value, field, real);
  }
  if (Array.isArray(value.adapters))
    for (const [i, a] of (value.adapters as Record<string, unknown>[]).entries()) {
      const problem = typeof a?.name === 'string' ? adapterNameProblem(a.name) : null;
      if (problem) throw new FormError(`adapters.${i}.name`, problem);
    }
  const file = path.join(conf.runs, `${name}.yaml`);
  let parsed: TrainConfig;
  try {
    parsed = parseTrainConfig(virtualConfig(file, value));
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    const fe = fieldOf(e.message.replace(`${file}: `, ''));
    throw new FormError(fe.field, fe.message);
  }
  return { value, file, parsed };
}

function setPath(obj: Record<string, unknown>, field: string, v: unknown): void {
  const keys = field.split('.');
  let o = obj as Record<string, unknown> | unknown[];
  for (const k of keys.slice(0, -1)) o = (o as Record<string, unknown>)[k] as Record<string, unknown>;
  (o as Record<string, unknown>)[keys[keys.length - 1]!] = v;
}

export class FormError extends Error {
  constructor(
    readonly field: string | null,
    message: string,
  ) {
    super(message);
  }
}

/** The config as YAML, with the studio's paths shown as the user wrote them relative to the config's
 * folder where they are inside the runs folder (runs/<name>.yaml runs as it is). */
export function configYaml(conf: Confinement, value: Record<string, unknown>, name: string): string {
  const shown = structuredClone(value);
  const rel = (p: string) => {
    const r = path.relative(conf.runs, p);
    return r.startsWith('..') || path.isAbsolute(r) ? p : r;
  };
  for (const [field, p] of pathFields(shown)) if (path.isAbsolute(p)) setPath(shown, field, rel(p));
  const head =
    `# Made with mixlora studio. Run it by hand with: mixlora train ${name}.yaml (from the runs folder)\n` +
    `# (resume a stopped run with --resume). Paths in the runs folder are relative to this file.\n`;
  return head + YAML.stringify(shown, { lineWidth: 0 });
}

export interface PreviewRecord {
  /** Where the record is (file:line). */
  where: string;
  /** The tokens' texts and whether each is scored (the prompt is not, unless train_on_inputs). */
  tokens: { text: string; scored: boolean }[];
  total: number;
  scored: number;
}

/** The first `n` records of `data` tokenised exactly as training would (data/examples.ts), with the
 * tokenizer of the model (read without its weights). */
export function previewData(
  conf: Confinement,
  o: {
    base_model: string;
    tokenizer?: string | null;
    data: string;
    prompt_template?: string;
    train_on_inputs?: boolean;
    cutoff_len?: number;
    n?: number;
  },
): PreviewRecord[] {
  const model = conf.fromShown(o.base_model);
  if (model === null)
    throw new FormError('base_model', `'${o.base_model}' was not found in the folders this studio may read`);
  const tokFile = o.tokenizer ? conf.fromShown(o.tokenizer) : null;
  if (o.tokenizer && tokFile === null) throw new FormError('tokenizer', `'${o.tokenizer}' was not found`);
  const data = conf.fromShown(o.data);
  if (data === null) throw new FormError('adapters.0.data', `'${o.data}' was not found`);
  const config = readConfigOf(model);
  const tok = modelTokenizer(model, modelFormatOf(model), config, tokFile);
  const n = Math.min(Math.max(o.n ?? 3, 1), 10);
  const { records, unit } = readRecords(data);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mixlora-preview-'));
  try {
    const out: PreviewRecord[] = [];
    for (const r of records.slice(0, n)) {
      const file = path.join(tmp, 'record.jsonl');
      fs.writeFileSync(file, JSON.stringify(r.value) + '\n');
      const where = `${conf.show(data)}:${r.line}${unit === 'record' ? ' (record)' : ''}`;
      let ex;
      try {
        ex = loadExamples(file, tok, {
          template: o.prompt_template ?? 'alpaca',
          trainOnInputs: o.train_on_inputs ?? false,
          cutoffLen: o.cutoff_len ?? 512,
          vocabSize: config.vocabSize,
        }).examples[0]!;
      } catch (e) {
        throw new FormError('adapters.0.data', (e as Error).message.replace(file, where).replace(`${where}:1`, where));
      }
      // Each token's text: what it adds to the decoded text so far (so the pieces add up to the text).
      const tokens: PreviewRecord['tokens'] = [];
      let before = '';
      for (let i = 0; i < ex.inputIds.length; i++) {
        const now = tok.decode(ex.inputIds.slice(0, i + 1), { skipSpecial: false });
        tokens.push({ text: now.slice(before.length), scored: ex.labels[i] !== IGNORE_INDEX });
        before = now;
      }
      out.push({ where, tokens, total: ex.inputIds.length, scored: tokens.filter((t) => t.scored).length });
    }
    return out;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
