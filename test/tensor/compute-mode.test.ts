// How a bfloat16 model computes (src/tensor/compute-mode.ts): bfloat16 where the CPU multiplies it natively
// (AVX-512-BF16, AMX-BF16, or oneDNN's bfloat16 off x86), float32 over the bfloat16 weights elsewhere and under
// the libraries' caps (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), unless the user asks. Each decision on
// described CPUs, then this machine's facts as libtorch reports them, plain and under the caps, through
// `mixlora info --json` in fresh processes (the libraries read their caps once).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import {
  atenCapabilityOf,
  cpuBf16Facts,
  decideCompute,
  describeCompute,
  parseBf16Compute,
  type CpuBf16Facts,
} from '../../src/tensor/compute-mode.js';
import { native } from '../../src/tensor/native.js';
import { mixlora } from '../helpers/cli.js';

const ZEN3: CpuBf16Facts = {
  flagsFrom: 'libtorch',
  architecture: 'x86_64',
  avx512Bf16: false,
  amxBf16: false,
  onednnBf16: false,
  atenCapability: 'AVX2',
  onednnMaxIsa: null,
};
const SKYLAKE_X: CpuBf16Facts = { ...ZEN3, onednnBf16: true, atenCapability: 'AVX512' }; // AVX-512, no BF16
const ZEN4: CpuBf16Facts = { ...SKYLAKE_X, avx512Bf16: true };
const SAPPHIRE_RAPIDS: CpuBf16Facts = { ...ZEN4, amxBf16: true };
const GRAVITON3: CpuBf16Facts = { ...ZEN3, architecture: 'arm64', onednnBf16: true, atenCapability: 'SVE256' };

const compute = (f: CpuBf16Facts, requested: 'auto' | 'native' | 'float32' = 'auto') =>
  decideCompute('bfloat16', 'cpu', requested, f).compute;

test('bfloat16 computes natively only where the CPU has bfloat16 arithmetic', () => {
  assert.equal(compute(ZEN3), 'float32');
  assert.equal(compute(SKYLAKE_X), 'float32', 'AVX-512 without BF16: oneDNN emulates bfloat16');
  assert.equal(compute(ZEN4), 'bfloat16');
  assert.equal(compute(SAPPHIRE_RAPIDS), 'bfloat16');
  assert.equal(compute({ ...SAPPHIRE_RAPIDS, avx512Bf16: false }), 'bfloat16', 'AMX-BF16 alone');
  assert.equal(compute({ ...ZEN4, flagsFrom: 'cpuid', onednnBf16: null }), 'bfloat16', 'libtorch 1.13: cpuid');
  assert.equal(compute(GRAVITON3), 'bfloat16', "off x86: oneDNN's answer");
  assert.equal(compute({ ...GRAVITON3, onednnBf16: false }), 'float32');
  assert.equal(compute({ ...GRAVITON3, onednnBf16: null }), 'float32');
  const zen3 = decideCompute('bfloat16', 'cpu', 'auto', ZEN3);
  assert.deepEqual({ weights: zen3.weights, compute: zen3.compute }, { weights: 'bfloat16', compute: 'float32' });
  assert.match(zen3.reason, /no AVX-512-BF16, no AMX-BF16/);
  assert.match(describeCompute(zen3), /^bfloat16 weights, float32 activations and products/);
  assert.match(decideCompute('bfloat16', 'cpu', 'auto', SAPPHIRE_RAPIDS).reason, /AVX-512-BF16, AMX-BF16/);
});

test("the libraries' caps below bfloat16 make a bfloat16 CPU compute in float32", () => {
  for (const isa of ['AVX2', 'avx512_core', 'AVX512_CORE_VNNI', 'SSE41', 'AVX2_VNNI_2']) {
    const f = { ...SAPPHIRE_RAPIDS, onednnMaxIsa: isa.toUpperCase() };
    assert.equal(compute(f), 'float32', `ONEDNN_MAX_CPU_ISA=${isa}`);
    assert.match(decideCompute('bfloat16', 'cpu', 'auto', f).reason, /ONEDNN_MAX_CPU_ISA/);
  }
  for (const isa of ['AVX512_CORE_BF16', 'AVX512_CORE_AMX', 'AVX10_1_512', 'ALL', 'DEFAULT'])
    assert.equal(compute({ ...SAPPHIRE_RAPIDS, onednnMaxIsa: isa }), 'bfloat16', `ONEDNN_MAX_CPU_ISA=${isa}`);
  for (const level of ['AVX2', 'DEFAULT']) {
    const f = { ...ZEN4, atenCapability: level };
    assert.equal(compute(f), 'float32', `ATEN_CPU_CAPABILITY=${level}`);
    assert.match(decideCompute('bfloat16', 'cpu', 'auto', f).reason, /ATEN_CPU_CAPABILITY/);
  }
  assert.equal(compute({ ...ZEN4, onednnBf16: false }), 'float32', 'oneDNN says no');
});

test('the user decides over the CPU; other dtypes and devices compute in their dtype', () => {
  assert.equal(compute(ZEN3, 'native'), 'bfloat16');
  assert.equal(compute(SAPPHIRE_RAPIDS, 'float32'), 'float32');
  assert.match(decideCompute('bfloat16', 'cpu', 'native', ZEN3).reason, /asked for/);
  assert.equal(decideCompute('bfloat16', 'cuda', 'auto', ZEN3).compute, 'bfloat16');
  assert.equal(decideCompute('bfloat16', 'cuda:1', 'float32', ZEN3).compute, 'float32');
  for (const dtype of ['float32', 'float16'] as const)
    for (const requested of ['auto', 'native', 'float32'] as const)
      assert.equal(decideCompute(dtype, 'cpu', requested, ZEN3).compute, dtype);
  // The facts are not asked for where nothing depends on them.
  const never = () => assert.fail('facts asked for');
  assert.equal(decideCompute('float32', 'cpu', 'auto', never).compute, 'float32');
  assert.equal(decideCompute('bfloat16', 'cpu', 'native', never).compute, 'bfloat16');
  assert.throws(() => parseBf16Compute('fp32', 'bf16_compute'), /bf16_compute: 'fp32' is not auto, native, float32/);
});

test("ATen's kernel level read from either libtorch's build summary", () => {
  assert.equal(atenCapabilityOf('  - CPU capability usage: AVX2\n  - CUDA'), 'AVX2');
  assert.equal(atenCapabilityOf('  - CPU capability usage: AVX512\n'), 'AVX512');
  assert.equal(atenCapabilityOf('  - CPU capability usage: DEFAULT\n'), 'DEFAULT');
  assert.equal(atenCapabilityOf('  - CPU capability usage: NO AVX\n'), 'DEFAULT'); // libtorch 1.13
  assert.equal(atenCapabilityOf('  - Build type: Release\n'), null);
});

test("this machine's facts come from libtorch and agree with the CPU's flags", () => {
  const f = cpuBf16Facts();
  const torch = native.buildInfo().torchVersion;
  const [major, minor] = torch.split('.').map(Number) as [number, number];
  assert.equal(f.flagsFrom, major > 2 || (major === 2 && minor >= 11) ? 'libtorch' : 'cpuid', torch);
  if (process.arch === 'x64') assert.equal(f.architecture, 'x86_64');
  assert.equal(typeof f.onednnBf16 === 'boolean' || f.onednnBf16 === null, true);
  if (fs.existsSync('/proc/cpuinfo') && process.arch === 'x64') {
    const flags = new Set(
      (/^flags\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(/\s+/),
    );
    assert.equal(f.avx512Bf16, flags.has('avx512_bf16'), 'AVX-512-BF16 as /proc/cpuinfo says');
    assert.equal(f.amxBf16, flags.has('amx_bf16'), 'AMX-BF16 as /proc/cpuinfo says');
  }
});

// Fresh processes: mixlora info reports the facts and the decision they give, under each cap and override.
for (const [what, env] of [
  ['no caps', {}],
  ['ONEDNN_MAX_CPU_ISA=AVX2', { ONEDNN_MAX_CPU_ISA: 'AVX2' }],
  ['ATEN_CPU_CAPABILITY=default', { ATEN_CPU_CAPABILITY: 'default' }],
  ['MIXLORA_BF16_COMPUTE=native', { MIXLORA_BF16_COMPUTE: 'native' }],
  ['MIXLORA_BF16_COMPUTE=float32', { MIXLORA_BF16_COMPUTE: 'float32' }],
] as [string, Record<string, string>][]) {
  test(`mixlora info says how bfloat16 computes here, and why (${what})`, () => {
    const r = mixlora(['info', '--json'], { env });
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { bf16_compute: string; bf16_compute_reason: string; cpu_bf16: CpuBf16Facts };
    const requested = (env.MIXLORA_BF16_COMPUTE ?? 'auto') as 'auto' | 'native' | 'float32';
    const want = decideCompute('bfloat16', 'cpu', requested, info.cpu_bf16);
    assert.equal(info.bf16_compute, want.compute);
    assert.equal(info.bf16_compute_reason, want.reason);
    if (env.ONEDNN_MAX_CPU_ISA) {
      assert.equal(info.cpu_bf16.onednnMaxIsa, 'AVX2');
      assert.equal(info.bf16_compute, 'float32');
    }
    if (env.ATEN_CPU_CAPABILITY) {
      assert.equal(info.cpu_bf16.atenCapability, 'DEFAULT');
      assert.equal(info.bf16_compute, 'float32');
    }
    if (requested !== 'auto') assert.equal(info.bf16_compute, requested === 'native' ? 'bfloat16' : 'float32');
    const text = mixlora(['info'], { env });
    assert.equal(text.code, 0, text.stderr);
    assert.match(
      text.stdout,
      new RegExp(
        `^bfloat16 +computes in ${want.compute === 'float32' ? 'float32 over bfloat16 weights' : 'bfloat16'}`,
        'm',
      ),
    );
  });
}

test('MIXLORA_BF16_COMPUTE with a bad value is refused by name', () => {
  const r = mixlora(['info'], { env: { MIXLORA_BF16_COMPUTE: 'fast' } });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /MIXLORA_BF16_COMPUTE: 'fast' is not auto, native, float32/);
});
