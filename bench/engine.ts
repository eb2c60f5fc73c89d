// Engine overhead: µs per small op (dispatch cost) and a LoRA linear forward+backward at
// 2,048 tokens × 4,096 hidden, against the same work in PyTorch eager run in this invocation.
//   node dist/bench/engine.js [--json]
import * as T from '../src/tensor/index.js';
import { medianMs, runPython, table, threads, machine, type Row } from './harness.js';

const SMALL_OPS = 100_000;
const TOKENS = 2048;
const HIDDEN = 4096;
const RANK = 16;

function smallOpMicros(): number {
  const a = T.ones([64]).keep();
  const b = T.ones([64]).keep();
  const ms = medianMs(
    () =>
      T.tidy(() => {
        for (let i = 0; i < SMALL_OPS; i++) a.add(b).dispose();
      }),
    5,
    1,
  );
  a.dispose();
  b.dispose();
  return (ms * 1000) / SMALL_OPS;
}

function loraLinearMs(): number {
  T.manualSeed(0);
  const w = T.randn([HIDDEN, HIDDEN]).mul(0.01).keep(); // frozen [out, in]
  const x = T.randn([TOKENS, HIDDEN]).keep().requiresGrad_(); // activations
  const a = T.randn([RANK, HIDDEN]).mul(0.01).keep().requiresGrad_(); // [r, in]
  const b = T.randn([HIDDEN, RANK]).mul(0.01).keep().requiresGrad_(); // [out, r]
  const scale = 2;
  const step = () =>
    T.tidy(() => {
      const y = T.linear(x, w).add(T.linear(T.linear(x, a), b), scale); // [tokens, out]
      y.sum().backward();
      T.zeroGrad([x, a, b]);
    });
  const ms = medianMs(step, 5, 1);
  for (const t of [w, x, a, b]) t.dispose();
  return ms;
}

export interface EngineResult {
  smallOpUs: number;
  loraLinearMs: number;
}

export function runEngineBench(): { ours: EngineResult; torch: EngineResult; rows: Row[] } {
  const ours = { smallOpUs: smallOpMicros(), loraLinearMs: loraLinearMs() };
  const torch = runPython<EngineResult>('engine.py', [
    '--threads',
    String(threads()),
    '--small-ops',
    String(SMALL_OPS),
    '--tokens',
    String(TOKENS),
    '--hidden',
    String(HIDDEN),
    '--rank',
    String(RANK),
  ]);
  const rows: Row[] = [
    { name: 'small op (add of 64 floats), per op', ours: ours.smallOpUs, torch: torch.smallOpUs, unit: 'µs' },
    {
      name: `LoRA linear fwd+bwd, ${TOKENS}×${HIDDEN}, r ${RANK}`,
      ours: ours.loraLinearMs,
      torch: torch.loraLinearMs,
      unit: 'ms',
    },
  ];
  return { ours, torch, rows };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = runEngineBench();
  if (process.argv.includes('--json')) console.log(JSON.stringify({ ours: r.ours, torch: r.torch }));
  else console.log(`Engine overhead (${machine()}); lower is better\n\n${table(r.rows)}`);
}
