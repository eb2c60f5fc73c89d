// Where one training step's time goes, by op family (`mixlora bench --profile`): the forward and
// backward pass and the optimizer step are each recorded by libtorch's RecordFunction
// (src/tensor/profiler.ts); every op's self time is put in one family by its name, and what the wall
// clock saw beyond all ops is host time (JavaScript, N-API, the tensor table, dispatch).
import { profileOps, type OpTime } from '../tensor/profiler.js';

export const FAMILIES = [
  'GEMM',
  'attention',
  'router, gather/scatter',
  'elementwise and reductions',
  'copies, casts and allocation',
  'loss (log-softmax, NLL)',
  'autograd engine',
  'optimizer',
  'host (JavaScript, N-API, dispatch)',
] as const;
export type Family = (typeof FAMILIES)[number];

const GEMM = new Set(['mm', 'addmm', 'bmm', 'baddbmm', 'matmul', 'linear', 'addmv', 'mv', 'dot', '_mkldnn_matmul']);
// The MoE router's ops (softmax, top-k over experts) and the gathers/scatters of rows to experts
// and embeddings; attention uses scaled_dot_product_attention, so softmax here is the router's.
const ROUTING = new Set([
  'topk',
  'sort',
  'argsort',
  'softmax',
  '_softmax',
  '_softmax_backward_data',
  'index_select',
  'index_select_backward',
  'index_add',
  'index_add_',
  'index',
  'index_put_',
  '_index_put_impl_',
  'gather',
  'scatter',
  'scatter_',
  'scatter_add',
  'scatter_add_',
  'nonzero',
  'bincount',
  'one_hot',
  'masked_select',
  'embedding',
  'embedding_backward',
  'embedding_dense_backward',
  'take',
  'cumsum',
  'argmax',
]);
const LOSS = new Set([
  'log_softmax',
  '_log_softmax',
  '_log_softmax_backward_data',
  'nll_loss',
  'nll_loss_forward',
  'nll_loss_backward',
  'nll_loss_nd',
  'nll_loss2d_forward',
  'cross_entropy_loss',
]);
const COPIES = new Set([
  'copy_',
  'to',
  '_to_copy',
  'clone',
  'contiguous',
  'cat',
  '_cat',
  'stack',
  'empty',
  'empty_like',
  'empty_strided',
  'zeros',
  'zeros_like',
  'ones',
  'ones_like',
  'full',
  'fill_',
  'zero_',
  'resize_',
  'detach',
  'detach_',
  'view',
  'reshape',
  '_reshape_alias',
  'narrow',
  'slice',
  'select',
  'transpose',
  't',
  'permute',
  'expand',
  'expand_as',
  'unsqueeze',
  'squeeze',
  'as_strided',
  'split',
  'split_with_sizes',
  'chunk',
  'unbind',
  'alias',
  'lift_fresh',
  'set_',
  'unfold',
  'flatten',
  'repeat',
  'unsafe_view',
  '_unsafe_view',
]);

/** The family of an op recorded in the forward/backward pass (the optimizer's ops are all 'optimizer'). */
export function opFamily(name: string): Family {
  // Autograd nodes ("MmBackward0", custom Functions) and the engine's own records: bookkeeping around
  // the ops they call, which are recorded (and classified) separately.
  if (/Backward\d*$/.test(name) || name.startsWith('autograd::') || name.includes('AccumulateGrad')) {
    return 'autograd engine';
  }
  // oneDNN's linear (native/kernels/linear.cc) is recorded as mkldnn::_linear_pointwise.
  if (name === 'mkldnn::_linear_pointwise') return 'GEMM';
  const op = name.replace(/^aten::/, '');
  if (GEMM.has(op)) return 'GEMM';
  if (op.includes('scaled_dot_product') || op.includes('flash_attention') || op.includes('efficient_attention')) {
    return 'attention';
  }
  if (ROUTING.has(op)) return 'router, gather/scatter';
  if (LOSS.has(op)) return 'loss (log-softmax, NLL)';
  if (COPIES.has(op)) return 'copies, casts and allocation';
  return 'elementwise and reductions';
}

export interface FamilyTime {
  family: Family;
  ms: number;
  /** Of the step's wall time. */
  share: number;
}

export interface StepProfile {
  wallMs: number;
  families: FamilyTime[];
  /** Every op of the forward/backward pass, most self time first. */
  ops: { name: string; family: Family; calls: number; selfMs: number }[];
}

/** Profiles one call of `passes` (forward and backward) and one of `optimizerStep` (all of it 'optimizer'). */
export function profileStep(passes: () => void, optimizerStep: () => void): StepProfile {
  const pass = profileOps(passes);
  const opt = profileOps(optimizerStep);
  const ms = new Map<Family, number>(FAMILIES.map((f) => [f, 0]));
  const add = (f: Family, t: number) => ms.set(f, ms.get(f)! + t);
  const sum = (ops: Map<string, OpTime>) => [...ops.values()].reduce((s, o) => s + o.selfMs, 0);
  for (const [name, o] of pass.ops) add(opFamily(name), o.selfMs);
  add('optimizer', opt.wallMs);
  const wallMs = pass.wallMs + opt.wallMs;
  add('host (JavaScript, N-API, dispatch)', Math.max(0, pass.wallMs - sum(pass.ops)));
  const ops = [...pass.ops]
    .map(([name, o]) => ({ name, family: opFamily(name), calls: o.calls, selfMs: o.selfMs }))
    .sort((a, b) => b.selfMs - a.selfMs);
  return {
    wallMs,
    families: FAMILIES.map((family) => ({ family, ms: ms.get(family)!, share: ms.get(family)! / wallMs })),
    ops,
  };
}
