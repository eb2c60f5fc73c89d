// Gradient check: autograd's gradients against central finite differences, in float64.
import { assertClose } from './assert.js';
import { noGrad, tensor, tidy, type Tensor } from '../../src/tensor/index.js';

/** f maps the inputs to a scalar. Inputs are float64 leaves; every element is perturbed by ±eps. */
export function gradcheck(
  name: string,
  f: (xs: Tensor[]) => Tensor,
  inputs: Tensor[],
  opts: { eps?: number; atol?: number; rtol?: number } = {},
): void {
  const eps = opts.eps ?? 1e-6;
  tidy(() => {
    const leaves = inputs.map((x) => x.detach().requiresGrad_());
    f(leaves).backward();
    const analytic = leaves.map((l) => l.grad!.toNumbers());
    inputs.forEach((x, k) => {
      const base = Array.from(x.toFloat64Array());
      const numeric: number[] = [];
      for (let i = 0; i < base.length; i++) {
        const at = (delta: number) =>
          noGrad(() =>
            tidy(() => {
              const v = base.slice();
              v[i] = v[i]! + delta;
              const xs = inputs.map((y, j) => (j === k ? tensor(Float64Array.from(v), { shape: [...x.shape] }) : y));
              return f(xs).item();
            }),
          );
        numeric.push((at(eps) - at(-eps)) / (2 * eps));
      }
      assertClose(analytic[k]!, numeric, {
        atol: opts.atol ?? 1e-7,
        rtol: opts.rtol ?? 1e-5,
        what: `${name}: d/d input ${k}`,
      });
    });
  });
}
