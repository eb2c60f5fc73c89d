// Grad mode and multi-root backward.
import { native } from './native.js';
import type { Tensor } from './tensor.js';

/** Runs fn with gradient recording off (torch.no_grad()). */
export function noGrad<T>(fn: () => T): T {
  const prev = native.isGradEnabled();
  native.setGradEnabled(false);
  try {
    return fn();
  } finally {
    native.setGradEnabled(prev);
  }
}

export function isGradEnabled(): boolean {
  return native.isGradEnabled();
}

/** Back-propagates from several outputs at once, each with its upstream gradient (null for scalars). */
export function backward(outputs: Tensor[], grads: (Tensor | null)[], retainGraph = false): void {
  native.backward(
    outputs.map((t) => t.id),
    grads.map((g) => (g ? g.id : null)),
    retainGraph,
  );
}

/** Drops the gradients of these tensors (zero_grad with set_to_none). */
export function zeroGrad(params: Tensor[]): void {
  native.zeroGrad(params.map((p) => p.id));
}
