// llama2.c checkpoints (legacy format): a header of 7 int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a positive vocab_size means the classifier shares the embedding),
// then float32 tensors: embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
// freq_cis_real, freq_cis_imag[, wcls]. Loaded into Hugging Face layout: llama2.c rotates adjacent
// pairs, so the rows of wq/wk are permuted per head to the rotate_half order.
import fs from 'node:fs';
import { fromFile } from '../tensor/create.js';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import type { DType } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { UserError } from '../util/errors.js';
import { allFinite } from '../tensor/checks.js';
import { openForRead } from '../util/files.js';
import type { ModelConfig } from './config.js';
import { llamaFamilyFields } from './family-config.js';
import { projectionPrefix, structureWeights, weightSpecs, type ModelWeights } from './weights.js';

const HEADER_BYTES = 28;

export function readLlama2cConfig(file: string): { config: ModelConfig; sharedClassifier: boolean } {
  const fd = openForRead(file);
  try {
    const size = fs.fstatSync(fd).size;
    const head = Buffer.alloc(HEADER_BYTES);
    if (size < HEADER_BYTES || fs.readSync(fd, head, 0, HEADER_BYTES, 0) !== HEADER_BYTES)
      throw new UserError(`${file}: too short for a llama2.c checkpoint`);
    const [dim, hidden, layers, heads, kvHeads, vocabSigned, seqLen] = Array.from({ length: 7 }, (_, i) =>
      head.readInt32LE(4 * i),
    ) as number[];
    const vocab = Math.abs(vocabSigned!);
    const ok =
      [dim, hidden, layers, heads, kvHeads, vocab, seqLen].every((v) => v! > 0) &&
      dim! % heads! === 0 &&
      heads! % kvHeads! === 0 &&
      (dim! / heads!) % 2 === 0;
    if (!ok)
      throw new UserError(
        `${file}: not a llama2.c checkpoint (header ${[dim, hidden, layers, heads, kvHeads, vocabSigned, seqLen].join(', ')})`,
      );
    const config: ModelConfig = {
      ...llamaFamilyFields(dim! / heads!),
      architecture: 'llama',
      vocabSize: vocab,
      hiddenSize: dim!,
      intermediateSize: hidden!,
      numLayers: layers!,
      numHeads: heads!,
      numKvHeads: kvHeads!,
      headDim: dim! / heads!,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScaling: null,
      maxPositionEmbeddings: seqLen!,
      tieWordEmbeddings: vocabSigned! > 0,
      qkvBias: false,
      oBias: false,
      mlpBias: false,
      slidingWindow: null,
      bosTokenId: 1,
      eosTokenIds: [2],
      padTokenId: null,
    };
    const expected = HEADER_BYTES + 4 * tensorLayout(config).end;
    if (size !== expected)
      throw new UserError(
        `${file}: ${size} bytes, but its header describes a llama2.c checkpoint of ${expected} bytes`,
      );
    return { config, sharedClassifier: config.tieWordEmbeddings };
  } finally {
    fs.closeSync(fd);
  }
}

/** Float offsets (from the end of the header) of each stacked tensor. */
function tensorLayout(c: ModelConfig) {
  const { hiddenSize: dim, intermediateSize: hid, numLayers: L, vocabSize: V } = c;
  const kvDim = c.numKvHeads * c.headDim;
  const sizes: [string, number][] = [
    ['embed', V * dim],
    ['rms_att', L * dim],
    ['wq', L * dim * dim],
    ['wk', L * kvDim * dim],
    ['wv', L * kvDim * dim],
    ['wo', L * dim * dim],
    ['rms_ffn', L * dim],
    ['w1', L * hid * dim],
    ['w2', L * dim * hid],
    ['w3', L * hid * dim],
    ['rms_final', dim],
    ['freq_real', c.maxPositionEmbeddings * (c.headDim / 2)],
    ['freq_imag', c.maxPositionEmbeddings * (c.headDim / 2)],
  ];
  if (!c.tieWordEmbeddings) sizes.push(['wcls', V * dim]);
  const at: Record<string, number> = {};
  let off = 0;
  for (const [name, n] of sizes) {
    at[name] = off;
    off += n;
  }
  return { at, end: off };
}

/** Rows of a q/k weight from llama2.c's adjacent-pair rotary order to HF's rotate_half order. */
export function permuteRotaryRows(w: Tensor, heads: number): Tensor {
  const [out, inp] = [w.size(0), w.size(1)];
  return w
    .view(heads, out / heads / 2, 2, inp)
    .transpose(1, 2)
    .reshape(out, inp); // [out, in]
}

export function loadLlama2cWeights(file: string, c: ModelConfig, opts: { dtype: DType; device: Device }): ModelWeights {
  const { at } = tensorLayout(c);
  const kvDim = c.numKvHeads * c.headDim;
  const read = (name: string, index: number, shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return fromFile(file, HEADER_BYTES + 4 * (at[name]! + index * n), 4 * n, 'float32', shape);
  };
  const byName = new Map<string, Tensor>();
  const put = (name: string, t: Tensor) => {
    const out = noGrad(() => t.to({ dtype: opts.dtype, device: opts.device }));
    if (out !== t) t.dispose();
    byName.set(name, out.keep());
    if (!allFinite(out)) {
      for (const x of byName.values()) x.dispose();
      throw new UserError(`${file}: tensor '${name}' holds NaN or infinite values (as ${opts.dtype})`);
    }
  };
  const { hiddenSize: dim, intermediateSize: hid } = c;
  put('model.embed_tokens.weight', read('embed', 0, [c.vocabSize, dim]));
  for (let l = 0; l < c.numLayers; l++) {
    put(`model.layers.${l}.input_layernorm.weight`, read('rms_att', l, [dim]));
    const wq = read('wq', l, [dim, dim]);
    const wk = read('wk', l, [kvDim, dim]);
    put(
      `${projectionPrefix(l, 'q_proj')}.weight`,
      tidy(() => noGrad(() => permuteRotaryRows(wq, c.numHeads))),
    );
    put(
      `${projectionPrefix(l, 'k_proj')}.weight`,
      tidy(() => noGrad(() => permuteRotaryRows(wk, c.numKvHeads))),
    );
    wq.dispose();
    wk.dispose();
    put(`${projectionPrefix(l, 'v_proj')}.weight`, read('wv', l, [kvDim, dim]));
    put(`${projectionPrefix(l, 'o_proj')}.weight`, read('wo', l, [dim, dim]));
    put(`model.layers.${l}.post_attention_layernorm.weight`, read('rms_ffn', l, [dim]));
    put(`${projectionPrefix(l, 'gate_proj')}.weight`, read('w1', l, [hid, dim]));
    put(`${projectionPrefix(l, 'down_proj')}.weight`, read('w2', l, [dim, hid]));
    put(`${projectionPrefix(l, 'up_proj')}.weight`, read('w3', l, [hid, dim]));
  }
  put('model.norm.weight', read('rms_final', 0, [dim]));
  if (!c.tieWordEmbeddings) put('lm_head.weight', read('wcls', 0, [c.vocabSize, dim]));
  for (const s of weightSpecs(c)) if (!byName.has(s.name)) throw new Error(`llama2.c loader missed ${s.name}`);
  return structureWeights(c, (n) => byName.get(n)!);
}
