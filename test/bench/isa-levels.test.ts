// bench/isa.ts's levels: which vector levels a CPU's flags give, best first, the best uncapped (the CPU's own)
// and each lower one capped for ATen (and through it the addon's kernels), oneDNN and MKL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { levelsFor, section } from '../../bench/isa.js';

const base = ['sse4_1', 'sse4_2', 'avx', 'fma', 'avx2'];
const shape = (flags: string[]) =>
  levelsFor(new Set(flags)).map(
    ({ level, capped }) => `${level.id}${capped ? ` ${level.caps.ATEN_CPU_CAPABILITY}` : ''}`,
  );

test('an AVX2 CPU (Zen 3): AVX2 uncapped, SSE4.2 capped to ATen default, oneDNN SSE4.1, MKL SSE4.2', () => {
  assert.deepEqual(shape(base), ['avx2', 'sse4.2 default']);
  const sse = levelsFor(new Set(base))[1]!.level;
  assert.deepEqual(sse.caps, {
    ATEN_CPU_CAPABILITY: 'default',
    ONEDNN_MAX_CPU_ISA: 'SSE41',
    MKL_ENABLE_INSTRUCTIONS: 'SSE4_2',
  });
  assert.equal(sse.aten, 'DEFAULT');
});

test('an AVX-512 CPU (Zen 4): AVX-512 uncapped, then AVX2 and SSE4.2 capped', () => {
  const zen4 = [...base, 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512_bf16'];
  assert.deepEqual(shape(zen4), ['avx512', 'avx2 avx2', 'sse4.2 default']);
  assert.equal(levelsFor(new Set(zen4))[1]!.level.caps.ONEDNN_MAX_CPU_ISA, 'AVX2');
});

test('AVX-512 foundation alone is not the AVX-512 level (ATen needs BW, VL, DQ); AVX2 without FMA is not AVX2', () => {
  assert.deepEqual(shape([...base, 'avx512f']), ['avx2', 'sse4.2 default']);
  assert.deepEqual(shape(['sse4_2', 'avx2']), ['sse4.2']);
  assert.deepEqual(shape([]), []);
});

test('the section: the targets of each level judged from its own numbers, and the MKL note where its probe did not drop', () => {
  const [avx2, sse] = levelsFor(new Set(base)).map((l) => l.level);
  const run = (ms: number) => ({ ms_per_step: ms, ms_per_token: ms / 1024, tokens_per_s: 1024 / ms, peak_rss_mib: 1 });
  const level = (l: typeof avx2, capped: boolean, slow: number, torchProbe: number) => ({
    level: l!,
    capped,
    probe: {
      gflops_fp32: 100 / slow,
      torch_cpu_capability: l!.aten,
      small_gemm: capped ? 'off' : 'avx2',
      linear: 'onednn',
    },
    torchProbe,
    steps: Object.fromEntries(
      ['LoRA', 'MixLoRA'].flatMap((m) =>
        ['float32', 'bfloat16 weights', 'nf4 base'].map((d) => [
          `${m}, ${d}`,
          run((m === 'LoRA' ? 2000 : 2400) * slow),
        ]),
      ),
    ),
    hf: run(2500),
    eagerMix: run(4000),
    decode: { ours: { base1: 10, mixed8: 30 }, libraries: { base1: 12, mixed8: 60 } },
    serve: { one: 40, eight: 170, ratio: 4.25 },
  });
  const md = section([level(avx2, false, 1, 110), level(sse, true, 2, 108)]);
  const [top, low] = md.split('### ').slice(1);
  assert.match(top!, /\| LoRA step vs HF \+ PEFT \| 0\.80× \| ≤ 0\.9× \| yes \|/);
  assert.match(top!, /\| MixLoRA step vs the eager reference \| 0\.60× \| ≤ 0\.7× \| yes \|/);
  assert.match(top!, /\| MixLoRA step vs LoRA step \| 1\.20× \| ≤ 1\.3× \| yes \|/);
  assert.match(top!, /\| serving, 8 clients vs 1 \| 4\.25× \| ≥ 4× \| yes \|/);
  assert.doesNotMatch(top!, /MKL_ENABLE_INSTRUCTIONS/);
  assert.match(low!, /\| LoRA step vs HF \+ PEFT \| 1\.60× \| ≤ 0\.9× \| no \|/);
  assert.match(low!, /`MKL_ENABLE_INSTRUCTIONS` has no visible effect/);
  assert.match(low!, /Caps: `ATEN_CPU_CAPABILITY=default` `ONEDNN_MAX_CPU_ISA=SSE41`/);
});
