// llama2.c tokenizer files (tok*.bin): int32 max token length, then per token {float32 score,
// int32 length, bytes}. Ids 0/1/2 are unk/bos/eos; byte tokens <0x00>..<0xFF>; spaces stored as ' '.
import { UserError } from '../util/errors.js';
import { readBytes } from '../util/files.js';
import type { Piece } from './spm.js';

export function readLlama2cTokenizer(file: string, vocabSize: number): Piece[] {
  const buf = readBytes(file);
  const bad = (msg: string): never => {
    throw new UserError(`${file}: not a llama2.c tokenizer: ${msg}`);
  };
  if (buf.length < 4) bad('file too short');
  const maxLen = buf.readInt32LE(0);
  if (maxLen <= 0 || maxLen > 1024) bad(`max token length ${maxLen}`);
  const pieces: Piece[] = [];
  let off = 4;
  for (let i = 0; i < vocabSize; i++) {
    if (off + 8 > buf.length) bad(`ends after ${i} of ${vocabSize} tokens (does the model's vocabulary match?)`);
    const score = buf.readFloatLE(off);
    const len = buf.readInt32LE(off + 4);
    off += 8;
    if (len < 0 || len > maxLen || off + len > buf.length) bad(`token ${i} has invalid length ${len}`);
    let text = buf.toString('utf8', off, off + len);
    off += len;
    let type: Piece['type'] = 'normal';
    if (i === 0) {
      type = 'unknown';
      text = '<unk>';
    } else if (i === 1) {
      type = 'control';
      text = '<s>';
    } else if (i === 2) {
      type = 'control';
      text = '</s>';
    } else if (/^<0x[0-9A-F]{2}>$/.test(text)) type = 'byte';
    pieces.push({ piece: type === 'normal' ? text.replaceAll(' ', '▁') : text, score, type });
  }
  if (off !== buf.length)
    bad(`${buf.length - off} bytes left over after ${vocabSize} tokens (does the model's vocabulary match?)`);
  return pieces;
}
