#!/usr/bin/env node
// Builds the libtorch addon with node-gyp.
//   node scripts/build-native.mjs                      native/build/Release/mixlora.node, libtorch as found
//                                                      by scripts/libtorch.mjs (the .venv's PyTorch 2.x first)
//   node scripts/build-native.mjs --out DIR [--werror] another build folder (e.g. the system-libtorch build
//                                                      that `make test-system-libtorch` loads through
//                                                      MIXLORA_ADDON, or the warnings-as-errors build of lint)
// Incremental: reconfigures only when binding.gyp, the flags or the libtorch found changed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { findLibtorch, gypFields, root } from './libtorch.mjs';

const { values: args } = parseArgs({ options: { out: { type: 'string' }, werror: { type: 'boolean' } } });
// MIXLORA_WERROR=1 asks for warnings as errors too (CI builds the default addon that way once, so that
// `make lint` finds it already built).
const opts = { ...args, werror: Boolean(args.werror) || process.env.MIXLORA_WERROR === '1' };
const nativeDir = path.join(root, 'native');

// The folder node-gyp runs in: native/ itself, or a folder of links to native/'s sources whose binding.gyp
// names scripts/libtorch.mjs by its absolute path.
function prepareFolder(out) {
  if (!out) return nativeDir;
  const dir = path.resolve(root, out);
  fs.mkdirSync(dir, { recursive: true });
  for (const name of fs.readdirSync(nativeDir)) {
    if (!/\.(cc|h)$/.test(name)) continue;
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

let lt;
try {
  lt = findLibtorch();
} catch (e) {
  process.stderr.write(`mixlora: cannot build the native addon.\n${e.message}\n`);
  process.exit(1);
}
const gypDir = prepareFolder(opts.out);
const buildDir = path.join(gypDir, 'build');
const stampFile = path.join(buildDir, 'libtorch.json');
process.stderr.write(
  `mixlora: building the addon in ${path.relative(root, buildDir)} against libtorch ${lt.version} from ${lt.source}` +
    ` (${lt.cuda ? `CUDA build ${lt.nccl ? 'with NCCL' : "without NCCL (CUDA's or NCCL's headers not found, or MIXLORA_NCCL=0)"}` : 'CPU build'}` +
    `${opts.werror ? ', warnings as errors' : ''})\n`,
);

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

// What gyp will be told (flags, libraries): when any of it changes, reconfigure and rebuild.
const stampFor = (werror) => JSON.stringify({ ...lt, fields: gypFields(lt, werror) });
const stamp = stampFor(opts.werror);
// A build with warnings as errors is the same addon: it also serves a request without them.
const accepted = opts.werror ? [stamp] : [stamp, stampFor(true)];
const gypChanged =
  !fs.existsSync(path.join(buildDir, 'Makefile')) ||
  fs.statSync(path.join(gypDir, 'binding.gyp')).mtimeMs > fs.statSync(path.join(buildDir, 'Makefile')).mtimeMs;
const ltChanged = !fs.existsSync(stampFile) || !accepted.includes(fs.readFileSync(stampFile, 'utf8'));
if (gypChanged || ltChanged) {
  if (ltChanged && fs.existsSync(buildDir)) fs.rmSync(buildDir, { recursive: true, force: true });
  run(['configure', ...nodedirArgs]);
  fs.writeFileSync(stampFile, stamp);
}
run(['build', `-j`, String(Math.max(1, os.availableParallelism()))]);
