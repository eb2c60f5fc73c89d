// Ownership of native tensors. JavaScript's GC does not see libtorch memory, so every tensor has an
// explicit owner: a scope (tidy), a caller who keeps it, or finally the FinalizationRegistry net.
import { native } from './native.js';
import { Tensor } from './tensor.js';

const scopes: Tensor[][] = [];

// Safety net only: frees tensors that became unreachable without dispose(). Ids are never reused, so
// a late callback for an id that was already freed does nothing. Tensors owned by a scope are not
// registered (the scope frees them for certain, and registering costs ~0.4 µs per op); they are
// registered when they leave every scope: returned to top level, or kept.
const registry = new FinalizationRegistry<number>((id) => {
  native.free(id);
});

function guard(t: Tensor): void {
  if (!t.isDisposed) registry.register(t, t.id);
}

/** Called by the Tensor constructor: the innermost scope owns the new tensor, or the safety net. */
export function track(t: Tensor, id: number): void {
  const top = scopes[scopes.length - 1];
  if (top !== undefined) top.push(t);
  else registry.register(t, id);
}

/** Runs fn; every tensor created inside is disposed at the end except those returned (found in the
 * returned value, arrays and plain objects included) or kept with keep(). Returned tensors pass to
 * the enclosing scope. Synchronous functions only. */
export function tidy<T>(fn: () => T): T {
  scopes.push([]);
  let result: T | undefined;
  let ok = false;
  try {
    result = fn();
    if (result instanceof Promise)
      throw new TypeError('tidy() takes a synchronous function; use scopes inside async code');
    ok = true;
    return result;
  } finally {
    const created = scopes.pop()!;
    const returned = ok ? collectTensors(result) : new Set<Tensor>();
    const free: number[] = [];
    for (const t of created) {
      if (t.isDisposed || t.isKept || returned.has(t)) continue;
      free.push(t.markDisposed());
    }
    if (free.length) native.freeMany(free);
    const parent = scopes[scopes.length - 1];
    for (const t of returned) {
      if (t.isKept || t.isDisposed) continue;
      if (parent !== undefined) parent.push(t);
      else guard(t);
    }
  }
}

/** Exempts tensors from every enclosing scope; the caller now owns them and must dispose(). */
export function keep<T extends Tensor | Tensor[]>(t: T): T {
  for (const x of Array.isArray(t) ? t : [t]) markKept(x);
  return t;
}

/** @internal Tensor.keep(): leaves scope ownership, so the safety net takes it (once). */
export function markKept(t: Tensor): void {
  if (t.isKept) return;
  t.markKept();
  if (scopes.length > 0) guard(t);
}

export function dispose(value: unknown): void {
  for (const t of collectTensors(value)) t.dispose();
}

/** Every Tensor reachable through arrays, Maps and plain objects. */
export function collectTensors(value: unknown, into = new Set<Tensor>()): Set<Tensor> {
  if (value instanceof Tensor) into.add(value);
  else if (Array.isArray(value)) for (const v of value) collectTensors(v, into);
  else if (value instanceof Map) for (const v of value.values()) collectTensors(v, into);
  else if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, into);
  }
  return into;
}

/** Native tensors alive in this process (all owners). Tests use it to prove nothing leaks. */
export function liveTensors(): number {
  return native.liveCount();
}

/** Bytes of CPU tensor storage reported to V8 as external memory. */
export function externalBytes(): number {
  return native.externalBytes();
}
