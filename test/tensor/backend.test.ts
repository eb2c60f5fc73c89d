// The numeric backend: which libtorch and BLAS run (`mixlora info`), OpenBLAS's kernel choice on CPUs it does
// not recognise, and matrix products that agree with a float64 product whichever kernels were chosen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { bestCoreForFlags, coreTier, decideCoreType, SimdTier } from '../../src/tensor/openblas-core.js';
import { mixlora } from '../helpers/cli.js';
import { ROOT } from '../helpers/fixtures.js';

const flags = (s: string) => new Set(s.split(' '));
const AVX512_BF16 = flags('sse3 avx avx2 fma avx512f avx512bw avx512vl avx512dq avx512_bf16');

test('OpenBLAS core tiers and the core type each CPU flag set supports', () => {
  assert.equal(coreTier('Prescott'), SimdTier.Sse);
  assert.equal(coreTier('Nehalem'), SimdTier.Sse);
  assert.equal(coreTier('Sandybridge'), SimdTier.Avx);
  assert.equal(coreTier('Haswell'), SimdTier.Avx2);
  assert.equal(coreTier('Zen'), SimdTier.Avx2);
  assert.equal(coreTier('SkylakeX'), SimdTier.Avx512);
  assert.equal(coreTier('COOPERLAKE'), SimdTier.Avx512);
  assert.deepEqual(bestCoreForFlags(AVX512_BF16), { tier: SimdTier.Avx512, coretype: 'Cooperlake' });
  assert.deepEqual(bestCoreForFlags(flags('avx avx2 fma avx512f avx512bw avx512vl avx512dq')), {
    tier: SimdTier.Avx512,
    coretype: 'SkylakeX',
  });
  // AVX-512 F alone (Knights Landing) is not enough for the SkylakeX kernels.
  assert.deepEqual(bestCoreForFlags(flags('avx avx2 fma avx512f')), { tier: SimdTier.Avx2, coretype: 'Haswell' });
  assert.deepEqual(bestCoreForFlags(flags('sse3 avx')), { tier: SimdTier.Avx, coretype: 'Sandybridge' });
  assert.deepEqual(bestCoreForFlags(flags('sse3')), { tier: SimdTier.Sse, coretype: null });
});

test('a core type is chosen only when OpenBLAS fell back below what the CPU supports', () => {
  assert.equal(decideCoreType('Prescott', AVX512_BF16).chosen, 'Cooperlake');
  assert.equal(decideCoreType('Haswell', AVX512_BF16).chosen, 'Cooperlake');
  assert.equal(decideCoreType('SkylakeX', AVX512_BF16).chosen, null);
  assert.equal(decideCoreType('Zen', flags('avx avx2 fma')).chosen, null);
  assert.equal(decideCoreType('Prescott', flags('sse3')).chosen, null);
  assert.equal(decideCoreType(null, AVX512_BF16).chosen, null); // MKL builds: nothing to do
});

test('mixlora info reports the backend as JSON, and --probe measures matrix products', () => {
  const r = mixlora(['info', '--json', '--probe', '--threads', '1']);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.match(String(info.torch), /^\d+\.\d+/);
  assert.match(String(info.blas), /\S/);
  assert.match(String(info.source), /\S/);
  assert.match(String(info.backend), /^(PyTorch 2\.x|Debian's libtorch \(fallback\)|libtorch \d)/);
  assert.equal(info.threads, 1);
  assert.equal(typeof info.cuda_available, 'boolean');
  assert.ok((info.gflops_fp32 as number) > 0 && (info.gflops_bf16 as number) > 0);
  // OpenBLAS builds name their kernels; others report none.
  assert.equal(info.openblas_core === null, info.blas !== 'OpenBLAS');
  const text = mixlora(['info']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^backend +\S/m);
  assert.match(text.stdout, /^libtorch +\d+\.\d+/m);
  assert.match(text.stdout, /^BLAS +/m);
});

// In a fresh process without OPENBLAS_CORETYPE, so that mixlora's own choice (if any) is what runs.
test('float32 matrix products with the kernels mixlora chose agree with a float64 product', () => {
  const script = `
    const T = await import(${JSON.stringify(`${ROOT}/dist/src/tensor/index.js`)});
    const { backendInfo } = await import(${JSON.stringify(`${ROOT}/dist/src/tensor/backend-info.js`)});
    let worst = 0;
    for (const [m, k, n] of [[64, 96, 80], [257, 513, 129], [512, 1024, 384]]) {
      T.tidy(() => {
        const a = T.randn([m, k]), b = T.randn([k, n]);
        const exact = a.to('float64').matmul(b.to('float64'));
        const err = a.matmul(b).to('float64').sub(exact).abs().amax().item();
        const scale = exact.abs().amax().item();
        worst = Math.max(worst, err / scale);
      });
    }
    const i = backendInfo();
    process.stdout.write(JSON.stringify({ worst, blas: i.blas, core: i.openblas_core, coretype: i.openblas_coretype }));
  `;
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { worst: number; blas: string; core: string | null; coretype: string | null };
  // float32 accumulation over k ≤ 1024 terms: relative error well under 1e-5 of the largest entry.
  assert.ok(out.worst < 1e-5, `max relative error ${out.worst} with ${out.blas} ${out.core ?? ''}`);
  if (out.blas === 'OpenBLAS') {
    // Whatever OpenBLAS now runs is not below what the CPU supports.
    const cpu = spawnSync('cat', ['/proc/cpuinfo'], { encoding: 'utf8' }).stdout;
    const cpuFlags = new Set((/^flags\s*:\s*(.*)$/m.exec(cpu)?.[1] ?? '').split(/\s+/));
    assert.ok(coreTier(out.core ?? '') >= bestCoreForFlags(cpuFlags).tier, `OpenBLAS runs ${out.core}`);
  }
});
