// Chat and compare: one base model at a time, loaded in this process, served by the serving engine of
// `mixlora serve` (continuous batching, the same texts as `mixlora generate` when greedy). The studio
// answers the OpenAI routes (/v1/completions, /v1/chat/completions, /v1/models, /metrics) for it, so the
// columns of the page are ordinary streaming requests, and any OpenAI client can use the loaded model too.
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { createServeCore, openAiRoutes, type ServeCore } from '../serve/server.js';
import type { ServeContext } from '../serve/context.js';
import { ApiError } from '../serve/errors.js';
import { DEFAULT_LIMITS } from '../serve/limits.js';
import type { LoadedModel } from '../models/load.js';

export interface ChatModelSpec {
  /** The model (a real path or a cached Hub id) and its tokenizer (a real path, or null). */
  model: string;
  tokenizer: string | null;
}

export interface ChatState {
  model: string;
  name: string;
  chatTemplate: boolean;
  context: number;
  /** Loaded adapters: served name -> folder relative to the runs folder. */
  adapters: Record<string, string>;
}

/** At most this many adapters side by side (and the base model). */
export const MAX_COLUMNS = 4;

export class ChatSession {
  private core: ServeCore | null = null;
  private loaded: LoadedModel | null = null;
  private spec: ChatModelSpec | null = null;
  private shown = '';
  /** What the routes read: swapped (field by field) when another model is loaded. */
  private readonly ctx = {} as ServeContext;
  private switching: Promise<void> = Promise.resolve();

  constructor(
    private readonly runsDir: string,
    private readonly log: (line: string) => void,
  ) {}

  /** Registers the OpenAI routes, answering 409 until a model is loaded. */
  routes(app: FastifyInstance): void {
    app.addHook('onRequest', async (req) => {
      if ((req.url.startsWith('/v1/') || req.url === '/metrics') && this.core === null)
        throw new ApiError(
          409,
          'no model is loaded: choose a base model in the Chat tab (POST /api/chat/model)',
          'invalid_request_error',
          'model',
          'no_model_loaded',
        );
    });
    openAiRoutes(app, this.ctx);
  }

  state(): ChatState | null {
    if (!this.core || !this.loaded || !this.spec) return null;
    const adapters: Record<string, string> = {};
    for (const m of this.core.ctx.registry.list()) if (!m.isBase) adapters[m.name] = m.root;
    return {
      model: this.shown,
      name: this.core.ctx.registry.baseName,
      chatTemplate: this.loaded.tokenizer.hasChatTemplate,
      context: this.loaded.model.config.maxPositionEmbeddings,
      adapters,
    };
  }

  /** Loads `spec` (unless it is the one loaded), freeing the previous model. */
  use(spec: ChatModelSpec, shown: string): Promise<ChatState> {
    const step = this.switching.then(async () => {
      if (this.spec && this.spec.model === spec.model && this.spec.tokenizer === spec.tokenizer) return;
      await this.close();
      const { loadModel } = await import('../models/load.js');
      const { resolveModel } = await import('../models/hub.js');
      this.log(`chat: loading ${shown}`);
      const where = await resolveModel(spec.model);
      const loaded = loadModel(where, { tokenizer: spec.tokenizer });
      const name = baseName(spec.model);
      try {
        this.core = await createServeCore({
          model: loaded.model,
          tokenizer: loaded.tokenizer,
          modelName: name,
          modelSource: where,
          adapters: [],
          adapterRoot: this.runsDir,
          maxLoadedAdapters: 2 * MAX_COLUMNS,
          maxBatch: 2 * (MAX_COLUMNS + 1),
          maxQueue: 64,
          idleTimeoutMs: DEFAULT_LIMITS.idleTimeoutMs,
          log: (l) => this.log(`chat: ${l}`),
        });
      } catch (e) {
        loaded.model.dispose();
        throw e;
      }
      this.loaded = loaded;
      this.spec = spec;
      this.shown = shown;
      Object.assign(this.ctx, this.core.ctx);
    });
    this.switching = step.catch(() => {});
    return step.then(() => this.state()!);
  }

  /** Loads adapters (folders relative to the runs folder) under their names `run:adapter`, unloading the
   * others. */
  async setAdapters(folders: string[]): Promise<ChatState> {
    await this.switching;
    if (!this.core) throw new ApiError(409, 'no model is loaded', 'invalid_request_error', 'model', 'no_model_loaded');
    if (folders.length > MAX_COLUMNS)
      throw new ApiError(400, `at most ${MAX_COLUMNS} adapters side by side`, 'invalid_request_error', 'adapters');
    const registry = this.core.ctx.registry;
    const wanted = new Map(folders.map((f) => [servedName(f), f]));
    for (const m of registry.list()) if (!m.isBase && wanted.get(m.name) !== m.root) registry.unload(m.name);
    const have = new Set(registry.list().map((m) => m.name));
    for (const [name, folder] of wanted) if (!have.has(name)) await registry.load(name, folder);
    return this.state()!;
  }

  async close(): Promise<void> {
    const core = this.core;
    const loaded = this.loaded;
    this.core = null;
    this.loaded = null;
    this.spec = null;
    if (core) await core.shutdown(5000);
    loaded?.model.dispose();
  }
}

/** The base model's name in the API: its file or folder name (a Hub id: its name). */
function baseName(model: string): string {
  const name = path
    .basename(model)
    .replace(/\.bin$/, '')
    .replace(/[^A-Za-z0-9._:-]/g, '-');
  return /^[A-Za-z0-9]/.test(name) ? name.slice(0, 128) : `model-${name}`.slice(0, 128);
}

/** An adapter folder's served name: `run:adapter` (`run:best:adapter` for a best copy). */
export function servedName(folder: string): string {
  return folder
    .split('/')
    .join(':')
    .replace(/[^A-Za-z0-9._:-]/g, '-')
    .slice(0, 128);
}
