// What an adapter folder holds: kind, settings, trainable parameters (and their share of the base
// model, the paper's "# Params"), per module. Reads tensor shapes only.
import fs from 'node:fs';
import path from 'node:path';
import { readHeader } from '../io/safetensors.js';
import type { ModelConfig } from '../models/config.js';
import { parameterCount } from '../models/weights.js';
import { describeAdapter, scaling, type AdapterConfig } from './config.js';
import { readTorchShapes } from '../io/torch-zip.js';
import { UserError } from '../util/errors.js';
import { readAdapterConfig, TORCH_WEIGHTS_FILE, WEIGHTS_FILE } from './files.js';
import { modernizeLegacy } from './keys.js';

export interface AdapterReport {
  path: string;
  kind: string;
  config: AdapterConfig;
  legacy: boolean;
  trainableParameters: number;
  baseParameters: number | null;
  percentOfBase: number | null;
  modules: { module: string; role: string; parameters: number }[];
}

async function tensorShapes(dir: string): Promise<Map<string, number[]>> {
  const st = path.join(dir, WEIGHTS_FILE);
  if (fs.existsSync(st)) return new Map([...readHeader(st).tensors].map(([k, e]) => [k, e.shape]));
  const bin = path.join(dir, TORCH_WEIGHTS_FILE);
  if (fs.existsSync(bin)) return readTorchShapes(bin);
  throw new UserError(`${dir}: no ${WEIGHTS_FILE} or ${TORCH_WEIGHTS_FILE}`);
}

function moduleOf(key: string): { module: string; role: string } {
  if (/moe_gate|\.gate\.weight$/.test(key)) return { module: 'router', role: 'router' };
  const m = /(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|w1_proj|w2_proj|w3_proj)/.exec(key);
  const module = m ? m[1]! : 'other';
  return { module, role: key.includes('.experts.') ? 'experts' : 'LoRA' };
}

export function baseParameterCount(c: ModelConfig): number {
  return parameterCount(c);
}

export async function inspectAdapter(dir: string, base: ModelConfig | null): Promise<AdapterReport> {
  const { config, raw, legacy } = readAdapterConfig(dir);
  const shapes = await tensorShapes(dir);
  const renames = legacy ? modernizeLegacy(raw, [...shapes.keys()])!.rename : new Map<string, string>();
  const byModule = new Map<string, { module: string; role: string; parameters: number }>();
  let total = 0;
  for (const [key0, shape] of shapes) {
    const key = renames.get(key0) ?? key0;
    const n = shape.reduce((a, b) => a * b, 1);
    total += n;
    const { module, role } = moduleOf(key);
    const id = `${module}/${role}`;
    const entry = byModule.get(id) ?? { module, role, parameters: 0 };
    entry.parameters += n;
    byModule.set(id, entry);
  }
  const baseParameters = base ? baseParameterCount(base) : null;
  const order = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'router', 'gate_proj', 'up_proj', 'down_proj', 'other'];
  return {
    path: dir,
    kind: describeAdapter(config),
    config,
    legacy,
    trainableParameters: total,
    baseParameters,
    percentOfBase: baseParameters ? (100 * total) / baseParameters : null,
    modules: [...byModule.values()].sort((a, b) => order.indexOf(a.module) - order.indexOf(b.module)),
  };
}

export function formatReport(report: AdapterReport): string {
  const c = report.config;
  const n = (x: number) => x.toLocaleString('en-US');
  const lora = (s: typeof c.lora) =>
    `r ${s.r}, alpha ${s.alpha} (scale ${scaling(s).toFixed(3)}${s.useRslora ? ', rsLoRA' : ''}), dropout ${s.dropout}, init ${s.init}${s.useDora ? ', DoRA' : ''}`;
  const lines = [
    `adapter: ${report.path}${report.legacy ? ' (legacy m-LoRA format, read by conversion)' : ''}`,
    `kind: ${report.kind} (peft_type ${c.peftType})`,
  ];
  if (c.baseModel) lines.push(`base model: ${c.baseModel}`);
  lines.push(`target modules: ${c.targetModules.join(', ')}`);
  if (c.moe) {
    const m = c.moe;
    const routing =
      m.routingStrategy === 'mixlora'
        ? `top-${m.topK}`
        : m.routingStrategy === 'mixlora-dynamic'
          ? `top-p ${m.topP}${m.temperature > 0 ? `, temperature ${m.temperature}` : ''}`
          : `top-1, capacity ${m.expertCapacity}`;
    lines.push(
      `routing: ${m.routingStrategy}, ${m.numExperts} experts, ${routing}; aux loss coef ${m.routerAuxLossCoef}${m.routerLoss ? '' : ' (off)'}; jitter ${m.jitterNoise}`,
    );
    lines.push(`attention LoRA: ${lora(c.lora)}`);
    lines.push(`experts: ${lora(m.expert)}`);
  } else {
    lines.push(`LoRA: ${lora(c.lora)}`);
  }
  lines.push(
    `trainable parameters: ${n(report.trainableParameters)}${report.percentOfBase !== null ? ` (${report.percentOfBase.toFixed(3)}% of the base model's ${n(report.baseParameters!)})` : ' (pass --model to compare with the base model)'}`,
  );
  lines.push('per module:');
  const width = Math.max(...report.modules.map((m) => m.module.length));
  for (const m of report.modules)
    lines.push(`  ${m.module.padEnd(width)}  ${m.role.padEnd(7)}  ${n(m.parameters).padStart(14)}`);
  return lines.join('\n');
}
