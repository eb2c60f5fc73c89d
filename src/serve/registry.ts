// The models a server answers to: the base model under its name, and adapters under theirs.
// - Adapters given on the command line are pinned: always loaded.
// - Adapters loaded at run time (POST /v1/adapters, vLLM's /v1/load_lora_adapter) come from inside
//   --adapter-root; a request whose model names a folder directly under the root that is not loaded
//   loads it on demand (as vLLM's LoRA resolver does).
// - At most maxLoaded of those run-time adapters are in memory: past that, the least recently used one
//   that no running request uses is evicted, and loaded again from its folder when next requested (a
//   request waits while every loaded one is in use).
// - An unloaded adapter disappears from the listing at once; its tensors are freed when its last running
//   request ends, and its name can be loaded again meanwhile.
import fs from 'node:fs';
import path from 'node:path';
import type { CausalLM } from '../models/causal-lm.js';
import type { Adapter } from '../adapters/adapter.js';
import { loadAdapter } from '../adapters/io.js';
import { readAdapterConfig } from '../adapters/files.js';
import { adapterElementCount } from '../adapters/params.js';
import { UserError } from '../util/errors.js';
import { ApiError, badRequest, notFound } from './errors.js';
import { isInside, stageConfig, stageWeights, type StagedFolder } from './adapter-folder.js';
import type { ServerMetrics } from './metrics.js';

export type AdapterSource = 'cli' | 'api' | 'on_demand';
/** Why an adapter was loaded, for the metrics: its first load, or again after an eviction. */
type LoadReason = AdapterSource | 'reload';

export interface ServedModel {
  name: string;
  /** The loaded adapter; null for the base model, and for a run-time adapter evicted for now. */
  adapter: Adapter | null;
  isBase: boolean;
  /** LORA or MIXLORA, once loaded (kept while evicted). */
  peftType: string | null;
  /** What clients see as the model's root: the folder relative to the adapter root (or its name). */
  root: string;
  /** The folder's real path, for loading it again after an eviction (never shown to clients). */
  dir: string | null;
  source: AdapterSource | null;
  created: number;
  /** Which load of this name the adapter is (prefix caches tell a reloaded adapter from the old one). */
  generation: number;
  leases: number;
  lastUsed: number;
  unloading: boolean;
  /** A load in flight (requests for it wait on it). */
  loading: Promise<void> | null;
  /** Its load holds a run-time slot (granted by makeRoom, until the adapter is loaded or the load fails). */
  reserved: boolean;
}

export interface Lease {
  model: ServedModel;
  release(): void;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** Bytes per adapter parameter a weights file may hold at most (float64), plus room for its header. */
const BYTES_PER_PARAMETER = 8;
const HEADER_ROOM = 16 << 20;

export function checkModelName(name: string, what: string): void {
  if (!NAME.test(name))
    throw new UserError(`${what}: '${name}' is not a valid name (letters, digits, '.', '_', ':', '-'; at most 128)`);
}

export interface RegistryOptions {
  /** Run-time loads are confined to this folder (a real path); null refuses them. */
  adapterRoot: string | null;
  /** Run-time adapters in memory at most (pinned ones not counted). */
  maxLoaded: number;
  metrics?: ServerMetrics;
}

export class ModelRegistry {
  private readonly models = new Map<string, ServedModel>();
  /** Names whose first load is in flight (two requests for one name share it). */
  private readonly resolving = new Map<string, Promise<ServedModel>>();
  /** Loads waiting for a run-time slot; woken when a lease ends or an adapter goes. */
  private waiters: (() => void)[] = [];
  /** Entries of first loads in flight, not in `models` until loaded. */
  private readonly pending = new Set<ServedModel>();
  private generations = 0;
  private disposed = false;
  readonly adapterRoot: string | null;

  constructor(
    readonly model: CausalLM,
    readonly baseName: string,
    private readonly opts: RegistryOptions,
  ) {
    this.adapterRoot = opts.adapterRoot;
    this.models.set(baseName, { ...this.entry(baseName, null, baseName, null, null), isBase: true });
    this.gauge();
  }

  private entry(
    name: string,
    adapter: Adapter | null,
    root: string,
    dir: string | null,
    source: AdapterSource | null,
  ): ServedModel {
    return {
      name,
      adapter,
      isBase: false,
      peftType: adapter?.config.peftType ?? null,
      root,
      dir,
      source,
      created: Math.floor(Date.now() / 1000),
      generation: adapter ? ++this.generations : 0,
      leases: 0,
      lastUsed: performance.now(),
      unloading: false,
      loading: null,
      reserved: false,
    };
  }

  list(): ServedModel[] {
    return [...this.models.values()].filter((m) => !m.unloading);
  }

  /** A model for one request, loaded (waiting for a slot, or resolved from the adapter root, if it must
   * be); its adapter stays loaded until release(). */
  async acquire(name: string): Promise<Lease> {
    let m = this.models.get(name);
    if (!m || m.unloading) m = await this.resolve(name);
    m.leases += 1;
    m.lastUsed = performance.now();
    try {
      if (!m.isBase) await this.ensureLoaded(m);
    } catch (e) {
      this.endLease(m);
      throw e;
    }
    let released = false;
    const held = m;
    return {
      model: held,
      release: () => {
        if (released) return;
        released = true;
        this.endLease(held);
      },
    };
  }

  private endLease(m: ServedModel): void {
    m.leases -= 1;
    m.lastUsed = performance.now();
    if (m.unloading && m.leases === 0) this.free(m);
    this.wakeWaiters();
  }

  /** Loads an adapter given on the command line (any path): pinned. */
  async addFromCli(name: string, dir: string): Promise<void> {
    checkModelName(name, '--adapter');
    if (this.models.has(name)) throw new UserError(`--adapter ${name}: the name is already in use`);
    const started = performance.now();
    const adapter = (await loadAdapter(dir, this.model, name)).freezeForInference(this.model);
    const real = fs.realpathSync(dir);
    const root = this.adapterRoot && isInside(this.adapterRoot, real) ? path.relative(this.adapterRoot, real) : name;
    this.models.set(name, this.entry(name, adapter, root, real, 'cli'));
    this.loaded('cli', started);
  }

  /** POST /v1/adapters (and vLLM's load_lora_adapter): loads `rel` (inside the adapter root) under `name`;
   * with `replace`, an adapter already under that name is unloaded first (vLLM's load_inplace). */
  async load(name: string, rel: string, opts: { replace?: boolean } = {}): Promise<ServedModel> {
    this.runtimeLoadsAllowed();
    if (!NAME.test(name))
      throw badRequest(`'${name}' is not a valid adapter name (letters, digits, '.', '_', ':', '-')`, 'name');
    const existing = this.models.get(name);
    if (existing?.isBase)
      throw new ApiError(409, `'${name}' is the base model's name`, 'invalid_request_error', 'name', 'name_in_use');
    if ((existing && !existing.unloading && !opts.replace) || this.resolving.has(name))
      throw new ApiError(409, `the name '${name}' is already in use`, 'invalid_request_error', 'name', 'name_in_use');
    const dir = this.confine(rel);
    const m = this.entry(name, null, path.relative(this.adapterRoot!, dir), dir, 'api');
    const loading = (async () => {
      m.leases += 1; // held while loading: not evicted before it is listed
      this.pending.add(m);
      try {
        await this.ensureLoaded(m);
      } finally {
        m.leases -= 1;
        this.pending.delete(m);
      }
      const now = this.models.get(name);
      if (now && !now.unloading && now !== m) {
        if (!opts.replace) throw new ApiError(409, `the name '${name}' is already in use`, 'invalid_request_error');
        this.unload(name);
      }
      this.models.set(name, m);
      return m;
    })();
    this.resolving.set(name, loading);
    try {
      return await loading;
    } catch (e) {
      if (m.adapter) this.free(m);
      throw e;
    } finally {
      this.resolving.delete(name);
    }
  }

  /** DELETE /v1/adapters/NAME (and vLLM's unload_lora_adapter): hidden at once, freed when its running
   * requests end. */
  unload(name: string): void {
    const m = this.models.get(name);
    if (!m || m.unloading) throw notFound(`The adapter '${name}' does not exist`, 'name', 'model_not_found');
    if (m.isBase) throw badRequest(`'${name}' is the base model; only adapters can be unloaded`, 'name', 'base_model');
    m.unloading = true;
    if (m.adapter) this.opts.metrics?.adapterEvictions.inc({ reason: 'unload' });
    if (m.leases === 0) this.free(m);
    this.wakeWaiters();
  }

  /** The entry of a model name not listed: a folder of that name directly under the adapter root, loaded
   * on demand; 404 when there is none (or runtime loads are off). */
  private async resolve(name: string): Promise<ServedModel> {
    const unknown = () => notFound(`The model '${name}' does not exist`, 'model', 'model_not_found');
    if (this.adapterRoot === null || !NAME.test(name)) throw unknown();
    const pending = this.resolving.get(name);
    if (pending) return pending;
    let dir: string;
    try {
      dir = this.confine(name);
    } catch {
      throw unknown();
    }
    if (!fs.existsSync(path.join(dir, 'adapter_config.json'))) throw unknown();
    const m = this.entry(name, null, name, dir, 'on_demand');
    const loading = (async () => {
      m.leases += 1;
      this.pending.add(m);
      try {
        await this.ensureLoaded(m);
      } finally {
        m.leases -= 1;
        this.pending.delete(m);
      }
      const now = this.models.get(name);
      if (now && !now.unloading) {
        // Loaded under this name meanwhile (POST /v1/adapters): that one answers.
        this.free(m);
        return now;
      }
      this.models.set(name, m);
      return m;
    })();
    this.resolving.set(name, loading);
    try {
      return await loading;
    } finally {
      this.resolving.delete(name);
    }
  }

  /** Loads `m`'s adapter when it is not in memory (first load or after an eviction), making room first. */
  private async ensureLoaded(m: ServedModel): Promise<void> {
    while (!m.adapter) {
      if (m.loading) {
        await m.loading;
        continue;
      }
      if (m.unloading) throw notFound(`The model '${m.name}' does not exist`, 'model', 'model_not_found');
      m.loading = (async () => {
        await this.makeRoom(m);
        const started = performance.now();
        let adapter: Adapter;
        try {
          adapter = await this.loadFolder(m);
        } finally {
          m.reserved = false;
          this.wakeWaiters();
        }
        if (this.disposed || m.unloading) {
          adapter.dispose();
          throw new ApiError(503, `the adapter '${m.name}' was unloaded while it loaded`, 'server_error');
        }
        const reason: LoadReason = m.generation > 0 ? 'reload' : m.source!;
        m.adapter = adapter;
        m.peftType = adapter.config.peftType;
        m.generation = ++this.generations;
        this.loaded(reason, started);
      })();
      try {
        await m.loading;
      } finally {
        m.loading = null;
      }
    }
  }

  /** Waits until fewer than maxLoaded run-time adapters (other than `m`) are in memory, evicting the least
   * recently used idle one when the limit is reached. */
  private async makeRoom(m: ServedModel): Promise<void> {
    for (;;) {
      const resident = [...this.models.values(), ...this.pendingEntries()].filter(
        (x) => x !== m && x.source !== 'cli' && !x.isBase && (x.adapter !== null || x.reserved),
      );
      if (resident.length < this.opts.maxLoaded) {
        m.reserved = true;
        return;
      }
      const idle = resident
        .filter((x) => x.adapter !== null && x.leases === 0 && !x.reserved)
        .sort((a, b) => a.lastUsed - b.lastUsed)[0];
      if (idle) {
        this.evict(idle);
        continue;
      }
      if (this.disposed) throw new ApiError(503, 'the server is shutting down', 'server_error');
      await new Promise<void>((wake) => this.waiters.push(wake));
    }
  }

  /** Entries being loaded for the first time (not in the map yet) hold a slot too. */
  private pendingEntries(): ServedModel[] {
    return [...this.pending];
  }

  private evict(m: ServedModel): void {
    m.adapter?.dispose();
    m.adapter = null;
    this.opts.metrics?.adapterEvictions.inc({ reason: 'lru' });
    this.gauge();
  }

  private wakeWaiters(): void {
    const waiting = this.waiters;
    this.waiters = [];
    for (const wake of waiting) wake();
  }

  /** Reads a run-time adapter's folder through a private copy (adapter-folder.ts); errors name it as the
   * client knows it. */
  private async loadFolder(m: ServedModel): Promise<Adapter> {
    const root = fs.realpathSync(this.adapterRoot!);
    let staged: StagedFolder | null = null;
    try {
      staged = await stageConfig(root, m.dir!, m.root);
      const { config } = readAdapterConfig(staged.dir);
      const limit = adapterElementCount(config, this.model.config) * BYTES_PER_PARAMETER + HEADER_ROOM;
      await stageWeights(root, m.dir!, staged, limit, m.root);
      return (await loadAdapter(staged.dir, this.model, m.name)).freezeForInference(this.model);
    } catch (e) {
      if (e instanceof UserError)
        throw badRequest(staged ? staged.describe(e.message) : e.message, 'path', 'invalid_adapter');
      throw e;
    } finally {
      staged?.remove();
    }
  }

  private runtimeLoadsAllowed(): void {
    if (this.adapterRoot === null)
      throw new ApiError(
        403,
        'loading adapters at run time is disabled (start the server with --adapter-root DIR)',
        'permission_error',
        'path',
        'adapter_root_unset',
      );
  }

  /** The real path of `rel` resolved against the adapter root. A path that leaves the root (through '..',
   * an absolute path or a symbolic link) gets the same answer as one that does not exist, so a client
   * learns nothing about the server's files outside the root. */
  private confine(rel: string): string {
    const root = fs.realpathSync(this.adapterRoot!);
    const missing = () =>
      new ApiError(
        404,
        `adapter folder '${rel}' not found under the adapter root`,
        'not_found_error',
        'path',
        'adapter_not_found',
      );
    let real: string;
    try {
      real = fs.realpathSync(path.resolve(root, rel));
    } catch {
      throw missing();
    }
    if (!isInside(root, real)) throw missing();
    if (!fs.statSync(real).isDirectory())
      throw badRequest(`'${rel}' is not an adapter folder`, 'path', 'invalid_adapter');
    return real;
  }

  private loaded(reason: LoadReason, started: number): void {
    const metrics = this.opts.metrics;
    metrics?.adapterLoads.inc({ reason });
    metrics?.adapterLoadSeconds.observe((performance.now() - started) / 1000);
    this.gauge();
  }

  private gauge(): void {
    const n = [...this.models.values()].filter((m) => m.adapter !== null).length;
    this.opts.metrics?.adaptersLoaded.set(n);
  }

  private free(m: ServedModel): void {
    if (this.models.get(m.name) === m) this.models.delete(m.name);
    m.adapter?.dispose();
    m.adapter = null;
    this.gauge();
  }

  /** Frees every adapter (server shutdown). */
  dispose(): void {
    this.disposed = true;
    for (const m of this.models.values()) m.adapter?.dispose();
    this.models.clear();
    this.wakeWaiters();
  }
}
