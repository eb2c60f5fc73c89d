// Option parsing shared by the commands: numbers with their ranges, and how a model is opened.
import os from 'node:os';
import { Option, type Command } from 'commander';
import { UsageError } from '../util/errors.js';
import { parseQuantFormat, type QuantFormat } from '../quant/format.js';
import type { LoadedModel } from '../models/load.js';
import { DEFAULT_LIMITS } from '../serve/limits.js';

export function intArg(name: string, min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new UsageError(
        `${name} must be an integer${min > Number.MIN_SAFE_INTEGER ? ` >= ${min}` : ''}${max < Number.MAX_SAFE_INTEGER ? ` and <= ${max}` : ''}, got '${v}'`,
      );
    }
    return n;
  };
}

export function numArg(name: string, min = -Infinity, max = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new UsageError(
        `${name} must be a number${Number.isFinite(min) ? ` >= ${min}` : ''}${Number.isFinite(max) ? ` and <= ${max}` : ''}, got '${v}'`,
      );
    }
    return n;
  };
}

/** A number > 0 (e.g. a divisor). */
export function positiveNumArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || !(n > 0))
      throw new UsageError(`${name} must be a number > 0, got '${v}'`);
    return n;
  };
}

/** --threads: at least 1, at most the machine's cores (more only slows libtorch down and can
 * exhaust the process's thread limit). */
export function threadsArg(name = '--threads') {
  return intArg(name, 1, os.availableParallelism());
}

/** The compute dtypes a frozen base can run in (tensor/targets.ts's parseDType, checked without libtorch). */
const COMPUTE_DTYPES = ['float32', 'bfloat16', 'float16'];

/** --bf16-compute: how a bfloat16 model computes (tensor/compute-mode.ts; the names checked without libtorch). */
export function bf16ComputeOption(): Option {
  return new Option(
    '--bf16-compute <mode>',
    'how a bfloat16 model computes: auto (float32 activations and products over the bfloat16 weights on a CPU ' +
      'without bfloat16 arithmetic, else bfloat16), native (bfloat16) or float32 (default: MIXLORA_BF16_COMPUTE, else auto)',
  ).choices(['auto', 'native', 'float32']);
}

/** --dtype: a bad name is bad usage (exit 2), before anything is loaded. */
export function dtypeArg(name = '--dtype') {
  return (v: string): string => {
    if (!COMPUTE_DTYPES.includes(v))
      throw new UsageError(`${name}: '${v}' is not a compute dtype (${COMPUTE_DTYPES.join(', ')})`);
    return v;
  };
}

/** --quantize: nf4 or int8 (quant/format.ts), a bad name being bad usage. */
export function quantizeArg(name = '--quantize') {
  return (v: string): QuantFormat => {
    try {
      return parseQuantFormat(v, name);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
}

/** --device: cpu, cuda or cuda:N (whether this libtorch has CUDA is checked when the device is used). */
export function deviceArg(name = '--device') {
  return (v: string): string => {
    if (v !== 'cpu' && v !== 'cuda' && !/^cuda:\d+$/.test(v))
      throw new UsageError(`${name}: '${v}' is not cpu, cuda or cuda:N`);
    return v;
  };
}

/** --model/--tokenizer/--dtype/--device/--threads, used by every command that runs a model. */
export function addModelOptions(cmd: Command, opts: { modelRequired?: boolean } = {}): Command {
  const model = new Option(
    '--model <path>',
    'Hugging Face model folder, a model id org/name[@revision] (from the Hugging Face cache, downloaded when missing), or a llama2.c .bin checkpoint',
  );
  if (opts.modelRequired ?? true) model.makeOptionMandatory();
  return cmd
    .addOption(model)
    .option(
      '--tokenizer <file>',
      'tokenizer: a llama2.c tok*.bin (needed with a .bin model), tokenizer.json or tokenizer.model',
    )
    .option('--dtype <dtype>', 'dtype of the frozen weights: float32, bfloat16, float16', dtypeArg(), 'float32')
    .addOption(bf16ComputeOption())
    .option('--device <device>', 'cpu, cuda or cuda:N', deviceArg(), 'cpu')
    .option(
      '--quantize <format>',
      'keep the decoder projections quantised, QLoRA-style: nf4 (4-bit NormalFloat) or int8 (default: as loaded)',
      quantizeArg(),
    )
    .option('--threads <n>', 'CPU threads for libtorch (default: all cores)', threadsArg());
}

export interface ModelCliOptions {
  model: string;
  tokenizer?: string;
  dtype: string;
  bf16Compute?: 'auto' | 'native' | 'float32';
  device: string;
  quantize?: string;
  threads?: number;
}

/** Loads the model the options name. libtorch is imported here, lazily, so --help needs no addon. */
export async function openModel(o: ModelCliOptions): Promise<LoadedModel> {
  const { setNumThreads } = await import('../tensor/runtime.js');
  const { loadModel } = await import('../models/load.js');
  const { parseDevice, parseDType } = await import('../tensor/targets.js');
  const { resolveModel } = await import('../models/hub.js');
  const { parseQuantFormat } = await import('../quant/format.js');
  const quantize = o.quantize === undefined ? null : parseQuantFormat(o.quantize);
  const { createProgress, downloadProgress } = await import('./progress.js');
  if (o.threads !== undefined) setNumThreads(o.threads);
  const progress = createProgress();
  let where: string;
  try {
    where = await resolveModel(o.model, { progress: downloadProgress(progress, o.model) });
  } finally {
    progress.stop();
  }
  return loadModel(where, {
    dtype: parseDType(o.dtype, '--dtype'),
    ...(o.bf16Compute ? { bf16Compute: o.bf16Compute } : {}),
    device: parseDevice(o.device, '--device'),
    tokenizer: o.tokenizer ?? null,
    quantize,
  });
}

/** --max-connections and --max-connections-per-client, as the two servers (serve, studio) take them. */
export function addConnectionLimitOptions(cmd: Command): Command {
  return cmd
    .option(
      '--max-connections <n>',
      'open connections at most (further ones are closed at once)',
      intArg('--max-connections', 1),
      DEFAULT_LIMITS.maxConnections,
    )
    .option(
      '--max-connections-per-client <n>',
      'open connections from one address at most',
      intArg('--max-connections-per-client', 1),
      DEFAULT_LIMITS.maxConnectionsPerClient,
    );
}

/** A per-client limit above the total is a usage error. */
export function checkConnectionLimits(o: { maxConnections: number; maxConnectionsPerClient: number }): void {
  if (o.maxConnectionsPerClient > o.maxConnections)
    throw new UsageError(
      `--max-connections-per-client ${o.maxConnectionsPerClient} is above --max-connections ${o.maxConnections}`,
    );
}
