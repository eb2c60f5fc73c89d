#!/usr/bin/env node
// Finds the libtorch to build the addon against, in the documented order:
//   1. LIBTORCH=<dir>            a libtorch folder with include/ and lib/
//   2. LIBTORCH_USE_PYTORCH=1    the `torch` package of `python3` (or $PYTHON)
//   3. the system                Debian/Ubuntu's libtorch-dev (/usr/include, /usr/lib/<triplet>)
// Used by native/binding.gyp (`node scripts/libtorch.mjs <field>`) and by scripts/build-native.mjs.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HOW_TO =
  'libtorch was not found. Provide it in one of three ways:\n' +
  '  1. LIBTORCH=/path/to/libtorch   (a folder with include/ and lib/, e.g. unpacked from pytorch.org)\n' +
  '  2. LIBTORCH_USE_PYTORCH=1       (use the torch package of python3; set PYTHON to pick another interpreter)\n' +
  '  3. the system package           (Debian/Ubuntu: apt-get install libtorch-dev; `make setup` does this as root)';

export class LibtorchNotFound extends Error {}

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
  const text = fs.readFileSync(path.join(includeDir, 'torch', 'csrc', 'api', 'include', 'torch', 'version.h'), 'utf8');
  const m = /#define TORCH_VERSION\s*\\?\s*"([^"]+)"/.exec(text);
  return m ? m[1] : 'unknown';
}

function describe(source, includeDir, libDir) {
  if (!hasHeaders(includeDir))
    throw new LibtorchNotFound(`${source}: no ATen headers under ${includeDir}\n\n${HOW_TO}`);
  if (!libFile(libDir, 'torch') || !libFile(libDir, 'c10')) {
    throw new LibtorchNotFound(`${source}: libtorch.so / libc10.so not found in ${libDir}\n\n${HOW_TO}`);
  }
  const libs = ['torch', 'torch_cpu', 'c10'];
  const cuda = Boolean(libFile(libDir, 'torch_cuda'));
  if (cuda) libs.push('torch_cuda', 'c10_cuda');
  return {
    source,
    version: readVersion(includeDir),
    includeDirs: [includeDir, path.join(includeDir, 'torch', 'csrc', 'api', 'include')],
    libDir,
    libs,
    cuda,
    cxx11abi: usesCxx11Abi(libDir),
    // System libraries are found by the loader; others need an rpath.
    rpath: source !== 'system',
  };
}

function fromPython() {
  const python = process.env.PYTHON || 'python3';
  let out;
  try {
    out = execFileSync(
      python,
      [
        '-c',
        'import json, os, torch; d = os.path.dirname(torch.__file__); ' +
          'print(json.dumps({"include": os.path.join(d, "include"), "lib": os.path.join(d, "lib")}))',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
  } catch (e) {
    throw new LibtorchNotFound(
      `LIBTORCH_USE_PYTORCH=1 but \`${python} -c "import torch"\` failed: ${String(e.stderr || e.message)
        .trim()
        .split('\n')
        .pop()}\n\n${HOW_TO}`,
    );
  }
  const { include, lib } = JSON.parse(out);
  return describe(`python torch (${python})`, include, lib);
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

export function findLibtorch(env = process.env) {
  if (env.LIBTORCH) {
    const root = path.resolve(env.LIBTORCH);
    return describe(`LIBTORCH=${root}`, path.join(root, 'include'), path.join(root, 'lib'));
  }
  if (env.LIBTORCH_USE_PYTORCH === '1') return fromPython();
  return fromSystem();
}

// CLI: print one field in the form gyp's <!@(...) expansion wants (space separated).
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const field = process.argv[2] || 'json';
  try {
    const lt = findLibtorch();
    const fields = {
      json: () => JSON.stringify(lt, null, 2),
      include_dirs: () => lt.includeDirs.join(' '),
      libraries: () => lt.libs.map((l) => `-l${l}`).join(' '),
      ldflags: () =>
        [
          `-L${lt.libDir}`,
          ...(lt.rpath ? [`-Wl,-rpath,${lt.libDir}`] : []),
          // Keep torch_cuda linked even though no symbol of it is used directly: it registers CUDA.
          '-Wl,--no-as-needed',
        ].join(' '),
      defines: () => `_GLIBCXX_USE_CXX11_ABI=${lt.cxx11abi ? 1 : 0} MIXLORA_TORCH_CUDA=${lt.cuda ? 1 : 0}`,
      summary: () => `libtorch ${lt.version} from ${lt.source} (${lt.cuda ? 'CUDA' : 'CPU'} build)`,
    };
    if (!fields[field]) throw new Error(`unknown field ${field}`);
    process.stdout.write(fields[field]() + '\n');
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(1);
  }
}
