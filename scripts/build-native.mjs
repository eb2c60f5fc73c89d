#!/usr/bin/env node
// Builds the libtorch addon with node-gyp; the package's install script (`npm install mixlora`) and `make
// setup` both run it.
//   node scripts/build-native.mjs                      native/build/Release/mixlora.node, libtorch as found
//                                                      by scripts/libtorch.mjs (LIBTORCH, the checkout's .venv,
//                                                      $PYTHON/python3's PyTorch 2.x, else the private venv in
//                                                      the user cache, made here with the pinned torch)
//   node scripts/build-native.mjs --out DIR [--werror] another build folder (e.g. the system-libtorch build
//                                                      that `make test-system-libtorch` loads through
//                                                      MIXLORA_ADDON, or the warnings-as-errors build of lint)
//   node scripts/build-native.mjs --dry-run            says which libtorch and what it would do (up to date,
//                                                      copy from the build cache, compile); changes nothing
// Up to date when the build folder's stamp has the addon's cache key (scripts/addon-cache.mjs: sources, flags,
// compiler, Node ABI, libtorch); else a build with that key in the per-user cache is copied in; else node-gyp
// compiles (reconfiguring only when binding.gyp, the flags or the libtorch changed) and the result is stored
// in the cache.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { findLibtorch, NoPyTorch, root, systemLibtorchPresent } from './libtorch.mjs';
import { addonKey, copyOut, keyInputs, lookup, store } from './addon-cache.mjs';

const { values: args } = parseArgs({
  options: { out: { type: 'string' }, werror: { type: 'boolean' }, 'dry-run': { type: 'boolean' } },
});
// MIXLORA_WERROR=1 asks for warnings as errors too (CI builds the default addon that way once, so that
// `make lint` finds it already built).
const opts = { ...args, werror: Boolean(args.werror) || process.env.MIXLORA_WERROR === '1' };
const dryRun = Boolean(args['dry-run']);
const say = (line) => process.stderr.write(`mixlora: ${line}\n`);
const nativeDir = path.join(root, 'native');

/** native/'s folders of sources (binding.gyp names their files). */
const SOURCE_FOLDERS = ['bindings', 'kernels', 'distributed'];

// The folder node-gyp runs in: native/ itself, or a folder of links to native/'s sources (its headers and
// source folders) whose binding.gyp names scripts/libtorch.mjs by its absolute path.
function prepareFolder(out) {
  if (!out) return nativeDir;
  const dir = path.resolve(root, out);
  fs.mkdirSync(dir, { recursive: true });
  // Links to sources that moved or went (a folder made by an older checkout) would be compiled by nothing
  // and confuse whoever reads the folder.
  for (const name of fs.readdirSync(dir)) {
    const link = path.join(dir, name);
    if (fs.lstatSync(link).isSymbolicLink() && !fs.existsSync(link)) fs.rmSync(link);
  }
  for (const name of fs.readdirSync(nativeDir)) {
    if (!/\.(cc|h)$/.test(name) && !SOURCE_FOLDERS.includes(name)) continue;
    const link = path.join(dir, name);
    const target = path.join(nativeDir, name);
    // (a link into another checkout, e.g. a build folder copied from another worktree, is replaced)
    if (fs.lstatSync(link, { throwIfNoEntry: false }) && fs.readlinkSync(link) !== target) fs.rmSync(link);
    if (!fs.existsSync(link)) fs.symlinkSync(target, link);
  }
  const gyp = fs
    .readFileSync(path.join(nativeDir, 'binding.gyp'), 'utf8')
    .replaceAll('../scripts/libtorch.mjs', path.join(root, 'scripts', 'libtorch.mjs'));
  const gypFile = path.join(dir, 'binding.gyp');
  if (!fs.existsSync(gypFile) || fs.readFileSync(gypFile, 'utf8') !== gyp) fs.writeFileSync(gypFile, gyp);
  return dir;
}

const setupVenv = path.join(root, 'scripts', 'setup-venv.sh');

/** The pinned torch and its pip arguments for this machine (setup-venv.sh holds the pins). */
function torchPipArgs() {
  const r = spawnSync('bash', [setupVenv, '--print-torch'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'torch';
}

/** Makes the private venv (waiting for another install making it at the same time); false if it could not. */
function makePrivateVenv(venv) {
  const lock = `${venv}.lock`;
  fs.mkdirSync(path.dirname(venv), { recursive: true });
  const started = Date.now();
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
      // A lock older than 30 minutes was left by an install that was killed.
      const age = Date.now() - (fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? 0);
      if (age > 30 * 60_000) fs.rmSync(lock, { recursive: true, force: true });
      else if (Date.now() - started > 30 * 60_000) return false;
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2000);
    }
  }
  try {
    say(
      `no PyTorch 2.x found: installing ${torchPipArgs().split(' ')[0]} into ${venv} (once per user and mixlora version)`,
    );
    const r = spawnSync('bash', [setupVenv, '--torch-only', venv], {
      stdio: ['ignore', 2, 2],
      env: { ...process.env, MIXLORA_VENV_PYTHON: process.env.PYTHON || 'python3' },
    });
    return r.status === 0;
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

/** The one line said when no libtorch can be had, with the command that fixes it. */
function noLibtorchLine(e) {
  const python = process.env.PYTHON || 'python3';
  const venvBroken = /venv' failed|No module named venv|ensurepip/.test(e.setupOutput ?? '');
  const fix = venvBroken
    ? `apt-get install python3-venv (or give LIBTORCH=/path/to/libtorch), then npm rebuild mixlora`
    : `${python} -m pip install ${torchPipArgs()} (or give LIBTORCH=/path/to/libtorch, or MIXLORA_BACKEND=system with Debian's libtorch-dev), then npm rebuild mixlora`;
  return `cannot build the addon: no libtorch (${e.reasons.join('; ')}). Fix: ${fix}`;
}

/** The libtorch to build against; makes the private venv when auto finds no PyTorch 2.x (not in a dry run). */
function resolveLibtorch() {
  try {
    return findLibtorch(process.env, { systemFallback: false });
  } catch (e) {
    if (!(e instanceof NoPyTorch)) throw e;
    if (dryRun) {
      say(`would install the pinned torch into ${e.venv} (${e.reasons.join('; ')})`);
      process.exit(0);
    }
    if (makePrivateVenv(e.venv)) {
      try {
        return findLibtorch(process.env, { systemFallback: false });
      } catch (again) {
        if (!(again instanceof NoPyTorch)) throw again;
        e = again;
      }
    } else e.reasons.push(`pip could not install torch into ${e.venv} (see above)`);
    // Debian's libtorch 1.13, the slow fallback: only when nothing else can be had (and said so).
    if ((process.env.MIXLORA_BACKEND || 'auto') === 'auto' && systemLibtorchPresent()) {
      say(`${e.reasons.join('; ')}: falling back to the system libtorch (slow; see docs/building.md, Backends)`);
      return findLibtorch({ ...process.env, MIXLORA_BACKEND: 'system' });
    }
    say(noLibtorchLine(e));
    process.exit(1);
  }
}

let lt;
try {
  lt = resolveLibtorch();
} catch (e) {
  process.stderr.write(`mixlora: cannot build the native addon.\n${e.message}\n`);
  process.exit(1);
}
const gypDir = dryRun ? (opts.out ? path.resolve(root, opts.out) : nativeDir) : prepareFolder(opts.out);
const buildDir = path.join(gypDir, 'build');
const stampFile = path.join(buildDir, 'libtorch.json');
const addonFile = path.join(buildDir, 'Release', 'mixlora.node');
const describeLt = () =>
  `libtorch ${lt.version} from ${lt.source}` +
  ` (${lt.cuda ? `CUDA build ${lt.nccl ? 'with NCCL' : "without NCCL (CUDA's or NCCL's headers not found, or MIXLORA_NCCL=0)"}` : 'CPU build'}` +
  `${opts.werror ? ', warnings as errors' : ''})`;

const key = addonKey(lt);
const readStamp = () => {
  try {
    return JSON.parse(fs.readFileSync(stampFile, 'utf8'));
  } catch {
    return null;
  }
};
// What gyp is told (flags, libraries) for this libtorch, without -Werror: a build folder configured for
// another libtorch or other flags is removed before it is built again or a cached build is copied in.
const configOf = (x) =>
  JSON.stringify({ ...x, source: undefined, key: undefined, werror: undefined, fields: undefined });
const stamp = readStamp();
const sameConfig = stamp !== null && configOf(stamp) === configOf(lt);
// A build with warnings as errors is the same addon: it also serves a request without them.
const stampFor = (werror) => JSON.stringify({ ...lt, key, werror }, null, 0);
const rel = path.relative(process.cwd(), addonFile) || addonFile;

if (stamp?.key === key && fs.existsSync(addonFile) && (stamp.werror || !opts.werror)) {
  if (dryRun) say(`${rel} is up to date (${describeLt()})`);
  else {
    // (the same libtorch found another way, e.g. through $PYTHON: what `mixlora info` names)
    if (stamp.source !== lt.source) fs.writeFileSync(stampFile, stampFor(stamp.werror));
    store(key, addonFile, { ...keyInputs(lt), werror: stamp.werror });
  }
  process.exit(0);
}
const cached = lookup(key);
if (cached && (cached.werror || !opts.werror)) {
  say(
    `${dryRun ? 'would copy' : 'copying'} the addon built before for ${describeLt()} from the build cache (${cached.file})`,
  );
  if (dryRun) process.exit(0);
  if (!sameConfig) fs.rmSync(buildDir, { recursive: true, force: true });
  copyOut(cached.file, addonFile);
  fs.writeFileSync(stampFile, stampFor(cached.werror));
  process.exit(0);
}
say(
  `${dryRun ? 'would build' : 'building'} the addon in ${path.relative(root, buildDir) || buildDir} against ${describeLt()}`,
);
if (dryRun) process.exit(0);

const require = createRequire(import.meta.url);
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
const env = { ...process.env, MIXLORA_LIBTORCH_JSON: JSON.stringify(lt), MIXLORA_WERROR: opts.werror ? '1' : '0' };
const run = (args) => {
  const r = spawnSync(process.execPath, [nodeGyp, ...args], { cwd: gypDir, stdio: 'inherit', env });
  if (r.status !== 0) {
    process.stderr.write(`mixlora: node-gyp ${args[0]} failed (exit ${r.status}).\n`);
    process.exit(1);
  }
};

// Build against the headers of the running Node when they are installed beside it (Debian's nodejs,
// official tarballs), so node-gyp never needs to download them (npm passes npm_config_nodedir itself).
const nodePrefix = path.resolve(path.dirname(process.execPath), '..');
const nodedirArgs =
  !process.env.npm_config_nodedir && fs.existsSync(path.join(nodePrefix, 'include', 'node', 'common.gypi'))
    ? [`--nodedir=${nodePrefix}`]
    : [];

// Reconfigure (from an empty folder) when the libtorch or the flags changed, or a -Werror build is asked of a
// folder configured without; reconfigure in place when binding.gyp changed.
const configChanged = !sameConfig || (opts.werror && !stamp.werror);
const gypChanged =
  !fs.existsSync(path.join(buildDir, 'Makefile')) ||
  fs.statSync(path.join(gypDir, 'binding.gyp')).mtimeMs > fs.statSync(path.join(buildDir, 'Makefile')).mtimeMs;
let werror = stamp?.werror === true;
if (configChanged || gypChanged) {
  if (configChanged && fs.existsSync(buildDir)) fs.rmSync(buildDir, { recursive: true, force: true });
  fs.rmSync(stampFile, { force: true });
  run(['configure', ...nodedirArgs]);
  werror = opts.werror;
}
run(['build', `-j`, String(Math.max(1, os.availableParallelism()))]);
// The precompiled header (binding.gyp) is ~400 MB. A checkout keeps it for the next incremental build; an
// installed package or an unpacked bundle, which build once, give the space back.
if (!fs.existsSync(path.join(root, '.git'))) fs.rmSync(path.join(buildDir, 'pch'), { recursive: true, force: true });
fs.writeFileSync(stampFile, stampFor(werror));
store(key, addonFile, { ...keyInputs(lt), werror });
