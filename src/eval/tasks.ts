// Evaluation items from the two data shapes in use (docs/design.md §11.1):
//  - LLM-Adapters JSON: {instruction, input?, output: "the correct answer is X", answer: "X"}; the
//    candidates come from the instruction's "Answer format: a/b/c" line (or the task's defaults);
//  - multiple-choice JSONL: {query, choices: [...], gold: index}.
// Each item has a context and candidate continuations for `choice` scoring (candidate labels) and for
// `loglik` scoring (whole choices).
import path from 'node:path';
import { readRecords } from '../data/jsonl.js';
import { compileTemplate } from '../data/templates.js';
import { UserError } from '../util/errors.js';
import { packageRoot } from '../util/package.js';

export const TASKS = ['arc-e', 'arc-c', 'boolq', 'obqa', 'piqa', 'siqa', 'winogrande', 'hellaswag'] as const;

const DEFAULT_LABELS: Record<string, string[]> = {
  'arc-e': ['answer1', 'answer2', 'answer3', 'answer4', 'answer5'],
  'arc-c': ['answer1', 'answer2', 'answer3', 'answer4', 'answer5'],
  boolq: ['true', 'false'],
  obqa: ['answer1', 'answer2', 'answer3', 'answer4'],
  piqa: ['solution1', 'solution2'],
  siqa: ['answer1', 'answer2', 'answer3'],
  winogrande: ['option1', 'option2'],
  hellaswag: ['ending1', 'ending2', 'ending3', 'ending4'],
};

export interface Scoring {
  context: string;
  continuations: string[];
}
export interface EvalItem {
  choice: Scoring;
  loglik: Scoring;
  gold: number;
}
export interface EvalTask {
  name: string;
  file: string;
  shape: 'llm-adapters' | 'multiple-choice';
  items: EvalItem[];
}

const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** The bundled test slice of a known task, when --data is not given. */
export function bundledData(task: string): string | null {
  if (!(TASKS as readonly string[]).includes(task) || task === 'hellaswag') return null;
  return path.join(packageRoot(), 'assets', 'data', 'commonsense', `${task}.test.jsonl.gz`);
}

function labelsOf(instruction: string, task: string): string[] | null {
  const m = /Answer format:\s*([^\n]+)/.exec(instruction);
  if (m) {
    const labels = m[1]!
      .trim()
      .split('/')
      .map((s) => s.trim())
      .filter(Boolean);
    if (labels.length >= 2) return labels;
  }
  return DEFAULT_LABELS[task] ?? null;
}

export function loadTask(name: string, file: string, opts: { template: string; limit: number | null }): EvalTask {
  const { records } = readRecords(file);
  if (records.length === 0) throw new UserError(`${file}: no records`);
  const first = records[0]!.value as Record<string, unknown>;
  const shape = first && typeof first === 'object' && 'query' in first ? 'multiple-choice' : 'llm-adapters';
  const template = compileTemplate(opts.template);
  const take = opts.limit === null ? records : records.slice(0, opts.limit);
  const items = take.map(({ value, line }) => {
    const where = `${file}:${line}`;
    const record = value as Record<string, unknown>;
    if (!record || typeof record !== 'object' || Array.isArray(record))
      throw new UserError(`${where}: expected an object`);
    return shape === 'multiple-choice' ? multipleChoice(record, where) : llmAdapters(record, where, name, template);
  });
  return { name, file, shape, items };
}

function llmAdapters(
  record: Record<string, unknown>,
  where: string,
  task: string,
  template: ReturnType<typeof compileTemplate>,
): EvalItem {
  if (typeof record.instruction !== 'string' || typeof record.answer !== 'string') {
    throw new UserError(
      `${where}: not an LLM-Adapters record ({instruction, output, answer}) nor a multiple-choice one ({query, choices, gold})`,
    );
  }
  const labels = labelsOf(record.instruction, task);
  if (!labels)
    throw new UserError(
      `${where}: no "Answer format: a/b/..." line in the instruction and no default labels for task '${task}'`,
    );
  const gold = labels.indexOf(record.answer.trim());
  if (gold < 0) throw new UserError(`${where}: answer '${record.answer}' is not one of the labels ${labels.join('/')}`);
  // The output reads "<prefix> <answer>": condition on the prompt and the prefix.
  const output = typeof record.output === 'string' ? record.output : `the correct answer is ${record.answer}`;
  const prefix = output.endsWith(record.answer)
    ? output.slice(0, output.length - record.answer.length).trimEnd()
    : 'the correct answer is';
  const { prompt } = template({
    instruction: record.instruction,
    input: typeof record.input === 'string' ? record.input : '',
    output: '',
  });
  const s: Scoring = { context: prompt + prefix, continuations: labels.map((l) => ` ${l}`) };
  return { choice: s, loglik: s, gold };
}

function multipleChoice(record: Record<string, unknown>, where: string): EvalItem {
  const { query, choices, gold } = record;
  if (
    typeof query !== 'string' ||
    !Array.isArray(choices) ||
    choices.length < 2 ||
    !choices.every((c) => typeof c === 'string') ||
    !Number.isInteger(gold) ||
    (gold as number) < 0 ||
    (gold as number) >= choices.length
  ) {
    throw new UserError(
      `${where}: a multiple-choice record needs "query" (string), "choices" (2+ strings) and "gold" (an index into choices)`,
    );
  }
  if (choices.length > LETTERS.length) throw new UserError(`${where}: more than ${LETTERS.length} choices`);
  const listing = (choices as string[]).map((c, i) => `(${LETTERS[i]}) ${c}`).join('\n');
  return {
    choice: {
      context: `${query}\n${listing}\nAnswer:`,
      continuations: (choices as string[]).map((_, i) => ` ${LETTERS[i]}`),
    },
    loglik: { context: query, continuations: (choices as string[]).map((c) => ` ${c}`) },
    gold: gold as number,
  };
}
