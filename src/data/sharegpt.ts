// ShareGPT conversations ({"conversations": [{"from", "value"}, ...]}) read as LLaMA-Factory's
// SharegptDatasetConverter reads them (its dataset_info.json `columns` and `tags`), then rendered through the
// tokenizer's chat template like {messages} records:
//  - a first turn tagged `system_tag` is the system prompt; otherwise the `system` column, when named;
//  - the other turns alternate: user-side (user_tag, observation_tag) at turns 1, 3, ...; assistant-side
//    (assistant_tag, function_tag) at turns 2, 4, ...; a conversation ends with an assistant-side turn;
//  - roles for the chat template: user → "user", assistant → "assistant", function_call (a tool call the
//    model writes, trained as LLaMA-Factory trains it) → "assistant", observation (a tool's result, not
//    trained) → "tool", system → "system".
// LLaMA-Factory skips a broken conversation with a warning; here it is refused naming file, line and field.
import type { ChatMessage } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';

/** Where a record keeps its turns and system prompt, and how turns name their speaker (LLaMA-Factory's
 * `columns` and `tags`; the defaults are its defaults for `formatting: sharegpt`). */
export interface ShareGptFormat {
  /** Column holding the turns (`columns.messages`). */
  messages: string;
  /** Column holding a system prompt, used when the first turn is not a system turn (`columns.system`). */
  system: string | null;
  roleTag: string;
  contentTag: string;
  userTag: string;
  assistantTag: string;
  observationTag: string;
  functionTag: string;
  systemTag: string;
}

export const SHAREGPT_DEFAULTS: ShareGptFormat = {
  messages: 'conversations',
  system: null,
  roleTag: 'from',
  contentTag: 'value',
  userTag: 'human',
  assistantTag: 'gpt',
  observationTag: 'observation',
  functionTag: 'function_call',
  systemTag: 'system',
};

/** The `columns` keys read (LLaMA-Factory's names) and the format field each sets. */
export const SHAREGPT_COLUMNS = { messages: 'messages', system: 'system' } as const;
/** The `tags` keys read (LLaMA-Factory's names) and the format field each sets. */
export const SHAREGPT_TAGS = {
  role_tag: 'roleTag',
  content_tag: 'contentTag',
  user_tag: 'userTag',
  assistant_tag: 'assistantTag',
  observation_tag: 'observationTag',
  function_tag: 'functionTag',
  system_tag: 'systemTag',
} as const;

/** The record's conversation as chat messages (roles: system, user, assistant, tool); `where` is file:line. */
export function shareGptMessages(record: Record<string, unknown>, f: ShareGptFormat, where: string): ChatMessage[] {
  const col = f.messages;
  const turns = record[col];
  if (!Array.isArray(turns) || turns.length === 0)
    throw new UserError(`${where}: "${col}" must be a non-empty list of {${f.roleTag}, ${f.contentTag}} turns`);
  const read = (i: number): { tag: string; content: string } => {
    const t = turns[i] as Record<string, unknown> | null;
    const at = `${where}: "${col}[${i}]`;
    if (t === null || typeof t !== 'object' || Array.isArray(t))
      throw new UserError(`${at}" must be an object {${f.roleTag}, ${f.contentTag}}`);
    const tag = t[f.roleTag];
    const content = t[f.contentTag];
    if (typeof tag !== 'string') throw new UserError(`${at}.${f.roleTag}" must be a string`);
    if (typeof content !== 'string') throw new UserError(`${at}.${f.contentTag}" must be a string`);
    return { tag, content };
  };
  const out: ChatMessage[] = [];
  let first = 0;
  if (read(0).tag === f.systemTag) {
    out.push({ role: 'system', content: read(0).content });
    first = 1;
  } else if (f.system !== null && record[f.system] !== undefined && record[f.system] !== null) {
    const system = record[f.system];
    if (typeof system !== 'string') throw new UserError(`${where}: "${f.system}" (the system column) must be a string`);
    if (system !== '') out.push({ role: 'system', content: system });
  }
  const userSide = [f.userTag, f.observationTag];
  const assistantSide = [f.assistantTag, f.functionTag];
  for (let i = first; i < turns.length; i++) {
    const { tag, content } = read(i);
    const expectUser = (i - first) % 2 === 0;
    const allowed = expectUser ? userSide : assistantSide;
    if (!allowed.includes(tag)) {
      const known = [...userSide, ...assistantSide, f.systemTag].includes(tag);
      throw new UserError(
        `${where}: "${col}[${i}].${f.roleTag}" is '${tag}' where ${expectUser ? 'a user-side' : 'an assistant-side'} turn ` +
          `(${allowed.map((a) => `'${a}'`).join(' or ')}) belongs: ` +
          (known
            ? 'turns alternate user-side, assistant-side (a system turn only first)'
            : `it is none of the role tags (${[...userSide, ...assistantSide, f.systemTag].join(', ')}); map it with tags in the data block`),
      );
    }
    out.push({ role: tag === f.userTag ? 'user' : tag === f.observationTag ? 'tool' : 'assistant', content });
  }
  if (turns.length === first) throw new UserError(`${where}: "${col}" holds a system turn and nothing else`);
  if ((turns.length - first) % 2 !== 0)
    throw new UserError(
      `${where}: "${col}" ends with a user-side turn: a conversation ends with an assistant-side turn ('${f.assistantTag}' or '${f.functionTag}')`,
    );
  return out;
}
