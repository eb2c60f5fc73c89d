// glibc's malloc is told to keep freed memory for the next step when the addon loads
// (native/bindings/host_allocator.cc), unless MIXLORA_MALLOC=default or a malloc setting of the user's own is in
// the environment: what it did is reported, and both ways out are honoured.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { native } from '../../src/tensor/native.js';

function reportedWith(env: Record<string, string>): string {
  const script = `import('${new URL('../../src/tensor/native.js', import.meta.url).href}').then((m) => console.log(m.native.blasInfo().hostAllocator))`;
  const clean = { ...process.env };
  for (const name of ['MIXLORA_MALLOC', 'GLIBC_TUNABLES', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_'])
    delete clean[name];
  return execFileSync(process.execPath, ['-e', script], { env: { ...clean, ...env }, encoding: 'utf8' }).trim();
}

test('host allocator: set for reuse by default on glibc, and reported', () => {
  const glibc = Boolean(
    (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime,
  );
  assert.equal(reportedWith({}), glibc ? 'reuse' : 'default');
  assert.ok(['reuse', 'default'].includes(native.blasInfo().hostAllocator));
});

test('host allocator: MIXLORA_MALLOC=default and the user’s own malloc settings keep glibc’s defaults', () => {
  assert.equal(reportedWith({ MIXLORA_MALLOC: 'default' }), 'default');
  assert.equal(reportedWith({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }), 'default');
  assert.equal(reportedWith({ MALLOC_TRIM_THRESHOLD_: '1000000' }), 'default');
});
