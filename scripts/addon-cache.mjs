// The per-user cache of built addons: <cache>/addon/<key>/mixlora.node (cache: scripts/libtorch.mjs's
// cacheRoot, ~/.cache/mixlora by default), so that an addon compiled once (by `make setup`, or by one
// project's `npm install mixlora`) is copied, not compiled again, wherever the same addon would come out:
// another project's install, a CI step that installs the packed package, a fresh worktree.
//
// The key is a hash of everything the compiled addon depends on:
//   - its sources: native/*.h, native/binding.gyp, native/{bindings,kernels,distributed}/** and
//     native/third_party/** (contents);
//   - the compiler and linker settings gyp is given (scripts/libtorch.mjs's gypFields, without -Werror, which
//     changes no byte of a build that succeeds, and with the package's own folder written as <root>, so that a
//     checkout and an installed package agree), and node-addon-api's version;
//   - the compiler (`$CXX --version`, else `c++ --version`);
//   - Node's ABI (process.versions.modules, N-API version), platform and architecture;
//   - the libtorch it links: version, real folder, CUDA/NCCL/C++ ABI flags, and the size and modification time
//     of each library it links (a reinstalled libtorch of the same version is another key).
// Anything else that differs compiles anew. MIXLORA_ADDON_CACHE=0 neither reads nor writes the cache.
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { cacheRoot, gypFields, root } from './libtorch.mjs';

/** Cached builds kept (the least recently used beyond this are removed when a build is stored). */
const KEEP = 16;

export function cacheEnabled(env = process.env) {
  return env.MIXLORA_ADDON_CACHE !== '0';
}

export function addonCacheDir(env = process.env) {
  return path.join(cacheRoot(env), 'addon');
}

function filesUnder(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** The addon's source files (what a build compiles or includes from the package), sorted. */
export function addonSources(pkgRoot = root) {
  const native = path.join(pkgRoot, 'native');
  const own = fs
    .readdirSync(native)
    .filter((n) => /\.(cc|h)$/.test(n) || n === 'binding.gyp')
    .map((n) => path.join(native, n));
  const folders = ['bindings', 'kernels', 'distributed', 'third_party'].map((n) => path.join(native, n));
  return [...own, ...folders.flatMap((dir) => (fs.existsSync(dir) ? filesUnder(dir) : []))].sort();
}

function compilerVersion(env) {
  const cxx = (env.CXX || 'c++').trim().split(/\s+/)[0];
  try {
    return execFileSync(cxx, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0];
  } catch {
    return `${cxx}: unknown`;
  }
}

function nodeAddonApiVersion(pkgRoot) {
  try {
    const require = createRequire(path.join(pkgRoot, 'package.json'));
    return JSON.parse(fs.readFileSync(require.resolve('node-addon-api/package.json'), 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

/** What the key is a hash of (also written beside each cached build, to read). */
export function keyInputs(lt, env = process.env, pkgRoot = root) {
  const sources = crypto.createHash('sha256');
  for (const f of addonSources(pkgRoot)) {
    sources.update(path.relative(pkgRoot, f).split(path.sep).join('/') + '\0');
    sources.update(fs.readFileSync(f));
    sources.update('\0');
  }
  // The package's own folders (the vendored Gloo headers) named relative to it: the key names the content,
  // not where the package lies. Only those: a libtorch inside the checkout (.venv) keeps its real path.
  const own = path.join(pkgRoot, 'native');
  const fields = JSON.parse(JSON.stringify(gypFields(lt, false)).replaceAll(own, '<root>/native'));
  const libs = Object.fromEntries(
    lt.libs.map((l) => {
      const f = path.join(lt.libDir, `lib${l}.so`);
      const st = fs.statSync(f, { throwIfNoEntry: false });
      return [l, st ? `${st.size}:${Math.floor(st.mtimeMs)}` : 'missing'];
    }),
  );
  return {
    format: 1,
    sources: sources.digest('hex'),
    fields,
    nodeAddonApi: nodeAddonApiVersion(pkgRoot),
    compiler: compilerVersion(env),
    node: {
      modules: process.versions.modules,
      napi: process.versions.napi,
      platform: process.platform,
      arch: process.arch,
    },
    libtorch: {
      version: lt.version,
      libDir: lt.libDir,
      cuda: lt.cuda,
      nccl: lt.nccl,
      cxx11abi: lt.cxx11abi,
      libs,
    },
  };
}

/** The cache key of the addon built against `lt` here (hex, 32 characters). */
export function addonKey(lt, env = process.env, pkgRoot = root) {
  return crypto
    .createHash('sha256')
    .update(JSON.stringify(keyInputs(lt, env, pkgRoot)))
    .digest('hex')
    .slice(0, 32);
}

/** The cached build of `key`: its file and whether it was compiled with warnings as errors; null if none. */
export function lookup(key, env = process.env) {
  if (!cacheEnabled(env)) return null;
  const dir = path.join(addonCacheDir(env), key);
  const file = path.join(dir, 'mixlora.node');
  const meta = path.join(dir, 'build.json');
  if (!fs.existsSync(file) || !fs.existsSync(meta)) return null;
  try {
    const info = JSON.parse(fs.readFileSync(meta, 'utf8'));
    const now = new Date();
    fs.utimesSync(meta, now, now); // recently used: kept longest
    return { file, werror: info.werror === true };
  } catch {
    return null;
  }
}

/** Copies a finished build into the cache (a folder renamed into place: readers never see half of one).
 * Failing to write the cache (read-only home...) only says so. */
export function store(key, addonFile, info, env = process.env) {
  if (!cacheEnabled(env)) return;
  const base = addonCacheDir(env);
  const dir = path.join(base, key);
  const have = lookup(key, env);
  if (have && (have.werror || !info.werror)) return;
  const tmp = path.join(base, `.tmp-${key}-${process.pid}`);
  try {
    fs.mkdirSync(tmp, { recursive: true });
    fs.copyFileSync(addonFile, path.join(tmp, 'mixlora.node'));
    fs.writeFileSync(
      path.join(tmp, 'build.json'),
      JSON.stringify({ ...info, stored: new Date().toISOString() }, null, 2),
    );
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    prune(base);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    process.stderr.write(`mixlora: could not store the addon in the build cache ${base} (${e.message})\n`);
  }
}

/** Copies the cached build to `dest` (through a temporary name: a process loading `dest` never sees half). */
export function copyOut(file, dest) {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.copyFileSync(file, tmp);
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, dest);
}

function prune(base) {
  const entries = fs
    .readdirSync(base)
    .filter((n) => /^[0-9a-f]{32}$/.test(n))
    .map((n) => {
      const st = fs.statSync(path.join(base, n, 'build.json'), { throwIfNoEntry: false });
      return { n, t: st ? st.mtimeMs : 0 };
    })
    .sort((a, b) => b.t - a.t);
  for (const { n } of entries.slice(KEEP)) fs.rmSync(path.join(base, n), { recursive: true, force: true });
}
