// PyTorch checkpoints (torch.save's zip format: <name>/data.pkl + <name>/data/<key>), read with the
// restricted unpickler: a dictionary of tensors, nothing executed; and written the same way.
import yauzl from 'yauzl';
import { fromBytes } from '../tensor/create.js';
import { ITEM_SIZE } from '../tensor/dtype.js';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { UserError } from '../util/errors.js';
import { unpickle, type TensorRef } from './pickle.js';
import { pickleTensorDict, type TensorRecord } from './pickle-write.js';
import { storedZip, type ZipEntry } from './zip-write.js';
import { writeFileAtomic } from './atomic.js';

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, autoClose: false, validateEntrySizes: true }, (err, zip) => {
      if (err || !zip)
        reject(
          new UserError(
            `${file}: not a PyTorch zip checkpoint (${err?.message ?? 'unreadable'}); legacy pre-1.6 torch.save files are not supported`,
          ),
        );
      else resolve(zip);
    });
  });
}

function listEntries(zip: yauzl.ZipFile): Promise<Map<string, yauzl.Entry>> {
  return new Promise((resolve, reject) => {
    const entries = new Map<string, yauzl.Entry>();
    zip.on('entry', (e: yauzl.Entry) => {
      entries.set(e.fileName, e);
      zip.readEntry();
    });
    zip.on('end', () => resolve(entries));
    zip.on('error', reject);
    zip.readEntry();
  });
}

function readEntry(zip: yauzl.ZipFile, entry: yauzl.Entry, file: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const fail = (e: Error) => reject(new UserError(`${file}: cannot read ${entry.fileName} (${e.message})`));
    zip.openReadStream(entry, (err, stream) => {
      if (err || !stream) {
        fail(err ?? new Error('no stream'));
        return;
      }
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => resolve(Buffer.concat(chunks)));
      stream.on('error', fail);
    });
  });
}

/** The pickle of a checkpoint is small (names, shapes, storage keys); a bigger one is not a tensor dict. */
const MAX_PICKLE_BYTES = 64 * 2 ** 20;

export interface TorchReadLimits {
  /** Refuse a checkpoint whose storages hold more elements than this in all (e.g. the number of
   * parameters the adapter should have), before anything is inflated. */
  maxElements?: number;
}

interface TensorPlan {
  name: string;
  ref: TensorRef;
  entry: yauzl.Entry;
}

/** Checks every tensor record against its storage (and the storage against the archive) before a
 * byte of tensor data is inflated: a view may not have more elements than its storage (a stride-0
 * view would be a small file that expands to any size), a storage's archive entry must inflate to
 * exactly its declared size, and all storages together must fit `limits.maxElements`. */
function planTensors(
  file: string,
  root: Map<unknown, unknown>,
  entries: Map<string, yauzl.Entry>,
  prefix: string,
  limits: TorchReadLimits,
): TensorPlan[] {
  const plans: TensorPlan[] = [];
  const seen = new Set<string>();
  let total = 0;
  for (const [name, value] of root) {
    const ref = value as TensorRef;
    if (typeof name !== 'string' || !ref || ref.kind !== 'tensor')
      throw new UserError(`${file}: entry ${JSON.stringify(name)} is not a tensor`);
    const { storage } = ref;
    const entry = entries.get(`${prefix}data/${storage.key}`);
    if (!entry) throw new UserError(`${file}: tensor '${name}' points at a missing storage ${storage.key}`);
    const item = ITEM_SIZE[storage.dtype];
    if (entry.uncompressedSize !== storage.numel * item)
      throw new UserError(
        `${file}: storage ${storage.key} of tensor '${name}' declares ${storage.numel} ${storage.dtype} elements (${storage.numel * item} bytes) but its archive entry holds ${entry.uncompressedSize} bytes`,
      );
    if (!seen.has(storage.key)) {
      seen.add(storage.key);
      total += storage.numel;
      if (limits.maxElements !== undefined && total > limits.maxElements)
        throw new UserError(
          `${file}: its storages hold more than ${limits.maxElements} elements, more than the adapter's parameters (tensor '${name}')`,
        );
    }
    if (
      !Array.isArray(ref.shape) ||
      !Array.isArray(ref.stride) ||
      ref.shape.length !== ref.stride.length ||
      !Number.isSafeInteger(ref.offset) ||
      ref.offset < 0
    )
      throw new UserError(`${file}: tensor '${name}' has a malformed shape, stride or offset`);
    // The view must stay inside its storage and may not repeat elements to exceed its size.
    let last = ref.offset;
    let numel = 1;
    for (let d = 0; d < ref.shape.length; d++) {
      const [n, s] = [ref.shape[d]!, ref.stride[d]!];
      if (!Number.isSafeInteger(n) || !Number.isSafeInteger(s) || n < 0 || s < 0)
        throw new UserError(`${file}: tensor '${name}' has a bad shape or stride`);
      numel *= n;
      if (n > 0) last += (n - 1) * s;
    }
    if (numel > storage.numel)
      throw new UserError(
        `${file}: tensor '${name}' of shape [${ref.shape.join(', ')}] has more elements than its storage (${storage.numel}): refusing to expand it`,
      );
    if (numel > 0 && last >= storage.numel)
      throw new UserError(`${file}: tensor '${name}' reaches outside its storage`);
    plans.push({ name, ref, entry });
  }
  return plans;
}

/** Names and shapes of a torch.save()d dictionary's tensors, without reading tensor data. */
export async function readTorchShapes(file: string): Promise<Map<string, number[]>> {
  const zip = await openZip(file);
  try {
    const { root, entries, prefix } = await readRoot(zip, file);
    return new Map(planTensors(file, root, entries, prefix, {}).map((p) => [p.name, [...p.ref.shape]]));
  } finally {
    zip.close();
  }
}

async function readRoot(
  zip: yauzl.ZipFile,
  file: string,
): Promise<{ root: Map<unknown, unknown>; entries: Map<string, yauzl.Entry>; prefix: string }> {
  const entries = await listEntries(zip).catch((e: Error) => {
    throw new UserError(`${file}: not a valid zip archive (${e.message})`);
  });
  const pklName = [...entries.keys()].find((n) => n.endsWith('/data.pkl') || n === 'data.pkl');
  if (!pklName) throw new UserError(`${file}: no data.pkl inside (not a torch.save checkpoint)`);
  const pkl = entries.get(pklName)!;
  if (pkl.uncompressedSize > MAX_PICKLE_BYTES)
    throw new UserError(`${file}: ${pklName} is ${pkl.uncompressedSize} bytes, too large for a dictionary of tensors`);
  const prefix = pklName.slice(0, pklName.length - 'data.pkl'.length);
  const root = unpickle(await readEntry(zip, pkl, file), file);
  if (!(root instanceof Map)) throw new UserError(`${file}: the checkpoint is not a dictionary of tensors`);
  return { root, entries, prefix };
}

/** The tensors of a torch.save()d dictionary, each converted to a contiguous CPU tensor. Everything
 * is checked (planTensors) before any storage is inflated. */
export async function readTorchCheckpoint(file: string, limits: TorchReadLimits = {}): Promise<Map<string, Tensor>> {
  const zip = await openZip(file);
  try {
    const { root, entries, prefix } = await readRoot(zip, file);
    const plans = planTensors(file, root, entries, prefix, limits);
    const out = new Map<string, Tensor>();
    const storages = new Map<string, Buffer>();
    try {
      for (const { name, ref, entry } of plans) {
        const { storage } = ref;
        let bytes = storages.get(storage.key);
        if (!bytes) {
          bytes = await readEntry(zip, entry, file);
          storages.set(storage.key, bytes);
        }
        const item = ITEM_SIZE[storage.dtype];
        if (bytes.length !== storage.numel * item)
          throw new UserError(
            `${file}: storage ${storage.key} holds ${bytes.length} bytes, not the ${storage.numel * item} it declares`,
          );
        const t = tidy(() =>
          noGrad(() => {
            const flat = fromBytes(
              new Uint8Array(bytes!.buffer, bytes!.byteOffset, storage.numel * item),
              storage.dtype,
              [storage.numel],
            );
            return flat.asStrided(ref.shape, ref.stride, ref.offset).contiguous().clone().keep();
          }),
        );
        out.set(name, t);
      }
    } catch (e) {
      for (const t of out.values()) t.dispose();
      throw e;
    }
    return out;
  } finally {
    zip.close();
  }
}

/** Writes `tensors` (any device, any layout) as torch.save({name: tensor}) would, atomically: a zip
 * holding archive/data.pkl, archive/byteorder, archive/data/<n> (one storage per tensor) and
 * archive/version. */
export function writeTorchCheckpoint(file: string, tensors: Map<string, Tensor>): void {
  const records: [string, TensorRecord][] = [];
  const storages: ZipEntry[] = [];
  [...tensors].forEach(([name, t], i) => {
    const key = String(i);
    records.push([name, { key, dtype: t.dtype, shape: [...t.shape] }]);
    const data = tidy(() => noGrad(() => t.detach().to({ device: 'cpu' }).contiguous().toTypedArray()));
    storages.push({ name: `archive/data/${key}`, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
  });
  const zip = storedZip(
    [
      { name: 'archive/data.pkl', data: pickleTensorDict(records) },
      { name: 'archive/byteorder', data: Buffer.from('little') },
      ...storages,
      { name: 'archive/version', data: Buffer.from('3\n') },
    ],
    file,
  );
  writeFileAtomic(file, zip);
}
