// A zip archive of stored (uncompressed) entries, written the way PyTorch's writer
// (caffe2/serialize/inline_container.cc) does: each entry's data starts on a 64-byte boundary (the
// padding goes in the local header's extra field, id "FB"), so torch.load(mmap=True) can map the
// storages in place. Zip layout per PKWARE's APPNOTE.TXT (sections 4.3.7, 4.3.12, 4.3.16); no zip64,
// so the archive is limited to 4 GiB (far above any adapter).
import zlib from 'node:zlib';
import { UserError } from '../util/errors.js';

const ALIGN = 64;
const LIMIT = 0xffffffff;

export interface ZipEntry {
  name: string;
  data: Uint8Array;
}

/** The archive's bytes. */
export function storedZip(entries: ZipEntry[], where: string): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const crc = zlib.crc32(e.data);
    const headerEnd = offset + 30 + name.length;
    // Extra field: id "FB" (0x4246), size, zeros, long enough that the data lands on ALIGN.
    const pad = (ALIGN - ((headerEnd + 4) % ALIGN)) % ALIGN;
    const extra = Buffer.alloc(4 + pad);
    extra.writeUInt16LE(0x4246, 0);
    extra.writeUInt16LE(pad, 2);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed: 2.0
    local.writeUInt16LE(0, 6); // flags
    local.writeUInt16LE(0, 8); // method: stored
    local.writeUInt16LE(0, 10); // time
    local.writeUInt16LE(0x21, 12); // date: 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(e.data.length, 18);
    local.writeUInt32LE(e.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(extra.length, 28);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4); // made by
    cd.writeUInt16LE(20, 6); // needed
    cd.writeUInt16LE(0, 8);
    cd.writeUInt16LE(0, 10);
    cd.writeUInt16LE(0, 12);
    cd.writeUInt16LE(0x21, 14);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(e.data.length, 20);
    cd.writeUInt32LE(e.data.length, 24);
    cd.writeUInt16LE(name.length, 28);
    // extra length, comment length, disk, internal and external attributes: 0
    cd.writeUInt32LE(offset, 42);
    central.push(cd, name);
    parts.push(local, name, extra, Buffer.from(e.data.buffer, e.data.byteOffset, e.data.length));
    offset += 30 + name.length + extra.length + e.data.length;
    if (offset > LIMIT) throw new UserError(`${where}: over 4 GiB, too large for this zip writer`);
  }
  const cdBytes = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cdBytes.length, 12);
  eocd.writeUInt32LE(offset, 16);
  if (entries.length > 0xffff || offset + cdBytes.length > LIMIT)
    throw new UserError(`${where}: too many entries or too large for this zip writer`);
  return Buffer.concat([...parts, cdBytes, eocd]);
}
