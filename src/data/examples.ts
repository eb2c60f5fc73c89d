// Training examples: records of a JSON or JSONL file in one of the supported shapes, tokenised into
// input ids and labels (-100 = not scored), truncated to cutoff_len.
//  - LLM-Adapters / alpaca: {instruction, input?, output}    (prompt template; prompt not scored)
//  - {prompt, completion}                                  (prompt not scored)
//  - {messages: [{role, content}, ...]}                    (chat template; assistant turns scored)
//  - ShareGPT {conversations: [{from, value}, ...]}         (as messages; sharegpt.ts, or a file's own
//                                                            columns/tags mapping)
//  - {input_ids, labels?}                                   (used exactly as given)
// The prompt is not scored unless train_on_inputs; EOS ends templated examples.
import type { ChatMessage, TextTokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import { readRecords } from './jsonl.js';
import { SHAREGPT_DEFAULTS, shareGptMessages, type ShareGptFormat } from './sharegpt.js';
import { compileTemplate } from './templates.js';

export const IGNORE_INDEX = -100;

export interface Example {
  inputIds: number[];
  labels: number[];
}

export interface DatasetStats {
  records: number;
  truncated: number;
  droppedUnscored: number;
  tokens: number;
  scoredTokens: number;
}

export interface TokenizeOptions {
  template: string;
  trainOnInputs: boolean;
  cutoffLen: number;
  vocabSize: number;
  /** Every record is a ShareGPT conversation read with this mapping (the data block's columns/tags); absent or
   * null: each record's shape is detected, `conversations` read with LLaMA-Factory's default tags. */
  sharegpt?: ShareGptFormat | null;
}

function str(o: Record<string, unknown>, key: string, where: string, optional = false): string {
  const v = o[key];
  if (v === undefined && optional) return '';
  if (typeof v !== 'string') throw new UserError(`${where}: "${key}" must be a string`);
  return v;
}

function idList(o: Record<string, unknown>, key: string, where: string, vocab: number, allowIgnore: boolean): number[] {
  const v = o[key];
  if (!Array.isArray(v) || !v.every((x) => Number.isSafeInteger(x)))
    throw new UserError(`${where}: "${key}" must be a list of integers`);
  for (const x of v as number[]) {
    if ((x < 0 || x >= vocab) && !(allowIgnore && x === IGNORE_INDEX))
      throw new UserError(`${where}: "${key}" holds ${x}, outside the vocabulary (0..${vocab - 1})`);
  }
  return v as number[];
}

/** A pre-tokenised record {input_ids, labels?} used exactly as given (labels default to the ids; -100 is
 * not scored), validated against the vocabulary; `where` (file:line) names it in errors. */
export function pretokenized(o: Record<string, unknown>, where: string, vocab: number): Example {
  const inputIds = idList(o, 'input_ids', where, vocab, false);
  const labels = o.labels === undefined ? inputIds : idList(o, 'labels', where, vocab, true);
  if (labels.length !== inputIds.length)
    throw new UserError(`${where}: "labels" has ${labels.length} entries but "input_ids" has ${inputIds.length}`);
  return { inputIds, labels };
}

/** Text past `maxChars` cannot reach the first cutoff_len tokens (no token is longer than
 * maxTokenChars), so it is cut before tokenising: the work per record is bounded by cutoff_len, not
 * by the record (a 50 MB record costs what a record of a few cutoff_len's characters costs). */
function clip(text: string, maxChars: number): string {
  return text.length > maxChars ? text.slice(0, maxChars) : text;
}

/** Tokenises prompt+completion jointly (so the boundary tokenises as in inference); the prompt's own
 * token count decides how many labels are masked. */
function promptCompletion(
  tok: TextTokenizer,
  prompt: string,
  completion: string,
  trainOnInputs: boolean,
  maxChars: number,
): Example {
  const full = tok.encode(clip(prompt + completion, maxChars));
  if (tok.eosId !== null && full[full.length - 1] !== tok.eosId) full.push(tok.eosId);
  const promptLen = Math.min(tok.encode(clip(prompt, maxChars)).length, full.length);
  const labels = full.map((t, i) => (i < promptLen && !trainOnInputs ? IGNORE_INDEX : t));
  return { inputIds: full, labels };
}

/** {messages}: a non-empty list of {role, content}. */
function messageList(raw: unknown, where: string): ChatMessage[] {
  if (
    !Array.isArray(raw) ||
    raw.length === 0 ||
    !raw.every((m) => m && typeof m.role === 'string' && typeof m.content === 'string')
  ) {
    throw new UserError(`${where}: "messages" must be a non-empty list of {role, content}`);
  }
  return (raw as ChatMessage[]).map((m) => ({ role: m.role, content: m.content }));
}

/** The whole conversation is tokenised at once; each assistant turn's tokens are found from the token
 * counts of the rendered text before and after it (chat templates end turns at special tokens or
 * newlines, where tokenisation of a prefix agrees with that of the whole). */
function chat(
  tok: TextTokenizer,
  given: ChatMessage[],
  where: string,
  trainOnInputs: boolean,
  maxChars: number,
  shape: string,
): Example {
  const messages = given.map((m) => ({ role: m.role, content: clip(m.content, maxChars) }));
  if (!tok.hasChatTemplate) throw new UserError(`${where}: ${shape} data needs a tokenizer with a chat_template`);
  const inputIds = tok.encode(tok.applyChatTemplate(messages), { special: false });
  const labels = inputIds.map((t) => (trainOnInputs ? t : IGNORE_INDEX));
  messages.forEach((m: { role: string }, i: number) => {
    if (m.role !== 'assistant') return;
    const start = tok.encode(tok.applyChatTemplate(messages.slice(0, i), { addGenerationPrompt: true }), {
      special: false,
    }).length;
    const end = Math.min(
      inputIds.length,
      tok.encode(tok.applyChatTemplate(messages.slice(0, i + 1)), { special: false }).length,
    );
    for (let t = start; t < end; t++) labels[t] = inputIds[t]!;
  });
  return { inputIds, labels };
}

/** Reads and tokenises a training file; refuses the first malformed record naming file and line. */
export function loadExamples(
  file: string,
  tokenizer: TextTokenizer | null,
  o: TokenizeOptions,
): { examples: Example[]; stats: DatasetStats } {
  const { records, unit } = readRecords(file);
  let template: ReturnType<typeof compileTemplate>;
  try {
    template = compileTemplate(o.template);
  } catch (e) {
    throw new UserError((e as Error).message);
  }
  const maxChars = tokenizer ? (o.cutoffLen + 16) * tokenizer.maxTokenChars : Infinity;
  const stats: DatasetStats = { records: records.length, truncated: 0, droppedUnscored: 0, tokens: 0, scoredTokens: 0 };
  const examples: Example[] = [];
  if (records.length === 0) throw new UserError(`${file}: no records`);
  for (const { value, line } of records) {
    const where = `${file}:${line}${unit === 'record' ? ' (record)' : ''}`;
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new UserError(`${where}: expected an object`);
    const record = value as Record<string, unknown>;
    const tok = (): TextTokenizer => {
      if (!tokenizer)
        throw new UserError(
          `${where}: this record needs a tokenizer, and the base model has none (give tokenizer: in the config, or pre-tokenised {input_ids, labels})`,
        );
      return tokenizer;
    };
    let ex: Example;
    if (o.sharegpt) {
      ex = chat(tok(), shareGptMessages(record, o.sharegpt, where), where, o.trainOnInputs, maxChars, 'ShareGPT');
    } else if (record.input_ids !== undefined) {
      ex = pretokenized(record, where, o.vocabSize);
    } else if (record.messages !== undefined) {
      ex = chat(tok(), messageList(record.messages, where), where, o.trainOnInputs, maxChars, '{messages}');
    } else if (record.conversations !== undefined) {
      const messages = shareGptMessages(record, SHAREGPT_DEFAULTS, where);
      ex = chat(tok(), messages, where, o.trainOnInputs, maxChars, 'ShareGPT');
    } else if (record.prompt !== undefined || record.completion !== undefined) {
      ex = promptCompletion(
        tok(),
        str(record, 'prompt', where),
        str(record, 'completion', where),
        o.trainOnInputs,
        maxChars,
      );
    } else if (record.instruction !== undefined) {
      const parts = template({
        instruction: str(record, 'instruction', where),
        input: str(record, 'input', where, true),
        output: str(record, 'output', where),
      });
      ex = promptCompletion(tok(), parts.prompt, parts.completion, o.trainOnInputs, maxChars);
    } else {
      throw new UserError(
        `${where}: unrecognised record: expected {instruction, input, output}, {prompt, completion}, {messages}, {conversations} (ShareGPT) or {input_ids, labels}`,
      );
    }
    if (ex.inputIds.length > o.cutoffLen) {
      stats.truncated++;
      ex = { inputIds: ex.inputIds.slice(0, o.cutoffLen), labels: ex.labels.slice(0, o.cutoffLen) };
    }
    const scored = scoredTokens(ex);
    if (scored === 0) {
      stats.droppedUnscored++;
      continue;
    }
    stats.tokens += ex.inputIds.length;
    stats.scoredTokens += scored;
    examples.push(ex);
  }
  if (examples.length === 0)
    throw new UserError(`${file}: no example has a scored token left (after truncation to cutoff_len ${o.cutoffLen})`);
  return { examples, stats };
}

/** The targets an example scores: position t predicts token t+1, so the first label never counts. */
export function scoredTokens(e: Example): number {
  let n = 0;
  for (let i = 1; i < e.labels.length; i++) if (e.labels[i] !== IGNORE_INDEX) n++;
  return n;
}
