#!/usr/bin/env node
// Finds the libtorch to build the addon against, in this order:
//   1. LIBTORCH=<dir>            a libtorch folder with include/ and lib/
//   2. LIBTORCH_USE_PYTORCH=1    the `torch` package of `python3` (or $PYTHON), whatever its version
//   3. MIXLORA_BACKEND=system    Debian/Ubuntu's libtorch-dev (/usr/include, /usr/lib/<triplet>)
//   4. otherwise (MIXLORA_BACKEND=auto, the default, or pytorch) the first PyTorch 2.x of
//        a. the checkout's .venv (made by `make setup`; an installed package has none),
//        b. $PYTHON, else python3 (an existing PyTorch of the user's),
//        c. the package's private virtual environment in the per-user cache
//           (<cache>/<version>/venv, cache: $MIXLORA_CACHE_DIR, else $XDG_CACHE_HOME/mixlora, else
//           ~/.cache/mixlora), which scripts/build-native.mjs makes with the pinned torch when none of these
//           has one (findLibtorch itself never installs anything: it throws NoPyTorch);
//      auto then falls back to the system libtorch when libtorch-dev is installed (said in one line).
// A CUDA build also gets c10d's ProcessGroupNCCL when the CUDA runtime's and NCCL's headers are found
// (PyTorch's wheels bring them as nvidia-* packages beside torch; else CUDA_HOME, NCCL_INCLUDE_DIR,
// /usr/local/cuda, /usr/include); MIXLORA_NCCL=0 leaves it out (the CUDA build then has Gloo only).
// Used by scripts/build-native.mjs, which hands the result to native/binding.gyp through
// MIXLORA_LIBTORCH_JSON so that gyp's field queries (`node scripts/libtorch.mjs <field>`) agree with it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HOW_TO =
  'libtorch was not found. Provide it in one of these ways:\n' +
  '  1. LIBTORCH=/path/to/libtorch   (a folder with include/ and lib/, e.g. unpacked from pytorch.org)\n' +
  '  2. LIBTORCH_USE_PYTORCH=1       (use the torch package of python3; set PYTHON to pick another interpreter)\n' +
  "  3. MIXLORA_BACKEND=pytorch       (PyTorch 2.x: the checkout's .venv, python3's, or the private venv in the user cache)\n" +
  '  4. MIXLORA_BACKEND=system        (Debian/Ubuntu: apt-get install libtorch-dev; `make setup` does this as root)';

export class LibtorchNotFound extends Error {}

// What ProcessGroupNCCL.hpp pulls in besides libtorch's own headers: the CUDA runtime's (through
// ATen/cuda/CUDAContext.h: cuda_runtime_api.h, cublas_v2.h, cusparse.h, cusolverDn.h; cuda_runtime.h
// includes crt/host_config.h, which CUDA 13's runtime wheel leaves to the toolkit) and nccl.h.
const CUDA_HEADERS = ['cuda_runtime_api.h', 'crt/host_config.h', 'cublas_v2.h', 'cusparse.h', 'cusolverDn.h'];

/** The include folders that hold CUDA's and NCCL's headers for ProcessGroupNCCL, or null when some
 * header is missing (the CUDA build then has no NCCL). `includeDir` is libtorch's. */
function ncclIncludeDirs(includeDir, env = process.env) {
  if (env.MIXLORA_NCCL === '0') return null;
  if (!fs.existsSync(path.join(includeDir, 'torch', 'csrc', 'distributed', 'c10d', 'ProcessGroupNCCL.hpp')))
    return null;
  // <site-packages>/torch/include -> <site-packages>/nvidia/*/include (cu12: one package per library;
  // cu13: nvidia/cu13/include holds the toolkit's and nvidia/nccl/include NCCL's); then a toolkit's.
  // Each header comes from the first folder that has it.
  const nvidia = path.resolve(includeDir, '..', '..', 'nvidia');
  const wheels = fs.existsSync(nvidia)
    ? fs
        .readdirSync(nvidia)
        .sort()
        .map((d) => path.join(nvidia, d, 'include'))
    : [];
  const candidates = [
    ...wheels,
    ...[env.NCCL_INCLUDE_DIR, env.CUDA_HOME && path.join(env.CUDA_HOME, 'include')].filter(Boolean),
    '/usr/local/cuda/include',
    ...(fs.existsSync('/usr/local')
      ? fs
          .readdirSync('/usr/local')
          .filter((d) => /^cuda-\d/.test(d))
          .sort()
          .reverse()
          .map((d) => path.join('/usr/local', d, 'include'))
      : []),
    '/usr/include',
  ].filter((d) => fs.existsSync(d));
  const dirs = [];
  for (const header of [...CUDA_HEADERS, 'nccl.h']) {
    const dir = candidates.find((d) => fs.existsSync(path.join(d, header)));
    if (!dir) return null;
    if (!dirs.includes(dir)) dirs.push(dir);
  }
  return dirs;
}

function hasHeaders(includeDir) {
  return (
    fs.existsSync(path.join(includeDir, 'ATen', 'ATen.h')) &&
    fs.existsSync(path.join(includeDir, 'torch', 'csrc', 'api', 'include', 'torch', 'version.h'))
  );
}

function libFile(libDir, name) {
  const f = path.join(libDir, `lib${name}.so`);
  return fs.existsSync(f) ? f : null;
}

// libtorch builds differ in the C++ string ABI (PyTorch wheels before 2.7 used the old one); the
// addon must match or it fails to link/load. The mangled names in libc10 tell which one it is.
function usesCxx11Abi(libDir) {
  const c10 = libFile(libDir, 'c10');
  if (!c10) return true;
  return fs.readFileSync(c10).includes('St7__cxx11');
}

function readVersion(includeDir) {
  // PyTorch 2.9+ moved the defines to torch/headeronly/version.h (the old header includes it).
  for (const file of [
    path.join(includeDir, 'torch', 'headeronly', 'version.h'),
    path.join(includeDir, 'torch', 'csrc', 'api', 'include', 'torch', 'version.h'),
  ]) {
    if (!fs.existsSync(file)) continue;
    const m = /#define TORCH_VERSION\s*\\?\s*"([^"]+)"/.exec(fs.readFileSync(file, 'utf8'));
    if (m) return m[1];
  }
  return 'unknown';
}

// PyTorch 2.x headers use C++20 features (bit-field initialisers in c10); 1.13's are C++17.
function cxxStandard(version) {
  const major = Number(/^(\d+)/.exec(version)?.[1] ?? 0);
  return major >= 2 ? 'c++20' : 'c++17';
}

function describe(source, includeDir, libDir) {
  if (!hasHeaders(includeDir))
    throw new LibtorchNotFound(`${source}: no ATen headers under ${includeDir}\n\n${HOW_TO}`);
  if (!libFile(libDir, 'torch') || !libFile(libDir, 'c10')) {
    throw new LibtorchNotFound(`${source}: libtorch.so / libc10.so not found in ${libDir}\n\n${HOW_TO}`);
  }
  // Real paths: the addon's rpath and its build-cache key (addon-cache.mjs) name the libtorch itself, not a
  // link to it (a .venv that is a symbolic link, a LIBTORCH given through one).
  includeDir = fs.realpathSync(includeDir);
  libDir = fs.realpathSync(libDir);
  const libs = ['torch', 'torch_cpu', 'c10'];
  const cuda = Boolean(libFile(libDir, 'torch_cuda'));
  if (cuda) libs.push('torch_cuda', 'c10_cuda');
  const ncclDirs = cuda ? ncclIncludeDirs(includeDir) : null;
  return {
    source,
    version: readVersion(includeDir),
    cxxStandard: cxxStandard(readVersion(includeDir)),
    includeDirs: [includeDir, path.join(includeDir, 'torch', 'csrc', 'api', 'include')],
    libDir,
    libs,
    cuda,
    // c10d's ProcessGroupNCCL (CUDA builds whose CUDA and NCCL headers were found) and those headers' folders
    nccl: ncclDirs !== null,
    cudaIncludeDirs: ncclDirs ?? [],
    cxx11abi: usesCxx11Abi(libDir),
    // System libraries are found by the loader; others need an rpath.
    rpath: source !== 'system',
  };
}

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const venvPython = path.join(root, '.venv', 'bin', 'python');
export const packageVersion = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;

/** The per-user cache of mixlora (the private PyTorch venv, the addon builds): MIXLORA_CACHE_DIR, else
 * $XDG_CACHE_HOME/mixlora, else ~/.cache/mixlora. Shared by every project of the user. */
export function cacheRoot(env = process.env) {
  if (env.MIXLORA_CACHE_DIR) return path.resolve(env.MIXLORA_CACHE_DIR);
  return path.join(
    env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache'),
    'mixlora',
  );
}

/** The private virtual environment with the pinned torch, one per package version (as `make setup`'s .venv
 * is one per checkout). */
export function privateVenv(env = process.env) {
  return path.join(cacheRoot(env), packageVersion, 'venv');
}

const isTorch2 = (version) => Number(/^(\d+)\./.exec(version)?.[1] ?? 0) >= 2;

/** The folder of python's torch package, found without importing it (fast: no libtorch load), or the reason
 * there is none. */
function torchDirOf(python) {
  try {
    const out = execFileSync(
      python,
      [
        '-c',
        'import importlib.util as u, json; s = u.find_spec("torch"); ' +
          'print(json.dumps(list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else None))',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 },
    );
    const dir = JSON.parse(out);
    return dir ? { dir } : { reason: `${python} has no torch` };
  } catch (e) {
    const why =
      e.code === 'ENOENT'
        ? 'not found'
        : String(e.stderr || e.message)
            .trim()
            .split('\n')
            .pop();
    return { reason: `${python}: ${why}` };
  }
}

function fromPython(python = process.env.PYTHON || 'python3', source = `python torch (${python})`) {
  const found = torchDirOf(python);
  if (!found.dir) throw new LibtorchNotFound(`LIBTORCH_USE_PYTORCH=1 but ${found.reason}\n\n${HOW_TO}`);
  return describe(source, path.join(found.dir, 'include'), path.join(found.dir, 'lib'));
}

/** PyTorch 2.x of `python`, or the reason it is not usable. */
function pytorch2Of(python, source) {
  const found = torchDirOf(python);
  if (!found.dir) return { reason: found.reason };
  try {
    const lt = describe(source, path.join(found.dir, 'include'), path.join(found.dir, 'lib'));
    if (!isTorch2(lt.version)) return { reason: `${python} has torch ${lt.version}, not 2.x` };
    return { lt };
  } catch (e) {
    return { reason: e.message.split('\n')[0] };
  }
}

export function systemLibtorchPresent() {
  try {
    fromSystem();
    return true;
  } catch {
    return false;
  }
}

function fromSystem() {
  const triplets = ['x86_64-linux-gnu', 'aarch64-linux-gnu'];
  for (const prefix of ['/usr', '/usr/local']) {
    const includeDir = path.join(prefix, 'include');
    if (!hasHeaders(includeDir)) continue;
    for (const libDir of [...triplets.map((t) => path.join(prefix, 'lib', t)), path.join(prefix, 'lib')]) {
      if (libFile(libDir, 'torch') && libFile(libDir, 'c10')) return describe('system', includeDir, libDir);
    }
  }
  throw new LibtorchNotFound(HOW_TO);
}

/** No PyTorch 2.x where auto looks (the checkout's .venv, $PYTHON or python3, the private venv): `reasons`
 * says why for each; scripts/build-native.mjs then makes the private venv at `venv` and asks again. */
export class NoPyTorch extends LibtorchNotFound {
  constructor(reasons, venv) {
    super(`no PyTorch 2.x found (${reasons.join('; ')})`);
    this.reasons = reasons;
    this.venv = venv;
  }
}

/** The libtorch to build against (see the top of this file). `opts.systemFallback` (default true): auto falls
 * back to the system libtorch when no PyTorch 2.x is found; false throws NoPyTorch instead. */
export function findLibtorch(env = process.env, opts = {}) {
  if (env.LIBTORCH) {
    const dir = path.resolve(env.LIBTORCH);
    return describe(`LIBTORCH=${dir}`, path.join(dir, 'include'), path.join(dir, 'lib'));
  }
  if (env.LIBTORCH_USE_PYTORCH === '1') return fromPython(env.PYTHON || 'python3');
  const backend = env.MIXLORA_BACKEND || 'auto';
  if (!['auto', 'pytorch', 'system'].includes(backend)) {
    throw new LibtorchNotFound(`MIXLORA_BACKEND=${backend}: expected pytorch, system or auto`);
  }
  if (backend === 'system') return fromSystem();
  const reasons = [];
  const venv = privateVenv(env);
  const python = env.PYTHON || 'python3';
  const privatePython = path.join(venv, 'bin', 'python');
  // (opts.projectPython: another checkout's .venv python, or null for none: the tests of this order)
  const project = opts.projectPython === undefined ? venvPython : opts.projectPython;
  const candidates = [];
  if (project && fs.existsSync(project)) candidates.push([project, 'pytorch (.venv)']);
  if (python !== project) candidates.push([python, `python torch (${python})`]);
  for (const [py, source] of candidates) {
    const r = pytorch2Of(py, source);
    if (r.lt) return r.lt;
    reasons.push(r.reason);
  }
  if (fs.existsSync(privatePython)) {
    const r = pytorch2Of(privatePython, `pytorch (private venv ${venv})`);
    if (r.lt) return r.lt;
    reasons.push(r.reason);
  } else reasons.push(`no private venv at ${venv} yet`);
  if (backend === 'auto' && opts.systemFallback !== false && systemLibtorchPresent()) return fromSystem();
  throw new NoPyTorch(reasons, venv);
}

/** The compiler and linker settings binding.gyp asks for, each as gyp's <!@(...) expansion wants it. */
export function gypFields(lt, werror = false) {
  return {
    include_dirs: lt.includeDirs.join(' '),
    libraries: lt.libs.map((l) => `-l${l}`).join(' '),
    ldflags: [
      `-L${lt.libDir}`,
      ...(lt.rpath ? [`-Wl,-rpath,${lt.libDir}`] : []),
      // Keep torch_cuda linked even though no symbol of it is used directly: it registers CUDA.
      '-Wl,--no-as-needed',
    ].join(' '),
    defines: `_GLIBCXX_USE_CXX11_ABI=${lt.cxx11abi ? 1 : 0} MIXLORA_TORCH_CUDA=${lt.cuda ? 1 : 0} MIXLORA_TORCH_NCCL=${lt.nccl ? 1 : 0}`,
    // libtorch's headers as system headers: their own warnings are not ours to fix (see `make lint`).
    cflags: [
      `-std=${lt.cxxStandard}`,
      // (/usr/include and /usr/local/include already are; naming them again breaks libstdc++'s #include_next)
      ...lt.includeDirs.filter((d) => !['/usr/include', '/usr/local/include'].includes(d)).map((d) => `-isystem ${d}`),
      // Gloo's declarations, which c10d's ProcessGroupGloo.hpp includes and no libtorch package ships.
      `-isystem ${path.join(root, 'native', 'third_party', 'gloo')}`,
      // CUDA's and NCCL's, for ProcessGroupNCCL.hpp (after libtorch's, so that its own headers win)
      ...(lt.cudaIncludeDirs ?? [])
        .filter((d) => !['/usr/include', '/usr/local/include'].includes(d))
        .map((d) => `-isystem ${d}`),
      ...(werror ? ['-Werror'] : []),
    ].join(' '),
  };
}

// CLI: print one field (json, summary, or one of gypFields).
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const field = process.argv[2] || 'json';
  try {
    const lt = process.env.MIXLORA_LIBTORCH_JSON ? JSON.parse(process.env.MIXLORA_LIBTORCH_JSON) : findLibtorch();
    const fields = {
      ...gypFields(lt, process.env.MIXLORA_WERROR === '1'),
      json: JSON.stringify(lt, null, 2),
      summary: `libtorch ${lt.version} from ${lt.source} (${lt.cuda ? `CUDA build${lt.nccl ? ' with NCCL' : ', no NCCL'}` : 'CPU build'})`,
    };
    if (!(field in fields)) throw new Error(`unknown field ${field}`);
    process.stdout.write(fields[field] + '\n');
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(1);
  }
}
