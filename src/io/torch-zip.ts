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

function readEntry(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    zip.openReadStream(entry, (err, stream) => {
      if (err || !stream) {
        reject(err ?? new Error('no stream'));
        return;
      }
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => resolve(Buffer.concat(chunks)));
      stream.on('error', reject);
    });
  });
}

/** The tensors of a torch.save()d dictionary, each converted to a contiguous CPU tensor. */
export async function readTorchCheckpoint(file: string): Promise<Map<string, Tensor>> {
  const zip = await openZip(file);
  try {
    const entries = await listEntries(zip);
    const pklName = [...entries.keys()].find((n) => n.endsWith('/data.pkl') || n === 'data.pkl');
    if (!pklName) throw new UserError(`${file}: no data.pkl inside (not a torch.save checkpoint)`);
    const prefix = pklName.slice(0, pklName.length - 'data.pkl'.length);
    const root = unpickle(await readEntry(zip, entries.get(pklName)!), file);
    if (!(root instanceof Map)) throw new UserError(`${file}: the checkpoint is not a dictionary of tensors`);
    const out = new Map<string, Tensor>();
    const storages = new Map<string, Buffer>();
    try {
      for (const [name, value] of root) {
        const ref = value as TensorRef;
        if (typeof name !== 'string' || !ref || ref.kind !== 'tensor')
          throw new UserError(`${file}: entry ${JSON.stringify(name)} is not a tensor`);
        const { storage } = ref;
        let bytes = storages.get(storage.key);
        if (!bytes) {
          const entry = entries.get(`${prefix}data/${storage.key}`);
          if (!entry) throw new UserError(`${file}: tensor '${name}' points at a missing storage ${storage.key}`);
          bytes = await readEntry(zip, entry);
          storages.set(storage.key, bytes);
        }
        const item = ITEM_SIZE[storage.dtype];
        if (bytes.length < storage.numel * item)
          throw new UserError(
            `${file}: storage ${storage.key} holds ${bytes.length} bytes, fewer than ${storage.numel} elements`,
          );
        // The view must stay inside its storage.
        let last = ref.offset;
        for (let d = 0; d < ref.shape.length; d++) {
          if (!(ref.shape[d]! >= 0) || !(ref.stride[d]! >= 0))
            throw new UserError(`${file}: tensor '${name}' has a bad shape or stride`);
          if (ref.shape[d]! > 0) last += (ref.shape[d]! - 1) * ref.stride[d]!;
        }
        const numel = ref.shape.reduce((a, b) => a * b, 1);
        if (numel > 0 && (ref.offset < 0 || last >= storage.numel))
          throw new UserError(`${file}: tensor '${name}' reaches outside its storage`);
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
