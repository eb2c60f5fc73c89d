// SentencePiece model files (tokenizer.model, a protobuf ModelProto) read without the sentencepiece
// library: the pieces with scores and types, and the special ids. BPE models only (LLaMA 1/2, Mistral).
import { UserError } from '../util/errors.js';
import { readBytes } from '../util/files.js';
import type { Piece, PieceType, SpmSpecials } from './spm.js';

class ProtoReader {
  pos = 0;
  constructor(
    readonly buf: Uint8Array,
    readonly file: string,
  ) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.buf.length) throw new UserError(`${this.file}: truncated protobuf`);
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return result;
      shift += 7;
      if (shift > 63) throw new UserError(`${this.file}: malformed protobuf varint`);
    }
  }
  bytes(): Uint8Array {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw new UserError(`${this.file}: truncated protobuf field`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  /** Each field as [number, wire type, value]; value is a number (varint/fixed) or bytes. */
  *fields(): Generator<[number, number, number | Uint8Array]> {
    while (!this.done) {
      const key = this.varint();
      const field = Math.floor(key / 8);
      const wire = key & 7;
      if (wire === 0) yield [field, wire, this.varint()];
      else if (wire === 2) yield [field, wire, this.bytes()];
      else if (wire === 5) {
        const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
        this.pos += 4;
        yield [field, wire, v];
      } else if (wire === 1) {
        this.pos += 8;
        yield [field, wire, 0];
      } else throw new UserError(`${this.file}: unsupported protobuf wire type ${wire}`);
    }
  }
}

const TYPES: Record<number, PieceType> = { 1: 'normal', 2: 'unknown', 3: 'control', 4: 'user', 5: 'unused', 6: 'byte' };

export function readSentencePieceModel(file: string): { pieces: Piece[]; specials: SpmSpecials } {
  const buf = readBytes(file);
  const pieces: Piece[] = [];
  let modelType = 1;
  let byteFallback = false;
  const specials: SpmSpecials = { unk: 0, bos: 1, eos: 2 };
  const dec = new TextDecoder('utf-8', { fatal: true });
  for (const [field, , value] of new ProtoReader(buf, file).fields()) {
    if (field === 1 && value instanceof Uint8Array) {
      const p: Piece = { piece: '', score: 0, type: 'normal' };
      for (const [f, , v] of new ProtoReader(value, file).fields()) {
        if (f === 1 && v instanceof Uint8Array) p.piece = dec.decode(v);
        else if (f === 2 && typeof v === 'number') p.score = v;
        else if (f === 3 && typeof v === 'number') p.type = TYPES[v] ?? 'normal';
      }
      pieces.push(p);
    } else if (field === 2 && value instanceof Uint8Array) {
      for (const [f, , v] of new ProtoReader(value, file).fields()) {
        if (typeof v !== 'number') continue;
        if (f === 3) modelType = v;
        else if (f === 35) byteFallback = v !== 0;
        else if (f === 40) specials.unk = v;
        else if (f === 41) specials.bos = v;
        else if (f === 42) specials.eos = v;
      }
    }
  }
  if (pieces.length === 0) throw new UserError(`${file}: not a SentencePiece model (no pieces)`);
  if (modelType !== 2)
    throw new UserError(
      `${file}: SentencePiece model type ${modelType === 1 ? 'unigram' : modelType} is not supported (BPE only; provide tokenizer.json)`,
    );
  if (!byteFallback)
    throw new UserError(`${file}: SentencePiece BPE without byte fallback is not supported (provide tokenizer.json)`);
  for (const k of ['unk', 'bos', 'eos'] as const) {
    if (!(specials[k] >= 0 && specials[k] < pieces.length))
      throw new UserError(`${file}: ${k}_id ${specials[k]} is outside the vocabulary`);
  }
  return { pieces, specials };
}
