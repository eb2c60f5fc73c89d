// One rank of the process-group test (group.test.ts): joins the job its environment describes, runs
// each collective once and prints what it got as one JSON line.
import { readDistEnv } from '../../src/distributed/env.js';
import { joinGroup, leaveGroup } from '../../src/distributed/group.js';
import { fromBytes, full, tensor } from '../../src/tensor/create.js';
import { liveTensors, tidy } from '../../src/tensor/scope.js';

const g = joinGroup(readDistEnv());
const before = liveTensors();
const a = tensor([g.rank + 1, 10 * (g.rank + 1)]); // [2]
const b = tensor([[g.rank], [0.5]], { dtype: 'float32' }); // [2, 1]
g.allReduceSum([a, b]);
// Many tensors in one call: buckets of at most 32 MiB, a contiguous tensor that large summed where it lies,
// a non-contiguous one copied. Tensor i holds (rank + 1) · (i + 1) everywhere: summed, 3 · (i + 1).
const M = 2 ** 20;
const shapes = [[3], [9 * M], [5 * M], [5 * M], [7], [3000, 3000]];
const many = shapes.map((shape, i) => full(shape, (g.rank + 1) * (i + 1)));
const square = many[5]!;
many[5] = square.transpose(0, 1); // [3000, 3000], not contiguous (a view: the storage stays)
square.dispose();
g.allReduceSum(many);
const bucketed = many.map((t) => tidy(() => [t.amin().item(), t.amax().item()]));
for (const t of many) t.dispose();
const bytes = fromBytes(Uint8Array.from([g.rank, 255 - g.rank]), 'uint8', [2]);
const gathered = g.allGather(bytes); // [W, 2]
const out = {
  rank: g.rank,
  backend: g.backend,
  sums: [a.toNumbers(), b.toNumbers()],
  bucketed,
  gathered: gathered.toNumbers(),
  numbers: g.allGatherNumbers([g.rank * 1.5, 2 ** 40 + g.rank]),
  json: g.allGatherJson({ rank: g.rank, text: 'é'.repeat(g.rank + 1) }),
};
for (const t of [a, b, bytes, gathered]) t.dispose();
const leaked = liveTensors() - before;
leaveGroup(g);
process.stdout.write(JSON.stringify({ ...out, leaked }) + '\n');
