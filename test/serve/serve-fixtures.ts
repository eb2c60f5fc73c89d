// What the server tests share: small random adapters for stories260K, a tokenizer folder with a chat
// template, an in-process server on 127.0.0.1 (ephemeral port), and the reference outputs of
// `generate` for the same prompt and adapter.
import fs from 'node:fs';
import path from 'node:path';
import { loadModel, type LoadedModel } from '../../src/models/load.js';
import { loadAdapter, saveAdapter } from '../../src/adapters/io.js';
import { generate } from '../../src/generate/generate.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { createServer, type Server, type ServerOptions } from '../../src/serve/server.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { randomAdapter, TEST_ADAPTER_CONFIGS } from '../helpers/test-adapters.js';

export const MODEL_NAME = 'stories260K';
export const ADAPTER_CONFIGS: Record<string, Record<string, unknown>> = TEST_ADAPTER_CONFIGS;

/** Writes the random adapters (lora_B non-zero, so each changes the output) under `root`; another
 * first seed gives other weights. */
export function writeAdapters(root: string, model: LoadedModel['model'], firstSeed = 7): Record<string, string> {
  const dirs: Record<string, string> = {};
  let seed = firstSeed;
  for (const [name, cfg] of Object.entries(ADAPTER_CONFIGS)) {
    const a = randomAdapter(name, cfg, model, { seed: seed++, std: 0.3 });
    dirs[name] = path.join(root, name);
    saveAdapter(dirs[name]!, a, { baseModel: STORIES_BIN });
    a.dispose();
  }
  return dirs;
}

/** A tokenizer folder (tokenizer.json + tokenizer_config.json) equal to tok512.bin plus a chat template. */
export function chatTokenizerDir(): string {
  const base = TextTokenizer.fromLlama2c(STORIES_TOK, 512);
  const dir = tempDir('mixlora-chat-tok-');
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(base.tokenizerJson));
  const template =
    "{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";
  fs.writeFileSync(
    path.join(dir, 'tokenizer_config.json'),
    JSON.stringify({ ...base.config, chat_template: template }),
  );
  return dir;
}

export interface Running {
  url: string;
  server: Server;
  loaded: LoadedModel;
  close(): Promise<void>;
}

/** Loads stories260K (or the model folder `modelPath`, with its own tokenizer) and serves it on 127.0.0.1
 * at an ephemeral port. */
export async function startServer(
  o: Partial<ServerOptions> & { tokenizerPath?: string; modelPath?: string } = {},
): Promise<Running> {
  const loaded = o.modelPath
    ? loadModel(o.modelPath, o.tokenizerPath ? { tokenizer: o.tokenizerPath } : {})
    : loadModel(STORIES_BIN, { tokenizer: o.tokenizerPath ?? STORIES_TOK });
  const server = await createServer({
    model: loaded.model,
    tokenizer: loaded.tokenizer,
    modelName: MODEL_NAME,
    modelSource: STORIES_BIN,
    adapters: [],
    adapterRoot: null,
    maxBatch: 16,
    maxQueue: 256,
    apiKey: null,
    bodyLimit: 1 << 20,
    ...o,
  });
  const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
  return {
    url,
    server,
    loaded,
    close: async () => {
      await server.shutdown(10_000);
      loaded.model.dispose();
    },
  };
}

/** `generate` on one prompt alone (batch 1), greedy: the completion text as the CLI prints it. */
export async function referenceCompletion(
  loaded: LoadedModel,
  adapterDir: string | null,
  prompt: string,
  maxTokens: number,
): Promise<string> {
  const adapter = adapterDir ? await loadAdapter(adapterDir, loaded.model) : null;
  try {
    const ids = loaded.tokenizer.encode(prompt);
    const eos = loaded.model.config.eosTokenIds;
    const [out] = generate(loaded.model, [ids], {
      maxNewTokens: maxTokens,
      temperature: 0,
      topK: null,
      topP: null,
      repetitionPenalty: null,
      stopIds: eos,
      adapter,
    });
    return loaded.tokenizer.decodeContinuation(
      ids,
      out!.filter((id) => !eos.includes(id)),
    );
  } finally {
    adapter?.dispose();
  }
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: r.status, headers: r.headers, json: json as Record<string, any>, text };
}

/** Parses an SSE body into its data records (JSON objects), checking it ends with [DONE]. */
export function sseRecords(text: string): Record<string, any>[] {
  const lines = text.split('\n\n').filter((l) => l.trim() !== '');
  if (lines[lines.length - 1] !== 'data: [DONE]')
    throw new Error(`stream does not end with [DONE]: ${text.slice(-200)}`);
  return lines.slice(0, -1).map((l) => {
    if (!l.startsWith('data: ')) throw new Error(`not an SSE data record: ${l}`);
    return JSON.parse(l.slice(6)) as Record<string, any>;
  });
}
