// The frozen weights of a LLaMA-family, Gemma or Phi-3 model, their Hugging Face names, and loading them
// from a Hugging Face folder (model.safetensors, or shards listed in model.safetensors.index.json).
import fs from 'node:fs';
import path from 'node:path';
import { readHeader, loadTensor, type SafetensorsHeader } from '../io/safetensors.js';
import { isFloating, type DType } from '../tensor/dtype.js';
import { allFinite } from '../tensor/checks.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { QuantizedWeight } from '../quant/quantized-weight.js';
import type { QuantFormat } from '../quant/format.js';
import { UserError } from '../util/errors.js';
import type { ModelConfig } from './config.js';

/** Every projection name of every family; Phi-3 fuses q/k/v into qkv_proj (rows [q | k | v]) and gate/up
 * into gate_up_proj (rows [gate | up]) (modeling_phi3.py). */
export const ATTENTION_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'qkv_proj', 'o_proj'] as const;
export const MLP_PROJECTIONS = ['gate_up_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export const PROJECTIONS = [...ATTENTION_PROJECTIONS, ...MLP_PROJECTIONS] as const;
export type ProjName = (typeof PROJECTIONS)[number];

const SEPARATE: readonly ProjName[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const FUSED: readonly ProjName[] = ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'];

/** The projections a model of this config has, in checkpoint order. */
export function projectionsOf(c: ModelConfig): readonly ProjName[] {
  return hasFusedProjections(c) ? FUSED : SEPARATE;
}

/** Phi-3 stores q/k/v and gate/up fused. */
export function hasFusedProjections(c: ModelConfig): boolean {
  return c.architecture === 'phi3';
}

/** Gemma 2 normalises the attention output and both sides of the MLP (modeling_gemma2.py). */
export function hasSandwichNorms(c: ModelConfig): boolean {
  return c.architecture === 'gemma2';
}

/** A frozen projection's weight [out, in]: a tensor, or quantised (--quantize; src/quant). */
export type FrozenWeight = Tensor | QuantizedWeight;

export interface Linear {
  weight: FrozenWeight;
  bias: Tensor | null;
}
export interface LayerWeights {
  inputNorm: Tensor;
  postNorm: Tensor;
  /** Gemma 2's pre_feedforward_layernorm and post_feedforward_layernorm; null elsewhere. */
  ffnNorms: { pre: Tensor; post: Tensor } | null;
  /** The projections of the model's family (projectionsOf). */
  proj: Partial<Record<ProjName, Linear>>;
}
export interface ModelWeights {
  embed: Tensor;
  layers: LayerWeights[];
  norm: Tensor;
  /** The same tensor as `embed` when the config ties them. */
  lmHead: Tensor;
}

/** A projection of a layer; one its family lacks is a programming error. */
export function linearOf(w: LayerWeights, name: ProjName): Linear {
  const lin = w.proj[name];
  if (!lin) throw new Error(`this model has no ${name}`);
  return lin;
}

/** [out, in] of each projection. */
export function projectionShape(c: ModelConfig, name: ProjName): [number, number] {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  switch (name) {
    case 'q_proj':
      return [q, c.hiddenSize];
    case 'k_proj':
    case 'v_proj':
      return [kv, c.hiddenSize];
    case 'qkv_proj':
      return [q + 2 * kv, c.hiddenSize];
    case 'o_proj':
      return [c.hiddenSize, q];
    case 'gate_proj':
    case 'up_proj':
      return [c.intermediateSize, c.hiddenSize];
    case 'gate_up_proj':
      return [2 * c.intermediateSize, c.hiddenSize];
    case 'down_proj':
      return [c.hiddenSize, c.intermediateSize];
  }
}

export function hasBias(c: ModelConfig, name: ProjName): boolean {
  if (name === 'q_proj' || name === 'k_proj' || name === 'v_proj' || name === 'qkv_proj') return c.qkvBias;
  if (name === 'o_proj') return c.oBias;
  return c.mlpBias;
}

export function projectionPrefix(layer: number, name: ProjName): string {
  return `model.layers.${layer}.${(MLP_PROJECTIONS as readonly ProjName[]).includes(name) ? 'mlp' : 'self_attn'}.${name}`;
}

/** The per-layer norms in checkpoint order after the projections (input_layernorm comes before them). */
function laterNorms(c: ModelConfig): string[] {
  const post = ['post_attention_layernorm'];
  return hasSandwichNorms(c) ? [...post, 'pre_feedforward_layernorm', 'post_feedforward_layernorm'] : post;
}

/** How many tensors weightSpecs lists (counted, not built: config sizes are untrusted). */
export function weightCount(c: ModelConfig): number {
  const projections = projectionsOf(c);
  const biases = projections.filter((p) => hasBias(c, p)).length;
  const norms = 1 + laterNorms(c).length;
  return 2 + c.numLayers * (norms + projections.length + biases) + (c.tieWordEmbeddings ? 0 : 1);
}

/** The number of parameters of the model (counted, not built). */
export function parameterCount(c: ModelConfig): number {
  const proj = projectionsOf(c).reduce((n, p) => {
    const [out, inp] = projectionShape(c, p);
    return n + out * inp + (hasBias(c, p) ? out : 0);
  }, 0);
  const norms = (1 + laterNorms(c).length) * c.hiddenSize;
  return c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize + c.numLayers * (norms + proj);
}

/** Every tensor of the model: its Hugging Face name and shape, in checkpoint order, one at a time
 * (a config's sizes are untrusted: nothing is listed before it is needed). */
export function* iterWeightSpecs(c: ModelConfig): Generator<{ name: string; shape: number[] }> {
  yield { name: 'model.embed_tokens.weight', shape: [c.vocabSize, c.hiddenSize] };
  for (let l = 0; l < c.numLayers; l++) {
    yield { name: `model.layers.${l}.input_layernorm.weight`, shape: [c.hiddenSize] };
    for (const p of projectionsOf(c)) {
      const shape = projectionShape(c, p);
      yield { name: `${projectionPrefix(l, p)}.weight`, shape };
      if (hasBias(c, p)) yield { name: `${projectionPrefix(l, p)}.bias`, shape: [shape[0]] };
    }
    for (const n of laterNorms(c)) yield { name: `model.layers.${l}.${n}.weight`, shape: [c.hiddenSize] };
  }
  yield { name: 'model.norm.weight', shape: [c.hiddenSize] };
  if (!c.tieWordEmbeddings) yield { name: 'lm_head.weight', shape: [c.vocabSize, c.hiddenSize] };
}

/** Every tensor of the model: its Hugging Face name and shape, in checkpoint order. */
export function weightSpecs(c: ModelConfig): { name: string; shape: number[] }[] {
  return [...iterWeightSpecs(c)];
}

/** Whether a checkpoint tensor is a decoder layer's linear projection weight (fused ones included): what
 * --quantize quantises. Embeddings, norms and the LM head stay as loaded. */
export function isProjectionWeight(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && /^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/.test(name);
}

/** The frozen form of a loaded tensor: itself, or (a projection weight, with `quantize`) its quantised
 * codes, the full-precision tensor freed at once (so a model is never resident in full precision). */
export function frozenForm(name: string, t: Tensor, quantize: QuantFormat | null | undefined): FrozenWeight {
  if (!quantize || !isProjectionWeight(name, t.shape)) return t;
  try {
    return QuantizedWeight.quantize(t, quantize);
  } finally {
    t.dispose();
  }
}

/** Builds the structured view from tensors by Hugging Face name (projection weights may be quantised). */
export function structureWeights(c: ModelConfig, lookup: (name: string) => FrozenWeight): ModelWeights {
  const byName = (name: string): Tensor => {
    const t = lookup(name);
    if (t instanceof QuantizedWeight) throw new Error(`structureWeights: '${name}' cannot be quantised`);
    return t;
  };
  const embed = byName('model.embed_tokens.weight');
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const proj: Partial<Record<ProjName, Linear>> = {};
    for (const p of projectionsOf(c)) {
      proj[p] = {
        weight: lookup(`${projectionPrefix(l, p)}.weight`),
        bias: hasBias(c, p) ? byName(`${projectionPrefix(l, p)}.bias`) : null,
      };
    }
    layers.push({
      inputNorm: byName(`model.layers.${l}.input_layernorm.weight`),
      postNorm: byName(`model.layers.${l}.post_attention_layernorm.weight`),
      ffnNorms: hasSandwichNorms(c)
        ? {
            pre: byName(`model.layers.${l}.pre_feedforward_layernorm.weight`),
            post: byName(`model.layers.${l}.post_feedforward_layernorm.weight`),
          }
        : null,
      proj,
    });
  }
  return {
    embed,
    layers,
    norm: byName('model.norm.weight'),
    lmHead: c.tieWordEmbeddings ? embed : byName('lm_head.weight'),
  };
}

/** Tensors by Hugging Face name (the inverse of structureWeights) of a model that is not quantised. */
export function flattenWeights(c: ModelConfig, w: ModelWeights): Map<string, Tensor> {
  const out = new Map<string, Tensor>([['model.embed_tokens.weight', w.embed]]);
  w.layers.forEach((layer, l) => {
    out.set(`model.layers.${l}.input_layernorm.weight`, layer.inputNorm);
    for (const [p, lin] of Object.entries(layer.proj) as [ProjName, Linear][]) {
      // Writing dequantised weights would pass quantisation error off as the model's own weights.
      if (lin.weight instanceof QuantizedWeight)
        throw new UserError(
          `the base model is quantised (${lin.weight.format}): its full-precision weights are not kept`,
        );
      out.set(`${projectionPrefix(l, p)}.weight`, lin.weight);
      if (lin.bias) out.set(`${projectionPrefix(l, p)}.bias`, lin.bias);
    }
    out.set(`model.layers.${l}.post_attention_layernorm.weight`, layer.postNorm);
    if (layer.ffnNorms) {
      out.set(`model.layers.${l}.pre_feedforward_layernorm.weight`, layer.ffnNorms.pre);
      out.set(`model.layers.${l}.post_feedforward_layernorm.weight`, layer.ffnNorms.post);
    }
  });
  out.set('model.norm.weight', w.norm);
  if (!c.tieWordEmbeddings) out.set('lm_head.weight', w.lmHead);
  return out;
}

/** A weight of the structure that can be read or replaced in place. */
export interface WeightSlot {
  get(): FrozenWeight;
  set(v: FrozenWeight): void;
}

/** A slot over an object's field that holds a tensor (a norm, the embeddings): only projections are quantised. */
function tensorField<O extends object, K extends keyof O>(o: O, key: K, also?: (t: Tensor) => void): WeightSlot {
  return {
    get: () => o[key] as FrozenWeight,
    set: (v) => {
      if (v instanceof QuantizedWeight) throw new Error(`weightSlots: ${String(key)} cannot be quantised`);
      (o as Record<K, Tensor>)[key] = v;
      also?.(v);
    },
  };
}

/** Each weight of the structure by Hugging Face name, to read or replace in place (a sharded base puts a unit's
 * gathered weights in and takes them out again). With tied embeddings, setting the embeddings sets the head. */
export function weightSlots(c: ModelConfig, w: ModelWeights): Map<string, WeightSlot> {
  const slots = new Map<string, WeightSlot>();
  slots.set(
    'model.embed_tokens.weight',
    tensorField(w, 'embed', (t) => {
      if (c.tieWordEmbeddings) w.lmHead = t;
    }),
  );
  w.layers.forEach((layer, l) => {
    const at = `model.layers.${l}`;
    slots.set(`${at}.input_layernorm.weight`, tensorField(layer, 'inputNorm'));
    slots.set(`${at}.post_attention_layernorm.weight`, tensorField(layer, 'postNorm'));
    if (layer.ffnNorms) {
      slots.set(`${at}.pre_feedforward_layernorm.weight`, tensorField(layer.ffnNorms, 'pre'));
      slots.set(`${at}.post_feedforward_layernorm.weight`, tensorField(layer.ffnNorms, 'post'));
    }
    for (const [p, lin] of Object.entries(layer.proj) as [ProjName, Linear][]) {
      slots.set(`${projectionPrefix(l, p)}.weight`, { get: () => lin.weight, set: (v) => (lin.weight = v) });
      if (lin.bias) slots.set(`${projectionPrefix(l, p)}.bias`, tensorField(lin as { bias: Tensor }, 'bias'));
    }
  });
  slots.set('model.norm.weight', tensorField(w, 'norm'));
  if (!c.tieWordEmbeddings) slots.set('lm_head.weight', tensorField(w, 'lmHead'));
  return slots;
}

/** The safetensors files of a Hugging Face folder and which file holds each tensor. */
function openShards(dir: string): Map<string, SafetensorsHeader> {
  const index = path.join(dir, 'model.safetensors.index.json');
  const single = path.join(dir, 'model.safetensors');
  const byName = new Map<string, SafetensorsHeader>();
  let files: string[];
  if (fs.existsSync(index)) {
    let map: Record<string, unknown>;
    try {
      map = JSON.parse(fs.readFileSync(index, 'utf8')).weight_map;
    } catch (e) {
      throw new UserError(`${index}: not valid JSON (${(e as Error).message})`);
    }
    if (!map || typeof map !== 'object') throw new UserError(`${index}: no "weight_map" object`);
    files = [...new Set(Object.values(map))].map((f) => {
      if (typeof f !== 'string' || path.basename(f) !== f)
        throw new UserError(`${index}: shard name ${JSON.stringify(f)} is not a plain file name`);
      return f;
    });
  } else if (fs.existsSync(single)) {
    files = ['model.safetensors'];
  } else {
    throw new UserError(`${dir}: no model.safetensors or model.safetensors.index.json`);
  }
  for (const f of files) {
    const h = readHeader(path.join(dir, f));
    for (const name of h.tensors.keys()) byName.set(name, h);
  }
  return byName;
}

/** Loads and checks every tensor of the model, each read straight into its buffer and converted to
 * the compute dtype one at a time (never two copies of the model in memory). */
export function loadHfWeights(
  dir: string,
  c: ModelConfig,
  opts: { dtype: DType; device: Device; quantize?: QuantFormat | null },
): ModelWeights {
  const loaded = new Map<string, FrozenWeight>();
  try {
    for (const [name, w] of readHfWeights(dir, c, opts)) loaded.set(name, w);
  } catch (e) {
    for (const t of loaded.values()) t.dispose();
    throw e;
  }
  return structureWeights(c, (n) => loaded.get(n)!);
}

/** The model's tensors by Hugging Face name, in weightSpecs order, each read, checked and put in its frozen
 * form when the caller asks for it: the caller owns each one yielded (a sharded base keeps a share of each and
 * frees the rest, so that no rank holds the whole model). A tensor that fails its checks is freed here. */
export function* readHfWeights(
  dir: string,
  c: ModelConfig,
  opts: { dtype: DType; device: Device; quantize?: QuantFormat | null },
): Generator<[string, FrozenWeight]> {
  const shards = openShards(dir);
  // The config is checked against the file before anything is built from its sizes (a config of a
  // billion layers must fail now, not after listing a billion layers' tensor names).
  const needed = weightCount(c);
  if (needed > shards.size) {
    let missing = '';
    for (const spec of iterWeightSpecs(c)) {
      if (!shards.has(spec.name)) {
        missing = spec.name;
        break;
      }
    }
    throw new UserError(
      `${dir}: the checkpoint has no tensor '${missing}' (${path.join(dir, 'config.json')}: num_hidden_layers ${c.numLayers} needs ${needed} tensors, the checkpoint holds ${shards.size})`,
    );
  }
  for (const spec of weightSpecs(c)) {
    const h = shards.get(spec.name);
    if (!h)
      throw new UserError(
        `${dir}: the checkpoint has no tensor '${spec.name}' (needed by this ${c.architecture} config)`,
      );
    const e = h.tensors.get(spec.name)!;
    if (e.shape.join(',') !== spec.shape.join(',')) {
      throw new UserError(
        `${h.file}: tensor '${spec.name}' has shape [${e.shape.join(', ')}] but config.json implies [${spec.shape.join(', ')}]`,
      );
    }
    if (!isFloating(e.dtype))
      throw new UserError(`${h.file}: tensor '${spec.name}' is ${e.dtype}; model weights must be floating point`);
    // A weight to quantise is read in float32 (exact for every file dtype) and quantised from that.
    const quantize = opts.quantize && isProjectionWeight(spec.name, spec.shape) ? opts.quantize : null;
    const dtype = quantize ? 'float32' : opts.dtype;
    const t = loadTensor(h, spec.name, { dtype, device: opts.device }).keep();
    if (!allFinite(t)) {
      t.dispose();
      throw new UserError(`${h.file}: tensor '${spec.name}' holds NaN or infinite values (as ${dtype})`);
    }
    yield [spec.name, frozenForm(spec.name, t, quantize)];
  }
}

export function disposeWeights(w: ModelWeights): void {
  const seen = new Set<FrozenWeight>();
  const drop = (t: FrozenWeight | null) => {
    if (t && !seen.has(t)) {
      seen.add(t);
      t.dispose();
    }
  };
  drop(w.embed);
  drop(w.norm);
  drop(w.lmHead);
  for (const l of w.layers) {
    drop(l.inputNorm);
    drop(l.postNorm);
    drop(l.ffnNorms?.pre ?? null);
    drop(l.ffnNorms?.post ?? null);
    for (const lin of Object.values(l.proj)) {
      drop(lin.weight);
      drop(lin.bias);
    }
  }
}
