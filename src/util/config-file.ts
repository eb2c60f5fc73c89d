// Reading a JSON or YAML config with line numbers for the errors that name its fields.
import YAML from 'yaml';
import { UserError } from './errors.js';
import { readText } from './files.js';

export interface ConfigFile {
  file: string;
  value: unknown;
  /** "file:line: path" for a field at `path` (line omitted when unknown). */
  locate(path: (string | number)[]): string;
}

export function pathText(path: (string | number)[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

export function readConfigFile(file: string): ConfigFile {
  const text = readText(file);
  const lines = new YAML.LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const at = e.linePos?.[0];
    throw new UserError(
      `${file}${at ? `:${at.line}` : ''}: not valid YAML/JSON (${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')})`,
    );
  }
  let value: unknown;
  try {
    // toJS refuses alias bombs ("billion laughs") past its maxAliasCount, among others.
    value = doc.toJS();
  } catch (e) {
    throw new UserError(`${file}: not usable YAML/JSON (${(e as Error).message.split('\n')[0]})`);
  }
  return {
    file,
    value,
    locate(path) {
      const node = doc.getIn(path, true) as { range?: [number, number, number] } | undefined;
      const parent =
        path.length > 1
          ? (doc.getIn(path.slice(0, -1), true) as { range?: [number, number, number] } | undefined)
          : undefined;
      const range = node?.range ?? parent?.range;
      const line = range ? `:${lines.linePos(range[0]).line}` : '';
      const where = pathText(path.slice(0, -1));
      return `${file}${line}${where ? `: ${where}` : ''}`;
    },
  };
}
