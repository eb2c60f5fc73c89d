// One rank of the process-group test (group.test.ts): joins the job its environment describes, runs
// each collective once and prints what it got as one JSON line.
import { readDistEnv } from '../../src/distributed/env.js';
import { joinGroup, leaveGroup } from '../../src/distributed/group.js';
import { fromBytes, tensor } from '../../src/tensor/create.js';
import { liveTensors } from '../../src/tensor/scope.js';

const g = joinGroup(readDistEnv());
const before = liveTensors();
const a = tensor([g.rank + 1, 10 * (g.rank + 1)]); // [2]
const b = tensor([[g.rank], [0.5]], { dtype: 'float32' }); // [2, 1]
g.allReduceSum([a, b]);
const bytes = fromBytes(Uint8Array.from([g.rank, 255 - g.rank]), 'uint8', [2]);
const gathered = g.allGather(bytes); // [W, 2]
const out = {
  rank: g.rank,
  backend: g.backend,
  sums: [a.toNumbers(), b.toNumbers()],
  gathered: gathered.toNumbers(),
  numbers: g.allGatherNumbers([g.rank * 1.5, 2 ** 40 + g.rank]),
  json: g.allGatherJson({ rank: g.rank, text: 'é'.repeat(g.rank + 1) }),
};
for (const t of [a, b, bytes, gathered]) t.dispose();
const leaked = liveTensors() - before;
leaveGroup(g);
process.stdout.write(JSON.stringify({ ...out, leaked }) + '\n');
