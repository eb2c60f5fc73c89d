// lowRankShrink and lowRankExpand (native/kernels/low_rank_rows.cc), and lowRankByMember, the two in turn: each
// slot through its own member's A and B, weighted, added
// into its output row, equals the per-slot composition w · s · B (A x[inRow]) summed with index_add
// (1e-5 of the largest magnitude), for members of different ranks, members without modules, slots that
// share an output row; with base rows and DoRA's column scales, bit for bit the composition (base + delta)
// · scale; bad indices are refused by name. The same checks run again in a child process with
// MIXLORA_GEMM=aten, where the op takes its ATen path instead of the vector kernel.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { assertClose } from '../helpers/assert.js';
import * as T from '../../src/tensor/index.js';

const RANKS = [3, 0, 16, 1, 5]; // member 1 has no modules
const IN = 37;
const OUT = 21;

function members(): T.LowRankMembers {
  return {
    A: RANKS.map((r) => (r ? T.randn([r, IN]) : null)),
    B: RANKS.map((r) => (r ? T.randn([OUT, r]) : null)),
    scaling: RANKS.map((_, g) => 0.5 + g),
  };
}

/** The composition, slot by slot. */
function reference(
  x: T.Tensor,
  member: number[],
  m: T.LowRankMembers,
  inRows: number[],
  outRows: number[],
  weights: number[],
  outCount: number,
): T.Tensor {
  let y = T.zeros([outCount, OUT]);
  member.forEach((g, i) => {
    const A = m.A[g];
    if (!A) return;
    const d = T.linear(T.linear(x.narrow(0, inRows[i]!, 1), A), m.B[g]!).mul(m.scaling[g]! * weights[i]!); // [1, OUT]
    y = y.indexAdd(0, T.tensor([outRows[i]!], { dtype: 'int64' }), d);
  });
  return y;
}

test('lowRankByMember equals the per-slot composition', () =>
  T.noGrad(() =>
    T.tidy(() => {
      T.manualSeed(5);
      const m = members();
      const x = T.randn([6, IN]); // [n, in]
      // 40 slots (more than one 16-row chunk for member 2), every member, rows shared by several slots.
      const member = Array.from({ length: 40 }, (_, i) => (i < 20 ? 2 : i % RANKS.length));
      const inRows = member.map((_, i) => (i * 5) % 6);
      const outRows = member.map((_, i) => (i * 3) % 4);
      const weights = member.map((_, i) => 0.25 + (i % 3));
      const idx = (v: number[]) => T.tensor(v, { dtype: 'int64' });
      const got = T.lowRankByMember(x, idx(member), m, {
        inRows: idx(inRows),
        outRows: idx(outRows),
        weights: T.tensor(weights),
        outCount: 4,
      });
      const want = reference(x, member, m, inRows, outRows, weights, 4);
      assertClose(got, want, { atol: 1e-5 * want.abs().amax().item(), what: 'weighted, shared output rows' });
      // Defaults: slot i reads row i and writes row i, weight 1.
      const plain = [0, 1, 2, 3, 4, 0];
      const same = plain.map((_, i) => i);
      const want2 = reference(
        x,
        plain,
        m,
        same,
        same,
        same.map(() => 1),
        6,
      );
      const got2 = T.lowRankByMember(x, idx(plain), m);
      assertClose(got2, want2, { atol: 1e-5 * want2.abs().amax().item(), what: 'defaults' });
      assert.deepEqual(got2.narrow(0, 1, 1).toFloat32Array(), new Float32Array(OUT), 'a member without modules adds 0');
    }),
  ));

test("lowRankByMember with base rows and column scales equals base + delta, times the member's scales, composed", () =>
  T.noGrad(() =>
    T.tidy(() => {
      T.manualSeed(6);
      const m = members();
      const x = T.randn([6, IN]); // [n, in]
      const member = Array.from({ length: 24 }, (_, i) => (i < 18 ? 2 : i % RANKS.length));
      const inRows = member.map((_, i) => (i * 5) % 6);
      const idx = (v: number[]) => T.tensor(v, { dtype: 'int64' });
      const base = T.randn([5, OUT]); // [nb, out]
      const baseRows = member.map((_, i) => (i * 2) % 5);
      const scales = T.rand([RANKS.length, OUT]).add(0.5); // [G, out]
      const delta = T.lowRankByMember(x, idx(member), m, { inRows: idx(inRows) }); // [m, out]
      const rows = base.indexSelect(0, idx(baseRows)); // [m, out]
      const cases = [
        ['base rows', { baseRows: idx(baseRows) }, rows.add(delta)],
        [
          'base rows and scales',
          { baseRows: idx(baseRows), columnScales: scales },
          rows.add(delta).mul(scales.indexSelect(0, idx(member))),
        ],
      ] as const;
      for (const [what, o, want] of cases) {
        const got = T.lowRankByMember(x, idx(member), m, { inRows: idx(inRows), base, ...o }); // [m, out]
        assert.deepEqual(got.toFloat32Array(), want.toFloat32Array(), what);
      }
      // A base of one row per slot, read in place (baseRows omitted).
      const own = T.randn([24, OUT]); // [m, out]
      const got = T.lowRankByMember(x, idx(member), m, { inRows: idx(inRows), base: own, columnScales: scales });
      assert.deepEqual(
        got.toFloat32Array(),
        own
          .add(delta)
          .mul(scales.indexSelect(0, idx(member)))
          .toFloat32Array(),
        'own rows',
      );
      // Refused by name.
      const two = { inRows: idx([0, 1]) };
      assert.throws(() => T.lowRankByMember(x, idx([0, 2]), m, { ...two, base, baseRows: idx([0, 5]) }), /baseRows/);
      assert.throws(
        () => T.lowRankByMember(x, idx([0, 2]), m, { ...two, base, outRows: idx([0, 1]), outCount: 2 }),
        /base needs/,
      );
      assert.throws(() => T.lowRankByMember(x, idx([0, 2]), m, { ...two, base: T.randn([2, OUT + 1]) }), /base must/);
      assert.throws(
        () => T.lowRankByMember(x, idx([0, 2]), m, { ...two, base: T.randn([2, OUT]), columnScales: T.ones([2, OUT]) }),
        /columnScales/,
      );
      assert.throws(
        () => T.lowRankByMember(x, idx([0, 9]), m, { ...two, base: T.randn([2, OUT]), columnScales: scales }),
        /columnScales/,
      );
      assert.throws(() => T.lowRankByMember(x, idx([0, 2]), m, { ...two, columnScales: scales }), /need base/);
    }),
  ));

test('lowRankByMember refuses indices out of range and mismatched modules', () =>
  T.noGrad(() =>
    T.tidy(() => {
      const m = members();
      const x = T.randn([2, IN]);
      const idx = (v: number[]) => T.tensor(v, { dtype: 'int64' });
      assert.throws(() => T.lowRankByMember(x, idx([0, 2]), m, { inRows: idx([0, 2]), outCount: 2 }), /inRows/);
      assert.throws(() => T.lowRankByMember(x, idx([0, 2]), m, { outRows: idx([0, -1]), outCount: 2 }), /outRows/);
      assert.throws(() => T.lowRankByMember(x, idx([0]), m), /members must have x's rows/);
      const wrong = { ...m, B: m.B.map((b) => (b ? T.randn([OUT + 1, b.size(1)]) : null)).slice(0, 1) };
      assert.throws(() => T.lowRankByMember(x, idx([0, 0]), wrong), /differ in length/);
    }),
  ));

test(
  'lowRankByMember through ATen (MIXLORA_GEMM=aten) passes the same checks',
  { skip: !!process.env.MIXLORA_GEMM },
  () => {
    execFileSync(process.execPath, ['--test', fileURLToPath(import.meta.url)], {
      env: { ...process.env, MIXLORA_GEMM: 'aten' },
      stdio: 'pipe',
    });
  },
);

test("lowRankShrink alone: each slot's row is w · s · A x, zero past its member's rank; lowRankExpand checks h", () =>
  T.noGrad(() =>
    T.tidy(() => {
      T.manualSeed(7);
      const m = members();
      const x = T.randn([6, IN]); // [n, in]
      const member = [2, 0, 1, 4, 3, 2];
      const weights = [1, 0.5, 2, 3, 0.25, 1.5];
      const idx = (v: number[]) => T.tensor(v, { dtype: 'int64' });
      const h = T.lowRankShrink(x, idx(member), m, { weights: T.tensor(weights) }); // [6, R]
      assert.deepEqual(h.shape, [6, Math.max(...RANKS)]);
      member.forEach((g, i) => {
        const row = h.narrow(0, i, 1); // [1, R]
        const r = RANKS[g]!;
        if (r > 0) {
          const want = T.linear(x.narrow(0, i, 1), m.A[g]!).mul(m.scaling[g]! * weights[i]!); // [1, r]
          assertClose(row.narrow(1, 0, r), want, { atol: 1e-5 * want.abs().amax().item(), what: `slot ${i}` });
        }
        assert.equal(
          row
            .narrow(1, r, row.size(1) - r)
            .abs()
            .sum()
            .item(),
          0,
          `slot ${i}: zeros past rank ${r}`,
        );
      });
      assert.throws(() => T.lowRankExpand(h.narrow(1, 0, 5).contiguous(), idx(member), m), /r above h's width/);
      assert.throws(() => T.lowRankExpand(h, idx([0, 2]), m), /a row per member entry/);
      assert.throws(() => T.lowRankShrink(x, idx(member), m, { inRows: idx([0, 1, 2, 3, 4, 6]) }), /inRows index/);
    }),
  ));
