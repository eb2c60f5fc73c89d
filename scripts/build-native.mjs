#!/usr/bin/env node
// Builds the libtorch addon (native/build/Release/mixlora.node) with node-gyp.
// Incremental: reconfigures only when binding.gyp or the libtorch found changed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { findLibtorch } from './libtorch.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'native');
const buildDir = path.join(nativeDir, 'build');
const stampFile = path.join(buildDir, 'libtorch.json');

let lt;
try {
  lt = findLibtorch();
} catch (e) {
  process.stderr.write(`mixlora: cannot build the native addon.\n${e.message}\n`);
  process.exit(1);
}
process.stderr.write(
  `mixlora: building the addon against libtorch ${lt.version} from ${lt.source} (${lt.cuda ? 'CUDA' : 'CPU'} build)\n`,
);

const require = createRequire(import.meta.url);
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
const run = (args) => {
  const r = spawnSync(process.execPath, [nodeGyp, ...args], { cwd: nativeDir, stdio: 'inherit' });
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

const stamp = JSON.stringify(lt);
const gypChanged =
  !fs.existsSync(path.join(buildDir, 'Makefile')) ||
  fs.statSync(path.join(nativeDir, 'binding.gyp')).mtimeMs > fs.statSync(path.join(buildDir, 'Makefile')).mtimeMs;
const ltChanged = !fs.existsSync(stampFile) || fs.readFileSync(stampFile, 'utf8') !== stamp;
if (gypChanged || ltChanged) {
  if (ltChanged && fs.existsSync(buildDir)) fs.rmSync(buildDir, { recursive: true, force: true });
  run(['configure', ...nodedirArgs]);
  fs.writeFileSync(stampFile, stamp);
}
run(['build', `-j`, String(Math.max(1, os.availableParallelism()))]);
