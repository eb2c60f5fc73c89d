// What the package's install script (scripts/build-native.mjs) builds against and when it compiles: the order
// in which libtorch is looked for (scripts/libtorch.mjs), the one line said when none can be had, and the
// per-user addon build cache (scripts/addon-cache.mjs) keyed by what the binary depends on. Nothing is
// compiled here: --dry-run says what would be done, and the cache is filled with a stand-in file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, tempDir } from '../helpers/fixtures.js';

interface Libtorch {
  source: string;
  version: string;
  libDir: string;
}
interface LibtorchModule {
  findLibtorch(env: NodeJS.ProcessEnv, opts?: { systemFallback?: boolean; projectPython?: string | null }): Libtorch;
  NoPyTorch: new (...args: unknown[]) => Error & { reasons: string[] };
}
interface CacheModule {
  addonKey(lt: Libtorch, env?: NodeJS.ProcessEnv, pkgRoot?: string): string;
  store(key: string, file: string, info: Record<string, unknown>, env?: NodeJS.ProcessEnv): void;
}

const libtorch = (await import(path.join(ROOT, 'scripts', 'libtorch.mjs'))) as LibtorchModule;
const VENV_PYTHON = path.join(ROOT, '.venv', 'bin', 'python');
const NO_PYTHON = '/nonexistent/python3';

/** A package folder as npm installs it (no checkout .venv): the build scripts and the addon's sources. */
function packageCopy(): string {
  const root = path.join(tempDir(), 'mixlora');
  fs.mkdirSync(path.join(root, 'scripts'), { recursive: true });
  for (const f of ['build-native.mjs', 'libtorch.mjs', 'addon-cache.mjs', 'setup-venv.sh'])
    fs.copyFileSync(path.join(ROOT, 'scripts', f), path.join(root, 'scripts', f));
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(root, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(root, 'node_modules')); // node-addon-api
  fs.cpSync(path.join(ROOT, 'native'), path.join(root, 'native'), {
    recursive: true,
    filter: (src) => !src.includes(`${path.sep}build`),
  });
  return root;
}

function buildNative(root: string, args: string[], env: NodeJS.ProcessEnv): { code: number; stderr: string } {
  const clean = { ...process.env };
  for (const k of ['LIBTORCH', 'LIBTORCH_USE_PYTORCH', 'MIXLORA_BACKEND', 'MIXLORA_WERROR', 'PYTHON']) delete clean[k];
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs'), ...args], {
    env: { ...clean, ...env },
    encoding: 'utf8',
  });
  return { code: r.status ?? -1, stderr: r.stderr };
}

test('libtorch order: LIBTORCH, then the PyTorch 2.x of $PYTHON, then the private venv in the user cache', () => {
  const cache = tempDir();
  const env = { MIXLORA_CACHE_DIR: cache, PATH: process.env.PATH };
  const opts = { projectPython: null, systemFallback: false };
  const fromVenv = libtorch.findLibtorch({ ...env, PYTHON: VENV_PYTHON }, opts);
  assert.equal(fromVenv.source, `python torch (${VENV_PYTHON})`);
  assert.match(fromVenv.version, /^2\./);
  assert.equal(fromVenv.libDir, fs.realpathSync(fromVenv.libDir), 'a real path (the rpath and cache key name it)');
  // LIBTORCH first, whatever else is there.
  const dir = path.dirname(fromVenv.libDir);
  assert.equal(libtorch.findLibtorch({ ...env, PYTHON: VENV_PYTHON, LIBTORCH: dir }, opts).source, `LIBTORCH=${dir}`);
  // No python with torch: the private venv when it is there...
  const privateVenv = path.join(cache, JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
  assert.throws(
    () => libtorch.findLibtorch({ ...env, PYTHON: NO_PYTHON }, opts),
    (e: Error & { reasons: string[] }) =>
      e instanceof libtorch.NoPyTorch &&
      e.reasons.some((r) => r.startsWith(`${NO_PYTHON}: not found`)) &&
      e.reasons.some((r) => r.includes(`no private venv at ${privateVenv}/venv yet`)),
  );
  fs.mkdirSync(path.join(privateVenv, 'venv', 'bin'), { recursive: true });
  // (a stand-in for the venv's python: the checkout's, through a script, as a link would lose its venv)
  fs.writeFileSync(path.join(privateVenv, 'venv', 'bin', 'python'), `#!/bin/sh\nexec ${VENV_PYTHON} "$@"\n`, {
    mode: 0o755,
  });
  const fromPrivate = libtorch.findLibtorch({ ...env, PYTHON: NO_PYTHON }, opts);
  assert.equal(fromPrivate.source, `pytorch (private venv ${privateVenv}/venv)`);
  // ...and the checkout's .venv before all of them but LIBTORCH.
  assert.equal(
    libtorch.findLibtorch({ ...env, PYTHON: NO_PYTHON }, { projectPython: VENV_PYTHON }).source,
    'pytorch (.venv)',
  );
  // Debian's libtorch only when asked (or, in auto, as the said last resort).
  assert.throws(() => libtorch.findLibtorch({ ...env, MIXLORA_BACKEND: 'other' }), /expected pytorch, system or auto/);
});

test('the addon cache: copied when the key matches, compiled when a source, the flags or -Werror differ', async () => {
  const root = packageCopy();
  const cache = tempDir();
  const env = { MIXLORA_CACHE_DIR: cache, PYTHON: VENV_PYTHON };
  const dry = () => buildNative(root, ['--dry-run'], env);
  let r = dry();
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /would build the addon in native\/build against libtorch 2\.\S+ from python torch/);

  // A build stored under this package's key (a stand-in for mixlora.node) is copied, not compiled.
  const cacheModule = (await import(path.join(root, 'scripts', 'addon-cache.mjs'))) as CacheModule;
  const lt = libtorch.findLibtorch({ ...process.env, ...env }, { projectPython: null });
  const key = cacheModule.addonKey(lt, process.env, root);
  // The key names the content, not where the package lies: the checkout computes the same one.
  const checkoutModule = (await import(path.join(ROOT, 'scripts', 'addon-cache.mjs'))) as CacheModule;
  assert.equal(key, checkoutModule.addonKey(lt));
  assert.notEqual(key, cacheModule.addonKey(lt, { ...process.env, CXX: 'clang++' }, root), 'the compiler is in it');
  const standIn = path.join(tempDir(), 'mixlora.node');
  fs.writeFileSync(standIn, 'stand-in addon');
  cacheModule.store(key, standIn, { werror: false }, { ...process.env, MIXLORA_CACHE_DIR: cache });
  r = dry();
  assert.match(r.stderr, /would copy the addon built before for libtorch .* from the build cache/);
  r = buildNative(root, [], env);
  assert.equal(r.code, 0, r.stderr);
  const built = path.join(root, 'native', 'build', 'Release', 'mixlora.node');
  assert.equal(fs.readFileSync(built, 'utf8'), 'stand-in addon');
  const stamp = JSON.parse(fs.readFileSync(path.join(root, 'native', 'build', 'libtorch.json'), 'utf8'));
  assert.equal(stamp.key, key);
  assert.equal(stamp.source, lt.source, 'what `mixlora info` names');
  assert.match(dry().stderr, /is up to date/);
  // Warnings as errors asked of a build made without: compiled again.
  assert.match(buildNative(root, ['--dry-run', '--werror'], env).stderr, /would build .*warnings as errors/);
  // MIXLORA_ADDON_CACHE=0: no cache (the built folder is still up to date).
  fs.rmSync(path.join(root, 'native', 'build'), { recursive: true });
  assert.match(buildNative(root, ['--dry-run'], { ...env, MIXLORA_ADDON_CACHE: '0' }).stderr, /would build/);
  // Another source: another key.
  fs.appendFileSync(path.join(root, 'native', 'profile.cc'), '\n// changed\n');
  assert.match(dry().stderr, /would build/);
});

test('no libtorch to be had: one line saying why, and the command that fixes it', () => {
  const root = packageCopy();
  // A python without torch, and pip unable to install it (no index): the private venv is made, stays without
  // torch, and the install fails (MIXLORA_BACKEND=pytorch: no system fallback, whatever this machine has).
  const env = {
    MIXLORA_CACHE_DIR: tempDir(),
    PYTHON: 'python3',
    MIXLORA_BACKEND: 'pytorch',
    PIP_CONFIG_FILE: '/dev/null',
    PIP_NO_INDEX: '1',
    PIP_FIND_LINKS: '',
  };
  // (only where python3 has no torch of its own: otherwise the install would compile against it)
  if (!/would install the pinned torch/.test(buildNative(root, ['--dry-run'], env).stderr)) return;
  const r = buildNative(root, [], env);
  if (/'python3 -m venv' failed/.test(r.stderr)) return; // no venv module here: another message (tested by hand)
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trim().split('\n');
  const last = lines.at(-1)!;
  assert.match(
    last,
    /^mixlora: cannot build the addon: no libtorch \(.*has no torch.*\)\. Fix: \S+ -m pip install torch==\S+/,
  );
  assert.match(last, /then npm rebuild mixlora$/);
  assert.ok(!fs.existsSync(path.join(root, 'native', 'build', 'Release', 'mixlora.node')));
});
