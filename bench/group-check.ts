// One rank of the GPU check's process-group step (bench/gpu-check.ts): joins the job its environment
// describes (WORLD_SIZE=1 with MIXLORA_DIST_FORCE_GROUP=1 on a one-GPU machine), with its tensors on
// DEVICE, sums tensors of each dtype across ranks with the group (NCCL on a CUDA device when the addon
// has it) and prints one JSON line: {rank, worldSize, backend, device, checks: [{what, ok, got}], ok}.
//   node dist/bench/group-check.js DEVICE
import { rankDevice } from '../src/distributed/backend.js';
import { readDistEnv } from '../src/distributed/env.js';
import { joinGroup, leaveGroup } from '../src/distributed/group.js';
import { full, tensor } from '../src/tensor/create.js';
import type { DType } from '../src/tensor/dtype.js';
import { parseDevice } from '../src/tensor/targets.js';

const env = readDistEnv();
if (!env) {
  process.stderr.write('group-check: no job (set WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT)\n');
  process.exit(2);
}
const device = parseDevice(rankDevice(process.argv[2] ?? 'cpu', env), 'DEVICE');
const g = joinGroup(env, device);
const W = g.worldSize;
const checks: { what: string; ok: boolean; got: unknown }[] = [];

// Two tensors in one flat buffer of the first one's dtype; small integers and halves are exact in each.
for (const dtype of ['float32', 'float64', 'bfloat16'] as DType[]) {
  const a = tensor([g.rank + 1, 0.5, -2], { dtype, device }); // [3]
  const b = tensor([[g.rank], [1]], { dtype: 'float32', device }); // [2, 1]
  g.allReduceSum([a, b]);
  const got = [a.toNumbers(), b.toNumbers(), a.device, b.device];
  const want = [[(W * (W + 1)) / 2, 0.5 * W, -2 * W], [(W * (W - 1)) / 2, W], device, device];
  checks.push({ what: `all-reduce ${dtype} + float32`, ok: JSON.stringify(got) === JSON.stringify(want), got });
  a.dispose();
  b.dispose();
}
// A gradient-sized buffer: 4 Mi float32 elements.
const big = full([4 << 20], g.rank + 1, { dtype: 'float32', device }); // [4Mi]
g.allReduceSum([big]);
const lo = big.amin();
const hi = big.amax();
const extremes = [lo.item(), hi.item()];
checks.push({ what: 'all-reduce 4Mi float32', ok: extremes.every((v) => v === (W * (W + 1)) / 2), got: extremes });
for (const t of [big, lo, hi]) t.dispose();

const gathered = g.allGatherJson({ rank: g.rank });
checks.push({
  what: 'all-gather (Gloo)',
  ok: gathered.every((x, r) => x.rank === r),
  got: gathered,
});
leaveGroup(g);
const ok = checks.every((c) => c.ok);
process.stdout.write(JSON.stringify({ rank: g.rank, worldSize: W, backend: g.backend, device, checks, ok }) + '\n');
process.exit(ok ? 0 : 1);
