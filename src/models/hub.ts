// Model ids as people type them (`org/name`, optionally `@revision`), resolved the way huggingface_hub
// does (https://huggingface.co/docs/huggingface_hub/guides/manage-cache): the cache folder is
// HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub; a model lives in
// models--org--name/, refs/<revision> holds the commit of a branch or tag, and snapshots/<commit>/
// holds its files. When the files are not there and HF_HUB_OFFLINE is not set, they are downloaded
// into that cache with @huggingface/hub (HF_TOKEN for gated models, HF_ENDPOINT for a mirror).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../util/errors.js';

export interface ModelId {
  repo: string;
  revision: string;
}

const ID = /^([A-Za-z0-9][A-Za-z0-9_.-]*\/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@([A-Za-z0-9][A-Za-z0-9_./-]*))?$/;
const COMMIT = /^[0-9a-f]{40}$/;

/** Whether `s` reads as a Hub model id (org/name[@revision]) rather than a path. */
export function isModelId(s: string): boolean {
  return ID.test(s) && !s.includes('..') && !s.startsWith('./');
}

export function parseModelId(s: string): ModelId {
  const m = ID.exec(s);
  if (!m || !isModelId(s)) throw new UserError(`'${s}' is not a model id (org/name or org/name@revision)`);
  return { repo: m[1]!, revision: m[2] ?? 'main' };
}

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return path.join(env.HF_HOME, 'hub');
  return path.join(os.homedir(), '.cache', 'huggingface', 'hub');
}

export function repoFolder(cache: string, repo: string): string {
  return path.join(cache, `models--${repo.split('/').join('--')}`);
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());
}

/** The snapshot folder of a cached model, or null when it (or its config.json) is not cached. */
export function findCached(id: ModelId, cache = hubCacheDir()): string | null {
  const folder = repoFolder(cache, id.repo);
  let commit = id.revision;
  if (!COMMIT.test(commit)) {
    const ref = path.join(folder, 'refs', id.revision);
    if (!fs.existsSync(ref) || !fs.statSync(ref).isFile()) return null;
    commit = fs.readFileSync(ref, 'utf8').trim();
    if (!COMMIT.test(commit)) throw new UserError(`${ref}: not a commit hash`);
  }
  const snapshot = path.join(folder, 'snapshots', commit);
  return fs.existsSync(path.join(snapshot, 'config.json')) ? snapshot : null;
}

/** Files of a model repository mixlora reads: config, safetensors weights, tokenizer. Other files
 * (PyTorch .bin duplicates, GGUF, original/ checkpoints) are not downloaded. */
export function neededFile(name: string): boolean {
  if (name.includes('/')) return false;
  return (
    name === 'config.json' ||
    name === 'generation_config.json' ||
    name.endsWith('.safetensors') ||
    name === 'model.safetensors.index.json' ||
    name === 'tokenizer.json' ||
    name === 'tokenizer.model' ||
    name === 'tokenizer_config.json' ||
    name === 'special_tokens_map.json'
  );
}

export interface DownloadProgress {
  /** Total bytes to download, once known. */
  start(totalBytes: number, files: number): void;
  /** Bytes downloaded so far. */
  update(bytes: number): void;
  stop(): void;
}

/** A local path for `spec`: the path itself when it exists, a cached snapshot for a model id, or a
 * fresh download of it; one clear error otherwise. */
export async function resolveModel(
  spec: string,
  opts: { env?: NodeJS.ProcessEnv; progress?: DownloadProgress } = {},
): Promise<string> {
  if (fs.existsSync(spec) || !isModelId(spec)) return spec;
  const env = opts.env ?? process.env;
  const id = parseModelId(spec);
  const cache = hubCacheDir(env);
  const cached = findCached(id, cache);
  if (cached) return cached;
  const where = `${repoFolder(cache, id.repo)}`;
  if (truthy(env.HF_HUB_OFFLINE))
    throw new UserError(
      `${spec}: not a local path, and not in the Hugging Face cache (looked in ${where}); HF_HUB_OFFLINE is set, so it was not downloaded`,
    );
  try {
    return await download(id, cache, env, opts.progress);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(
      `${spec}: not a local path, not in the Hugging Face cache (looked in ${where}), and the download failed: ${(e as Error).message}`,
    );
  }
}

async function download(
  id: ModelId,
  cache: string,
  env: NodeJS.ProcessEnv,
  progress: DownloadProgress | undefined,
): Promise<string> {
  const hub = await import('@huggingface/hub');
  const common = {
    hubUrl: env.HF_ENDPOINT || undefined,
    accessToken: env.HF_TOKEN || undefined,
  };
  let done = 0;
  // Counts the bytes of file downloads as they stream in, for the progress bar.
  const counting: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const probe = new Headers(init?.headers).has('Range'); // the library's 1-byte size probe
    if (!progress || !res.body || probe || !url.includes('/resolve/') || (init?.method ?? 'GET') !== 'GET') return res;
    const counter = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        done += chunk.byteLength;
        progress.update(done);
        ctl.enqueue(chunk);
      },
    });
    return new Response(res.body.pipeThrough(counter), {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  };
  const info = await hub.modelInfo({ ...common, name: id.repo, additionalFields: ['sha'], revision: id.revision });
  const commit = (info as { sha?: string }).sha;
  if (!commit || !COMMIT.test(commit)) throw new Error(`the Hub gave no commit for revision '${id.revision}'`);
  const files: { path: string; size: number }[] = [];
  for await (const e of hub.listFiles({ ...common, repo: { type: 'model', name: id.repo }, revision: commit })) {
    if (e.type === 'file' && neededFile(e.path)) files.push({ path: e.path, size: e.lfs?.size ?? e.size });
  }
  if (!files.some((f) => f.path === 'config.json'))
    throw new UserError(`${id.repo}: the repository has no config.json`);
  if (!files.some((f) => f.path.endsWith('.safetensors')))
    throw new UserError(`${id.repo}: the repository has no .safetensors weights (mixlora reads safetensors only)`);
  progress?.start(
    files.reduce((n, f) => n + f.size, 0),
    files.length,
  );
  // The library announces each file with console.debug, i.e. on stdout, which is the commands' output.
  const debug = console.debug;
  console.debug = () => {};
  try {
    for (const f of files) {
      await hub.downloadFileToCacheDir({
        ...common,
        repo: { type: 'model', name: id.repo },
        path: f.path,
        revision: commit,
        cacheDir: cache,
        fetch: counting,
      });
    }
  } finally {
    console.debug = debug;
    progress?.stop();
  }
  if (id.revision !== commit) {
    const ref = path.join(repoFolder(cache, id.repo), 'refs', id.revision);
    fs.mkdirSync(path.dirname(ref), { recursive: true });
    fs.writeFileSync(ref, commit);
  }
  return path.join(repoFolder(cache, id.repo), 'snapshots', commit);
}
