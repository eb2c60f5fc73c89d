// What /api/* answers (src/studio/server.ts), as the page reads it.

export interface AdapterInfo {
  name: string;
  path: string;
  kind: string;
  best: boolean;
}

export interface Run {
  id: string;
  state: 'running' | 'finished' | 'failed' | 'resumable' | 'stopped';
  baseModel: string | null;
  tokenizer: string | null;
  names: string[];
  adapters: AdapterInfo[];
  steps: Record<string, number>;
  checkpoints: string[];
  hasEval: boolean;
  updated: number;
  error: string | null;
  job: number | null;
}

export interface EvalReport {
  results: { adapter: string; task: string; items: number; accuracy: number; accuracy_norm?: number }[];
  expert_load_by_adapter?: Record<string, Record<string, Record<string, number[]>>>;
  expert_load_std?: Record<string, Record<string, number>>;
}

export interface RunDetail extends Run {
  yaml: string | null;
  config: Record<string, unknown> | null;
  eval: EvalReport | null;
}

export interface Preset {
  name: string;
  description: string;
  config: Record<string, unknown>;
}

export interface Info {
  version: string;
  roots: { name: string; writable: boolean }[];
  models: string[];
  tokenizers: string[];
  data: string[];
  tasks: string[];
  presets: Preset[];
  maxColumns: number;
}

export interface JobInfo {
  id: number;
  kind: 'train' | 'eval' | 'export';
  subject: string;
  status: 'running' | 'completed' | 'aborted' | 'failed';
  error: string | null;
  log: string[];
  next: number;
  result: unknown;
}

export interface ChatState {
  model: string;
  name: string;
  chatTemplate: boolean;
  context: number;
  adapters: Record<string, string>;
}
