// Prompt templates for instruction data: a named one or a template string with {instruction},
// {input} and {output} (everything before {output} is the prompt).
import { UserError } from '../util/errors.js';

export interface PromptParts {
  prompt: string;
  completion: string;
}

const ALPACA_WITH_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n';
const ALPACA_NO_INPUT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Response:\n';

export const TEMPLATE_NAMES = ['alpaca', 'none'] as const;

function fill(template: string, fields: Record<string, string>): string {
  return template.replace(/\{(instruction|input|output)\}/g, (_, k: string) => fields[k] ?? '');
}

/** Checks a template (name or string) and returns a function building prompt and completion. */
export function compileTemplate(
  spec: string,
): (record: { instruction: string; input: string; output: string }) => PromptParts {
  if (spec === 'alpaca') {
    return (record) => ({
      prompt: fill(record.input.trim() ? ALPACA_WITH_INPUT : ALPACA_NO_INPUT, record),
      completion: record.output,
    });
  }
  if (spec === 'none') {
    return (record) => ({
      prompt: record.input.trim() ? `${record.instruction}\n${record.input}\n` : `${record.instruction}\n`,
      completion: record.output,
    });
  }
  const at = spec.indexOf('{output}');
  if (!spec.includes('{instruction}') || at < 0) {
    throw new UserError(
      `prompt_template '${spec}' is neither a template name (${TEMPLATE_NAMES.join(', ')}) nor a template string with {instruction} and {output}`,
    );
  }
  const head = spec.slice(0, at);
  const tail = spec.slice(at + '{output}'.length);
  return (record) => ({ prompt: fill(head, record), completion: record.output + fill(tail, record) });
}
