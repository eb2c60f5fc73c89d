// The models a server answers to: the base model under its name, and adapters under theirs. Adapters
// can be loaded at run time from inside --adapter-root and unloaded; an unloaded adapter disappears
// from the listing at once and its tensors are freed when its last running request ends.
import fs from 'node:fs';
import path from 'node:path';
import type { CausalLM } from '../models/llama.js';
import type { Adapter } from '../adapters/adapter.js';
import { loadAdapter } from '../adapters/io.js';
import { UserError } from '../util/errors.js';
import { ApiError, badRequest, notFound } from './errors.js';

export interface ServedModel {
  name: string;
  adapter: Adapter | null;
  /** Where it was loaded from (an adapter folder, or the model). */
  source: string;
  created: number;
  leases: number;
  unloading: boolean;
}

export interface Lease {
  model: ServedModel;
  release(): void;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function checkModelName(name: string, what: string): void {
  if (!NAME.test(name))
    throw new UserError(`${what}: '${name}' is not a valid name (letters, digits, '.', '_', ':', '-'; at most 128)`);
}

export class ModelRegistry {
  private readonly models = new Map<string, ServedModel>();
  /** Folder names currently being loaded (so two loads of one name cannot race). */
  private readonly loading = new Set<string>();

  constructor(
    readonly model: CausalLM,
    readonly baseName: string,
    modelSource: string,
    /** Run-time loads are confined to this folder; null refuses them. */
    readonly adapterRoot: string | null,
  ) {
    this.models.set(baseName, this.entry(baseName, null, modelSource));
  }

  private entry(name: string, adapter: Adapter | null, source: string): ServedModel {
    return { name, adapter, source, created: Math.floor(Date.now() / 1000), leases: 0, unloading: false };
  }

  list(): ServedModel[] {
    return [...this.models.values()].filter((m) => !m.unloading);
  }

  /** A model for one request; its adapter stays loaded until release(). */
  acquire(name: string): Lease {
    const m = this.models.get(name);
    if (!m || m.unloading) throw notFound(`The model '${name}' does not exist`, 'model', 'model_not_found');
    m.leases += 1;
    let released = false;
    return {
      model: m,
      release: () => {
        if (released) return;
        released = true;
        m.leases -= 1;
        if (m.unloading && m.leases === 0) this.free(m);
      },
    };
  }

  /** Loads an adapter given on the command line (any path). */
  async addFromCli(name: string, dir: string): Promise<void> {
    checkModelName(name, '--adapter');
    if (this.models.has(name)) throw new UserError(`--adapter ${name}: the name is already in use`);
    const adapter = (await loadAdapter(dir, this.model, name)).freezeForInference(this.model);
    this.models.set(name, this.entry(name, adapter, path.resolve(dir)));
  }

  /** POST /v1/adapters: loads `rel` (inside the adapter root) under `name`. */
  async load(name: string, rel: string): Promise<ServedModel> {
    if (this.adapterRoot === null)
      throw new ApiError(
        403,
        'loading adapters at run time is disabled (start the server with --adapter-root DIR)',
        'permission_error',
        'path',
        'adapter_root_unset',
      );
    if (!NAME.test(name))
      throw badRequest(`'${name}' is not a valid adapter name (letters, digits, '.', '_', ':', '-')`, 'name');
    if (this.models.has(name) || this.loading.has(name))
      throw new ApiError(409, `the name '${name}' is already in use`, 'invalid_request_error', 'name', 'name_in_use');
    const dir = this.confine(rel);
    this.loading.add(name);
    try {
      const adapter = (await loadAdapter(dir, this.model, name)).freezeForInference(this.model);
      const m = this.entry(name, adapter, dir);
      this.models.set(name, m);
      return m;
    } catch (e) {
      if (e instanceof UserError) throw badRequest(e.message, 'path', 'invalid_adapter');
      throw e;
    } finally {
      this.loading.delete(name);
    }
  }

  /** DELETE /v1/adapters/NAME: hidden at once, freed when its running requests end. */
  unload(name: string): void {
    const m = this.models.get(name);
    if (!m || m.unloading) throw notFound(`The adapter '${name}' does not exist`, 'name', 'model_not_found');
    if (m.adapter === null)
      throw badRequest(`'${name}' is the base model; only adapters can be unloaded`, 'name', 'base_model');
    m.unloading = true;
    if (m.leases === 0) this.free(m);
  }

  /** The real path of `rel` resolved against the adapter root, refused if it leaves the root
   * (through '..', an absolute path or a symbolic link). */
  private confine(rel: string): string {
    const root = fs.realpathSync(this.adapterRoot!);
    let real: string;
    try {
      real = fs.realpathSync(path.resolve(root, rel));
    } catch {
      throw new ApiError(
        404,
        `adapter folder '${rel}' not found under the adapter root`,
        'not_found_error',
        'path',
        'adapter_not_found',
      );
    }
    const inside = path.relative(root, real);
    if (inside === '' || inside.startsWith('..') || path.isAbsolute(inside))
      throw new ApiError(
        403,
        `'${rel}' is outside the adapter root; only folders inside it can be loaded`,
        'permission_error',
        'path',
        'outside_adapter_root',
      );
    if (!fs.statSync(real).isDirectory())
      throw badRequest(`'${rel}' is not an adapter folder`, 'path', 'invalid_adapter');
    return real;
  }

  private free(m: ServedModel): void {
    if (this.models.get(m.name) === m) this.models.delete(m.name);
    m.adapter?.dispose();
  }

  /** Frees every adapter (server shutdown). */
  dispose(): void {
    for (const m of this.models.values()) m.adapter?.dispose();
    this.models.clear();
  }
}
