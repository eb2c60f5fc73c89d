// Prefix-cache keys of full KV blocks: block k's hash covers the adapter's identity and every token up to
// the block's end, chained (hash of block k-1, then block k's tokens), as vLLM's automatic prefix caching
// does. The identity is of the adapter object loaded (not its name): an adapter unloaded and loaded again
// under the same name never finds its predecessor's blocks (vLLM #42125 was that bug).
import { createHash } from 'node:crypto';
import { BLOCK_SIZE } from './block-pool.js';

/** Extends `hashes` (of the first hashes.length full blocks of `tokens`) to every full block of `tokens`. */
export function extendBlockHashes(identity: string, tokens: readonly number[], hashes: string[]): void {
  for (let k = hashes.length; (k + 1) * BLOCK_SIZE <= tokens.length; k++) {
    const h = createHash('sha256');
    h.update(k === 0 ? `mixlora-kv:${identity}` : hashes[k - 1]!);
    h.update(Int32Array.from(tokens.slice(k * BLOCK_SIZE, (k + 1) * BLOCK_SIZE)));
    hashes.push(h.digest('base64'));
  }
}
