// Op-level profile from libtorch's RecordFunction (native/bindings/profile.cc): for each operator name that ran
// inside `fn` (forward ops, autograd nodes, the ops they call), its calls and self time, so that the
// times add up to the time spent inside libtorch without counting nested ops twice.
import { native } from './native.js';

export interface OpTime {
  calls: number;
  /** Time in the op itself, without the ops it called. */
  selfMs: number;
}

export interface OpProfile<R> {
  result: R;
  /** Wall-clock time of `fn`: ops plus everything outside them (JavaScript, N-API, dispatch). */
  wallMs: number;
  ops: Map<string, OpTime>;
}

/** Runs `fn` once with op recording on. Recording costs about a microsecond per op. */
export function profileOps<R>(fn: () => R): OpProfile<R> {
  native.profileStart();
  const t0 = process.hrtime.bigint();
  let result: R;
  try {
    result = fn();
  } catch (e) {
    native.profileStop();
    throw e;
  }
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const ops = new Map<string, OpTime>();
  for (const [name, [calls, selfMs]] of Object.entries(native.profileStop())) ops.set(name, { calls, selfMs });
  return { result, wallMs, ops };
}
